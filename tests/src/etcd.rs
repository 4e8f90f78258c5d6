//! A real etcd cluster for the fleet tests: three `etcd` members on loopback ports of the
//! host's network namespace, each with its own data directory, killed and removed on drop.
//! Short heartbeat and election timeouts keep the tests quick on a small machine.

use std::{
    fs::File,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{daemon::TempDir, netns::unique_name};

pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

/// Three members forming one cluster. Fields drop in order: processes (`Drop`), then the dir.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    token: String,
    initial: String,
    /// Clients speak TLS to the members and must show a client certificate.
    pub tls: Option<EtcdTls>,
    pub dir: TempDir,
}

/// PEM files of a test CA, of the members' server certificate (for 127.0.0.1) and of a
/// client certificate, all signed by that CA (rcgen), in the cluster's directory.
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdTls {
    fn write(dir: &std::path::Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "shifter test etcd CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(params, ca_key);
        let issue = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(names).expect("params");
            p.extended_key_usages = usages;
            let cert = p.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = issue(
            vec!["127.0.0.1".into(), "localhost".into()],
            // etcd's JSON gateway dials its own gRPC server with this certificate, so
            // under --client-cert-auth it must be a client certificate too.
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client, client_key) = issue(
            vec!["shifter".into()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write a PEM file");
            p
        };
        Self {
            ca: file("ca.pem", &ca_cert.pem()),
            server_cert: file("server.pem", &server),
            server_key: file("server-key.pem", &server_key),
            client_cert: file("client.pem", &client),
            client_key: file("client-key.pem", &client_key),
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl EtcdCluster {
    /// Starts three members and waits until the cluster answers writes.
    pub fn start(name: &str) -> Self {
        Self::start_with(name, false)
    }

    /// The same, clients speaking TLS with a client certificate (`--client-cert-auth`).
    pub fn start_tls(name: &str) -> Self {
        Self::start_with(name, true)
    }

    fn start_with(name: &str, tls: bool) -> Self {
        let dir = TempDir::new(&format!("etcd-{name}"));
        let tls = tls.then(|| EtcdTls::write(&dir.0));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let token = unique_name("etcd", name);
        let mut members = Vec::new();
        for i in 0..3 {
            let name = format!("m{i}");
            members.push(Member {
                data_dir: dir.0.join(&name),
                log: dir.0.join(format!("{name}.log")),
                client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                name,
                child: None,
            });
        }
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Self {
            members,
            token,
            initial,
            tls,
            dir,
        };
        for i in 0..3 {
            c.start_member(i);
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    /// (Re)starts member `i` (after [`EtcdCluster::stop_member`]).
    pub fn start_member(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} runs already", m.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("etcd log");
        let mut cmd = Command::new(etcd_binary());
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd (apt-get install etcd-server): {e}"));
        m.child = Some(child);
    }

    /// SIGKILLs member `i`.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The server version the first member reports (`GET /version`, plain HTTP clusters),
    /// e.g. `3.5.16`.
    pub fn server_version(&self) -> String {
        let url = format!("{}/version", self.members[0].client_url);
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", &url])
            .output()
            .expect("curl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        v["etcdserver"].as_str().expect("etcdserver").to_owned()
    }

    /// The version `etcd --version` of the binary the members run prints.
    pub fn binary_version() -> String {
        let out = Command::new(etcd_binary())
            .arg("--version")
            .output()
            .expect("etcd --version");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("etcd Version: "))
            .expect("a version line")
            .trim()
            .to_owned()
    }

    /// The endpoints as a TOML array.
    pub fn endpoints_toml(&self) -> String {
        let list: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", list.join(", "))
    }

    /// Waits until a put through each running member succeeds.
    pub fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + crate::patient(limit);
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            loop {
                let ok = self
                    .etcdctl(&m.client_url)
                    .arg("--command-timeout=2s")
                    .args(["put", "/health-probe", "1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} did not become healthy; its log:\n{}",
                    m.name,
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// `etcdctl` for `endpoints`, with the cluster's client TLS files when it has them.
    fn etcdctl(&self, endpoints: &str) -> Command {
        let mut c = Command::new(which("etcdctl"));
        c.env("ETCDCTL_API", "3").args(["--endpoints", endpoints]);
        if let Some(t) = &self.tls {
            c.arg("--cacert")
                .arg(&t.ca)
                .arg("--cert")
                .arg(&t.client_cert)
                .arg("--key")
                .arg(&t.client_key);
        }
        c
    }

    /// Compacts the key space up to its current revision (physically): every older revision
    /// is gone, as an operator's or etcd's auto-compaction does. Returns that revision, or
    /// `None` when nothing was written since the last compaction (nothing to compact).
    pub fn compact(&self) -> Option<u64> {
        let etcdctl = |args: &[&str]| {
            self.etcdctl(&self.endpoints().join(","))
                .args(args)
                .output()
                .expect("etcdctl")
        };
        let out = etcdctl(&["get", "shifter-compact-probe", "-w", "json"]);
        assert!(
            out.status.success(),
            "etcdctl get: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("etcdctl get -w json");
        let revision = status["header"]["revision"]
            .as_u64()
            .expect("header.revision");
        let out = etcdctl(&["compact", &revision.to_string(), "--physical"]);
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && err.contains("has been compacted") {
            return None;
        }
        assert!(out.status.success(), "etcdctl compact {revision}: {err}");
        Some(revision)
    }

    /// `etcdctl get --prefix KEY` values, for assertions.
    pub fn get_prefix(&self, key: &str) -> Vec<(String, String)> {
        let out = self
            .etcdctl(&self.endpoints().join(","))
            .args(["get", "--prefix", key])
            .output()
            .expect("etcdctl get");
        assert!(
            out.status.success(),
            "etcdctl get: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_owned(), c[1].to_owned()))
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }
}

/// The etcd server to run: `SHIFTER_TEST_ETCD` (`cargo xtask test` runs the fleet tests
/// again with Debian 13's 3.5 there), else `etcd` on PATH (Debian 12's 3.4).
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("SHIFTER_TEST_ETCD").map_or_else(|| which("etcd"), PathBuf::from)
}

/// A program on PATH (or /usr/bin, /usr/sbin), or a panic naming its package.
fn which(prog: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    for d in path.split(':').chain(["/usr/bin", "/usr/sbin"]) {
        let p = PathBuf::from(d).join(prog);
        if p.is_file() {
            return p;
        }
    }
    panic!("{prog} is not installed (cargo xtask setup installs etcd-server and etcd-client)");
}

/// Makes the cluster's client ports reachable from inside a test host's network namespace:
/// for each member a listener on `127.0.0.1:<the member's port>` in that namespace, each
/// connection relayed to the member on the host's loopback. So the endpoints a daemon in
/// the namespace is given are the cluster's own. [`Relay::cut`] drops every connection and
/// refuses new ones (a host cut off from etcd) until [`Relay::restore`].
pub struct Relay {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    pub fn start(ns: &str, cluster: &EtcdCluster) -> Self {
        use std::sync::{Arc, atomic::AtomicBool};
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for url in cluster.endpoints() {
            let port: u16 = url
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
            let listener = crate::netns::run_in(ns, || TcpListener::bind(("127.0.0.1", port)))
                .unwrap_or_else(|e| panic!("relay listener in {ns} on port {port}: {e}"));
            listener.set_nonblocking(true).expect("nonblocking");
            let (stop, cut) = (stop.clone(), cut.clone());
            threads.push(std::thread::spawn(move || {
                relay_loop(&listener, port, &stop, &cut)
            }));
        }
        Self { stop, cut, threads }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

fn relay_loop(
    listener: &TcpListener,
    port: u16,
    stop: &std::sync::atomic::AtomicBool,
    cut: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((inside, _)) => {
                if cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(outside) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                let _ = inside.set_nonblocking(false);
                for (mut from, mut to) in [
                    (
                        inside.try_clone().expect("clone"),
                        outside.try_clone().expect("clone"),
                    ),
                    (outside, inside),
                ] {
                    let cut = cut.clone();
                    std::thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            if cut.load(Ordering::SeqCst) {
                                break;
                            }
                            match std::io::Read::read(&mut from, &mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
