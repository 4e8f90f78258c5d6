//! The daemon run in-process (`shifter::daemon::run_with`) inside a namespace: the CLI and
//! the control API, authorisation by SO_PEERCRED, and bad requests that must change nothing.
//! Needs root.

use std::{net::SocketAddr, time::Duration};

use shifter_tests::{
    daemon::{Creds, DaemonBed, InProcess},
    netns::{self, BLUE_ID, GREEN_ID, SERVER_V4, SERVICE_PORT},
    traffic,
};

fn short(bed: &DaemonBed, n: usize) -> traffic::Report {
    let target = SocketAddr::new(SERVER_V4.into(), SERVICE_PORT);
    netns::run_in(bed.client_ns(), || {
        traffic::tcp_short(target, n, Duration::from_secs(3), Duration::from_secs(30))
    })
}

fn events(bed: &DaemonBed) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&bed.cli_ok(&["events", "--json"])).expect("events JSON");
    v["events"].as_array().expect("events array").clone()
}

fn weight_of(bed: &DaemonBed) -> u16 {
    let cfgs = bed.pinned_configs();
    assert_eq!(
        cfgs.len(),
        1,
        "one service expected in the pinned maps: {cfgs:?}"
    );
    cfgs.values().next().expect("one").weight
}

#[test]
fn cli_drives_the_in_process_daemon_and_the_data_plane_outlives_it() {
    let bed = DaemonBed::new("dapi-cli");
    bed.write_config(&shifter_tests::daemon::web_service(0.0));
    let daemon = InProcess::start(&bed);

    let status = bed.status();
    assert_eq!(status["services"][0]["name"], "web");
    assert_eq!(status["services"][0]["weight_bp"], 0);
    assert_eq!(status["interfaces"][0]["name"], netns::SERVER_IF);
    bed.programs().assert_exactly_one();

    let r = short(&bed, 20);
    assert!(r.failures().is_empty(), "{}", r.failure_summary());
    assert_eq!(r.count(BLUE_ID), 20, "weight 0: all blue");

    let out = bed.cli_ok(&["set-weight", "web", "100"]);
    assert!(out.contains("0.00% -> 100.00%"), "{out}");
    assert_eq!(
        weight_of(&bed),
        10_000,
        "the kernel's map has the new weight"
    );
    let r = short(&bed, 20);
    assert!(r.failures().is_empty(), "{}", r.failure_summary());
    assert_eq!(r.count(GREEN_ID), 20, "weight 100: all green");

    let out = bed.cli_ok(&["set-weight", "web", "12.34"]);
    assert!(out.contains("100.00% -> 12.34%"), "{out}");
    assert_eq!(weight_of(&bed), 1234);

    let flows: serde_json::Value =
        serde_json::from_str(&bed.cli_ok(&["flows", "web", "--json"])).expect("flows JSON");
    assert_eq!(flows["service"], "web");
    let table = bed.cli_ok(&["status"]);
    assert!(table.contains("web") && table.contains("12.34%"), "{table}");
    let detail = bed.cli_ok(&["status", "web"]);
    assert!(detail.contains("new flows"), "{detail}");

    let ev = events(&bed);
    let ops: Vec<_> = ev.iter().filter(|e| e["cause"] == "operator").collect();
    assert_eq!(ops.len(), 2, "two operator changes recorded: {ev:?}");
    assert_eq!(ops[0]["old_weight_bp"], 0);
    assert_eq!(ops[0]["new_weight_bp"], 10_000);
    assert_eq!(ops[0]["uid"], 0);
    assert_eq!(ops[1]["new_weight_bp"], 1234);

    let metrics = bed.curl("GET", "/metrics", None, None);
    assert_eq!(metrics.0, 200);
    assert!(
        metrics
            .1
            .contains("shifter_weight_basis_points{service=\"web\"} 1234"),
        "{}",
        metrics.1
    );

    daemon.stop();
    // Stopped: the socket is gone, the CLI says so plainly, the data plane still works.
    assert!(!bed.socket.exists(), "socket removed on shutdown");
    let out = bed.cli(&["status"], None);
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("daemon is not running"), "{err}");
    bed.programs().assert_exactly_one();
    assert_eq!(weight_of(&bed), 1234, "weights stay in the kernel");
    let r = short(&bed, 10);
    assert!(
        r.failures().is_empty(),
        "after shutdown: {}",
        r.failure_summary()
    );
    let state = std::fs::read_to_string(bed.state_dir.join("state.json")).expect("state persisted");
    assert!(state.contains("\"web\": 1234"), "{state}");
}

