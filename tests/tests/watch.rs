//! `shifter watch`: the screen drawn on ratatui's test backend at 80x24 compared with golden
//! files (tests/golden/*.txt; `UPDATE_GOLDEN=1 cargo test -p shifter-tests --test integration
//! watch::` rewrites them), and `shifter watch --once` against a real daemon under traffic (root).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde_json::{Value, json};
use shifter::{
    api::types::{FleetAgentView, Status},
    cli::watch::view::{Tracker, ViewModel, render_text},
    events::Event,
};
use shifter_tests::{
    daemon::{DaemonBed, InProcess, web_service},
    netns::{self, SERVER_V4, SERVICE_PORT},
    traffic,
};

fn golden(name: &str, lines: &[String]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(format!("{name}.txt"));
    let got = lines.join("\n") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir golden");
        std::fs::write(&path, &got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (UPDATE_GOLDEN=1 writes it); the screen:\n{got}",
            path.display()
        )
    });
    assert_eq!(
        got,
        want,
        "the screen differs from {} (UPDATE_GOLDEN=1 rewrites it after a wanted change)",
        path.display()
    );
}

fn counters(new_flows: u64, active: u64) -> Value {
    json!({"new_flows": new_flows, "active_flows": active, "packets": 0, "bytes": 0,
           "egress_packets": 0, "egress_bytes": 0, "recoveries": 0, "evictions": 0,
           "refusals": 0, "resets": 0})
}

fn service(
    name: &str,
    proto: &str,
    port: u16,
    weight: u16,
    blue: (u64, u64),
    green: (u64, u64),
) -> Value {
    json!({"name": name, "protocol": proto, "port": port, "local_addresses": [],
           "blue_port": port + 8000, "green_port": port + 8001, "weight_bp": weight,
           "weight_percent": "", "affinity": "connection", "slot": 0,
           "blue": counters(blue.0, blue.1), "green": counters(green.0, green.1)})
}

fn status(services: Vec<Value>) -> Value {
    json!({"version": "0.1.0", "pid": 1, "bpffs_dir": "/sys/fs/bpf/shifter",
           "state_dir": "/var/lib/shifter", "flow_table_size": 65536, "interfaces": [],
           "services": services})
}

/// A `/v1/status` body decoded as the client decodes it.
fn typed(status: Value) -> Status {
    serde_json::from_value(status).expect("a status in the wire schema")
}

fn events() -> Vec<Event> {
    let t0 = 1_700_000_000_000u64;
    serde_json::from_value(json!([
        {"seq": 0, "time_ms": t0, "service": "web", "old_weight_bp": null,
               "new_weight_bp": 0, "cause": "config", "uid": null},
        {"seq": 1, "time_ms": t0 + 1000, "service": "dns", "old_weight_bp": null,
               "new_weight_bp": 5000, "cause": "config", "uid": null},
        {"seq": 2, "time_ms": t0 + 60_000, "service": "web", "old_weight_bp": 0,
               "new_weight_bp": 2500, "cause": "operator", "uid": 0},
    ]))
    .expect("events in the wire schema")
}

/// Two samples 10 s apart: web got 30 blue / 10 green new connections, dns none.
fn view(extra_web: Value) -> ViewModel {
    let mut tracker = Tracker::new(Duration::from_secs(10));
    let before = status(vec![
        service("web", "tcp", 80, 2500, (100, 3), (20, 1)),
        service("dns", "udp", 53, 5000, (7, 0), (7, 0)),
    ]);
    tracker.push(Duration::ZERO, &typed(before));
    let mut web = service("web", "tcp", 80, 2500, (130, 4), (30, 2));
    if let (Some(w), Value::Object(extra)) = (web.as_object_mut(), extra_web) {
        w.extend(extra);
    }
    let after = status(vec![web, service("dns", "udp", 53, 5000, (7, 0), (7, 0))]);
    let snap = typed(after);
    tracker.push(Duration::from_secs(10), &snap);
    ViewModel::build(
        "/run/shifter/shifter.sock",
        "12:00:00 UTC",
        &snap,
        &tracker,
        &events(),
        6,
    )
}

#[test]
fn screen_without_health_or_rollout() {
    let lines = render_text(&view(json!({})), 80, 24);
    golden("watch-80x24", &lines);
    let text = lines.join("\n");
    assert!(
        !text.contains("health") && !text.contains("rollout"),
        "no placeholders: {text}"
    );
}

