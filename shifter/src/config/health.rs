//! `[services.health]`: one check definition, run against blue and against green. The TOML
//! shape (`RawHealth`, unknown fields refused) and its validated form; problems are named
//! with their full field (`services[0].health.kind`).
//!
//! ```toml
//! [services.health]
//! kind = "http"                # tcp | http | https | exec
//! path = "/healthz"
//! status = "200-399"           # or 200
//! host = "app.example"         # optional Host header
//! interval = "2s"              # defaults: 2s, 1s, 0s, rise 2, fall 3
//! timeout = "1s"
//! jitter = "200ms"
//! rise = 2
//! fall = 3
//! port_offset = 1000           # check backend port + 1000 (a separate health endpoint)
//! # https only:
//! ca = "/etc/shifter/ca.pem"   # default: the system's roots
//! server_name = "app.example"  # verified and sent as SNI; default: host, else address
//! client_cert = "/etc/shifter/client.pem"   # with client_key
//! client_key = "/etc/shifter/client.key"
//! ```

use std::{fmt, net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};

use super::{FieldError, Number, Problems, duration, duration_within};

/// Default interval between two checks of one backend.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default time a single check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive successes that make a backend healthy (HAProxy's default).
pub const DEFAULT_RISE: u32 = 2;
/// Consecutive failures that make a backend unhealthy (HAProxy's default).
pub const DEFAULT_FALL: u32 = 3;

/// `[services.health]` as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub kind: Option<String>,
    pub address: Option<String>,
    pub path: Option<String>,
    pub status: Option<Number>,
    pub host: Option<String>,
    pub command: Option<Vec<String>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub jitter: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub port_offset: Option<i64>,
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

/// Inclusive range of accepted HTTP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

impl StatusRange {
    pub const fn contains(&self, status: u16) -> bool {
        self.min <= status && status <= self.max
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// What one check does against a backend (address + backend port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CheckKind {
    /// A TCP connection is accepted within the timeout.
    Tcp,
    /// `GET path` over HTTP/1.1 answers with a status in `status`.
    Http {
        path: String,
        status: StatusRange,
        host: Option<String>,
    },
    /// The same over TLS (rustls), the certificate verified with `tls`.
    Https {
        path: String,
        status: StatusRange,
        host: Option<String>,
        tls: super::TlsSettings,
    },
    /// The command exits with status 0 within the timeout (killed otherwise). `{port}` and
    /// `{address}` in its arguments are replaced; it also gets `SHIFTER_BACKEND_PORT` and
    /// `SHIFTER_BACKEND_ADDRESS` in its environment.
    Exec { command: Vec<String> },
}

/// Validated health-check settings of a service (applied to blue and to green).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSettings {
    pub check: CheckKind,
    /// Address the backends listen on (default 127.0.0.1).
    pub address: IpAddr,
    pub interval: Duration,
    pub timeout: Duration,
    /// Each wait is `interval + random(0..=jitter)`.
    pub jitter: Duration,
    pub rise: u32,
    pub fall: u32,
    /// The check runs against `backend port + port_offset` (a separate health endpoint,
    /// e.g. a management port); verdicts still name the backend port.
    #[serde(default)]
    pub port_offset: i32,
}

impl HealthSettings {
    /// The port a check of the backend on `port` connects to.
    pub fn check_port(&self, port: u16) -> u16 {
        u16::try_from(i32::from(port) + self.port_offset).unwrap_or(port)
    }

    /// Settings with the defaults for a check kind.
    pub fn new(check: CheckKind) -> Self {
        Self {
            check,
            address: IpAddr::from([127, 0, 0, 1]),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            jitter: Duration::ZERO,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            port_offset: 0,
        }
    }

    /// Validates `raw`; problems are named `prefix.field`.
    pub fn from_raw(raw: &RawHealth, prefix: &str) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::new(prefix);
        let check = check_kind(&mut p, raw);
        let address = match raw.address.as_deref() {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(a) => match a.parse::<IpAddr>() {
                Ok(ip) if !ip.is_unspecified() => ip,
                _ => {
                    p.add("address", format!("{a:?} is not a usable IP address"));
                    IpAddr::from([127, 0, 0, 1])
                }
            },
        };
        let (interval, timeout, jitter) = timing(&mut p, raw);
        let threshold = |p: &mut Problems, field: &str, v: Option<i64>, default: u32| match v {
            None => default,
            Some(n) if (1..=100).contains(&n) => n as u32,
            Some(n) => {
                p.add(field, format!("{n} is outside 1..=100"));
                default
            }
        };
        let rise = threshold(&mut p, "rise", raw.rise, DEFAULT_RISE);
        let fall = threshold(&mut p, "fall", raw.fall, DEFAULT_FALL);
        let port_offset = match raw.port_offset {
            None => 0,
            Some(n) if (-65535..=65535).contains(&n) => n as i32,
            Some(n) => {
                p.add("port_offset", format!("{n} is outside -65535..=65535"));
                0
            }
        };
        p.finish(Self {
            port_offset,
            check,
            address,
            interval,
            timeout,
            jitter,
            rise,
            fall,
        })
    }
}

