//! `[fleet]`: this daemon is an agent of a fleet whose state lives in etcd v3.
//!
//! ```toml
//! [fleet]
//! endpoints = ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
//! node = "web-1"                 # default: the host name
//! labels = { zone = "a" }
//! prefix = "/shifter/"           # every key lives under it
//! lease_ttl = "10s"              # heartbeat lease; whole seconds
//! poll_interval = "1s"           # how often the desired state is read
//! request_timeout = "2s"         # one etcd request, before the next endpoint is tried
//! # With https:// endpoints (all or none):
//! ca = "/etc/shifter/etcd-ca.pem"          # default: the system's roots
//! client_cert = "/etc/shifter/etcd-client.pem"   # with client_key, for --client-cert-auth
//! client_key = "/etc/shifter/etcd-client-key.pem"
//! server_name = "etcd.internal"  # the name the members' certificates carry; default: each host
//! ```

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use super::{Problems, duration_within};

pub const DEFAULT_FLEET_PREFIX: &str = "/shifter/";
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A validated `[fleet]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    pub endpoints: Vec<String>,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub prefix: String,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    pub request_timeout: Duration,
    /// With https:// endpoints: how the members are verified and who we are to them.
    pub tls: Option<super::TlsSettings>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    endpoints: Option<Vec<String>>,
    node: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    prefix: Option<String>,
    lease_ttl: Option<String>,
    poll_interval: Option<String>,
    request_timeout: Option<String>,
    ca: Option<std::path::PathBuf>,
    client_cert: Option<std::path::PathBuf>,
    client_key: Option<std::path::PathBuf>,
    server_name: Option<String>,
}

/// A node name or label: letters, digits, `.`, `_`, `-`; 1..=63 bytes (it is part of keys).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `http://HOST:PORT` or `https://HOST:PORT` (etcd's JSON gateway, plain or over TLS).
pub fn valid_endpoint(s: &str) -> bool {
    s.strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .map(|a| a.trim_end_matches('/'))
        .and_then(|a| a.rsplit_once(':'))
        .is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Records what is wrong with the etcd endpoints; says whether they are https://.
fn endpoint_problems(endpoints: &[String], p: &mut Problems) -> bool {
    if endpoints.is_empty() {
        p.add("fleet.endpoints", "at least one etcd endpoint is needed");
    }
    for (i, e) in endpoints.iter().enumerate() {
        if !valid_endpoint(e) {
            p.add(
                format!("fleet.endpoints[{i}]"),
                format!("{e:?} is not http://HOST:PORT or https://HOST:PORT"),
            );
        }
    }
    let https = endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    if https != 0 && https != endpoints.len() {
        p.add("fleet.endpoints", "all http:// or all https://, not both");
    }
    https > 0
}

pub(super) fn validate(f: RawFleet, p: &mut Problems) -> FleetConfig {
    let endpoints = f.endpoints.unwrap_or_default();
    let https = endpoint_problems(&endpoints, p);
    let tls = tls_settings(
        &f.ca,
        &f.client_cert,
        &f.client_key,
        &f.server_name,
        https,
        p,
    );
    let node = f.node.unwrap_or_else(host_name);
    if !valid_name(&node) {
        p.add(
            "fleet.node",
            format!("{node:?} is not a name of letters, digits, '.', '_' or '-' (at most 63)"),
        );
    }
    for (k, v) in &f.labels {
        if !valid_name(k) || !valid_name(v) {
            p.add(
                format!("fleet.labels.{k}"),
                format!("{k:?} = {v:?}: labels are names of letters, digits, '.', '_' or '-'"),
            );
        }
    }
    let prefix = f.prefix.unwrap_or_else(|| DEFAULT_FLEET_PREFIX.to_owned());
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.contains("//") {
        p.add(
            "fleet.prefix",
            format!("{prefix:?} must start with '/' and name a directory, e.g. \"/shifter/\""),
        );
    }
    let lease_ttl = duration_within(
        p,
        "fleet.lease_ttl",
        f.lease_ttl.as_deref(),
        DEFAULT_LEASE_TTL,
        Duration::from_secs(1)..=Duration::from_secs(3600),
    );
    if lease_ttl.subsec_nanos() != 0 {
        p.add(
            "fleet.lease_ttl",
            format!(
                "{} is not whole seconds (etcd leases are)",
                humantime::format_duration(lease_ttl)
            ),
        );
    }
    let poll_interval = duration_within(
        p,
        "fleet.poll_interval",
        f.poll_interval.as_deref(),
        DEFAULT_POLL_INTERVAL,
        Duration::from_millis(10)..=Duration::from_secs(60),
    );
    let request_timeout = duration_within(
        p,
        "fleet.request_timeout",
        f.request_timeout.as_deref(),
        DEFAULT_REQUEST_TIMEOUT,
        Duration::from_millis(100)..=Duration::from_secs(60),
    );
    FleetConfig {
        endpoints,
        node,
        labels: f.labels,
        prefix: if prefix.ends_with('/') {
            prefix
        } else {
            format!("{prefix}/")
        },
        lease_ttl,
        poll_interval,
        request_timeout,
        tls,
    }
}

/// The TLS settings of https:// endpoints, their files read once here so a bad one is a
/// configuration error; TLS keys without https:// endpoints are one too.
fn tls_settings(
    ca: &Option<std::path::PathBuf>,
    client_cert: &Option<std::path::PathBuf>,
    client_key: &Option<std::path::PathBuf>,
    server_name: &Option<String>,
    https: bool,
    p: &mut Problems,
) -> Option<super::TlsSettings> {
    let settings = super::TlsSettings {
        ca: ca.clone(),
        server_name: server_name.clone(),
        client_cert: client_cert.clone(),
        client_key: client_key.clone(),
    };
    if !https {
        if settings != super::TlsSettings::default() {
            p.add(
                "fleet.ca",
                "ca, client_cert, client_key and server_name need https:// endpoints",
            );
        }
        return None;
    }
    if let Some(name) = server_name
        && !super::TlsSettings::valid_name(name)
    {
        p.add(
            "fleet.server_name",
            format!("{name:?} is not a DNS name or an IP address"),
        );
    }
    if let Err((field, message)) = settings.client_config() {
        p.add(format!("fleet.{field}"), message);
    }
    Some(settings)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;

    fn fleet(body: &str) -> Result<super::FleetConfig, Vec<String>> {
        Config::parse(&format!("[fleet]\n{body}"), Path::new("t.toml"))
            .map(|c| c.fleet.expect("[fleet] given"))
            .map_err(|e| e.problems())
    }

    #[test]
    fn fleet_section_parses_with_defaults() {
        let f = fleet(
            "endpoints = [\"http://127.0.0.1:2379\"]\nnode = \"h1\"\nlabels = { zone = \"a\" }",
        )
        .unwrap();
        assert_eq!(f.node, "h1");
        assert_eq!(f.labels["zone"], "a");
        assert_eq!(f.prefix, "/shifter/");
        assert_eq!(f.lease_ttl, super::DEFAULT_LEASE_TTL);
        let f = fleet("endpoints = [\"http://e:1\"]\nnode = \"h\"\nprefix = \"/x\"\nlease_ttl = \"2s\"\npoll_interval = \"50ms\"")
            .unwrap();
        assert_eq!(f.prefix, "/x/");
        assert_eq!(f.poll_interval.as_millis(), 50);
        assert!(Config::parse("", Path::new("t")).unwrap().fleet.is_none());
    }

    /// The commented `[fleet]` block of examples/shifter.toml, uncommented, is valid and
    /// says what it documents.
    #[test]
    fn example_fleet_section_is_valid() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/shifter.toml"
        ))
        .expect("examples/shifter.toml");
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "# [fleet]")
            .take_while(|l| l.starts_with("# "))
            .map(|l| &l[2..])
            .collect();
        assert!(block.len() > 5, "no [fleet] block in the example");
        let f = Config::parse(&block.join("\n"), Path::new("example"))
            .unwrap_or_else(|e| panic!("{:?}", e.problems()))
            .fleet
            .expect("[fleet]");
        assert_eq!(f.node, "web-1");
        assert_eq!(f.endpoints.len(), 3);
        assert_eq!(f.labels["zone"], "a");
        assert_eq!(f.lease_ttl, super::DEFAULT_LEASE_TTL);
        assert_eq!(f.poll_interval, super::DEFAULT_POLL_INTERVAL);
        assert_eq!(f.request_timeout, super::DEFAULT_REQUEST_TIMEOUT);
    }

    #[test]
    fn fleet_problems_name_their_field() {
        let e = fleet("node = \"a/b\"\nendpoints = [\"https://e\", \"e:2\"]\nlabels = { zone = \"\" }\nprefix = \"x\"\nlease_ttl = \"1500ms\"\npoll_interval = \"2h\"\nrequest_timeout = \"soon\"")
            .unwrap_err();
        let want = [
            "fleet.endpoints[0]: \"https://e\" is not http://HOST:PORT or https://HOST:PORT",
            "fleet.endpoints[1]: \"e:2\" is not http://HOST:PORT or https://HOST:PORT",
            "fleet.node: \"a/b\" is not a name of letters, digits, '.', '_' or '-' (at most 63)",
            "fleet.labels.zone: \"zone\" = \"\": labels are names of letters, digits, '.', '_' or '-'",
            "fleet.prefix: \"x\" must start with '/' and name a directory, e.g. \"/shifter/\"",
            "fleet.lease_ttl: 1s 500ms is not whole seconds (etcd leases are)",
            "fleet.poll_interval: 2h is outside 10ms..=1m",
        ];
        for w in want {
            assert!(e.iter().any(|x| x == w), "missing {w:?} in {e:#?}");
        }
        assert!(
            e.iter()
                .any(|x| x.starts_with("fleet.request_timeout: \"soon\"")),
            "{e:#?}"
        );
        let e = fleet("node = \"h\"").unwrap_err();
        assert_eq!(e, ["fleet.endpoints: at least one etcd endpoint is needed"]);
        let e = fleet("node = \"h\"\nendpoints = [\"http://e:1\"]\ncolour = 1").unwrap_err();
        assert!(e[0].contains("unknown field `colour`"), "{e:?}");
    }

    #[test]
    fn https_endpoints_take_tls_files_read_at_validation() {
        let d = crate::util::TestDir::new("fleet-tls");
        let ca = d.0.join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
        let ok = fleet(&format!(
            "node = \"h\"\nendpoints = [\"https://e:1\", \"https://f:1\"]\nca = \"{}\"\nserver_name = \"etcd.internal\"",
            ca.display()
        ))
        .unwrap();
        let tls = ok.tls.expect("TLS settings");
        assert_eq!(tls.ca.as_deref(), Some(ca.as_path()));
        assert_eq!(tls.server_name.as_deref(), Some("etcd.internal"));
        assert_eq!(
            fleet("node = \"h\"\nendpoints = [\"http://e:1\"]")
                .unwrap()
                .tls,
            None
        );
        for (body, want) in [
            (
                "endpoints = [\"https://e:1\"]\nca = \"/nonexistent/ca.pem\"".to_owned(),
                "fleet.ca: /nonexistent/ca.pem",
            ),
            (
                format!("endpoints = [\"http://e:1\"]\nca = \"{}\"", ca.display()),
                "fleet.ca: ca, client_cert, client_key and server_name need https:// endpoints",
            ),
            (
                "endpoints = [\"http://e:1\", \"https://f:1\"]".to_owned(),
                "fleet.endpoints: all http:// or all https://, not both",
            ),
            (
                format!(
                    "endpoints = [\"https://e:1\"]\nca = \"{}\"\nclient_cert = \"{}\"",
                    ca.display(),
                    ca.display()
                ),
                "fleet.client_key: is required with client_cert",
            ),
        ] {
            let e = fleet(&format!("node = \"h\"\n{body}")).unwrap_err();
            assert!(
                e.iter().any(|x| x.starts_with(want)),
                "want {want:?} in {e:#?}"
            );
        }
    }
}
