//! Ingress: steer packets for a service port to the flow's backend port.
//!
//! parse -> is it a service's? -> configuration -> flow table (hit, new flow or recovery)
//! -> rewrite. A packet that is not a service's returns `Ok` at once; every way of giving up
//! on a service's packet returns its `Skip` reason, counted by the caller, and leaves the
//! packet as it was.

use aya_ebpf::helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};
use shifter_common::{
    Backend, Dispatch, FLOW_ESTABLISHED, FLOW_FIN_IN, FlowKey, FlowTuple, FlowValue,
    PORT_BITMAP_BACKEND_BASE, PORT_BITMAP_SPECIFIC_BASE, PROTO_TCP, ServiceConfig, ServiceKey,
    Skip, choose_backend, dry_weight,
};

pub use crate::ctx::{Tc, Xdp};
use crate::{
    ctx::PacketCtx,
    maps::{DRY_RUN, FLOWS, SERVICE_CONFIG, SERVICES, counters, port_in, rewrite_port},
    parse::{Addrs, L4_DPORT, Packet, TCP_ACK, TCP_FIN, TCP_RST},
    sk,
};

/// 1 where the kernel has `bpf_ktime_get_coarse_ns` (5.11+), set by the loader
/// (`shifter_common::GLOBAL_COARSE_CLOCK`). A constant of the loaded program: the verifier
/// explores only the branch it selects, so on older kernels the coarse call is dead code
/// and never checked.
#[unsafe(no_mangle)]
static SHIFTER_COARSE_CLOCK: u8 = 1;

/// Refresh `last_seen_ns` at most this often: fewer writes to a shared cache line.
const LAST_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;

pub trait Prepare {
    fn prepare(&self) {}
}
impl Prepare for Tc<'_> {
    #[inline(always)]
    fn prepare(&self) {
        Tc::prepare(self);
    }
}
impl Prepare for Xdp<'_> {}

#[inline(always)]
pub fn run<C: PacketCtx + Prepare>(ctx: &C) -> Result<(), Skip> {
    ctx.prepare();
    let Ok(pkt) = ctx.parse() else {
        return Ok(()); // no ports: no service's packet
    };
    // Not a port of a rewrite-dispatched service (a socket-dispatched service's port is one
    // only while connections accepted under rewrite remain).
    if !rewrite_port(pkt.dport) {
        if pkt.is_syn() && port_in(PORT_BITMAP_BACKEND_BASE, pkt.dport) && ctx.fault(&pkt).is_none()
        {
            forget_stale_flow(&pkt, &ctx.addrs(&pkt)?);
        }
        return Ok(());
    }
    let addrs = ctx.addrs(&pkt)?;
    let Some(slot) = find_service(addrs.dst.bytes(), pkt.dport, pkt.proto) else {
        return Ok(()); // another protocol or local address on a service's port
    };
    // Lengths that disagree: never written, never recorded (docs/ARCHITECTURE.md, invariant 2).
    if let Some(reason) = ctx.fault(&pkt) {
        return Err(reason);
    }
    // One 8-byte load: the packet sees one whole configuration (docs/ARCHITECTURE.md, invariant 4).
    let word = SERVICE_CONFIG.get_ptr(slot).ok_or(Skip::NoConfig)?;
    // SAFETY: aligned array value.
    let word = unsafe { core::ptr::read_volatile(word) };
    let cfg = ServiceConfig::unpack(word).ok_or(Skip::NoConfig)?;

    let mut key = FlowKey::new(
        pkt.proto,
        addrs.src.bytes(),
        pkt.sport,
        addrs.dst.bytes(),
        cfg.blue_port,
    );
    let mut entry = FLOWS.get_ptr_mut(&key);
    if entry.is_none() {
        key.backend_port = cfg.green_port;
        entry = FLOWS.get_ptr_mut(&key);
    }
    let now = now_ns();
    let backend = match entry {
        // SAFETY: map value pointer, valid for this program run.
        Some(e) => match on_hit(unsafe { &mut *e }, &pkt, &key, now) {
            Some(backend) => backend,
            None if cfg.dispatch == Dispatch::Socket => return Ok(()),
            None => new_flow(&pkt, &addrs, slot, &cfg, &mut key, now)?,
        },
        // Socket dispatch: sk_lookup hands new connections to a listener, and they live on
        // the service port; only connections accepted under rewrite dispatch (before a
        // switch) have entries, and they keep their rewrite until they end.
        None if cfg.dispatch == Dispatch::Socket => return Ok(()),
        None if pkt.proto != PROTO_TCP || pkt.is_syn() => {
            new_flow(&pkt, &addrs, slot, &cfg, &mut key, now)?
        }
        None => recover(ctx, &pkt, &addrs, slot, &cfg, &mut key, now)?,
    };

    ctx.rewrite_port(&pkt, L4_DPORT, pkt.dport, key.backend_port)?;
    if let Some(c) = counters(slot, backend as u8) {
        c.packets += 1;
        c.bytes += u64::from(ctx.frame_len());
    }
    Ok(())
}

