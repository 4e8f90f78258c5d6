//! `[daemon]`: the control socket, the state and pin directories, the flow table, metrics.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use shifter_common::DEFAULT_FLOW_CAPACITY;

use super::{
    Number, Problems,
    grants::{self, Grant, RawGrant, ReadAccess},
};
use crate::paths;

/// Smallest and largest flow table accepted.
pub const FLOW_TABLE_MIN: u32 = 64;
pub const FLOW_TABLE_MAX: u32 = 1 << 24;
/// Default interval between idle-flow sweeps.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Default mode of the control socket.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

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
    /// `[[daemon.grant]]`: rights per service for peers outside root and the socket group.
    pub grants: Vec<Grant>,
    /// `daemon.read_access`: whether reading needs a `read` grant too.
    pub read_access: ReadAccess,
    /// `[[daemon.notify]]`: where every rollout event is sent.
    pub notify: Vec<super::webhooks::NotifySettings>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketGroup {
    /// As written in the configuration (a name or a numeric gid).
    pub name: String,
    pub gid: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    socket: Option<String>,
    socket_group: Option<Number>,
    socket_mode: Option<Number>,
    state_dir: Option<String>,
    bpffs_dir: Option<String>,
    flow_table_size: Option<i64>,
    metrics_address: Option<String>,
    sweep_interval_secs: Option<i64>,
    read_access: Option<String>,
    #[serde(default)]
    grant: Vec<RawGrant>,
    #[serde(default)]
    notify: Vec<super::webhooks::RawNotify>,
}

pub(super) fn validate(d: RawDaemon, p: &mut Problems) -> DaemonConfig {
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
    let grants = grants::validate(d.grant, socket_mode, p);
    let read_access = ReadAccess::parse(p, d.read_access.as_deref());
    let notify = super::webhooks::validate_notify(p, &d.notify);
    DaemonConfig {
        grants,
        read_access,
        notify,
        socket,
        socket_group,
        socket_mode,
        state_dir,
        bpffs_dir,
        flow_table_size,
        metrics_address,
        sweep_interval,
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
