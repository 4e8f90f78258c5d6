//! A small packet builder for BPF_PROG_TEST_RUN tests, and an independent checksum verifier.
//!
//! The builder writes Ethernet (with 802.1Q / 802.1ad tags), IPv4 (with options) or IPv6
//! (with extension headers), then TCP or UDP, with correct checksums. The verifier
//! recomputes the IPv4 header checksum and the TCP/UDP checksum over the pseudo-header from
//! scratch (RFC 791, RFC 793, RFC 768, RFC 8200 section 8.1, RFC 1071). It shares no code
//! with the builder's checksum routine nor with the kernel program's incremental update, so a
//! wrong incremental update cannot go unnoticed.
//!
//! Over 700 lines: one builder for every header the programs parse (Ethernet, VLAN, IPv4 with
//! options, IPv6 with extension headers, TCP, UDP) and the checksum check, kept together so each
//! test frame reads as one call chain.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

const DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// Network layer of a test packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ip {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        /// Option bytes; padded with End-of-Options to a multiple of 4 (at most 40).
        options: Vec<u8>,
        /// Fragment offset in 8-byte units (13 bits).
        frag_offset: u16,
        more_fragments: bool,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        ext: Vec<Ext>,
    },
}

/// An IPv6 extension header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options, `(len + 1) * 8` bytes long, filled with PadN.
    HopByHop { len: u8 },
    /// Destination options, `(len + 1) * 8` bytes long, filled with PadN.
    DestOpts { len: u8 },
    /// Routing header (type 253, experimental) with segments left 0, `(len + 1) * 8` bytes.
    Routing { len: u8 },
    /// Fragment header; offset in 8-byte units.
    Fragment { offset: u16, more: bool, id: u32 },
    /// Authentication header, `(len + 2) * 4` bytes.
    Auth { len: u8 },
}

impl Ext {
    fn number(&self) -> u8 {
        match self {
            Self::HopByHop { .. } => 0,
            Self::Routing { .. } => 43,
            Self::Fragment { .. } => 44,
            Self::Auth { .. } => 51,
            Self::DestOpts { .. } => 60,
        }
    }

    fn write(&self, next: u8, out: &mut Vec<u8>) {
        match *self {
            Self::HopByHop { len } | Self::DestOpts { len } => {
                let total = (usize::from(len) + 1) * 8;
                out.extend_from_slice(&[next, len]);
                // One PadN option covering the remaining total - 2 bytes.
                out.extend_from_slice(&[1, (total - 4) as u8]);
                out.extend(std::iter::repeat_n(0, total - 4));
            }
            Self::Routing { len } => {
                let total = (usize::from(len) + 1) * 8;
                out.extend_from_slice(&[next, len, 253, 0]);
                out.extend(std::iter::repeat_n(0, total - 4));
            }
            Self::Fragment { offset, more, id } => {
                let field = (offset << 3) | u16::from(more);
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&field.to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            }
            Self::Auth { len } => {
                let total = (usize::from(len) + 2) * 4;
                out.extend_from_slice(&[next, len, 0, 0]);
                out.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // SPI
                out.extend(std::iter::repeat_n(0, total - 8));
            }
        }
    }
}

/// Transport layer of a test packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        /// Option bytes (padded with End-of-Options to a multiple of 4).
        options: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        /// Send checksum 0 ("none", IPv4 only).
        no_checksum: bool,
    },
}

