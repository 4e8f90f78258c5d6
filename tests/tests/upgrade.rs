//! Upgrades: another build of the programs (`shifter_tests::VARIANT_OBJECT`, shifter-ebpf
//! with `build-variant`) loaded over the pins of a running data plane replaces the programs
//! atomically, keeping the flow table and every established connection. Checked through the
//! kernel (program ids and tags at the TC hooks, the pinned flow table), not through the
//! daemon's view. Needs root.
//!
//! The TC path decides what a restart of the same build does:
//! - tcx (kernel >= 6.6): the pinned links are updated in place with the new process's copy
//!   of the programs, so the kernel keeps one copy of each (not one per restart); the daemon
//!   tells another build (upgraded) from the same build (adopted, same tag).
//! - legacy clsact (6.1): the library cannot compare the build of a filter, so every attach
//!   replaces the program of our one filter per hook (new program id, same tag for the same
//!   build); there is still exactly one filter per hook, and flows and connections are kept.

use std::{io::Write as _, net::SocketAddr, time::Duration};

use shifter::{Adoption, DataPlane, Hook, LoadOptions};
use shifter_tests::{
    VARIANT_OBJECT,
    daemon::{AttachedProgram, DaemonBed, Process, TcPath, web_service, web_service_rewrite},
    netns::{self, BLUE_ID, GREEN_ID, SERVER_IF, SERVER_V4, SERVICE_PORT, error_chain},
    traffic,
};

fn target() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SERVICE_PORT)
}

/// The flow-table size of the test configuration (`DaemonBed::config_text`): a second loader
/// must ask for the pinned table's size.
const FLOW_TABLE_SIZE: u32 = 4096;

/// (id, tag) of the one program per TC hook (ingress, egress), asserting there is exactly
/// one attached the way this kernel attaches; and that way.
fn one_per_hook(bed: &DaemonBed) -> ([(u32, u64); 2], TcPath) {
    let progs = bed.programs();
    let one = progs.one_per_hook();
    (one.map(|p: AttachedProgram| (p.id, p.tag)), progs.mode)
}

/// New connections now: none fails and both backends get some (the weight is 50 %).
fn assert_steered(bed: &DaemonBed, when: &str) {
    let r = netns::run_in(bed.client_ns(), || {
        traffic::tcp_short(
            target(),
            200,
            Duration::from_secs(3),
            Duration::from_secs(60),
        )
    });
    assert!(r.failures().is_empty(), "{when}: {}", r.failure_summary());
    let (b, g) = (r.count(BLUE_ID), r.count(GREEN_ID));
    assert!(
        b >= 50 && g >= 50,
        "{when}: 200 new connections at 50 % went blue {b}, green {g}"
    );
}

/// The traffic that ran through the upgrades: every new connection answered (and some
/// made), every long-lived one unbroken, with at least `rounds` exchanges (the rounds the
/// test waited for).
fn assert_traffic_unhurt(
    background: traffic::ShortConnections,
    long: traffic::LongLived,
    rounds: u64,
) {
    background.finish_all_answered(20, "the upgrades");
    let conns = long.finish_unbroken("the upgrades");
    assert!(
        conns.iter().all(|c| c.exchanges >= rounds),
        "every long-lived connection kept exchanging: {:?}",
        conns.iter().map(|c| c.exchanges).collect::<Vec<_>>()
    );
}

