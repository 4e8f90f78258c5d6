//! Header parsing with direct packet access. Every read is bounds-checked.
//!
//! A frame whose ports cannot be read (not IP, not TCP or UDP, a later fragment, cut before
//! its ports, more extension headers than we walk) is `Err(NoPorts)`: no service can own it
//! and the caller passes it unchanged. A frame whose ports can be read but whose length
//! fields disagree with each other or with the frame is a `Packet` with a `fault`: the caller
//! uses its ports only to tell whether it was a service's packet (then it counts the skip)
//! and never writes or records it (DESIGN.md, invariant 2).

use core::mem::size_of;
use shifter_common::{PROTO_TCP, PROTO_UDP, Skip};

use network_types::{
    eth::{EthHdr, EtherType},
    ip::IpProto,
};

const ETH_HLEN: usize = EthHdr::LEN;
// network-types keeps ethertypes in network order; we compare host-order values.
const ETH_P_IP: u16 = u16::from_be(EtherType::Ipv4 as u16);
const ETH_P_IPV6: u16 = u16::from_be(EtherType::Ipv6 as u16);
const ETH_P_8021Q: u16 = u16::from_be(EtherType::Ieee8021q as u16);
const ETH_P_8021AD: u16 = u16::from_be(EtherType::Ieee8021ad as u16);
const NH_HOP_BY_HOP: u8 = IpProto::HopOpt as u8;
const NH_ROUTING: u8 = IpProto::Ipv6Route as u8;
const NH_FRAGMENT: u8 = IpProto::Ipv6Frag as u8;
const NH_AUTH: u8 = IpProto::Ah as u8;
const NH_DEST_OPTS: u8 = IpProto::Ipv6Opts as u8;
/// 802.1ad outer tag plus 802.1Q inner tag.
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up (and passing the packet).
const MAX_EXT_HEADERS: usize = 6;
/// Upper bound of the L4 offset; keeps offsets bounded for the verifier.
const MAX_L4_OFFSET: usize = 512;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Offsets inside the L4 header.
pub const L4_SPORT: usize = 0;
pub const L4_DPORT: usize = 2;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;

/// A frame without readable TCP or UDP ports: not a packet any service could own.
pub struct NoPorts;

/// A parsed TCP or UDP packet. Addresses are 16 bytes (IPv4 mapped), ports host order.
pub struct Packet {
    pub proto: u8,
    pub is_v6: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// Offset of the L4 header from the start of the frame.
    pub l4_off: usize,
    pub tcp_flags: u8,
    pub seq: u32,
    /// Why the packet must not be touched, if its lengths are inconsistent. Only the
    /// addresses, protocol and ports are meaningful then.
    pub fault: Option<Skip>,
}

impl Packet {
    #[inline(always)]
    pub fn csum_off(&self) -> usize {
        self.l4_off
            + if self.proto == PROTO_TCP {
                TCP_CSUM
            } else {
                UDP_CSUM
            }
    }
    #[inline(always)]
    pub fn is_syn(&self) -> bool {
        self.proto == PROTO_TCP && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }
}

/// Pointer to a `T` at `off`, if the whole `T` lies before `end`.
#[inline(always)]
fn at<T>(data: usize, end: usize, off: usize) -> Option<*const T> {
    let start = data + off;
    if start + size_of::<T>() > end {
        return None;
    }
    Some(start as *const T)
}

#[inline(always)]
fn be16(data: usize, end: usize, off: usize) -> Option<u16> {
    // SAFETY: bounds checked by `at`.
    Some(u16::from_be(unsafe {
        at::<u16>(data, end, off)?.read_unaligned()
    }))
}

/// Keeps the first fault found.
#[inline(always)]
fn flag(fault: &mut Option<Skip>, reason: Skip) {
    if fault.is_none() {
        *fault = Some(reason);
    }
}