/// The check and its kind's fields (`path`, `status`, `host` for http, `command` for exec).
fn check_kind(p: &mut Problems, raw: &RawHealth) -> CheckKind {
    let kind = raw.kind.as_deref().unwrap_or("tcp");
    if !matches!(kind, "tcp" | "http" | "https" | "exec") {
        p.add(
            "kind",
            format!("{kind:?} is not a check kind (expected tcp, http, https or exec)"),
        );
        return CheckKind::Tcp;
    }
    let mut only = |field: &str, set: bool, kinds: &str| {
        if set {
            p.add(field, format!("is only used by {kinds} checks, not {kind}"));
        }
    };
    let web = matches!(kind, "http" | "https");
    only("path", raw.path.is_some() && !web, "http and https");
    only("status", raw.status.is_some() && !web, "http and https");
    only("host", raw.host.is_some() && !web, "http and https");
    only("command", raw.command.is_some() && kind != "exec", "exec");
    for (field, v) in [
        ("ca", &raw.ca),
        ("server_name", &raw.server_name),
        ("client_cert", &raw.client_cert),
        ("client_key", &raw.client_key),
    ] {
        only(field, v.is_some() && kind != "https", "https");
    }
    match kind {
        "tcp" => CheckKind::Tcp,
        "http" => http_check(p, raw),
        "https" => match http_check(p, raw) {
            CheckKind::Http { path, status, host } => CheckKind::Https {
                path,
                status,
                host,
                tls: tls_settings(p, raw),
            },
            other => other,
        },
        _ => exec_check(p, raw),
    }
}

/// The TLS fields of an https check; the files are read and parsed now, so a bad one is a
/// configuration error. The system roots are only loaded by the checks.
fn tls_settings(p: &mut Problems, raw: &RawHealth) -> super::TlsSettings {
    let path = |p: &mut Problems, field: &str, v: &Option<String>| {
        v.as_ref().and_then(|s| {
            let pb = std::path::PathBuf::from(s);
            if pb.is_absolute() {
                Some(pb)
            } else {
                p.add(field, format!("{s:?} is not an absolute path"));
                None
            }
        })
    };
    let tls = super::TlsSettings {
        ca: path(p, "ca", &raw.ca),
        server_name: raw.server_name.clone(),
        client_cert: path(p, "client_cert", &raw.client_cert),
        client_key: path(p, "client_key", &raw.client_key),
    };
    if let Some(n) = &tls.server_name
        && !super::TlsSettings::valid_name(n)
    {
        p.add(
            "server_name",
            format!("{n:?} is not a DNS name or an IP address"),
        );
    }
    let mut check = tls.clone();
    match (&tls.client_cert, &tls.client_key) {
        (Some(_), None) => p.add("client_key", "is required with client_cert"),
        (None, Some(_)) => p.add("client_cert", "is required with client_key"),
        _ => {}
    }
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        // The pair is reported above; the CA file is still checked.
        (check.client_cert, check.client_key) = (None, None);
    }
    if (check.ca.is_some() || check.client_cert.is_some())
        && let Err((field, message)) = check.client_config()
    {
        p.add(field, message);
    }
    tls
}

/// `interval`, `timeout` and `jitter`, checked against each other.
fn timing(p: &mut Problems, raw: &RawHealth) -> (Duration, Duration, Duration) {
    let interval = duration_within(
        p,
        "interval",
        raw.interval.as_deref(),
        DEFAULT_INTERVAL,
        Duration::from_millis(10)..=Duration::from_secs(3600),
    );
    let timeout = duration(p, "timeout", raw.timeout.as_deref(), DEFAULT_TIMEOUT);
    let jitter = duration(p, "jitter", raw.jitter.as_deref(), Duration::ZERO);
    if timeout.is_zero() || timeout > interval {
        p.add(
            "timeout",
            format!(
                "{} must be above 0 and at most the interval ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        );
    }
    if jitter > interval {
        p.add(
            "jitter",
            format!(
                "{} is above the interval ({})",
                humantime::format_duration(jitter),
                humantime::format_duration(interval)
            ),
        );
    }
    (interval, timeout, jitter)
}

fn http_check(p: &mut Problems, raw: &RawHealth) -> CheckKind {
    let path = raw.path.clone().unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
        p.add(
            "path",
            format!("{path:?} is not a request path (starts with '/', no spaces)"),
        );
    }
    let status = match &raw.status {
        None => StatusRange { min: 200, max: 399 },
        Some(n) => match parse_status(&n.text()) {
            Ok(r) => r,
            Err(e) => {
                p.add("status", e);
                StatusRange { min: 200, max: 399 }
            }
        },
    };
    if let Some(h) = &raw.host
        && (h.is_empty() || h.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20))
    {
        p.add("host", format!("{h:?} is not a host name"));
    }
    CheckKind::Http {
        path,
        status,
        host: raw.host.clone(),
    }
}

