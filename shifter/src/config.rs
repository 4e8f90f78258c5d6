//! The daemon's TOML configuration: parsed, then validated completely before anything touches
//! the kernel. Every problem is reported with the field it concerns and the bad value, e.g.
//! `services[2].weight: 12.345 has more than two decimals`.
//!
//! See `examples/shifter.toml` for a commented example.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use shifter_common::{Affinity, DEFAULT_FLOW_CAPACITY, MAX_SERVICES, ServiceConfig};

use crate::{
    Hook, Protocol, Service, paths,
    rollout::config::{FieldProblem, HealthSettings, RawHealth, RawRollout, RolloutSettings},
};

/// Smallest and largest flow table accepted.
pub const FLOW_TABLE_MIN: u32 = 64;
pub const FLOW_TABLE_MAX: u32 = 1 << 24;
/// Default interval between idle-flow sweeps.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Default mode of the control socket.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub interfaces: Vec<InterfaceConfig>,
    pub services: Vec<ServiceSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    /// Group that owns the socket and may change things; `None`: only root may.
    pub socket_group: Option<SocketGroup>,
    pub socket_mode: u32,
    pub state_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    pub flow_table_size: u32,
    pub metrics_address: Option<SocketAddr>,
    pub sweep_interval: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketGroup {
    /// As written in the configuration (a name or a numeric gid).
    pub name: String,
    pub gid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub hook: Hook,
}

/// A named service; `service.config.weight` is the initial weight from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub service: Service,
    /// `[services.health]`: checks of blue and green (none: health counts as passing).
    pub health: Option<HealthSettings>,
    /// `[services.rollout]` (defaults when absent).
    pub rollout: RolloutSettings,
}

/// One problem in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {}", join_errors(.errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

impl ConfigError {
    /// The individual problems (one for read and syntax errors).
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Invalid { errors, .. } => errors.iter().map(ToString::to_string).collect(),
            other => vec![crate::util::error_chain(other)],
        }
    }
}

fn join_errors(errors: &[FieldError]) -> String {
    let v: Vec<String> = errors.iter().map(ToString::to_string).collect();
    v.join("; ")
}

/// Parses a weight in percent with at most two decimals (`"12.5"`, `"0"`, `"100"`) into
/// basis points. The error completes a sentence that starts with the value.
pub fn parse_percent(text: &str) -> Result<u16, String> {
    let t = text.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if t.starts_with('-') {
        return Err("is negative (a weight is 0..=100 percent)".into());
    }
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) {
        return Err("is not a number (expected percent like 12.5)".into());
    }
    if frac.len() > 2 {
        return Err("has more than two decimals".into());
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.trim_start_matches('0')
            .parse::<u64>()
            .or_else(|e| {
                if int.bytes().all(|b| b == b'0') {
                    Ok(0)
                } else {
                    Err(e)
                }
            })
            .map_err(|_| "is outside 0..=100".to_owned())?
    };
    let frac: u64 = format!("{frac:0<2}").parse().unwrap_or(0);
    let bp = int.saturating_mul(100).saturating_add(frac);
    if bp > 10_000 {
        return Err("is outside 0..=100".into());
    }
    Ok(bp as u16)
}

/// Formats basis points as percent with two decimals (`1250` -> `12.50`).
pub fn format_percent(bp: u16) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