/// A whole test frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// VLAN tags, outermost first: (TPID, TCI).
    pub vlans: Vec<(u16, u16)>,
    /// Overrides the innermost ethertype (for unknown-protocol tests).
    pub ethertype: Option<u16>,
    pub ip: Ip,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn tcp(ip: Ip, sport: u16, dport: u16, seq: u32, flags: u8) -> Self {
        Self {
            vlans: Vec::new(),
            ethertype: None,
            ip,
            l4: L4::Tcp {
                sport,
                dport,
                seq,
                ack: if flags & TCP_ACK != 0 { 0x0102_0304 } else { 0 },
                flags,
                options: Vec::new(),
            },
            payload: Vec::new(),
        }
    }

    pub fn udp(ip: Ip, sport: u16, dport: u16) -> Self {
        Self {
            vlans: Vec::new(),
            ethertype: None,
            ip,
            l4: L4::Udp {
                sport,
                dport,
                no_checksum: false,
            },
            payload: b"shifter test datagram".to_vec(),
        }
    }

    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn with_vlans(mut self, vlans: &[(u16, u16)]) -> Self {
        self.vlans = vlans.to_vec();
        self
    }

    pub fn sport(&self) -> u16 {
        match self.l4 {
            L4::Tcp { sport, .. } | L4::Udp { sport, .. } => sport,
        }
    }

    pub fn dport(&self) -> u16 {
        match self.l4 {
            L4::Tcp { dport, .. } | L4::Udp { dport, .. } => dport,
        }
    }

    /// The same frame with another destination port.
    pub fn with_dport(mut self, port: u16) -> Self {
        match &mut self.l4 {
            L4::Tcp { dport, .. } | L4::Udp { dport, .. } => *dport = port,
        }
        self
    }

    /// The same frame with another source port.
    pub fn with_sport(mut self, port: u16) -> Self {
        match &mut self.l4 {
            L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = port,
        }
        self
    }

    /// The same TCP frame with other flags and sequence number.
    pub fn with_tcp(mut self, new_flags: u8, new_seq: u32) -> Self {
        match &mut self.l4 {
            L4::Tcp {
                flags, seq, ack, ..
            } => {
                *flags = new_flags;
                *seq = new_seq;
                *ack = if new_flags & TCP_ACK != 0 {
                    0x0102_0304
                } else {
                    0
                };
            }
            L4::Udp { .. } => panic!("with_tcp on a UDP frame"),
        }
        self
    }

    /// The reply: addresses and ports swapped (VLANs, options and extension headers kept).
    pub fn reply(&self, flags: u8) -> Self {
        let ip = match &self.ip {
            Ip::V4 {
                src,
                dst,
                options,
                frag_offset,
                more_fragments,
            } => Ip::V4 {
                src: *dst,
                dst: *src,
                options: options.clone(),
                frag_offset: *frag_offset,
                more_fragments: *more_fragments,
            },
            Ip::V6 { src, dst, ext } => Ip::V6 {
                src: *dst,
                dst: *src,
                ext: ext.clone(),
            },
        };
        let l4 = match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                options,
                ..
            } => L4::Tcp {
                sport: *dport,
                dport: *sport,
                seq: 0x7700_0000,
                ack: 0x0102_0304,
                flags,
                options: options.clone(),
            },
            L4::Udp {
                sport,
                dport,
                no_checksum,
            } => L4::Udp {
                sport: *dport,
                dport: *sport,
                no_checksum: *no_checksum,
            },
        };
        Self {
            vlans: self.vlans.clone(),
            ethertype: self.ethertype,
            ip,
            l4,
            payload: self.payload.clone(),
        }
    }

    /// The frame's bytes, with correct lengths and checksums.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.payload.len());
        out.extend_from_slice(&DST_MAC);
        out.extend_from_slice(&SRC_MAC);
        let inner = self.ethertype.unwrap_or(match self.ip {
            Ip::V4 { .. } => ETH_P_IP,
            Ip::V6 { .. } => ETH_P_IPV6,
        });
        for (tpid, tci) in &self.vlans {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
        }
        out.extend_from_slice(&inner.to_be_bytes());

        let (proto, mut l4) = match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                options,
            } => {
                let opts = padded_options(options, "TCP");
                let mut h = Vec::new();
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&dport.to_be_bytes());
                h.extend_from_slice(&seq.to_be_bytes());
                h.extend_from_slice(&ack.to_be_bytes());
                h.push((((20 + opts.len()) / 4) as u8) << 4);
                h.push(*flags);
                h.extend_from_slice(&64240u16.to_be_bytes()); // window
                h.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                h.extend_from_slice(&opts);
                h.extend_from_slice(&self.payload);
                (6u8, h)
            }
            L4::Udp { sport, dport, .. } => {
                let mut h = Vec::new();
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&dport.to_be_bytes());
                h.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&self.payload);
                (17u8, h)
            }
        };
        let csum_at = if proto == 6 { 16 } else { 6 };

        match &self.ip {
            Ip::V4 {
                src,
                dst,
                options,
                frag_offset,
                more_fragments,
            } => {
                let opts = padded_options(options, "IPv4");
                let ihl = 20 + opts.len();
                let total = ihl + l4.len();
                let frag = (frag_offset & 0x1fff) | if *more_fragments { 0x2000 } else { 0 };
                let mut h = Vec::with_capacity(ihl);
                h.push(0x40 | (ihl / 4) as u8);
                h.push(0);
                h.extend_from_slice(&(total as u16).to_be_bytes());
                h.extend_from_slice(&0x5a5au16.to_be_bytes()); // identification
                h.extend_from_slice(&frag.to_be_bytes());
                h.push(64);
                h.push(proto);
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&src.octets());
                h.extend_from_slice(&dst.octets());
                h.extend_from_slice(&opts);
                let c = builder_csum(&[&h]);
                h[10..12].copy_from_slice(&c.to_be_bytes());

                let no_csum = matches!(
                    self.l4,
                    L4::Udp {
                        no_checksum: true,
                        ..
                    }
                );
                if !no_csum {
                    let mut pseudo = Vec::new();
                    pseudo.extend_from_slice(&src.octets());
                    pseudo.extend_from_slice(&dst.octets());
                    pseudo.extend_from_slice(&[0, proto]);
                    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                    let mut c = builder_csum(&[&pseudo, &l4]);
                    if proto == 17 && c == 0 {
                        c = 0xffff;
                    }
                    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
                }
                out.extend_from_slice(&h);
            }
            Ip::V6 { src, dst, ext } => {
                let mut exts = Vec::new();
                for (i, e) in ext.iter().enumerate() {
                    let next = ext.get(i + 1).map_or(proto, Ext::number);
                    e.write(next, &mut exts);
                }
                let first = ext.first().map_or(proto, Ext::number);
                let mut h = Vec::with_capacity(40);
                h.extend_from_slice(&[0x60, 0, 0, 0]);
                h.extend_from_slice(&((exts.len() + l4.len()) as u16).to_be_bytes());
                h.push(first);
                h.push(64);
                h.extend_from_slice(&src.octets());
                h.extend_from_slice(&dst.octets());

                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&src.octets());
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, proto]);
                let mut c = builder_csum(&[&pseudo, &l4]);
                if proto == 17 && c == 0 {
                    c = 0xffff;
                }
                l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&h);
                out.extend_from_slice(&exts);
            }
        }
        out.extend_from_slice(&l4);
        out
    }
}

