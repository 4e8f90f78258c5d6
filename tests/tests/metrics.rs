//! `/metrics` of a running daemon, on the control socket and on the TCP metrics address,
//! after real traffic: validated by `promtool check metrics` (Debian package `prometheus`)
//! and checked against the traffic that was sent. Needs root.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use shifter_tests::{
    daemon::{DaemonBed, InProcess, web_service_rewrite},
    netns::{self, BLUE_ID, GREEN_ID, SERVER_V4, SERVICE_PORT},
    traffic,
};

const METRICS_ADDR: &str = "127.0.0.1:9464";

/// Runs `promtool check metrics` on `text`; panics with promtool's findings.
fn promtool_check(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed to validate /metrics but could not be run ({e}): \
                 apt-get install prometheus (cargo xtask setup installs it)"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics rejected {what} ({}):\n{}{}\n--- the metrics:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the series written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{series}: not a number ({e})"))
}

fn backend_series(name: &str, backend: &str) -> String {
    format!("shifter_{name}{{service=\"web\",backend=\"{backend}\"}}")
}

/// A plain HTTP/1.0 GET over TCP from inside namespace `ns`: (status line, headers+body).
fn http_get(ns: &str, addr: &str, path: &str) -> (String, String) {
    let addr: SocketAddr = addr.parse().expect("address");
    let path = path.to_owned();
    netns::run_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.0\r\nHost: metrics\r\n\r\n").expect("send");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read answer");
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.lines().next().unwrap_or("").to_owned();
        (status, format!("{head}\n\n{body}"))
    })
}

#[test]
fn metrics_pass_promtool_and_match_the_traffic() {
    let bed = DaemonBed::new("metrics");
    // Packet and byte counters are the rewrite path's: rewrite dispatch.
    let text = bed.config_text(&web_service_rewrite(50.0)).replacen(
        "[daemon]\n",
        &format!("[daemon]\nmetrics_address = \"{METRICS_ADDR}\"\n"),
        1,
    );
    std::fs::write(&bed.config_path, text).expect("write config");
    let daemon = InProcess::start(&bed);

    let target = SocketAddr::new(SERVER_V4.into(), SERVICE_PORT);
    let long = traffic::LongLived::open(bed.client_ns(), target, 3, Duration::from_secs(3));
    assert!(
        long.wait_rounds(5, Duration::from_secs(10)),
        "long-lived connections make no progress"
    );
    let short = netns::run_in(bed.client_ns(), || {
        traffic::tcp_short(target, 40, Duration::from_secs(3), Duration::from_secs(30))
    });
    assert!(short.failures().is_empty(), "{}", short.failure_summary());
    bed.cli_ok(&["set-weight", "web", "25"]);

    // The control socket.
    let (code, unix_text) = bed.curl("GET", "/metrics", None, None);
    assert_eq!(code, 200, "{unix_text}");
    promtool_check(&unix_text, "/metrics on the control socket");

    let still_open = long.finish();
    let open_on = |id: u8| {
        still_open
            .iter()
            .filter(|c| c.error.is_none() && c.first_backend == Some(id))
            .count()
    };
    assert_eq!(
        open_on(BLUE_ID) + open_on(GREEN_ID),
        3,
        "long-lived connections: {still_open:?}"
    );

    let t = &unix_text;
    for (backend, id) in [("blue", BLUE_ID), ("green", GREEN_ID)] {
        let expect = (short.count(id) + open_on(id)) as f64;
        assert_eq!(
            value(t, &backend_series("new_flows_total", backend)),
            expect,
            "{backend}: one new flow per connection sent to it"
        );
        assert!(
            value(t, &backend_series("active_flows", backend)) >= open_on(id) as f64,
            "{backend}: the open connections have flow entries"
        );
        if expect > 0.0 {
            assert!(value(t, &backend_series("packets_total", backend)) >= 3.0 * expect);
            assert!(value(t, &backend_series("bytes_total", backend)) >= 120.0 * expect);
            assert!(value(t, &backend_series("egress_packets_total", backend)) >= expect);
        }
        assert_eq!(
            value(t, &backend_series("refused_connections_total", backend)),
            0.0
        );
    }
    assert!(
        short.count(BLUE_ID) > 0 && short.count(GREEN_ID) > 0,
        "at 50 % both backends get some of 40 connections"
    );
    assert_eq!(
        value(t, "shifter_weight_basis_points{service=\"web\"}"),
        2500.0
    );
    assert_eq!(
        value(t, &backend_series("backend_weight_ratio", "blue")),
        0.75
    );
    assert_eq!(value(t, "shifter_flow_table_capacity"), 4096.0);
    let entries = value(t, "shifter_flow_table_entries");
    assert!(entries >= 3.0, "flow table entries {entries}");
    assert_eq!(value(t, "shifter_flow_table_fill_ratio"), entries / 4096.0);
    assert_eq!(
        value(
            t,
            "shifter_weight_changes_total{service=\"web\",cause=\"operator\"}"
        ),
        1.0
    );
    assert!(t.contains("# TYPE shifter_evictions_total counter"), "{t}");
    // Every service has a rollout engine: idle until a rollout starts; nothing rolled back.
    assert_eq!(
        value(t, "shifter_rollout_state{service=\"web\",state=\"idle\"}"),
        1.0
    );
    assert!(
        !t.contains("shifter_rollbacks_total{"),
        "no rollback series without a rollback: {t}"
    );

    // The TCP listener serves the same families, and /metrics only.
    let (status, tcp_text) = http_get(bed.server_ns(), METRICS_ADDR, "/metrics");
    assert!(status.contains(" 200 "), "{status}\n{tcp_text}");
    assert!(
        tcp_text
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{tcp_text}"
    );
    let body = tcp_text.split_once("\n\n").map_or("", |(_, b)| b);
    promtool_check(body, "/metrics on the TCP metrics address");
    let families = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(families(body), families(&unix_text));
    let (status, _) = http_get(bed.server_ns(), METRICS_ADDR, "/v1/status");
    assert!(
        status.contains(" 404 "),
        "the TCP listener serves /metrics only: {status}"
    );

    daemon.stop();
}
