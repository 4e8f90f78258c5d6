//! The package under a real systemd: install, start, rights, restart and stop under traffic,
//! a crash and a watchdog kill, reload, a bad configuration and a refused privilege.
//!
//! These tests change the machine they run on (apt install, systemctl, users, nginx), so they
//! are ignored by a normal `cargo test` and run only inside the systemd guest of
//! `cargo xtask vm-test --systemd` (a Debian root filesystem with systemd as PID 1), which
//! passes `--ignored --test-threads=1`. They run in name order there; each one first puts
//! the unit into the state it needs, so any one of them can also run alone.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Where the harness puts the package in the guest.
const DEB: &str = "/root/shifter.deb";
const CONFIG: &str = "/etc/shifter/shifter.toml";
const SERVICE: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 80);
/// systemd's own deadlines (start, watchdog) already bound every wait below; these bound the
/// test's polling on a slow TCG guest.
const SETTLE: Duration = Duration::from_secs(90);

/// Runs `cmd` with bash; returns (exit status, stdout + stderr).
fn sh(cmd: &str) -> (i32, String) {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("running `{cmd}`: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Runs `cmd` and panics with its output unless it exits 0.
fn must(cmd: &str) -> String {
    let (rc, out) = sh(cmd);
    assert_eq!(rc, 0, "`{cmd}` exited {rc}:\n{out}");
    out
}

fn unit_property(name: &str) -> String {
    must(&format!("systemctl show -p {name} --value shifter.service"))
        .trim()
        .to_owned()
}

fn journal() -> String {
    sh("journalctl -u shifter.service --no-pager -o cat").1
}

/// Polls `f` until it holds or `SETTLE` passes.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < SETTLE,
            "{what}: not within {SETTLE:?}\njournal:\n{}",
            journal()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The package installed (once) and the nginx backends answering "blue" on 8081 and "green"
/// on 8082, with the unit stopped, its start counter reset and the default configuration.
fn fresh(weight: &str) {
    if sh("dpkg -s shifter | grep -q '^Status: install ok installed'").0 != 0 {
        // As a user would: apt resolves the dependencies.
        must(&format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y {DEB}"
        ));
    }
    must(
        r#"cat >/etc/nginx/sites-enabled/default <<'EOF'
server { listen 127.0.0.1:8081; keepalive_timeout 600s; keepalive_requests 1000000; location / { return 200 "blue\n"; } }
server { listen 127.0.0.1:8082; keepalive_timeout 600s; keepalive_requests 1000000; location / { return 200 "green\n"; } }
EOF
systemctl restart nginx"#,
    );
    sh(
        "systemctl stop shifter.service; rm -rf /etc/systemd/system/shifter.service.d; systemctl daemon-reload; systemctl reset-failed shifter.service",
    );
    write_config(&format!(
        "[daemon]\nsocket_group = \"shifter\"\n\n[[interfaces]]\nname = \"lo\"\n\n\
         [[services]]\nname = \"web\"\nport = 80\nblue_port = 8081\ngreen_port = 8082\nweight = {weight}\n"
    ));
    // Weights survive restarts (state file, pinned maps): start each scenario from none.
    sh("shifter detach; rm -rf /var/lib/shifter/*");
}

fn write_config(text: &str) {
    std::fs::write(CONFIG, text).expect("writing the configuration");
}

/// A drop-in for the unit (e.g. a shorter watchdog), then daemon-reload.
fn drop_in(name: &str, text: &str) {
    std::fs::create_dir_all("/etc/systemd/system/shifter.service.d").expect("drop-in dir");
    std::fs::write(
        format!("/etc/systemd/system/shifter.service.d/{name}.conf"),
        format!("[Service]\n{text}\n"),
    )
    .expect("drop-in");
    must("systemctl daemon-reload");
}

/// Which backend answered one HTTP/1.1 request on `conn` ("blue" or "green").
fn request(conn: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    conn.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: shifter-test\r\n\r\n")?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).trim().to_owned())
}

fn connect() -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect_timeout(&SERVICE, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(BufReader::new(s))
}

/// One new connection, one request: the backend that answered.
fn one_request() -> std::io::Result<String> {
    request(&mut connect()?)
}

/// Green's share of `n` new connections, in percent; panics on any failure.
fn green_share(n: usize) -> f64 {
    let mut green = 0;
    for i in 0..n {
        match one_request() {
            Ok(b) if b == "green" => green += 1,
            Ok(b) if b == "blue" => {}
            other => panic!("connection {i} of {n}: {other:?}\njournal:\n{}", journal()),
        }
    }
    100.0 * f64::from(green) / n as f64
}

/// Traffic while the unit is restarted, stopped or killed: new connections in a loop, and
/// long-lived keep-alive connections that each make a request every 100 ms and must keep
/// their backend.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Traffic {
    fn start(long_lived: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        {
            let (stop, ok) = (stop.clone(), ok.clone());
            threads.push(std::thread::spawn(move || {
                let mut problems = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match one_request() {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            problems.push(format!("new connection: {e}"));
                            0
                        }
                    };
                    std::thread::sleep(Duration::from_millis(20));
                }
                problems
            }));
        }
        for i in 0..long_lived {
            let (stop, ok) = (stop.clone(), ok.clone());
            threads.push(std::thread::spawn(move || {
                let mut conn = match connect() {
                    Ok(c) => c,
                    Err(e) => return vec![format!("long-lived {i}: connect: {e}")],
                };
                let first = match request(&mut conn) {
                    Ok(b) => b,
                    Err(e) => return vec![format!("long-lived {i}: first request: {e}")],
                };
                while !stop.load(Ordering::Relaxed) {
                    match request(&mut conn) {
                        Ok(b) if b == first => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(b) => return vec![format!("long-lived {i}: moved {first} -> {b}")],
                        Err(e) => return vec![format!("long-lived {i}: {e}")],
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Vec::new()
            }));
        }
        Self { stop, ok, threads }
    }

    /// Stops the traffic; panics with every failure seen, else returns the successful requests.
    fn finish(self, during: &str) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let problems: Vec<String> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("traffic thread"))
            .collect();
        let ok = self.ok.load(Ordering::Relaxed);
        assert!(
            problems.is_empty(),
            "{during}: {} failures ({ok} requests ok): {problems:#?}",
            problems.len()
        );
        assert!(ok > 0, "{during}: no request at all succeeded");
        ok
    }
}

