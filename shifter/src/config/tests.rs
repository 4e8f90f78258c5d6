//! Tests of the whole configuration tree: fields, defaults and every problem message.

use super::*;
use crate::{
    dataplane::Hook,
    model::{Protocol, Weight},
    paths,
};
use shifter_common::{Affinity, DEFAULT_FLOW_CAPACITY, Dispatch, MAX_SERVICES};
use std::collections::BTreeMap;

/// Percent text as the configuration reads it (the one parser: `Weight`).
fn parse_percent(text: &str) -> Result<u16, String> {
    text.parse::<Weight>()
        .map(Weight::bp)
        .map_err(|e| e.to_string())
}

fn format_percent(bp: u16) -> String {
    crate::model::percent(bp)
}

const GOOD: &str = r#"
    [daemon]
    socket = "/run/x/x.sock"
    socket_group = "0"
    state_dir = "/var/lib/x"
    bpffs_dir = "/sys/fs/bpf/x"
    flow_table_size = 1024
    metrics_address = "127.0.0.1:9464"

    [[interfaces]]
    name = "eth0"
    hook = "xdp-generic"

    [[services]]
    name = "web"
    port = 80
    blue_port = 8081
    green_port = 8082
    weight = 12.5

    [[services]]
    name = "dns"
    protocol = "udp"
    port = 53
    local_addresses = ["198.18.0.2", "2001:2::2"]
    blue_port = 5301
    green_port = 5302
    affinity = "client"
"#;

fn parse(text: &str) -> Result<Config, Vec<String>> {
    Config::parse(text, Path::new("t.toml")).map_err(|e| e.problems())
}

/// The errors of `GOOD` with `from` replaced by `to`.
fn errors_with(from: &str, to: &str) -> Vec<String> {
    assert!(GOOD.contains(from), "test bug: {from:?} not in GOOD");
    parse(&GOOD.replacen(from, to, 1)).expect_err("must be rejected")
}

#[test]
fn health_and_rollout_sections_are_validated_with_their_field() {
    let svc = "[[services]]\nname = \"web\"\nport = 80\nblue_port = 8081\ngreen_port = 8082\n";
    let c = parse(&format!(
        "{svc}[services.health]\nkind = \"http\"\npath = \"/h\"\nport_offset = 1000\n\
         [services.rollout]\nsteps = [1, 50, 100]\nhold = \"5s\"\n"
    ))
    .unwrap();
    let s = &c.services[0];
    let h = s.health.as_ref().expect("health");
    assert_eq!((h.check_port(8081), h.check_port(8082)), (9081, 9082));
    let w: Vec<u16> = s.rollout.steps.iter().map(|s| s.weight_bp).collect();
    assert_eq!(w, [100, 5000, 10_000]);
    assert_eq!(parse(svc).unwrap().services[0].health, None);
    let e = parse(&format!(
        "{svc}[services.health]\nkind = \"ping\"\n\
         [services.rollout]\nsteps = [5, 1]\n"
    ))
    .unwrap_err();
    assert_eq!(
        e,
        [
            "services[0].health.kind: \"ping\" is not a check kind (expected tcp, http, https or exec)",
            "services[0].rollout.steps[1]: 1.00% is not above the previous step (5.00%)",
        ]
        .map(String::from)
    );
    let e = parse(&format!("{svc}[services.health]\nport_offset = 57454\n")).unwrap_err();
    assert_eq!(
        e,
        [
            "services[0].health.port_offset: 57454 puts the check of green_port 8082 at 65536, outside 1..=65535"
        ]
    );
    assert!(
        parse(&format!("{svc}[services.rollout]\nstep = [1]\n")).unwrap_err()[0]
            .contains("unknown field `step`")
    );
}

fn assert_error(from: &str, to: &str, want: &str) {
    let errs = errors_with(from, to);
    assert!(
        errs.iter().any(|e| e == want),
        "replacing {from:?} by {to:?}: want {want:?}, got {errs:?}"
    );
}

