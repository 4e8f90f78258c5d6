//! Client traffic for the namespace tests: many short request/response connections (or UDP
//! exchanges), and long-lived connections that keep exchanging data. Every result records
//! which backend answered. Each function runs in the calling thread's network namespace
//! (use `netns::run_in`), except `LongLived`, which takes the namespace itself.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::netns::{self, GREEN_ID, MSG_LEN};

/// What happened to one short connection or datagram exchange.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The client's source port.
    pub local_port: u16,
    /// Id byte of the server that answered, if any did.
    pub backend: Option<u8>,
    pub error: Option<String>,
}

/// Results of a batch of short exchanges.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// Exchanges answered by the server with `id`.
    pub fn count(&self, id: u8) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.error.is_none() && o.backend == Some(id))
            .count()
    }
    pub fn failures(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| o.error.is_some()).collect()
    }
    /// Green's share of the answered exchanges, in percent.
    pub fn green_percent(&self) -> f64 {
        let answered = self.outcomes.iter().filter(|o| o.error.is_none()).count();
        if answered == 0 {
            return 0.0;
        }
        self.count(GREEN_ID) as f64 * 100.0 / answered as f64
    }
    /// The first few failures, for an assertion message.
    pub fn failure_summary(&self) -> String {
        let f = self.failures();
        let mut s = format!("{} of {} failed", f.len(), self.outcomes.len());
        for o in f.iter().take(5) {
            s.push_str(&format!(
                "; port {}: {}",
                o.local_port,
                o.error.as_deref().unwrap_or("")
            ));
        }
        s
    }
}

fn request(seq: u64) -> [u8; MSG_LEN] {
    seq.to_be_bytes()
}

/// Checks an echo reply and returns the id byte.
fn check_reply(reply: &[u8; MSG_LEN + 1], req: &[u8; MSG_LEN]) -> Result<u8, String> {
    if &reply[1..] != req {
        return Err(format!(
            "echo mismatch: sent {req:?}, got {:?}",
            &reply[1..]
        ));
    }
    Ok(reply[0])
}

fn tcp_exchange(s: &mut TcpStream, seq: u64) -> Result<u8, String> {
    let req = request(seq);
    s.write_all(&req).map_err(|e| format!("write: {e}"))?;
    let mut reply = [0u8; MSG_LEN + 1];
    s.read_exact(&mut reply).map_err(|e| format!("read: {e}"))?;
    check_reply(&reply, &req)
}

