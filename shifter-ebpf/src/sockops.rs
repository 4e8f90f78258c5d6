//! sock_ops: remember, per socket, that a connection accepted on a backend port was shifted;
//! and count the connections socket dispatch handed to each backend while they are open.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_TCP_CLOSE, BPF_TCP_ESTABLISHED,
    },
    cty::c_void,
    helpers::bpf_get_socket_cookie,
    programs::SockOpsContext,
};
use shifter_common::{
    FLOW_ESTABLISHED, FlowKey, NETNS_DECISIONS, PROTO_TCP, SOCKET_TAG_CONNECTION,
    SOCKET_TAG_LISTENER, ServiceConfig, Skip, v4_mapped,
};

use crate::{
    ingress::find_service,
    maps::{
        FLOWS, NETNS, SERVICE_CONFIG, SOCKET_CONNECTIONS, SOCKET_DECISIONS, SOCKET_TAGS, SOCKETS,
        socket_counters,
    },
};

const AF_INET: u32 = 2;

/// `Err` when a shifted connection could not be remembered.
#[inline(always)]
pub fn run(ctx: &SockOpsContext) -> Result<(), Skip> {
    match ctx.op() {
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_established(ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => {
            // SAFETY: the helper reads the socket behind the sock_ops context.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            // Absent for a connection that was never recorded: nothing to do.
            let _ = SOCKETS.remove(&cookie);
            socket_dispatch_closed(ctx, cookie, ctx.arg(0));
            Ok(())
        }
        _ => Ok(()),
    }
}

#[inline(always)]
fn on_established(ctx: &SockOpsContext) -> Result<(), Skip> {
    let ops = ctx.ops;
    let (client_addr, local_addr) = if field!(ops, family) == AF_INET {
        (
            v4_mapped(field!(ops, remote_ip4).to_ne_bytes()),
            v4_mapped(field!(ops, local_ip4).to_ne_bytes()),
        )
    } else {
        let r = [
            field!(ops, remote_ip6)[0],
            field!(ops, remote_ip6)[1],
            field!(ops, remote_ip6)[2],
            field!(ops, remote_ip6)[3],
        ];
        let l = [
            field!(ops, local_ip6)[0],
            field!(ops, local_ip6)[1],
            field!(ops, local_ip6)[2],
            field!(ops, local_ip6)[3],
        ];
        (words_to_bytes(r), words_to_bytes(l))
    };
    let key = FlowKey::new(
        PROTO_TCP,
        client_addr,
        // remote_port holds the network-order port in its upper half.
        u32::from_be(field!(ops, remote_port)) as u16,
        local_addr,
        field!(ops, local_port) as u16,
    );
    // SAFETY: map value copied out immediately.
    let Some(flow) = (unsafe { FLOWS.get(&key) }) else {
        // Not rewritten: a connection sk_lookup handed to a listener, or a direct one.
        return socket_dispatch_established(ctx, &key);
    };
    let mut value = *flow;
    value.flags |= FLOW_ESTABLISHED;
    // SAFETY: the helper reads the socket behind the sock_ops context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    SOCKETS
        .insert(&cookie, &value, 0)
        .map_err(|_| Skip::SocketRecordFailed)?;
    // Ask for the state callback so the record goes when the socket closes. It cannot fail
    // for an established full socket; if it did, the record would only outlive the
    // connection until the LRU map evicts it (cookies are never reused): not a skip.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    Ok(())
}

/// Four address words of a context (network order) as the 16 address bytes.
#[inline(always)]
pub(crate) fn words_to_bytes(w: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = w[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

/// The context's socket (`None` for a request socket, which has none to pass on).
#[inline(always)]
pub(crate) fn socket_of(ctx: &SockOpsContext) -> Option<*mut c_void> {
    let sk = field!(ctx.ops, __bindgen_anon_2.sk);
    if sk.is_null() { None } else { Some(sk.cast()) }
}

/// A connection accepted by a listener socket dispatch registered (the listener's tag, cloned
/// onto it by the kernel) is established: find its service from its local address and port
/// (the service port) and its backend from the listener's port, count it for that backend
/// and turn its tag into the connection's, for the close.
#[inline(always)]
fn socket_dispatch_established(ctx: &SockOpsContext, key: &FlowKey) -> Result<(), Skip> {
    let decided = if NETNS.get(NETNS_DECISIONS).copied().unwrap_or(0) != 0 {
        // Kernels that do not clone socket storage: sk_lookup's decision, kept by socket
        // cookie (such kernels create no storage for the connection either).
        // SAFETY: plain u32 value, copied.
        let Some(&decided) = (unsafe { SOCKET_DECISIONS.get(key) }) else {
            return Ok(()); // a direct connection to a backend port, or another's
        };
        let _ = SOCKET_DECISIONS.remove(key);
        // SAFETY: the helper reads the socket behind the sock_ops context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        SOCKET_CONNECTIONS
            .insert(&cookie, &decided, 0)
            .map_err(|_| Skip::SocketRecordFailed)?;
        decided
    } else {
        // SAFETY: a full socket of the context.
        let tag = socket_of(ctx).and_then(|sk| unsafe { SOCKET_TAGS.get(sk) });
        let Some(tag) = tag.filter(|t| **t & SOCKET_TAG_LISTENER != 0) else {
            return Ok(()); // not accepted by a registered listener
        };
        let Some(decided) = from_listener_tag(*tag as u16, key)? else {
            return Ok(());
        };
        *tag = SOCKET_TAG_CONNECTION | decided;
        decided
    };
    let (slot, backend) = (decided >> 1, decided & 1);
    if let Some(c) = socket_counters(slot, backend as u8) {
        c.established += 1;
    }
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    Ok(())
}

/// `slot << 1 | backend` of a connection accepted on the service `key` names by a listener
/// tagged with `listener_port`; `None` when that is no backend of the service (a direct
/// connection to a backend port, a rewritten one, another service's listener).
#[inline(always)]
fn from_listener_tag(listener_port: u16, key: &FlowKey) -> Result<Option<u32>, Skip> {
    let Some(slot) = find_service(key.local_addr, key.backend_port, PROTO_TCP) else {
        return Ok(None);
    };
    let word = SERVICE_CONFIG.get_ptr(slot).ok_or(Skip::NoConfig)?;
    // SAFETY: aligned array value; one 8-byte load (docs/ARCHITECTURE.md, invariant 4).
    let cfg =
        ServiceConfig::unpack(unsafe { core::ptr::read_volatile(word) }).ok_or(Skip::NoConfig)?;
    Ok(if listener_port == cfg.blue_port {
        Some(slot << 1)
    } else if listener_port == cfg.green_port {
        Some((slot << 1) | 1)
    } else {
        None
    })
}

/// A counted socket-dispatch connection closed, from state `old`: count it, and as a reset
/// when it left ESTABLISHED for CLOSE at once (no FIN exchange).
#[inline(always)]
fn socket_dispatch_closed(ctx: &SockOpsContext, cookie: u64, old: u32) {
    // SAFETY: a full socket of the context.
    let tag = socket_of(ctx).and_then(|sk| unsafe { SOCKET_TAGS.get(sk) });
    let decided = match tag {
        Some(tag) if *tag & SOCKET_TAG_CONNECTION != 0 => {
            let decided = *tag;
            *tag = 0; // counted once, whatever callbacks follow
            decided
        }
        // SAFETY: plain u32 value, copied.
        _ => match unsafe { SOCKET_CONNECTIONS.get(&cookie) } {
            Some(&decided) => {
                let _ = SOCKET_CONNECTIONS.remove(&cookie);
                decided
            }
            None => return,
        },
    };
    if let Some(c) = socket_counters((decided & 0xffff) >> 1, decided as u8 & 1) {
        c.closed += 1;
        if old == BPF_TCP_ESTABLISHED {
            c.resets += 1;
        }
    }
}