#[test]
fn only_root_and_the_group_may_change_anything() {
    let bed = DaemonBed::new("dapi-auth");
    bed.write_config(&shifter_tests::daemon::web_service(10.0));
    let _daemon = InProcess::start(&bed);
    let before = bed.pinned_configs();
    let ev_before = events(&bed);

    // Outside the group: reads work.
    let out = bed.cli(&["status", "--json"], Some(Creds::nobody()));
    assert!(
        out.status.success(),
        "nobody can read: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bed.cli(&["events"], Some(Creds::nobody()));
    assert!(out.status.success(), "nobody can read events");
    let (code, _) = bed.curl("GET", "/v1/services/web/flows", None, Some(Creds::nobody()));
    assert_eq!(code, 200);

    // ... every change is 403 and changes nothing.
    let out = bed.cli(&["set-weight", "web", "50"], Some(Creds::nobody()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("uid 65534 may not change a weight"), "{err}");
    for (method, path, body) in [
        (
            "PUT",
            "/v1/services/web/weight",
            Some(&br#"{"percent": 50}"#[..]),
        ),
        ("POST", "/v1/detach", None),
        ("POST", "/v1/reload", None),
    ] {
        let (code, body) = bed.curl(method, path, body, Some(Creds::nobody()));
        assert_eq!(code, 403, "{method} {path} as nobody: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    assert_eq!(
        bed.pinned_configs(),
        before,
        "maps unchanged after refused changes"
    );
    // Issue 14: a refusal is recorded as an event naming the uid; nothing else is.
    let (refusals, others): (Vec<serde_json::Value>, Vec<serde_json::Value>) = events(&bed)
        .into_iter()
        .partition(|e| e["cause"] == "refused");
    assert_eq!(others, ev_before, "no weight event for refused changes");
    assert_eq!(
        refusals.len(),
        4,
        "one event per refused change: {refusals:?}"
    );
    assert!(
        refusals
            .iter()
            .all(|e| e["uid"] == 65534 && e["old_weight_bp"].is_null()),
        "{refusals:?}"
    );
    bed.programs().assert_exactly_one();

    // A member of the group (primary or supplementary) may change.
    let out = bed.cli(&["set-weight", "web", "25"], Some(Creds::member_primary()));
    assert!(
        out.status.success(),
        "primary-group member: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(weight_of(&bed), 2500);
    let out = bed.cli(
        &["set-weight", "web", "30"],
        Some(Creds::member_supplementary()),
    );
    assert!(
        out.status.success(),
        "supplementary-group member: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(weight_of(&bed), 3000);
    let ev = events(&bed);
    let last = ev.last().expect("event");
    assert_eq!(last["uid"], 65534);
    assert_eq!(last["cause"], "operator");
    assert_eq!(last["old_weight_bp"], 2500);
    assert_eq!(last["new_weight_bp"], 3000);
}

#[test]
fn bad_requests_get_4xx_and_change_nothing() {
    let bed = DaemonBed::new("dapi-bad");
    bed.write_config(&shifter_tests::daemon::web_service(5.0));
    let _daemon = InProcess::start(&bed);
    let before = bed.pinned_configs();
    let ev_before = events(&bed);
    let big = format!("{{\"percent\": 1, \"pad\": \"{}\"}}", "x".repeat(4096));
    // (method, path, body, expected status, expected error text)
    type Case<'a> = (&'a str, &'a str, Option<&'a [u8]>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "PUT",
            "/v1/services/nope/weight",
            Some(br#"{"percent": 50}"#),
            404,
            "unknown service \"nope\"",
        ),
        ("GET", "/v1/services/nope", None, 404, "unknown service"),
        (
            "GET",
            "/v1/services/nope/flows",
            None,
            404,
            "unknown service",
        ),
        (
            "PUT",
            "/v1/services/web/weight",
            Some(br#"{"percent": 100.01}"#),
            400,
            "percent: 100.01 is outside 0..=100",
        ),
        (
            "PUT",
            "/v1/services/web/weight",
            Some(br#"{"percent": 101}"#),
            400,
            "is outside 0..=100",
        ),
        (
            "PUT",
            "/v1/services/web/weight",
            Some(br#"{"percent": -1}"#),
            400,
            "is negative",
        ),
        (
            "PUT",
            "/v1/services/web/weight",
            Some(br#"{"percent": 12.345}"#),
            400,
            "percent: 12.345 has more than two decimals",
        ),
        (
            "PUT",
            "/v1/services/web/weight",
            Some(br#"{"percent": "50"}"#),
            400,
            "is not a number",
        ),
        (
            "PUT",
            "/v1/services/web/weight",
            Some(b"{percent: 50"),
            400,
            "invalid JSON body",
        ),
        (
            "PUT",
            "/v1/services/web/weight",
            Some(b""),
            400,
            "invalid JSON body",
        ),
        (
            "PUT",
            "/v1/services/web/weight",
            Some(br#"{"percent": 50, "x": 1}"#),
            400,
            "unknown field",
        ),
        (
            "PUT",
            "/v1/services/web/weight",
            Some(big.as_bytes()),
            413,
            "larger than 1024 bytes",
        ),
        (
            "GET",
            "/v1/services/web/weight",
            None,
            405,
            "method GET is not allowed",
        ),
        (
            "POST",
            "/v1/services/web/weight",
            Some(br#"{"percent": 50}"#),
            405,
            "method POST is not allowed",
        ),
        ("DELETE", "/v1/status", None, 405, "not allowed"),
        ("GET", "/v1/detach", None, 405, "not allowed"),
        ("GET", "/v1/nothing", None, 404, "no endpoint /v1/nothing"),
        (
            "GET",
            "/v1/status?verbose=1",
            None,
            400,
            "unknown query parameter \"verbose\"",
        ),
        (
            "GET",
            "/v1/events?since=abc",
            None,
            400,
            "since: \"abc\" is not an event number",
        ),
    ];
    for (method, path, body, want, msg) in &cases {
        let (code, text) = bed.curl(method, path, *body, None);
        assert_eq!(code, *want, "{method} {path}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: error body is not JSON ({e}): {text}"));
        let err = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no error field: {text}"));
        assert!(
            err.contains(msg),
            "{method} {path}: want {msg:?} in {err:?}"
        );
        assert_eq!(
            bed.pinned_configs(),
            before,
            "{method} {path} changed the maps"
        );
    }
    assert_eq!(events(&bed), ev_before, "bad requests recorded no event");
    // The CLI refuses bad weights before asking, with one line and exit 64.
    let out = bed.cli(&["set-weight", "web", "12.345"], None);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "shifter: PERCENT: 12.345 has more than two decimals"
    );
    let out = bed.cli(&["set-weight", "nope", "1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "shifter: unknown service \"nope\""
    );
    assert_eq!(bed.pinned_configs(), before);
}