#[test]
fn good_config_parses() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.daemon.socket, PathBuf::from("/run/x/x.sock"));
    assert_eq!(
        c.daemon.socket_group,
        Some(SocketGroup {
            name: "0".into(),
            gid: 0
        })
    );
    assert_eq!(c.daemon.socket_mode, 0o660);
    assert_eq!(c.daemon.flow_table_size, 1024);
    assert_eq!(
        c.interfaces,
        vec![InterfaceConfig {
            name: "eth0".into(),
            hook: Hook::XdpGeneric
        }]
    );
    assert_eq!(c.services[0].service.config.weight, 1250);
    assert_eq!(c.services[0].service.protocol, Protocol::Tcp);
    assert_eq!(c.services[1].service.config.affinity, Affinity::Client);
    assert_eq!(c.services[1].service.local_addrs.len(), 2);
    assert_eq!(c.services[1].service.config.weight, 0);
    // TCP defaults to socket dispatch, UDP to rewrite.
    assert_eq!(c.services[0].service.config.dispatch, Dispatch::Socket);
    assert_eq!(c.services[1].service.config.dispatch, Dispatch::Rewrite);
    let rewrite =
        parse(&GOOD.replacen("weight = 12.5", "weight = 12.5\ndispatch = \"rewrite\"", 1))
            .expect("a TCP service may use rewrite dispatch");
    assert_eq!(
        rewrite.services[0].service.config.dispatch,
        Dispatch::Rewrite
    );
}

#[test]
fn empty_config_takes_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.daemon.socket, PathBuf::from(paths::SOCKET));
    assert_eq!(c.daemon.state_dir, PathBuf::from(paths::STATE_DIR));
    assert_eq!(c.daemon.bpffs_dir, PathBuf::from(paths::BPFFS_DIR));
    assert_eq!(c.daemon.flow_table_size, DEFAULT_FLOW_CAPACITY);
    assert_eq!(c.daemon.socket_group, None);
    assert!(c.services.is_empty() && c.interfaces.is_empty());
}

#[test]
fn percent_parsing() {
    assert_eq!(parse_percent("0"), Ok(0));
    assert_eq!(parse_percent("100"), Ok(10_000));
    assert_eq!(parse_percent("100.00"), Ok(10_000));
    assert_eq!(parse_percent("12.5"), Ok(1250));
    assert_eq!(parse_percent("0.01"), Ok(1));
    assert_eq!(parse_percent(".5"), Ok(50));
    assert_eq!(parse_percent("007"), Ok(700));
    assert_eq!(
        parse_percent("12.345"),
        Err("has more than two decimals".into())
    );
    assert_eq!(parse_percent("100.01"), Err("is outside 0..=100".into()));
    assert_eq!(
        parse_percent("99999999999999999999999"),
        Err("is outside 0..=100".into())
    );
    assert!(parse_percent("-1").unwrap_err().contains("negative"));
    assert!(parse_percent("abc").unwrap_err().contains("not a number"));
    assert!(parse_percent("").unwrap_err().contains("not a number"));
    assert!(parse_percent(".").unwrap_err().contains("not a number"));
    assert!(parse_percent("1e3").unwrap_err().contains("not a number"));
    assert_eq!(format_percent(1250), "12.50");
    assert_eq!(format_percent(1), "0.01");
    assert_eq!(number_text(12.345).unwrap(), "12.345");
    assert_eq!(number_text(0.1 + 0.2).unwrap(), "0.30000000000000004");
    assert_eq!(number_text(1e-7).unwrap(), "0.0000001");
}

