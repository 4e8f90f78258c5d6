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
    pub dir: TempDir,
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
        let dir = TempDir::new(&format!("etcd-{name}"));
        let token = unique_name("etcd", name);
        let mut members = Vec::new();
        for i in 0..3 {
            let name = format!("m{i}");
            members.push(Member {
                data_dir: dir.0.join(&name),
                log: dir.0.join(format!("{name}.log")),
                client_url: format!("http://127.0.0.1:{}", free_port()),
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
        let child = Command::new(which("etcd"))
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
                let ok = Command::new(which("etcdctl"))
                    .env("ETCDCTL_API", "3")
                    .args(["--endpoints", &m.client_url, "--command-timeout=2s"])
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

    /// `etcdctl get --prefix KEY` values, for assertions.
    pub fn get_prefix(&self, key: &str) -> Vec<(String, String)> {
        let out = Command::new(which("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints().join(",")])
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
