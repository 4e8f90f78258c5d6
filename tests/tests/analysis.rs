//! Prometheus query gates against a real Prometheus (Debian's `prometheus`, started here on
//! loopback inside the server namespace with a 500 ms scrape interval) that scrapes a test
//! backend exporting a request/error counter and, when told, a readiness gauge.
//!
//! - a canary whose green starts returning errors is rolled back by the query gate within
//!   failure_limit x interval + one scrape (+ the queries' own time), while green's health
//!   check passes all the while;
//! - a gate with no data pauses the rollout, which resumes when the data arrives.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use shifter_tests::{
    daemon::{DaemonBed, InProcess},
    netns::{self, BLUE_PORT, GREEN_PORT, SERVER_V4, SERVICE_PORT},
    patient,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROM_PORT: u16 = 9090;
const APP_PORT: u16 = 9100;
const SCRAPE: Duration = Duration::from_millis(500);

/// The test backend's metrics: an error counter that grows 10 per 100 ms while `errors` is
/// set, and `app_ready` exported only while `ready` is set.
struct AppMetrics {
    errors: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl AppMetrics {
    fn start(ns: &str) -> Self {
        let listener = netns::run_in(ns, || {
            TcpListener::bind((Ipv4Addr::LOCALHOST, APP_PORT)).expect("bind the app's metrics")
        });
        listener.set_nonblocking(true).expect("nonblocking");
        let errors = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (e, s, c) = (errors.clone(), stop.clone(), count.clone());
        let ticker = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if e.load(Ordering::Relaxed) {
                    c.fetch_add(10, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let (r, s) = (ready.clone(), stop.clone());
        let server = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf);
                        let mut body = format!(
                            "# TYPE app_errors_total counter\n\
                             app_errors_total{{service=\"web\",backend=\"green\"}} {}\n\
                             # TYPE app_requests_total counter\n\
                             app_requests_total{{service=\"web\",backend=\"green\"}} 1000\n",
                            count.load(Ordering::Relaxed)
                        );
                        if r.load(Ordering::Relaxed) {
                            body.push_str("app_ready{service=\"web\",backend=\"green\"} 1\n");
                        }
                        let _ = write!(
                            conn,
                            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            errors,
            ready,
            stop,
            threads: vec![ticker, server],
        }
    }
}

impl Drop for AppMetrics {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Prometheus in `ns`, scraping the app every 500 ms; killed on drop.
struct Prometheus {
    child: Child,
}

impl Prometheus {
    fn start(ns: &str, dir: &Path) -> Self {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: apt-get install prometheus (cargo xtask setup does)"
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n\
                 scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['127.0.0.1:{APP_PORT}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, PROMETHEUS])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROM_PORT}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let me = Self { child };
        let limit = patient(Duration::from_secs(30));
        let start = Instant::now();
        while !netns::run_in(ns, ready) {
            assert!(
                start.elapsed() < limit,
                "prometheus not ready after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }
}

fn ready() -> bool {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PROM_PORT);
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn web(analysis: &str, hold: &str) -> String {
    format!(
        "[[services]]\nname = \"web\"\nport = {SERVICE_PORT}\nblue_port = {BLUE_PORT}\n\
         green_port = {GREEN_PORT}\nweight = 0\n\n[services.health]\nkind = \"tcp\"\n\
         address = \"{SERVER_V4}\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 3\n\n\
         [services.rollout]\nsteps = [50, 100]\nhold = \"{hold}\"\n\n\
         [[services.rollout.analysis]]\nprometheus = \"http://127.0.0.1:{PROM_PORT}\"\n{analysis}"
    )
}

fn service(bed: &DaemonBed) -> Value {
    bed.status()["services"][0].clone()
}

fn analysis_of(s: &Value) -> Value {
    s["rollout"]["analysis"][0].clone()
}

fn wait_for(what: &str, limit: Duration, every: Duration, mut f: impl FnMut() -> bool) {
    let limit = patient(limit);
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(every);
    }
}

#[test]
fn errors_on_green_roll_back_by_the_query_gate_while_its_health_passes() {
    let bed = DaemonBed::new("prom-fail");
    let app = AppMetrics::start(bed.server_ns());
    let _prom = Prometheus::start(bed.server_ns(), &bed.dir.0);
    let interval = Duration::from_secs(2);
    let failure_limit = 2u32;
    bed.write_config(&web(
        &format!(
            "name = \"errors\"\n\
             query = 'sum(rate(app_errors_total{{service=\"{{{{service}}}}\",backend=\"{{{{backend}}}}\"}}[{{{{interval}}}}]))'\n\
             max = 0.5\ninterval = \"2s\"\ntimeout = \"1s\"\nfailure_limit = {failure_limit}\ninconclusive_limit = 100\n"
        ),
        "1h",
    ));
    let daemon = InProcess::start(&bed);
    wait_for(
        "green up",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || service(&bed)["health"]["green"]["status"] == "up",
    );
    // No rollout, nothing to gate: Prometheus is not asked.
    std::thread::sleep(interval + Duration::from_millis(500));
    let measured = |bed: &DaemonBed| {
        analysis_of(&service(bed))["measurements"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(measured(&bed), 0, "queried without a rollout");
    bed.cli_ok(&["rollout", "start", "web"]);
    assert_eq!(service(&bed)["weight_bp"], 5000);
    wait_for(
        "a first successful query, at the rollout's start",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || analysis_of(&service(&bed))["last"] == "success",
    );

    app.errors.store(true, Ordering::Relaxed);
    let errors_from = Instant::now();
    let mut green_always_up = true;
    wait_for(
        "the query gate to roll back",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let s = service(&bed);
            green_always_up &= s["health"]["green"]["status"] == "up";
            s["weight_bp"] == 0
        },
    );
    let took = errors_from.elapsed();
    let bound = interval * failure_limit + SCRAPE + Duration::from_millis(500);
    eprintln!(
        "green's errors: rolled back {took:?} after they began (bound {bound:?}: {failure_limit} x {interval:?} + one {SCRAPE:?} scrape + 500 ms for the queries)"
    );
    assert!(green_always_up, "green's health check passed all the while");
    assert!(
        took <= patient(bound),
        "rolled back after {took:?}, bound {bound:?}"
    );

    let s = service(&bed);
    assert_eq!(s["rollout"]["state"], "rolled back", "{s:#}");
    // Rolled back to 0: the queries stop (the last result stays in status).
    let after = measured(&bed);
    std::thread::sleep(interval * 2);
    assert_eq!(measured(&bed), after, "still queried after the rollback");
    let a = analysis_of(&s);
    assert_eq!(a["last"], "failure", "{a:#}");
    assert!(
        a["failures"].as_u64() >= Some(u64::from(failure_limit)),
        "{a:#}"
    );
    let events: Value = serde_json::from_str(&bed.cli_ok(&["events", "--json"])).expect("events");
    let rollback = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .rev()
        .find(|e| e["new_weight_bp"] == 0)
        .cloned()
        .expect("a rollback event");
    assert_eq!(rollback["cause"], "analysis-rollback", "{rollback:#}");
    assert!(
        rollback["detail"]
            .as_str()
            .is_some_and(|d| d.contains("analysis errors failed")),
        "{rollback:#}"
    );
    let metrics = bed.cli_ok(&["status"]);
    assert!(metrics.contains("analysis errors: failure"), "{metrics}");
    let (code, text) = bed.curl("GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(
        text.contains(
            "shifter_analysis_result{service=\"web\",analysis=\"errors\",result=\"failure\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("shifter_rollbacks_total{service=\"web\",cause=\"analysis-rollback\"} 1"),
        "{text}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let view = bed.cli_ok(&["watch", "--once", "--interval", "200ms"]);
    assert!(
        view.contains("analysis") && view.contains("errors failure"),
        "{view}"
    );
    let history: Value =
        serde_json::from_str(&bed.cli_ok(&["history", "web", "--json"])).expect("history");
    assert_eq!(history["rollouts"][0]["outcome"], "rolled-back");
    daemon.stop();
}

#[test]
fn a_gate_without_data_pauses_and_resumes_when_data_arrives() {
    let bed = DaemonBed::new("prom-nodata");
    let app = AppMetrics::start(bed.server_ns());
    let _prom = Prometheus::start(bed.server_ns(), &bed.dir.0);
    bed.write_config(&web(
        "name = \"ready\"\nquery = 'app_ready{service=\"{{service}}\",backend=\"{{backend}}\"}'\n\
         min = 1\ninterval = \"500ms\"\ntimeout = \"400ms\"\ninconclusive_limit = 2\n",
        "3s",
    ));
    let daemon = InProcess::start(&bed);
    wait_for(
        "green up",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || service(&bed)["health"]["green"]["status"] == "up",
    );
    bed.cli_ok(&["rollout", "start", "web"]);
    wait_for(
        "a first (empty) answer",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || analysis_of(&service(&bed))["last"] == "inconclusive",
    );
    assert_eq!(analysis_of(&service(&bed))["detail"], "no data");
    wait_for(
        "the rollout to pause for lack of data",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || service(&bed)["rollout"]["state"] == "paused",
    );
    let s = service(&bed);
    assert_eq!(s["weight_bp"], 5000, "a pause keeps the weight");
    let held = s["rollout"]["remaining_hold_ms"]
        .as_u64()
        .expect("hold left");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        service(&bed)["rollout"]["state"],
        "paused",
        "no data: still paused"
    );

    app.ready.store(true, Ordering::Relaxed);
    let arrived = Instant::now();
    wait_for(
        "the rollout to resume",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || service(&bed)["rollout"]["state"] == "running",
    );
    eprintln!("data arrived: resumed after {:?}", arrived.elapsed());
    let s = service(&bed);
    assert!(
        s["rollout"]["remaining_hold_ms"].as_u64() <= Some(held),
        "{s:#}"
    );
    wait_for(
        "the rollout to complete",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || service(&bed)["rollout"]["state"] == "completed",
    );
    let history: Value =
        serde_json::from_str(&bed.cli_ok(&["history", "web", "--json"])).expect("history");
    let kinds: Vec<String> = history["rollouts"][0]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        kinds.starts_with(&[
            "start".into(),
            "analysis-inconclusive".into(),
            "analysis-resumed".into()
        ]),
        "{kinds:?}"
    );
    daemon.stop();
}
