//! The daemon as a real process in a namespace: exit 64 on bad configuration, SIGKILL under
//! traffic and adoption on restart, SIGTERM leaving the data plane, SIGHUP reloads, and a
//! corrupted state file. Needs root.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use shifter_tests::{
    daemon::{DaemonBed, Process, TcPath, web_service, web_service_rewrite},
    netns::{self, SERVER_V4, SERVICE_PORT},
    traffic,
};

fn target() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SERVICE_PORT)
}

fn weight_bp(bed: &DaemonBed, service: &str) -> u64 {
    let s = bed.status();
    s["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|v| v["name"] == service)
        .unwrap_or_else(|| panic!("service {service} missing from status: {s}"))["weight_bp"]
        .as_u64()
        .expect("weight_bp")
}

#[test]
fn bad_configuration_exits_64_naming_the_field() {
    let bed = DaemonBed::new("dproc-badcfg");
    std::fs::write(&bed.config_path, bed.config_text(&web_service(12.345))).expect("write");
    let mut p = Process::spawn(&bed);
    assert_eq!(
        p.wait_exit(Duration::from_secs(20)),
        Some(64),
        "log:\n{}",
        p.log_text()
    );
    let log = p.log_text();
    assert!(
        log.contains("services[0].weight: 12.345 has more than two decimals"),
        "{log}"
    );
    assert!(
        !bed.pin_dir.exists(),
        "nothing pinned for a bad configuration"
    );
    let out = bed.cli(
        &["check-config", bed.config_path.to_str().expect("utf8")],
        None,
    );
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn sigkill_under_traffic_then_restart_adopts_without_resets() {
    let bed = DaemonBed::new("dproc-kill");
    bed.write_config(&web_service(0.0));
    let mut first = Process::start(&bed);
    bed.cli_ok(&["set-weight", "web", "50"]);
    bed.programs().assert_exactly_one();

    let long = traffic::LongLived::open(bed.client_ns(), target(), 8, Duration::from_secs(3));
    assert!(
        long.wait_rounds(20, Duration::from_secs(10)),
        "long-lived connections make no progress"
    );
    // New connections all the time, in the background, through the kill and the restart.
    let shorts = traffic::ShortConnections::start(bed.client_ns(), target());

    first.signal(libc::SIGKILL);
    assert_eq!(
        first.wait_exit(Duration::from_secs(10)),
        None,
        "killed by a signal"
    );
    assert!(
        long.wait_rounds(50, Duration::from_secs(10)),
        "long-lived connections stall while the daemon is dead"
    );
    bed.programs().assert_exactly_one();
    assert_eq!(
        bed.pinned_configs().values().next().expect("web").weight,
        5000
    );

    let mut second = Process::start(&bed);
    assert!(
        second.log_text().contains("adopted"),
        "restart adopts: {}",
        second.log_text()
    );
    bed.programs().assert_exactly_one();
    assert_eq!(weight_bp(&bed, "web"), 5000, "weight from before the kill");
    assert!(
        long.wait_rounds(50, Duration::from_secs(10)),
        "long-lived connections stall after restart"
    );

    shorts.finish_all_answered(10, "the kill and restart");
    long.finish_unbroken("the kill and restart");

    // SIGTERM: exit 0, the data plane stays and keeps steering.
    second.signal(libc::SIGTERM);
    assert_eq!(
        second.wait_exit(Duration::from_secs(20)),
        Some(0),
        "log:\n{}",
        second.log_text()
    );
    bed.programs().assert_exactly_one();
    let r = netns::run_in(bed.client_ns(), || {
        traffic::tcp_short(
            target(),
            10,
            Duration::from_secs(3),
            Duration::from_secs(30),
        )
    });
    assert!(
        r.failures().is_empty(),
        "after SIGTERM: {}",
        r.failure_summary()
    );
}

#[test]
fn sighup_changes_exactly_what_was_edited() {
    let bed = DaemonBed::new("dproc-hup");
    let svc = |name: &str, port: u16, blue: u16, green: u16, weight: f64, extra: &str| {
        format!(
            "[[services]]\nname = \"{name}\"\nport = {port}\nblue_port = {blue}\ngreen_port = {green}\nweight = {weight}\n{extra}\n"
        )
    };
    let before = [
        web_service(0.0),
        svc("api", 81, 9081, 9082, 10.0, ""),
        svc("dns", 53, 5301, 5302, 0.0, "protocol = \"udp\""),
        svc("old", 82, 7081, 7082, 0.0, ""),
    ]
    .concat();
    bed.write_config(&before);
    let p = Process::start(&bed);
    bed.cli_ok(&["set-weight", "web", "33"]);
    let maps_before = bed.pinned_configs();
    let slots_before: Vec<u32> = maps_before.keys().copied().collect();
    assert_eq!(maps_before.len(), 4);
    let events_before: serde_json::Value =
        serde_json::from_str(&bed.cli_ok(&["events", "--json"])).expect("events");
    let n_events = events_before["events"].as_array().expect("array").len();

    let after = [
        web_service(0.0),                     // untouched
        svc("api", 81, 9081, 9082, 20.0, ""), // weight edited
        svc(
            "dns",
            53,
            5301,
            5302,
            0.0,
            "protocol = \"udp\"\naffinity = \"client\"",
        ), // affinity edited
        svc("new", 83, 6081, 6082, 1.5, ""),  // added; "old" removed
    ]
    .concat();
    bed.write_config(&after);
    p.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = bed.status();
        let names: Vec<String> = s["services"]
            .as_array()
            .expect("services")
            .iter()
            .map(|v| v["name"].as_str().expect("name").to_owned())
            .collect();
        if names.contains(&"new".to_owned()) && !names.contains(&"old".to_owned()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP not applied within 20 s: {names:?}\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        weight_bp(&bed, "web"),
        3300,
        "untouched service keeps the operator's weight"
    );
    assert_eq!(weight_bp(&bed, "api"), 2000, "edited weight applied");
    assert_eq!(weight_bp(&bed, "new"), 150);
    let maps_after = bed.pinned_configs();
    let web_slot = slots_before
        .iter()
        .find(|s| maps_before[s].blue_port == 8081)
        .expect("web slot");
    assert_eq!(
        maps_after.get(web_slot),
        maps_before.get(web_slot),
        "web's word is untouched"
    );
    let dns = maps_after
        .values()
        .find(|c| c.blue_port == 5301)
        .expect("dns");
    assert_eq!(dns.affinity, shifter::Affinity::Client);
    assert!(
        maps_after.values().all(|c| c.blue_port != 7081),
        "old is gone from the maps"
    );
    assert_eq!(maps_after.len(), 4);

    let ev: serde_json::Value =
        serde_json::from_str(&bed.cli_ok(&["events", "--json"])).expect("events");
    let new_events: Vec<&serde_json::Value> = ev["events"].as_array().expect("array")[n_events..]
        .iter()
        .collect();
    let services: Vec<&str> = new_events
        .iter()
        .map(|e| e["service"].as_str().expect("service"))
        .collect();
    assert!(
        !services.contains(&"web") && !services.contains(&"dns"),
        "{new_events:?}"
    );
    assert!(
        services.contains(&"api") && services.contains(&"new") && services.contains(&"old"),
        "{new_events:?}"
    );
    assert!(
        new_events
            .iter()
            .all(|e| e["cause"] == "reload" || e["cause"] == "removed")
    );

    // A broken edit is refused and changes nothing.
    std::fs::write(&bed.config_path, bed.config_text(&web_service(1.234))).expect("write");
    p.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        bed.pinned_configs(),
        maps_after,
        "a bad config on SIGHUP changes nothing"
    );
    assert!(
        p.log_text()
            .contains("reload refused: services[0].weight: 1.234 has more than two decimals"),
        "{}",
        p.log_text()
    );
}

#[test]
fn corrupted_state_file_falls_back_and_says_so() {
    let bed = DaemonBed::new("dproc-state");
    bed.write_config(&web_service(5.0));
    let stop = |mut p: Process| {
        p.signal(libc::SIGTERM);
        assert_eq!(
            p.wait_exit(Duration::from_secs(20)),
            Some(0),
            "log:\n{}",
            p.log_text()
        );
    };
    let p = Process::start(&bed);
    bed.cli_ok(&["set-weight", "web", "40"]);
    bed.cli_ok(&["set-weight", "web", "60"]);
    stop(p);
    // Both state.json and the previous copy hold 60 now (the shutdown saved once more), as
    // does the pinned map. Make the previous copy say 40 (stale), then truncate the current
    // file.
    let state = bed.state_dir.join("state.json");
    let prev = bed.state_dir.join("state.json.prev");
    let prev_text = std::fs::read_to_string(&prev).expect("previous copy exists");
    assert!(prev_text.contains("\"web\": 6000"), "{prev_text}");
    std::fs::remove_file(&prev).expect("unlink the hard link");
    std::fs::write(&prev, prev_text.replace("\"web\": 6000", "\"web\": 4000")).expect("write prev");
    let bytes = std::fs::read(&state).expect("state");
    std::fs::write(&state, &bytes[..bytes.len() / 3]).expect("truncate");
    let p = Process::start(&bed);
    let log = p.log_text();
    assert!(
        log.contains("is unusable"),
        "the daemon says the state file is bad: {log}"
    );
    assert!(log.contains("previous good copy"), "{log}");
    // The pinned map still holds 60 %: what the kernel steers by wins over the older copy
    // (a restart must not move live traffic), and the log says which copy said what.
    assert_eq!(
        weight_bp(&bed, "web"),
        6000,
        "the live pinned weight, not the last good copy's"
    );
    assert!(
        log.contains("kept the live values of the pinned maps")
            && log.contains("previous state file")
            && log.contains("40.00%"),
        "{log}"
    );
    assert!(
        bed.state_dir.join("state.json.bad").exists(),
        "bad file kept aside"
    );
    stop(p);

    // Without pins (a reboot empties bpffs), the last good copy is what there is.
    let remove_pins = || {
        netns::run_in(bed.server_ns(), || {
            shifter::DataPlane::detach_leftover(&bed.pin_dir, netns::SERVER_IF)
        })
        .expect("detach");
        std::fs::remove_dir_all(&bed.pin_dir).expect("remove pins");
    };
    let text = std::fs::read_to_string(&state).expect("state");
    std::fs::remove_file(&prev).expect("unlink the hard link");
    std::fs::write(&prev, text.replace("\"web\": 6000", "\"web\": 4000")).expect("write prev");
    std::fs::write(&state, b"{").expect("truncate");
    remove_pins();
    let p = Process::start(&bed);
    let log = p.log_text();
    assert!(log.contains("previous good copy"), "{log}");
    assert_eq!(
        weight_bp(&bed, "web"),
        4000,
        "no pins: the weight from the last good copy"
    );
    stop(p);

    // Both copies garbage and no pins: the configuration's weight.
    std::fs::write(&state, b"\0garbage").expect("write");
    std::fs::write(bed.state_dir.join("state.json.prev"), b"{").expect("write");
    remove_pins();
    let p = Process::start(&bed);
    let log = p.log_text();
    assert!(log.contains("unusable too"), "{log}");
    assert_eq!(weight_bp(&bed, "web"), 500, "weight from the configuration");
    bed.programs().assert_exactly_one();
    stop(p);
}

#[test]
fn reads_fall_back_to_the_pinned_maps_when_the_daemon_is_down() {
    let bed = DaemonBed::new("dproc-offline");
    // The offline reads are of the flow table: rewrite dispatch.
    bed.write_config(&web_service_rewrite(25.0));
    let mut p = Process::start(&bed);
    let long = traffic::LongLived::open(bed.client_ns(), target(), 6, Duration::from_secs(3));
    assert!(
        long.wait_rounds(5, Duration::from_secs(10)),
        "long-lived connections make no progress"
    );
    let online: serde_json::Value =
        serde_json::from_str(&bed.cli_ok(&["flows", "web", "--json"])).expect("JSON");
    assert!(
        online.get("source").is_none(),
        "the daemon's answer is not labelled: {online}"
    );
    p.signal(libc::SIGTERM);
    assert_eq!(
        p.wait_exit(Duration::from_secs(20)),
        Some(0),
        "log:\n{}",
        p.log_text()
    );

    let cfg = bed.config_path.to_str().expect("utf8").to_owned();
    let label = "(daemon not running; read from pinned maps)";

    let out = bed.cli_ok(&["status", "--config", &cfg]);
    assert!(out.starts_with(label), "labelled:\n{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("a row for web:\n{out}"));
    assert!(row.contains("25.00%"), "weight from the maps: {row}");
    // The data plane outlived the daemon; the offline reader names the interface from its
    // pinned links (tcx) or, as legacy clsact filters pin nothing, from the attachments the
    // daemon persisted in its state file.
    let progs = bed.programs();
    progs.assert_exactly_one();
    let want_mode = match progs.mode {
        TcPath::Tcx => "tcx",
        TcPath::Legacy => "legacy clsact",
    };
    assert!(
        out.contains(&format!(
            "{} (ingress tc, tc via {want_mode})",
            netns::SERVER_IF
        )),
        "the attached interface, {want_mode}: {out}"
    );

    let s: serde_json::Value =
        serde_json::from_str(&bed.cli_ok(&["status", "--json", "--config", &cfg])).expect("JSON");
    assert_eq!(s["source"], "pinned-maps", "{s}");
    assert_eq!(s["pid"], 0, "{s}");
    assert_eq!(s["services"][0]["name"], "web", "{s}");
    assert_eq!(s["services"][0]["weight_bp"], 2500, "{s}");
    let active = s["services"][0]["blue"]["active_flows"]
        .as_u64()
        .expect("n")
        + s["services"][0]["green"]["active_flows"]
            .as_u64()
            .expect("n");
    assert!(active >= 6, "the long-lived connections' entries: {s}");

    let out = bed.cli_ok(&["status", "web", "--config", &cfg]);
    assert!(
        out.starts_with(label) && out.contains("green weight 25.00%"),
        "{out}"
    );

    let f: serde_json::Value =
        serde_json::from_str(&bed.cli_ok(&["flows", "web", "--json", "--config", &cfg]))
            .expect("JSON");
    assert_eq!(f["source"], "pinned-maps", "{f}");
    let ports: Vec<u64> = f["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .map(|e| e["client_port"].as_u64().expect("port"))
        .collect();
    for c in long.finish() {
        assert!(
            ports.contains(&u64::from(c.local_port)),
            "the flow of client port {} is listed: {f}",
            c.local_port
        );
    }
    let out = bed.cli_ok(&["flows", "web", "--config", &cfg]);
    assert!(out.starts_with(label) && out.contains("flow(s)"), "{out}");

    // Unknown service, unprivileged reader, nothing pinned: one clear line, non-zero.
    let out = bed.cli(&["flows", "nope", "--config", &cfg], None);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown service \"nope\""),
        "{out:?}"
    );
    let out = bed.cli(
        &["status", "--config", &cfg],
        Some(shifter_tests::daemon::Creds::nobody()),
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("daemon is not running"),
        "{out:?}"
    );
    netns::run_in(bed.server_ns(), || {
        shifter::DataPlane::detach_leftover(&bed.pin_dir, netns::SERVER_IF)
    })
    .expect("detach");
    std::fs::remove_dir_all(&bed.pin_dir).expect("remove pins");
    let out = bed.cli(&["status", "--config", &cfg], None);
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing is pinned"),
        "{out:?}"
    );
}

