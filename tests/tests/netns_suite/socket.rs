//! Socket dispatch (sk_lookup) scenarios: the same servers and client as the rewrite
//! scenarios, the service set to `Dispatch::Socket`. The data plane's socket-dispatch calls
//! run in the server namespace: that is the namespace sk_lookup attaches to.
//!
//! The echo servers start before the service is set, so every scenario also proves the
//! registration of listeners that predate the programs; the restarted green of
//! `green_dies_then_returns` proves the registration by sock_ops at `listen()`.
//!
//! Over 700 lines: the socket-dispatch scenarios of one area, sharing the servers and helpers at
//! its top.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use shifter::{Affinity, Backend, Dispatch, Hook, Protocol, Service, model::addr_bytes};
use shifter_common::{FlowTuple, choose_backend};
use shifter_tests::{
    netns::{
        BLUE_ID, BLUE_PORT, CLIENT_V4, EchoServer, Family, GREEN_ID, GREEN_PORT, OTHER_ID,
        OTHER_PORT, SERVER_V4, SERVER_V6, SERVICE_PORT, Servers, Testbed, run_in,
    },
    traffic::{self, LongLived, Report},
};

use crate::netns_suite::{
    BATCH_BUDGET, LONG_LIVED, NEW_CONNECTIONS, STEP_TIMEOUT, assert_share, short_connections,
    wait_rounds,
};

fn socket_service(weight: u16, affinity: Affinity) -> Service {
    let mut svc = crate::netns_suite::service(Protocol::Tcp, weight);
    svc.config.dispatch = Dispatch::Socket;
    svc.config.affinity = affinity;
    svc
}

/// Runs the socket-dispatch scenario `scenario` where the kernel can do socket dispatch
/// (5.14+); on an older kernel checks what the data plane does instead (says why, serves the
/// socket service by rewrite), so the scenario still proves something there.
pub fn on_kernel(name: &str, scenario: impl FnOnce(&str)) {
    if shifter_tests::socket_dispatch_expected() {
        scenario(name);
    } else {
        falls_back_to_rewrite(name);
    }
}

/// Without socket dispatch in the kernel: a service asking for it is served by rewrite (TC
/// ingress handles its port, nothing is registered), each connection decided by the hash.
fn falls_back_to_rewrite(name: &str) {
    let svc = socket_service(5000, Affinity::Connection);
    let mut tb = Testbed::new(name, Hook::Tc, Servers::Tcp);
    shifter_tests::assert_socket_dispatch_unavailable(
        tb.dp.dp().socket_dispatch_unavailable(),
        name,
    );
    let ns = tb.server_ns().to_owned();
    let slot = run_in(&ns, || tb.dp.dp().set_service(&svc)).expect("set the service");
    assert_eq!(
        dispatch_of(&mut tb, slot),
        Some(Dispatch::Rewrite),
        "{name}: served by rewrite"
    );
    assert!(
        tb.dp
            .dp()
            .rewrite_ports()
            .expect("rewrite ports")
            .contains(&SERVICE_PORT),
        "{name}: TC ingress handles the service port"
    );
    let listening = tb.dp.dp().listener_counts().expect("listener counts");
    assert!(listening.is_empty(), "{name}: registered {listening:?}");
    let target = SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT);
    let report = short_connections(tb.client_ns(), target, 40000..40300, name);
    assert_eq!(
        report.count(BLUE_ID) + report.count(GREEN_ID),
        300,
        "{name}"
    );
    assert_decisions(
        &report,
        &svc,
        IpAddr::V4(CLIENT_V4),
        IpAddr::V4(SERVER_V4),
        name,
    );
}

/// The dispatch the kernel's configuration word of `slot` holds.
fn dispatch_of(tb: &mut Testbed, slot: u32) -> Option<Dispatch> {
    tb.dp
        .dp()
        .service_config(slot)
        .expect("config")
        .map(|c| c.dispatch)
}

/// A testbed whose data plane serves `svc` by socket dispatch; returns its slot.
fn testbed(name: &str, svc: &Service) -> (Testbed, u32) {
    let mut tb = Testbed::new(name, Hook::Tc, Servers::Tcp);
    assert_eq!(
        tb.dp.dp().socket_dispatch_unavailable(),
        None,
        "socket dispatch must be available on this kernel (CI's)"
    );
    let ns = tb.server_ns().to_owned();
    let slot = run_in(&ns, || tb.dp.dp().set_service(svc)).expect("set socket service");
    assert_eq!(
        tb.dp.dp().rewrite_ports().expect("rewrite ports"),
        Vec::<u16>::new(),
        "{name}: TC ingress leaves a socket service's packets at its first lookup"
    );
    let listening = tb.dp.dp().listener_counts().expect("listener counts");
    // One IPv4 and one IPv6 listener per backend, registered although they predate us.
    for port in [BLUE_PORT, GREEN_PORT] {
        assert_eq!(
            listening.get(&port),
            Some(&2),
            "{name}: listeners registered per port: {listening:?} ({:?})",
            tb.dp.dp().listener_registration_problem()
        );
    }
    assert_eq!(dispatch_of(&mut tb, slot), Some(Dispatch::Socket));
    (tb, slot)
}

