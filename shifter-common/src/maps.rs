//! Map and program names, map keys and counters shared by the kernel programs and the loader.
//! The flow table's key and value live in `flow`.
//!
//! Addresses are 16 bytes in network order (IPv4 mapped as `::ffff:a.b.c.d`); ports and
//! protocol numbers are in host order.

/// Services the data plane can hold at once.
pub const MAX_SERVICES: u32 = 256;
/// Default flow-table capacity (entries); configurable at load time.
pub const DEFAULT_FLOW_CAPACITY: u32 = 262_144;

/// Map names (as pinned under the bpffs directory).
pub const MAP_SERVICES: &str = "SHIFTER_SVC";
pub const MAP_SERVICE_CONFIG: &str = "SHIFTER_CFG";
pub const MAP_FLOWS: &str = "SHIFTER_FLOWS";
pub const MAP_COUNTERS: &str = "SHIFTER_CNT";
pub const MAP_PORT_BITMAP: &str = "SHIFTER_PORTS";
pub const MAP_USER_REMOVED: &str = "SHIFTER_UREM";
pub const MAP_SOCKETS: &str = "SHIFTER_SOCKS";
pub const MAP_DRY_RUN: &str = "SHIFTER_DRY";

/// A `SHIFTER_DRY` word with this bit set: a dry run is active for the slot and the low 16
/// bits are its would-be weight. 0 (what a new map holds) means no dry run.
pub const DRY_ACTIVE: u32 = 1 << 31;

/// The would-be weight of a `SHIFTER_DRY` word, if a dry run is active.
#[inline(always)]
pub const fn dry_weight(word: u32) -> Option<u16> {
    if word & DRY_ACTIVE == 0 {
        None
    } else {
        Some(word as u16)
    }
}

/// Program names in the object file.
pub const PROG_TC_INGRESS: &str = "shifter_tc_ingress";
pub const PROG_TC_EGRESS: &str = "shifter_tc_egress";
pub const PROG_XDP_INGRESS: &str = "shifter_xdp_ingress";
pub const PROG_SOCK_OPS: &str = "shifter_sock_ops";

/// Key of the `SHIFTER_SVC` hash map: which service (slot) a packet to a local port is for.
/// An all-zero `addr` is the wildcard that matches every local address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Per-CPU counters per (service slot, backend): index `slot * 2 + backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendCounters {
    /// Flows decided for this backend (SYN or first datagram).
    pub new_flows: u64,
    /// Ingress packets and bytes (L3 length) steered to this backend.
    pub packets: u64,
    pub bytes: u64,
    /// Egress packets and bytes (L3 length) rewritten back to the service port.
    pub egress_packets: u64,
    pub egress_bytes: u64,
    /// Flow entries restored by socket lookup after a miss on a non-SYN segment
    /// (the entry was evicted or cleared, or the connection predates the shifter).
    pub recoveries: u64,
    /// Flow entries the programs removed themselves (RST, or a SYN reusing the client port).
    /// LRU evictions are silent in the kernel; userspace derives them as
    /// `new_flows + recoveries - closed - removed by userspace - live entries`.
    pub closed: u64,
    /// RSTs from the backend answering a SYN (connection refused).
    pub refusals: u64,
    /// RSTs on established connections, either direction.
    pub resets: u64,
    /// Dry run: new flows this backend WOULD have got under the slot's would-be weight
    /// (`SHIFTER_DRY`); they were steered by the real weight.
    pub dry_new_flows: u64,
}

impl BackendCounters {
    /// Adds another CPU's counters.
    pub fn accumulate(&mut self, o: &Self) {
        self.new_flows += o.new_flows;
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.egress_packets += o.egress_packets;
        self.egress_bytes += o.egress_bytes;
        self.recoveries += o.recoveries;
        self.closed += o.closed;
        self.refusals += o.refusals;
        self.resets += o.resets;
        self.dry_new_flows += o.dry_new_flows;
    }
}

/// Counter index of a (slot, backend) pair.
#[inline(always)]
pub const fn counter_index(slot: u32, backend: u8) -> u32 {
    slot * 2 + (backend as u32 & 1)
}

/// Ports are kept in a 65536-bit bitmap of u64 words so the hot path can reject a packet
/// for a non-service port with one array lookup instead of a hash lookup.
pub const PORT_BITMAP_WORDS: u32 = 65536 / 64;
/// Bit set in the service half of the bitmap (index `port / 64`).
pub const PORT_BITMAP_SERVICE_BASE: u32 = 0;
/// Bit set in the backend half of the bitmap (index `PORT_BITMAP_WORDS + port / 64`).
pub const PORT_BITMAP_BACKEND_BASE: u32 = PORT_BITMAP_WORDS;
/// Bit set in the third part when some service on the port names local addresses: only
/// then does ingress look up the exact (address, port) key before the wildcard one.
pub const PORT_BITMAP_SPECIFIC_BASE: u32 = PORT_BITMAP_WORDS * 2;

#[cfg(feature = "user")]
mod pod {
    use super::{BackendCounters, ServiceKey};
    // SAFETY: `#[repr(C)]`, integer fields only, explicit padding: every bit pattern is valid.
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BackendCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<ServiceKey>(), 20);
        assert_eq!(core::mem::size_of::<BackendCounters>(), 80);
        assert_eq!(core::mem::offset_of!(BackendCounters, dry_new_flows), 72);
        assert_eq!(dry_weight(0), None);
        assert_eq!(dry_weight(DRY_ACTIVE | 2500), Some(2500));
    }
}
