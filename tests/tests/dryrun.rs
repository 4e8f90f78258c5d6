//! Dry runs in the kernel (BPF_PROG_TEST_RUN): with a would-be weight set for a slot, every
//! new flow is steered by the real weight and the backend it WOULD have got is counted in
//! `dry_new_flows`. The expected counts are computed on the host with the same decision
//! function the programs run.

use shifter::{Service, ServiceConfig};
use shifter_common::{Backend, FlowTuple, choose_backend, v4_mapped};
use shifter_tests::{
    pkt::{Frame, TCP_SYN, v4},
    testrun::{Prog, TestDataPlane, run},
};

const CLIENT: [u8; 4] = [198, 18, 0, 1];
const SERVER: [u8; 4] = [198, 18, 0, 2];

fn service() -> Service {
    Service::tcp(80, 8081, 8082, 0)
}

/// Sends one SYN from each source port through `prog`; returns the rewritten ports.
fn syns(dp: &mut TestDataPlane, prog: Prog, sports: std::ops::Range<u16>) -> Vec<u16> {
    sports
        .map(|sport| {
            let frame = Frame::tcp(
                v4(CLIENT, SERVER),
                sport,
                80,
                1000 + u32::from(sport),
                TCP_SYN,
            );
            let out = run(dp, prog, &frame.build());
            // Ethernet (14) + IPv4 without options (20) + TCP source port (2).
            u16::from_be_bytes([out[36], out[37]])
        })
        .collect()
}

fn would(sport: u16, weight: u16) -> Backend {
    let t = FlowTuple {
        proto: 6,
        client_addr: v4_mapped(CLIENT),
        client_port: sport,
        local_addr: v4_mapped(SERVER),
        service_port: 80,
    };
    choose_backend(
        &t,
        &ServiceConfig {
            weight,
            ..service().config
        },
    )
}

fn dry_run_counts_without_steering(prog: Prog) {
    let mut dp = TestDataPlane::load("dryrun");
    let slot = dp.set_service(&service()).expect("set service");
    assert_eq!(
        dp.dry_weight(slot).expect("read"),
        None,
        "a new slot has no dry run"
    );

    // Real weight 0, would-be weight 100 %: every flow to blue, every one counted green.
    dp.set_dry_weight(slot, 10_000).expect("set dry weight");
    assert_eq!(dp.dry_weight(slot).expect("read"), Some(10_000));
    let ports = syns(&mut dp, prog, 20_000..20_200);
    assert!(
        ports.iter().all(|p| *p == 8081),
        "a dry run steered a flow: {ports:?}"
    );
    let [b, g] = dp.counters(slot).expect("counters");
    assert_eq!((b.new_flows, g.new_flows), (200, 0));
    assert_eq!((b.dry_new_flows, g.dry_new_flows), (0, 200));

    // Would-be 25 %: the dry counts are exactly the host's decisions.
    dp.set_dry_weight(slot, 2500).expect("set dry weight");
    let range = 30_000..30_400;
    let want_green = range
        .clone()
        .filter(|p| would(*p, 2500) == Backend::Green)
        .count() as u64;
    assert!(
        (60..=140).contains(&want_green),
        "host split is off: {want_green}"
    );
    let ports = syns(&mut dp, prog, range);
    assert!(ports.iter().all(|p| *p == 8081), "a dry run steered a flow");
    let [b2, g2] = dp.counters(slot).expect("counters");
    assert_eq!(g2.dry_new_flows - g.dry_new_flows, want_green);
    assert_eq!(b2.dry_new_flows - b.dry_new_flows, 400 - want_green);
    assert_eq!(b2.new_flows - b.new_flows, 400);

    // Cleared: no more dry counting; the real weight still rules.
    dp.clear_dry_weight(slot).expect("clear");
    dp.set_weight(slot, 10_000).expect("weight");
    let ports = syns(&mut dp, prog, 40_000..40_050);
    assert!(
        ports.iter().all(|p| *p == 8082),
        "real weight 100 % must steer to green"
    );
    let [b3, g3] = dp.counters(slot).expect("counters");
    assert_eq!(
        (b3.dry_new_flows, g3.dry_new_flows),
        (b2.dry_new_flows, g2.dry_new_flows),
        "counted after the dry run ended"
    );

    // Removing the service ends its dry run, so a later service in the slot starts clean.
    dp.set_dry_weight(slot, 5000).expect("set dry weight");
    dp.remove_service(&service()).expect("remove");
    assert_eq!(dp.dry_weight(slot).expect("read"), None);
}

#[test]
fn tc_dry_run_counts_would_be_decisions_and_steers_by_the_real_weight() {
    dry_run_counts_without_steering(Prog::TcIngress);
}

#[test]
fn xdp_dry_run_counts_would_be_decisions_and_steers_by_the_real_weight() {
    dry_run_counts_without_steering(Prog::XdpIngress);
}