fn expected(svc: &Service, client: IpAddr, client_port: u16, local: IpAddr) -> Backend {
    let t = FlowTuple {
        proto: 6,
        client_addr: addr_bytes(client),
        client_port,
        local_addr: addr_bytes(local),
        service_port: svc.port,
    };
    choose_backend(&t, &svc.config)
}

fn id_of(b: Backend) -> u8 {
    match b {
        Backend::Blue => BLUE_ID,
        Backend::Green => GREEN_ID,
    }
}

/// Every answered exchange went to the backend `choose_backend` names for its tuple.
fn assert_decisions(report: &Report, svc: &Service, client: IpAddr, local: IpAddr, what: &str) {
    let wrong: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .filter(|o| o.backend != Some(id_of(expected(svc, client, o.local_port, local))))
        .map(|o| o.local_port)
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} connections went to another backend than choose_backend says (ports {:?})",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// 2000 new connections at 0, 25 and 100 %: all answered, the split follows the weight
/// and the shared decision, nothing enters the flow table and TC rewrites nothing.
pub fn new_connections_follow_weight(family: Family, name: &str) {
    let svc = socket_service(0, Affinity::Connection);
    let (mut tb, slot) = testbed(name, &svc);
    let target = SocketAddr::new(family.server(), SERVICE_PORT);
    for (i, weight) in [0u16, 2500, 10000].into_iter().enumerate() {
        let cfg = tb.dp.dp().set_weight(slot, weight).expect("set weight");
        assert_eq!(
            cfg.dispatch,
            Dispatch::Socket,
            "a weight write keeps the dispatch"
        );
        let before = tb.dp.dp().counters_view(slot).expect("counters");
        let first = 20000 + (i * NEW_CONNECTIONS) as u16;
        let what = format!("socket {family:?} weight {weight}");
        let report = short_connections(
            tb.client_ns(),
            target,
            first..first + NEW_CONNECTIONS as u16,
            &what,
        );
        assert_share(&report, weight, &what);
        let svc = Service {
            config: cfg,
            ..svc.clone()
        };
        assert_decisions(&report, &svc, family.client(), family.server(), &what);
        let after = tb.dp.dp().counters_view(slot).expect("counters");
        let conns: u64 = (0..2)
            .map(|b| after[b].new_flows - before[b].new_flows)
            .sum();
        // sk_lookup decides per listener lookup: once per SYN, and once more for the final
        // ACK of a SYN-cookie handshake (a full accept queue, as in a slow VM). The same
        // tuple gives the same decision, so only the count can exceed.
        let n = NEW_CONNECTIONS as u64;
        assert!(
            (n..=n + n / 100).contains(&conns),
            "{what}: {conns} decisions counted for {n} connections"
        );
        let fallbacks: u64 = (0..2).map(|b| after[b].fallbacks).sum();
        assert_eq!(fallbacks, 0, "{what}: fallbacks with both backends up");
        assert_eq!(
            after[0].packets + after[1].packets + after[0].egress_packets + after[1].egress_packets,
            0,
            "{what}: TC rewrote packets of a socket-dispatched service"
        );
    }
    let flows = tb.dp.dp().flows(None).expect("flows");
    assert!(
        flows.is_empty(),
        "socket dispatch made flow entries: {}",
        flows.len()
    );
}

/// Client affinity: every connection of one client address goes to one backend, the one
/// the shared decision names for that address.
pub fn client_affinity(family: Family, name: &str) {
    let svc = socket_service(5000, Affinity::Client);
    let (tb, _) = testbed(name, &svc);
    let target = SocketAddr::new(family.server(), SERVICE_PORT);
    let what = format!("socket {family:?} client affinity");
    let report = short_connections(tb.client_ns(), target, 40000..40200, &what);
    let want = id_of(expected(&svc, family.client(), 0, family.server()));
    assert_eq!(report.count(want), 200, "{what}: one client, one backend");
}