/// The flows' clock. The coarse one (same base as CLOCK_MONOTONIC, tick resolution) costs a
/// few ns instead of ~30 and last-seen times only serve idle sweeps of seconds; kernels
/// before 5.11 lack it and read the fine one (same base: userspace compares either with
/// `flow_clock_ns`).
#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a read of our own constant; helpers without arguments.
    unsafe {
        if core::ptr::read_volatile(&SHIFTER_COARSE_CLOCK) != 0 {
            bpf_ktime_get_coarse_ns()
        } else {
            bpf_ktime_get_ns()
        }
    }
}

/// A SYN to a backend port opens a direct connection: drop any entry left from an earlier
/// shifted connection with the same tuple, or its replies would be rewritten.
#[inline(always)]
fn forget_stale_flow(pkt: &Packet, addrs: &Addrs) {
    let key = FlowKey::new(
        pkt.proto,
        addrs.src.bytes(),
        pkt.sport,
        addrs.dst.bytes(),
        pkt.dport,
    );
    // SAFETY: value read only to learn its slot for the counter.
    if let Some(old) = unsafe { FLOWS.get(&key) } {
        let (slot, backend) = (u32::from(old.slot), old.backend);
        if FLOWS.remove(&key).is_ok() {
            if let Some(c) = counters(slot, backend) {
                c.closed += 1;
            }
        }
    }
}

/// A `ServiceKey` on an 8-byte boundary, so that its address can be written as two words.
#[repr(C, align(8))]
struct AlignedServiceKey(ServiceKey);

/// The slot of the service for (local address, port, protocol): the exact key, then the
/// wildcard.
#[inline(always)]
pub(crate) fn find_service(addr: [u8; 16], port: u16, proto: u8) -> Option<u32> {
    let mut key = AlignedServiceKey(ServiceKey {
        addr,
        port,
        proto,
        _pad: 0,
    });
    // The exact (address, port) key only exists when a service names local addresses;
    // the bitmap says so and spares the common wildcard case one hash lookup.
    if port_in(PORT_BITMAP_SPECIFIC_BASE, port) {
        // SAFETY: plain u32 values.
        if let Some(slot) = unsafe { SERVICES.get(&key.0) } {
            return Some(*slot);
        }
    }
    // The wildcard: an all-zero address, written as two words. Written as `[0; 16]` it
    // became a BPF-to-BPF call to a byte-by-byte memset on every service packet (bpf-linker
    // does not inline it); volatile keeps LLVM from merging the stores back into a memset.
    let words = key.0.addr.as_mut_ptr().cast::<u64>();
    // SAFETY: `addr` is 16 bytes at offset 0 of an 8-aligned struct: two aligned words.
    unsafe {
        words.write_volatile(0);
        words.add(1).write_volatile(0);
    }
    // SAFETY: plain u32 values.
    unsafe { SERVICES.get(&key.0) }.copied()
}