/// Socket dispatch under a real daemon: status shows it with the listeners of both
/// backends; SIGKILL and a restart under traffic break no connection (the sk_lookup link and
/// the remembered listeners are pinned, the restart adopts them); `shifter detach` removes it
/// all: then nothing listens on the service port and connections to it are refused.
#[test]
fn socket_dispatch_survives_sigkill_and_detach_removes_it() {
    let bed = DaemonBed::new("dproc-sock");
    // Socket dispatch is TCP's default: no `dispatch` key.
    bed.write_config(&web_service(50.0));
    let mut first = Process::start(&bed);
    let service = |bed: &DaemonBed| bed.status()["services"][0].clone();
    let s = service(&bed);
    if !shifter_tests::socket_dispatch_expected() {
        // Before 5.14: the daemon says why and serves the service by rewrite.
        let why = bed.status()["socket_dispatch_unavailable"].clone();
        shifter_tests::assert_socket_dispatch_unavailable(why.as_str(), "daemon");
        assert_eq!(s["dispatch"], "rewrite", "{s}");
        let text = bed.cli_ok(&["status"]);
        assert!(text.contains("SO_NETNS_COOKIE"), "status says why: {text}");
        return;
    }
    assert_eq!(
        s["dispatch"],
        "socket",
        "socket dispatch is needed here; this kernel: {}",
        bed.status()["socket_dispatch_unavailable"]
    );
    assert_eq!(
        s["listeners"]["blue"], 2,
        "v4 and v6 listeners of blue: {s}"
    );
    assert_eq!(
        s["listeners"]["green"], 2,
        "v4 and v6 listeners of green: {s}"
    );
    let text = bed.cli_ok(&["status", "web"]);
    assert!(
        text.contains("socket: 2 blue and 2 green listening sockets registered"),
        "{text}"
    );

    let long = traffic::LongLived::open(bed.client_ns(), target(), 8, Duration::from_secs(3));
    assert!(long.wait_rounds(20, Duration::from_secs(10)), "no progress");
    let shorts = traffic::ShortConnections::start(bed.client_ns(), target());
    first.signal(libc::SIGKILL);
    assert_eq!(first.wait_exit(Duration::from_secs(10)), None, "killed");
    assert!(
        long.wait_rounds(50, Duration::from_secs(10)),
        "long-lived connections stall while the daemon is dead"
    );
    // With the daemon down, status reads the pins, the remembered listeners too.
    let cfg = bed.config_path.to_str().expect("utf8").to_owned();
    let offline: serde_json::Value =
        serde_json::from_str(&bed.cli_ok(&["status", "--json", "--config", &cfg])).expect("JSON");
    assert_eq!(offline["pid"], 0, "read from the pins, no daemon");
    let s = &offline["services"][0];
    assert_eq!(
        (
            s["listeners"]["blue"].clone(),
            s["listeners"]["green"].clone()
        ),
        (2.into(), 2.into()),
        "offline status shows the listeners: {s}"
    );
    let second = Process::start(&bed);
    let log = second.log_text();
    assert!(log.contains("sk_lookup: adopted, same build"), "{log}");
    let s = service(&bed);
    assert_eq!(
        s["listeners"]["blue"], 2,
        "remembered listeners are kept: {s}"
    );
    assert!(
        long.wait_rounds(50, Duration::from_secs(10)),
        "stall after restart"
    );
    let report = shorts.finish_all_answered(10, "the kill and restart");
    assert!(
        report.count(netns::BLUE_ID) > 0 && report.count(netns::GREEN_ID) > 0,
        "both backends served at 50 %"
    );
    long.finish_unbroken("the kill and restart");
    let c = &service(&bed);
    let new = c["blue"]["new_flows"].as_u64().unwrap() + c["green"]["new_flows"].as_u64().unwrap();
    assert!(
        new >= report.outcomes.len() as u64 + 8,
        "every connection counted once: {new} for {} + 8",
        report.outcomes.len()
    );
    assert_eq!(c["blue"]["active_flows"], 0, "no flow entries: {c}");

    let mut second = second;
    bed.cli_ok(&["detach"]);
    assert_eq!(
        second.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        second.log_text()
    );
    assert!(!bed.pin_dir.exists(), "pins removed");
    let r = netns::run_in(bed.client_ns(), || {
        traffic::tcp_short(target(), 3, Duration::from_secs(2), Duration::from_secs(20))
    });
    assert_eq!(
        r.failures().len(),
        3,
        "after detach nothing steers port {SERVICE_PORT}: connections must be refused"
    );
}