/// 200 long-lived connections opened at 0 % stay on blue while the weight goes to 100 %
/// and back; 50 opened at 100 % stay on green on the way back. No connection fails.
pub fn long_lived_connections_keep_backend(family: Family, name: &str) {
    let svc = socket_service(0, Affinity::Connection);
    let (mut tb, slot) = testbed(name, &svc);
    let target = SocketAddr::new(family.server(), SERVICE_PORT);
    let what = format!("socket {family:?} long-lived");
    let ns = tb.client_ns().to_owned();
    let blue = LongLived::open(&ns, target, LONG_LIVED, STEP_TIMEOUT);
    wait_rounds(&blue, 3, &what);
    tb.dp.dp().set_weight(slot, 10000).expect("weight 100%");
    wait_rounds(&blue, 3, &what);
    let green = LongLived::open(&ns, target, LONG_LIVED / 4, STEP_TIMEOUT);
    wait_rounds(&green, 3, &what);
    tb.dp.dp().set_weight(slot, 0).expect("weight 0%");
    wait_rounds(&blue, 3, &what);
    wait_rounds(&green, 3, &what);
    // sock_ops counted each connection open for the backend sk_lookup gave it to.
    let open = tb.dp.dp().counters_view(slot).expect("counters");
    assert_eq!(
        (open[0].active_flows, open[1].active_flows),
        (LONG_LIVED as u64, (LONG_LIVED / 4) as u64),
        "{what}: open connections per backend"
    );
    let (blue_conns, green_conns) = (blue.finish(), green.finish());
    let mut problems = traffic::long_problems(&blue_conns, Some(BLUE_ID));
    problems.extend(traffic::long_problems(&green_conns, Some(GREEN_ID)));
    let exchanges: u64 = blue_conns
        .iter()
        .chain(&green_conns)
        .map(|c| c.exchanges)
        .sum();
    eprintln!(
        "{what}: {} + {} connections, {exchanges} exchanges, {} problems",
        blue_conns.len(),
        green_conns.len(),
        problems.len()
    );
    assert!(problems.is_empty(), "{what}: {problems:?}");
    let c = tb.dp.dp().counters_view(slot).expect("counters");
    // One decision per connection however many exchanges (a SYN-cookie handshake's ACK
    // may add one: see new_connections_follow_weight).
    let n = (LONG_LIVED + LONG_LIVED / 4) as u64;
    let decided = c[0].new_flows + c[1].new_flows;
    assert!(
        (n..=n + n / 50).contains(&decided),
        "{what}: {decided} decisions for {n} connections"
    );
    // Closed by the client with a FIN exchange: all closed, none counted as a reset.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let closed = loop {
        let c = tb.dp.dp().counters_view(slot).expect("counters");
        if c[0].active_flows + c[1].active_flows == 0 || std::time::Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        (closed[0].active_flows, closed[1].active_flows),
        (0, 0),
        "{what}: connections still counted open after closing"
    );
    assert_eq!(
        closed[0].resets + closed[1].resets,
        0,
        "{what}: resets counted"
    );
}

/// Green's listeners close under 50 %: every new connection is answered by blue, each one
/// decided for green counted as green's fallback. Green listening again (after us, so
/// remembered by sock_ops at `listen()`) gets its share back.
pub fn green_dies_then_returns(family: Family, name: &str) {
    let svc = socket_service(5000, Affinity::Connection);
    let (mut tb, slot) = testbed(name, &svc);
    let target = SocketAddr::new(family.server(), SERVICE_PORT);
    let what = format!("socket {family:?} green down");
    tb.stop_server(GREEN_ID);
    let listening = listeners_once(tb.dp.dp(), GREEN_PORT, None);
    assert_eq!(
        listening.get(&GREEN_PORT),
        None,
        "{what}: closed listeners stay: {listening:?}"
    );
    let before = tb.dp.dp().counters_view(slot).expect("counters");
    let report = short_connections(tb.client_ns(), target, 42000..43000, &what);
    assert_eq!(
        report.count(BLUE_ID),
        1000,
        "{what}: blue answers everything"
    );
    let decided_green = (42000..43000u16)
        .filter(|p| expected(&svc, family.client(), *p, family.server()) == Backend::Green)
        .count() as u64;
    let after = tb.dp.dp().counters_view(slot).expect("counters");
    eprintln!(
        "{what}: 1000 connections, {decided_green} decided for green, fallbacks {}",
        after[1].fallbacks - before[1].fallbacks
    );
    assert_eq!(
        after[1].fallbacks - before[1].fallbacks,
        decided_green,
        "{what}: every connection decided for green is green's fallback"
    );
    assert_eq!(after[0].fallbacks, 0);

    let ns = tb.server_ns().to_owned();
    let addrs = [IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)];
    tb.servers
        .push(EchoServer::tcp(&ns, &addrs, GREEN_PORT, GREEN_ID));
    let listening = tb.dp.dp().listener_counts().expect("listener counts");
    assert_eq!(
        listening.get(&GREEN_PORT),
        Some(&2),
        "{what}: sock_ops at listen(): {listening:?}"
    );
    let report = short_connections(tb.client_ns(), target, 43000..44000, &what);
    assert_share(&report, 5000, &format!("{what}, green back"));
    assert_decisions(&report, &svc, family.client(), family.server(), &what);
}

