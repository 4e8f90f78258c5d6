//! Backends and the load generator of the end-to-end benchmarks. Everything is bounded in
//! time; threads are joined before a function returns (or on drop for the servers).
//!
//! Wire protocol: a connection whose first byte is `s` is a sink (the server counts its
//! bytes and never answers); any other connection is echoed byte for byte until EOF.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::env;

const TICK: Duration = Duration::from_millis(50);

/// Counters of one backend port.
#[derive(Default)]
pub struct PortStats {
    pub accepted: AtomicU64,
}

/// Backend servers on some ports of a namespace, with a pool of accepting threads each.
pub struct Backends {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Bytes received by sink connections, all ports.
    pub sink_bytes: Arc<AtomicU64>,
    pub ports: Vec<(u16, Arc<PortStats>)>,
}

impl Backends {
    pub fn start(ns: &str, ports: &[u16], threads_per_port: usize) -> anyhow::Result<Self> {
        let listeners = env::run_in(ns, || {
            ports
                .iter()
                .map(|p| {
                    let l = TcpListener::bind(("0.0.0.0", *p))
                        .with_context(|| format!("listen :{p}"))?;
                    // A deep accept queue (std's default is small).
                    // SAFETY: valid listening socket.
                    unsafe { libc::listen(l.as_raw_fd(), 8192) };
                    l.set_nonblocking(true)?;
                    Ok(l)
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let sink_bytes = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let mut port_stats = Vec::new();
        for (l, port) in listeners.into_iter().zip(ports) {
            let l = Arc::new(l);
            let stats = Arc::new(PortStats::default());
            port_stats.push((*port, stats.clone()));
            for _ in 0..threads_per_port {
                let (l, stop, sink, stats) =
                    (l.clone(), stop.clone(), sink_bytes.clone(), stats.clone());
                threads.push(thread::spawn(move || accept_loop(&l, &stop, &sink, &stats)));
            }
        }
        Ok(Self {
            stop,
            threads,
            sink_bytes,
            ports: port_stats,
        })
    }

    pub fn accepted(&self, port: u16) -> u64 {
        self.ports
            .iter()
            .find(|(p, _)| *p == port)
            .map_or(0, |(_, s)| s.accepted.load(Ordering::Relaxed))
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn poll_in(fd: i32, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut p, 1, timeout.as_millis() as i32) > 0 }
}

fn accept_loop(l: &TcpListener, stop: &AtomicBool, sink: &AtomicU64, stats: &PortStats) {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                serve(s, stop, sink);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                poll_in(l.as_raw_fd(), TICK);
            }
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn serve(mut s: TcpStream, stop: &AtomicBool, sink: &AtomicU64) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 128 * 1024];
    let mut first = true;
    let mut sinking = false;
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if first {
                    first = false;
                    sinking = buf[0] == b's';
                }
                if sinking {
                    sink.fetch_add(n as u64, Ordering::Relaxed);
                } else if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// What [`conn_rate`] counted.
pub struct ConnRate {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

/// Connections per second: `threads` clients each loop connect, 1-byte request, 1-byte
/// reply, close, for `secs`, cycling through `targets`. Runs in namespace `ns`.
pub fn conn_rate(
    ns: &str,
    targets: &[SocketAddr],
    threads: usize,
    secs: f64,
) -> anyhow::Result<ConnRate> {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    thread::scope(|s| -> anyhow::Result<()> {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (ok, errors) = (ok.clone(), errors.clone());
                s.spawn(move || -> anyhow::Result<()> {
                    env::enter(ns)?;
                    for target in targets.iter().cycle() {
                        if Instant::now() >= deadline {
                            break;
                        }
                        if one_exchange(*target).is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok(())
    })?;
    Ok(ConnRate {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    })
}

fn one_exchange(target: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_nodelay(true)?;
    s.write_all(b"r")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(())
}

/// Requests per second on established keep-alive connections: `conns` clients each open one
/// connection (cycling through `targets`) and loop a 1-byte request and its 1-byte reply for
/// `secs` (after a 0.2 s warm-up): what most services do, and where per-packet work shows.
pub fn keepalive_rps(
    ns: &str,
    targets: &[SocketAddr],
    conns: usize,
    secs: f64,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let warm = Instant::now() + Duration::from_millis(200);
    let deadline = warm + Duration::from_secs_f64(secs);
    thread::scope(|s| -> anyhow::Result<()> {
        let hs: Vec<_> = (0..conns)
            .map(|i| {
                let done = done.clone();
                let target = targets[i % targets.len()];
                s.spawn(move || -> anyhow::Result<()> {
                    env::enter(ns)?;
                    let mut c = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                        .with_context(|| format!("connect {target}"))?;
                    c.set_nodelay(true)?;
                    c.set_read_timeout(Some(Duration::from_secs(2)))?;
                    let mut b = [0u8; 1];
                    loop {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        c.write_all(b"l")?;
                        c.read_exact(&mut b).context("keep-alive reply")?;
                        if now >= warm {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok(())
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / secs)
}

/// Waits (bounded) until a full exchange with `target` works from namespace `ns`.
pub fn wait_ready(ns: &str, target: SocketAddr, what: &str) -> anyhow::Result<()> {
    env::run_in(ns, || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match one_exchange(target) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    anyhow::bail!("{what} does not answer on {target} after 10 s: {e}")
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

/// Round-trip times (µs) of `reqs` 1-byte request/replies on one connection, sent at a fixed
/// `rate` per second (after 100 unrecorded ones).
pub fn latency(ns: &str, target: SocketAddr, reqs: usize, rate: f64) -> anyhow::Result<Vec<f64>> {
    env::run_in(ns, || {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .with_context(|| format!("connect {target}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [0u8; 1];
        let mut out = Vec::with_capacity(reqs);
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now();
        for i in 0..reqs + 100 {
            let at = start + period * i as u32;
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
            let t = Instant::now();
            s.write_all(b"l")?;
            s.read_exact(&mut b).context("latency reply")?;
            if i >= 100 {
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(out)
    })
}

/// Throughput (Gbit/s) of `streams` bulk connections for `secs`, counted by the sinks after a
/// 0.3 s warm-up.
pub fn throughput(
    ns: &str,
    target: SocketAddr,
    streams: usize,
    secs: f64,
    sink: &AtomicU64,
) -> anyhow::Result<f64> {
    let warmup = Duration::from_millis(300);
    let start = Instant::now();
    let deadline = start + warmup + Duration::from_secs_f64(secs) + Duration::from_millis(100);
    thread::scope(|s| -> anyhow::Result<f64> {
        let hs: Vec<_> = (0..streams)
            .map(|_| {
                s.spawn(move || -> anyhow::Result<()> {
                    env::enter(ns)?;
                    let mut c = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                        .with_context(|| format!("connect {target}"))?;
                    c.set_write_timeout(Some(Duration::from_millis(200)))?;
                    let mut buf = vec![b's'; 128 * 1024];
                    buf[1] = 0;
                    while Instant::now() < deadline {
                        match c.write(&buf) {
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock
                                        | ErrorKind::TimedOut
                                        | ErrorKind::Interrupted
                                ) => {}
                            Err(e) => return Err(e).context("bulk write"),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        thread::sleep(warmup);
        let (b0, t0) = (sink.load(Ordering::Relaxed), Instant::now());
        thread::sleep(Duration::from_secs_f64(secs));
        let (b1, t1) = (sink.load(Ordering::Relaxed), Instant::now());
        for h in hs {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok((b1 - b0) as f64 * 8.0 / (t1 - t0).as_secs_f64() / 1e9)
    })
}
