//! Egress: replies of shifted connections get their source port back to the service port.
//! Replies on direct connections to a backend port have no entry and are left alone.
//!
//! A packet not from a backend port, or on a direct connection, returns `Ok`; giving up on a
//! packet from a backend port returns its `Skip` reason.

use aya_ebpf::{EbpfContext as _, helpers::bpf_get_socket_cookie, programs::TcContext};
use shifter_common::{
    FLOW_ESTABLISHED, FLOW_FIN_OUT, FLOW_RECOVERED, FlowKey, FlowValue, PORT_BITMAP_BACKEND_BASE,
    PROTO_TCP, Skip,
};

use crate::{
    ctx::{PacketCtx, Tc},
    maps::{FLOWS, SOCKETS, counters, port_in},
    parse::{L4_SPORT, TCP_FIN, TCP_RST},
};

#[inline(always)]
pub fn run(ctx: &TcContext) -> Result<(), Skip> {
    let ctx = Tc(ctx);
    ctx.prepare();
    let Ok(pkt) = ctx.parse() else {
        return Ok(()); // no ports: nothing of ours
    };
    if !port_in(PORT_BITMAP_BACKEND_BASE, pkt.sport) {
        return Ok(());
    }
    // Lengths that disagree: never written, never recorded (docs/ARCHITECTURE.md, invariant 2). Counted
    // for any packet from a backend port: telling a direct connection's from a shifted one's
    // would take the lookups this skips.
    if let Some(reason) = ctx.fault(&pkt) {
        return Err(reason);
    }
    // The reply's destination is the client, its source the backend.
    let addrs = ctx.addrs(&pkt)?;
    let key = FlowKey::new(
        pkt.proto,
        addrs.dst.bytes(),
        pkt.dport,
        addrs.src.bytes(),
        pkt.sport,
    );
    let entry = match FLOWS.get_ptr_mut(&key) {
        Some(e) => e,
        None => match restore_from_socket(ctx.0, &key)? {
            Some(e) => e,
            None => return Ok(()), // a direct connection to the backend
        },
    };
    // SAFETY: map value pointer, valid for this program run.
    let e = unsafe { &mut *entry };
    let (service_port, slot, backend) = (e.service_port, u32::from(e.slot), e.backend);
    let c = counters(slot, backend);
    if pkt.proto == PROTO_TCP {
        if pkt.tcp_flags & TCP_RST != 0 {
            let established = e.flags & FLOW_ESTABLISHED != 0;
            let _ = FLOWS.remove(&key);
            if let Some(c) = counters(slot, backend) {
                c.closed += 1;
                // A RST before the client's first ACK answers its SYN: a refusal.
                if established {
                    c.resets += 1;
                } else {
                    c.refusals += 1;
                }
            }
        } else if pkt.tcp_flags & TCP_FIN != 0 && e.flags & FLOW_FIN_OUT == 0 {
            e.flags |= FLOW_FIN_OUT;
        }
    }
    ctx.rewrite_port(&pkt, L4_SPORT, pkt.sport, service_port)?;
    if let Some(c) = c {
        c.egress_packets += 1;
        c.egress_bytes += u64::from(ctx.frame_len());
    }
    Ok(())
}

/// The flow entry is gone (evicted or cleared) but the socket remembers that its
/// connection was shifted: restore the entry. `Ok(None)` when there is no record: a direct
/// connection (or UDP, or a packet without a socket), not ours.
#[inline(always)]
fn restore_from_socket(ctx: &TcContext, key: &FlowKey) -> Result<Option<*mut FlowValue>, Skip> {
    if key.proto != PROTO_TCP {
        return Ok(None);
    }
    // SAFETY: the helper reads skb->sk; 0 when the packet has no socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        return Ok(None);
    }
    // SAFETY: map value copied out immediately.
    let Some(record) = (unsafe { SOCKETS.get(&cookie) }) else {
        return Ok(None);
    };
    let mut value = *record;
    value.flags |= FLOW_RECOVERED;
    FLOWS
        .insert(key, &value, 0)
        .map_err(|_| Skip::FlowInsertFailed)?;
    if let Some(c) = counters(u32::from(value.slot), value.backend) {
        c.recoveries += 1;
    }
    // Gone again only if another CPU's insert evicted it at once: as good as refused.
    FLOWS
        .get_ptr_mut(key)
        .map(Some)
        .ok_or(Skip::FlowInsertFailed)
}
