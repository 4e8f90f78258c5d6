//! Header parsing with direct packet access. Every read is bounds-checked.
//!
//! In steps, so that a packet that is not a service's pays only for the first:
//! - `parse` finds the headers and reads the ports and the fixed TCP or UDP header. A frame
//!   whose ports cannot be read (not IP, not TCP or UDP, a later fragment, cut before its
//!   ports, more extension headers than we walk) is `Err(NoPorts)`: no service can own it
//!   and the caller passes it unchanged.
//! - `Packet::fault` checks the length fields against the frame and against each other. The
//!   caller asks it only for a service's packet (or before acting on any other), and a
//!   packet with a fault is never written or recorded (docs/ARCHITECTURE.md, invariant 2).
//! - `Packet::addrs` reads the addresses, when a key needs them.

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

/// A parsed TCP or UDP packet. Ports in host order.
pub struct Packet {
    pub proto: u8,
    pub is_v6: bool,
    /// Offset of the IP header from the start of the frame.
    l3_off: usize,
    pub sport: u16,
    pub dport: u16,
    /// Offset of the L4 header from the start of the frame.
    pub l4_off: usize,
    pub tcp_flags: u8,
    pub seq: u32,
    /// The length fields, as read, for `fault`.
    lengths: Lengths,
}

/// An IP address: its 16 bytes in network order (IPv4 mapped as `::ffff:a.b.c.d`), held as
/// two native-endian words of those bytes. The BPF backend carries a `[u8; 16]` as 16
/// separate bytes (and where IPv4 and IPv6 paths merge, spills each of them); two words are
/// two registers, and two stores into a key.
#[derive(Clone, Copy)]
pub struct Addr([u64; 2]);

impl Addr {
    #[inline(always)]
    fn v4(a: [u8; 4]) -> Self {
        Self([
            0,
            u64::from_ne_bytes([0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]),
        ])
    }

    #[inline(always)]
    fn v6(b: &[u8; 32], at: usize) -> Self {
        let word = |i: usize| {
            u64::from_ne_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        Self([word(at), word(at + 8)])
    }

    /// The 16 bytes, for map keys.
    #[inline(always)]
    pub fn bytes(self) -> [u8; 16] {
        // SAFETY: two u64 are 16 bytes, and any bytes are a valid [u8; 16]; the words hold
        // the bytes in memory order (native-endian), so this is the address as it was.
        unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(self.0) }
    }
}

/// A packet's source and destination addresses.
pub struct Addrs {
    pub src: Addr,
    pub dst: Addr,
}

/// What `Packet::fault` checks.
struct Lengths {
    /// End of the IP datagram per its length field; 0 when it states none.
    ip_end: usize,
    /// The IPv4 IHL is below 5 or past the total length (`l4_off` is then a guess).
    bad_ihl: bool,
    /// TCP: data offset in bytes; UDP: the UDP length. `None` when the fixed header is
    /// not in the frame (only the ports are).
    l4_len: Option<u16>,
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

    /// The addresses, read from the packet only when asked for: a packet that is not a
    /// service's never pays for them. `None` only if the IP header `parse` read is no longer
    /// within `data..end`.
    #[inline(always)]
    pub fn addrs(&self, data: usize, end: usize) -> Option<Addrs> {
        if self.is_v6 {
            let h: [u8; 32] = read(data, end, self.l3_off + 8).ok()?;
            Some(Addrs {
                src: Addr::v6(&h, 0),
                dst: Addr::v6(&h, 16),
            })
        } else {
            let h: [u8; 8] = read(data, end, self.l3_off + 12).ok()?;
            Some(Addrs {
                src: Addr::v4([h[0], h[1], h[2], h[3]]),
                dst: Addr::v4([h[4], h[5], h[6], h[7]]),
            })
        }
    }

