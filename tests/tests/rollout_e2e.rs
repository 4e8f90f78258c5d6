//! Rollouts end to end: the daemon runs in-process inside the server namespace with real
//! blue/green echo servers; clients in the client namespace connect to the service port
//! through the veth pair while the CLI drives rollouts.
//!
//! - a ramp 0 -> 100 under continuous traffic: zero failed connections;
//! - green killed at 25 %: weight 0 within fall x interval + 100 ms, and no blue-bound or
//!   later connection fails;
//! - green refusing connections while its HTTP check (another port) passes: the kernel-signal
//!   gate rolls back;
//! - a daemon restarted mid-rollout resumes the same step with the same remaining hold and
//!   no weight change in between;
//! - promote moves no connection.
//!
//! Over 700 lines: the rollout scenarios of one area, sharing the daemon bed and traffic fixtures
//! at its top.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use shifter::ServiceConfig;
use shifter_common::{Affinity, Backend, FlowTuple, choose_backend, v4_mapped};
use shifter_tests::{
    daemon::{DaemonBed, InProcess},
    netns::{self, BLUE_ID, BLUE_PORT, CLIENT_V4, GREEN_ID, GREEN_PORT, SERVER_V4, SERVICE_PORT},
    traffic::{LongLived, Outcome, Report, long_problems, tcp_short_from},
};

fn target() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(SERVER_V4), SERVICE_PORT)
}

/// The `web` service with TCP health checks every 100 ms (rise 1, fall 3) and `rollout`.
fn web(health: &str, rollout: &str) -> String {
    format!(
        "[[services]]\nname = \"web\"\nport = {SERVICE_PORT}\nblue_port = {BLUE_PORT}\n\
         green_port = {GREEN_PORT}\nweight = 0\n\n{health}\n[services.rollout]\n{rollout}\n"
    )
}

/// `shifter rollout start web` with the steps 10, 50, 100 and `hold` given on the command line.
fn start_canary(bed: &DaemonBed, hold: &str) {
    bed.cli_ok(&[
        "rollout",
        "start",
        "web",
        "--steps",
        "10,50,100",
        "--hold",
        hold,
    ]);
}

fn tcp_health() -> String {
    format!(
        "[services.health]\nkind = \"tcp\"\naddress = \"{SERVER_V4}\"\ninterval = \"100ms\"\n\
         timeout = \"100ms\"\nrise = 1\nfall = 3\n"
    )
}

/// Polls `f` every `every` until it returns `Some`, at most `limit`.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

fn weight(bed: &DaemonBed) -> ServiceConfig {
    let cfgs = bed.pinned_configs();
    assert_eq!(cfgs.len(), 1, "one service expected in the maps: {cfgs:?}");
    *cfgs.values().next().expect("one")
}

fn service_status(bed: &DaemonBed) -> Value {
    bed.status()["services"][0].clone()
}

fn wait_green_up(bed: &DaemonBed) {
    wait_for(
        "green's health to be up",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || (service_status(bed)["health"]["green"]["status"] == "up").then_some(()),
    );
}

/// One short connection from each client port of `ports`, in turn; all must succeed.
fn short_connections(bed: &DaemonBed, ports: std::ops::Range<u16>) -> Report {
    let r = netns::run_in(bed.client_ns(), || {
        tcp_short_from(
            target(),
            ports,
            Duration::from_secs(1),
            Duration::from_secs(10),
        )
    });
    assert!(r.failures().is_empty(), "{}", r.failure_summary());
    r
}

fn events(bed: &DaemonBed) -> Vec<Value> {
    let v: Value = serde_json::from_str(&bed.cli_ok(&["events", "--json"])).expect("events JSON");
    v["events"].as_array().cloned().unwrap_or_default()
}

/// Short connections one after the other from the client namespace, each from its own
/// source port (so a failed one can still be told apart), until stopped. Each outcome comes
/// with the times the connection started and ended.
struct Traffic {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<(Instant, Instant, Outcome)>>>,
}

