//! Rollout history with the daemon as a real process: a canary that completes and is
//! promoted, then one that is aborted, are both in `shifter history` and in
//! `GET /v1/services/web/history`, with their steps, gate results, ends and causes, and
//! still there, unchanged, after the daemon was killed (SIGKILL) and started again.

use std::time::{Duration, Instant};

use serde_json::Value;
use shifter_tests::{
    daemon::{DaemonBed, Process},
    netns::{BLUE_PORT, GREEN_PORT, SERVICE_PORT},
    patient,
};

fn web(rollout: &str) -> String {
    format!(
        "[[services]]\nname = \"web\"\nport = {SERVICE_PORT}\nblue_port = {BLUE_PORT}\n\
         green_port = {GREEN_PORT}\nweight = 0\n\n[services.rollout]\n{rollout}\n"
    )
}

fn rollout_state(bed: &DaemonBed) -> String {
    bed.status()["services"][0]["rollout"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn wait_state(bed: &DaemonBed, want: &str) {
    let limit = patient(Duration::from_secs(20));
    let start = Instant::now();
    loop {
        let got = rollout_state(bed);
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "rollout still {got:?} after {limit:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn history(bed: &DaemonBed) -> Value {
    serde_json::from_str(&bed.cli_ok(&["history", "web", "--json"])).expect("history JSON")
}

#[test]
fn history_of_completed_and_aborted_rollouts_survives_a_killed_daemon() {
    let bed = DaemonBed::new("history");
    bed.write_config(&web("steps = [50, 100]\nhold = \"300ms\""));
    let mut first = Process::start(&bed);

    let empty = history(&bed);
    assert_eq!(empty["rollouts"], serde_json::json!([]), "{empty}");

    bed.cli_ok(&["rollout", "start", "web"]);
    wait_state(&bed, "completed");
    bed.cli_ok(&["promote", "web"]);
    bed.cli_ok(&[
        "rollout", "start", "web", "--steps", "10,100", "--hold", "1h",
    ]);
    bed.cli_ok(&["rollout", "abort", "web"]);

    let before = history(&bed);
    let rollouts = before["rollouts"].as_array().expect("rollouts").clone();
    assert_eq!(rollouts.len(), 2, "{before:#}");
    let (done, aborted) = (&rollouts[0], &rollouts[1]);
    assert_eq!(done["outcome"], "promoted", "{done:#}");
    assert_eq!(done["kind"], "canary");
    assert_eq!(done["steps_bp"], serde_json::json!([5000, 10000]));
    assert_eq!(done["started_by_uid"], 0);
    let kinds: Vec<&str> = done["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        ["start", "step-passed", "step-passed", "operator"],
        "{done:#}"
    );
    let gates: Vec<&Value> = done["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["kind"] == "step-passed")
        .collect();
    assert_eq!(gates[0]["step"], 1);
    assert_eq!(gates[1]["step"], 2);
    assert!(
        gates[1]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("step 2 passed")),
        "{done:#}"
    );
    assert!(done["ended_ms"].as_u64() >= done["started_ms"].as_u64());
    assert!(
        done["end_cause"]
            .as_str()
            .is_some_and(|c| c.contains("promote")),
        "{done:#}"
    );
    assert_eq!(aborted["outcome"], "aborted", "{aborted:#}");
    assert_eq!(aborted["steps_bp"], serde_json::json!([1000, 10000]));
    assert!(aborted["id"].as_u64() > done["id"].as_u64());

    // The same through the API, as curl sees it, and for every service.
    let (code, body) = bed.curl("GET", "/v1/services/web/history", None, None);
    assert_eq!(code, 200, "{body}");
    let api: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(api, before);
    let (code, body) = bed.curl("GET", "/v1/history", None, None);
    assert_eq!(code, 200, "{body}");
    let all: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(all["rollouts"], before["rollouts"]);
    let (code, body) = bed.curl("GET", "/v1/services/nope/history", None, None);
    assert_eq!(code, 404, "{body}");
    let text = bed.cli_ok(&["history"]);
    assert!(
        text.contains("promoted") && text.contains("aborted"),
        "{text}"
    );

    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(10));
    let _second = Process::start(&bed);
    let after = history(&bed);
    assert_eq!(
        after, before,
        "the history changed across a killed daemon's restart"
    );
    let text = bed.cli_ok(&["history", "web"]);
    assert!(
        text.contains("rollout 1 of web") && text.contains("step 2 passed"),
        "{text}"
    );
}