/// A client in the server's own namespace, via loopback and via the host's own address, is
/// steered by the weight too (sk_lookup runs for local connections; TC never sees them).
pub fn local_clients_are_steered(name: &str) {
    let svc = socket_service(5000, Affinity::Connection);
    let (tb, _) = testbed(name, &svc);
    let ns = tb.server_ns().to_owned();
    for (i, addr) in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V4(SERVER_V4),
    ]
    .into_iter()
    .enumerate()
    {
        let target = SocketAddr::new(addr, SERVICE_PORT);
        let first = 30000 + (i as u16) * NEW_CONNECTIONS as u16;
        let what = format!("socket local client to {target}");
        let report = short_connections(&ns, target, first..first + NEW_CONNECTIONS as u16, &what);
        assert_share(&report, 5000, &what);
        assert_decisions(&report, &svc, addr, addr, &what);
    }
}

/// A service that names a local address (IPv4 here) is found by that address: sk_lookup's
/// port entry sends it to the exact-key lookup. Connections to that address follow its
/// weight; the same port on the IPv6 address is no service (nobody listens there: refused,
/// and not counted).
pub fn address_specific_service(name: &str) {
    let mut svc = socket_service(2500, Affinity::Connection);
    svc.local_addrs = vec![IpAddr::V4(SERVER_V4)];
    let (mut tb, slot) = testbed(name, &svc);
    let v4 = SocketAddr::new(SERVER_V4.into(), SERVICE_PORT);
    let what = format!("{name}: to the service's own address");
    let report = short_connections(tb.client_ns(), v4, 20000..21000, &what);
    assert_share(&report, 2500, &what);
    assert_decisions(&report, &svc, CLIENT_V4.into(), SERVER_V4.into(), &what);
    let counted = |tb: &mut Testbed| {
        let c = tb.dp.dp().counters_view(slot).expect("counters");
        c[0].new_flows + c[1].new_flows
    };
    let before = counted(&mut tb);
    let v6 = SocketAddr::new(SERVER_V6.into(), SERVICE_PORT);
    let report = run_in(tb.client_ns(), || {
        traffic::tcp_short(v6, 50, STEP_TIMEOUT, BATCH_BUDGET)
    });
    assert_eq!(
        report.failures().len(),
        50,
        "{name}: the IPv6 address has no service and no listener on the port: {}",
        report.failure_summary()
    );
    assert_eq!(
        counted(&mut tb),
        before,
        "{name}: IPv6 connections were counted"
    );
}

/// Direct connections to blue's, green's and another port are answered by that server and
/// are not counted as the service's.
pub fn direct_and_other_ports_untouched(family: Family, name: &str) {
    let svc = socket_service(5000, Affinity::Connection);
    let (mut tb, slot) = testbed(name, &svc);
    for (port, id) in [
        (BLUE_PORT, BLUE_ID),
        (GREEN_PORT, GREEN_ID),
        (OTHER_PORT, OTHER_ID),
    ] {
        let target = SocketAddr::new(family.server(), port);
        let report = run_in(tb.client_ns(), || {
            traffic::tcp_short(target, 200, STEP_TIMEOUT, BATCH_BUDGET)
        });
        let what = format!("socket {family:?} direct to {port}");
        assert!(
            report.failures().is_empty(),
            "{what}: {}",
            report.failure_summary()
        );
        assert_eq!(report.count(id), 200, "{what}: answered by another server");
    }
    let c = tb.dp.dp().counters_view(slot).expect("counters");
    assert_eq!(
        c[0].new_flows + c[1].new_flows,
        0,
        "direct connections were counted"
    );
}