#[test]
#[ignore = "changes the machine: runs in the systemd guest of `cargo xtask vm-test --systemd`"]
fn s1_install_start_rights() {
    fresh("0");
    assert_eq!(
        sh("systemctl is-enabled shifter.service").1.trim(),
        "disabled",
        "the package leaves the unit disabled until the operator configured it (README)"
    );
    must("getent group shifter");
    let started = Instant::now();
    must("systemctl start shifter.service");
    eprintln!("systemctl start returned after {:?}", started.elapsed());
    // Type=notify: start returns only after READY=1, so the daemon is serving already.
    assert_eq!(unit_property("ActiveState"), "active");
    let status = unit_property("StatusText");
    assert!(!status.is_empty(), "no STATUS= line from the daemon");
    eprintln!("STATUS: {status}");
    must("test -S /run/shifter/shifter.sock");
    let mode = must("stat -c '%a %G' /run/shifter/shifter.sock");
    assert_eq!(mode.trim(), "660 shifter", "control socket mode and group");
    let pins = must("ls /sys/fs/bpf/shifter");
    assert!(pins.contains("link-sockops"), "pins: {pins}");
    assert!(green_share(20) == 0.0, "weight 0 sends everything to blue");
    let status = must("shifter status");
    if shifter_tests::socket_dispatch_expected() {
        // nginx listened before the daemon: each backend's listener was copied from nginx
        // (pidfd_getfd: the unit's CAP_SYS_PTRACE and syscall filter) or registered in the
        // kernel.
        assert!(
            status.contains("socket 1/1 listening"),
            "socket dispatch with both predating listeners registered:\n{status}\n{}",
            journal()
        );
    } else {
        // Before 5.14 the daemon says why and serves the TCP service by rewrite.
        let reason = status
            .lines()
            .find_map(|l| l.strip_prefix("socket dispatch: unavailable"));
        shifter_tests::assert_socket_dispatch_unavailable(reason, "systemd start");
        let json: serde_json::Value =
            serde_json::from_str(&must("shifter status --json")).expect("status --json");
        assert_eq!(json["services"][0]["dispatch"], "rewrite", "{json}");
    }

    sh("useradd -M -G shifter alice; useradd -M bob");
    must("runuser -u alice -- shifter set-weight web 100");
    assert_eq!(green_share(20), 100.0, "alice (group shifter) set 100 %");
    let (rc, out) = sh("runuser -u bob -- shifter set-weight web 0");
    assert_ne!(rc, 0, "bob (not in the group) must be refused: {out}");
    assert_eq!(green_share(20), 100.0, "a refused request changes nothing");
    // Mode 0660: bob may not even connect, so not read either.
    let (rc, out) = sh("runuser -u bob -- shifter status");
    assert_ne!(rc, 0, "bob cannot connect to a 0660 socket: {out}");
    assert!(out.contains("permission denied"), "a clear reason: {out}");
    must("runuser -u alice -- shifter status >/dev/null");

    // With the daemon stopped, status and detach go to the pins directly: root only, and a
    // non-root user is told so (not `os error 13`) and changes nothing.
    must("systemctl stop shifter.service");
    for verb in ["status", "detach"] {
        let (rc, out) = sh(&format!("runuser -u alice -- shifter {verb}"));
        assert_ne!(rc, 0, "offline {verb} by a non-root user: {out}");
        assert!(
            out.contains("only be read and changed by root") && !out.contains("os error"),
            "offline {verb} says it needs root: {out}"
        );
    }
    must("test -e /sys/fs/bpf/shifter/link-sockops");
    must("systemctl start shifter.service");

    let journal = journal();
    for denial in [
        "Operation not permitted",
        "Permission denied",
        "SIGSYS",
        "seccomp",
    ] {
        assert!(
            !journal.contains(denial),
            "journal has {denial:?}:\n{journal}"
        );
    }
    eprintln!(
        "systemd-analyze security:\n{}",
        sh("systemd-analyze security shifter.service --no-pager | tail -n 1").1
    );
}

