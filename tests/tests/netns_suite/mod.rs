//! The namespace scenarios of issue 2, shared by `netns_tc.rs` and `netns_xdp.rs`: real TCP
//! and UDP servers on blue and green ports in a server namespace, a client namespace across a
//! veth pair, and the data plane attached to the server's veth end with the given hook.

use std::{
    net::SocketAddr,
    ops::Range,
    time::{Duration, Instant},
};

use shifter::{Affinity, Backend, Hook, Protocol, Service, ServiceConfig, model::addr_bytes};
use shifter_common::{FLOW_RECOVERED, FlowTuple, choose_backend};
use shifter_tests::{
    netns::{
        BLUE_ID, BLUE_PORT, CLIENT_IF, EchoServer, Family, GREEN_ID, GREEN_PORT, OTHER_ID,
        OTHER_PORT, SERVER_IF, SERVICE_PORT, Servers, Testbed, checksum_errors, run_in,
        set_tx_checksum,
    },
    traffic::{self, LongLived, Report},
};

pub(crate) const NEW_CONNECTIONS: usize = 2000;
pub(crate) const LONG_LIVED: usize = 200;
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(3);
pub(crate) const BATCH_BUDGET: Duration = Duration::from_secs(60);
const ROUND_WAIT: Duration = Duration::from_secs(20);
/// Allowed distance between observed green share and weight, in percentage points.
const SHARE_TOLERANCE: f64 = 3.0;

pub(crate) fn service(protocol: Protocol, weight: u16) -> Service {
    Service {
        protocol,
        port: SERVICE_PORT,
        local_addrs: vec![],
        config: ServiceConfig {
            blue_port: BLUE_PORT,
            green_port: GREEN_PORT,
            weight,
            affinity: Affinity::Connection,
            dispatch: shifter_common::Dispatch::Rewrite,
        },
    }
}

/// New TCP connections from `ns` to `target`, one per client port of `ports` (fixed ports:
/// the same tuples, so the same decisions, on every run); any failed connection fails `what`.
pub(crate) fn short_connections(
    ns: &str,
    target: SocketAddr,
    ports: Range<u16>,
    what: &str,
) -> Report {
    let report = run_in(ns, || {
        traffic::tcp_short_from(target, ports, STEP_TIMEOUT, BATCH_BUDGET)
    });
    assert!(
        report.failures().is_empty(),
        "{what}: {}",
        report.failure_summary()
    );
    report
}

fn id_of(b: Backend) -> u8 {
    match b {
        Backend::Blue => BLUE_ID,
        Backend::Green => GREEN_ID,
    }
}