/// A green that aborts an established connection (close with `SO_LINGER` 0: an RST, not a
/// FIN) gets a reset counted; the blue connection closed in order gets none.
pub fn resets_are_counted(name: &str) {
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsRawFd as _;
    let svc = socket_service(10000, Affinity::Connection);
    let (mut tb, slot) = testbed(name, &svc);
    tb.stop_server(GREEN_ID);
    let ns = tb.server_ns().to_owned();
    let listener = run_in(&ns, || {
        std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(SERVER_V4), GREEN_PORT))
    })
    .expect("bind green");
    let target = SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT);
    let client = shifter_tests::netns::spawn_in(tb.client_ns(), move || {
        let mut s = std::net::TcpStream::connect(target).expect("connect");
        let _ = s.write_all(b"x");
        let mut buf = [0u8; 1];
        // The server aborts: a reset (or EOF if it raced), never data.
        let _ = s.read(&mut buf);
    });
    let (conn, _) = listener.accept().expect("accept");
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own with a properly sized struct.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
    drop(conn);
    client.join().expect("client");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let c = loop {
        let c = tb.dp.dp().counters_view(slot).expect("counters");
        if c[1].resets > 0 || std::time::Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let optmem = |ns: &str| {
        run_in(ns, || {
            std::fs::read_to_string("/proc/sys/net/core/optmem_max")
        })
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|e| e.to_string())
    };
    assert_eq!(
        c[1].resets,
        1,
        "green's aborted connection: {c:?} (registration: {:?}; net.core.optmem_max {} here)",
        tb.dp.dp().listener_registration_problem(),
        optmem(&ns)
    );
    assert_eq!(c[1].active_flows, 0, "and it is closed: {c:?}");
    assert_eq!(c[0].resets, 0);
}

/// Blue as a reuseport group of three workers started after us (each remembered by sock_ops
/// at `listen()`): workers exiting one by one never leave blue without a listener, and new
/// connections keep succeeding; what the daemon's tick does (`register_listeners`) finds a
/// remaining worker if the group ever had none remembered.
pub fn reuseport_workers_exiting_leave_no_slot_empty(name: &str) {
    let svc = socket_service(0, Affinity::Connection);
    let (mut tb, _) = testbed(name, &svc);
    tb.stop_server(BLUE_ID);
    let ns = tb.server_ns().to_owned();
    let addrs = [IpAddr::V4(SERVER_V4)];
    let mut workers: Vec<EchoServer> = (0..3)
        .map(|_| EchoServer::tcp_reuseport(&ns, &addrs, BLUE_PORT, BLUE_ID))
        .collect();
    let listening = tb.dp.dp().listener_counts().expect("listener counts");
    assert_eq!(
        listening.get(&BLUE_PORT),
        Some(&3),
        "three workers: {listening:?}"
    );
    let target = SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT);
    for (i, first) in [(0, 46000u16), (1, 46300)] {
        workers.remove(0).stop();
        let what = format!("socket reuseport, {} of 3 workers left", 2 - i);
        let n = listeners_once(tb.dp.dp(), BLUE_PORT, Some(2 - i as u32))[&BLUE_PORT];
        assert_eq!(n, 2 - i as u32, "{what}: the exited worker left the map");
        let report = short_connections(tb.client_ns(), target, first..first + 300, &what);
        assert_eq!(report.count(BLUE_ID), 300, "{what}");
    }
    // Nothing to register while a worker is remembered.
    assert_eq!(
        run_in(&ns, || tb.dp.dp().register_listeners()).expect("register"),
        0
    );
    drop(workers);
}

/// Blue as a reuseport group of three workers that predate the service: registration copies
/// each member from its process (`pidfd_getfd`), so all three are remembered (the in-kernel
/// registration finds one per address), and blue keeps every new connection while they
/// exit one by one.
pub fn preexisting_reuseport_group_is_registered_whole(name: &str) {
    let svc = socket_service(0, Affinity::Connection);
    let mut tb = Testbed::new(name, Hook::Tc, Servers::Tcp);
    tb.stop_server(BLUE_ID);
    let ns = tb.server_ns().to_owned();
    let mut workers: Vec<EchoServer> = (0..3)
        .map(|_| EchoServer::tcp_reuseport(&ns, &[IpAddr::V4(SERVER_V4)], BLUE_PORT, BLUE_ID))
        .collect();
    run_in(&ns, || tb.dp.dp().set_service(&svc)).expect("set socket service");
    let listening = tb.dp.dp().listener_counts().expect("listener counts");
    assert_eq!(
        (listening.get(&BLUE_PORT), listening.get(&GREEN_PORT)),
        (Some(&3), Some(&2)),
        "every member of blue's group, green's two listeners: {listening:?}"
    );
    let target = SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT);
    for (i, first) in [(0, 46000u16), (1, 46300)] {
        workers.remove(0).stop();
        let what = format!("predating reuseport group, {} of 3 workers left", 2 - i);
        let report = short_connections(tb.client_ns(), target, first..first + 300, &what);
        assert_eq!(report.count(BLUE_ID), 300, "{what}");
    }
    drop(workers);
}