#[test]
fn another_build_replaces_the_programs_keeping_flows_and_connections() {
    assert_ne!(
        VARIANT_OBJECT,
        shifter::EBPF_OBJECT,
        "the variant build must differ from the normal one"
    );
    let bed = DaemonBed::new("upgrade");
    // The flow table and the TC programs are what this test follows: rewrite dispatch.
    bed.write_config(&web_service_rewrite(50.0));
    let mut first = Process::start(&bed);
    let (original, mode) = one_per_hook(&bed);
    // Past the harness's capture: the run log shows which path was tested.
    let _ = writeln!(
        std::io::stderr(),
        "upgrade: TC attach path {mode} on kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );

    let long = traffic::LongLived::open(bed.client_ns(), target(), 16, Duration::from_secs(3));
    assert!(
        long.wait_rounds(20, Duration::from_secs(10)),
        "long-lived connections make no progress"
    );
    // The flow entries of the long-lived connections, taken before the short background
    // connections start: those come and go (an RST removes its entry) and are checked by
    // their outcomes instead.
    let flows_before = bed.pinned_flow_keys();
    let background = traffic::ShortConnections::start(bed.client_ns(), target());
    assert!(
        flows_before.len() >= 16,
        "the 16 long-lived connections have flow entries: {}",
        flows_before.len()
    );

    // The old daemon stops; the data plane keeps forwarding.
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(15)), Some(0));

    // Another build on the same pins, attached like a new daemon would.
    let pin_dir = bed.pin_dir.clone();
    let info = netns::run_in(bed.server_ns(), move || {
        let mut opts = LoadOptions::new(&pin_dir);
        opts.flow_capacity = FLOW_TABLE_SIZE;
        opts.object = VARIANT_OBJECT;
        let mut dp = DataPlane::load(&opts)
            .unwrap_or_else(|e| panic!("loading the variant build: {}", error_chain(&e)));
        // Dropping the data plane leaves the (pinned) attachments in place.
        dp.attach(SERVER_IF, Hook::Tc)
            .unwrap_or_else(|e| panic!("attaching the variant build: {}", error_chain(&e)))
    });
    assert_eq!(
        (info.ingress, info.egress),
        (Adoption::Replaced, Adoption::Replaced),
        "another build replaces the programs of the pinned links"
    );
    let (variant, _) = one_per_hook(&bed);
    for (hook, (before, after)) in ["ingress", "egress"]
        .into_iter()
        .zip(original.iter().zip(&variant))
    {
        assert_ne!(
            before.1, after.1,
            "{hook}: the attached program's tag changes with the build"
        );
        assert_ne!(before.0, after.0, "{hook}: another program is attached");
    }
    let flows_variant = bed.pinned_flow_keys();
    let lost: Vec<_> = flows_before.difference(&flows_variant).collect();
    assert!(
        lost.is_empty(),
        "flow entries lost by the upgrade: {lost:?}"
    );
    assert!(
        long.wait_rounds(30, Duration::from_secs(10)),
        "long-lived connections stall after the upgrade"
    );
    assert_steered(&bed, "after the upgrade to the variant build");
    assert_eq!(
        bed.pinned_configs().values().next().expect("web").weight,
        5000,
        "the service maps survive the upgrade"
    );

    // The daemon (the normal build) starts on the variant's pins: another build again.
    let mut second = Process::start(&bed);
    let log = second.log_text();
    assert!(
        log.contains("upgraded programs, maps kept"),
        "the daemon reports the upgrade:\n{log}"
    );
    let (back, _) = one_per_hook(&bed);
    for (hook, (orig, now)) in ["ingress", "egress"]
        .into_iter()
        .zip(original.iter().zip(&back))
    {
        assert_eq!(orig.1, now.1, "{hook}: the normal build's tag is back");
    }
    let lost: Vec<_> = flows_before
        .difference(&bed.pinned_flow_keys())
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "flow entries lost by the daemon's upgrade: {lost:?}"
    );
    assert!(
        long.wait_rounds(30, Duration::from_secs(10)),
        "long-lived connections stall after the daemon's upgrade"
    );

    // Restarting the same build: the new process's copy replaces the program in place (new
    // ids, same tags), still one per hook, so no stray copy stays loaded. tcx tells it is the
    // same build; legacy filters cannot be compared, so they report an upgrade.
    second.signal(libc::SIGTERM);
    assert_eq!(second.wait_exit(Duration::from_secs(15)), Some(0));
    let third = Process::start(&bed);
    let log = third.log_text();
    let (again, mode_again) = one_per_hook(&bed);
    assert_eq!(mode_again, mode, "the TC path does not change between runs");
    match mode {
        TcPath::Tcx => {
            assert!(
                log.contains("adopted, same build") && !log.contains("upgraded programs"),
                "tcx: the same build is adopted without an update:\n{log}"
            );
        }
        TcPath::Legacy => {
            assert!(
                log.contains("upgraded programs, maps kept"),
                "legacy: the filter's program is replaced (its build cannot be compared):\n{log}"
            );
        }
    }
    for (hook, (was, now)) in ["ingress", "egress"]
        .into_iter()
        .zip(back.iter().zip(&again))
    {
        assert_ne!(
            was.0, now.0,
            "{hook}: the new process's program replaced the old one (one copy, not two)"
        );
        assert_eq!(was.1, now.1, "{hook}: the same build (tag) is attached");
    }
    let lost: Vec<_> = flows_before
        .difference(&bed.pinned_flow_keys())
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "flow entries lost by restarting the same build: {lost:?}"
    );
    assert_steered(&bed, "after adopting the same build");
    assert!(
        long.wait_rounds(30, Duration::from_secs(10)),
        "long-lived connections stall after the adoption"
    );

    assert_traffic_unhurt(background, long, 100);
    drop(third);
}