/// A length field of a header the builder writes, for malformed-packet tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthField {
    /// IPv4 IHL, in 32-bit words (4 bits).
    Ipv4Ihl,
    /// IPv4 total length, in bytes.
    Ipv4TotalLength,
    /// IPv6 payload length, in bytes.
    Ipv6PayloadLength,
    /// TCP data offset, in 32-bit words (4 bits).
    TcpDataOffset,
    /// UDP length, in bytes.
    UdpLength,
}

impl Frame {
    /// Offsets of the IP header and of the TCP/UDP header in `build()`'s output.
    pub fn offsets(&self) -> (usize, usize) {
        let l3 = 14 + 4 * self.vlans.len();
        let l4 = match &self.ip {
            Ip::V4 { options, .. } => l3 + 20 + padded_options(options, "IPv4").len(),
            Ip::V6 { ext, .. } => {
                let mut exts = Vec::new();
                for e in ext {
                    e.write(0, &mut exts);
                }
                l3 + 40 + exts.len()
            }
        };
        (l3, l4)
    }

    /// The value `field` has in `build()`'s output (in the field's own unit).
    pub fn length_field(&self, field: LengthField) -> u16 {
        let bytes = self.build();
        let (l3, l4) = self.offsets();
        let be = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        match field {
            LengthField::Ipv4Ihl => u16::from(bytes[l3] & 0x0f),
            LengthField::Ipv4TotalLength => be(l3 + 2),
            LengthField::Ipv6PayloadLength => be(l3 + 4),
            LengthField::TcpDataOffset => u16::from(bytes[l4 + 12] >> 4),
            LengthField::UdpLength => be(l4 + 4),
        }
    }

