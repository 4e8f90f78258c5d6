//! Gradual rollback in a real daemon (in-process, TCP health checks every 100 ms):
//! - `rollout abort` under `rollback = { steps = [30, 10, 0], hold = "1s" }` walks green
//!   down 50 % -> 30 % -> 10 % -> 0, each step held about a second, recorded as events;
//! - green failing its health check during it goes to 0 at once (within fall x interval).

use std::time::{Duration, Instant};

use serde_json::Value;
use shifter_tests::{
    daemon::DaemonBed,
    daemon::InProcess,
    netns::{BLUE_PORT, GREEN_PORT, SERVER_V4, SERVICE_PORT},
    patient,
};

fn config() -> String {
    format!(
        "[[services]]\nname = \"web\"\nport = {SERVICE_PORT}\nblue_port = {BLUE_PORT}\n\
         green_port = {GREEN_PORT}\nweight = 0\n\n[services.health]\nkind = \"tcp\"\n\
         address = \"{SERVER_V4}\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 3\n\n\
         [services.rollout]\nsteps = [50, 100]\nhold = \"1h\"\n\
         rollback = {{ steps = [30, 10, 0], hold = \"1s\" }}\n"
    )
}

fn service(bed: &DaemonBed) -> Value {
    bed.status()["services"][0].clone()
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let limit = patient(limit);
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn started(bed: &DaemonBed) {
    wait_for("green up", Duration::from_secs(10), || {
        (service(bed)["health"]["green"]["status"] == "up").then_some(())
    });
    bed.cli_ok(&["rollout", "start", "web"]);
    assert_eq!(service(bed)["weight_bp"], 5000);
}

#[test]
fn an_abort_rolls_back_through_its_steps() {
    let bed = DaemonBed::new("rb-steps");
    bed.write_config(&config());
    let daemon = InProcess::start(&bed);
    started(&bed);
    let t0 = Instant::now();
    bed.cli_ok(&["rollout", "abort", "web"]);
    let s = service(&bed);
    assert_eq!(s["weight_bp"], 3000, "{s:#}");
    assert_eq!(s["rollout"]["state"], "rolling back");
    let mut seen = vec![(Duration::ZERO, 3000)];
    for next in [1000u64, 0] {
        let at = wait_for(
            &format!("green at {next} bp"),
            Duration::from_secs(5),
            || (service(&bed)["weight_bp"].as_u64() == Some(next)).then(|| t0.elapsed()),
        );
        seen.push((at, next));
    }
    eprintln!("gradual rollback: {seen:?} after the abort (as polled)");
    let t0w = seen[2].0;
    assert!(t0w <= patient(Duration::from_secs(4)), "{t0w:?}");
    // The holds, from the daemon's own event times (polling the CLI is slow in a VM).
    let events: Value = serde_json::from_str(&bed.cli_ok(&["events", "--json"])).expect("events");
    let at = |old: u64, new: u64| -> u64 {
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["old_weight_bp"] == old && e["new_weight_bp"] == new)
            .and_then(|e| e["time_ms"].as_u64())
            .unwrap_or_else(|| panic!("no {old} -> {new} event: {events:#}"))
    };
    let (to10, to0) = (at(3000, 1000), at(1000, 0));
    assert!(
        to0 - to10 >= 900,
        "0 came {} ms after 10 %: the 1 s hold",
        to0 - to10
    );
    assert!(
        seen[1].0 >= Duration::from_millis(900),
        "10 % after {:?}: the 1 s hold",
        seen[1].0
    );
    assert_eq!(service(&bed)["rollout"]["state"], "rolled back");
    let events: Value = serde_json::from_str(&bed.cli_ok(&["events", "--json"])).expect("events");
    let steps: Vec<(u64, u64)> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| Some((e["old_weight_bp"].as_u64()?, e["new_weight_bp"].as_u64()?)))
        .filter(|(a, b)| a != b)
        .collect();
    assert!(
        steps.ends_with(&[(0, 5000), (5000, 3000), (3000, 1000), (1000, 0)]),
        "{steps:?}"
    );
    let history: Value =
        serde_json::from_str(&bed.cli_ok(&["history", "web", "--json"])).expect("history");
    assert_eq!(history["rollouts"][0]["outcome"], "aborted", "{history:#}");
    daemon.stop();
}

#[test]
fn a_health_failure_during_it_goes_to_zero_at_once() {
    let mut bed = DaemonBed::new("rb-health");
    bed.write_config(&config());
    let daemon = InProcess::start(&bed);
    started(&bed);
    bed.cli_ok(&["rollout", "abort", "web"]);
    assert_eq!(service(&bed)["weight_bp"], 3000);
    let green = bed.servers.remove(1);
    assert_eq!(green.port, GREEN_PORT);
    green.stop();
    let killed = Instant::now();
    let after = wait_for("weight 0", Duration::from_secs(3), || {
        (service(&bed)["weight_bp"] == 0).then(|| killed.elapsed())
    });
    eprintln!("green down during a gradual rollback: weight 0 {after:?} after it died");
    // fall 3 x interval 100 ms (+ slack): not the 1 s hold of the next step.
    assert!(after < patient(Duration::from_millis(700)), "{after:?}");
    let s = service(&bed);
    assert_eq!(s["rollout"]["state"], "rolled back");
    assert!(
        s["rollout"]["rolled_back"]
            .as_str()
            .is_some_and(|c| c.contains("health check")),
        "{s:#}"
    );
    daemon.stop();
}
