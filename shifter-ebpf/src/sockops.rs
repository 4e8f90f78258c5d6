//! sock_ops: remember, per socket, that a connection accepted on a backend port was shifted.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_TCP_CLOSE,
    },
    helpers::bpf_get_socket_cookie,
    programs::SockOpsContext,
};
use shifter_common::{FLOW_ESTABLISHED, FlowKey, PROTO_TCP, Skip, v4_mapped};

use crate::maps::{FLOWS, SOCKETS};

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
        return Ok(()); // a direct connection to the backend: nothing to remember
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