/// Every answered exchange must have gone to the backend the shared decision function picks
/// for its tuple: the kernel and the host agree.
fn assert_decisions_match(report: &Report, family: Family, svc: &Service, what: &str) {
    let mut wrong = Vec::new();
    for o in report.outcomes.iter().filter(|o| o.error.is_none()) {
        let t = FlowTuple {
            proto: svc.protocol.number(),
            client_addr: addr_bytes(family.client()),
            client_port: o.local_port,
            local_addr: addr_bytes(family.server()),
            service_port: svc.port,
        };
        let want = id_of(choose_backend(&t, &svc.config));
        if o.backend != Some(want) {
            wrong.push(format!(
                "port {} got {:?} want {:?}",
                o.local_port,
                o.backend.map(char::from),
                char::from(want)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: {} exchanges went to another backend than choose_backend says: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

pub(crate) fn assert_share(report: &Report, weight: u16, what: &str) {
    let want = f64::from(weight) / 100.0;
    let got = report.green_percent();
    eprintln!(
        "{what}: weight {want:.2}%: blue {} green {} observed green {got:.2}%",
        report.count(BLUE_ID),
        report.count(GREEN_ID)
    );
    assert!(
        (got - want).abs() <= SHARE_TOLERANCE,
        "{what}: observed green share {got:.2}% is more than {SHARE_TOLERANCE} points from the weight {want:.2}%"
    );
}

/// 2000 new TCP connections at 0 %, 25 % and 100 %: all succeed, the split follows the weight.
pub fn new_tcp_connections_follow_weight(hook: Hook, family: Family, name: &str) {
    let mut tb = Testbed::new(name, hook, Servers::Tcp);
    let svc = service(Protocol::Tcp, 0);
    let slot = tb.dp.dp().set_service(&svc).expect("set service");
    let target = SocketAddr::new(family.server(), SERVICE_PORT);
    // Fixed source ports (a fresh range per weight, so no port meets its own TIME_WAIT): the
    // tuples, and so the expected split, are the same on every run.
    for (i, weight) in [0u16, 2500, 10000].into_iter().enumerate() {
        let cfg = tb.dp.dp().set_weight(slot, weight).expect("set weight");
        let before = tb.dp.dp().counters(slot).expect("counters");
        let first = 20000 + (i * NEW_CONNECTIONS) as u16;
        let ports = first..first + NEW_CONNECTIONS as u16;
        let what = format!("{hook} {family:?} tcp weight {weight}");
        let report = short_connections(tb.client_ns(), target, ports, &what);
        assert_share(&report, weight, &what);
        let svc = Service {
            config: cfg,
            ..svc.clone()
        };
        assert_decisions_match(&report, family, &svc, &what);
        let after = tb.dp.dp().counters(slot).expect("counters");
        let new_flows: u64 = (0..2)
            .map(|b| after[b].new_flows - before[b].new_flows)
            .sum();
        assert_eq!(
            new_flows, NEW_CONNECTIONS as u64,
            "{what}: the kernel counted {new_flows} new flows for {NEW_CONNECTIONS} connections"
        );
    }
}

/// UDP request/response from 2000 distinct source ports at 25 %: all answered from the
/// service port, the split follows the weight.
pub fn udp_datagrams_follow_weight(hook: Hook, family: Family, name: &str) {
    let mut tb = Testbed::new(name, hook, Servers::Udp);
    let svc = service(Protocol::Udp, 2500);
    tb.dp.dp().set_service(&svc).expect("set service");
    let target = SocketAddr::new(family.server(), SERVICE_PORT);
    let report = run_in(tb.client_ns(), || {
        traffic::udp_requests(target, 20000..22000, Duration::from_millis(500), 2)
    });
    let what = format!("{hook} {family:?} udp weight 2500");
    assert!(
        report.failures().is_empty(),
        "{what}: {}",
        report.failure_summary()
    );
    assert_share(&report, 2500, &what);
    assert_decisions_match(&report, family, &svc, &what);
}

pub(crate) fn wait_rounds(ll: &LongLived, n: u64, what: &str) {
    assert!(
        ll.wait_rounds(n, ROUND_WAIT),
        "{what}: long-lived connections did not complete {n} more rounds within {ROUND_WAIT:?}"
    );
}

/// 200 long-lived connections opened at weight 0 keep their backend while the weight goes
/// 0 -> 100 -> 0; 50 more opened at 100 % stay on green through the way back. With
/// `clear_flows`, the flow table is emptied after every change, so the connections live on
/// socket-lookup recovery.
pub fn long_lived_connections_keep_backend(hook: Hook, family: Family, name: &str, clear: bool) {
    let mut tb = Testbed::new(name, hook, Servers::Tcp);
    let slot = tb
        .dp
        .dp()
        .set_service(&service(Protocol::Tcp, 0))
        .expect("set service");
    let target = SocketAddr::new(family.server(), SERVICE_PORT);
    let what = format!("{hook} {family:?} long-lived (clear flows: {clear})");
    let ns = tb.client_ns().to_owned();
    let blue = LongLived::open(&ns, target, LONG_LIVED, STEP_TIMEOUT);
    wait_rounds(&blue, 3, &what);
    let clear_now = |tb: &mut Testbed, ll: &[&LongLived]| {
        if clear {
            let n = tb.dp.dp().clear_flows().expect("clear flows");
            assert!(n > 0, "{what}: clear_flows found no entries to remove");
        }
        for l in ll {
            wait_rounds(l, 3, &what);
        }
    };
    clear_now(&mut tb, &[&blue]);
    tb.dp.dp().set_weight(slot, 10000).expect("weight 100%");
    clear_now(&mut tb, &[&blue]);
    let green = LongLived::open(&ns, target, LONG_LIVED / 4, STEP_TIMEOUT);
    wait_rounds(&green, 3, &what);
    clear_now(&mut tb, &[&blue, &green]);
    tb.dp.dp().set_weight(slot, 0).expect("weight 0%");
    clear_now(&mut tb, &[&blue, &green]);
    if clear {
        // Every live connection must have been put back by socket lookup.
        let flows = tb.dp.dp().flows(Some(slot)).expect("flows");
        let recovered = flows
            .iter()
            .filter(|f| f.flags & FLOW_RECOVERED != 0)
            .count();
        assert!(
            recovered >= LONG_LIVED,
            "{what}: only {recovered} recovered entries after clearing under {} connections",
            LONG_LIVED + LONG_LIVED / 4
        );
    }
    let counters = tb.dp.dp().counters(slot).expect("counters");
    let (blue_conns, green_conns) = (blue.finish(), green.finish());
    let mut problems = traffic::long_problems(&blue_conns, Some(BLUE_ID));
    problems.extend(traffic::long_problems(&green_conns, Some(GREEN_ID)));
    let exchanges: u64 = blue_conns
        .iter()
        .chain(&green_conns)
        .map(|c| c.exchanges)
        .sum();
    let recoveries = counters[0].recoveries + counters[1].recoveries;
    let resets = counters[0].resets + counters[1].resets;
    eprintln!(
        "{what}: {} + {} connections, {exchanges} exchanges, {} problems, recoveries {recoveries}, resets {resets}",
        blue_conns.len(),
        green_conns.len(),
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "{what}: {} problems: {:?}",
        problems.len(),
        &problems[..problems.len().min(8)]
    );
    assert_eq!(
        resets, 0,
        "{what}: the kernel saw RSTs on established connections"
    );
    if clear {
        assert!(
            recoveries > 0,
            "{what}: no socket-lookup recoveries were counted"
        );
    } else {
        assert_eq!(
            recoveries, 0,
            "{what}: recoveries without clearing the flow table"
        );
    }
}

/// Direct connections to blue's and green's ports are answered by that backend from that port
/// and leave no flow entry; a port that is no service's passes untouched.
pub fn direct_and_other_ports_untouched(hook: Hook, family: Family, name: &str) {
    let mut tb = Testbed::new(name, hook, Servers::Tcp);
    let slot = tb
        .dp
        .dp()
        .set_service(&service(Protocol::Tcp, 5000))
        .expect("set service");
    let what = format!("{hook} {family:?} direct");
    let deadline = Instant::now() + Duration::from_secs(60);
    for (port, id) in [
        (BLUE_PORT, BLUE_ID),
        (GREEN_PORT, GREEN_ID),
        (OTHER_PORT, OTHER_ID),
    ] {
        assert!(Instant::now() < deadline, "{what}: out of time");
        let target = SocketAddr::new(family.server(), port);
        // `tcp_short` checks the peer address: the reply's source port is `port`, or the
        // handshake would not even complete.
        let report = run_in(tb.client_ns(), || {
            traffic::tcp_short(target, 200, STEP_TIMEOUT, BATCH_BUDGET)
        });
        assert!(
            report.failures().is_empty(),
            "{what} to port {port}: {}",
            report.failure_summary()
        );
        assert_eq!(
            report.count(id),
            200,
            "{what} to port {port}: answered by another server than {:?}",
            char::from(id)
        );
    }
    let flows = tb.dp.dp().flows(None).expect("flows");
    assert!(
        flows.is_empty(),
        "{what}: direct or unrelated connections left flow entries: {flows:?}"
    );
    let c = tb.dp.dp().counters(slot).expect("counters");
    assert_eq!(
        c[0].packets + c[1].packets + c[0].egress_packets + c[1].egress_packets,
        0,
        "{what}: direct or unrelated packets were counted (rewritten?)"
    );
    // Shifted connections afterwards get entries, and only they do.
    let service_target = SocketAddr::new(family.server(), SERVICE_PORT);
    let shifted = run_in(tb.client_ns(), || {
        traffic::tcp_short(service_target, 200, STEP_TIMEOUT, BATCH_BUDGET)
    });
    assert!(
        shifted.failures().is_empty(),
        "{what}: {}",
        shifted.failure_summary()
    );
    let flows = tb.dp.dp().flows(None).expect("flows");
    assert_eq!(
        flows.len(),
        200,
        "{what}: expected entries only for the 200 shifted connections, found {}",
        flows.len()
    );
    assert!(
        flows.iter().all(|f| f.service_port == SERVICE_PORT),
        "{what}: a flow entry not for the service port: {flows:?}"
    );
    let c = tb.dp.dp().counters(slot).expect("counters");
    assert_eq!(
        c[0].new_flows + c[1].new_flows,
        200,
        "{what}: 200 shifted connections, other count of new flows"
    );
}

/// With TX checksum offload off on both veth ends, packets carry complete checksums and the
/// receiving kernel verifies each one (CHECKSUM_NONE), as on a physical NIC: the incremental
/// checksum updates of ingress (TC helper or XDP's RFC 1624 code) and egress must be exact.
/// Any error shows up as a failed exchange and in `InCsumErrors`.
pub fn rewritten_checksums_verify(hook: Hook, family: Family, name: &str) {
    let mut tb = Testbed::new(name, hook, Servers::Tcp);
    let (client_ns, server_ns) = (tb.client_ns().to_owned(), tb.server_ns().to_owned());
    set_tx_checksum(&client_ns, CLIENT_IF, false);
    set_tx_checksum(&server_ns, SERVER_IF, false);
    let addrs = [family.server()];
    let _udp = [
        EchoServer::udp(&server_ns, &addrs, BLUE_PORT, BLUE_ID),
        EchoServer::udp(&server_ns, &addrs, GREEN_PORT, GREEN_ID),
    ];
    tb.dp
        .dp()
        .set_service(&service(Protocol::Tcp, 5000))
        .expect("tcp service");
    tb.dp
        .dp()
        .set_service(&service(Protocol::Udp, 5000))
        .expect("udp service");
    let target = SocketAddr::new(family.server(), SERVICE_PORT);
    let what = format!("{hook} {family:?} full checksums");
    let (tcp, udp) = run_in(&client_ns, || {
        (
            traffic::tcp_short(target, 300, STEP_TIMEOUT, BATCH_BUDGET),
            traffic::udp_requests(target, 30000..30300, Duration::from_millis(500), 0),
        )
    });
    let errors = checksum_errors(&client_ns) + checksum_errors(&server_ns);
    eprintln!(
        "{what}: tcp blue {} green {}, udp blue {} green {}, checksum errors {errors}",
        tcp.count(BLUE_ID),
        tcp.count(GREEN_ID),
        udp.count(BLUE_ID),
        udp.count(GREEN_ID)
    );
    assert_eq!(errors, 0, "{what}: the kernels counted InCsumErrors");
    assert!(
        tcp.failures().is_empty(),
        "{what} tcp: {}",
        tcp.failure_summary()
    );
    assert!(
        udp.failures().is_empty(),
        "{what} udp: {}",
        udp.failure_summary()
    );
    for (r, proto) in [(&tcp, "tcp"), (&udp, "udp")] {
        assert!(
            r.count(BLUE_ID) > 0 && r.count(GREEN_ID) > 0,
            "{what} {proto}: at 50 % both backends must have served (rewrites on both ports)"
        );
    }
}