    /// Why this packet must not be touched, if its length fields disagree with the frame
    /// (`frame_len` bytes) or with each other; the first failure found:
    ///
    /// - IPv4: IHL at least 5 and within the total length.
    /// - The IP length (IPv4 total, IPv6 payload) within the frame (less is Ethernet padding)
    ///   and long enough for the extension headers and the L4 header. 0 only for TCP in a
    ///   GSO packet (`gso()`, asked only then): BIG TCP aggregates state no length, and the
    ///   frame's end is the datagram's.
    /// - The fixed TCP or UDP header within the frame.
    /// - TCP: data offset at least 5 and within the IP payload.
    /// - UDP: length at least 8 and equal to the IP payload length.
    #[inline(always)]
    pub fn fault(&self, frame_len: usize, gso: impl FnOnce() -> bool) -> Option<Skip> {
        let tcp = self.proto == PROTO_TCP;
        let ip_length = if self.is_v6 {
            Skip::Ipv6Length
        } else {
            Skip::Ipv4Length
        };
        let Lengths {
            ip_end,
            bad_ihl,
            l4_len,
        } = self.lengths;
        if bad_ihl {
            return Some(Skip::Ipv4Length);
        }
        if ip_end == 0 {
            if !(tcp && gso()) {
                return Some(ip_length);
            }
        } else if ip_end > frame_len {
            return Some(Skip::Truncated);
        } else if self.l4_off + if tcp { 20 } else { 8 } > ip_end {
            return Some(ip_length);
        }
        let Some(l4_len) = l4_len else {
            return Some(Skip::Truncated);
        };
        let l4_len = usize::from(l4_len);
        // Where the L4 segment ends: the IP datagram's end, or the frame's if none is stated.
        let l4_end = if ip_end != 0 { ip_end } else { frame_len };
        if tcp {
            if l4_len < 20 || self.l4_off + l4_len > l4_end {
                return Some(Skip::TcpLength);
            }
        } else if l4_len < 8 || self.l4_off + l4_len != l4_end {
            return Some(Skip::UdpLength);
        }
        None
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

/// The `T` at `off`, if the whole `T` lies before `end`.
#[inline(always)]
fn read<T>(data: usize, end: usize, off: usize) -> Result<T, NoPorts> {
    // SAFETY: bounds checked by `at`.
    Ok(unsafe { at::<T>(data, end, off).ok_or(NoPorts)?.read_unaligned() })
}

#[inline(always)]
fn be16(data: usize, end: usize, off: usize) -> Option<u16> {
    // SAFETY: bounds checked by `at`.
    Some(u16::from_be(unsafe {
        at::<u16>(data, end, off)?.read_unaligned()
    }))
}

/// Finds and reads the headers: Ethernet (with up to two VLAN tags), IPv4 (with options) or
/// IPv6 (with extension headers), then the TCP or UDP header. Lengths are only read here;
/// `Packet::fault` checks them.
#[inline(always)]
pub fn parse(data: usize, end: usize) -> Result<Packet, NoPorts> {
    let mut off = ETH_HLEN;
    let mut ethertype = be16(data, end, 12).ok_or(NoPorts)?;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = be16(data, end, off + 2).ok_or(NoPorts)?;
        off += 4;
    }
    let (is_v6, proto, l4_off, ip_end, bad_ihl) = match ethertype {
        ETH_P_IP => {
            let h: [u8; 20] = read(data, end, off)?;
            if h[0] >> 4 != 4 {
                return Err(NoPorts);
            }
            // Fragment offset != 0: a later fragment, without ports.
            if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                return Err(NoPorts);
            }
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let ihl = usize::from(h[0] & 0x0f) * 4;
            // Such an IHL cannot say where L4 starts: the ports are read after the fixed
            // header then, only to tell whose packet it was.
            let bad_ihl = ihl < 20 || (total != 0 && ihl > total);
            let ihl = if bad_ihl { 20 } else { ihl };
            let ip_end = if total == 0 { 0 } else { off + total };
            (false, h[9], off + ihl, ip_end, bad_ihl)
        }
        ETH_P_IPV6 => {
            let h: [u8; 40] = read(data, end, off)?;
            if h[0] >> 4 != 6 {
                return Err(NoPorts);
            }
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let mut next = h[6];
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
                let h: [u8; 8] = read(data, end, l4)?;
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
            let ip_end = if payload == 0 { 0 } else { off + 40 + payload };
            (true, next, l4, ip_end, false)
        }
        _ => return Err(NoPorts),
    };
    if l4_off > MAX_L4_OFFSET {
        return Err(NoPorts);
    }
    // The fixed L4 header in one bounds check; if the frame ends inside it, the ports alone
    // (the packet can still be told to be a service's or not).
    let (sport, dport, tcp_flags, seq, l4_len) = match proto {
        PROTO_TCP => match at::<[u8; 20]>(data, end, l4_off) {
            Some(h) => {
                // SAFETY: bounds checked by `at`.
                let h = unsafe { h.read_unaligned() };
                (
                    u16::from_be_bytes([h[0], h[1]]),
                    u16::from_be_bytes([h[2], h[3]]),
                    h[13],
                    u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    Some(u16::from(h[12] >> 4) * 4),
                )
            }
            None => {
                let p: [u8; 4] = read(data, end, l4_off)?;
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                    0,
                    0,
                    None,
                )
            }
        },
        PROTO_UDP => match at::<[u8; 8]>(data, end, l4_off) {
            Some(h) => {
                // SAFETY: bounds checked by `at`.
                let h = unsafe { h.read_unaligned() };
                (
                    u16::from_be_bytes([h[0], h[1]]),
                    u16::from_be_bytes([h[2], h[3]]),
                    0,
                    0,
                    Some(u16::from_be_bytes([h[4], h[5]])),
                )
            }
            None => {
                let p: [u8; 4] = read(data, end, l4_off)?;
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                    0,
                    0,
                    None,
                )
            }
        },
        _ => return Err(NoPorts),
    };
    Ok(Packet {
        proto,
        is_v6,
        l3_off: off,
        sport,
        dport,
        l4_off,
        tcp_flags,
        seq,
        lengths: Lengths {
            ip_end,
            bad_ihl,
            l4_len,
        },
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
