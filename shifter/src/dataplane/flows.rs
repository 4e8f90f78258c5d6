//! Reading and maintaining the flow table.

use std::{collections::BTreeMap, net::IpAddr, os::fd::AsFd as _, time::Duration};

use aya::{
    maps::{Map, MapData, MapError},
    sys::SyscallError,
};
use shifter_common::{
    Backend, FLOW_FIN_IN, FLOW_FIN_OUT, FlowKey, FlowValue, MAP_FLOWS, MAP_USER_REMOVED, PROTO_TCP,
    counter_index,
};

use super::{
    error::{Error, Result, map_err},
    load::DataPlane,
    sys,
};
use crate::model::{Protocol, addr_from_bytes};

/// Calls `f` with every entry of the flow table `map`, read in batches (a status with a full
/// 1 M-entry table would otherwise take two syscalls per entry).
pub(crate) fn walk(map: &MapData, f: impl FnMut(&FlowKey, &FlowValue)) -> Result<()> {
    sys::for_each_entry(map.fd().as_fd(), f).map_err(|io_error| Error::Map {
        name: MAP_FLOWS,
        source: Box::new(MapError::SyscallError(SyscallError {
            call: "bpf_map_lookup_batch",
            io_error,
        })),
    })
}

/// The decoded flows of `map` (optionally of one service slot).
pub(crate) fn collect(map: &MapData, slot: Option<u32>) -> Result<Vec<Flow>> {
    let mut out = Vec::new();
    walk(map, |k, v| {
        if let Some(f) = Flow::decode(k, v)
            && slot.is_none_or(|s| s == f.slot)
        {
            out.push(f);
        }
    })?;
    Ok(out)
}

/// Flow entries per service slot, `[blue, green]`, counted without decoding or keeping them.
pub(crate) fn count_by_slot(map: &MapData) -> Result<BTreeMap<u32, [u64; 2]>> {
    let mut out: BTreeMap<u32, [u64; 2]> = BTreeMap::new();
    walk(map, |_, v| {
        out.entry(u32::from(v.slot)).or_default()[usize::from(v.backend & 1)] += 1;
    })?;
    Ok(out)
}

/// One entry of the flow table, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub protocol: Protocol,
    pub client: IpAddr,
    pub client_port: u16,
    pub local: IpAddr,
    pub service_port: u16,
    pub backend_port: u16,
    pub backend: Backend,
    pub slot: u32,
    pub flags: u8,
    pub last_seen_ns: u64,
}

impl Flow {
    pub(crate) fn decode(k: &FlowKey, v: &FlowValue) -> Option<Self> {
        Some(Self {
            protocol: Protocol::from_number(k.proto)?,
            client: addr_from_bytes(k.client_addr),
            client_port: k.client_port,
            local: addr_from_bytes(k.local_addr),
            service_port: v.service_port,
            backend_port: k.backend_port,
            backend: Backend::from_u8(v.backend),
            slot: u32::from(v.slot),
            flags: v.flags,
            last_seen_ns: v.last_seen_ns,
        })
    }

    /// Time since the entry's last packet, in milliseconds; `now` from [`flow_clock_ns`].
    pub fn idle_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_seen_ns) / 1_000_000
    }

    /// A TCP connection with FIN seen both ways: it has ended and its entry only lingers
    /// until the sweep. (An RST removes the entry at once.)
    pub fn has_ended(&self) -> bool {
        self.protocol == Protocol::Tcp && fin_both_ways(self.flags)
    }
}

/// Whether an entry's flags say FIN was seen both ways (the connection has ended).
fn fin_both_ways(flags: u8) -> bool {
    flags & (FLOW_FIN_IN | FLOW_FIN_OUT) == FLOW_FIN_IN | FLOW_FIN_OUT
}

