//! `[[daemon.grant]]` against the real daemon (in-process, the server namespace): each verb
//! (weight, rollout, promote, rollback, detach) is allowed for the uid or group a grant
//! names, on the services it names, and refused (403) for another uid or another service;
//! a refusal changes nothing in the kernel's maps and records an event naming the uid.
//! Clients run as real non-root uids (setresuid in the child, see `daemon::Creds`).
//! With `daemon.read_access = "granted"`, reads (status, flows, events, history, metrics)
//! need a `read` grant too and answers are filtered to the readable services.
//! Also: `check-config` exits 64 on a bad grant.

use serde_json::Value;
use shifter_tests::{
    daemon::{Creds, DaemonBed, InProcess, shifter_bin},
    netns::{BLUE_PORT, GREEN_PORT, SERVICE_PORT},
};

const ALICE: u32 = 1001;
const BOB: u32 = 1002;
const CAROL: u32 = 1003;
const DAVE: u32 = 1004;
/// A group only dave has (as a supplementary group).
const DEPLOY: u32 = 2000;

fn user(uid: u32) -> Creds {
    Creds {
        uid,
        gid: uid,
        groups: vec![],
    }
}

fn dave() -> Creds {
    Creds {
        uid: DAVE,
        gid: DAVE,
        groups: vec![DEPLOY],
    }
}

fn services() -> String {
    format!(
        "[[services]]\nname = \"web\"\nport = {SERVICE_PORT}\nblue_port = {BLUE_PORT}\n\
         green_port = {GREEN_PORT}\nweight = 0\n[services.rollout]\nsteps = [10, 100]\nhold = \"1h\"\n\n\
         [[services]]\nname = \"api\"\nport = {}\nblue_port = 9081\ngreen_port = 9082\nweight = 0\n",
        SERVICE_PORT + 1
    )
}

fn grants() -> String {
    format!(
        "[[daemon.grant]]\nuid = {ALICE}\nservices = [\"web\"]\nverbs = [\"weight\", \"rollout\"]\n\n\
         [[daemon.grant]]\nuid = {BOB}\nservices = [\"web\"]\nverbs = [\"promote\", \"rollback\", \"read\"]\n\n\
         [[daemon.grant]]\nuid = {CAROL}\nservices = [\"*\"]\nverbs = [\"detach\"]\n\n\
         [[daemon.grant]]\ngroup = {DEPLOY}\nservices = [\"api\"]\nverbs = [\"weight\"]\n\n"
    )
}

/// The config with the grants inside `[daemon]` (before `[[interfaces]]`).
fn config(bed: &DaemonBed) -> String {
    let text = bed.config_text(&services());
    let (daemon, rest) = text.split_once("[[interfaces]]").expect("interfaces");
    format!("{daemon}{}[[interfaces]]{rest}", grants())
}

fn events(bed: &DaemonBed) -> Vec<Value> {
    let v: Value = serde_json::from_str(&bed.cli_ok(&["events", "--json"])).expect("events");
    v["events"].as_array().cloned().unwrap_or_default()
}

/// Green's weight and blue port of `name` in the kernel's map.
fn kernel(bed: &DaemonBed, name: &str) -> (u16, u16) {
    let status = bed.status();
    let slot = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["slot"].as_u64())
        .expect("slot") as u32;
    let c = bed.pinned_configs()[&slot];
    (c.weight, c.blue_port)
}