    /// `build()`'s output with `field` set to `value` (in the field's own unit) and nothing
    /// else changed, but the IPv4 header checksum, recomputed over the header as built, so
    /// that the length is the one thing wrong. Panics when the frame has no such field.
    pub fn build_with_length(&self, field: LengthField, value: u16) -> Vec<u8> {
        let mut bytes = self.build();
        let (l3, l4) = self.offsets();
        let v4 = matches!(self.ip, Ip::V4 { .. });
        let tcp = matches!(self.l4, L4::Tcp { .. });
        match field {
            LengthField::Ipv4Ihl => {
                assert!(v4 && value <= 0xf, "IHL {value} of {self:?}");
                bytes[l3] = 0x40 | value as u8;
            }
            LengthField::Ipv4TotalLength => {
                assert!(v4, "no IPv4 header in {self:?}");
                bytes[l3 + 2..l3 + 4].copy_from_slice(&value.to_be_bytes());
            }
            LengthField::Ipv6PayloadLength => {
                assert!(!v4, "no IPv6 header in {self:?}");
                bytes[l3 + 4..l3 + 6].copy_from_slice(&value.to_be_bytes());
            }
            LengthField::TcpDataOffset => {
                assert!(tcp && value <= 0xf, "data offset {value} of {self:?}");
                bytes[l4 + 12] = (bytes[l4 + 12] & 0x0f) | (value as u8) << 4;
            }
            LengthField::UdpLength => {
                assert!(!tcp, "no UDP header in {self:?}");
                bytes[l4 + 4..l4 + 6].copy_from_slice(&value.to_be_bytes());
            }
        }
        if v4 {
            bytes[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let c = builder_csum(&[&bytes[l3..l4]]);
            bytes[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        bytes
    }
}

/// The builder's checksum: one's complement of the one's complement sum of the parts
/// (concatenated; every part but the last has even length).
fn builder_csum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u32::from(*b));
            sum += hi | lo;
            if sum > 0xffff {
                sum = (sum & 0xffff) + 1;
            }
        }
    }
    !(sum as u16)
}

pub fn v4(src: [u8; 4], dst: [u8; 4]) -> Ip {
    Ip::V4 {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        options: Vec::new(),
        frag_offset: 0,
        more_fragments: false,
    }
}

pub fn v6(src: Ipv6Addr, dst: Ipv6Addr) -> Ip {
    Ip::V6 {
        src,
        dst,
        ext: Vec::new(),
    }
}

/// What the verifier found in a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// The frame carries an IPv4 UDP datagram without checksum (field 0).
    pub udp_no_checksum: bool,
}

