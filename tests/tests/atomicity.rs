//! Configuration atomicity under stress (docs/ARCHITECTURE.md, invariant 4): while one thread flips a
//! service between two whole configurations, every new flow decided by the program uses one
//! of them, never a mix.
//!
//! A = (blue 1001, green 1002, weight 0)      -> every new flow goes to 1001
//! B = (blue 2001, green 2002, weight 10000)  -> every new flow goes to 2002
//! A packet that saw blue/green of one and the weight of the other would go to 1002 or 2001.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use shifter::{Affinity, Protocol, Service, ServiceConfig, dataplane::cfgword::ConfigWords};
use shifter_tests::{
    pkt::{self, Frame},
    testrun::{Prog, TestDataPlane, run},
};

const SERVICE_PORT: u16 = 7000;
const MIN_FLIPS: u64 = 100_000;
const MIN_RUNS: u64 = 100_000;
/// Bound for gathering MIN_FLIPS and MIN_RUNS (scaled by `shifter_tests::patience`): the
/// test waits for that many events, however long the machine takes (a busy TCG guest did
/// 86 699 runs in 30 s), and gives up only here. A quiet host needs about 2 s.
const GIVE_UP: Duration = Duration::from_secs(180);

fn config(blue: u16, green: u16, weight: u16) -> ServiceConfig {
    ServiceConfig {
        blue_port: blue,
        green_port: green,
        weight,
        affinity: Affinity::Connection,
        dispatch: shifter_common::Dispatch::Rewrite,
    }
}

fn service(cfg: ServiceConfig) -> Service {
    Service {
        protocol: Protocol::Udp,
        port: SERVICE_PORT,
        local_addrs: vec![],
        config: cfg,
    }
}

/// A datagram from source number `i` (distinct address and port, so each is a new flow).
fn datagram(i: u64) -> Vec<u8> {
    let src = [198, 18, (i >> 16) as u8, (i >> 8) as u8];
    let sport = 1024 + (i & 0xff) as u16;
    Frame::udp(pkt::v4(src, [198, 19, 0, 1]), sport, SERVICE_PORT).build()
}

fn dport(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[36], frame[37]])
}

#[test]
fn a_packet_never_sees_a_mixed_configuration() {
    let a = config(1001, 1002, 0);
    let b = config(2001, 2002, 10_000);
    let mut dp = TestDataPlane::load("atomicity");
    // A larger table than the number of runs would be nice but is not needed: the LRU
    // evicts old entries, and every datagram has a new source.
    let slot = dp.set_service(&service(a)).expect("set service A");

    // The API path switches the whole configuration too.
    let mut runner = dp.adopt();
    assert_eq!(
        dport(&run(&mut runner, Prog::TcIngress, &datagram(1 << 24))),
        1001
    );
    assert_eq!(dp.set_service(&service(b)).expect("set service B"), slot);
    assert_eq!(
        dport(&run(&mut runner, Prog::TcIngress, &datagram((1 << 24) + 1))),
        2002
    );
    assert_eq!(dp.set_service(&service(a)).expect("set service A"), slot);
    // Every port of both configurations is a backend port from here on, so the flips below
    // only have to write the configuration word, exactly as `set_service` does for an
    // existing service whose ports are announced.
    let words = [a.pack(), b.pack()];

    // The same atomic store `set_service` uses (shifter::dataplane::cfgword), from another thread.
    let cfg_words = ConfigWords::open(dp.pin_dir())
        .unwrap_or_else(|e| panic!("map the configuration words: {e}"));

    let stop = AtomicBool::new(false);
    let flips = AtomicU64::new(0);
    let runs = AtomicU64::new(0);
    let give_up = shifter_tests::patient(GIVE_UP);
    let start = Instant::now();
    let (seen, bad) = std::thread::scope(|s| {
        let flipper = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                cfg_words.store(slot, words[(n & 1) as usize ^ 1]);
                n += 1;
                flips.store(n, Ordering::Relaxed);
            }
            // Leave configuration A in place.
            if n & 1 == 1 {
                cfg_words.store(slot, words[0]);
            }
        });
        let packets = s.spawn(|| {
            let mut seen = [0u64; 2]; // 1001, 2002
            let mut bad: Vec<(u64, u16)> = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let out = run(&mut runner, Prog::TcIngress, &datagram(i));
                match dport(&out) {
                    1001 => seen[0] += 1,
                    2002 => seen[1] += 1,
                    p => bad.push((i, p)),
                }
                i += 1;
                runs.store(i, Ordering::Relaxed);
            }
            (seen, bad)
        });
        while flips.load(Ordering::Relaxed) < MIN_FLIPS || runs.load(Ordering::Relaxed) < MIN_RUNS {
            if start.elapsed() > give_up || flipper.is_finished() || packets.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        flipper.join().expect("flipper thread");
        packets.join().expect("packet thread")
    });
    let elapsed = start.elapsed();
    let (flips, runs) = (flips.into_inner(), runs.into_inner());
    println!(
        "atomicity: {flips} configuration flips and {runs} TEST_RUN datagrams in {elapsed:.2?}: \
         {} to 1001 (A), {} to 2002 (B), {} mixed",
        seen[0],
        seen[1],
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "{} datagrams saw a mixed configuration, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert!(
        flips >= MIN_FLIPS && runs >= MIN_RUNS,
        "only {flips} flips and {runs} runs within {give_up:?}: too few to check the property"
    );
    // Both configurations were seen often, or the flips did not overlap the packets.
    assert!(
        seen[0] > runs / 100 && seen[1] > runs / 100,
        "the flips did not interleave with the packets: {seen:?}"
    );
}