/// The in-kernel registration alone, as a data plane without CAP_SYS_PTRACE has it. Where the
/// kernel accepts the program, each predating listener is registered (one per address) and
/// green gets every connection at 100 %. Where it refuses it (Linux 7.3), the data plane says
/// why, registers nothing, and socket dispatch still serves listeners that listen after it.
pub fn in_kernel_registration(name: &str) {
    use shifter::dataplane::ListenerRegistration;
    let svc = socket_service(10000, Affinity::Connection);
    let mut tb = Testbed::with_load_options(name, Hook::Tc, Servers::Tcp, |o| {
        o.listener_registration = ListenerRegistration::InKernel;
    });
    assert_eq!(tb.dp.dp().socket_dispatch_unavailable(), None);
    let ns = tb.server_ns().to_owned();
    run_in(&ns, || tb.dp.dp().set_service(&svc)).expect("set socket service");
    let listening = tb.dp.dp().listener_counts().expect("listener counts");
    let what = match tb
        .dp
        .dp()
        .in_kernel_registration_refused()
        .map(str::to_owned)
    {
        None => {
            for port in [BLUE_PORT, GREEN_PORT] {
                assert_eq!(listening.get(&port), Some(&2), "in kernel: {listening:?}");
            }
            "in-kernel registration"
        }
        Some(reason) => {
            eprintln!("in-kernel registration refused here: {reason}");
            assert!(
                reason.contains(shifter_common::PROG_REGISTER_LISTENER)
                    && reason.contains("sockmap"),
                "the refusal names the program and the verifier's reason: {reason}"
            );
            assert!(listening.is_empty(), "nothing registered: {listening:?}");
            tb.stop_server(GREEN_ID);
            let addrs = [IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)];
            tb.servers
                .push(EchoServer::tcp(&ns, &addrs, GREEN_PORT, GREEN_ID));
            let listening = tb.dp.dp().listener_counts().expect("listener counts");
            assert_eq!(
                listening.get(&GREEN_PORT),
                Some(&2),
                "sock_ops: {listening:?}"
            );
            "in-kernel registration refused, green listening after us"
        }
    };
    let target = SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT);
    let report = short_connections(tb.client_ns(), target, 46000..46200, what);
    assert_eq!(report.count(GREEN_ID), 200, "{what}");
}