impl Traffic {
    fn start(ns: &str, ports: std::ops::Range<u16>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = netns::spawn_in(ns, move || {
            let mut out = Vec::new();
            for port in ports {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let at = Instant::now();
                let r = tcp_short_from(
                    target(),
                    port..port + 1,
                    Duration::from_secs(1),
                    Duration::from_secs(3),
                );
                let ended = Instant::now();
                out.extend(r.outcomes.into_iter().map(|o| (at, ended, o)));
                std::thread::sleep(Duration::from_millis(2));
            }
            out
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<(Instant, Instant, Outcome)> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().expect("once").join() {
            Ok(v) => v,
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

/// The backend the data plane decides for a client source port at `weight`.
fn decided(sport: u16, weight: u16) -> Backend {
    let t = FlowTuple {
        proto: 6,
        client_addr: v4_mapped(CLIENT_V4.octets()),
        client_port: sport,
        local_addr: v4_mapped(SERVER_V4.octets()),
        service_port: SERVICE_PORT,
    };
    choose_backend(
        &t,
        &ServiceConfig {
            blue_port: BLUE_PORT,
            green_port: GREEN_PORT,
            weight,
            affinity: Affinity::Connection,
            dispatch: shifter_common::Dispatch::Rewrite,
        },
    )
}

fn failures(out: &[(Instant, Instant, Outcome)]) -> Vec<String> {
    out.iter()
        .filter_map(|(_, _, o)| {
            o.error
                .as_ref()
                .map(|e| format!("port {}: {e}", o.local_port))
        })
        .collect()
}

#[test]
fn ramp_to_100_under_traffic_fails_no_connection() {
    let bed = DaemonBed::new("ramp");
    bed.write_config(&web(&tcp_health(), "hold = \"1s\"\nsteps = [10, 50, 100]"));
    let daemon = InProcess::start(&bed);
    wait_green_up(&bed);
    let long = LongLived::open(bed.client_ns(), target(), 8, Duration::from_secs(2));
    let traffic = Traffic::start(bed.client_ns(), 10_000..14_000);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    start_canary(&bed, "1s");
    wait_for(
        "the ramp to complete",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || (service_status(&bed)["rollout"]["state"] == "completed").then_some(()),
    );
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let out = traffic.finish();
    let conns = long.finish();
    assert_eq!(weight(&bed).weight, 10_000);
    let f = failures(&out);
    assert!(
        f.is_empty(),
        "{} of {} connections failed: {f:?}",
        f.len(),
        out.len()
    );
    let green = out
        .iter()
        .filter(|(_, _, o)| o.backend == Some(GREEN_ID))
        .count();
    let blue = out
        .iter()
        .filter(|(_, _, o)| o.backend == Some(BLUE_ID))
        .count();
    assert!(
        out.len() >= 200 && green > 20 && blue > 20,
        "too little traffic: {blue} blue, {green} green"
    );
    let p = long_problems(&conns, Some(BLUE_ID));
    assert!(p.is_empty(), "long-lived connections: {p:?}");
    let steps: Vec<Value> = events(&bed)
        .into_iter()
        .filter(|e| e["cause"] == "rollout-step" || e["cause"] == "rollout")
        .collect();
    assert!(
        steps.iter().filter(|e| e["map_update_ns"].is_u64()).count() >= 3,
        "every weight step carries its measured map update: {steps:#?}"
    );
    eprintln!(
        "ramp 10/50/100 % with 1 s holds took {took:?}; {} connections ({blue} blue, {green} green), 0 failed",
        out.len()
    );
    daemon.stop();
}

#[test]
fn green_killed_at_25_percent_is_rolled_back_within_fall_times_interval() {
    let mut bed = DaemonBed::new("kill");
    bed.write_config(&web(&tcp_health(), "hold = \"30s\"\nsteps = [25, 100]"));
    let daemon = InProcess::start(&bed);
    wait_green_up(&bed);
    bed.cli_ok(&["rollout", "start", "web"]);
    assert_eq!(weight(&bed).weight, 2500);
    let long = LongLived::open(bed.client_ns(), target(), 12, Duration::from_secs(2));
    let traffic = Traffic::start(bed.client_ns(), 14_000..18_000);
    std::thread::sleep(Duration::from_millis(500));

    let green = bed.servers.remove(1);
    assert_eq!(green.port, GREEN_PORT);
    let kill_started = Instant::now();
    green.stop();
    let killed = Instant::now();
    let zero = wait_for(
        "the weight to drop to 0",
        Duration::from_secs(3),
        Duration::from_millis(1),
        || (weight(&bed).weight == 0).then(Instant::now),
    );
    let after_kill = zero - killed;
    // fall 3 x interval 100 ms + 100 ms (the slack scaled to the machine: a TCG guest).
    let bound = Duration::from_millis(300) + shifter_tests::patient(Duration::from_millis(100));
    assert!(
        after_kill <= bound,
        "weight 0 came {after_kill:?} after green died (bound {bound:?})"
    );
    std::thread::sleep(Duration::from_millis(800));
    let out = traffic.finish();
    let conns = long.finish();

    for (at, ended, o) in &out {
        if let Some(e) = &o.error {
            // In flight at some time between the kill and the rollback: started before the
            // weight reached 0 and ended after the kill began (a slow exchange to green that
            // started just before the kill is reset by it).
            assert!(
                *ended >= kill_started && *at < zero,
                "port {}: failed outside the kill window: {e}",
                o.local_port
            );
            assert_eq!(
                decided(o.local_port, 2500),
                Backend::Green,
                "port {}: a blue-bound connection failed: {e}",
                o.local_port
            );
        } else if *at >= zero {
            assert_eq!(
                o.backend,
                Some(BLUE_ID),
                "port {}: new connection after the rollback",
                o.local_port
            );
        }
    }
    let after = out.iter().filter(|(at, _, _)| *at >= zero).count();
    assert!(after > 20, "only {after} connections after the rollback");
    let blue_long: Vec<_> = conns
        .iter()
        .filter(|c| c.first_backend == Some(BLUE_ID))
        .cloned()
        .collect();
    assert!(!blue_long.is_empty(), "no long-lived connection on blue");
    let p = long_problems(&blue_long, Some(BLUE_ID));
    assert!(p.is_empty(), "blue's long-lived connections: {p:?}");

    let ev = events(&bed);
    let rb = ev
        .iter()
        .find(|e| e["cause"] == "health-rollback")
        .unwrap_or_else(|| panic!("no health-rollback event: {ev:#?}"));
    assert_eq!(rb["new_weight_bp"], 0);
    let since = rb["since_decision_ns"]
        .as_u64()
        .expect("rollback latency measured");
    let map = rb["map_update_ns"].as_u64().expect("map update measured");
    // 10 ms on a host. A TCG guest (patience > 1) stalls threads for tens of ms (71 ms seen):
    // there the bound is what the property needs, that the rollback is applied with the deciding
    // check and not at the next one (the interval, 100 ms).
    let bound: u64 = if shifter_tests::patience() > 1 {
        100_000_000
    } else {
        10_000_000
    };
    assert!(
        since < bound,
        "deciding check to map update took {since} ns (bound {bound} ns)"
    );
    let st = service_status(&bed);
    assert_eq!(st["rollout"]["state"], "rolled back");
    assert_eq!(st["health"]["green"]["status"], "down");
    assert!(
        st["health"]["green"]["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("refused")),
        "{st:#?}"
    );
    eprintln!(
        "green killed: weight 0 after {after_kill:?} (from the kill command: {:?}); deciding check to map update {} us, map update {} us; {} failed connections, all green-bound in the window",
        zero - kill_started,
        since / 1000,
        map / 1000,
        failures(&out).len()
    );
    daemon.stop();
}

/// A tiny HTTP server answering 200 to anything, on `port` in `ns`, until dropped.
struct HttpOk {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpOk {
    fn start(ns: &str, port: u16) -> Self {
        let l = netns::run_in(ns, || {
            TcpListener::bind((SERVER_V4, port)).unwrap_or_else(|e| panic!("bind {port}: {e}"))
        });
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut buf = [0u8; 2048];
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match c.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = c.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpOk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A rollout at its 25 % step (hold 3 s, HTTP checks on a separate port) whose green closes
/// its service port while its health endpoint keeps answering 200, under traffic; returns
/// when the gate has put the weight back to 0.
struct GreenClosed {
    bed: DaemonBed,
    daemon: InProcess,
    _health: [HttpOk; 2],
    /// Every connection of the traffic: (start, end, outcome).
    out: Vec<(Instant, Instant, Outcome)>,
    stopped: Instant,
    zero: Instant,
}

impl GreenClosed {
    fn run(name: &str, dispatch: &str) -> Self {
        let mut bed = DaemonBed::new(name);
        let health_servers = [
            HttpOk::start(bed.server_ns(), BLUE_PORT + 1000),
            HttpOk::start(bed.server_ns(), GREEN_PORT + 1000),
        ];
        let health = format!(
            "[services.health]\nkind = \"http\"\npath = \"/healthz\"\naddress = \"{SERVER_V4}\"\n\
             port_offset = 1000\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 3\n"
        );
        bed.write_config(
            &web(
                &health,
                "hold = \"3s\"\nsteps = [25, 100]\nmin_green_flows = 5",
            )
            .replacen(
                "weight = 0\n",
                &format!("weight = 0\ndispatch = \"{dispatch}\"\n"),
                1,
            ),
        );
        let daemon = InProcess::start(&bed);
        wait_green_up(&bed);
        assert_eq!(service_status(&bed)["dispatch"], dispatch);
        bed.cli_ok(&["rollout", "start", "web"]);
        assert_eq!(weight(&bed).weight, 2500);
        let traffic = Traffic::start(bed.client_ns(), 18_000..22_000);
        std::thread::sleep(Duration::from_millis(300));
        // Green's service port closes; its health endpoint keeps answering 200.
        bed.servers.remove(1).stop();
        let stopped = Instant::now();
        let zero = wait_for(
            "the gate to roll back",
            Duration::from_secs(8),
            Duration::from_millis(5),
            || (weight(&bed).weight == 0).then(Instant::now),
        );
        let out = traffic.finish();
        let st = service_status(&bed);
        assert_eq!(
            st["health"]["green"]["status"], "up",
            "the HTTP check must still pass: {st:#?}"
        );
        assert_eq!(st["rollout"]["state"], "rolled back");
        Self {
            bed,
            daemon,
            _health: health_servers,
            out,
            stopped,
            zero,
        }
    }

    /// The gate-rollback event, which must name refusals, with no health rollback beside it.
    fn rollback_event(&self) -> Value {
        let ev = events(&self.bed);
        assert!(
            !ev.iter().any(|e| e["cause"] == "health-rollback"),
            "{ev:#?}"
        );
        let rb = ev
            .iter()
            .find(|e| e["cause"] == "gate-rollback")
            .unwrap_or_else(|| panic!("no gate-rollback event: {ev:#?}"))
            .clone();
        assert!(
            rb["detail"].as_str().is_some_and(|d| d.contains("refusal")),
            "{rb:#?}"
        );
        rb
    }
}

#[test]
fn green_refusing_connections_is_caught_by_the_gate_while_its_http_check_passes() {
    // Refusals are RSTs the rewrite path sees (socket dispatch falls back instead: the next
    // test).
    let run = GreenClosed::run("gate", "rewrite");
    let st = service_status(&run.bed);
    assert!(
        st["green"]["refusals"].as_u64().unwrap_or(0) > 0,
        "no refusal counted: {st:#?}"
    );
    let rb = run.rollback_event();
    eprintln!(
        "gate rollback {:?} after green's port closed ({} refused connections seen by clients): {}",
        run.zero - run.stopped,
        failures(&run.out).len(),
        rb["detail"]
    );
    run.daemon.stop();
}

/// The same under socket dispatch: green's listeners close while its HTTP check passes.
/// The in-kernel guard hands every connection decided for green to blue (no client sees a
/// refusal), each counted as green's fallback, and the gate rolls back on them.
#[test]
fn socket_dispatch_green_closing_falls_back_in_kernel_and_the_gate_rolls_back() {
    if !shifter_tests::socket_dispatch_expected() {
        // Before 5.14 the daemon serves a `dispatch = "socket"` service by rewrite, saying
        // why; the rewrite variant of this scenario is the test above.
        let bed = DaemonBed::new("gate-sock");
        bed.write_config(&web("", "steps = [100]").replacen(
            "weight = 0\n",
            "weight = 0\ndispatch = \"socket\"\n",
            1,
        ));
        let daemon = InProcess::start(&bed);
        let why = bed.status()["socket_dispatch_unavailable"].clone();
        shifter_tests::assert_socket_dispatch_unavailable(why.as_str(), "rollout");
        assert_eq!(service_status(&bed)["dispatch"], "rewrite");
        daemon.stop();
        return;
    }
    let run = GreenClosed::run("gate-sock", "socket");
    // A connection green had accepted (or had in its accept queue) when it closed is reset
    // with it, as behind any balancer; every connection opened after that must succeed.
    let after: Vec<_> = run
        .out
        .iter()
        .filter(|(start, _, _)| *start > run.stopped)
        .cloned()
        .collect();
    let failed = failures(&after);
    assert!(
        failed.is_empty(),
        "connections opened after green closed failed: {failed:?}"
    );
    let st = service_status(&run.bed);
    let fallbacks = st["green"]["fallbacks"].as_u64().unwrap_or(0);
    assert!(fallbacks > 0, "no fallback counted: {st:#?}");
    let rb = run.rollback_event();
    eprintln!(
        "socket dispatch: gate rollback {:?} after green's listeners closed, {} connections \
         opened after it, 0 failed ({} in flight before it failed), {fallbacks} fallbacks: {}",
        run.zero - run.stopped,
        after.len(),
        failures(&run.out).len(),
        rb["detail"]
    );
    run.daemon.stop();
}

#[test]
fn a_restarted_daemon_resumes_the_step_and_its_remaining_hold_without_a_weight_change() {
    let bed = DaemonBed::new("restart");
    bed.write_config(&web(&tcp_health(), "hold = \"5s\"\nsteps = [25, 50]"));
    let daemon = InProcess::start(&bed);
    wait_green_up(&bed);
    bed.cli_ok(&["rollout", "start", "web"]);
    assert_eq!(weight(&bed).weight, 2500);
    std::thread::sleep(Duration::from_millis(1500));
    let left_before = service_status(&bed)["rollout"]["remaining_hold_ms"]
        .as_u64()
        .expect("remaining hold");
    let stopping = Instant::now();
    daemon.stop();
    let down_from = Instant::now();
    // The daemon is down: the weight stays where it was.
    for _ in 0..20 {
        assert_eq!(
            weight(&bed).weight,
            2500,
            "the weight moved while the daemon was down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let restarting = Instant::now();
    let daemon = InProcess::start(&bed);
    let down = down_from.elapsed();
    let st = service_status(&bed);
    // The resumed hold counts down from the new daemon's start until this status answer.
    let restart_took = restarting.elapsed();
    assert_eq!(weight(&bed).weight, 2500, "restart changed the weight");
    assert_eq!(st["rollout"]["state"], "running", "{st:#?}");
    assert_eq!(st["rollout"]["step"], 1);
    let left_after = st["rollout"]["remaining_hold_ms"]
        .as_u64()
        .expect("remaining hold");
    let stop_took = down_from - stopping;
    // Same remaining hold, give or take the time the stop, the restart and the status calls
    // took (seconds under TCG in `cargo xtask vm-test`).
    let diff = left_before.abs_diff(left_after);
    assert!(
        diff <= 400 + (stop_took + restart_took).as_millis() as u64,
        "remaining hold {left_before} ms before the restart, {left_after} ms after (down {down:?}, \
         stop took {stop_took:?}, restart and status took {restart_took:?})"
    );
    // No weight change until that hold ends, then the next step.
    let resumed = Instant::now();
    let moved = wait_for(
        "the next step",
        Duration::from_secs(8),
        Duration::from_millis(10),
        || {
            let w = weight(&bed).weight;
            (w != 2500).then_some((w, resumed.elapsed()))
        },
    );
    assert_eq!(moved.0, 5000);
    assert!(
        moved.1.as_millis() as u64 + 300 >= left_after,
        "the step moved on after {:?}, {left_after} ms were left",
        moved.1
    );
    let ev = events(&bed);
    assert!(
        ev.iter().any(|e| e["cause"] == "restore"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("daemon restart"))),
        "{ev:#?}"
    );
    eprintln!(
        "restart: {left_before} ms left before, {left_after} ms after (down {down:?}); next step after {:?}",
        moved.1
    );
    daemon.stop();
}

#[test]
fn promote_moves_no_connection() {
    let bed = DaemonBed::new("promote");
    bed.write_config(&web("", "hold = \"1s\""));
    let daemon = InProcess::start(&bed);
    bed.cli_ok(&["set-weight", "web", "50"]);
    let long = LongLived::open(bed.client_ns(), target(), 16, Duration::from_secs(2));
    bed.cli_ok(&["set-weight", "web", "100"]);
    let out = bed.cli_ok(&["promote", "web"]);
    assert!(out.contains("weight 0.00%"), "{out}");
    let cfg = weight(&bed);
    assert_eq!(
        (cfg.blue_port, cfg.green_port, cfg.weight),
        (GREEN_PORT, BLUE_PORT, 0),
        "promote swaps the roles with weight 0"
    );
    assert!(
        long.wait_rounds(20, Duration::from_secs(10)),
        "long-lived connections stalled"
    );
    // New connections go to the new blue: the server that was green.
    let fresh = short_connections(&bed, 26_000..26_100);
    assert_eq!(
        fresh.count(GREEN_ID),
        100,
        "new connections must all reach the promoted version"
    );
    let conns = long.finish_unbroken("the promote");
    let on = |id| conns.iter().filter(|c| c.first_backend == Some(id)).count();
    assert!(
        on(BLUE_ID) > 0 && on(GREEN_ID) > 0,
        "want connections on both: {conns:?}"
    );
    let st = service_status(&bed);
    assert_eq!(st["blue_port"], GREEN_PORT);
    let ev = events(&bed);
    assert!(
        ev.iter().any(|e| e["cause"] == "promote" && e["uid"] == 0),
        "{ev:#?}"
    );
    // The swap survives a restart.
    daemon.stop();
    let daemon = InProcess::start(&bed);
    let cfg = weight(&bed);
    assert_eq!(
        (cfg.blue_port, cfg.green_port, cfg.weight),
        (GREEN_PORT, BLUE_PORT, 0)
    );
    eprintln!(
        "promote: {} long-lived connections ({} old blue, {} old green) kept their backend; 100 new ones reached the promoted version",
        conns.len(),
        on(BLUE_ID),
        on(GREEN_ID)
    );
    daemon.stop();
}

#[test]
fn a_dry_run_counts_the_would_be_split_and_steers_nothing() {
    let bed = DaemonBed::new("dry");
    bed.write_config(&web("", "hold = \"30s\""));
    let daemon = InProcess::start(&bed);
    let out = bed.cli_ok(&["rollout", "start", "web", "--steps", "50,100", "--dry-run"]);
    assert!(out.contains("dry-run running step 1/2"), "{out}");
    assert_eq!(weight(&bed).weight, 0, "a dry run changed the real weight");
    let r = short_connections(&bed, 30_000..30_200);
    assert_eq!(
        r.count(BLUE_ID),
        200,
        "a dry run steered connections to green"
    );
    let want_green = (30_000..30_200u16)
        .filter(|p| decided(*p, 5000) == Backend::Green)
        .count() as u64;
    let st = service_status(&bed);
    assert_eq!(st["rollout"]["dry_run"], true);
    assert_eq!(st["rollout"]["would_weight_bp"], 5000);
    assert_eq!(st["green"]["dry_new_flows"], want_green, "{st:#?}");
    assert_eq!(st["blue"]["dry_new_flows"], 200 - want_green);
    assert_eq!(st["green"]["new_flows"], 0);
    let table = bed.cli_ok(&["status"]);
    assert!(table.contains("would-be new B/G"), "{table}");
    // Promote refuses a dry run; rollback ends it and the real weight never moved.
    let p = bed.cli(&["promote", "web"], None);
    assert!(!p.status.success());
    bed.cli_ok(&["rollback", "web"]);
    assert_eq!(weight(&bed).weight, 0);
    // The dry run is over: new connections are no longer counted as would-be decisions.
    short_connections(&bed, 30_200..30_250);
    let after = service_status(&bed);
    assert_eq!(
        (
            after["blue"]["dry_new_flows"].clone(),
            after["green"]["dry_new_flows"].clone()
        ),
        (
            st["blue"]["dry_new_flows"].clone(),
            st["green"]["dry_new_flows"].clone()
        ),
        "dry counting went on after the dry run was rolled back"
    );
    assert_eq!(after["blue"]["new_flows"], 250);
    eprintln!(
        "dry run at 50 %: 200 connections all to blue; would-be split {}/{want_green}",
        200 - want_green
    );
    daemon.stop();
}

#[test]
fn rollback_drain_waits_for_green_connections_and_reports_those_left() {
    let bed = DaemonBed::new("drain");
    bed.write_config(&web("", "hold = \"1s\""));
    let daemon = InProcess::start(&bed);
    let open_green = |n| {
        bed.cli_ok(&["set-weight", "web", "100"]);
        let long = LongLived::open(bed.client_ns(), target(), n, Duration::from_secs(2));
        assert!(
            long.wait_rounds(2, Duration::from_secs(10)),
            "long-lived connections stalled"
        );
        long
    };

    // Connections that stay open: the whole timeout passes and they are reported, not closed.
    let long = open_green(4);
    let start = Instant::now();
    let out = bed.cli_ok(&["rollback", "web", "--drain-timeout", "1500ms"]);
    let waited = start.elapsed();
    assert!(
        out.contains("4 green flow(s) still open after"),
        "rollback output: {out}"
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "returned early: {waited:?}"
    );
    assert_eq!(
        weight(&bed).weight,
        0,
        "rollback sets the weight to 0 first"
    );
    assert!(
        long.wait_rounds(3, Duration::from_secs(10)),
        "the drain must not break green's connections"
    );
    let conns = long.finish();
    let p = long_problems(&conns, Some(GREEN_ID));
    assert!(p.is_empty(), "green connections broken: {p:?}");
    eprintln!("drain: 4 open green connections reported after {waited:?}");

    // Connections that end during the wait: the rollback returns once they are gone.
    let long = open_green(4);
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        long.finish()
    });
    let start = Instant::now();
    let out = bed.cli_ok(&["rollback", "web", "--drain-timeout", "20s"]);
    let waited = start.elapsed();
    let conns = closer.join().expect("closer thread");
    assert_eq!(conns.len(), 4);
    assert!(out.contains("green drained"), "rollback output: {out}");
    assert!(
        waited < Duration::from_secs(10),
        "the drain should end when green's connections close, not at the timeout: {waited:?}"
    );
    eprintln!("drain: rollback returned {waited:?} after the start, connections closed at ~700 ms");

    // Both rollbacks were the operator's: counted as manual rollbacks.
    let ev = events(&bed);
    let manual = ev
        .iter()
        .filter(|e| e["cause"] == "manual-rollback" && e["uid"] == 0)
        .count();
    assert_eq!(manual, 2, "{ev:#?}");
    daemon.stop();
}

/// The systemd suite's s9 on the host: a state file saved at an earlier step must not move
/// the weight the kernel holds when the daemon restarts mid-rollout.
#[test]
fn a_stale_state_file_from_an_earlier_step_never_changes_the_weight_on_restart() {
    let bed = DaemonBed::new("stale");
    // As in s9: no health check, the steps and hold given on the command line.
    bed.write_config(&web("", ""));
    let daemon = InProcess::start(&bed);
    start_canary(&bed, "3s");
    assert_eq!(weight(&bed).weight, 1000);
    std::thread::sleep(Duration::from_millis(300));
    let state = bed.state_dir.join("state.json");
    let step1 = std::fs::read(&state).expect("state file at the first step");
    let progress = bed.state_dir.join("rollout-web.json");
    let progress1 = std::fs::read(&progress).expect("rollout progress at the first step");
    wait_for(
        "the second step",
        Duration::from_secs(8),
        Duration::from_millis(20),
        || (weight(&bed).weight == 5000).then_some(()),
    );
    daemon.stop();
    std::fs::write(&state, &step1).expect("put the stale state back");
    let daemon = InProcess::start(&bed);
    assert_eq!(
        weight(&bed).weight,
        5000,
        "the restart moved the kernel's weight"
    );
    let st = service_status(&bed);
    assert_eq!(st["rollout"]["step"], 2, "{st:#?}");
    assert_eq!(st["rollout"]["state"], "running", "{st:#?}");
    // The rollout's own progress file stale too: it disagrees with the kernel, so the
    // rollout freezes where the kernel is instead of steering back to its first step.
    daemon.stop();
    std::fs::write(&state, &step1).expect("put the stale state back");
    std::fs::write(&progress, progress1).expect("put the stale progress back");
    let daemon = InProcess::start(&bed);
    assert_eq!(
        weight(&bed).weight,
        5000,
        "the restart moved the kernel's weight"
    );
    let st = service_status(&bed);
    assert_eq!(st["rollout"]["state"], "frozen", "{st:#?}");
    std::thread::sleep(Duration::from_millis(3500)); // longer than the first step's hold
    assert_eq!(
        weight(&bed).weight,
        5000,
        "a frozen rollout moved the weight"
    );
    daemon.stop();
}
