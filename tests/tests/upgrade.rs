//! Upgrades: another build of the programs (`shifter_tests::VARIANT_OBJECT`, shifter-ebpf
//! with `build-variant`) loaded over the pins of a running data plane replaces the programs
//! in the pinned links atomically, keeping the flow table and every established connection;
//! the daemon tells another build (upgrade, link updated) from the same build (adopted, the
//! link not touched at all). Checked through the kernel (tcx program ids and tags, the pinned
//! flow table), not through the daemon's view. Needs root.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use shifter::{Adoption, DataPlane, Hook, LoadOptions};
use shifter_tests::{
    VARIANT_OBJECT,
    daemon::{DaemonBed, Process, TcxProgram, web_service},
    netns::{self, BLUE_ID, GREEN_ID, SERVER_IF, SERVER_V4, SERVICE_PORT, error_chain},
    traffic,
};

fn target() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SERVICE_PORT)
}

/// The flow-table size of the test configuration (`DaemonBed::config_text`): a second loader
/// must ask for the pinned table's size.
const FLOW_TABLE_SIZE: u32 = 4096;

/// (id, tag) of the one program per tcx hook, asserting there is exactly one.
fn one_per_hook(bed: &DaemonBed) -> [(u32, u64); 2] {
    let progs = bed.tcx_programs();
    bed.programs().assert_exactly_one();
    let get = |hook: &str| {
        let v: Vec<&TcxProgram> = progs.iter().filter(|p| p.hook == hook).collect();
        assert_eq!(v.len(), 1, "one program at {hook}: {progs:?}");
        (v[0].id, v[0].tag)
    };
    [get("ingress"), get("egress")]
}

/// Short connections from the client namespace all the time until stopped.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<traffic::Report>>,
}

impl Background {
    fn start(bed: &DaemonBed) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            netns::spawn_in(bed.client_ns(), move || {
                let mut all = traffic::Report::default();
                let deadline = Instant::now() + Duration::from_secs(180);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let r = traffic::tcp_short(
                        target(),
                        5,
                        Duration::from_secs(3),
                        Duration::from_secs(30),
                    );
                    all.outcomes.extend(r.outcomes);
                }
                all
            })
        };
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> traffic::Report {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().expect("joined once").join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
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

#[test]
fn another_build_replaces_the_programs_keeping_flows_and_connections() {
    assert_ne!(
        VARIANT_OBJECT,
        shifter::EBPF_OBJECT,
        "the variant build must differ from the normal one"
    );
    let bed = DaemonBed::new("upgrade");
    bed.write_config(&web_service(50.0));
    let mut first = Process::start(&bed);
    let original = one_per_hook(&bed);

    let long = traffic::LongLived::open(bed.client_ns(), target(), 16, Duration::from_secs(3));
    assert!(
        long.wait_rounds(20, Duration::from_secs(10)),
        "long-lived connections make no progress"
    );
    let background = Background::start(&bed);
    let flows_before = bed.pinned_flow_keys();
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
    let variant = one_per_hook(&bed);
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
    let back = one_per_hook(&bed);
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

    // Restarting the same build adopts: the links are not touched (same program ids).
    second.signal(libc::SIGTERM);
    assert_eq!(second.wait_exit(Duration::from_secs(15)), Some(0));
    let third = Process::start(&bed);
    let log = third.log_text();
    assert!(
        log.contains("adopted, same build") && !log.contains("upgraded programs"),
        "the same build is adopted without an update:\n{log}"
    );
    assert_eq!(
        one_per_hook(&bed),
        back,
        "same build: the attached programs (ids) are unchanged"
    );
    assert_steered(&bed, "after adopting the same build");
    assert!(
        long.wait_rounds(30, Duration::from_secs(10)),
        "long-lived connections stall after the adoption"
    );

    let shorts = background.finish();
    assert!(
        shorts.failures().is_empty(),
        "new connections failed during the upgrades: {}",
        shorts.failure_summary()
    );
    assert!(
        shorts.outcomes.len() >= 20,
        "the background traffic made progress: {} connections",
        shorts.outcomes.len()
    );
    let conns = long.finish();
    let problems = traffic::long_problems(&conns, None);
    assert!(
        problems.is_empty(),
        "established connections hurt by the upgrades: {problems:?}"
    );
    assert!(
        conns.iter().all(|c| c.exchanges >= 100),
        "every long-lived connection kept exchanging: {:?}",
        conns.iter().map(|c| c.exchanges).collect::<Vec<_>>()
    );
    drop(third);
}
