//! Shared helpers for the integration tests.
pub mod daemon;
pub mod etcd;
pub mod netns;
pub mod pkt;
pub mod testrun;
pub mod traffic;

use std::time::Duration;

/// How many times longer than on a quiet host a wait for events may take on this machine:
/// `SHIFTER_TEST_PATIENCE` (a factor, `cargo xtask vm-test` sets it for TCG guests), else 1.
/// It scales the bounds of waits for N events (the test waits for them and gives up only at
/// the bound), never the property a test checks.
pub fn patience() -> u32 {
    std::env::var("SHIFTER_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&f| f >= 1)
        .unwrap_or(1)
}

/// `bound` scaled by [`patience`].
pub fn patient(bound: Duration) -> Duration {
    bound * patience()
}

/// The running kernel's major and minor version (`/proc/sys/kernel/osrelease`).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Whether this kernel can do socket dispatch: it needs `SO_NETNS_COOKIE` (Linux 5.14). On
/// an older kernel the data plane must say why it cannot and serve TCP services by rewrite,
/// and the socket-dispatch tests check that fallback instead (see
/// [`assert_socket_dispatch_unavailable`]).
pub fn socket_dispatch_expected() -> bool {
    kernel_version() >= (5, 14)
}

/// On a kernel older than 5.14: the reason the data plane gives for having no socket
/// dispatch is there and names what the kernel lacks.
pub fn assert_socket_dispatch_unavailable(reason: Option<&str>, what: &str) {
    let (major, minor) = kernel_version();
    let reason = reason.unwrap_or_else(|| {
        panic!("{what}: Linux {major}.{minor} has no SO_NETNS_COOKIE (5.14+), yet socket dispatch is said to be available")
    });
    assert!(
        reason.contains("SO_NETNS_COOKIE"),
        "{what}: the reason names what the kernel lacks: {reason}"
    );
    eprintln!(
        "{what}: Linux {major}.{minor}: socket dispatch unavailable, as it must be before 5.14 \
         ({reason}); checking the fallback to rewrite instead"
    );
}

/// A second build of the kernel programs (`shifter-ebpf` with the `build-variant` feature,
/// built by tests/build.rs): different instructions, same maps. Loading it over a running data
/// plane is an upgrade to another build.
pub static VARIANT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shifter"));
