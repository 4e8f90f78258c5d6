//! The fleet demo (`cargo xtask demo --fleet`): a 3-member etcd on loopback, four hosts
//! (each a `shifter daemon` with `[fleet]` in its own namespaces, with blue and green echo
//! servers and a client sending connections), and a `shifter fleet coordinate`.
//!
//! 1. A fleet rollout in two waves (h1, then h2-h4); green is broken on h3 while its wave
//!    ramps: h3 rolls back by itself, then the fleet rolls back h1, h2 and h4.
//! 2. Green back on h3, the same rollout again: it completes, every host at 100 %.
//!
//! Every second a line shows the fleet's phase and each host's weight and green share of the
//! connections of that second. Exits non-zero when the second rollout does not complete or a
//! connection fails outside h3's broken green. Needs root; `shifter` is taken from this
//! executable's directory. Everything is removed at the end (Drop guards), also on panic.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use shifter_tests::{
    daemon::{DaemonBed, Process},
    etcd::{EtcdCluster, Relay},
    netns::{
        self, BLUE_PORT, EchoServer, GREEN_ID, GREEN_PORT, SERVER_V4, SERVER_V6, SERVICE_PORT,
        unique_name,
    },
    traffic::tcp_short,
};

const HOSTS: usize = 4;

struct Host {
    node: String,
    _daemon: Process,
    _relay: Relay,
    bed: DaemonBed,
}

/// Per host: (answered by green, answered, failed) since the last look.
type Counts = Arc<Mutex<(u64, u64, u64)>>;

struct Traffic {
    stop: Arc<AtomicBool>,
    counts: Counts,
    handle: Option<JoinHandle<()>>,
}

impl Traffic {
    fn start(bed: &DaemonBed) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Counts = Arc::default();
        let (s, c) = (stop.clone(), counts.clone());
        let target = SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT);
        let handle = netns::spawn_in(bed.client_ns(), move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let r = tcp_short(target, 2, Duration::from_secs(2), Duration::from_secs(5));
                let mut c = c.lock().expect("counts");
                for o in &r.outcomes {
                    match (&o.error, o.backend) {
                        (None, Some(GREEN_ID)) => {
                            c.0 += 1;
                            c.1 += 1;
                        }
                        (None, _) => c.1 += 1,
                        (Some(_), _) => c.2 += 1,
                    }
                }
                drop(c);
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        Self {
            stop,
            counts,
            handle: Some(handle),
        }
    }

    fn take(&self) -> (u64, u64, u64) {
        std::mem::take(&mut *self.counts.lock().expect("counts"))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Coordinator(Child);

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shifter_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("a directory").to_owned();
    for name in ["shifter", "shifter-t"] {
        if dir.join(name).is_file() {
            return dir.join(name);
        }
    }
    panic!(
        "no shifter binary next to {} (cargo build --release -p shifter)",
        exe.display()
    );
}

struct Demo {
    bin: PathBuf,
    prefix: String,
    endpoints: String,
    // Drop order: traffic, coordinator, hosts, etcd.
    traffic: Vec<Traffic>,
    coordinator: Option<Coordinator>,
    hosts: Vec<Host>,
    _etcd: EtcdCluster,
}

impl Demo {
    fn fleet(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .args([
                "fleet",
                "--endpoints",
                &self.endpoints,
                "--prefix",
                &self.prefix,
            ])
            .args(args)
            .output()
            .expect("shifter fleet");
        if !out.status.success() {
            eprintln!(
                "shifter fleet {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn doc(&self) -> Value {
        serde_json::from_str::<Value>(&self.fleet(&["history", "web", "--json"]))
            .map(|v| v[0].clone())
            .unwrap_or(Value::Null)
    }

    fn weight(&self, i: usize) -> u16 {
        self.hosts[i]
            .bed
            .pinned_configs()
            .values()
            .next()
            .map_or(0, |c| c.weight)
    }

    /// One status line a second until `done(doc)` or `limit`; the failures per host.
    fn show_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Self, &Value) -> bool,
    ) -> Vec<u64> {
        let start = Instant::now();
        let mut failed = vec![0; self.hosts.len()];
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let d = self.doc();
            let mut line = format!(
                "{:>5.1}s  fleet {:<13} wave {}/{} |",
                start.elapsed().as_secs_f64(),
                d["phase"].as_str().unwrap_or("-"),
                d["wave"].as_u64().map_or(0, |w| w + 1),
                d["waves"].as_array().map_or(0, Vec::len)
            );
            for (i, h) in self.hosts.iter().enumerate() {
                let (g, n, f) = self.traffic[i].take();
                failed[i] += f;
                let share = (g * 100).checked_div(n).unwrap_or(0);
                line.push_str(&format!(
                    " {} {:>6.2}% green {share:>3}%{}",
                    h.node,
                    f64::from(self.weight(i)) / 100.0,
                    if f > 0 {
                        format!(" ({f} failed)")
                    } else {
                        String::new()
                    }
                ));
            }
            println!("{line}");
            if done(self, &d) || start.elapsed() > limit {
                return failed;
            }
        }
    }
}