/// A request as `creds` that must be refused: 403, the maps and the non-refusal events
/// unchanged, and one more refusal event naming the uid.
fn refused(bed: &DaemonBed, creds: Creds, method: &str, path: &str, body: Option<&str>) {
    let maps = bed.pinned_configs();
    let before = events(bed);
    let uid = creds.uid;
    let (code, text) = bed.curl(method, path, body.map(str::as_bytes), Some(creds));
    assert_eq!(code, 403, "{method} {path} as uid {uid}: {text}");
    assert!(text.contains(&format!("uid {uid} may not")), "{text}");
    assert_eq!(
        bed.pinned_configs(),
        maps,
        "{method} {path} as {uid} changed the maps"
    );
    let after = events(bed);
    assert_eq!(after.len(), before.len() + 1, "one event for the refusal");
    assert_eq!(&after[..before.len()], &before[..]);
    let ev = after.last().expect("event");
    assert_eq!(ev["cause"], "refused", "{ev}");
    assert_eq!(ev["uid"], uid, "{ev}");
    assert!(
        ev["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("refused: uid {uid} may not"))),
        "{ev}"
    );
}

fn allowed(bed: &DaemonBed, creds: Creds, method: &str, path: &str, body: Option<&str>) -> Value {
    let uid = creds.uid;
    let (code, text) = bed.curl(method, path, body.map(str::as_bytes), Some(creds));
    assert_eq!(code, 200, "{method} {path} as uid {uid}: {text}");
    serde_json::from_str(&text).expect("JSON answer")
}

#[test]
fn each_verb_is_allowed_for_its_grantee_and_refused_for_others() {
    let bed = DaemonBed::new("grants");
    std::fs::write(&bed.config_path, config(&bed)).expect("write config");
    let daemon = InProcess::start(&bed);
    let weight = |w: u32| format!("{{\"percent\": {w}}}");

    // read: open to every peer that can connect, granted or not.
    for c in [user(ALICE), user(BOB), Creds::nobody()] {
        let uid = c.uid;
        let (code, _) = bed.curl("GET", "/v1/services/web", None, Some(c));
        assert_eq!(code, 200, "uid {uid} reads");
    }

    // weight: alice on web; not bob, not alice on api; the deploy group on api, not web.
    refused(
        &bed,
        user(BOB),
        "PUT",
        "/v1/services/web/weight",
        Some(&weight(50)),
    );
    refused(
        &bed,
        user(ALICE),
        "PUT",
        "/v1/services/api/weight",
        Some(&weight(50)),
    );
    refused(
        &bed,
        dave(),
        "PUT",
        "/v1/services/web/weight",
        Some(&weight(50)),
    );
    let w = allowed(
        &bed,
        user(ALICE),
        "PUT",
        "/v1/services/web/weight",
        Some(&weight(50)),
    );
    assert_eq!(w["event"]["uid"], ALICE);
    assert_eq!(kernel(&bed, "web").0, 5000);
    allowed(
        &bed,
        dave(),
        "PUT",
        "/v1/services/api/weight",
        Some(&weight(20)),
    );
    assert_eq!(kernel(&bed, "api").0, 2000);

    // rollback: bob; not alice.
    refused(&bed, user(ALICE), "POST", "/v1/services/web/rollback", None);
    allowed(&bed, user(BOB), "POST", "/v1/services/web/rollback", None);
    assert_eq!(kernel(&bed, "web").0, 0);

    // rollout (start, pause, abort, blue-green): alice; not bob.
    refused(
        &bed,
        user(BOB),
        "POST",
        "/v1/services/web/rollout/start",
        None,
    );
    refused(&bed, user(BOB), "POST", "/v1/services/web/blue-green", None);
    let r = allowed(
        &bed,
        user(ALICE),
        "POST",
        "/v1/services/web/rollout/start",
        None,
    );
    assert_eq!(r["rollout"]["state"], "running", "{r}");
    assert_eq!(kernel(&bed, "web").0, 1000);
    refused(
        &bed,
        user(BOB),
        "POST",
        "/v1/services/web/rollout/pause",
        None,
    );
    allowed(
        &bed,
        user(ALICE),
        "POST",
        "/v1/services/web/rollout/pause",
        None,
    );
    allowed(
        &bed,
        user(ALICE),
        "POST",
        "/v1/services/web/rollout/abort",
        None,
    );
    assert_eq!(kernel(&bed, "web").0, 0);

    // promote: bob; not alice. Green must be at 100 % first (alice's weight grant).
    allowed(
        &bed,
        user(ALICE),
        "PUT",
        "/v1/services/web/weight",
        Some(&weight(100)),
    );
    refused(&bed, user(ALICE), "POST", "/v1/services/web/promote", None);
    assert_eq!(kernel(&bed, "web"), (10_000, BLUE_PORT));
    allowed(&bed, user(BOB), "POST", "/v1/services/web/promote", None);
    assert_eq!(kernel(&bed, "web"), (0, GREEN_PORT), "roles swapped");

    // The socket group keeps every right beside the grants: weight on a service no grant
    // of its members names, a rollout verb, reload.
    let member = Creds::member_supplementary();
    allowed(
        &bed,
        member.clone(),
        "PUT",
        "/v1/services/api/weight",
        Some(&weight(30)),
    );
    assert_eq!(kernel(&bed, "api").0, 3000);
    allowed(
        &bed,
        member.clone(),
        "POST",
        "/v1/services/api/rollback",
        None,
    );
    assert_eq!(kernel(&bed, "api").0, 0);
    allowed(&bed, member, "POST", "/v1/reload", None);

    // reload is for root and the group only, whatever the grants.
    refused(&bed, user(CAROL), "POST", "/v1/reload", None);

    // detach: carol (services = ["*"]); not alice.
    refused(&bed, user(ALICE), "POST", "/v1/detach", None);
    assert!(bed.pin_dir.exists());
    let d = allowed(&bed, user(CAROL), "POST", "/v1/detach", None);
    assert_eq!(d["pins_removed"], true, "{d}");
    assert!(
        !bed.pin_dir
            .join(shifter_common::MAP_SERVICE_CONFIG)
            .exists()
    );
    daemon.stop();
}

/// With `read_access = "granted"`, reading needs a `read` grant too: bob (read on web) reads
/// web and nothing else, every daemon-wide answer filtered to web; alice (weight and rollout
/// on web, no read) reads nothing but still changes web's weight; the socket group reads
/// everything. Each refused read is a 403 and an event naming the uid.
#[test]
fn granted_read_access_shows_each_peer_only_its_services() {
    let bed = DaemonBed::new("grants-read");
    let text = config(&bed).replacen("[daemon]\n", "[daemon]\nread_access = \"granted\"\n", 1);
    std::fs::write(&bed.config_path, text).expect("write config");
    let daemon = InProcess::start(&bed);
    bed.cli_ok(&["set-weight", "api", "10"]);
    bed.cli_ok(&["set-weight", "web", "20"]);
    bed.cli_ok(&["rollout", "start", "web"]);
    bed.cli_ok(&["rollout", "abort", "web"]);

    let status = allowed(&bed, user(BOB), "GET", "/v1/status", None);
    let names: Vec<&str> = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["web"], "bob's status: {status}");
    allowed(&bed, user(BOB), "GET", "/v1/services/web", None);
    allowed(&bed, user(BOB), "GET", "/v1/services/web/flows", None);
    allowed(&bed, user(BOB), "GET", "/v1/services/web/history", None);
    let evs = allowed(&bed, user(BOB), "GET", "/v1/events", None);
    let evs = evs["events"].as_array().expect("events");
    assert!(
        !evs.is_empty() && evs.iter().all(|e| e["service"] == "web"),
        "bob's events: {evs:?}"
    );
    let all = events(&bed);
    assert!(all.iter().any(|e| e["service"] == "api"), "root sees api");
    let history = allowed(&bed, user(BOB), "GET", "/v1/history", None);
    let rollouts = history["rollouts"].as_array().expect("rollouts");
    assert!(
        !rollouts.is_empty() && rollouts.iter().all(|r| r["service"] == "web"),
        "{history}"
    );
    refused(&bed, user(BOB), "GET", "/v1/services/api", None);
    refused(&bed, user(BOB), "GET", "/v1/services/api/flows", None);
    refused(&bed, user(BOB), "GET", "/v1/services/api/history", None);
    refused(&bed, user(BOB), "GET", "/metrics", None);

    for path in [
        "/v1/status",
        "/v1/events",
        "/v1/history",
        "/v1/services/web",
    ] {
        refused(&bed, user(ALICE), "GET", path, None);
        refused(&bed, Creds::nobody(), "GET", path, None);
    }
    allowed(
        &bed,
        user(ALICE),
        "PUT",
        "/v1/services/web/weight",
        Some("{\"percent\": 30}"),
    );
    assert_eq!(kernel(&bed, "web").0, 3000, "changes keep their grants");

    let member = Creds::member_supplementary();
    let status = allowed(&bed, member.clone(), "GET", "/v1/status", None);
    assert_eq!(status["services"].as_array().map(Vec::len), Some(2));
    let (code, text) = bed.curl("GET", "/metrics", None, Some(member));
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("service=\"api\""), "{text}");
    daemon.stop();
}