/// When `sweep` removes an entry.
#[derive(Clone, Copy, Debug)]
pub struct SweepPolicy {
    /// UDP flows idle this long end.
    pub udp_idle: Duration,
    /// TCP flows idle this long end (a connection that vanished without FIN or RST).
    pub tcp_idle: Duration,
    /// TCP flows with FIN seen both ways end after this linger.
    pub fin_linger: Duration,
}

impl Default for SweepPolicy {
    fn default() -> Self {
        Self {
            udp_idle: Duration::from_secs(60),
            tcp_idle: Duration::from_secs(2 * 3600),
            fin_linger: Duration::from_secs(10),
        }
    }
}

/// Now on the flow table's clock, in nanoseconds: `CLOCK_MONOTONIC_COARSE`, the clock of
/// `bpf_ktime_get_coarse_ns`, with which the programs stamp `last_seen_ns`. The one clock
/// every idle time (sweep, `idle_ms` in flows) is measured on.
pub fn flow_clock_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl DataPlane {
    fn flows_data(&self) -> Result<&MapData> {
        match self.ebpf.map(MAP_FLOWS) {
            Some(Map::LruHashMap(m) | Map::HashMap(m)) => Ok(m),
            Some(_) => Err(Error::Map {
                name: MAP_FLOWS,
                source: Box::new(MapError::InvalidMapType { map_type: 0 }),
            }),
            None => Err(Error::MissingMap { name: MAP_FLOWS }),
        }
    }

    /// Every flow in the table (optionally of one service slot).
    pub fn flows(&mut self, slot: Option<u32>) -> Result<Vec<Flow>> {
        collect(self.flows_data()?, slot)
    }

    /// Flow entries per service slot, `[blue, green]`.
    pub fn flow_counts(&mut self) -> Result<BTreeMap<u32, [u64; 2]>> {
        count_by_slot(self.flows_data()?)
    }

    /// Empties the flow table. Established TCP connections are recovered by socket lookup
    /// on their next packet. Returns how many entries were removed.
    pub fn clear_flows(&mut self) -> Result<usize> {
        self.remove_flows(|_, _| true)
    }

    /// Removes ended and idle flows per `policy`. Returns how many were removed.
    /// Then unmarks the ports of socket-dispatched services that no flow serves any more.
    pub fn sweep(&mut self, policy: &SweepPolicy) -> Result<usize> {
        let now = flow_clock_ns();
        let mut live = std::collections::BTreeSet::new();
        let removed = self.remove_flows(|k, v| {
            let idle = Duration::from_nanos(now.saturating_sub(v.last_seen_ns));
            let doomed = if k.proto == PROTO_TCP {
                let ended = fin_both_ways(v.flags);
                (ended && idle >= policy.fin_linger) || idle >= policy.tcp_idle
            } else {
                idle >= policy.udp_idle
            };
            if !doomed {
                live.insert(v.service_port);
            }
            doomed
        })?;
        self.retire_drained_rewrite_ports(&live)?;
        Ok(removed)
    }

    fn remove_flows(
        &mut self,
        mut doomed: impl FnMut(&FlowKey, &FlowValue) -> bool,
    ) -> Result<usize> {
        let mut victims: Vec<(FlowKey, FlowValue)> = Vec::new();
        walk(self.flows_data()?, |k, v| {
            if doomed(k, v) {
                victims.push((*k, *v));
            }
        })?;
        let mut removed = 0;
        let mut per_counter: std::collections::BTreeMap<u32, u64> = Default::default();
        {
            let mut map = self.flows_map()?;
            for (k, v) in &victims {
                if map.remove(k).is_ok() {
                    removed += 1;
                    *per_counter
                        .entry(counter_index(u32::from(v.slot), v.backend))
                        .or_default() += 1;
                }
            }
        }
        let mut urem = self.user_removed_map()?;
        for (idx, n) in per_counter {
            let old = urem.get(&idx, 0).map_err(map_err(MAP_USER_REMOVED))?;
            urem.set(idx, old + n, 0)
                .map_err(map_err(MAP_USER_REMOVED))?;
        }
        Ok(removed)
    }
}
