//! Counters per service and backend, and the one derivation of evictions from them.

use std::borrow::Borrow;

use aya::maps::{Array, MapData, PerCpuArray};
use serde::{Deserialize, Serialize};
use shifter_common::{
    BackendCounters, MAP_COUNTERS, MAP_SOCKET_COUNTERS, MAP_USER_REMOVED, SocketCounters,
    counter_index,
};

use super::{
    error::{Error, Result, map_err},
    load::DataPlane,
};

impl DataPlane {
    /// A typed read-only handle on the map `name`.
    pub(crate) fn map_ref<'a, T>(&'a self, name: &'static str) -> Result<T>
    where
        T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
    {
        self.ebpf
            .map(name)
            .ok_or(Error::MissingMap { name })?
            .try_into()
            .map_err(map_err(name))
    }
}

/// One backend's counters as status, metrics and the API show them: the kernel's counters
/// summed over CPUs, the backend's live flow-table entries, and the evictions derived from both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Connections decided for the backend: new flow-table entries (rewrite) and connections
    /// handed to its listener (socket).
    pub new_flows: u64,
    /// Open now: flow-table entries (rewrite) and established connections socket dispatch
    /// handed to the backend that have not closed.
    pub active_flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub egress_packets: u64,
    pub egress_bytes: u64,
    pub recoveries: u64,
    pub evictions: u64,
    pub refusals: u64,
    /// Resets of established connections (rewrite: an RST seen; socket: a connection that
    /// went from ESTABLISHED straight to CLOSE).
    pub resets: u64,
    /// Dry run: new flows this backend would have got under the would-be weight.
    #[serde(default)]
    pub dry_new_flows: u64,
    /// Socket dispatch: connections decided for this backend that the other one took
    /// because this one had no listener. Included in the other backend's `new_flows`.
    #[serde(default)]
    pub fallbacks: u64,
}

/// Flow-table evictions: entries created (new flows and socket-lookup recoveries) minus entries
/// removed by the programs (`closed`), by userspace (`user_removed`) and still `live`. LRU
/// evictions are silent in the kernel; this is exact as long as nobody else deletes entries.
pub fn evictions(c: &BackendCounters, user_removed: u64, live: u64) -> u64 {
    (c.new_flows + c.recoveries).saturating_sub(c.closed + user_removed + live)
}

impl Counters {
    /// The view of one backend's kernel counters, given its socket-dispatch counters, the
    /// entries userspace removed and the live entries. `new_flows` counts the connections of
    /// both dispatches.
    pub fn new(c: &BackendCounters, s: &SocketCounters, user_removed: u64, live: u64) -> Self {
        Self {
            new_flows: c.new_flows + s.connections,
            fallbacks: s.fallbacks,
            active_flows: live + s.open(),
            packets: c.packets,
            bytes: c.bytes,
            egress_packets: c.egress_packets,
            egress_bytes: c.egress_bytes,
            recoveries: c.recoveries,
            evictions: evictions(c, user_removed, live),
            refusals: c.refusals,
            resets: c.resets + s.resets,
            dry_new_flows: c.dry_new_flows,
        }
    }
}

/// The kernel counters of `slot`, summed over CPUs: `[blue, green]`.
pub(crate) fn read_raw<T: Borrow<MapData>>(
    counters: &PerCpuArray<T, BackendCounters>,
    slot: u32,
) -> Result<[BackendCounters; 2]> {
    let mut out = [BackendCounters::default(); 2];
    for (backend, sum) in out.iter_mut().enumerate() {
        let per_cpu = counters
            .get(&counter_index(slot, backend as u8), 0)
            .map_err(map_err(MAP_COUNTERS))?;
        for c in per_cpu.iter() {
            sum.accumulate(c);
        }
    }
    Ok(out)
}

/// The socket-dispatch counters of `slot`, summed over CPUs: `[blue, green]`.
fn read_socket<T: Borrow<MapData>>(
    counters: &PerCpuArray<T, SocketCounters>,
    slot: u32,
) -> Result<[SocketCounters; 2]> {
    let mut out = [SocketCounters::default(); 2];
    for (backend, sum) in out.iter_mut().enumerate() {
        let per_cpu = counters
            .get(&counter_index(slot, backend as u8), 0)
            .map_err(map_err(MAP_SOCKET_COUNTERS))?;
        for c in per_cpu.iter() {
            sum.accumulate(c);
        }
    }
    Ok(out)
}

/// The counters of `slot` with `live` entries per backend: `[blue, green]`. `socket` is
/// `None` for pins of a build without socket dispatch.
pub(crate) fn read<T: Borrow<MapData>>(
    counters: &PerCpuArray<T, BackendCounters>,
    socket: Option<&PerCpuArray<T, SocketCounters>>,
    user_removed: &Array<T, u64>,
    slot: u32,
    live: [u64; 2],
) -> Result<[Counters; 2]> {
    let raw = read_raw(counters, slot)?;
    let sockets = match socket {
        Some(map) => read_socket(map, slot)?,
        None => Default::default(),
    };
    let mut out: [Counters; 2] = Default::default();
    for (b, view) in out.iter_mut().enumerate() {
        let removed = user_removed
            .get(&counter_index(slot, b as u8), 0)
            .map_err(map_err(MAP_USER_REMOVED))?;
        *view = Counters::new(&raw[b], &sockets[b], removed, live[b]);
    }
    Ok(out)
}

impl DataPlane {
    /// Counters of the service in `slot`, summed over CPUs: `[blue, green]`.
    pub fn counters(&mut self, slot: u32) -> Result<[BackendCounters; 2]> {
        read_raw(&self.counters_map()?, slot)
    }

    /// Socket-dispatch counters of the service in `slot`, summed over CPUs: `[blue, green]`.
    pub fn socket_counters(&self, slot: u32) -> Result<[SocketCounters; 2]> {
        read_socket(&self.map_ref(MAP_SOCKET_COUNTERS)?, slot)
    }

    /// The counters of `slot` as the API shows them, evictions derived: `[blue, green]`.
    pub fn counters_view(&mut self, slot: u32) -> Result<[Counters; 2]> {
        let live = self.flow_counts()?.get(&slot).copied().unwrap_or_default();
        self.counters_with(slot, live)
    }

    /// [`DataPlane::counters_view`] with the live entries already counted (`[blue, green]`).
    pub fn counters_with(&self, slot: u32, live: [u64; 2]) -> Result<[Counters; 2]> {
        read(
            &self.map_ref(MAP_COUNTERS)?,
            Some(&self.map_ref(MAP_SOCKET_COUNTERS)?),
            &self.map_ref(MAP_USER_REMOVED)?,
            slot,
            live,
        )
    }
}