/// Independent verification of a frame's checksums: the IPv4 header checksum and the
/// TCP/UDP checksum over the pseudo-header, recomputed completely.
///
/// Returns `Err` with a reason when a checksum is wrong or the frame cannot be walked.
pub fn verify(frame: &[u8]) -> Result<Verified, String> {
    let get = |off: usize, n: usize| -> Result<&[u8], String> {
        frame
            .get(off..off + n)
            .ok_or_else(|| format!("frame of {} bytes ends before {}+{n}", frame.len(), off))
    };
    let word = |off: usize| -> Result<u16, String> {
        let b = get(off, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    };
    let mut off = 12;
    let mut ethertype = word(off)?;
    off += 2;
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = word(off + 2)?;
        off += 4;
    }
    // (pseudo-header sum, proto, l4 offset, l4 length)
    let (pseudo, proto, l4_off, l4_len) = match ethertype {
        ETH_P_IP => {
            let vihl = get(off, 1)?[0];
            if vihl >> 4 != 4 {
                return Err(format!("IPv4 version nibble is {}", vihl >> 4));
            }
            let ihl = usize::from(vihl & 0xf) * 4;
            let header = get(off, ihl)?;
            if ones_sum(header) != 0xffff {
                return Err(format!(
                    "IPv4 header checksum wrong: sum {:#06x}",
                    ones_sum(header)
                ));
            }
            let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
            if u16::from_be_bytes([header[6], header[7]]) & 0x1fff != 0 {
                return Err("later IPv4 fragment: no L4 header to verify".into());
            }
            if total < ihl || off + total > frame.len() {
                return Err(format!("IPv4 total length {total} does not fit the frame"));
            }
            let mut p = Vec::new();
            p.extend_from_slice(&header[12..20]);
            p.push(0);
            p.push(header[9]);
            p.extend_from_slice(&((total - ihl) as u16).to_be_bytes());
            (ones_sum(&p), header[9], off + ihl, total - ihl)
        }
        ETH_P_IPV6 => {
            let header = get(off, 40)?;
            if header[0] >> 4 != 6 {
                return Err(format!("IPv6 version nibble is {}", header[0] >> 4));
            }
            let payload = usize::from(u16::from_be_bytes([header[4], header[5]]));
            if off + 40 + payload > frame.len() {
                return Err(format!(
                    "IPv6 payload length {payload} does not fit the frame"
                ));
            }
            let mut next = header[6];
            let mut at = off + 40;
            loop {
                let ext = get(at, 2)?;
                let len = match next {
                    0 | 43 | 60 => (usize::from(ext[1]) + 1) * 8,
                    44 => {
                        if word(at + 2)? & 0xfff8 != 0 {
                            return Err("later IPv6 fragment: no L4 header to verify".into());
                        }
                        8
                    }
                    51 => (usize::from(ext[1]) + 2) * 4,
                    _ => break,
                };
                next = ext[0];
                at += len;
            }
            let l4_len = (off + 40 + payload)
                .checked_sub(at)
                .ok_or("IPv6 extension headers exceed the payload length")?;
            let mut p = Vec::new();
            p.extend_from_slice(&header[8..40]);
            p.extend_from_slice(&(l4_len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, next]);
            (ones_sum(&p), next, at, l4_len)
        }
        other => return Err(format!("ethertype {other:#06x} is not IP")),
    };
    let l4 = get(l4_off, l4_len)?;
    let min = if proto == 6 { 20 } else { 8 };
    if l4.len() < min || !(proto == 6 || proto == 17) {
        return Err(format!("L4 protocol {proto} with {} bytes", l4.len()));
    }
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let v4 = ethertype == ETH_P_IP;
    if proto == 17 && v4 && l4[6] == 0 && l4[7] == 0 {
        return Ok(Verified {
            proto,
            sport,
            dport,
            udp_no_checksum: true,
        });
    }
    if proto == 17 && usize::from(u16::from_be_bytes([l4[4], l4[5]])) != l4_len {
        return Err("UDP length field disagrees with the IP length".into());
    }
    let total = ones_add(pseudo, ones_sum(l4));
    if total != 0xffff {
        return Err(format!(
            "L4 checksum wrong: sum over pseudo-header and segment is {total:#06x}"
        ));
    }
    Ok(Verified {
        proto,
        sport,
        dport,
        udp_no_checksum: false,
    })
}

