//! Socket lookup: who owns a connection whose flow entry is gone.

use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock_tuple},
    cty::c_void,
    helpers::{bpf_sk_lookup_tcp, bpf_sk_release},
};

use crate::parse::{Addrs, Packet};

const TCP_LISTEN: u32 = 10;

/// True when a non-listening TCP socket owns (client -> local:`local_port`): the connection
/// was established on that backend.
#[inline(always)]
pub fn owns_connection(ctx: *mut c_void, pkt: &Packet, addrs: &Addrs, local_port: u16) -> bool {
    // SAFETY: plain-old-data union, fully initialised below for the family used.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let (src, dst) = (addrs.src.bytes(), addrs.dst.bytes());
    let size = if pkt.is_v6 {
        // SAFETY: writing the IPv6 member of the union.
        let t = unsafe { &mut tuple.__bindgen_anon_1.ipv6 };
        t.saddr = words(&src);
        t.daddr = words(&dst);
        t.sport = pkt.sport.to_be();
        t.dport = local_port.to_be();
        core::mem::size_of_val(t)
    } else {
        // SAFETY: writing the IPv4 member of the union.
        let t = unsafe { &mut tuple.__bindgen_anon_1.ipv4 };
        t.saddr = u32::from_ne_bytes([src[12], src[13], src[14], src[15]]);
        t.daddr = u32::from_ne_bytes([dst[12], dst[13], dst[14], dst[15]]);
        t.sport = pkt.sport.to_be();
        t.dport = local_port.to_be();
        core::mem::size_of_val(t)
    };
    // SAFETY: helper call with a stack tuple of the stated size; the socket is released.
    unsafe {
        let sk = bpf_sk_lookup_tcp(ctx, &mut tuple, size as u32, BPF_F_CURRENT_NETNS as u64, 0);
        if sk.is_null() {
            return false;
        }
        let state = (*sk).state;
        bpf_sk_release(sk.cast());
        state != TCP_LISTEN
    }
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}
