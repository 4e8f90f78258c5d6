//! `shifter rollout start --wait` and `shifter rollout status --wait` against the real daemon
//! (in-process, in the server namespace, with TCP health checks of real echo servers): exit
//! 0 for a completed rollout, 5 when `--timeout` passes, 3 after an abort, and 2 when green
//! dies during the rollout and the health check rolls it back.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use shifter_tests::{
    daemon::{DaemonBed, InProcess, shifter_bin},
    netns::{BLUE_PORT, GREEN_PORT, SERVER_V4, SERVICE_PORT},
    patient,
};

fn web() -> String {
    format!(
        "[[services]]\nname = \"web\"\nport = {SERVICE_PORT}\nblue_port = {BLUE_PORT}\n\
         green_port = {GREEN_PORT}\nweight = 0\n\n[services.health]\nkind = \"tcp\"\n\
         address = \"{SERVER_V4}\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 3\n\n\
         [services.rollout]\nsteps = [50, 100]\nhold = \"300ms\"\n"
    )
}

fn code(bed: &DaemonBed, args: &[&str]) -> (Option<i32>, String, String) {
    let out = bed.cli(args, None);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let limit = patient(limit);
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn service(bed: &DaemonBed) -> serde_json::Value {
    bed.status()["services"][0].clone()
}

#[test]
fn wait_exit_codes_for_completed_timed_out_aborted_and_rolled_back() {
    let mut bed = DaemonBed::new("wait");
    bed.write_config(&web());
    let daemon = InProcess::start(&bed);
    wait_for("green up", Duration::from_secs(10), || {
        service(&bed)["health"]["green"]["status"] == "up"
    });

    // Completed: exit 0, plain progress lines (stdout is not a terminal here).
    let (c, out, err) = code(
        &bed,
        &["rollout", "start", "web", "--wait", "--timeout", "30s"],
    );
    assert_eq!(c, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(!out.contains('\r'), "no redrawing off a terminal: {out:?}");
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("web: rollout 1 completed") && last.contains("last gate: step 2 passed"),
        "{out}"
    );
    assert!(out.contains("step 1/2 (50.00%)"), "{out}");
    let (c, out, _) = code(&bed, &["rollout", "status", "web", "--wait"]);
    assert_eq!(c, Some(0), "status --wait of a completed rollout: {out}");
    // On a terminal (script(1) gives it one) the line is redrawn in place.
    let tty = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} --socket {} rollout status web --wait",
            shifter_bin().display(),
            bed.socket.display()
        ))
        .arg("/dev/null")
        .output()
        .expect("script(1) from util-linux");
    let text = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(tty.status.code(), Some(0), "{text}");
    assert!(
        text.contains("\r\x1b[2Kweb: rollout 1 completed"),
        "{text:?}"
    );

    // Timed out: exit 5, the rollout goes on; then aborted: exit 3.
    bed.cli_ok(&["set-weight", "web", "0"]);
    let args = [
        "rollout",
        "start",
        "web",
        "--steps",
        "10,100",
        "--hold",
        "1h",
        "--wait",
        "--timeout",
        "1s",
    ];
    let (c, out, err) = code(&bed, &args);
    assert_eq!(c, Some(5), "stdout: {out}\nstderr: {err}");
    assert!(err.contains("has not ended"), "{err}");
    assert_eq!(service(&bed)["rollout"]["state"], "running");
    let (c, out, _) = code(&bed, &["rollout", "status", "web"]);
    assert_eq!(c, Some(0));
    assert!(
        out.starts_with("web: rollout 2 running step 1/2 (10.00%)"),
        "{out}"
    );
    bed.cli_ok(&["rollout", "abort", "web"]);
    let (c, _, err) = code(&bed, &["rollout", "status", "web", "--wait"]);
    assert_eq!(c, Some(3), "{err}");
    assert!(err.contains("rollout 2 of web aborted"), "{err}");

    // Rolled back: green dies while `start --wait` follows the rollout.
    let mut child = Command::new(shifter_bin())
        .arg("--socket")
        .arg(&bed.socket)
        .args([
            "rollout", "start", "web", "--steps", "50,100", "--hold", "1h", "--wait",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shifter rollout start --wait");
    wait_for("the third rollout to run", Duration::from_secs(10), || {
        service(&bed)["rollout"]["state"] == "running"
    });
    let green = bed.servers.remove(1);
    green.stop();
    let killed = Instant::now();
    let limit = patient(Duration::from_secs(10));
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            killed.elapsed() < limit,
            "--wait did not end {limit:?} after green died"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "stderr: {err}");
    assert!(
        err.contains("rollout 3 of web rolled back") && err.contains("health check"),
        "{err}"
    );
    assert_eq!(service(&bed)["weight_bp"], 0);
    let (c, _, _) = code(&bed, &["rollout", "status", "web", "--wait"]);
    assert_eq!(c, Some(2));
    eprintln!("green killed: --wait exited 2 after {:?}", killed.elapsed());
    daemon.stop();
}
