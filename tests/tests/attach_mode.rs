//! Which TC attach path the library chose on this kernel (tcx on >= 6.6, legacy clsact below):
//! attaches to a veth in fresh namespaces and reports the mode. `cargo xtask vm-test` sets
//! `SHIFTER_EXPECT_TC_MODE` (`tcx` or `legacy`) from the guest kernel's release, and then the
//! mode must match; without it (the host run) the mode is only reported. Needs root.

use std::io::Write as _;

use shifter::{Hook, TcMode};
use shifter_tests::netns::{AttachedDataPlane, NetnsPair, SERVER_IF};

#[test]
fn reports_the_tc_attach_mode_of_this_kernel() {
    let pair = NetnsPair::new("amode");
    let mut adp = AttachedDataPlane::new("amode", &pair.server.name, SERVER_IF, Hook::Tc);
    let attached = adp.dp().attachments();
    let info = attached
        .iter()
        .find(|(iface, _)| iface == SERVER_IF)
        .map(|(_, info)| *info)
        .unwrap_or_else(|| panic!("{SERVER_IF} missing from attachments: {attached:?}"));
    assert_eq!(info.hook, Hook::Tc);
    let mode = match info.tc_mode {
        TcMode::Tcx => "tcx",
        TcMode::Legacy => "legacy",
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Straight to stderr, past the harness's output capture: the run log must show the path.
    let _ = writeln!(
        std::io::stderr(),
        "SHIFTER-TC-MODE: {mode} ({}) on kernel {}",
        info.tc_mode,
        release.trim()
    );
    if let Ok(expected) = std::env::var("SHIFTER_EXPECT_TC_MODE") {
        assert_eq!(
            mode,
            expected,
            "kernel {} attached TC with {mode}, expected {expected}",
            release.trim()
        );
    }
}
