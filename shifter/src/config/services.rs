//! `[[services]]`: each service's ports, addresses, weight and affinity, its
//! `[services.health]` and `[services.rollout]`, and the conflicts between services.

use std::{collections::BTreeMap, net::IpAddr};

use serde::Deserialize;
use shifter_common::{Affinity, Dispatch, MAX_SERVICES, ServiceConfig};

use super::{FieldError, HealthSettings, Number, Problems, RawHealth, RawRollout, RolloutSettings};
use crate::model::{Protocol, Service};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    name: String,
    protocol: Option<String>,
    port: i64,
    #[serde(default)]
    local_addresses: Vec<String>,
    blue_port: i64,
    green_port: i64,
    weight: Option<Number>,
    affinity: Option<String>,
    dispatch: Option<String>,
    health: Option<RawHealth>,
    rollout: Option<RawRollout>,
}

pub(super) fn validate(raw: Vec<RawService>, p: &mut Problems) -> Vec<ServiceSpec> {
    if raw.len() > MAX_SERVICES as usize {
        p.add(
            "services",
            format!(
                "{} services configured; at most {MAX_SERVICES} are supported",
                raw.len()
            ),
        );
    }
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let services: Vec<ServiceSpec> = raw
        .into_iter()
        .enumerate()
        .map(|(i, r)| service(i, r, &mut names, p))
        .collect();
    conflicts(&services, p);
    services
}

/// One `[[services]]` entry (`services[i]`).
fn service(
    i: usize,
    r: RawService,
    names: &mut BTreeMap<String, usize>,
    p: &mut Problems,
) -> ServiceSpec {
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
    let [svc_port, blue, green] = ports(i, &r, p);
    let local_addrs = local_addresses(i, &r.local_addresses, p);
    let weight = match &r.weight {
        None => 0,
        Some(n) => n.weight().map_or_else(
            |e| {
                p.add(f("weight"), e);
                0
            },
            crate::model::Weight::bp,
        ),
    };
    let affinity = affinity(i, r.affinity.as_deref(), p);
    let dispatch = dispatch(i, r.dispatch.as_deref(), protocol, p);
    let health = health(i, r.health.as_ref(), [blue, green], p);
    let rollout = match &r.rollout {
        None => RolloutSettings::default(),
        Some(raw) => RolloutSettings::from_raw(raw, &format!("services[{i}].rollout"))
            .unwrap_or_else(|e| {
                p.extend(e);
                RolloutSettings::default()
            }),
    };
    ServiceSpec {
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
                dispatch,
            },
        },
    }
}

fn affinity(i: usize, raw: Option<&str>, p: &mut Problems) -> Affinity {
    match raw.unwrap_or("connection") {
        "connection" => Affinity::Connection,
        "client" => Affinity::Client,
        other => {
            p.add(
                format!("services[{i}].affinity"),
                format!("{other:?} is not an affinity (expected connection or client)"),
            );
            Affinity::Connection
        }
    }
}

fn dispatch(i: usize, raw: Option<&str>, protocol: Protocol, p: &mut Problems) -> Dispatch {
    let field = || format!("services[{i}].dispatch");
    // TCP defaults to socket dispatch (the data plane falls back to rewrite, logged, where
    // the kernel refuses its programs); UDP can only be rewritten.
    let default = match protocol {
        Protocol::Tcp => "socket",
        Protocol::Udp => "rewrite",
    };
    match raw.unwrap_or(default) {
        "rewrite" => Dispatch::Rewrite,
        "socket" if protocol == Protocol::Udp => {
            p.add(
                field(),
                "socket dispatch is for TCP only (a UDP socket bound to a backend port answers \
                 from that port): use rewrite"
                    .to_owned(),
            );
            Dispatch::Rewrite
        }
        "socket" => Dispatch::Socket,
        other => {
            p.add(
                field(),
                format!("{other:?} is not a dispatch (expected socket or rewrite)"),
            );
            Dispatch::Rewrite
        }
    }
}

/// The service port, blue port and green port (0 where invalid: the problem is recorded).
fn ports(i: usize, r: &RawService, p: &mut Problems) -> [u16; 3] {
    let f = |k: &str| format!("services[{i}].{k}");
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
    [svc_port, blue, green]
}

fn local_addresses(i: usize, raw: &[String], p: &mut Problems) -> Vec<IpAddr> {
    let mut local_addrs = Vec::new();
    for (j, a) in raw.iter().enumerate() {
        let field = format!("services[{i}].local_addresses[{j}]");
        match a.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => p.add(
                field,
                format!("{a:?} is the unspecified address (leave local_addresses empty for every address)"),
            ),
            Ok(ip) if local_addrs.contains(&ip) => p.add(field, format!("{a:?} is listed twice")),
            Ok(ip) => local_addrs.push(ip),
            Err(_) => p.add(field, format!("{a:?} is not an IP address")),
        }
    }
    local_addrs.sort();
    local_addrs
}

/// `[services.health]`, with its port offset checked against the backend ports.
fn health(
    i: usize,
    raw: Option<&RawHealth>,
    backends: [u16; 2],
    p: &mut Problems,
) -> Option<HealthSettings> {
    let h = raw.and_then(|h| {
        HealthSettings::from_raw(h, &format!("services[{i}].health"))
            .map_err(|e: Vec<FieldError>| p.extend(e))
            .ok()
    })?;
    if h.port_offset != 0 {
        for (what, port) in [("blue_port", backends[0]), ("green_port", backends[1])] {
            let checked = i32::from(port) + h.port_offset;
            if port != 0 && !(1..=65535).contains(&checked) {
                p.add(
                    format!("services[{i}].health.port_offset"),
                    format!(
                        "{} puts the check of {what} {port} at {checked}, outside 1..=65535",
                        h.port_offset
                    ),
                );
            }
        }
    }
    Some(h)
}

/// Conflicts between services, as the data plane would reject them.
fn conflicts(services: &[ServiceSpec], p: &mut Problems) {
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

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s != "."
        && s != ".."
}
