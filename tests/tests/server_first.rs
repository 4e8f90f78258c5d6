//! A server that speaks first on a shifted connection whose flow entry is gone: egress must
//! still rewrite the reply back to the service port, from the per-socket record the sock_ops
//! program keeps. A direct connection to the backend must stay untouched in the same case.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    time::Duration,
};

use shifter::{Hook, Service};
use shifter_tests::netns::{
    AttachedDataPlane, BLUE_PORT, Family, GREEN_PORT, NetnsPair, SERVER_IF, SERVICE_PORT, run_in,
    spawn_in,
};

const GREETING: &[u8] = b"hello from the server";

/// Accepts one connection on `port`, waits for the go signal, then writes first.
fn greeter(ns: &str, addr: IpAddr, port: u16) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let handle = spawn_in(ns, move || {
        let listener = TcpListener::bind(SocketAddr::new(addr, port)).expect("bind greeter");
        ready_tx.send(()).expect("ready");
        let (mut conn, _) = listener.accept().expect("accept");
        go_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("go signal");
        conn.write_all(GREETING).expect("server writes first");
        // Keep the connection open until the client has read.
        let mut buf = [0u8; 1];
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let _ = conn.read(&mut buf);
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("greeter listening");
    (go_tx, handle)
}

fn run_case(family: Family, direct: bool) {
    let name = if direct {
        "srvfirst-direct"
    } else {
        "srvfirst"
    };
    let pair = NetnsPair::new(name);
    let (client_ns, server_ns) = (pair.client.name.clone(), pair.server.name.clone());
    let mut dp = AttachedDataPlane::new(name, &server_ns, SERVER_IF, Hook::Tc);
    let slot = dp
        .dp()
        .set_service(&Service::tcp(SERVICE_PORT, BLUE_PORT, GREEN_PORT, 0))
        .expect("service");
    let (go, server) = greeter(&server_ns, family.server(), BLUE_PORT);
    let port = if direct { BLUE_PORT } else { SERVICE_PORT };
    let target = SocketAddr::new(family.server(), port);
    let mut conn = run_in(&client_ns, || {
        TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect")
    });
    // Let the handshake finish on the server side (sock_ops runs on the final ACK).
    std::thread::sleep(Duration::from_millis(200));
    let removed = dp.dp().clear_flows().expect("clear flows");
    assert_eq!(
        removed,
        usize::from(!direct),
        "a shifted connection has exactly one entry, a direct one none"
    );
    let before = dp.dp().counters(slot).expect("counters")[0].recoveries;
    go.send(()).expect("go");
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut got = vec![0u8; GREETING.len()];
    conn.read_exact(&mut got).unwrap_or_else(|e| {
        panic!("{family:?} direct={direct}: the client did not get the server's first bytes: {e}")
    });
    assert_eq!(got, GREETING);
    assert_eq!(conn.peer_addr().expect("peer").port(), port);
    let after = dp.dp().counters(slot).expect("counters")[0].recoveries;
    if direct {
        assert_eq!(after, before, "a direct connection must not be restored");
        assert!(dp.dp().flows(None).expect("flows").is_empty());
    } else {
        assert_eq!(
            after,
            before + 1,
            "egress restored the entry from the socket"
        );
        assert_eq!(dp.dp().flows(None).expect("flows").len(), 1);
    }
    drop(conn);
    server.join().expect("greeter thread");
}

#[test]
fn server_speaks_first_after_flow_table_clear_v4() {
    run_case(Family::V4, false);
}

#[test]
fn server_speaks_first_after_flow_table_clear_v6() {
    run_case(Family::V6, false);
}

#[test]
fn direct_connection_speaking_first_is_untouched() {
    run_case(Family::V4, true);
    run_case(Family::V6, true);
}