#[test]
fn weight_errors() {
    assert_error(
        "weight = 12.5",
        "weight = 12.345",
        "services[0].weight: 12.345 has more than two decimals",
    );
    assert_error(
        "weight = 12.5",
        "weight = 100.5",
        "services[0].weight: 100.5 is outside 0..=100",
    );
    assert_error(
        "weight = 12.5",
        "weight = 101",
        "services[0].weight: 101 is outside 0..=100",
    );
    assert_error(
        "weight = 12.5",
        "weight = -1",
        "services[0].weight: -1 is negative (a weight is 0..=100 percent)",
    );
    assert_error(
        "weight = 12.5",
        "weight = \"lots\"",
        "services[0].weight: lots is not a number (expected percent like 12.5)",
    );
    assert_error(
        "weight = 12.5",
        "weight = nan",
        "services[0].weight: is not a finite number",
    );
    // A string with the percent text is accepted too.
    let c = parse(&GOOD.replacen("weight = 12.5", "weight = \"33.33\"", 1)).unwrap();
    assert_eq!(c.services[0].service.config.weight, 3333);
}

#[test]
fn port_errors() {
    assert_error(
        "port = 80",
        "port = 0",
        "services[0].port: 0 is not a port (1..=65535)",
    );
    assert_error(
        "port = 80",
        "port = 70000",
        "services[0].port: 70000 is not a port (1..=65535)",
    );
    assert_error(
        "blue_port = 8081",
        "blue_port = -3",
        "services[0].blue_port: -3 is not a port (1..=65535)",
    );
    assert_error(
        "green_port = 8082",
        "green_port = 0",
        "services[0].green_port: 0 is not a port (1..=65535)",
    );
    assert_error(
        "green_port = 8082",
        "green_port = 8081",
        "services[0].green_port: 8081 is also the blue port",
    );
    assert_error(
        "port = 80",
        "port = 8082",
        "services[0].port: 8082 is also a backend port of this service",
    );
}

#[test]
fn service_field_errors() {
    assert_error(
        "name = \"web\"",
        "name = \"we b\"",
        "services[0].name: \"we b\" is not a service name (1..=64 of A-Z a-z 0-9 . _ -)",
    );
    assert_error(
        "name = \"dns\"",
        "name = \"web\"",
        "services[1].name: \"web\" is already the name of services[0]",
    );
    assert_error(
        "protocol = \"udp\"",
        "protocol = \"sctp\"",
        "services[1].protocol: \"sctp\" is not a protocol (expected tcp or udp)",
    );
    assert_error(
        "affinity = \"client\"",
        "affinity = \"sticky\"",
        "services[1].affinity: \"sticky\" is not an affinity (expected connection or client)",
    );
    assert_error(
        "affinity = \"client\"",
        "affinity = \"client\"\ndispatch = \"sockets\"",
        "services[1].dispatch: \"sockets\" is not a dispatch (expected socket or rewrite)",
    );
    assert_error(
        "affinity = \"client\"",
        "affinity = \"client\"\ndispatch = \"socket\"",
        "services[1].dispatch: socket dispatch is for TCP only (a UDP socket bound to a backend port answers from that port): use rewrite",
    );
    assert_error(
        "\"198.18.0.2\"",
        "\"198.18.0.300\"",
        "services[1].local_addresses[0]: \"198.18.0.300\" is not an IP address",
    );
    assert_error(
        "\"198.18.0.2\"",
        "\"2001:2::2\"",
        "services[1].local_addresses[1]: \"2001:2::2\" is listed twice",
    );
    assert_error(
        "\"198.18.0.2\"",
        "\"0.0.0.0\"",
        "services[1].local_addresses[0]: \"0.0.0.0\" is the unspecified address (leave local_addresses empty for every address)",
    );
}