fn parse_status(text: &str) -> Result<StatusRange, String> {
    let code = |s: &str| match s.trim().parse::<u16>() {
        Ok(c) if (100..=599).contains(&c) => Ok(c),
        _ => Err(format!(
            "{text:?} is not a status or range like 200 or 200-399 (codes 100..=599)"
        )),
    };
    let (min, max) = match text.split_once('-') {
        Some((a, b)) => (code(a)?, code(b)?),
        None => {
            let c = code(text)?;
            (c, c)
        }
    };
    if min > max {
        return Err(format!("{text:?} is an empty range"));
    }
    Ok(StatusRange { min, max })
}

fn exec_check(p: &mut Problems, raw: &RawHealth) -> CheckKind {
    let command = raw.command.clone().unwrap_or_default();
    match command.first() {
        None => p.add(
            "command",
            "is required for exec checks (a list: program and arguments)",
        ),
        Some(prog) if prog.is_empty() => p.add("command[0]", "the program is empty"),
        Some(_) => {}
    }
    CheckKind::Exec { command }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(toml_text: &str) -> Result<HealthSettings, Vec<String>> {
        let raw: RawHealth = toml::from_str(toml_text).expect("toml parses");
        HealthSettings::from_raw(&raw, "services[0].health")
            .map_err(|v| v.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn health_defaults_are_haproxy_like() {
        let h = health("").unwrap();
        assert_eq!(h, HealthSettings::new(CheckKind::Tcp));
        assert_eq!((h.rise, h.fall), (2, 3));
    }

    #[test]
    fn http_health_parses() {
        let h = health(
            r#"kind = "http"
               path = "/healthz"
               status = "200-299"
               host = "app.example"
               interval = "500ms"
               timeout = "250ms"
               jitter = "50ms"
               rise = 1
               fall = 2"#,
        )
        .unwrap();
        assert_eq!(
            h.check,
            CheckKind::Http {
                path: "/healthz".into(),
                status: StatusRange { min: 200, max: 299 },
                host: Some("app.example".into())
            }
        );
        assert_eq!(h.interval, Duration::from_millis(500));
        assert_eq!((h.rise, h.fall), (1, 2));
        let h = health("kind = \"http\"\nstatus = 204").unwrap();
        assert!(
            matches!(h.check, CheckKind::Http { status, .. } if status == StatusRange { min: 204, max: 204 })
        );
    }

    #[test]
    fn health_problems_name_their_field() {
        let e = health(
            r#"kind = "http"
               path = "healthz"
               status = "300-200"
               interval = "soon"
               rise = 0
               command = ["x"]"#,
        )
        .unwrap_err();
        let want = [
            "services[0].health.command: is only used by exec checks, not http",
            "services[0].health.path: \"healthz\" is not a request path (starts with '/', no spaces)",
            "services[0].health.status: \"300-200\" is an empty range",
            "services[0].health.rise: 0 is outside 1..=100",
        ];
        for w in want {
            assert!(e.iter().any(|x| x == w), "missing {w:?} in {e:#?}");
        }
        assert!(
            e.iter()
                .any(|x| x.starts_with("services[0].health.interval: \"soon\" is not a duration")),
            "{e:#?}"
        );
        let e = health("kind = \"exec\"").unwrap_err();
        assert_eq!(
            e,
            [
                "services[0].health.command: is required for exec checks (a list: program and arguments)"
            ]
        );
        let e = health("kind = \"udp\"").unwrap_err();
        assert_eq!(
            e,
            [
                "services[0].health.kind: \"udp\" is not a check kind (expected tcp, http, https or exec)"
            ]
        );
        let e = health("interval = \"1s\"\ntimeout = \"2s\"").unwrap_err();
        assert_eq!(
            e,
            ["services[0].health.timeout: 2s must be above 0 and at most the interval (1s)"]
        );
        assert!(toml::from_str::<RawHealth>("intervall = \"1s\"").is_err());
    }
}
