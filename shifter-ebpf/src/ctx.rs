//! What the shared ingress logic needs from a TC or an XDP context.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_MARK_MANGLED_0,
    cty::c_void,
    programs::{TcContext, XdpContext},
};
use shifter_common::{PROTO_UDP, Skip};

use crate::{
    csum,
    parse::{self, Addrs, Packet},
};

pub trait PacketCtx {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Frame length, for byte counters.
    fn frame_len(&self) -> u32;
    fn raw(&self) -> *mut c_void;
    /// True for a GSO packet (an aggregate the stack splits later): only such a TCP packet
    /// may state no IP length (BIG TCP).
    fn is_gso(&self) -> bool;
    /// Rewrites the 16-bit port at `field` of the L4 header from `old` to `new` (host order)
    /// and updates the L4 checksum incrementally.
    fn rewrite_port(&self, pkt: &Packet, field: usize, old: u16, new: u16) -> Result<(), Skip>;

    /// Finds and reads the packet's headers (see `parse::parse`).
    #[inline(always)]
    fn parse(&self) -> Result<Packet, parse::NoPorts> {
        parse::parse(self.data(), self.data_end())
    }

    /// `pkt`'s addresses (see `Packet::addrs`); `Truncated` in the case that cannot happen.
    #[inline(always)]
    fn addrs(&self, pkt: &Packet) -> Result<Addrs, Skip> {
        pkt.addrs(self.data(), self.data_end())
            .ok_or(Skip::Truncated)
    }

    /// Why `pkt` must not be touched, if its lengths disagree (see `Packet::fault`).
    #[inline(always)]
    fn fault(&self, pkt: &Packet) -> Option<Skip> {
        pkt.fault(self.frame_len() as usize, || self.is_gso())
    }
}

/// Headers we may need in the linear part of an skb.
const PULL_LEN: u32 = 128;

pub struct Tc<'a>(pub &'a TcContext);

impl Tc<'_> {
    /// Makes sure the headers are in the linear area for direct access.
    #[inline(always)]
    pub fn prepare(&self) {
        let linear = (self.0.data_end() - self.0.data()) as u32;
        let len = self.0.len();
        if linear < len && linear < PULL_LEN {
            let _ = self
                .0
                .pull_data(if len < PULL_LEN { len } else { PULL_LEN });
        }
    }
}

impl PacketCtx for Tc<'_> {
    #[inline(always)]
    fn data(&self) -> usize {
        self.0.data()
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        self.0.data_end()
    }
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        self.0.len()
    }
    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.0.as_ptr()
    }
    #[inline(always)]
    fn is_gso(&self) -> bool {
        // SAFETY: the program's own context; `gso_size` is readable by TC programs (5.7+).
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*self.0.skb.skb).gso_size)) != 0 }
    }
    #[inline(always)]
    fn rewrite_port(&self, pkt: &Packet, field: usize, old: u16, new: u16) -> Result<(), Skip> {
        // The checksum helper first (it leaves a CHECKSUM_PARTIAL field alone, the port is
        // summed later, and keeps a UDP checksum of 0 at 0 with BPF_F_MARK_MANGLED_0); then
        // the port is written directly, one helper call cheaper than bpf_skb_store_bytes.
        // Offsets were bounds-checked by the parser, so neither step fails after the other.
        let mut flags = 2u64;
        if pkt.proto == PROTO_UDP {
            flags |= u64::from(BPF_F_MARK_MANGLED_0);
        }
        self.0
            .l4_csum_replace(
                pkt.csum_off(),
                u64::from(old.to_be()),
                u64::from(new.to_be()),
                flags,
            )
            .map_err(|_| Skip::RewriteFailed)?;
        // The helper may have moved the packet: take fresh pointers.
        let port = parse::field16(self.data(), self.data_end(), pkt.l4_off + field)
            .ok_or(Skip::RewriteFailed)?;
        // SAFETY: bounds-checked by `field16`.
        unsafe { port.write_unaligned(new.to_be()) };
        Ok(())
    }
}

pub struct Xdp<'a>(pub &'a XdpContext);

impl PacketCtx for Xdp<'_> {
    #[inline(always)]
    fn data(&self) -> usize {
        self.0.data()
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        self.0.data_end()
    }
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        (self.0.data_end() - self.0.data()) as u32
    }
    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.0.as_ptr()
    }
    #[inline(always)]
    fn is_gso(&self) -> bool {
        // An XDP frame is what the wire delivered: never an aggregate.
        false
    }
    #[inline(always)]
    fn rewrite_port(&self, pkt: &Packet, field: usize, old: u16, new: u16) -> Result<(), Skip> {
        let (data, end) = (self.data(), self.data_end());
        let check = parse::l4_csum(data, end, pkt).ok_or(Skip::RewriteFailed)?;
        let port = parse::field16(data, end, pkt.l4_off + field).ok_or(Skip::RewriteFailed)?;
        let csum_ptr = parse::field16(data, end, pkt.csum_off()).ok_or(Skip::RewriteFailed)?;
        // An IPv4 UDP checksum of 0 means "none" and stays 0; a computed 0 is sent as 0xffff.
        let new_check = if pkt.proto == PROTO_UDP && check == 0 {
            0
        } else {
            match csum::replace16(check, old, new) {
                0 if pkt.proto == PROTO_UDP => 0xffff,
                c => c,
            }
        };
        // SAFETY: both pointers were bounds-checked by `field16`.
        unsafe {
            port.write_unaligned(new.to_be());
            csum_ptr.write_unaligned(new_check.to_be());
        }
        Ok(())
    }
}