/// Socket dispatch across an upgrade: another build adopts the pinned sk_lookup link (its
/// program swapped in, the remembered listeners kept), the daemon's build is swapped back in
/// and says so; established and new connections never notice.
#[test]
fn socket_dispatch_upgrade_keeps_listeners_and_connections() {
    let bed = DaemonBed::new("upgrade-sock");
    bed.write_config(&web_service(50.0)); // socket dispatch: TCP's default
    let mut first = Process::start(&bed);
    if !shifter_tests::socket_dispatch_expected() {
        // Before 5.14: the daemon says why and serves the service by rewrite (the rewrite
        // upgrade is the other test of this file).
        let status = bed.status();
        let why = status["socket_dispatch_unavailable"].as_str();
        shifter_tests::assert_socket_dispatch_unavailable(why, "upgrade");
        assert_eq!(status["services"][0]["dispatch"], "rewrite", "{status}");
        assert_steered(&bed, "rewrite in place of socket dispatch");
        return;
    }
    let long = traffic::LongLived::open(bed.client_ns(), target(), 16, Duration::from_secs(3));
    assert!(long.wait_rounds(20, Duration::from_secs(10)), "no progress");
    let background = traffic::ShortConnections::start(bed.client_ns(), target());
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(15)), Some(0));

    // The build before SHIFTER_TCPPORT (sk_lookup's port -> service array) pinned no such
    // map: the upgrade must create it and fill it from the adopted services, or sk_lookup
    // finds no service and every new connection is refused.
    let tcp_ports = bed.pin_dir.join(shifter_common::MAP_TCP_SERVICE_PORTS);
    std::fs::remove_file(&tcp_ports)
        .unwrap_or_else(|e| panic!("remove {}: {e}", tcp_ports.display()));
    let pin_dir = bed.pin_dir.clone();
    let listening = netns::run_in(bed.server_ns(), move || {
        let mut opts = LoadOptions::new(&pin_dir);
        opts.flow_capacity = FLOW_TABLE_SIZE;
        opts.object = VARIANT_OBJECT;
        let mut dp = DataPlane::load(&opts)
            .unwrap_or_else(|e| panic!("loading the variant build: {}", error_chain(&e)));
        dp.adopt_socket_dispatch()
            .unwrap_or_else(|e| panic!("adopting socket dispatch: {}", error_chain(&e)));
        dp.listener_counts().expect("listener counts")
    });
    assert_eq!(
        (
            listening.get(&netns::BLUE_PORT),
            listening.get(&netns::GREEN_PORT)
        ),
        (Some(&2), Some(&2)),
        "the remembered listeners survive the upgrade: {listening:?}"
    );
    assert!(
        long.wait_rounds(30, Duration::from_secs(10)),
        "stall after the upgrade"
    );
    assert_steered(
        &bed,
        "socket dispatch after the upgrade to the variant build",
    );

    let second = Process::start(&bed);
    let log = second.log_text();
    assert!(
        log.contains("sk_lookup: upgraded programs, maps kept"),
        "the daemon swaps its build back in and says so:\n{log}"
    );
    assert_steered(&bed, "socket dispatch after the daemon's upgrade");
    assert!(
        long.wait_rounds(30, Duration::from_secs(10)),
        "stall after the daemon"
    );
    assert_traffic_unhurt(background, long, 80);
    drop(second);
}
