//! Ethernet + IPv4 + TCP/UDP frames with valid checksums, for BPF_PROG_TEST_RUN.

use std::net::Ipv4Addr;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

const ETH: usize = 14;
const IP: usize = 20;

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum_words(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// A TCP segment or UDP datagram from `src:sport` to `dst:dport`.
#[derive(Clone, Copy, Debug)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

/// TCP frame with `flags`, sequence number `seq` and a 1-byte payload unless SYN.
pub fn tcp(t: Tuple, flags: u8, seq: u32) -> Vec<u8> {
    let payload: &[u8] = if flags & TCP_SYN != 0 { &[] } else { b"x" };
    let mut l4 = vec![0u8; 20];
    l4[0..2].copy_from_slice(&t.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&t.dport.to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    if flags & TCP_ACK != 0 {
        l4[8..12].copy_from_slice(&1u32.to_be_bytes());
    }
    l4[12] = 0x50;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
    l4.extend_from_slice(payload);
    frame(t, 6, l4, 16)
}

/// A 14-byte Ethernet header with an ethertype nobody parses: every program gives up at its
/// very first check.
pub fn unknown_ethertype() -> Vec<u8> {
    let mut p = vec![0u8; ETH];
    p[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // IEEE local experimental
    p
}

fn frame(t: Tuple, proto: u8, mut l4: Vec<u8>, csum_off: usize) -> Vec<u8> {
    let l4_len = l4.len() as u16;
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&t.src.octets());
    pseudo.extend_from_slice(&t.dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&l4_len.to_be_bytes());
    let c = fold(sum_words(&pseudo) + sum_words(&l4));
    l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());

    let mut p = vec![0u8; ETH + IP];
    p[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    p[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut p[ETH..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(IP as u16 + l4_len).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&t.src.octets());
    ip[16..20].copy_from_slice(&t.dst.octets());
    let c = fold(sum_words(&ip[..IP]));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&l4);
    p
}

/// Destination port of a frame built here.
pub fn dport(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[ETH + IP + 2], p[ETH + IP + 3]])
}

/// Source port of a frame built here.
pub fn sport(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[ETH + IP], p[ETH + IP + 1]])
}