#[test]
fn cross_service_errors() {
    let two_web = GOOD
        .replacen("port = 53", "port = 80", 1)
        .replacen("\"udp\"", "\"tcp\"", 1);
    // dns has specific addresses, web is a wildcard: different keys, allowed.
    parse(&two_web).expect("wildcard and specific addresses may share a port");
    let overlap = two_web.replacen("local_addresses = [\"198.18.0.2\", \"2001:2::2\"]", "", 1);
    let errs = parse(&overlap).unwrap_err();
    assert!(
        errs.contains(
            &"services[1].port: tcp 80 overlaps services[0] (\"web\") on the same addresses"
                .to_owned()
        ),
        "{errs:?}"
    );
    let errs = errors_with("port = 53", "port = 8081");
    assert!(
        errs.contains(&"services[1].port: 8081 is a backend port of services[0]".to_owned()),
        "{errs:?}"
    );
    let errs = errors_with("blue_port = 5301", "blue_port = 80");
    assert!(
        errs.contains(&"services[0].port: 80 is a backend port of services[1]".to_owned()),
        "{errs:?}"
    );
    let many: String = (0..=MAX_SERVICES)
        .map(|i| {
            format!(
                "[[services]]\nname = \"s{i}\"\nport = {}\nblue_port = 1\ngreen_port = 2\n",
                1000 + i
            )
        })
        .collect();
    let errs = parse(&many).unwrap_err();
    assert!(
        errs.contains(&format!(
            "services: {} services configured; at most {MAX_SERVICES} are supported",
            MAX_SERVICES + 1
        )),
        "{errs:?}"
    );
}

#[test]
fn interface_errors() {
    assert_error(
        "name = \"eth0\"",
        "name = \"a-very-long-interface-name\"",
        "interfaces[0].name: \"a-very-long-interface-name\" is not an interface name (1..=15 characters, no '/', ':' or spaces)",
    );
    assert_error(
        "name = \"eth0\"",
        "name = \"eth/0\"",
        "interfaces[0].name: \"eth/0\" is not an interface name (1..=15 characters, no '/', ':' or spaces)",
    );
    assert_error(
        "hook = \"xdp-generic\"",
        "hook = \"ebpf\"",
        "interfaces[0].hook: \"ebpf\" is not a hook (expected tc, xdp or xdp-generic)",
    );
    assert_error(
        "hook = \"xdp-generic\"",
        "hook = \"tc\"\n[[interfaces]]\nname = \"eth0\"",
        "interfaces[1].name: \"eth0\" is listed twice",
    );
}

#[test]
fn daemon_errors() {
    assert_error(
        "socket = \"/run/x/x.sock\"",
        "socket = \"x.sock\"",
        "daemon.socket: \"x.sock\" is not an absolute path",
    );
    assert_error(
        "state_dir = \"/var/lib/x\"",
        "state_dir = \"lib\"",
        "daemon.state_dir: \"lib\" is not an absolute path",
    );
    assert_error(
        "bpffs_dir = \"/sys/fs/bpf/x\"",
        "bpffs_dir = \"\"",
        "daemon.bpffs_dir: \"\" is not an absolute path",
    );
    assert_error(
        "flow_table_size = 1024",
        "flow_table_size = 10",
        "daemon.flow_table_size: 10 is outside 64..=16777216",
    );
    assert_error(
        "metrics_address = \"127.0.0.1:9464\"",
        "metrics_address = \"localhost\"",
        "daemon.metrics_address: \"localhost\" is not an address:port (e.g. 127.0.0.1:9464)",
    );
    assert_error(
        "socket_group = \"0\"",
        "socket_group = \"no-such-group-shifter-test\"",
        "daemon.socket_group: \"no-such-group-shifter-test\": no such group",
    );
    assert_error(
        "socket_group = \"0\"",
        "socket_group = \"0\"\nsocket_mode = \"0999\"",
        "daemon.socket_mode: \"0999\" is not an octal mode (e.g. \"0660\")",
    );
    assert_error(
        "socket_group = \"0\"",
        "socket_group = \"0\"\nsocket_mode = 0o066",
        "daemon.socket_mode: 0o66 must be at most 0777 and give the owner read and write",
    );
    assert_error(
        "socket_group = \"0\"",
        "socket_group = \"0\"\nsweep_interval_secs = 0",
        "daemon.sweep_interval_secs: 0 is outside 1..=3600",
    );
    let c = parse(&GOOD.replacen(
        "socket_group = \"0\"",
        "socket_group = \"0\"\nsocket_mode = \"0666\"",
        1,
    ))
    .unwrap();
    assert_eq!(c.daemon.socket_mode, 0o666);
    let c = parse(&GOOD.replacen("socket_group = \"0\"", "socket_group = 100", 1)).unwrap();
    assert_eq!(c.daemon.socket_group.map(|g| g.gid), Some(100));
}

