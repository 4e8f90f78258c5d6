//! Read-only access to the maps pinned under the bpffs directory, without the daemon and
//! without loading any program: what `shifter status` and `shifter flows` show when the
//! daemon is not running. Opening a pin needs the rights on the bpffs directory (root).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use shifter_common::{
    BackendCounters, MAP_COUNTERS, MAP_FLOWS, MAP_SERVICE_CONFIG, MAP_SERVICES, MAP_USER_REMOVED,
    ServiceKey, counter_index,
};

use crate::{
    Service,
    api::types::{Counters, FlowEntry, InterfaceStatus, Status},
    attach::TcMode,
    config::Config,
    daemon::engine::{counters_view, flow_entry, service_status},
    error::{Error, Result, map_err},
    flows::Flow,
    service::decode_services,
};

/// The pinned maps of one bpffs directory, opened read-only by use (nothing is written).
pub struct PinnedMaps {
    dir: PathBuf,
    services: HashMap<MapData, ServiceKey, u32>,
    config: Array<MapData, u64>,
    counters: PerCpuArray<MapData, BackendCounters>,
    user_removed: Array<MapData, u64>,
    flows: MapData,
    flow_capacity: u32,
}

fn open_data(dir: &Path, name: &'static str) -> Result<MapData> {
    let path = dir.join(name);
    MapData::from_pin(&path).map_err(|e| Error::Pin {
        path,
        source: e.into(),
    })
}

fn open(dir: &Path, name: &'static str, wrap: fn(MapData) -> Map) -> Result<Map> {
    open_data(dir, name).map(wrap)
}

impl PinnedMaps {
    /// Opens the maps pinned in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let flows = open_data(dir, MAP_FLOWS)?;
        let flow_capacity = flows.info().map_err(map_err(MAP_FLOWS))?.max_entries();
        Ok(Self {
            dir: dir.to_owned(),
            services: open(dir, MAP_SERVICES, Map::HashMap)?
                .try_into()
                .map_err(map_err(MAP_SERVICES))?,
            config: open(dir, MAP_SERVICE_CONFIG, Map::Array)?
                .try_into()
                .map_err(map_err(MAP_SERVICE_CONFIG))?,
            counters: open(dir, MAP_COUNTERS, Map::PerCpuArray)?
                .try_into()
                .map_err(map_err(MAP_COUNTERS))?,
            user_removed: open(dir, MAP_USER_REMOVED, Map::Array)?
                .try_into()
                .map_err(map_err(MAP_USER_REMOVED))?,
            flows,
            flow_capacity,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every service with its slot.
    pub fn services(&self) -> Result<BTreeMap<u32, Service>> {
        let mut entries = Vec::new();
        for item in self.services.iter() {
            entries.push(item.map_err(map_err(MAP_SERVICES))?);
        }
        decode_services(entries, |slot| {
            self.config
                .get(&slot, 0)
                .map_err(map_err(MAP_SERVICE_CONFIG))
        })
    }

    /// Every flow in the table (optionally of one service slot).
    pub fn flows(&self, slot: Option<u32>) -> Result<Vec<Flow>> {
        crate::flows::collect(&self.flows, slot)
    }

    /// The API's counters of the service in `slot`: `[blue, green]`.
    pub fn counters(&self, slot: u32, live: [u64; 2]) -> Result<[Counters; 2]> {
        let mut raw = [BackendCounters::default(); 2];
        let mut urem = [0u64; 2];
        for b in 0..2u8 {
            let idx = counter_index(slot, b);
            for c in self
                .counters
                .get(&idx, 0)
                .map_err(map_err(MAP_COUNTERS))?
                .iter()
            {
                raw[b as usize].accumulate(c);
            }
            urem[b as usize] = self
                .user_removed
                .get(&idx, 0)
                .map_err(map_err(MAP_USER_REMOVED))?;
        }
        Ok(counters_view(&raw, urem, live))
    }

    /// The status the daemon would report, for the services of `config` found in the maps
    /// (matched by protocol, port and local addresses). `pid` is 0: no daemon.
    pub fn status(&self, config: &Config) -> Result<Status> {
        let live = self.services()?;
        let per_slot = crate::flows::count_by_slot(&self.flows)?;
        let mut services = Vec::new();
        for spec in &config.services {
            let Some((slot, svc)) = live.iter().find(|(_, s)| s.same_identity(&spec.service))
            else {
                continue;
            };
            let [blue, green] =
                self.counters(*slot, per_slot.get(slot).copied().unwrap_or_default())?;
            services.push(service_status(&spec.name, *slot, svc, blue, green));
        }
        let interfaces: Vec<InterfaceStatus> = linked_interfaces(&self.dir)
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
            bpffs_dir: self.dir.display().to_string(),
            state_dir: config.daemon.state_dir.display().to_string(),
            flow_table_size: self.flow_capacity,
            services,
        })
    }

    /// The flow entries of the configured service `name`; `None` when the configuration has
    /// no such service or the maps do not hold it.
    pub fn service_flows(&self, config: &Config, name: &str) -> Result<Option<Vec<FlowEntry>>> {
        let Some(spec) = config.service(name) else {
            return Ok(None);
        };
        let Some((slot, _)) = self
            .services()?
            .into_iter()
            .find(|(_, s)| s.same_identity(&spec.service))
        else {
            return Ok(None);
        };
        let now = crate::util::monotonic_ns();
        Ok(Some(
            self.flows(Some(slot))?
                .iter()
                .map(|f| flow_entry(f, now))
                .collect(),
        ))
    }
}

/// Adds the legacy (clsact) attachments the daemon last persisted: they pin no links, so
/// `interfaces` (from the pinned links) misses them. They are as the daemon last recorded
/// them (its namespace may not be the reader's, so their existence is not checked here).
fn with_legacy_attachments(
    mut interfaces: Vec<InterfaceStatus>,
    config: &Config,
) -> Vec<InterfaceStatus> {
    let state = crate::state::Store::new(&config.daemon.state_dir)
        .load()
        .state;
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

/// Interfaces with pinned links under `dir` (`link-<iface>-<ingress|egress|xdp>`) and which.
pub fn linked_interfaces(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((iface, what)) = name.strip_prefix("link-").and_then(|r| r.rsplit_once('-')) {
            out.entry(iface.to_owned())
                .or_default()
                .insert(what.to_owned());
        }
    }
    out
}
