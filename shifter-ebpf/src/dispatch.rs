//! Socket dispatch: sk_lookup hands each new TCP connection for a socket-dispatched service
//! to blue's or green's listening socket. It runs once per connection (the kernel asks it
//! only when no established socket matches), never per packet.
//!
//! The listeners come from `SHIFTER_LSN`: sock_ops remembers each one at `listen()`
//! (`on_listen`), and `register` remembers those that were listening before we attached.

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_NOEXIST, BPF_SOCK_OPS_TCP_LISTEN_CB, bpf_sock,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as V4,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 as V6,
    },
    cty::c_void,
    helpers::{bpf_get_netns_cookie, bpf_map_update_elem, bpf_sk_lookup_tcp, bpf_sk_release},
    programs::{SkLookupContext, SockOpsContext},
};
use shifter_common::{
    Backend, Dispatch, FlowKey, FlowTuple, LISTENER_MEMBERS, NETNS_COOKIE, NETNS_DECISIONS,
    PORT_BITMAP_BACKEND_BASE, PROTO_TCP, SOCKET_TAG_LISTENER, ServiceConfig, Skip,
    TCP_PORT_BY_ADDRESS, choose_backend, listener_key, v4_mapped,
};

use crate::{
    ingress::{count_dry_run, find_service},
    maps::{
        LISTENERS, NETNS, SERVICE_CONFIG, SOCKET_DECISIONS, SOCKET_TAGS, TCP_SERVICE_PORTS,
        counters, port_in, socket_counters,
    },
    sockops::{socket_of, words_to_bytes},
};

const AF_INET: u32 = 2;
const TCP_LISTEN: u32 = 10;

/// sk_lookup: `Ok` whether or not it assigned a socket; the kernel goes on with its own
/// lookup when we assign none.
#[inline(always)]
pub fn lookup(ctx: &SkLookupContext) -> Result<(), Skip> {
    let l = ctx.lookup;
    // Every field read once, unconditionally (see `field!`).
    let family = field!(l, family);
    let protocol = field!(l, protocol);
    let local_port = field!(l, local_port) as u16; // host order
    let remote_port = u16::from_be(field!(l, remote_port)); // network order
    let remote4 = field!(l, remote_ip4);
    let local4 = field!(l, local_ip4);
    let remote6 = [
        field!(l, remote_ip6[0]),
        field!(l, remote_ip6[1]),
        field!(l, remote_ip6[2]),
        field!(l, remote_ip6[3]),
    ];
    let local6 = [
        field!(l, local_ip6[0]),
        field!(l, local_ip6[1]),
        field!(l, local_ip6[2]),
        field!(l, local_ip6[3]),
    ];
    if protocol != u32::from(PROTO_TCP) {
        return Ok(());
    }
    // One array lookup says whether the port has a TCP service and, unless one there names
    // local addresses, which.
    let entry = TCP_SERVICE_PORTS
        .get(u32::from(local_port))
        .copied()
        .unwrap_or(0);
    if entry == 0 {
        return Ok(()); // not a service's connection: every other lookup in the netns
    }
    // Another sk_lookup program before us chose a socket: never override it.
    if !field!(l, __bindgen_anon_1.__bindgen_anon_1.sk).is_null() {
        return Ok(());
    }
    let (client_addr, local_addr) = if family == AF_INET {
        (
            v4_mapped(remote4.to_ne_bytes()),
            v4_mapped(local4.to_ne_bytes()),
        )
    } else {
        (words_to_bytes(remote6), words_to_bytes(local6))
    };
    let slot = if entry == TCP_PORT_BY_ADDRESS {
        match find_service(local_addr, local_port, PROTO_TCP) {
            Some(slot) => slot,
            None => return Ok(()),
        }
    } else {
        entry - 1
    };
    let word = SERVICE_CONFIG.get_ptr(slot).ok_or(Skip::NoConfig)?;
    // SAFETY: aligned array value; one 8-byte load (docs/ARCHITECTURE.md, invariant 4).
    let cfg =
        ServiceConfig::unpack(unsafe { core::ptr::read_volatile(word) }).ok_or(Skip::NoConfig)?;
    if cfg.dispatch != Dispatch::Socket {
        return Ok(()); // rewrite dispatch: TC already steered it (or will)
    }
    let tuple = FlowTuple {
        proto: PROTO_TCP,
        client_addr,
        client_port: remote_port,
        local_addr,
        service_port: local_port,
    };
    let chosen = choose_backend(&tuple, &cfg);
    count_dry_run(&tuple, slot, &cfg);
    let other = match chosen {
        Backend::Blue => Backend::Green,
        Backend::Green => Backend::Blue,
    };
    // The in-kernel guard: a backend without a listener (not up yet, or died) is skipped
    // for the other one, counted as the chosen one's fallback.
    let got = if assign(ctx, cfg.port_of(chosen)) {
        chosen
    } else if assign(ctx, cfg.port_of(other)) {
        if let Some(c) = socket_counters(slot, chosen as u8) {
            c.fallbacks += 1;
        }
        other
    } else {
        // Nobody listens: the kernel finds no socket on the service port and refuses.
        if let Some(c) = counters(slot, chosen as u8) {
            c.refusals += 1;
        }
        return Ok(());
    };
    if let Some(c) = socket_counters(slot, got as u8) {
        c.connections += 1;
    }
    // sock_ops tells the backend of the established connection from the listener's tag the
    // kernel cloned onto it; only where the kernel does not clone it, a decision is left.
    if NETNS.get(NETNS_DECISIONS).copied().unwrap_or(0) != 0 {
        let key = FlowKey::new(PROTO_TCP, client_addr, remote_port, local_addr, local_port);
        let _ = SOCKET_DECISIONS.insert(&key, &((slot << 1) | got as u32), 0);
    }
    Ok(())
}

