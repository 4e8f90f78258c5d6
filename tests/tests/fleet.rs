//! Fleet rollouts end to end: a real 3-member etcd on loopback, real daemons (`shifter-t
//! daemon`, each in its own network namespaces with blue and green echo servers and a
//! client namespace sending traffic) that reach etcd through a relay in their namespace,
//! and real coordinators (`shifter-t fleet coordinate`).
//!
//! - 6 hosts in 3 waves: the rollout completes, every host at 100 %, 0 failed connections;
//! - green broken on a host of wave 2: it rolls back by itself, then waves 1 and 2 roll
//!   back, wave 3 is never touched; the time from the failure to the last host at 0 is
//!   printed;
//! - coordinators SIGSTOPped and SIGKILLed mid-rollout: a standby takes over within the
//!   lease TTL, the woken old leader is fenced, no host is skipped or ramped twice;
//! - a host cut off from etcd holds its weight (the fleet pauses: host lost) and converges
//!   when it is back;
//! - a host's daemon killed during its wave with `--on-lost abort`: the fleet rolls back,
//!   the host's data plane keeps forwarding, and its restarted daemon converges to 0;
//! - etcd quorum lost: nothing advances, nothing reverts; quorum back: the rollout completes;
//! - a daemon restarted (SIGTERM, start) mid-ramp within the TTL is not lost, even with
//!   `--on-lost abort`, and applies its ramp once.
//!
//! Timings are scaled for a small machine: lease TTLs of 2 s, polls of 100 ms, ticks of
//! 200 ms, holds of 1 s. The tests take one lock: one fleet at a time.
//!
//! Over 700 lines: the fleet scenarios of one area, sharing the etcd cluster, host and traffic
//! fixtures at its top.