/// Parses Ethernet (with up to two VLAN tags), IPv4 (with options) or IPv6 (with extension
/// headers), then the TCP or UDP header, and checks every length field on the way:
///
/// - IPv4: IHL at least 5 and within the total length; the total length within the frame
///   (`frame_len` bytes; shorter is Ethernet padding) and long enough for the L4 header.
/// - IPv6: the payload length within the frame and long enough for the extension headers
///   and the L4 header.
/// - A stated IP length of 0 only for TCP in a GSO packet (`gso()`, asked only then): BIG
///   TCP aggregates state no length. The frame is the datagram's end then.
/// - TCP: data offset at least 5 and within the IP payload.
/// - UDP: length at least 8 and equal to the IP payload length.
///
/// A frame that fails one of them is returned with `fault` set to the first failure.
#[inline(always)]
pub fn parse(
    data: usize,
    end: usize,
    frame_len: usize,
    gso: impl FnOnce() -> bool,
) -> Result<Packet, NoPorts> {
    let mut off = ETH_HLEN;
    let mut ethertype = be16(data, end, 12).ok_or(NoPorts)?;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = be16(data, end, off + 2).ok_or(NoPorts)?;
        off += 4;
    }
    let mut fault = None;
    // `ip_end`: end of the IP datagram per its length field (0: the header states none).
    let (is_v6, proto, src, dst, l4_off, ip_end) = match ethertype {
        ETH_P_IP => {
            // SAFETY: bounds checked by `at`.
            let h = unsafe {
                at::<[u8; 20]>(data, end, off)
                    .ok_or(NoPorts)?
                    .read_unaligned()
            };
            if h[0] >> 4 != 4 {
                return Err(NoPorts);
            }
            // Fragment offset != 0: a later fragment, without ports.
            if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                return Err(NoPorts);
            }
            let proto = h[9];
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let mut ihl = usize::from(h[0] & 0x0f) * 4;
            if ihl < 20 || (total != 0 && ihl > total) {
                // This IHL cannot say where L4 starts: read the ports after the fixed header,
                // only to tell whose packet it was.
                flag(&mut fault, Skip::Ipv4Length);
                ihl = 20;
            }
            if total == 0 {
                if !(proto == PROTO_TCP && gso()) {
                    flag(&mut fault, Skip::Ipv4Length);
                }
            } else if off + total > frame_len {
                flag(&mut fault, Skip::Truncated);
            }
            let ip_end = if total == 0 { 0 } else { off + total };
            let src = shifter_common::v4_mapped([h[12], h[13], h[14], h[15]]);
            let dst = shifter_common::v4_mapped([h[16], h[17], h[18], h[19]]);
            (false, proto, src, dst, off + ihl, ip_end)
        }
        ETH_P_IPV6 => {
            // SAFETY: bounds checked by `at`.
            let h = unsafe {
                at::<[u8; 40]>(data, end, off)
                    .ok_or(NoPorts)?
                    .read_unaligned()
            };
            if h[0] >> 4 != 6 {
                return Err(NoPorts);
            }
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let mut next = h[6];
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&h[8..24]);
            dst.copy_from_slice(&h[24..40]);
            let mut l4 = off + 40;
            let mut done = false;
            for _ in 0..MAX_EXT_HEADERS {
                if !matches!(
                    next,
                    NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS | NH_FRAGMENT | NH_AUTH
                ) {
                    // The L4 header: its ports may be all that a cut frame still holds.
                    done = true;
                    break;
                }
                // Every extension header we walk starts with (next header, length) and is
                // at least 8 bytes long: read those 8 at once (verifier-friendly).
                // SAFETY: bounds checked by `at`.
                let h = unsafe {
                    at::<[u8; 8]>(data, end, l4)
                        .ok_or(NoPorts)?
                        .read_unaligned()
                };
                let len = match next {
                    // Fragment: 8 bytes; a non-zero offset means no L4 header here.
                    NH_FRAGMENT => {
                        if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                            return Err(NoPorts);
                        }
                        8
                    }
                    // Authentication header: (len + 2) * 4 bytes.
                    NH_AUTH => (usize::from(h[1]) + 2) * 4,
                    // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
                    _ => (usize::from(h[1]) + 1) * 8,
                };
                next = h[0];
                l4 += len;
                if l4 > MAX_L4_OFFSET {
                    return Err(NoPorts);
                }
            }
            if !done && matches!(next, 0 | 43 | 44 | 51 | 60) {
                // More extension headers than we walk: pass unchanged.
                return Err(NoPorts);
            }
            if payload == 0 {
                if !(next == PROTO_TCP && gso()) {
                    flag(&mut fault, Skip::Ipv6Length);
                }
            } else if off + 40 + payload > frame_len {
                flag(&mut fault, Skip::Truncated);
            }
            let ip_end = if payload == 0 { 0 } else { off + 40 + payload };
            (true, next, src, dst, l4, ip_end)
        }
        _ => return Err(NoPorts),
    };
    if l4_off > MAX_L4_OFFSET || !(proto == PROTO_TCP || proto == PROTO_UDP) {
        return Err(NoPorts);
    }
    // The ports first: from here on the packet can be told to be a service's or not.
    // SAFETY: bounds checked by `at`.
    let ports = unsafe {
        at::<[u8; 4]>(data, end, l4_off)
            .ok_or(NoPorts)?
            .read_unaligned()
    };
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    // The IP datagram must hold the fixed L4 header.
    let l4_len = if proto == PROTO_TCP { 20 } else { 8 };
    if ip_end != 0 && l4_off + l4_len > ip_end {
        flag(
            &mut fault,
            if is_v6 {
                Skip::Ipv6Length
            } else {
                Skip::Ipv4Length
            },
        );
    }
    // Where the L4 segment ends: the IP datagram's end, or the frame's when none is stated.
    let l4_end = if ip_end != 0 { ip_end } else { frame_len };
    let (tcp_flags, seq) = if proto == PROTO_TCP {
        // Read the fixed header in one bounds check and take the fields from it.
        match at::<[u8; 20]>(data, end, l4_off) {
            Some(h) => {
                // SAFETY: bounds checked by `at`.
                let h = unsafe { h.read_unaligned() };
                let doff = usize::from(h[12] >> 4) * 4;
                if doff < 20 || l4_off + doff > l4_end {
                    flag(&mut fault, Skip::TcpLength);
                }
                (h[13], u32::from_be_bytes([h[4], h[5], h[6], h[7]]))
            }
            None => {
                flag(&mut fault, Skip::Truncated);
                (0, 0)
            }
        }
    } else {
        match at::<[u8; 8]>(data, end, l4_off) {
            Some(h) => {
                // SAFETY: bounds checked by `at`.
                let h = unsafe { h.read_unaligned() };
                let ulen = usize::from(u16::from_be_bytes([h[4], h[5]]));
                if ulen < 8 || l4_off + ulen != l4_end {
                    flag(&mut fault, Skip::UdpLength);
                }
                (0, 0)
            }
            None => {
                flag(&mut fault, Skip::Truncated);
                (0, 0)
            }
        }
    };
    Ok(Packet {
        proto,
        is_v6,
        src,
        dst,
        sport,
        dport,
        l4_off,
        tcp_flags,
        seq,
        fault,
    })
}

/// The checksum field of an L4 header, read for the XDP path's own incremental update.
#[inline(always)]
pub fn l4_csum(data: usize, end: usize, pkt: &Packet) -> Option<u16> {
    be16(data, end, pkt.csum_off())
}

/// Writable pointer to a 16-bit field at `off`, bounds-checked.
#[inline(always)]
pub fn field16(data: usize, end: usize, off: usize) -> Option<*mut u16> {
    Some(at::<u16>(data, end, off)? as *mut u16)
}
