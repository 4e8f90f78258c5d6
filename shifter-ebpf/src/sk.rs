//! Socket lookup: who owns a connection whose flow entry is gone.

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as V4,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 as V6,
    },
    cty::c_void,
    helpers::{bpf_sk_lookup_tcp, bpf_sk_release},
};

use crate::parse::{Addrs, Packet};

const TCP_LISTEN: u32 = 10;

/// True when a non-listening TCP socket owns (client -> local:`local_port`): the connection
/// was established on that backend.
#[inline(always)]
pub fn owns_connection(ctx: *mut c_void, pkt: &Packet, addrs: &Addrs, local_port: u16) -> bool {
    let (src, dst) = (addrs.src.bytes(), addrs.dst.bytes());
    let (sport, dport) = (pkt.sport.to_be(), local_port.to_be());
    // The family's member of `bpf_sock_tuple` on its own, whole, and only its size passed:
    // zeroing the whole union first was a call to a byte-by-byte memset in the eBPF build,
    // and a union written through one member leaves bytes the verifier rejects.
    if pkt.is_v6 {
        let mut t = V6 {
            saddr: words(&src),
            daddr: words(&dst),
            sport,
            dport,
        };
        lookup(ctx, core::ptr::from_mut(&mut t).cast(), size_of::<V6>())
    } else {
        let mut t = V4 {
            saddr: u32::from_ne_bytes([src[12], src[13], src[14], src[15]]),
            daddr: u32::from_ne_bytes([dst[12], dst[13], dst[14], dst[15]]),
            sport,
            dport,
        };
        lookup(ctx, core::ptr::from_mut(&mut t).cast(), size_of::<V4>())
    }
}

/// `bpf_sk_lookup_tcp` on a tuple of `size` initialised bytes: a non-listening socket found.
#[inline(always)]
fn lookup(ctx: *mut c_void, tuple: *mut bpf_sock_tuple, size: usize) -> bool {
    // SAFETY: helper call with a stack tuple of the stated size; the socket is released.
    unsafe {
        let sk = bpf_sk_lookup_tcp(ctx, tuple, size as u32, BPF_F_CURRENT_NETNS as u64, 0);
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
