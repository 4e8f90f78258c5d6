//! Network-namespace test beds: a client and a server namespace joined by a veth pair,
//! small echo servers that say which backend answered, and a data plane attached inside the
//! server namespace. Everything is removed by `Drop`, also when a test panics.
//!
//! Addresses come only from the benchmarking ranges of TESTNET.md (198.18.0.0/15 and
//! 2001:2::/48); names carry the test name, the pid and a counter, so tests run side by side.
//!
//! Over 700 lines on purpose: the pieces of one test bed (namespaces, veth pair, addresses, echo
//! servers, the attached data plane, checksum settings) that every namespace area uses together.

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use shifter::{DataPlane, Hook, LoadOptions};

/// Client side of the veth pair.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Server side of the veth pair (where the data plane is attached).
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// Interface names inside the namespaces (names are per namespace, so they never collide).
pub const CLIENT_IF: &str = "shveth-c";
pub const SERVER_IF: &str = "shveth-s";

/// Reply marker of the blue echo server.
pub const BLUE_ID: u8 = b'B';
/// Reply marker of the green echo server.
pub const GREEN_ID: u8 = b'G';
/// Reply marker of an echo server that is not a backend of any service.
pub const OTHER_ID: u8 = b'O';

/// Request size of the echo protocol; a reply is the server's id byte plus the request.
pub const MSG_LEN: usize = 8;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<prefix>-<name>-<pid>-<n>`.
pub fn unique_name(prefix: &str, name: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{name}-{}-{n}", std::process::id())
}

/// Fails with a clear message unless we run as root (namespaces, veth and BPF need it).
pub fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, veth, BPF); run it as root"
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `ip {}`: {e} (is iproute2 installed?)",
            args.join(" ")
        )
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Moves the calling thread into the network namespace `ns` (from `ip netns add`).
/// Sockets the thread creates afterwards belong to that namespace.
pub fn enter(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let f = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: valid namespace fd; affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {ns}: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `f` in a thread inside namespace `ns` and returns its result (a panic in `f` is
/// passed on to the caller).
pub fn run_in<T: Send, F: FnOnce() -> T + Send>(ns: &str, f: F) -> T {
    thread::scope(|s| {
        let h = s.spawn(|| {
            enter(ns);
            f()
        });
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Spawns a thread inside namespace `ns`.
pub fn spawn_in<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
    ns: &str,
    f: F,
) -> JoinHandle<T> {
    let ns = ns.to_owned();
    thread::spawn(move || {
        enter(&ns);
        f()
    })
}

/// One network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Self {
        ip(&["netns", "add", &name]);
        Self { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Address family of a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn server(self) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(SERVER_V4),
            Self::V6 => IpAddr::V6(SERVER_V6),
        }
    }
    pub fn client(self) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(CLIENT_V4),
            Self::V6 => IpAddr::V6(CLIENT_V6),
        }
    }
}

/// A client namespace `shc-<name>-<pid>-<n>` and a server namespace `shs-...` with a veth
/// pair between them, addressed for IPv4 and IPv6, links up.
pub struct NetnsPair {
    // Drop order: the server side first is irrelevant; both are deleted.
    pub client: Netns,
    pub server: Netns,
}

impl NetnsPair {
    pub fn new(name: &str) -> Self {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let client = Netns::new(format!("shc-{name}-{pid}-{n}"));
        let server = Netns::new(format!("shs-{name}-{pid}-{n}"));
        let (c, s) = (client.name.as_str(), server.name.as_str());
        ip(&[
            "-n", c, "link", "add", CLIENT_IF, "type", "veth", "peer", "name", SERVER_IF, "netns",
            s,
        ]);
        for (ns, dev, v4, v6) in [
            (c, CLIENT_IF, CLIENT_V4, CLIENT_V6),
            (s, SERVER_IF, SERVER_V4, SERVER_V6),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            // Tests bind fixed client ports (the same tuples, so the same decisions, on
            // every run) below 50000; ephemeral ports of connections open beside them must
            // not land there (seen: 24 of 200 fixed-port connects failed with EADDRINUSE next
            // to 100 long-lived connections whose ports the kernel picked in 48000..48200).
            run_in(ns, || {
                std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "50000 60999")
            })
            .unwrap_or_else(|e| panic!("ip_local_port_range in {ns}: {e}"));
        }
        let pair = Self { client, server };
        pair.wait_carrier();
        pair
    }

    /// Waits (bounded) until both veth ends report a carrier.
    fn wait_carrier(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for (ns, dev) in [
            (&self.client.name, CLIENT_IF),
            (&self.server.name, SERVER_IF),
        ] {
            loop {
                let out = Command::new("ip")
                    .args(["-n", ns, "link", "show", dev])
                    .output()
                    .expect("ip link show");
                if String::from_utf8_lossy(&out.stdout).contains("LOWER_UP") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{dev} in {ns} has no carrier after 5 s"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `struct ifreq` with the `ifr_data` member, as SIOCETHTOOL takes it.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

fn ethtool_value(iface: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    let mut val = EthtoolValue { cmd, data };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&raw mut val).cast(),
        _pad: [0; 16],
    };
    assert!(
        iface.len() < libc::IFNAMSIZ,
        "interface name {iface} too long"
    );
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    // SAFETY: plain socket() call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `req` and `val` outlive the call; SIOCETHTOOL reads/writes `val` through `data`.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &raw mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    Ok(val.data)
}

/// Turns TX checksum offload of `iface` in namespace `ns` on or off (as `ethtool -K iface tx
/// off` does). With it off, the stack sends complete checksums and a veth peer receives
/// packets as CHECKSUM_NONE, so the receiving kernel verifies every checksum: a rewrite that
/// breaks one shows up as dropped packets and `InCsumErrors`.
pub fn set_tx_checksum(ns: &str, iface: &str, on: bool) {
    run_in(ns, || {
        ethtool_value(iface, ETHTOOL_STXCSUM, u32::from(on))
            .unwrap_or_else(|e| panic!("ETHTOOL_STXCSUM on {iface} in {ns}: {e}"));
        let now = ethtool_value(iface, ETHTOOL_GTXCSUM, 0)
            .unwrap_or_else(|e| panic!("ETHTOOL_GTXCSUM on {iface} in {ns}: {e}"));
        assert_eq!(
            now != 0,
            on,
            "TX checksum offload of {iface} in {ns} did not change"
        );
    });
}