/// Packet of a known flow. Returns `None` when a SYN reuses the client port of an old
/// connection (another initial sequence number): that flow must be decided afresh.
#[inline(always)]
fn on_hit(e: &mut FlowValue, pkt: &Packet, key: &FlowKey, now: u64) -> Option<Backend> {
    let backend = Backend::from_u8(e.backend);
    if pkt.proto == PROTO_TCP {
        if pkt.is_syn() {
            if e.syn_seq != pkt.seq {
                let (slot, b) = (u32::from(e.slot), e.backend);
                let _ = FLOWS.remove(key);
                if let Some(c) = counters(slot, b) {
                    c.closed += 1;
                }
                return None;
            }
        } else {
            let mut flags = e.flags;
            if pkt.tcp_flags & TCP_ACK != 0 {
                flags |= FLOW_ESTABLISHED;
            }
            if pkt.tcp_flags & TCP_FIN != 0 {
                flags |= FLOW_FIN_IN;
            }
            if flags != e.flags {
                e.flags = flags;
            }
            if pkt.tcp_flags & TCP_RST != 0 {
                let (slot, established) = (u32::from(e.slot), flags & FLOW_ESTABLISHED != 0);
                let _ = FLOWS.remove(key);
                if let Some(c) = counters(slot, backend as u8) {
                    c.closed += 1;
                    if established {
                        c.resets += 1;
                    }
                }
                return Some(backend);
            }
        }
    }
    if now.wrapping_sub(e.last_seen_ns) > LAST_SEEN_GRANULARITY_NS {
        e.last_seen_ns = now;
    }
    Some(backend)
}

/// A TCP SYN or UDP datagram without an entry: decide, record.
#[inline(always)]
fn new_flow(
    pkt: &Packet,
    addrs: &Addrs,
    slot: u32,
    cfg: &ServiceConfig,
    key: &mut FlowKey,
    now: u64,
) -> Result<Backend, Skip> {
    let tuple = FlowTuple {
        proto: pkt.proto,
        client_addr: addrs.src.bytes(),
        client_port: pkt.sport,
        local_addr: addrs.dst.bytes(),
        service_port: pkt.dport,
    };
    let backend = choose_backend(&tuple, cfg);
    key.backend_port = cfg.port_of(backend);
    let value = FlowValue::decided(pkt.dport, slot as u16, backend, pkt.seq, now);
    // Without an entry the replies could not be rewritten: leave the packet alone then.
    FLOWS
        .insert(key, &value, 0)
        .map_err(|_| Skip::FlowInsertFailed)?;
    if let Some(c) = counters(slot, backend as u8) {
        c.new_flows += 1;
    }
    count_dry_run(&tuple, slot, cfg);
    Ok(backend)
}

/// Dry run: count the backend this new flow would get under the slot's would-be weight.
/// Steering is not affected.
#[inline(always)]
pub(crate) fn count_dry_run(tuple: &FlowTuple, slot: u32, cfg: &ServiceConfig) {
    let Some(word) = DRY_RUN.get(slot) else {
        return;
    };
    let Some(weight) = dry_weight(*word) else {
        return;
    };
    let shadow = ServiceConfig { weight, ..*cfg };
    let would = choose_backend(tuple, &shadow);
    if let Some(c) = counters(slot, would as u8) {
        c.dry_new_flows += 1;
    }
}

/// A non-SYN TCP segment without an entry: the backend that owns the connection keeps it.
#[inline(always)]
fn recover<C: PacketCtx>(
    ctx: &C,
    pkt: &Packet,
    addrs: &Addrs,
    slot: u32,
    cfg: &ServiceConfig,
    key: &mut FlowKey,
    now: u64,
) -> Result<Backend, Skip> {
    let backend = if sk::owns_connection(ctx.raw(), pkt, addrs, cfg.blue_port) {
        Backend::Blue
    } else if sk::owns_connection(ctx.raw(), pkt, addrs, cfg.green_port) {
        Backend::Green
    } else {
        // Nobody owns it: not ours to touch.
        return Err(Skip::RecoveryMiss);
    };
    key.backend_port = cfg.port_of(backend);
    let value = FlowValue::recovered(pkt.dport, slot as u16, backend, now);
    FLOWS
        .insert(key, &value, 0)
        .map_err(|_| Skip::FlowInsertFailed)?;
    if let Some(c) = counters(slot, backend as u8) {
        c.recoveries += 1;
    }
    Ok(backend)
}