/// Assigns the first remembered listener of `port` the kernel accepts for this lookup (an
/// IPv6-only listener is refused for an IPv4 connection, and the other way round).
#[inline(always)]
fn assign(ctx: &SkLookupContext, port: u16) -> bool {
    let mut member = 0;
    while member < LISTENER_MEMBERS {
        if LISTENERS
            .redirect_sk_lookup(ctx, listener_key(port, member), 0)
            .is_ok()
        {
            return true;
        }
        member += 1;
    }
    false
}

/// sock_ops: remember a listener on a backend port of this namespace when it calls
/// `listen()`. Closed listeners leave the map by themselves.
#[inline(always)]
pub fn on_listen(ctx: &SockOpsContext) -> Result<(), Skip> {
    if ctx.op() != BPF_SOCK_OPS_TCP_LISTEN_CB {
        return Ok(());
    }
    let ops = ctx.ops;
    let port = field!(ops, local_port) as u16;
    if !port_in(PORT_BITMAP_BACKEND_BASE, port) {
        return Ok(());
    }
    // 0 (not set yet): remember nothing rather than the listeners of every namespace.
    let ours = NETNS.get(NETNS_COOKIE).copied().unwrap_or(0);
    // SAFETY: the helper reads the context's socket.
    let here = unsafe { bpf_get_netns_cookie(ops.cast()) };
    if ours == 0 || here != ours {
        return Ok(()); // a listener of another namespace under the same cgroup
    }
    // Tagged before it is in the map, so every connection it accepts is counted.
    if let Some(sk) = socket_of(ctx) {
        // SAFETY: the context's full (listening) socket.
        unsafe { SOCKET_TAGS.set(sk, SOCKET_TAG_LISTENER | u32::from(port)) };
    }
    let mut member = 0;
    while member < LISTENER_MEMBERS {
        // SAFETY: `ops` is the program's context, a `bpf_sock_ops` the helper reads.
        let sk_ops = unsafe { &mut *ops };
        if LISTENERS
            .update(listener_key(port, member), sk_ops, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            return Ok(());
        }
        member += 1;
    }
    Err(Skip::ListenerRecordFailed)
}

/// The registration program (TC, run by userspace with `BPF_PROG_TEST_RUN` in the served
/// namespace) on a frame of `eth | IPv4 or IPv6 | TCP SYN` addressed to a backend's
/// listener: finds that listener and remembers it in the first free place of its port.
/// Returns 1 when remembered, 0 when no listener was found, 2 when no place was free.
#[inline(always)]
pub fn register(ctx: *mut c_void, data: usize, data_end: usize) -> u32 {
    let sk = find_listener(ctx, data, data_end);
    if sk.is_null() {
        return 0;
    }
    // SAFETY: a referenced socket from the lookup, released right after.
    unsafe {
        let result = remember(sk);
        bpf_sk_release(sk.cast());
        result
    }
}