#[test]
#[ignore = "changes the machine: runs in the systemd guest of `cargo xtask vm-test --systemd`"]
fn s2_reload_rereads_the_configuration() {
    fresh("0");
    must("systemctl start shifter.service");
    let text = std::fs::read_to_string(CONFIG).expect("config");
    write_config(&text.replace("weight = 0", "weight = 100"));
    must("systemctl reload shifter.service");
    wait_until("reload applied", || {
        one_request().is_ok_and(|b| b == "green")
    });
    assert_eq!(green_share(20), 100.0);
    assert_eq!(unit_property("ActiveState"), "active");
}

#[test]
#[ignore = "changes the machine: runs in the systemd guest of `cargo xtask vm-test --systemd`"]
fn s3_restart_stop_crash_keep_every_connection() {
    fresh("50");
    must("systemctl start shifter.service");
    let before = program_tags();
    let traffic = Traffic::start(8);
    std::thread::sleep(Duration::from_secs(2));
    must("systemctl restart shifter.service");
    assert_eq!(
        unit_property("ActiveState"),
        "active",
        "restart adopts the pins"
    );
    std::thread::sleep(Duration::from_secs(1));
    must("systemctl stop shifter.service");
    std::thread::sleep(Duration::from_secs(2));
    must("systemctl start shifter.service");
    // A crash: systemd restarts the daemon (Restart=on-failure), which adopts the pins.
    let pid = unit_property("MainPID");
    must(&format!("kill -9 {pid}"));
    wait_until("restarted after kill -9", || {
        unit_property("ActiveState") == "active" && unit_property("MainPID") != pid
    });
    std::thread::sleep(Duration::from_secs(1));
    let ok = traffic.finish("restart, stop, start, kill -9");
    eprintln!("{ok} requests succeeded across restart, stop, start and a crash");
    assert_eq!(
        program_tags(),
        before,
        "the same program per hook after restarts (adopted, not replaced)"
    );
    // What an operator sees: each program loaded once, not one more copy per restart: tc
    // ingress and egress and sock_ops (rewrite), sk_lookup, the listener sock_ops and, where
    // the kernel accepts it (not 7.3, which says so in the journal), the in-kernel listener
    // registration (socket dispatch, the TCP default, from 5.14); no XDP program that
    // nothing uses.
    let loaded = must("bpftool prog show");
    let mut ours: Vec<&str> = loaded
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "name").nth(1))
        .filter(|name| name.starts_with("shifter_"))
        .collect();
    ours.sort_unstable();
    let journal = journal();
    let mut expected = vec![
        "shifter_register_listener",
        "shifter_sk_lookup",
        "shifter_sock_listen",
        "shifter_sock_ops",
        "shifter_tag_listener",
        "shifter_tc_egress",
        "shifter_tc_ingress",
    ];
    if !shifter_tests::socket_dispatch_expected() {
        // Before 5.14 (no SO_NETNS_COOKIE) none of the socket-dispatch programs is loaded.
        expected = vec![
            "shifter_sock_ops",
            "shifter_tc_egress",
            "shifter_tc_ingress",
        ];
    } else if journal.contains("refuses the in-kernel listener registration") {
        expected.remove(0);
    }
    // bpftool shows the whole names (from BTF).
    assert_eq!(
        ours,
        expected,
        "loaded programs after restarts:\n{loaded}\nstatus:\n{}\njournal:\n{journal}",
        sh("shifter status").1,
    );
    let share = green_share(200);
    assert!((35.0..=65.0).contains(&share), "weight 50 kept: {share} %");
    assert!(
        !journal.contains("Operation not permitted"),
        "adoption without CAP_SYS_ADMIN:\n{journal}"
    );
}

