//! Header parsing with direct packet access. Every read is bounds-checked; anything that
//! cannot be parsed completely yields `Err(NoPorts)` and the caller passes the packet
//! unchanged.

use core::mem::size_of;
use shifter_common::{PROTO_TCP, PROTO_UDP};

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

/// A frame the parser gives up on: passed unchanged.
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
fn at<T>(data: usize, end: usize, off: usize) -> Result<*const T, NoPorts> {
    let start = data + off;
    if start + size_of::<T>() > end {
        return Err(NoPorts);
    }
    Ok(start as *const T)
}

#[inline(always)]
fn be16(data: usize, end: usize, off: usize) -> Result<u16, NoPorts> {
    // SAFETY: bounds checked by `at`.
    Ok(u16::from_be(unsafe {
        at::<u16>(data, end, off)?.read_unaligned()
    }))
}

/// Parses Ethernet (with up to two VLAN tags), IPv4 (with options) or IPv6 (with extension
/// headers), then the TCP or UDP header. Later fragments (no ports) are `Err`, and so are
/// truncated packets: an IP datagram longer than the `frame_len` bytes present, or too short
/// for its own L4 header.
#[inline(always)]
pub fn parse(data: usize, end: usize, frame_len: usize) -> Result<Packet, NoPorts> {
    let mut off = ETH_HLEN;
    let mut ethertype = be16(data, end, 12)?;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = be16(data, end, off + 2)?;
        off += 4;
    }
    // `ip_end`: end of the IP datagram per its length field (0: the header states no length,
    // as a BIG TCP GSO packet does); only used to reject truncated headers below.
    let (is_v6, proto, src, dst, l4_off, ip_end) = match ethertype {
        ETH_P_IP => {
            // SAFETY: bounds checked by `at`.
            let h = unsafe { at::<[u8; 20]>(data, end, off)?.read_unaligned() };
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if h[0] >> 4 != 4 || ihl < 20 {
                return Err(NoPorts);
            }
            // The whole header, options included, must be present.
            if data + off + ihl > end {
                return Err(NoPorts);
            }
            // Fragment offset != 0: a later fragment, without ports.
            if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                return Err(NoPorts);
            }
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            if total != 0 && (total < ihl || off + total > frame_len) {
                return Err(NoPorts);
            }
            let ip_end = if total == 0 { 0 } else { off + total };
            let src = shifter_common::v4_mapped([h[12], h[13], h[14], h[15]]);
            let dst = shifter_common::v4_mapped([h[16], h[17], h[18], h[19]]);
            (false, h[9], src, dst, off + ihl, ip_end)
        }
        ETH_P_IPV6 => {
            // SAFETY: bounds checked by `at`.
            let h = unsafe { at::<[u8; 40]>(data, end, off)?.read_unaligned() };
            if h[0] >> 4 != 6 {
                return Err(NoPorts);
            }
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if off + 40 + payload > frame_len {
                return Err(NoPorts);
            }
            let ip_end = if payload == 0 { 0 } else { off + 40 + payload };
            let mut next = h[6];
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&h[8..24]);
            dst.copy_from_slice(&h[24..40]);
            let mut l4 = off + 40;
            let mut done = false;
            for _ in 0..MAX_EXT_HEADERS {
                // Every extension header we walk starts with (next header, length) and is
                // at least 8 bytes long: read those 8 at once (verifier-friendly).
                // SAFETY: bounds checked by `at`.
                let h = unsafe { at::<[u8; 8]>(data, end, l4)?.read_unaligned() };
                let len = match next {
                    // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
                    NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => (usize::from(h[1]) + 1) * 8,
                    // Fragment: 8 bytes; a non-zero offset means no L4 header here.
                    NH_FRAGMENT => {
                        if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                            return Err(NoPorts);
                        }
                        8
                    }
                    // Authentication header: (len + 2) * 4 bytes.
                    NH_AUTH => (usize::from(h[1]) + 2) * 4,
                    _ => {
                        done = true;
                        break;
                    }
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
            (true, next, src, dst, l4, ip_end)
        }
        _ => return Err(NoPorts),
    };
    if l4_off > MAX_L4_OFFSET {
        return Err(NoPorts);
    }
    // Read the fixed L4 header in one bounds check and take the fields from it.
    let l4_len = if proto == PROTO_TCP { 20 } else { 8 };
    if ip_end != 0 && l4_off + l4_len > ip_end {
        return Err(NoPorts);
    }
    let (sport, dport, tcp_flags, seq) = match proto {
        PROTO_TCP => {
            // SAFETY: bounds checked by `at`.
            let h = unsafe { at::<[u8; 20]>(data, end, l4_off)?.read_unaligned() };
            (
                u16::from_be_bytes([h[0], h[1]]),
                u16::from_be_bytes([h[2], h[3]]),
                h[13],
                u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            )
        }
        PROTO_UDP => {
            // SAFETY: bounds checked by `at`.
            let h = unsafe { at::<[u8; 8]>(data, end, l4_off)?.read_unaligned() };
            (
                u16::from_be_bytes([h[0], h[1]]),
                u16::from_be_bytes([h[2], h[3]]),
                0,
                0,
            )
        }
        _ => return Err(NoPorts),
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
    })
}

/// The checksum field of an L4 header, read for the XDP path's own incremental update.
#[inline(always)]
pub fn l4_csum(data: usize, end: usize, pkt: &Packet) -> Option<u16> {
    be16(data, end, pkt.csum_off()).ok()
}

/// Writable pointer to a 16-bit field at `off`, bounds-checked.
#[inline(always)]
pub fn field16(data: usize, end: usize, off: usize) -> Option<*mut u16> {
    at::<u16>(data, end, off).ok().map(|p| p as *mut u16)
}