#[test]
fn screen_with_health_and_rollout() {
    let lines = render_text(
        &view(json!({
            "health": {"blue": {"port": 8080, "check_port": 8080, "status": "up",
                                "last_failure": null, "last_check_ok": true, "checks": 4},
                       "green": {"port": 8081, "check_port": 8081, "status": "down",
                                 "last_failure": "connect: connection refused",
                                 "last_check_ok": false, "checks": 4}},
            "rollout": {"state": "running", "kind": "canary", "dry_run": false,
                        "step": 3, "steps": 5, "step_weight_bp": 2500,
                        "remaining_hold_ms": 12000, "would_weight_bp": null,
                        "gate_waiting": null, "rolled_back": null}
        })),
        80,
        24,
    );
    golden("watch-80x24-rollout", &lines);
}

#[test]
fn screen_with_a_fleet_rollout() {
    let mut vm = view(json!({
        "fleet": {"rollout": "web-7", "action": "ramp", "phase": "running", "reason": null,
                  "wave": 2, "host_wave": 2, "waves": 3, "hosts_done": 2, "hosts": 6,
                  "reported": "running", "held": false}
    }));
    vm.fleet = Some(FleetAgentView {
        node: "h3".into(),
        etcd_reachable: true,
        unreachable_since_ms: None,
        last_error: None,
    });
    let lines = render_text(&vm, 80, 24);
    golden("watch-80x24-fleet", &lines);
    // Cut off from etcd: the agent line says since when and why, the ramp says it holds.
    let since = shifter::util::now_unix_ms() - 12_000;
    vm.fleet = Some(FleetAgentView {
        node: "h3".into(),
        etcd_reachable: false,
        unreachable_since_ms: Some(since),
        last_error: Some("connection refused".into()),
    });
    let web = vm.services[0].fleet.as_mut().expect("fleet view");
    web.phase = Some("paused".into());
    web.reason = Some("host(s) lost: h3".into());
    web.held = true;
    let text = render_text(&vm, 80, 24).join("\n");
    for want in [
        "fleet: node h3, etcd unreachable for 12s (connection refused)",
        "fleet web-7 paused (host(s) lost: h3), wave 2/3, 2/6 hosts done",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    // The held note is past 80 columns; the status line has it whole.
    let line = vm.services[0].fleet.as_ref().expect("fleet view").summary();
    assert!(line.ends_with(", held while etcd is unreachable"), "{line}");
}

#[test]
fn too_many_services_say_how_many_are_hidden() {
    let many: Vec<Value> = (0..12)
        .map(|i| service(&format!("svc{i}"), "tcp", 1000 + i, 0, (0, 0), (0, 0)))
        .collect();
    let snap = typed(status(many));
    let vm = ViewModel::build(
        "s",
        "c",
        &snap,
        &Tracker::new(Duration::from_secs(1)),
        &[],
        6,
    );
    let lines = render_text(&vm, 80, 24);
    assert_eq!(lines.len(), 24);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("more service(s): make the terminal taller")),
        "{}",
        lines.join("\n")
    );
    assert!(lines.iter().any(|l| l.starts_with("svc0 ")));
}

#[test]
fn watch_once_against_a_running_daemon() {
    let bed = DaemonBed::new("watch");
    bed.write_config(&web_service(50.0));
    let daemon = InProcess::start(&bed);
    let target = SocketAddr::new(SERVER_V4.into(), SERVICE_PORT);
    // Traffic during the two samples `--interval` apart.
    let ns = bed.client_ns().to_owned();
    let traffic = std::thread::spawn(move || {
        netns::run_in(&ns, || {
            let mut total = traffic::Report::default();
            for _ in 0..10 {
                let r =
                    traffic::tcp_short(target, 10, Duration::from_secs(3), Duration::from_secs(10));
                total.outcomes.extend(r.outcomes);
                std::thread::sleep(Duration::from_millis(200));
            }
            total
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = bed.cli_ok(&["watch", "--once", "--interval", "1s"]);
    let report = traffic.join().expect("traffic thread");
    assert!(report.failures().is_empty(), "{}", report.failure_summary());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 24, "an 80x24 screen:\n{out}");
    assert!(lines.iter().all(|l| l.chars().count() <= 80), "{out}");
    // TCP's default dispatch; before 5.14 the kernel has no socket dispatch and the daemon
    // serves the service by rewrite (and says so).
    let dispatch = if shifter_tests::socket_dispatch_expected() {
        "socket"
    } else {
        "rewrite"
    };
    assert!(
        out.contains(&format!("web tcp/80 {dispatch}  weight 50.00% green")),
        "{out}"
    );
    let bar_line = lines
        .iter()
        .find(|l| l.contains(" in 1s"))
        .unwrap_or_else(|| panic!("no split line over the 1 s window:\n{out}"));
    assert!(
        bar_line.contains('█') && bar_line.contains('▒'),
        "at 50 % both colours show: {bar_line}"
    );
    assert!(out.contains("web - -> 50.00% config"), "{out}");
    daemon.stop();
}