#[test]
#[ignore = "changes the machine: runs in the systemd guest of `cargo xtask vm-test --systemd`"]
fn s4_watchdog_kills_a_hung_daemon_and_traffic_goes_on() {
    fresh("50");
    drop_in("watchdog", "WatchdogSec=8s");
    must("systemctl start shifter.service");
    let restarts = unit_property("NRestarts");
    let pid = unit_property("MainPID");
    let traffic = Traffic::start(4);
    must(&format!("kill -STOP {pid}"));
    wait_until("watchdog restart", || {
        unit_property("MainPID") != pid && unit_property("ActiveState") == "active"
    });
    let ok = traffic.finish("a hung daemon and its watchdog restart");
    eprintln!("{ok} requests succeeded while the daemon hung and was restarted");
    assert_ne!(unit_property("NRestarts"), restarts);
    assert!(
        journal().contains("adopted"),
        "the restarted daemon adopts the pins:\n{}",
        journal()
    );
}

#[test]
#[ignore = "changes the machine: runs in the systemd guest of `cargo xtask vm-test --systemd`"]
fn s5_bad_configuration_exits_64_without_a_restart_loop() {
    fresh("0");
    write_config("[[services]]\nname = \"web\"\nport = 80\nblue_port = 8081\n");
    let (rc, _) = sh("systemctl start shifter.service");
    assert_ne!(rc, 0, "start of a bad configuration must fail");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(unit_property("ExecMainStatus"), "64", "{}", journal());
    assert_eq!(unit_property("NRestarts"), "0", "no restart loop");
    assert!(
        journal().contains("green_port"),
        "names the field:\n{}",
        journal()
    );
}