/// Where the kernel does not clone listener tags onto accepted connections (7.3; forced
/// here), sk_lookup leaves a decision per connection and sock_ops counts from it: open
/// long-lived connections per backend, then their closes, as with tags.
pub fn accounting_by_decisions(name: &str) {
    let svc = socket_service(0, Affinity::Connection);
    let (mut tb, slot) = testbed(name, &svc);
    let cloned = !tb.dp.dp().socket_decisions_used();
    eprintln!("{name}: this kernel clones listener tags: {cloned}");
    tb.dp.dp().use_socket_decisions(true).expect("decisions on");
    let target = SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT);
    let ns = tb.client_ns().to_owned();
    let blue = LongLived::open(&ns, target, 30, STEP_TIMEOUT);
    wait_rounds(&blue, 3, name);
    tb.dp.dp().set_weight(slot, 10000).expect("weight 100%");
    let green = LongLived::open(&ns, target, 10, STEP_TIMEOUT);
    wait_rounds(&green, 3, name);
    let c = tb.dp.dp().counters_view(slot).expect("counters");
    assert_eq!(
        (c[0].active_flows, c[1].active_flows),
        (30, 10),
        "{name}: open connections per backend, counted from decisions"
    );
    let mut problems = traffic::long_problems(&blue.finish(), Some(BLUE_ID));
    problems.extend(traffic::long_problems(&green.finish(), Some(GREEN_ID)));
    assert!(problems.is_empty(), "{name}: {problems:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let c = tb.dp.dp().counters_view(slot).expect("counters");
        if c[0].active_flows + c[1].active_flows == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: closes counted: {c:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    tb.dp.dp().use_socket_decisions(!cloned).expect("restore");
}

/// A second, independent sk_lookup program in the same namespace (another data plane's, for
/// another port) and ours each steer their own port; neither overrides the other.
pub fn another_sk_lookup_program_keeps_working(name: &str) {
    use shifter::{DataPlane, LoadOptions};
    let svc = socket_service(10000, Affinity::Connection);
    let (tb, _) = testbed(name, &svc);
    let ns = tb.server_ns().to_owned();
    let pins = shifter_tests::netns::unique_name("/sys/fs/bpf/shifter-t", &format!("{name}-2"));
    struct Pins(String);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Pins(pins.clone());
    let mut other = DataPlane::load(&LoadOptions::new(&pins)).expect("second data plane");
    // Port 81 of the second program: blue is the "other" echo server (port OTHER_PORT).
    let mut second = socket_service(0, Affinity::Connection);
    second.port = 81;
    second.config.blue_port = OTHER_PORT;
    second.config.green_port = OTHER_PORT + 1;
    run_in(&ns, || other.set_service(&second)).expect("second service");
    for (port, id) in [(SERVICE_PORT, GREEN_ID), (81, OTHER_ID)] {
        let target = SocketAddr::new(IpAddr::V4(SERVER_V4), port);
        let report = run_in(tb.client_ns(), || {
            traffic::tcp_short(target, 200, STEP_TIMEOUT, BATCH_BUDGET)
        });
        let what = format!("two sk_lookup programs, port {port}");
        assert!(
            report.failures().is_empty(),
            "{what}: {}",
            report.failure_summary()
        );
        assert_eq!(report.count(id), 200, "{what}: steered by its own program");
    }
    run_in(&ns, || other.detach_all()).expect("detach the second");
}

/// Reads `kernel.bpf_stats_enabled` on, restores the old value on drop.
struct BpfStats(String);

impl BpfStats {
    fn enable() -> Self {
        const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(PATH).expect("read bpf_stats_enabled");
        std::fs::write(PATH, "1").expect("enable bpf_stats_enabled");
        Self(old.trim().to_owned())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// Listeners per port once `port` has `want` of them, or as they are after 5 s. A closed
/// listener leaves the map when its last descriptor closes, and a process that another test
/// thread is forking holds a copy of every descriptor until its exec: not at once, so wait.
fn listeners_once(
    dp: &mut shifter::DataPlane,
    port: u16,
    want: Option<u32>,
) -> std::collections::BTreeMap<u16, u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let listening = dp.listener_counts().expect("listener counts");
        if listening.get(&port).copied() == want || std::time::Instant::now() > deadline {
            return listening;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn run_count(dp: &mut shifter::DataPlane, name: &str) -> u64 {
    dp.program_mut(name)
        .unwrap_or_else(|| panic!("program {name}"))
        .info()
        .expect("program info")
        .run_count()
}

/// With no interface attached (every service socket-dispatched), the programs run per
/// connection, not per packet: 200 new connections grow sk_lookup's run count by 200, one
/// connection carrying 2000 exchanges by 1.
pub fn programs_run_per_connection_not_per_packet(name: &str) {
    use shifter_common::{PROG_SK_LOOKUP, PROG_SOCK_OPS};
    let svc = socket_service(5000, Affinity::Connection);
    let (mut tb, _) = testbed(name, &svc);
    let ns = tb.server_ns().to_owned();
    run_in(&ns, || tb.dp.dp().detach(shifter_tests::netns::SERVER_IF)).expect("detach TC");
    let _stats = BpfStats::enable();
    let target = SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT);
    let dp = tb.dp.dp();
    let (sk0, ops0) = (run_count(dp, PROG_SK_LOOKUP), run_count(dp, PROG_SOCK_OPS));
    short_connections(tb.client_ns(), target, 47000..47200, "socket run counts");
    let dp = tb.dp.dp();
    let (sk1, ops1) = (run_count(dp, PROG_SK_LOOKUP), run_count(dp, PROG_SOCK_OPS));
    let long = LongLived::open(tb.client_ns(), target, 1, STEP_TIMEOUT);
    assert!(
        long.wait_rounds(2000, std::time::Duration::from_secs(60)),
        "2000 exchanges"
    );
    let conns = long.finish();
    assert!(conns[0].error.is_none(), "{:?}", conns[0].error);
    std::thread::sleep(std::time::Duration::from_millis(200)); // its close callbacks
    let dp = tb.dp.dp();
    let (sk2, ops2) = (run_count(dp, PROG_SK_LOOKUP), run_count(dp, PROG_SOCK_OPS));
    // What the rest of the host makes sock_ops run meanwhile, for the printout.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let idle = run_count(tb.dp.dp(), PROG_SOCK_OPS) - ops2;
    eprintln!("run counts: sock_ops ran {idle} times in 1 s without traffic of this test");
    eprintln!(
        "run counts: 200 connections: sk_lookup +{}, sock_ops +{}; 1 connection with {} \
         exchanges: sk_lookup +{}, sock_ops +{}",
        sk1 - sk0,
        ops1 - ops0,
        conns[0].exchanges,
        sk2 - sk1,
        ops2 - ops1
    );
    // Once per SYN (and once more for a SYN-cookie handshake's final ACK, when an accept
    // queue overflows: a slow VM).
    assert!(
        (200..=202).contains(&(sk1 - sk0)),
        "sk_lookup runs once per new connection: {}",
        sk1 - sk0
    );
    assert!(
        (1..=2).contains(&(sk2 - sk1)),
        "and once for a connection however many packets it carries: {}",
        sk2 - sk1
    );
    // sock_ops is attached to the cgroup root: it runs for every TCP socket of the host
    // (the client's too, and every test running beside this one), so its count is printed,
    // not asserted; what it runs for are connection events (connect, established, state
    // changes), not data packets.
}

/// Switching a service's dispatch under live connections breaks none: 50 connections
/// accepted under rewrite (flow entries, on B/G) keep their rewrite after the switch to
/// socket; 50 accepted under socket (on P) keep working after the switch back to rewrite;
/// new connections follow the dispatch of the moment.
pub fn switching_dispatch_keeps_live_connections(name: &str) {
    let mut rewrite = crate::netns_suite::service(Protocol::Tcp, 5000);
    rewrite.config.dispatch = Dispatch::Rewrite;
    let mut tb = Testbed::new(name, Hook::Tc, Servers::Tcp);
    let ns = tb.server_ns().to_owned();
    let slot = run_in(&ns, || tb.dp.dp().set_service(&rewrite)).expect("rewrite service");
    let target = SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT);
    let client = tb.client_ns().to_owned();
    let what = "dispatch switch";
    let under_rewrite = LongLived::open(&client, target, 50, STEP_TIMEOUT);
    wait_rounds(&under_rewrite, 3, what);
    let entries = tb.dp.dp().flows(Some(slot)).expect("flows").len();
    assert_eq!(entries, 50, "{what}: rewrite made an entry per connection");

    let mut socket = rewrite.clone();
    socket.config.dispatch = Dispatch::Socket;
    let same = run_in(&ns, || tb.dp.dp().set_service(&socket)).expect("to socket");
    assert_eq!(same, slot, "{what}: the same service, one word rewritten");
    wait_rounds(&under_rewrite, 5, what);
    let under_socket = LongLived::open(&client, target, 50, STEP_TIMEOUT);
    wait_rounds(&under_socket, 3, what);
    short_connections(&client, target, 48000..48200, what);
    assert_eq!(
        tb.dp.dp().flows(Some(slot)).expect("flows").len(),
        50,
        "{what}: socket dispatch made no entries; the rewrite connections kept theirs"
    );
    let sweep_all = shifter::dataplane::SweepPolicy {
        tcp_idle: std::time::Duration::ZERO,
        ..Default::default()
    };
    let rewrite_ports = |tb: &mut Testbed| tb.dp.dp().rewrite_ports().expect("rewrite ports");
    tb.dp
        .dp()
        .sweep(&shifter::dataplane::SweepPolicy::default())
        .expect("sweep");
    assert_eq!(
        rewrite_ports(&mut tb),
        [SERVICE_PORT],
        "{what}: TC keeps handling the port while rewrite connections remain"
    );

    run_in(&ns, || tb.dp.dp().set_service(&rewrite)).expect("back to rewrite");
    wait_rounds(&under_rewrite, 5, what);
    wait_rounds(&under_socket, 5, what);
    short_connections(&client, target, 48200..48400, what);
    let mut problems = traffic::long_problems(&under_rewrite.finish(), None);
    problems.extend(traffic::long_problems(&under_socket.finish(), None));
    assert!(
        problems.is_empty(),
        "{what}: live connections hurt: {problems:?}"
    );

    // Socket again with no rewrite connection left: once the sweep has removed their
    // entries, TC ingress lets the port's packets go at its first lookup.
    run_in(&ns, || tb.dp.dp().set_service(&socket)).expect("to socket again");
    assert_eq!(
        rewrite_ports(&mut tb),
        [SERVICE_PORT],
        "{what}: kept until the sweep"
    );
    tb.dp.dp().sweep(&sweep_all).expect("sweep");
    assert_eq!(
        rewrite_ports(&mut tb),
        Vec::<u16>::new(),
        "{what}: no rewrite flow left"
    );
    short_connections(&client, target, 48400..48600, what);
}