use std::{
    fs::File,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use shifter_tests::{
    daemon::{DaemonBed, Process, shifter_bin},
    etcd::{EtcdCluster, Relay},
    netns::{self, BLUE_PORT, GREEN_ID, GREEN_PORT, SERVER_V4, SERVICE_PORT, unique_name},
    traffic::{Report, tcp_short},
};

static ONE_FLEET_AT_A_TIME: Mutex<()> = Mutex::new(());

const TTL: &str = "2s";
const TICK: &str = "200ms";

/// One host: its namespaces and servers, its relay to etcd, its daemon.
struct Host {
    node: String,
    // Drop order: the daemon, then the relay, then the bed (detach, namespaces, files).
    daemon: Process,
    _relay: Relay,
    bed: DaemonBed,
}

impl Host {
    fn weight_bp(&self) -> u16 {
        let cfgs = self.bed.pinned_configs();
        assert_eq!(
            cfgs.len(),
            1,
            "{}: one service expected: {cfgs:?}",
            self.node
        );
        cfgs.values().next().expect("one").weight
    }

    /// The daemon's `status --json`.
    fn status(&self) -> Value {
        serde_json::from_str(&self.bed.cli_ok(&["status", "--json"])).expect("status json")
    }
}

struct Coordinator {
    id: String,
    child: Child,
    log: PathBuf,
}

impl Coordinator {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill {sig} {}", self.id);
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fleet of one test. Fleets run one at a time (the machine has 2 cores): `new` waits for
/// the previous one to be dropped.
struct Fleet {
    prefix: String,
    // Drop order: coordinators, hosts, etcd, then the turn of the next fleet.
    coordinators: Vec<Coordinator>,
    hosts: Vec<Host>,
    etcd: EtcdCluster,
    _turn: std::sync::MutexGuard<'static, ()>,
}

fn web_with_health() -> String {
    format!(
        "[[services]]\nname = \"web\"\nport = {SERVICE_PORT}\nblue_port = {BLUE_PORT}\n\
         green_port = {GREEN_PORT}\nweight = 0\n\n[services.health]\nkind = \"tcp\"\n\
         address = \"{SERVER_V4}\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 3\n"
    )
}

impl Fleet {
    fn new(name: &str, hosts: usize) -> Self {
        netns::require_root();
        let turn = ONE_FLEET_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let etcd = EtcdCluster::start(name);
        let prefix = format!("/{}/", unique_name("shifter-t", name));
        let mut list = Vec::new();
        for i in 1..=hosts {
            let node = format!("h{i}");
            let bed = DaemonBed::new(&format!("{name}{i}"));
            let relay = Relay::start(bed.server_ns(), &etcd);
            bed.write_config(&format!(
                "{}\n[fleet]\nendpoints = {}\nnode = \"{node}\"\nlabels = {{ zone = \"z{}\" }}\n\
                 prefix = \"{prefix}\"\nlease_ttl = \"{TTL}\"\npoll_interval = \"100ms\"\n\
                 request_timeout = \"1s\"\n",
                web_with_health(),
                etcd.endpoints_toml(),
                i.div_ceil(2)
            ));
            let daemon = Process::start(&bed);
            list.push(Host {
                node,
                daemon,
                _relay: relay,
                bed,
            });
        }
        let f = Self {
            prefix,
            coordinators: Vec::new(),
            hosts: list,
            etcd,
            _turn: turn,
        };
        f.wait("every host registered", Duration::from_secs(20), || {
            let n = f.cli_json(&["nodes", "--json"]);
            (n.as_object().map_or(0, |o| o.len()) == hosts).then_some(())
        });
        f
    }

    fn coordinate(&mut self, id: &str) {
        self.coordinate_with(id, &[]);
    }

    fn coordinate_with(&mut self, id: &str, extra: &[&str]) {
        let log = self.hosts[0]
            .bed
            .dir
            .0
            .join(format!("coordinator-{id}.log"));
        let child = Command::new(shifter_bin())
            .args(["fleet", "--endpoints", &self.etcd.endpoints().join(",")])
            .args(["--prefix", &self.prefix])
            .args(["coordinate", "--id", id, "--ttl", TTL, "--tick", TICK])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("coordinator log"))
            .spawn()
            .expect("spawn the coordinator");
        self.coordinators.push(Coordinator {
            id: id.to_owned(),
            child,
            log,
        });
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(shifter_bin())
            .args(["fleet", "--endpoints", &self.etcd.endpoints().join(",")])
            .args(["--prefix", &self.prefix])
            .args(args)
            .output()
            .expect("run shifter fleet")
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "shifter fleet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `shifter fleet rollout start web --steps STEPS --hold HOLD --wave W... EXTRA...`.
    fn start_rollout(&self, steps: &str, hold: &str, waves: &[&str], extra: &[&str]) -> String {
        let mut all = vec!["rollout", "start", "web", "--steps", steps, "--hold", hold];
        for w in waves {
            all.extend(["--wave", w]);
        }
        all.extend_from_slice(extra);
        self.cli_ok(&all)
    }

    /// Waits until `node` has green above 0.
    fn wait_ramping(&self, node: &str, limit: Duration) {
        self.wait(&format!("{node} ramping"), limit, || {
            (self.host(node).weight_bp() > 0).then_some(())
        });
    }

    /// Every host at 100 %, each having applied its ramp exactly once (none skipped, none
    /// ramped twice).
    fn assert_every_host_ramped_once_to_100(&self) {
        for h in &self.hosts {
            assert_eq!(h.weight_bp(), 10_000, "{} is not at 100 %", h.node);
            assert_eq!(
                self.ramps_applied(&h.node),
                1,
                "{} did not ramp exactly once",
                h.node
            );
        }
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.cli_ok(args)).expect("--json prints JSON")
    }

    /// The newest rollout document.
    fn doc(&self) -> Value {
        self.cli_json(&["history", "web", "--json"])[0].clone()
    }

    fn leader(&self) -> Option<String> {
        self.cli_json(&["status", "--json"])["leader"]
            .as_str()
            .map(str::to_owned)
    }

    /// The id in the leader's last fenced beat.
    fn beat(&self) -> Option<String> {
        self.etcd
            .get_prefix(&format!("{}coordinator", self.prefix))
            .first()
            .and_then(|(_, v)| serde_json::from_str::<Value>(v).ok())
            .and_then(|v| v["id"].as_str().map(str::to_owned))
    }

    fn wait<T>(&self, what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let limit = shifter_tests::patient(limit);
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if start.elapsed() > limit {
                let logs: Vec<String> = self
                    .coordinators
                    .iter()
                    .map(|c| format!("--- coordinator {}:\n{}", c.id, c.log_text()))
                    .chain(
                        self.hosts
                            .iter()
                            .map(|h| format!("--- daemon {}:\n{}", h.node, h.daemon.log_text())),
                    )
                    .collect();
                let doc = self.cli(&["history", "web"]);
                panic!(
                    "timed out after {limit:?} waiting for {what}; history:\n{}\n{}",
                    String::from_utf8_lossy(&doc.stdout),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_phase(&self, phase: &str, limit: Duration) -> Value {
        self.wait(&format!("the rollout to be {phase}"), limit, || {
            let d = self.doc();
            (d["phase"] == phase).then_some(d)
        })
    }

    fn host(&self, node: &str) -> &Host {
        self.hosts.iter().find(|h| h.node == node).expect("host")
    }

    /// How often a host's daemon was told to ramp (its log says `fleet: web: ramp [steps]`
    /// once per ramp it applies).
    fn ramps_applied(&self, node: &str) -> usize {
        self.host(node)
            .daemon
            .log_text()
            .matches("fleet: web: ramp [")
            .count()
    }
}

/// Connections to the service from a host's client namespace, paced, until stopped
/// (bounded: at most 3 minutes).
struct Traffic {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Report>>,
}

impl Traffic {
    fn start(bed: &DaemonBed) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let target = SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT);
        let handle = netns::spawn_in(bed.client_ns(), move || {
            let mut all = Report::default();
            let deadline = Instant::now() + Duration::from_secs(180);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let r = tcp_short(target, 2, Duration::from_secs(3), Duration::from_secs(10));
                all.outcomes.extend(r.outcomes);
                std::thread::sleep(Duration::from_millis(40));
            }
            all
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().expect("once").join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
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

/// Seconds after the rollout's creation of the first history entry containing `text`.
fn at(doc: &Value, text: &str) -> u64 {
    let created = doc["created_ms"].as_u64().expect("created_ms");
    doc["history"]
        .as_array()
        .expect("history")
        .iter()
        .find(|e| e[1].as_str().is_some_and(|t| t == text))
        .map(|e| e[0].as_u64().expect("time") - created)
        .unwrap_or_else(|| panic!("no {text:?} in the history: {:#}", doc["history"]))
}

#[test]
fn six_hosts_in_three_waves_complete_without_a_failed_connection() {
    let mut f = Fleet::new("flw", 6);
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    f.coordinate_with("c1", &["--metrics-address", &metrics]);
    let traffic: Vec<Traffic> = f.hosts.iter().map(|h| Traffic::start(&h.bed)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    f.start_rollout("50,100", "1s", &["count=2", "label:zone=z2", "rest"], &[]);
    let doc = f.wait_phase("completed", Duration::from_secs(60));
    eprintln!(
        "6 hosts, 3 waves, 2 steps of 1 s: completed in {:?}",
        started.elapsed()
    );
    assert_eq!(
        doc["waves"],
        serde_json::json!([["h1", "h2"], ["h3", "h4"], ["h5", "h6"]])
    );
    // Wave by wave: no host of a wave was asked before the previous wave was done.
    assert!(at(&doc, "wave 1 done") <= at(&doc, "h3: ramp (wave 2)"));
    assert!(at(&doc, "h4: completed") <= at(&doc, "h5: ramp (wave 3)"));
    f.assert_every_host_ramped_once_to_100();
    std::thread::sleep(Duration::from_millis(300));
    for (h, t) in f.hosts.iter().zip(traffic) {
        let r = t.finish();
        assert!(
            r.failures().is_empty(),
            "{}: {}",
            h.node,
            r.failure_summary()
        );
        assert!(
            r.count(GREEN_ID) > 0,
            "{}: no connection reached green",
            h.node
        );
        eprintln!("{}: {} connections, 0 failed", h.node, r.outcomes.len());
    }
    // Each host's own event log says which fleet rollout moved its weight, to 100 % too.
    let id = doc["id"].as_str().expect("id");
    for h in &f.hosts {
        let log: Value =
            serde_json::from_str(&h.bed.cli_ok(&["events", "--json"])).expect("events");
        let ours: Vec<&Value> = log["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["fleet_rollout"] == id)
            .collect();
        assert!(
            ours.iter().any(|e| e["new_weight_bp"] == 10_000),
            "{}: no event of fleet rollout {id} reaching 100 %: {log}",
            h.node
        );
        let text = h.bed.cli_ok(&["events"]);
        assert!(text.contains(&format!("[fleet rollout {id}]")), "{text}");
    }
    // Each host's status and `shifter watch` show the fleet rollout as its agent read it.
    for h in &f.hosts {
        let seen = f.wait(
            "the agent's view of the completed rollout",
            Duration::from_secs(5),
            || {
                let st = h.status();
                (st["services"][0]["fleet"]["phase"] == "completed").then_some(st)
            },
        );
        assert_eq!(seen["fleet"]["node"], h.node.as_str(), "{seen:#}");
        assert_eq!(seen["fleet"]["etcd_reachable"], true, "{seen:#}");
        let web = &seen["services"][0]["fleet"];
        assert_eq!(web["rollout"], id, "{web:#}");
        assert_eq!(
            (&web["wave"], &web["waves"]),
            (&Value::from(3), &Value::from(3))
        );
        assert_eq!(
            (&web["hosts_done"], &web["hosts"]),
            (&Value::from(6), &Value::from(6))
        );
        assert_eq!(web["reported"], "completed", "{web:#}");
    }
    let screen =
        f.host("h3")
            .bed
            .cli_ok(&["watch", "--once", "--interval", "200ms", "--width", "120"]);
    for want in [
        "fleet: node h3, etcd reachable".to_owned(),
        format!("fleet {id} completed, wave 3/3, 6/6 hosts done; here: wave 2, ramp completed"),
    ] {
        assert!(screen.contains(&want), "no {want:?} in:\n{screen}");
    }
    // Nothing is left active; a new rollout of the service may start.
    assert_eq!(
        f.cli_json(&["status", "--json"])["rollouts"],
        serde_json::json!([])
    );
    // The coordinator's metrics say the same, in a format promtool accepts.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://{metrics}/metrics"),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "shifter_fleet_nodes 6".to_owned(),
        "shifter_fleet_leader{coordinator=\"c1\"} 1".to_owned(),
        format!(
            "shifter_fleet_rollout_phase{{service=\"web\",rollout=\"{id}\",phase=\"completed\"}} 1"
        ),
        format!("shifter_fleet_rollout_hosts{{service=\"web\",rollout=\"{id}\",phase=\"done\"}} 6"),
        "shifter_fleet_host_weight_basis_points{service=\"web\",node=\"h6\"} 10000".to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "no {want:?} in /metrics:\n{text}"
        );
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs prometheus)");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write to promtool");
    let res = check.wait_with_output().expect("promtool");
    assert!(
        res.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    f.coordinators.clear();
}

#[test]
fn green_broken_on_a_wave_two_host_rolls_back_waves_one_and_two_only() {
    let mut f = Fleet::new("flb", 6);
    f.coordinate("c1");
    f.start_rollout("50,100", "2s", &["hosts=h1,h2", "hosts=h3,h4", "rest"], &[]);
    // h3 of wave 2 ramps: break its green there.
    f.wait_ramping("h3", Duration::from_secs(40));
    let h3 = f.hosts.iter_mut().find(|h| h.node == "h3").expect("h3");
    h3.bed.servers.remove(1).stop();
    let broken = Instant::now();
    // h3 rolls back by itself, through its own gates.
    let own = f.wait("h3 at 0 by itself", Duration::from_secs(10), || {
        (f.host("h3").weight_bp() == 0).then(|| broken.elapsed())
    });
    let mut last = own;
    for node in ["h1", "h2", "h4"] {
        f.wait(&format!("{node} at 0"), Duration::from_secs(20), || {
            (f.host(node).weight_bp() == 0).then_some(())
        });
        last = last.max(broken.elapsed());
    }
    eprintln!(
        "green broken on h3: h3 at 0 after {own:?} (its own gates), the last of waves 1-2 at 0 after {last:?}"
    );
    let doc = f.wait_phase("rolled-back", Duration::from_secs(20));
    assert!(
        doc["reason"].as_str().is_some_and(|r| r.contains("h3")),
        "{doc:#}"
    );
    assert_eq!(doc["hosts"]["h5"], "pending");
    assert_eq!(doc["hosts"]["h6"], "pending");
    for node in ["h5", "h6"] {
        assert_eq!(f.host(node).weight_bp(), 0, "{node} of wave 3 was touched");
        assert_eq!(
            f.ramps_applied(node),
            0,
            "{node} of wave 3 was told to ramp"
        );
        assert!(
            f.etcd
                .get_prefix(&format!("{}desired/{node}/", f.prefix))
                .is_empty(),
            "{node} of wave 3 has a desired state"
        );
    }
    // Each rolled-back host's event log names the fleet rollout in its way back to 0: h3's
    // own health rollback and h1's rollback by the fleet alike.
    let id = doc["id"].as_str().expect("id");
    for node in ["h1", "h3"] {
        let log: Value =
            serde_json::from_str(&f.host(node).bed.cli_ok(&["events", "--json"])).expect("events");
        assert!(
            log["events"].as_array().expect("events").iter().any(|e| {
                e["fleet_rollout"] == id && e["new_weight_bp"] == 0 && e["old_weight_bp"] != 0
            }),
            "{node}: no event of fleet rollout {id} back to 0: {log}"
        );
    }
    // The rollback was the fleet's, the failure h3's own: h3's log says it rolled back
    // before the fleet's rollback reached it.
    assert!(
        f.host("h3")
            .daemon
            .log_text()
            .contains("reported RolledBack"),
        "{}",
        f.host("h3").daemon.log_text()
    );
}

#[test]
fn coordinators_stopped_and_killed_mid_rollout_take_over_and_are_fenced() {
    let mut f = Fleet::new("flc", 6);
    f.coordinate("c1");
    f.wait("c1 leading", Duration::from_secs(10), || {
        (f.beat().as_deref() == Some("c1")).then_some(())
    });
    assert_eq!(f.leader().as_deref(), Some("c1"));
    f.coordinate("c2");
    f.start_rollout("50,100", "1s", &["count=2", "count=2", "rest"], &[]);
    f.wait_ramping("h1", Duration::from_secs(20));
    // SIGSTOP the leader mid-wave: c2 takes over within the TTL.
    f.coordinators[0].signal(libc::SIGSTOP);
    let stopped = Instant::now();
    f.wait("c2 leading", Duration::from_secs(10), || {
        (f.beat().as_deref() == Some("c2")).then_some(())
    });
    let takeover_stop = stopped.elapsed();
    // The rollout document still names c1 until c2 first changes it (the next step, after a
    // 1 s hold): wait for that, so that "c1" there afterwards can only be a fenced-out write.
    f.wait("c2 writing the rollout", Duration::from_secs(20), || {
        (f.doc()["writer"] == "c2").then_some(())
    });
    // c1 wakes: its first write is refused, and it never writes again while c2 leads.
    f.coordinators[0].signal(libc::SIGCONT);
    f.wait("c1 fenced", Duration::from_secs(10), || {
        f.coordinators[0]
            .log_text()
            .contains("fenced")
            .then_some(())
    });
    for _ in 0..10 {
        assert_eq!(f.beat().as_deref(), Some("c2"), "the old leader wrote");
        assert_ne!(f.doc()["writer"], "c1", "the old leader wrote the rollout");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGKILL the new leader mid-wave 2: c1 (standing by again) takes over.
    f.wait("wave 2 ramping", Duration::from_secs(30), || {
        (f.doc()["wave"] == 1).then_some(())
    });
    f.coordinators[1].signal(libc::SIGKILL);
    let killed = Instant::now();
    f.wait("c1 leading again", Duration::from_secs(10), || {
        (f.beat().as_deref() == Some("c1")).then_some(())
    });
    let takeover_kill = killed.elapsed();
    eprintln!(
        "takeover with a {TTL} lease: after SIGSTOP {takeover_stop:?}, after SIGKILL {takeover_kill:?}"
    );
    let ttl = Duration::from_secs(2);
    // Within the TTL plus etcd's lease-expiry check (500 ms), one tick and the time this
    // test takes to see the new beat.
    let bound = shifter_tests::patient(ttl + Duration::from_millis(1500));
    assert!(
        takeover_stop <= bound,
        "takeover after SIGSTOP took {takeover_stop:?}"
    );
    assert!(
        takeover_kill <= bound,
        "takeover after SIGKILL took {takeover_kill:?}"
    );
    f.wait_phase("completed", Duration::from_secs(60));
    f.assert_every_host_ramped_once_to_100();
}

/// Samples every host's weight for `span`: the set of weights each host showed.
fn weights_during(f: &Fleet, span: Duration) -> Vec<std::collections::BTreeSet<u16>> {
    let mut seen = vec![std::collections::BTreeSet::new(); f.hosts.len()];
    let end = Instant::now() + span;
    while Instant::now() < end {
        for (i, h) in f.hosts.iter().enumerate() {
            seen[i].insert(h.weight_bp());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

#[test]
fn host_cut_off_from_etcd_holds_its_weight_and_converges() {
    let mut f = Fleet::new("flp", 3);
    f.coordinate("c1");
    let traffic = Traffic::start(&f.host("h2").bed);
    f.start_rollout("25,50,100", "2s", &["rest"], &[]);
    f.wait_ramping("h2", Duration::from_secs(20));
    f.host("h2")._relay.cut();
    // After a TTL the agent pauses its ramp; the fleet counts h2 as lost and pauses.
    f.wait("h2 holding still", Duration::from_secs(10), || {
        f.host("h2")
            .daemon
            .log_text()
            .contains("(fail static)")
            .then_some(())
    });
    let held = f.host("h2").weight_bp();
    // Its status says why: etcd unreachable since the cut, the ramp held.
    let st = f.wait(
        "h2's status saying it holds",
        Duration::from_secs(5),
        || {
            let st = f.host("h2").status();
            (st["services"][0]["fleet"]["held"] == true).then_some(st)
        },
    );
    assert_eq!(st["fleet"]["etcd_reachable"], false, "{st:#}");
    assert!(
        st["fleet"]["unreachable_since_ms"].as_u64().is_some(),
        "{st:#}"
    );
    assert!(st["fleet"]["last_error"].is_string(), "{st:#}");
    // And its metrics, for an alert.
    let (code, metrics) = f.host("h2").bed.curl("GET", "/metrics", None, None);
    assert_eq!(code, 200, "{metrics}");
    for want in [
        "shifter_fleet_etcd_reachable 0",
        "shifter_fleet_ramp_held{service=\"web\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == want),
            "no {want:?} in /metrics:\n{metrics}"
        );
    }
    let doc = f.wait_phase("paused", Duration::from_secs(10));
    assert_eq!(doc["reason"], "host(s) lost: h2", "{doc:#}");
    let seen = weights_during(&f, Duration::from_secs(3));
    assert_eq!(
        seen[1],
        std::collections::BTreeSet::from([held]),
        "h2 did not hold its weight while cut off"
    );
    assert!(held > 0 && held < 10_000, "h2 held {held} bp");
    // Back: h2 registers again, resumes where it was, the fleet completes.
    f.host("h2")._relay.restore();
    f.wait_phase("completed", Duration::from_secs(40));
    let st = f.wait(
        "h2's agent reaching etcd again",
        Duration::from_secs(5),
        || {
            let st = f.host("h2").status();
            (st["fleet"]["etcd_reachable"] == true).then_some(st)
        },
    );
    assert_eq!(st["services"][0]["fleet"]["held"], false, "{st:#}");
    f.assert_every_host_ramped_once_to_100();
    let r = traffic.finish();
    assert!(r.failures().is_empty(), "h2: {}", r.failure_summary());
}

#[test]
fn host_daemon_down_during_its_wave_aborts_and_its_data_plane_keeps_forwarding() {
    let mut f = Fleet::new("fld", 3);
    f.coordinate("c1");
    f.start_rollout("50,100", "3s", &["rest"], &["--on-lost", "abort"]);
    f.wait_ramping("h2", Duration::from_secs(20));
    let traffic = Traffic::start(&f.host("h2").bed);
    let h2 = f.hosts.iter_mut().find(|h| h.node == "h2").expect("h2");
    h2.daemon.signal(libc::SIGKILL);
    h2.daemon.wait_exit(Duration::from_secs(5));
    let held = f.host("h2").weight_bp();
    let doc = f.wait_phase("rolled-back", Duration::from_secs(20));
    let reason = doc["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("host(s) lost: h2")
            && reason.contains("not confirmed by lost host(s) h2"),
        "{reason}"
    );
    assert_eq!(f.host("h1").weight_bp(), 0);
    assert_eq!(f.host("h3").weight_bp(), 0);
    // h2's data plane kept steering by the weight it had, without its daemon.
    assert_eq!(f.host("h2").weight_bp(), held);
    std::thread::sleep(Duration::from_millis(500));
    let r = traffic.finish();
    assert!(
        r.failures().is_empty(),
        "h2 without its daemon: {}",
        r.failure_summary()
    );
    assert!(r.count(GREEN_ID) > 0, "h2 lost its green share");
    // Its daemon back: the agent finds the rollback in its desired state and converges.
    let h2 = f.hosts.iter_mut().find(|h| h.node == "h2").expect("h2");
    h2.daemon = Process::start(&h2.bed);
    f.wait(
        "h2 rolled back after its restart",
        Duration::from_secs(20),
        || (f.host("h2").weight_bp() == 0).then_some(()),
    );
}

#[test]
fn quorum_lost_nothing_advances_nothing_reverts_then_it_continues() {
    let mut f = Fleet::new("flq", 3);
    f.coordinate("c1");
    f.start_rollout("25,50,100", "2s", &["count=1", "rest"], &[]);
    f.wait_ramping("h1", Duration::from_secs(20));
    f.etcd.stop_member(1);
    f.etcd.stop_member(2);
    // Once a TTL has passed without etcd, h1 holds; h2 and h3 (wave 2) never start.
    std::thread::sleep(Duration::from_secs(3));
    let seen = weights_during(&f, Duration::from_secs(3));
    assert_eq!(seen[0].len(), 1, "h1 moved without quorum: {:?}", seen[0]);
    assert!(!seen[0].contains(&0), "h1 reverted without quorum");
    assert!(
        !seen[0].contains(&10_000),
        "h1 finished its ramp: it did not hold mid-ramp without etcd"
    );
    assert_eq!(
        seen[1],
        std::collections::BTreeSet::from([0]),
        "h2 started without quorum"
    );
    assert_eq!(
        seen[2],
        std::collections::BTreeSet::from([0]),
        "h3 started without quorum"
    );
    f.etcd.start_member(1);
    f.etcd.start_member(2);
    f.etcd.wait_healthy(Duration::from_secs(30));
    f.wait_phase("completed", Duration::from_secs(60));
    f.assert_every_host_ramped_once_to_100();
}

/// etcd compacted again and again while the agents and the coordinator work (as
/// auto-compaction does): they read the current state at each poll, so nothing they need is
/// gone; the rollout completes, each host ramped once.
#[test]
fn compaction_mid_rollout_loses_nothing() {
    let mut f = Fleet::new("flk", 3);
    f.coordinate("c1");
    f.start_rollout("25,50,100", "1s", &["count=1", "rest"], &[]);
    f.wait_ramping("h1", Duration::from_secs(20));
    let mut revisions = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    let doc = loop {
        revisions.extend(f.etcd.compact());
        let doc = f.doc();
        if doc["phase"] == "completed" {
            break doc;
        }
        assert!(Instant::now() < until, "not completed: {:#}", f.doc());
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!(
        "compacted {} times (revisions {:?} .. {:?}) during the rollout",
        revisions.len(),
        revisions.first(),
        revisions.last()
    );
    assert!(
        revisions.len() >= 3,
        "the rollout ended before compactions: {doc:#}"
    );
    f.assert_every_host_ramped_once_to_100();
}

#[test]
fn daemon_restarted_within_the_ttl_mid_ramp_is_not_lost_and_ramps_once() {
    let mut f = Fleet::new("flr", 2);
    f.coordinate("c1");
    f.start_rollout("25,50,100", "2s", &["rest"], &["--on-lost", "abort"]);
    f.wait_ramping("h2", Duration::from_secs(20));
    // An upgrade: SIGTERM, then the daemon again; the engine resumes its saved progress.
    let h2 = f.hosts.iter_mut().find(|h| h.node == "h2").expect("h2");
    let stopped = Instant::now();
    h2.daemon.signal(libc::SIGTERM);
    assert_eq!(h2.daemon.wait_exit(Duration::from_secs(10)), Some(0));
    let old_log = h2.daemon.log_text();
    h2.daemon = Process::start(&h2.bed);
    eprintln!("h2's daemon was down for {:?}", stopped.elapsed());
    f.wait_phase("completed", Duration::from_secs(40));
    let h2 = f.host("h2");
    assert_eq!(h2.weight_bp(), 10_000);
    assert_eq!(
        old_log.matches("fleet: web: ramp [").count()
            + h2.daemon.log_text().matches("fleet: web: ramp [").count(),
        1,
        "h2 was told to ramp again after its restart"
    );
    assert!(
        h2.daemon
            .log_text()
            .contains("was applied before this start"),
        "{}",
        h2.daemon.log_text()
    );
}