#[test]
#[ignore = "changes the machine: runs in the systemd guest of `cargo xtask vm-test --systemd`"]
fn s6_refused_privilege_exits_77_without_a_restart_loop() {
    fresh("0");
    // Without CAP_BPF the kernel refuses the maps: a start-up failure a restart cannot cure.
    // An empty assignment first: capability sets of drop-ins are merged, not replaced.
    drop_in(
        "nocap",
        "CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_PERFMON CAP_NET_ADMIN CAP_CHOWN",
    );
    // Only the fresh path without pins shows it: the pins of earlier tests go first.
    sh("shifter detach; rm -rf /sys/fs/bpf/shifter");
    let (rc, _) = sh("systemctl start shifter.service");
    assert_ne!(rc, 0, "start without CAP_BPF must fail");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(unit_property("ExecMainStatus"), "77", "{}", journal());
    assert_eq!(unit_property("NRestarts"), "0", "no restart loop");
}

/// The tags of our TC programs, sorted. Read from the loaded programs rather than from lo's
/// hooks: `tc filter show` lists legacy clsact filters (6.1) but not tcx attachments (6.6+),
/// and bookworm's bpftool predates tcx. s3 checks that nothing of ours is loaded without
/// being in use, so on every kernel these are the programs on the hooks.
fn program_tags() -> Vec<String> {
    let loaded = must("bpftool prog show");
    let mut tags: Vec<String> = loaded
        .lines()
        .filter(|l| {
            l.contains(" name shifter_tc_ingress ") || l.contains(" name shifter_tc_egress ")
        })
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "tag")?;
            words.next().map(str::to_owned)
        })
        .collect();
    tags.sort();
    tags
}

#[test]
#[ignore = "changes the machine: runs in the systemd guest of `cargo xtask vm-test --systemd`"]
fn s7_package_upgrade_under_traffic_swaps_the_programs_and_keeps_everything() {
    fresh("0");
    must("systemctl start shifter.service");
    must("shifter set-weight web 30");
    let before = program_tags();
    assert_eq!(
        before.len(),
        2,
        "ingress and egress programs on lo: {before:?}"
    );
    let pid = unit_property("MainPID");
    let traffic = Traffic::start(8);
    std::thread::sleep(Duration::from_secs(1));
    // Version N+1 with another build of the programs: postinst restarts the daemon.
    must("DEBIAN_FRONTEND=noninteractive apt-get install -y /root/shifter-next.deb");
    wait_until("the upgraded daemon is up", || {
        unit_property("ActiveState") == "active" && unit_property("MainPID") != pid
    });
    std::thread::sleep(Duration::from_secs(1));
    let ok = traffic.finish("package upgrade");
    eprintln!("{ok} requests succeeded across the package upgrade");
    let after = program_tags();
    assert_eq!(after.len(), 2, "still one program per hook: {after:?}");
    assert!(
        before.iter().all(|t| !after.contains(t)),
        "the new build's programs are in the hooks: before {before:?}, after {after:?}"
    );
    assert!(
        journal().contains("upgraded programs, maps kept"),
        "{}",
        journal()
    );
    let share = green_share(200);
    assert!(
        (15.0..=45.0).contains(&share),
        "weight 30 % kept: {share} %"
    );

    // The same version again changes nothing: no restart, the same programs.
    let pid = unit_property("MainPID");
    must("dpkg -i /root/shifter-next.deb");
    assert_eq!(
        unit_property("MainPID"),
        pid,
        "reinstalling does not restart"
    );
    assert_eq!(program_tags(), after, "reinstalling keeps the programs");
}