#[test]
fn structural_errors_name_the_key() {
    let e = Config::parse("[daemon]\nsokcet = \"/x\"\n", Path::new("t.toml")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("sokcet"), "{msg}");
    let e = Config::parse(
        "[[services]]\nname = \"a\"\nport = \"x\"\nblue_port = 1\ngreen_port = 2\n",
        Path::new("t.toml"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("port"), "{e}");
    let e = Config::parse(
        "[[services]]\nname = \"a\"\nport = 1\nblue_port = 2\n",
        Path::new("t.toml"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("green_port"), "{e}");
    let e = Config::load(Path::new("/nonexistent/shifter.toml")).unwrap_err();
    assert!(
        crate::util::error_chain(&e).contains("/nonexistent/shifter.toml"),
        "{e}"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = GOOD
        .replacen("port = 80", "port = 0", 1)
        .replacen("weight = 12.5", "weight = 1.234", 1)
        .replacen("hook = \"xdp-generic\"", "hook = \"x\"", 1);
    let errs = parse(&text).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
}

/// The one-line problem of `text`, which must not deserialize.
fn syntax_problem(text: &str) -> String {
    let e = Config::parse(text, Path::new("t.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    let problems = e.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems[0].clone()
}

const ROLLOUT_HEAD: &str = "[[services]]\nname = \"web\"\nport = 80\nblue_port = 1\n\
                            green_port = 2\n[services.rollout]\n";

#[test]
fn a_misspelt_key_in_a_step_or_rollback_table_is_named_with_its_line() {
    // Before: a step's `aprove = true` was dropped without a word (no approval gate), and a
    // rollback table's typo said only "data did not match any variant of untagged enum".
    let problem = syntax_problem(&format!(
        "{ROLLOUT_HEAD}steps = [1, {{ weight = 25, aprove = true }}]\n"
    ));
    assert_eq!(
        problem,
        "line 7, column 28 (steps = [1, { weight = 25, aprove = true }]): unknown field \
         `aprove`, expected one of `weight`, `hold`, `approve`"
    );
    let problem = syntax_problem(&format!(
        "{ROLLOUT_HEAD}rollback = {{ steps = [50, 0], hodl = \"1s\" }}\n"
    ));
    assert_eq!(
        problem,
        "line 7, column 31 (rollback = { steps = [50, 0], hodl = \"1s\" }): unknown field \
         `hodl`, expected `steps` or `hold`"
    );
    let problem = syntax_problem(&format!("{ROLLOUT_HEAD}rollback = 5\n"));
    assert!(
        problem.starts_with(
            "line 7, column 12 (rollback = 5): invalid type: integer `5`, expected \"immediate\""
        ),
        "{problem}"
    );
    let problem = syntax_problem(&format!("{ROLLOUT_HEAD}steps = [1, true]\n"));
    assert!(
        problem.contains("boolean `true`, expected a percentage or a table"),
        "{problem}"
    );
    // The good forms still read as before.
    let c = parse(&format!(
        "{ROLLOUT_HEAD}steps = [1, \"12.5\", 30.5, {{ weight = 100, hold = \"2m\", approve = true }}]\n\
         rollback = {{ steps = [10, 0], hold = \"1s\" }}\n"
    ))
    .unwrap();
    let r = &c.services[0].rollout;
    let steps: Vec<(u16, bool)> = r.steps.iter().map(|s| (s.weight_bp, s.approve)).collect();
    assert_eq!(
        steps,
        [(100, false), (1250, false), (3050, false), (10_000, true)]
    );
    assert_eq!(r.steps[3].hold, Duration::from_secs(120));
    assert_ne!(r.rollback, RollbackPolicy::Immediate);
}

/// The sections of examples/shifter.toml (commented-out ones too) by table path, each with
/// the text that documents it.
fn example_sections() -> BTreeMap<String, String> {
    let text = include_str!("../../../examples/shifter.toml");
    let mut sections = BTreeMap::<String, String>::new();
    let mut current = String::new();
    for line in text.lines() {
        let bare = line.trim_start_matches('#').trim();
        if bare.starts_with('[') && bare.ends_with(']') && !bare.contains(' ') {
            current = bare.trim_matches(['[', ']']).to_owned();
        }
        let section = sections.entry(current.clone()).or_default();
        section.push_str(line);
        section.push('\n');
    }
    sections
}

/// The keys serde accepts in the table at `path`, read from its answer to an unknown key.
fn accepted_keys(path: &str, text: &str) -> Vec<String> {
    let problem = syntax_problem(text);
    let Some((_, expected)) = problem.split_once("expected ") else {
        panic!("{path}: {problem}");
    };
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_key_of_every_table_is_in_the_example_configuration() {
    const BOGUS: &str = "not_a_key_of_ours = 1\n";
    const SERVICE: &str = "[[services]]\n";
    // Each table, reached with nothing else in it, so serde's first complaint is the bogus
    // key and lists every key the table takes.
    let tables = [
        ("", BOGUS.to_owned()),
        ("daemon", format!("[daemon]\n{BOGUS}")),
        ("daemon.grant", format!("[[daemon.grant]]\n{BOGUS}")),
        ("daemon.notify", format!("[[daemon.notify]]\n{BOGUS}")),
        ("interfaces", format!("[[interfaces]]\n{BOGUS}")),
        ("services", format!("{SERVICE}{BOGUS}")),
        (
            "services.health",
            format!("{SERVICE}[services.health]\n{BOGUS}"),
        ),
        (
            "services.rollout",
            format!("{SERVICE}[services.rollout]\n{BOGUS}"),
        ),
        (
            "services.rollout",
            format!(
                "{SERVICE}[services.rollout]\nsteps = [{{ {} }}]\n",
                BOGUS.trim()
            ),
        ),
        (
            "services.rollout",
            format!(
                "{SERVICE}[services.rollout]\nrollback = {{ {} }}\n",
                BOGUS.trim()
            ),
        ),
        (
            "services.rollout.analysis",
            format!("{SERVICE}[[services.rollout.analysis]]\n{BOGUS}"),
        ),
        (
            "services.rollout.webhook",
            format!("{SERVICE}[[services.rollout.webhook]]\n{BOGUS}"),
        ),
        ("fleet", format!("[fleet]\n{BOGUS}")),
    ];
    let sections = example_sections();
    let mut missing = Vec::new();
    let mut checked = 0;
    for (path, text) in &tables {
        let keys = accepted_keys(path, text);
        assert!(keys.len() > 1, "{path}: {keys:?}");
        let section = sections
            .get(*path)
            .unwrap_or_else(|| panic!("examples/shifter.toml has no [{path}] section"));
        for key in keys {
            // A sub-table is documented by its own section header.
            let sub_table = sections.contains_key(&format!("{path}.{key}"))
                || (path.is_empty() && sections.contains_key(&key));
            let documented = section.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} ="))
                    || l.contains(&format!("{{ {key} ="))
                    || l.contains(&format!(", {key} ="))
            });
            if !(documented || sub_table) {
                missing.push(format!("[{path}] {key}"));
            }
            checked += 1;
        }
    }
    assert!(
        checked > 80,
        "only {checked} keys found: is serde's message still parsed?"
    );
    assert!(
        missing.is_empty(),
        "keys the daemon accepts but examples/shifter.toml does not show: {missing:?}"
    );
}