/// `InCsumErrors` of TCP and UDP (and UDP6) in namespace `ns`, summed.
pub fn checksum_errors(ns: &str) -> u64 {
    run_in(ns, || {
        let mut total = 0;
        // /proc/thread-self: /proc/net would show the process's (the main thread's) namespace.
        for (file, prefixes) in [
            ("/proc/thread-self/net/snmp", &["Tcp:", "Udp:"][..]),
            ("/proc/thread-self/net/snmp6", &[][..]),
        ] {
            let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {file}: {e}"));
            total += csum_errors_in(&text, prefixes);
        }
        total
    })
}

fn csum_errors_in(text: &str, prefixes: &[&str]) -> u64 {
    let lines: Vec<&str> = text.lines().collect();
    let mut total = 0;
    if prefixes.is_empty() {
        // snmp6: "Udp6InCsumErrors  0" lines.
        for l in &lines {
            let mut f = l.split_whitespace();
            if let (Some(k), Some(v)) = (f.next(), f.next())
                && k.ends_with("InCsumErrors")
            {
                total += v.parse::<u64>().unwrap_or(0);
            }
        }
        return total;
    }
    // snmp: a header line and a value line per protocol.
    for pair in lines.windows(2) {
        let (head, vals) = (pair[0], pair[1]);
        if !prefixes.iter().any(|p| head.starts_with(p)) || !vals.starts_with(&head[..4]) {
            continue;
        }
        if head.split_whitespace().next() != vals.split_whitespace().next() {
            continue;
        }
        for (k, v) in head.split_whitespace().zip(vals.split_whitespace()) {
            if k == "InCsumErrors" {
                total += v.parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// Waits until `fd` is readable or `timeout` passes. True when readable.
fn poll_readable(fd: i32, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    rc > 0
}

/// How often server threads look at their stop flag.
const SERVER_TICK: Duration = Duration::from_millis(50);

/// Echo servers on one port (one socket per address): each reply is `id` followed by the
/// request, so the client learns which backend served it. Stopped on drop.
pub struct EchoServer {
    pub id: u8,
    pub port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// A TCP echo server in `ns` on every address of `addrs`, port `port`.
    pub fn tcp(ns: &str, addrs: &[IpAddr], port: u16, id: u8) -> Self {
        Self::start(
            ns,
            addrs,
            port,
            id,
            "tcp",
            TcpListener::bind,
            |l, id, stop| {
                tcp_accept_loop(&l, id, stop);
            },
        )
    }

    /// A TCP echo server in `ns` on every address of `addrs`, port `port`, its listeners
    /// bound with `SO_REUSEPORT`: several such servers on one port form a reuseport group
    /// (one worker each), and stopping one leaves the others listening.
    pub fn tcp_reuseport(ns: &str, addrs: &[IpAddr], port: u16, id: u8) -> Self {
        Self::start(
            ns,
            addrs,
            port,
            id,
            "tcp reuseport",
            bind_reuseport,
            |l, id, stop| {
                tcp_accept_loop(&l, id, stop);
            },
        )
    }

    /// A UDP echo server in `ns` on every address of `addrs`, port `port`.
    pub fn udp(ns: &str, addrs: &[IpAddr], port: u16, id: u8) -> Self {
        Self::start(
            ns,
            addrs,
            port,
            id,
            "udp",
            UdpSocket::bind,
            |s, id, stop| {
                udp_loop(&s, id, stop);
            },
        )
    }

    /// Binds one socket per address inside `ns` and serves each on its own thread.
    fn start<S: Send + 'static>(
        ns: &str,
        addrs: &[IpAddr],
        port: u16,
        id: u8,
        what: &str,
        bind: fn(SocketAddr) -> std::io::Result<S>,
        serve: fn(S, u8, &Arc<AtomicBool>),
    ) -> Self {
        let addrs: Vec<SocketAddr> = addrs.iter().map(|a| SocketAddr::new(*a, port)).collect();
        let sockets = run_in(ns, || {
            addrs
                .iter()
                .map(|a| bind(*a).unwrap_or_else(|e| panic!("bind {what} {a}: {e}")))
                .collect::<Vec<_>>()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let threads = sockets
            .into_iter()
            .map(|s| {
                let stop = stop.clone();
                thread::spawn(move || serve(s, id, &stop))
            })
            .collect();
        Self {
            id,
            port,
            stop,
            threads,
        }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind_reuseport(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::FromRawFd as _;
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: a new socket we own (closed on error by the OwnedFd); the address structs
    // are fully initialised and passed with their sizes.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                std::ptr::from_ref(&one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        let rc = match addr {
            SocketAddr::V4(a) => {
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                libc::bind(
                    fd,
                    std::ptr::from_ref(&sa).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let sa = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: 0,
                };
                libc::bind(
                    fd,
                    std::ptr::from_ref(&sa).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if rc != 0 || libc::listen(fd, 1024) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(TcpListener::from(owned))
    }
}

fn tcp_accept_loop(l: &TcpListener, id: u8, stop: &Arc<AtomicBool>) {
    let mut handlers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if !poll_readable(l.as_raw_fd(), SERVER_TICK) {
            continue;
        }
        let Ok((s, _)) = l.accept() else { continue };
        let stop = stop.clone();
        handlers.retain(|h| !h.is_finished());
        handlers.push(thread::spawn(move || tcp_echo(s, id, &stop)));
    }
    for h in handlers {
        let _ = h.join();
    }
}

fn tcp_echo(mut s: TcpStream, id: u8, stop: &AtomicBool) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(SERVER_TICK));
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let whole = pending.len() / MSG_LEN * MSG_LEN;
        if whole == 0 {
            continue;
        }
        let mut reply = Vec::with_capacity(whole + whole / MSG_LEN);
        for msg in pending[..whole].chunks(MSG_LEN) {
            reply.push(id);
            reply.extend_from_slice(msg);
        }
        pending.drain(..whole);
        if s.write_all(&reply).is_err() {
            return;
        }
    }
}

fn udp_loop(s: &UdpSocket, id: u8, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(SERVER_TICK));
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = s.recv_from(&mut buf[1..]) else {
            continue;
        };
        buf[0] = id;
        let _ = s.send_to(&buf[..=n], from);
    }
}

/// A loaded data plane attached to the server end of the veth pair. On drop it is detached
/// (from inside the server namespace) and its pins are removed.
pub struct AttachedDataPlane {
    dp: Option<DataPlane>,
    ns: String,
    pin_dir: PathBuf,
}

impl AttachedDataPlane {
    /// Loads the programs with pins under a unique bpffs directory and attaches them to
    /// `iface` in namespace `ns` with `hook`.
    pub fn new(name: &str, ns: &str, iface: &str, hook: Hook) -> Self {
        Self::with_load_options(name, ns, iface, hook, |_| {})
    }

    /// As [`Self::new`], with the load options `adjust` changes.
    pub fn with_load_options(
        name: &str,
        ns: &str,
        iface: &str,
        hook: Hook,
        adjust: impl FnOnce(&mut LoadOptions),
    ) -> Self {
        require_root();
        assert!(
            std::path::Path::new("/sys/fs/bpf").exists(),
            "bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)"
        );
        let pin_dir = PathBuf::from(unique_name("/sys/fs/bpf/shifter-t", name));
        let mut opts = LoadOptions::new(&pin_dir);
        adjust(&mut opts);
        let dp = match DataPlane::load(&opts) {
            Ok(dp) => dp,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&pin_dir);
                panic!("loading the data plane: {}", error_chain(&e));
            }
        };
        let mut me = Self {
            dp: Some(dp),
            ns: ns.to_owned(),
            pin_dir,
        };
        let dp = me.dp.as_mut().expect("present");
        run_in(ns, || dp.attach(iface, hook).map(|_| ()))
            .unwrap_or_else(|e| panic!("attaching {hook} to {iface} in {ns}: {}", error_chain(&e)));
        me
    }

    pub fn dp(&mut self) -> &mut DataPlane {
        self.dp.as_mut().expect("data plane present until drop")
    }
}

