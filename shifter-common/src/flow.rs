//! A flow as the programs see it: the tuple the decision hashes, the flow-table key and value,
//! and the one way each of them is built.
//!
//! Addresses are 16 bytes in network order (IPv4 mapped as `::ffff:a.b.c.d`); ports and
//! protocol numbers are in host order.

use crate::service::Backend;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Maps an IPv4 address into the 16-byte form used in keys.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// The connection as the client sees it: the input of the decision (`choose_backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTuple {
    pub proto: u8,
    pub client_addr: [u8; 16],
    pub client_port: u16,
    pub local_addr: [u8; 16],
    pub service_port: u16,
}

/// Key of the flow table. One entry per shifted flow, keyed by the tuple as the backend sees
/// it, so ingress (trying blue's then green's port) and egress (the reply's source port) find
/// the same entry.
///
/// 8-byte aligned (the layout is the same 40 bytes): the eBPF programs build keys on the
/// stack, and the BPF backend writes an address into a key it cannot prove aligned one byte
/// at a time (16 shifts and stores) instead of as two words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub client_addr: [u8; 16],
    pub local_addr: [u8; 16],
    pub client_port: u16,
    pub backend_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The key of the flow from `client_addr:client_port` to `local_addr:backend_port`.
    /// Every program builds its keys here (ingress from a packet's destination, egress from a
    /// reply's source, sock_ops from the accepted socket), so padding is always zero and the
    /// field order cannot differ between them.
    #[inline(always)]
    pub const fn new(
        proto: u8,
        client_addr: [u8; 16],
        client_port: u16,
        local_addr: [u8; 16],
        backend_port: u16,
    ) -> Self {
        Self {
            client_addr,
            local_addr,
            client_port,
            backend_port,
            proto,
            // Not `[0; 3]`: the eBPF build turns that into a call to a byte-loop memset.
            _pad: [0, 0, 0],
        }
    }
}

/// The client sent a FIN.
pub const FLOW_FIN_IN: u8 = 1 << 0;
/// The backend sent a FIN.
pub const FLOW_FIN_OUT: u8 = 1 << 1;
/// The client acknowledged something: the handshake completed.
pub const FLOW_ESTABLISHED: u8 = 1 << 2;
/// The entry was restored by socket lookup rather than created by a decision.
pub const FLOW_RECOVERED: u8 = 1 << 3;

/// Value of the flow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    /// The port the client connected to, restored on replies.
    pub service_port: u16,
    /// The service slot (index into `SHIFTER_CFG` and the counters).
    pub slot: u16,
    /// `Backend` as u8.
    pub backend: u8,
    /// `FLOW_*` bits.
    pub flags: u8,
    pub _pad: u16,
    /// Initial sequence number of the client's SYN: a SYN with the same number is a
    /// retransmission, another is a new connection reusing the client port.
    pub syn_seq: u32,
    pub _pad2: u32,
    /// `bpf_ktime_get_ns` of the last packet seen, for idle sweeps.
    pub last_seen_ns: u64,
}

impl FlowValue {
    /// A flow the decision gave to `backend` (a TCP SYN with initial sequence number
    /// `syn_seq`, or a UDP datagram with `syn_seq` 0), seen at `now_ns`.
    #[inline(always)]
    pub const fn decided(
        service_port: u16,
        slot: u16,
        backend: Backend,
        syn_seq: u32,
        now_ns: u64,
    ) -> Self {
        Self::with_flags(service_port, slot, backend, 0, syn_seq, now_ns)
    }

    /// A connection that `backend` owns, found by socket lookup after a flow-table miss: it is
    /// established, and its initial sequence number is unknown.
    #[inline(always)]
    pub const fn recovered(service_port: u16, slot: u16, backend: Backend, now_ns: u64) -> Self {
        Self::with_flags(
            service_port,
            slot,
            backend,
            FLOW_RECOVERED | FLOW_ESTABLISHED,
            0,
            now_ns,
        )
    }

    #[inline(always)]
    const fn with_flags(
        service_port: u16,
        slot: u16,
        backend: Backend,
        flags: u8,
        syn_seq: u32,
        now_ns: u64,
    ) -> Self {
        Self {
            service_port,
            slot,
            backend: backend as u8,
            flags,
            _pad: 0,
            syn_seq,
            _pad2: 0,
            last_seen_ns: now_ns,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::{FlowKey, FlowValue};
    // SAFETY: `#[repr(C)]`, integer fields only, explicit padding: every bit pattern is valid.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 40);
        assert_eq!(core::mem::size_of::<FlowValue>(), 24);
    }

    #[test]
    fn constructors_fill_every_field() {
        let (c, l) = (v4_mapped([198, 18, 0, 1]), v4_mapped([198, 18, 0, 2]));
        assert_eq!(
            FlowKey::new(PROTO_TCP, c, 40_000, l, 8081),
            FlowKey {
                client_addr: c,
                local_addr: l,
                client_port: 40_000,
                backend_port: 8081,
                proto: PROTO_TCP,
                _pad: [0; 3],
            }
        );
        let d = FlowValue::decided(80, 3, Backend::Green, 0x1234, 99);
        assert_eq!(
            (d.service_port, d.slot, d.backend, d.flags, d.syn_seq),
            (80, 3, 1, 0, 0x1234)
        );
        assert_eq!(d.last_seen_ns, 99);
        let r = FlowValue::recovered(80, 3, Backend::Blue, 7);
        assert_eq!((r.backend, r.syn_seq, r.last_seen_ns), (0, 0, 7));
        assert_eq!(r.flags, FLOW_RECOVERED | FLOW_ESTABLISHED);
    }
}
