//! What `shifter status` and `shifter flows` show while the daemon is not running: the
//! status the daemon would report, read from the pinned maps (and, for legacy TC
//! attachments, which pin nothing, from the daemon's state file). `pid` is 0: no daemon.

use crate::{
    api::types::{FlowEntry, InterfaceStatus, ServiceStatus, Status},
    config::Config,
    dataplane::{self, PinnedMaps, TcMode, flow_clock_ns, linked_interfaces},
};

use super::state::Store;

/// The status for the services of `config` found in the maps (matched by protocol, port and
/// local addresses).
pub fn status(maps: &PinnedMaps, config: &Config) -> dataplane::Result<Status> {
    let live = maps.services()?;
    let per_slot = maps.flow_counts()?;
    let listening = maps.listener_counts()?;
    let mut services = Vec::new();
    for spec in &config.services {
        let Some((slot, svc)) = live.iter().find(|(_, s)| s.same_identity(&spec.service)) else {
            continue;
        };
        let counters = maps.counters(*slot, per_slot.get(slot).copied().unwrap_or_default())?;
        services.push(
            ServiceStatus::new(&spec.name, *slot, svc, counters).with_listeners(svc, &listening),
        );
    }
    let interfaces: Vec<InterfaceStatus> = linked_interfaces(maps.dir())
        .into_iter()
        .filter(|(_, kinds)| kinds.contains("egress"))
        .map(|(name, kinds)| {
            let configured = config.interfaces.iter().find(|i| i.name == name);
            let hook = if kinds.contains("xdp") {
                configured
                    .map(|i| i.hook.to_string())
                    .filter(|h| h.starts_with("xdp"))
                    .unwrap_or_else(|| "xdp".to_owned())
            } else {
                "tc".to_owned()
            };
            InterfaceStatus {
                name,
                hook,
                tc_mode: "tcx".to_owned(),
            }
        })
        .collect();
    Ok(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: 0,
        interfaces: with_legacy_attachments(interfaces, config),
        bpffs_dir: maps.dir().display().to_string(),
        state_dir: config.daemon.state_dir.display().to_string(),
        flow_table_size: maps.flow_capacity(),
        services,
        skipped_packets: dataplane::pinned_skip_counts(maps.dir())?
            .map(|c| c.by_name())
            .unwrap_or_default(),
        // Only a loaded data plane learns it (by loading the programs).
        socket_dispatch_unavailable: None,
        listener_registration_problem: None,
        // Only the running daemon's agent talks to etcd.
        fleet: None,
    })
}

/// The flow entries of the configured service `name`; `None` when the configuration has no
/// such service or the maps do not hold it.
pub fn service_flows(
    maps: &PinnedMaps,
    config: &Config,
    name: &str,
) -> dataplane::Result<Option<Vec<FlowEntry>>> {
    let Some(spec) = config.service(name) else {
        return Ok(None);
    };
    let Some((slot, _)) = maps
        .services()?
        .into_iter()
        .find(|(_, s)| s.same_identity(&spec.service))
    else {
        return Ok(None);
    };
    let now = flow_clock_ns();
    Ok(Some(
        maps.flows(Some(slot))?
            .iter()
            .map(|f| FlowEntry::new(f, now))
            .collect(),
    ))
}

/// Adds the legacy (clsact) attachments the daemon last persisted: they pin no links, so
/// `interfaces` (from the pinned links) misses them. They are as the daemon last recorded
/// them (its namespace may not be the reader's, so their existence is not checked here).
fn with_legacy_attachments(
    mut interfaces: Vec<InterfaceStatus>,
    config: &Config,
) -> Vec<InterfaceStatus> {
    let state = Store::new(&config.daemon.state_dir).load().state;
    for (name, a) in state.attachments {
        if a.tc_mode == TcMode::Tcx.to_string() || interfaces.iter().any(|i| i.name == name) {
            continue;
        }
        interfaces.push(InterfaceStatus {
            name,
            hook: a.hook,
            tc_mode: a.tc_mode,
        });
    }
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    interfaces
}