#[test]
#[ignore = "changes the machine: runs in the systemd guest of `cargo xtask vm-test --systemd`"]
fn s8_remove_detaches_and_says_so_purge_removes_state_and_configuration() {
    fresh("0");
    must("systemctl start shifter.service");
    must("shifter set-weight web 20");
    let (rc, out) = sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y shifter 2>&1");
    assert_eq!(rc, 0, "apt remove: {out}");
    assert!(
        out.contains("removing the package detaches the data plane")
            && out.contains("apt install shifter"),
        "remove says what happens and how to undo it:\n{out}"
    );
    assert!(program_tags().is_empty(), "no program left on lo");
    assert!(
        !std::path::Path::new("/sys/fs/bpf/shifter").exists(),
        "pins removed"
    );
    assert_ne!(sh("systemctl is-active shifter.service").1.trim(), "active");
    assert!(
        one_request().is_err(),
        "port 80 is not steered any more (nothing listens on it)"
    );
    must("test -f /var/lib/shifter/state.json && test -f /etc/shifter/shifter.toml");

    must("DEBIAN_FRONTEND=noninteractive apt-get purge -y shifter");
    assert!(
        !std::path::Path::new("/var/lib/shifter").exists(),
        "purge removes the state"
    );
    assert!(
        !std::path::Path::new(CONFIG).exists(),
        "purge removes the configuration"
    );
}

/// Stops the unit, lets `edit` damage or replace the state file, starts it again.
fn restart_with_state(edit: &str) {
    must("systemctl stop shifter.service");
    must(edit);
    must("systemctl start shifter.service");
}

#[test]
#[ignore = "changes the machine: runs in the systemd guest of `cargo xtask vm-test --systemd`"]
fn s9_a_restart_never_changes_what_the_kernel_steers() {
    // The weight: state.json corrupt, state.json.prev older (33 %), the kernel holds 40 %.
    fresh("0");
    must("systemctl start shifter.service");
    must("shifter set-weight web 33 && sleep 1 && cp /var/lib/shifter/state.json /root/s33.json");
    must("shifter set-weight web 40");
    // The daemon saves on stop too, so the stale copy is put in place while it is down.
    restart_with_state(
        "cp /root/s33.json /var/lib/shifter/state.json.prev && \
         echo '{not json' >/var/lib/shifter/state.json",
    );
    let share = green_share(200);
    assert!(
        (28.0..=52.0).contains(&share),
        "the kernel's 40 % kept: {share} %"
    );
    let events = must("shifter events");
    assert!(
        events.contains("kept the live values") && events.contains("33.00%"),
        "the event log says what was recovered from where:\n{events}"
    );

    // The promoted roles: a stale state file that predates the promote.
    must("shifter set-weight web 0 && cp /var/lib/shifter/state.json /root/unpromoted.json");
    must("shifter set-weight web 100 && shifter promote web");
    restart_with_state("cp /root/unpromoted.json /var/lib/shifter/state.json");
    assert_eq!(
        green_share(20),
        100.0,
        "the promoted version (nginx 'green', now blue at weight 0) keeps every new connection"
    );
    assert!(
        journal().contains("the kernel's ports say promoted"),
        "{}",
        journal()
    );

    // A rollout in progress: the state file saved at its first step (10 %), the kernel at the
    // second (50 %) when the daemon restarts.
    fresh("0");
    must("systemctl start shifter.service");
    must("shifter rollout start web --steps 10,50,100 --hold 40s");
    must("sleep 1; cp /var/lib/shifter/state.json /root/step1.json");
    wait_until("the rollout's second step", || green_share(50) >= 30.0);
    let before = must("shifter status --json");
    restart_with_state("cp /root/step1.json /var/lib/shifter/state.json");
    let share = green_share(200);
    assert!(
        (38.0..=62.0).contains(&share),
        "the kernel's 50 % kept: {share} %\nstatus before the restart:\n{before}\nafter:\n{}\n\
         events:\n{}\njournal:\n{}",
        sh("shifter status --json").1,
        sh("shifter events").1,
        journal()
    );
    wait_until("the rollout goes on to 100 %", || {
        one_request().is_ok_and(|b| b == "green") && green_share(20) == 100.0
    });
}
