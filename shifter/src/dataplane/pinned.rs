//! Read-only access to the maps pinned under the bpffs directory, without the daemon and
//! without loading any program: what `shifter status` and `shifter flows` show when the
//! daemon is not running. Opening a pin needs the rights on the bpffs directory (root).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, SockHash};
use shifter_common::{
    BackendCounters, MAP_COUNTERS, MAP_FLOWS, MAP_LISTENERS, MAP_SERVICE_CONFIG, MAP_SERVICES,
    MAP_SOCKET_COUNTERS, MAP_USER_REMOVED, ServiceKey, SocketCounters,
};

use super::{
    counters::{self, Counters},
    error::{Error, Result, map_err},
    flows::{self, Flow},
    services::decode_services,
};
use crate::{model::Service, paths};

/// The pinned maps of one bpffs directory, opened read-only by use (nothing is written).
pub struct PinnedMaps {
    dir: PathBuf,
    services: HashMap<MapData, ServiceKey, u32>,
    config: Array<MapData, u64>,
    counters: PerCpuArray<MapData, BackendCounters>,
    /// `None` for pins of a build without socket dispatch.
    socket_counters: Option<PerCpuArray<MapData, SocketCounters>>,
    /// `None` for pins of a build without socket dispatch.
    listeners: Option<SockHash<MapData, u32>>,
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
            socket_counters: open(dir, MAP_SOCKET_COUNTERS, Map::PerCpuArray)
                .ok()
                .and_then(|m| m.try_into().ok()),
            listeners: open(dir, MAP_LISTENERS, Map::SockHash)
                .ok()
                .and_then(|m| m.try_into().ok()),
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
        flows::collect(&self.flows, slot)
    }

    /// Flow entries per service slot, `[blue, green]`.
    pub fn flow_counts(&self) -> Result<BTreeMap<u32, [u64; 2]>> {
        flows::count_by_slot(&self.flows)
    }

    /// Remembered listeners per backend port (socket dispatch).
    pub fn listener_counts(&self) -> Result<BTreeMap<u16, u32>> {
        match &self.listeners {
            Some(map) => super::socket::count_listeners(map.keys()),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Capacity of the flow table.
    pub fn flow_capacity(&self) -> u32 {
        self.flow_capacity
    }

    /// The counters of the service in `slot` with `live` entries per backend: `[blue, green]`.
    pub fn counters(&self, slot: u32, live: [u64; 2]) -> Result<[Counters; 2]> {
        counters::read(
            &self.counters,
            self.socket_counters.as_ref(),
            &self.user_removed,
            slot,
            live,
        )
    }
}

/// Interfaces with pinned links under `dir` (see [`paths::link_pin`]) and which links. The one
/// reader of the link pin names: the daemon's start, its detach and the offline detach use it.
pub fn linked_interfaces(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((iface, what)) = paths::parse_link_pin(&name) {
            out.entry(iface.to_owned())
                .or_default()
                .insert(what.to_owned());
        }
    }
    out
}