#[test]
fn check_config_exits_64_on_a_bad_grant() {
    let bed = DaemonBed::new("grants-bad");
    let good = config(&bed);
    std::fs::write(&bed.config_path, &good).expect("write");
    let out = std::process::Command::new(shifter_bin())
        .arg("check-config")
        .arg(&bed.config_path)
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (from, to, want) in [
        (
            "verbs = [\"detach\"]",
            "verbs = [\"destroy\"]",
            "daemon.grant[2].verbs: \"destroy\" is not a verb",
        ),
        (
            "services = [\"api\"]",
            "services = [\"db\"]",
            "daemon.grant[3].services: \"db\" is not a configured service",
        ),
        (
            "socket_mode = \"0666\"",
            "socket_mode = \"0660\"",
            "cannot connect to the socket",
        ),
        (
            "[daemon]\n",
            "[daemon]\nread_access = \"grants\"\n",
            "daemon.read_access: \"grants\" is neither \"open\" nor \"granted\"",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        std::fs::write(&bed.config_path, good.replacen(from, to, 1)).expect("write");
        let out = std::process::Command::new(shifter_bin())
            .arg("check-config")
            .arg(&bed.config_path)
            .output()
            .expect("check-config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{to}: {err}");
        assert!(err.contains(want), "{to}: want {want:?} in {err}");
    }
}