fn main() -> ExitCode {
    netns::require_root();
    let bin = shifter_bin();
    println!("starting a 3-member etcd on loopback and {HOSTS} hosts ...");
    let etcd = EtcdCluster::start("demo");
    let prefix = format!("/{}/", unique_name("shifter-demo", "fleet"));
    let mut hosts = Vec::new();
    for i in 1..=HOSTS {
        let node = format!("h{i}");
        let bed = DaemonBed::new(&format!("fd{i}"));
        let relay = Relay::start(bed.server_ns(), &etcd);
        bed.write_config(&format!(
            "[[services]]\nname = \"web\"\nport = {SERVICE_PORT}\nblue_port = {BLUE_PORT}\n\
             green_port = {GREEN_PORT}\nweight = 0\n\n[services.health]\nkind = \"tcp\"\n\
             address = \"{SERVER_V4}\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 2\n\n\
             [fleet]\nendpoints = {}\nnode = \"{node}\"\nprefix = \"{prefix}\"\n\
             lease_ttl = \"3s\"\npoll_interval = \"200ms\"\n",
            etcd.endpoints_toml()
        ));
        let daemon = Process::start_bin(&bed, &bin);
        hosts.push(Host {
            node,
            _daemon: daemon,
            _relay: relay,
            bed,
        });
    }
    let coordinator = Command::new(&bin)
        .args([
            "fleet",
            "--endpoints",
            &etcd.endpoints().join(","),
            "--prefix",
            &prefix,
        ])
        .args([
            "coordinate",
            "--id",
            "demo",
            "--ttl",
            "3s",
            "--tick",
            "300ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the coordinator");
    let mut demo = Demo {
        bin,
        endpoints: etcd.endpoints().join(","),
        prefix,
        traffic: hosts.iter().map(|h| Traffic::start(&h.bed)).collect(),
        coordinator: Some(Coordinator(coordinator)),
        hosts,
        _etcd: etcd,
    };
    std::thread::sleep(Duration::from_secs(2));
    print!("{}", demo.fleet(&["nodes"]));
    let start = [
        "rollout",
        "start",
        "web",
        "--steps",
        "10,50,100",
        "--hold",
        "2s",
        "--wave",
        "hosts=h1",
        "--wave",
        "rest",
    ];

    println!("\n== 1. a fleet rollout; green breaks on h3 while wave 2 ramps");
    print!("{}", demo.fleet(&start));
    let mut broken: Option<Instant> = None;
    let mut all_zero_after = None;
    demo.show_until(Duration::from_secs(60), |d, doc| {
        if broken.is_none() && d.weight(2) > 0 {
            println!("   >>> stopping green on h3");
            d.hosts[2].bed.servers.remove(1).stop();
            broken = Some(Instant::now());
        }
        if all_zero_after.is_none()
            && let Some(b) = broken
            && (0..HOSTS).all(|i| d.weight(i) == 0)
        {
            all_zero_after = Some(b.elapsed());
        }
        doc["phase"] == "rolled-back"
    });
    print!("{}", demo.fleet(&["history", "web"]));
    if let Some(t) = all_zero_after {
        println!("   every touched host was at 0 at most {t:?} after green broke on h3");
    }

    println!("\n== 2. green back on h3; the same rollout again");
    let ns = demo.hosts[2].bed.server_ns().to_owned();
    demo.hosts[2].bed.servers.push(EchoServer::tcp(
        &ns,
        &[IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)],
        GREEN_PORT,
        GREEN_ID,
    ));
    std::thread::sleep(Duration::from_secs(1));
    for t in &demo.traffic {
        t.take();
    }
    print!("{}", demo.fleet(&start));
    let failed = demo.show_until(Duration::from_secs(90), |_, doc| {
        doc["phase"] == "completed"
    });
    print!("{}", demo.fleet(&["history", "web"]));
    let completed = demo.doc()["phase"] == "completed";
    let at_100 = (0..HOSTS).all(|i| demo.weight(i) == 10_000);
    let failures: u64 = failed.iter().sum();
    println!(
        "\nsecond rollout: {}; every host at 100 %: {at_100}; failed connections: {failures}",
        if completed {
            "completed"
        } else {
            "NOT completed"
        }
    );
    demo.coordinator = None;
    if completed && at_100 && failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