impl Drop for AttachedDataPlane {
    fn drop(&mut self) {
        if let Some(mut dp) = self.dp.take() {
            let detached = run_in(&self.ns, || dp.detach_all());
            if let Err(e) = detached {
                eprintln!("detaching in {}: {}", self.ns, error_chain(&e));
            }
            if let Err(e) = dp.remove_pins() {
                eprintln!("removing pins: {}", error_chain(&e));
            }
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// `error: cause: cause` for an error and its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Ports of the standard test service.
pub const SERVICE_PORT: u16 = 80;
pub const BLUE_PORT: u16 = 8081;
pub const GREEN_PORT: u16 = 8082;
/// A port that belongs to no service.
pub const OTHER_PORT: u16 = 9000;

/// Which servers a test bed runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Servers {
    Tcp,
    Udp,
}

/// Namespaces, blue/green (and an unrelated) echo servers in the server namespace on both
/// address families, and a data plane attached to the server's veth end.
///
/// Fields drop in declaration order: data plane, then servers, then namespaces.
pub struct Testbed {
    pub dp: AttachedDataPlane,
    pub servers: Vec<EchoServer>,
    pub pair: NetnsPair,
}

impl Testbed {
    pub fn new(name: &str, hook: Hook, servers: Servers) -> Self {
        Self::with_load_options(name, hook, servers, |_| {})
    }

    /// As [`Self::new`], the data plane loaded with the options `adjust` changes.
    pub fn with_load_options(
        name: &str,
        hook: Hook,
        servers: Servers,
        adjust: impl FnOnce(&mut LoadOptions),
    ) -> Self {
        let pair = NetnsPair::new(name);
        let addrs = [IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)];
        let ns = pair.server.name.clone();
        let make = match servers {
            Servers::Tcp => EchoServer::tcp,
            Servers::Udp => EchoServer::udp,
        };
        let servers = vec![
            make(&ns, &addrs, BLUE_PORT, BLUE_ID),
            make(&ns, &addrs, GREEN_PORT, GREEN_ID),
            make(&ns, &addrs, OTHER_PORT, OTHER_ID),
        ];
        let dp = AttachedDataPlane::with_load_options(name, &ns, SERVER_IF, hook, adjust);
        Self { dp, servers, pair }
    }

    pub fn client_ns(&self) -> &str {
        &self.pair.client.name
    }
    /// Stops the echo server `id`: its listeners close.
    pub fn stop_server(&mut self, id: u8) {
        let i = self
            .servers
            .iter()
            .position(|s| s.id == id)
            .unwrap_or_else(|| panic!("no server {id}"));
        self.servers.remove(i).stop();
    }
    pub fn server_ns(&self) -> &str {
        &self.pair.server.name
    }
}