/// The tagging program, run like the registration program: puts the listener tag on the
/// listener the frame is addressed to (a member of its reuseport group, chosen by the
/// frame's source port), for listeners registered from userspace on kernels that refuse
/// userspace updates of socket storage. Returns 1 when tagged, 0 when no listener was
/// found, 2 when the tag could not be stored.
#[inline(always)]
pub fn tag(ctx: *mut c_void, data: usize, data_end: usize) -> u32 {
    let sk = find_listener(ctx, data, data_end);
    if sk.is_null() {
        return 0;
    }
    // SAFETY: a referenced socket from the lookup, released right after.
    unsafe {
        let (state, port) = ((*sk).state, (*sk).src_port as u16);
        // Any listener userspace names: the daemon's probe tags one on a port of its own.
        let result = if state != TCP_LISTEN {
            0
        } else if SOCKET_TAGS.set(sk.cast(), SOCKET_TAG_LISTENER | u32::from(port)) {
            1
        } else {
            2
        };
        bpf_sk_release(sk.cast());
        result
    }
}

/// The listening socket a `eth | IP | TCP SYN` frame is addressed to (referenced: release
/// it), or null.
#[inline(always)]
fn find_listener(ctx: *mut c_void, data: usize, data_end: usize) -> *mut bpf_sock {
    const ETH: usize = 14;
    // SAFETY: every read is bounds-checked against `data_end` first.
    unsafe {
        if data + ETH + 40 + 20 > data_end {
            return core::ptr::null_mut();
        }
        let ethertype = u16::from_be(core::ptr::read_unaligned((data + 12) as *const u16));
        let sk = if ethertype == 0x86dd {
            let ip = data + ETH;
            if ip + 40 + 4 > data_end {
                return core::ptr::null_mut();
            }
            let mut t = V6 {
                saddr: core::ptr::read_unaligned((ip + 8) as *const [u32; 4]),
                daddr: core::ptr::read_unaligned((ip + 24) as *const [u32; 4]),
                sport: core::ptr::read_unaligned((ip + 40) as *const u16),
                dport: core::ptr::read_unaligned((ip + 42) as *const u16),
            };
            bpf_sk_lookup_tcp(
                ctx,
                core::ptr::from_mut(&mut t).cast(),
                size_of::<V6>() as u32,
                BPF_F_CURRENT_NETNS as u64,
                0,
            )
        } else {
            let ip = data + ETH;
            if ip + 20 + 4 > data_end {
                return core::ptr::null_mut();
            }
            let mut t = V4 {
                saddr: core::ptr::read_unaligned((ip + 12) as *const u32),
                daddr: core::ptr::read_unaligned((ip + 16) as *const u32),
                sport: core::ptr::read_unaligned((ip + 20) as *const u16),
                dport: core::ptr::read_unaligned((ip + 22) as *const u16),
            };
            bpf_sk_lookup_tcp(
                ctx,
                core::ptr::from_mut(&mut t).cast(),
                size_of::<V4>() as u32,
                BPF_F_CURRENT_NETNS as u64,
                0,
            )
        };
        sk
    }
}

/// # Safety
/// `sk` is a referenced socket from a lookup helper.
#[inline(always)]
unsafe fn remember(sk: *mut bpf_sock) -> u32 {
    // SAFETY: `sk` is valid (caller).
    let (state, port) = unsafe { ((*sk).state, (*sk).src_port as u16) };
    if state != TCP_LISTEN || !port_in(PORT_BITMAP_BACKEND_BASE, port) {
        return 0;
    }
    // SAFETY: a referenced full socket (caller). Tagged first, as at `listen()`.
    unsafe { SOCKET_TAGS.set(sk.cast(), SOCKET_TAG_LISTENER | u32::from(port)) };
    let map = core::ptr::addr_of!(LISTENERS).cast_mut().cast::<c_void>();
    let mut member = 0;
    while member < LISTENER_MEMBERS {
        let key = listener_key(port, member);
        // SAFETY: map pointer of our SOCKHASH, a stack key, a referenced socket.
        let ret = unsafe {
            bpf_map_update_elem(
                map,
                core::ptr::from_ref(&key).cast(),
                sk.cast_const().cast(),
                u64::from(BPF_NOEXIST),
            )
        };
        if ret == 0 {
            return 1;
        }
        member += 1;
    }
    2
}