/// A number as written in TOML or JSON: its shortest decimal text. (Rust prints floats
/// without exponent and with the fewest digits that read back the same value.)
pub fn number_text(v: f64) -> Result<String, String> {
    if !v.is_finite() {
        return Err("is not a finite number".into());
    }
    if v == 0.0 && v.is_sign_negative() {
        return Ok("-0".into());
    }
    Ok(format!("{v}"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Number {
    fn text(&self) -> Result<String, String> {
        match self {
            Self::Int(i) => Ok(i.to_string()),
            Self::Float(f) => number_text(*f),
            Self::Text(s) => Ok(s.clone()),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    interfaces: Vec<RawInterface>,
    #[serde(default)]
    services: Vec<RawService>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    socket: Option<String>,
    socket_group: Option<Number>,
    socket_mode: Option<Number>,
    state_dir: Option<String>,
    bpffs_dir: Option<String>,
    flow_table_size: Option<i64>,
    metrics_address: Option<String>,
    sweep_interval_secs: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: String,
    hook: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    protocol: Option<String>,
    port: i64,
    #[serde(default)]
    local_addresses: Vec<String>,
    blue_port: i64,
    green_port: i64,
    weight: Option<Number>,
    affinity: Option<String>,
    health: Option<RawHealth>,
    rollout: Option<RawRollout>,
}

/// Collects problems while validating.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Takes the problems of a nested section (already named with their full field).
    fn extend(&mut self, list: Vec<FieldProblem>) {
        for f in list {
            self.add(f.field, f.message);
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let mut p = Problems::default();
        let cfg = validate(raw, &mut p);
        if p.0.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                errors: p.0,
            })
        }
    }

    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

fn port(p: &mut Problems, field: String, v: i64) -> u16 {
    match u16::try_from(v) {
        Ok(port) if port != 0 => port,
        _ => {
            p.add(field, format!("{v} is not a port (1..=65535)"));
            0
        }
    }
}

fn abs_path(p: &mut Problems, field: &str, v: Option<String>, default: &str) -> PathBuf {
    let v = v.unwrap_or_else(|| default.to_owned());
    let path = PathBuf::from(&v);
    if !path.is_absolute() {
        p.add(field, format!("{v:?} is not an absolute path"));
    }
    path
}

fn validate(raw: RawConfig, p: &mut Problems) -> Config {
    let d = raw.daemon;
    let socket = abs_path(p, "daemon.socket", d.socket, paths::SOCKET);
    let state_dir = abs_path(p, "daemon.state_dir", d.state_dir, paths::STATE_DIR);
    let bpffs_dir = abs_path(p, "daemon.bpffs_dir", d.bpffs_dir, paths::BPFFS_DIR);
    let socket_group = d.socket_group.and_then(|g| resolve_group(p, &g));
    let socket_mode = match d.socket_mode {
        None => DEFAULT_SOCKET_MODE,
        Some(m) => parse_mode(p, &m),
    };
    let flow_table_size = match d.flow_table_size {
        None => DEFAULT_FLOW_CAPACITY,
        Some(n) => match u32::try_from(n) {
            Ok(n) if (FLOW_TABLE_MIN..=FLOW_TABLE_MAX).contains(&n) => n,
            _ => {
                p.add(
                    "daemon.flow_table_size",
                    format!("{n} is outside {FLOW_TABLE_MIN}..={FLOW_TABLE_MAX}"),
                );
                DEFAULT_FLOW_CAPACITY
            }
        },
    };
    let metrics_address = d
        .metrics_address
        .and_then(|a| match a.parse::<SocketAddr>() {
            Ok(sa) => Some(sa),
            Err(_) => {
                p.add(
                    "daemon.metrics_address",
                    format!("{a:?} is not an address:port (e.g. 127.0.0.1:9464)"),
                );
                None
            }
        });
    let sweep_interval = match d.sweep_interval_secs {
        None => DEFAULT_SWEEP_INTERVAL,
        Some(s) if (1..=3600).contains(&s) => Duration::from_secs(s as u64),
        Some(s) => {
            p.add(
                "daemon.sweep_interval_secs",
                format!("{s} is outside 1..=3600"),
            );
            DEFAULT_SWEEP_INTERVAL
        }
    };

    let mut interfaces = Vec::new();
    let mut seen_ifaces = BTreeSet::new();
    for (i, r) in raw.interfaces.into_iter().enumerate() {
        let f = |k: &str| format!("interfaces[{i}].{k}");
        if !valid_ifname(&r.name) {
            p.add(
                f("name"),
                format!(
                    "{:?} is not an interface name (1..=15 characters, no '/', ':' or spaces)",
                    r.name
                ),
            );
        } else if !seen_ifaces.insert(r.name.clone()) {
            p.add(f("name"), format!("{:?} is listed twice", r.name));
        }
        let hook = match r.hook.as_deref().unwrap_or("tc").parse::<Hook>() {
            Ok(h) => h,
            Err(_) => {
                p.add(
                    f("hook"),
                    format!(
                        "{:?} is not a hook (expected tc, xdp or xdp-generic)",
                        r.hook.unwrap_or_default()
                    ),
                );
                Hook::Tc
            }
        };
        interfaces.push(InterfaceConfig { name: r.name, hook });
    }

    let mut services = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    if raw.services.len() > MAX_SERVICES as usize {
        p.add(
            "services",
            format!(
                "{} services configured; at most {MAX_SERVICES} are supported",
                raw.services.len()
            ),
        );
    }
    for (i, r) in raw.services.into_iter().enumerate() {
        let f = |k: &str| format!("services[{i}].{k}");
        if !valid_name(&r.name) {
            p.add(
                f("name"),
                format!(
                    "{:?} is not a service name (1..=64 of A-Z a-z 0-9 . _ -)",
                    r.name
                ),
            );
        } else if let Some(first) = names.insert(r.name.clone(), i) {
            p.add(
                f("name"),
                format!("{:?} is already the name of services[{first}]", r.name),
            );
        }
        let protocol = match r.protocol.as_deref().unwrap_or("tcp") {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                p.add(
                    f("protocol"),
                    format!("{other:?} is not a protocol (expected tcp or udp)"),
                );
                Protocol::Tcp
            }
        };
        let svc_port = port(p, f("port"), r.port);
        let blue = port(p, f("blue_port"), r.blue_port);
        let green = port(p, f("green_port"), r.green_port);
        if blue != 0 && blue == green {
            p.add(f("green_port"), format!("{green} is also the blue port"));
        }
        if svc_port != 0 && (svc_port == blue || svc_port == green) {
            p.add(
                f("port"),
                format!("{svc_port} is also a backend port of this service"),
            );
        }
        let mut local_addrs = Vec::new();
        for (j, a) in r.local_addresses.iter().enumerate() {
            match a.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() => p.add(
                    format!("services[{i}].local_addresses[{j}]"),
                    format!("{a:?} is the unspecified address (leave local_addresses empty for every address)"),
                ),
                Ok(ip) if local_addrs.contains(&ip) => p.add(
                    format!("services[{i}].local_addresses[{j}]"),
                    format!("{a:?} is listed twice"),
                ),
                Ok(ip) => local_addrs.push(ip),
                Err(_) => p.add(
                    format!("services[{i}].local_addresses[{j}]"),
                    format!("{a:?} is not an IP address"),
                ),
            }
        }
        local_addrs.sort();
        let weight = match &r.weight {
            None => 0,
            Some(n) => match n
                .text()
                .and_then(|t| parse_percent(&t).map_err(|e| format!("{t} {e}")))
            {
                Ok(bp) => bp,
                Err(e) => {
                    p.add(f("weight"), e);
                    0
                }
            },
        };
        let affinity = match r.affinity.as_deref().unwrap_or("connection") {
            "connection" => Affinity::Connection,
            "client" => Affinity::Client,
            other => {
                p.add(
                    f("affinity"),
                    format!("{other:?} is not an affinity (expected connection or client)"),
                );
                Affinity::Connection
            }
        };
        let health = r.health.as_ref().and_then(|h| {
            HealthSettings::from_raw(h, &format!("services[{i}].health"))
                .map_err(|e| p.extend(e))
                .ok()
        });
        if let Some(h) = &health
            && h.port_offset != 0
        {
            for (what, port) in [("blue_port", blue), ("green_port", green)] {
                let checked = i32::from(port) + h.port_offset;
                if port != 0 && !(1..=65535).contains(&checked) {
                    p.add(
                        f("health.port_offset"),
                        format!(
                            "{} puts the check of {what} {port} at {checked}, outside 1..=65535",
                            h.port_offset
                        ),
                    );
                }
            }
        }
        let rollout = match &r.rollout {
            None => RolloutSettings::default(),
            Some(raw) => RolloutSettings::from_raw(raw, &format!("services[{i}].rollout"))
                .unwrap_or_else(|e| {
                    p.extend(e);
                    RolloutSettings::default()
                }),
        };
        services.push(ServiceSpec {
            health,
            rollout,
            name: r.name,
            service: Service {
                protocol,
                port: svc_port,
                local_addrs,
                config: ServiceConfig {
                    blue_port: blue,
                    green_port: green,
                    weight,
                    affinity,
                },
            },
        });
    }
    // Conflicts between services, as the data plane would reject them.
    for (i, a) in services.iter().enumerate() {
        for (j, b) in services.iter().enumerate().take(i) {
            let (sa, sb) = (&a.service, &b.service);
            if sa.port == 0 || sb.port == 0 {
                continue;
            }
            if sa.protocol == sb.protocol
                && sa.port == sb.port
                && sa.keys().iter().any(|k| sb.keys().contains(k))
            {
                p.add(
                    format!("services[{i}].port"),
                    format!(
                        "{} {} overlaps services[{j}] ({:?}) on the same addresses",
                        sa.protocol, sa.port, b.name
                    ),
                );
            }
            for (x, xi, y, yj) in [(sa, i, sb, j), (sb, j, sa, i)] {
                if [y.config.blue_port, y.config.green_port].contains(&x.port) {
                    p.add(
                        format!("services[{xi}].port"),
                        format!("{} is a backend port of services[{yj}]", x.port),
                    );
                }
            }
        }
    }
    Config {
        daemon: DaemonConfig {
            socket,
            socket_group,
            socket_mode,
            state_dir,
            bpffs_dir,
            flow_table_size,
            metrics_address,
            sweep_interval,
        },
        interfaces,
        services,
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s != "."
        && s != ".."
}

fn valid_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && !s
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
        && s != "."
        && s != ".."
}

fn parse_mode(p: &mut Problems, m: &Number) -> u32 {
    let field = "daemon.socket_mode";
    let parsed = match m {
        Number::Int(i) => u32::try_from(*i).ok(),
        Number::Text(t) => u32::from_str_radix(t.trim_start_matches("0o"), 8).ok(),
        Number::Float(_) => None,
    };
    let shown = match m {
        Number::Int(i) => format!("0o{i:o}"),
        Number::Text(t) => format!("{t:?}"),
        Number::Float(f) => f.to_string(),
    };
    match parsed {
        Some(mode) if mode <= 0o777 && mode & 0o600 == 0o600 => mode,
        Some(_) => {
            p.add(
                field,
                format!("{shown} must be at most 0777 and give the owner read and write"),
            );
            DEFAULT_SOCKET_MODE
        }
        None => {
            p.add(
                field,
                format!("{shown} is not an octal mode (e.g. \"0660\")"),
            );
            DEFAULT_SOCKET_MODE
        }
    }
}

fn resolve_group(p: &mut Problems, g: &Number) -> Option<SocketGroup> {
    let field = "daemon.socket_group";
    let name = match g {
        Number::Int(i) => i.to_string(),
        Number::Text(t) => t.clone(),
        Number::Float(f) => {
            p.add(field, format!("{f} is not a group name or gid"));
            return None;
        }
    };
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return match name.parse::<u32>() {
            Ok(gid) => Some(SocketGroup { name, gid }),
            Err(_) => {
                p.add(field, format!("{name} is not a gid"));
                None
            }
        };
    }
    match nix::unistd::Group::from_name(&name) {
        Ok(Some(grp)) => Some(SocketGroup {
            name,
            gid: grp.gid.as_raw(),
        }),
        Ok(None) => {
            p.add(field, format!("{name:?}: no such group"));
            None
        }
        Err(e) => {
            p.add(field, format!("{name:?}: cannot look the group up: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                "services[0].health.kind: \"ping\" is not a check kind (expected tcp, http or exec)",
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
}
