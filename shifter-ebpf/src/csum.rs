//! RFC 1624 incremental checksum update, for the XDP path (TC uses the kernel helper, which
//! also knows about CHECKSUM_PARTIAL skbs).

/// New checksum after a 16-bit field changed from `old` to `new` (all host order).
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    // HC' = ~(~HC + ~m + m')
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