/// RFC 1071 one's complement sum of big-endian 16-bit words (odd length padded with zero),
/// accumulated in 64 bits and folded at the end.
fn ones_sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn ones_add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Header options padded with zeros to whole 32-bit words; at most 40 bytes (TCP and IPv4).
fn padded_options(options: &[u8], header: &str) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    assert!(opts.len() <= 40, "too many {header} option bytes");
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_sum() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(
            ones_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // A classic example header (checksum 0xb861).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ones_sum(&h), 0xffff);
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(builder_csum(&[&z]), 0xb861);
    }

    #[test]
    fn length_fields_are_found_and_edited_in_place() {
        let a = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
        let mut v4 = Frame::tcp(v4([198, 18, 0, 1], [198, 18, 0, 2]), 1, 2, 3, TCP_SYN)
            .with_vlans(&[(ETH_P_8021Q, 5)]);
        if let Ip::V4 { options, .. } = &mut v4.ip {
            *options = vec![1, 1, 1, 1];
        }
        assert_eq!(v4.offsets(), (18, 18 + 24));
        assert_eq!(v4.length_field(LengthField::Ipv4Ihl), 6);
        assert_eq!(v4.length_field(LengthField::Ipv4TotalLength), 44);
        assert_eq!(v4.length_field(LengthField::TcpDataOffset), 5);
        let edited = v4.build_with_length(LengthField::Ipv4TotalLength, 45);
        let built = v4.build();
        let differ: Vec<usize> = (0..built.len())
            .filter(|&i| built[i] != edited[i])
            .collect();
        assert_eq!(
            differ.len(),
            2,
            "total length byte and checksum: {differ:?}"
        );
        assert!(differ.contains(&(18 + 3)));
        assert_eq!(
            ones_sum(&edited[18..18 + 24]),
            0xffff,
            "IPv4 checksum refreshed"
        );
        let v6 = Frame::udp(
            Ip::V6 {
                src: a,
                dst: a,
                ext: vec![Ext::HopByHop { len: 1 }],
            },
            1,
            2,
        );
        assert_eq!(v6.offsets(), (14, 14 + 40 + 16));
        assert_eq!(v6.length_field(LengthField::UdpLength), 8 + 21);
        assert_eq!(v6.length_field(LengthField::Ipv6PayloadLength), 16 + 8 + 21);
        let edited = v6.build_with_length(LengthField::UdpLength, 7);
        assert_eq!(&edited[14 + 40 + 16 + 4..14 + 40 + 16 + 6], &[0, 7]);
    }

    #[test]
    fn builder_output_verifies_and_corruption_is_caught() {
        let a = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
        let b = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
        let frames = [
            Frame::tcp(v4([198, 18, 0, 1], [198, 18, 0, 2]), 1, 2, 3, TCP_SYN),
            Frame::udp(v4([198, 18, 0, 1], [198, 18, 0, 2]), 1, 2).with_payload(b"odd"),
            Frame::tcp(v6(a, b), 1, 2, 3, TCP_SYN).with_payload(b"x"),
            Frame::udp(
                Ip::V6 {
                    src: a,
                    dst: b,
                    ext: vec![Ext::HopByHop { len: 0 }, Ext::Auth { len: 4 }],
                },
                1,
                2,
            ),
        ];
        for f in frames {
            let bytes = f.build();
            verify(&bytes).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            // Flipping any bit of the L3/L4 part must be caught, except in fields no
            // checksum covers (IPv6 traffic class/flow label/hop limit, extension headers,
            // IPv4 options are covered by the header checksum).
            let last = bytes.len() - 1;
            let mut broken = bytes.clone();
            broken[last] ^= 0x10;
            assert!(
                verify(&broken).is_err(),
                "{f:?}: corrupted payload verified"
            );
        }
    }
}