/// `sockaddr_storage` form of an address, with its length.
fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Connects to `target` from source port `port` (any address), waiting at most `timeout`.
fn connect_from(port: u16, target: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let family = if target.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket() call; the fd is owned by the TcpStream below or closed.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    // A blocking connect() gives up after SO_SNDTIMEO on Linux.
    stream.set_write_timeout(Some(timeout))?;
    let local = match target {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
        SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
    };
    let (ss, len) = sockaddr(local);
    // SAFETY: valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&raw const ss).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (ss, len) = sockaddr(target);
    // SAFETY: as above.
    if unsafe { libc::connect(fd, (&raw const ss).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

fn tcp_one(target: SocketAddr, source_port: Option<u16>, timeout: Duration, seq: u64) -> Outcome {
    let mut out = Outcome {
        local_port: source_port.unwrap_or(0),
        backend: None,
        error: None,
    };
    let result = (|| {
        let mut s = match source_port {
            Some(p) => connect_from(p, target, timeout),
            None => TcpStream::connect_timeout(&target, timeout),
        }
        .map_err(|e| format!("connect: {e}"))?;
        out.local_port = s.local_addr().map_err(|e| e.to_string())?.port();
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let peer = s.peer_addr().map_err(|e| e.to_string())?;
        if peer != target {
            return Err(format!("peer is {peer}, not {target}"));
        }
        tcp_exchange(&mut s, seq)
    })();
    match result {
        Ok(id) => out.backend = Some(id),
        Err(e) => out.error = Some(e),
    }
    out
}

/// A batch gives up after this many failures in a row (the rest count as not attempted), so
/// a broken data plane fails a test in seconds instead of running into every timeout.
pub const MAX_FAILURES_IN_A_ROW: usize = 10;

impl Report {
    /// True when the last `MAX_FAILURES_IN_A_ROW` exchanges all failed.
    fn hopeless(&self) -> bool {
        self.outcomes.len() >= MAX_FAILURES_IN_A_ROW
            && self.outcomes[self.outcomes.len() - MAX_FAILURES_IN_A_ROW..]
                .iter()
                .all(|o| o.error.is_some())
    }

    fn skip(&mut self, local_port: u16, why: &str) {
        self.outcomes.push(Outcome {
            local_port,
            backend: None,
            error: Some(format!("not attempted: {why}")),
        });
    }
}

/// `n` short TCP connections to `target`, one after the other, each doing one
/// request/response and closing. Each step is bounded by `timeout`; the batch stops early
/// (the remaining connections count as failures) after `budget` or after
/// `MAX_FAILURES_IN_A_ROW` failures in a row.
pub fn tcp_short(target: SocketAddr, n: usize, timeout: Duration, budget: Duration) -> Report {
    let budget = crate::patient(budget);
    let start = Instant::now();
    let mut report = Report::default();
    for i in 0..n {
        if start.elapsed() > budget {
            report.skip(0, &format!("batch budget {budget:?} exhausted"));
        } else if report.hopeless() {
            report.skip(0, "too many failures in a row");
        } else {
            report
                .outcomes
                .push(tcp_one(target, None, timeout, i as u64));
        }
    }
    report
}

/// Like `tcp_short`, but one connection from each source port of `ports` (bound explicitly),
/// so the tuples and therefore the expected split are the same on every run.
pub fn tcp_short_from(
    target: SocketAddr,
    ports: std::ops::Range<u16>,
    timeout: Duration,
    budget: Duration,
) -> Report {
    let budget = crate::patient(budget);
    let start = Instant::now();
    let mut report = Report::default();
    for (i, port) in ports.enumerate() {
        if start.elapsed() > budget {
            report.skip(port, &format!("batch budget {budget:?} exhausted"));
        } else if report.hopeless() {
            report.skip(port, "too many failures in a row");
        } else {
            report
                .outcomes
                .push(tcp_one(target, Some(port), timeout, i as u64));
        }
    }
    report
}

/// One UDP request/response from each source port in `ports` to `target`. The reply must
/// come from `target` itself (the service address and port, i.e. rewritten back). A lost
/// datagram is retried up to `retries` times, each waiting `timeout`. Gives up like
/// `tcp_short` after `MAX_FAILURES_IN_A_ROW` failures in a row.
pub fn udp_requests(
    target: SocketAddr,
    ports: std::ops::Range<u16>,
    timeout: Duration,
    retries: u32,
) -> Report {
    let bind_ip = match target.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let mut report = Report::default();
    for (i, port) in ports.enumerate() {
        if report.hopeless() {
            report.skip(port, "too many failures in a row");
            continue;
        }
        let mut out = Outcome {
            local_port: port,
            backend: None,
            error: None,
        };
        let result = (|| {
            let s = UdpSocket::bind(SocketAddr::new(bind_ip, port))
                .map_err(|e| format!("bind: {e}"))?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            let req = request(i as u64);
            let mut last = String::new();
            for _ in 0..=retries {
                s.send_to(&req, target).map_err(|e| format!("send: {e}"))?;
                let mut buf = [0u8; 64];
                match s.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if from != target {
                            return Err(format!("reply came from {from}, not {target}"));
                        }
                        if n != MSG_LEN + 1 {
                            return Err(format!("reply of {n} bytes"));
                        }
                        let mut reply = [0u8; MSG_LEN + 1];
                        reply.copy_from_slice(&buf[..n]);
                        return check_reply(&reply, &req);
                    }
                    Err(e) => last = format!("recv: {e}"),
                }
            }
            Err(format!("no reply after {} tries ({last})", retries + 1))
        })();
        match result {
            Ok(id) => out.backend = Some(id),
            Err(e) => out.error = Some(e),
        }
        report.outcomes.push(out);
    }
    report
}

/// One long-lived connection's story.
#[derive(Clone, Debug)]
pub struct LongConn {
    pub local_port: u16,
    /// Backend of the first exchange.
    pub first_backend: Option<u8>,
    /// Exchanges completed.
    pub exchanges: u64,
    /// The first reply from another backend than the first one, if any.
    pub switched_to: Option<u8>,
    /// The error that ended the connection, if any.
    pub error: Option<String>,
}

/// Long-lived TCP connections that keep doing request/response in rounds (each live
/// connection one exchange per round) until stopped. One thread inside the client
/// namespace drives them all.
pub struct LongLived {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    handle: Option<JoinHandle<Vec<LongConn>>>,
}

impl LongLived {
    /// Opens `n` connections to `target` from namespace `ns`, each completing one exchange,
    /// then keeps them busy. Returns once all are open (or failed to open).
    pub fn open(ns: &str, target: SocketAddr, n: usize, timeout: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            netns::spawn_in(ns, move || {
                let mut conns: Vec<(Option<TcpStream>, LongConn)> = (0..n)
                    .map(|i| tcp_open(target, timeout, i as u64))
                    .collect();
                let _ = ready_tx.send(());
                let mut seq = n as u64;
                while !stop.load(Ordering::Relaxed) {
                    for (stream, c) in &mut conns {
                        let Some(s) = stream else { continue };
                        seq += 1;
                        match tcp_exchange(s, seq) {
                            Ok(id) => {
                                c.exchanges += 1;
                                if Some(id) != c.first_backend && c.switched_to.is_none() {
                                    c.switched_to = Some(id);
                                }
                            }
                            Err(e) => {
                                c.error = Some(e);
                                *stream = None;
                            }
                        }
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                    // Leave the CPUs some air between rounds.
                    thread::sleep(Duration::from_millis(1));
                }
                conns.into_iter().map(|(_, c)| c).collect()
            })
        };
        // Opening is bounded by n * (connect + exchange timeouts); wait for it.
        let _ = ready_rx.recv();
        Self {
            stop,
            rounds,
            handle: Some(handle),
        }
    }

    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Waits until `more` further rounds completed; false when `deadline` (scaled by
    /// [`crate::patience`]) passed first.
    pub fn wait_rounds(&self, more: u64, deadline: Duration) -> bool {
        let deadline = crate::patient(deadline);
        let target = self.rounds() + more;
        let start = Instant::now();
        while self.rounds() < target {
            if start.elapsed() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Stops and checks that no connection broke (`what`: during what).
    pub fn finish_unbroken(self, what: &str) -> Vec<LongConn> {
        let conns = self.finish();
        let problems = long_problems(&conns, None);
        assert!(
            problems.is_empty(),
            "{what}: long-lived connections hurt: {problems:?}"
        );
        conns
    }

    /// Stops the exchanges and returns each connection's story. The connections close.
    pub fn finish(mut self) -> Vec<LongConn> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().expect("joined once").join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn tcp_open(target: SocketAddr, timeout: Duration, seq: u64) -> (Option<TcpStream>, LongConn) {
    let mut c = LongConn {
        local_port: 0,
        first_backend: None,
        exchanges: 0,
        switched_to: None,
        error: None,
    };
    let r = (|| {
        let mut s =
            TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
        c.local_port = s.local_addr().map_err(|e| e.to_string())?.port();
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let id = tcp_exchange(&mut s, seq)?;
        Ok::<_, String>((s, id))
    })();
    match r {
        Ok((s, id)) => {
            c.first_backend = Some(id);
            c.exchanges = 1;
            (Some(s), c)
        }
        Err(e) => {
            c.error = Some(e);
            (None, c)
        }
    }
}

/// Summary of long-lived connections for assertion messages: the problems, if any.
pub fn long_problems(conns: &[LongConn], expect_backend: Option<u8>) -> Vec<String> {
    let mut p = Vec::new();
    for c in conns {
        if let Some(e) = &c.error {
            p.push(format!(
                "port {}: error after {} exchanges: {e}",
                c.local_port, c.exchanges
            ));
        }
        if let Some(to) = c.switched_to {
            p.push(format!(
                "port {}: moved from {:?} to {:?}",
                c.local_port,
                c.first_backend.map(char::from),
                char::from(to)
            ));
        }
        if let (Some(want), Some(got)) = (expect_backend, c.first_backend)
            && want != got
        {
            p.push(format!(
                "port {}: started on {:?}, expected {:?}",
                c.local_port,
                char::from(got),
                char::from(want)
            ));
        }
    }
    p
}

/// Short connections to `target` from a namespace, batch after batch, in the background until
/// finished (at most 3 minutes): new connections all through a kill, restart or upgrade.
pub struct ShortConnections {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Report>>,
}

impl ShortConnections {
    pub fn start(ns: &str, target: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            netns::spawn_in(ns, move || {
                let mut all = Report::default();
                let deadline = Instant::now() + Duration::from_secs(180);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let r = tcp_short(target, 5, Duration::from_secs(3), Duration::from_secs(30));
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

    /// Stops and returns every outcome.
    pub fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().expect("joined once").join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Stops and checks that at least `min` connections were made and every one was
    /// answered (`what`: during what).
    pub fn finish_all_answered(self, min: usize, what: &str) -> Report {
        let report = self.finish();
        assert!(
            report.outcomes.len() >= min,
            "{what}: too few short connections: {} (want {min})",
            report.outcomes.len()
        );
        assert!(
            report.failures().is_empty(),
            "{what}: new connections failed: {}",
            report.failure_summary()
        );
        report
    }
}

impl Drop for ShortConnections {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
