//! Just enough ELF64 (little-endian) reading for the VM image: a named section (a module's
//! `.modinfo`) and whether an executable asks for a dynamic loader.

fn u16_at(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(off..off + 4)?.try_into().ok()?))
}

fn usize_at(d: &[u8], off: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(d.get(off..off + 8)?.try_into().ok()?)).ok()
}

/// A 64-bit little-endian ELF file?
fn is_elf64le(d: &[u8]) -> bool {
    d.len() >= 64 && d[..4] == *b"\x7fELF" && d[4] == 2 && d[5] == 1
}

/// The contents of the section called `name`.
pub fn section<'a>(d: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if !is_elf64le(d) {
        return None;
    }
    let shoff = usize_at(d, 0x28)?;
    let shentsize = usize::from(u16_at(d, 0x3a)?);
    let shnum = usize::from(u16_at(d, 0x3c)?);
    let shstrndx = usize::from(u16_at(d, 0x3e)?);
    let header = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = usize::try_from(u32_at(d, h)?).ok()?;
        Some((name, usize_at(d, h + 0x18)?, usize_at(d, h + 0x20)?))
    };
    let (_, stroff, strsize) = header(shstrndx)?;
    let strtab = d.get(stroff..stroff.checked_add(strsize)?)?;
    (0..shnum).find_map(|i| {
        let (n, off, size) = header(i)?;
        let s = strtab.get(n..)?;
        let end = s.iter().position(|&b| b == 0)?;
        (&s[..end] == name.as_bytes())
            .then(|| d.get(off..off.checked_add(size)?))
            .flatten()
    })
}

/// Whether the executable has a `PT_INTERP` program header (needs the dynamic loader).
/// `None` when it is not a 64-bit little-endian ELF file.
pub fn is_dynamic(d: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if !is_elf64le(d) {
        return None;
    }
    let phoff = usize_at(d, 0x20)?;
    let phentsize = usize::from(u16_at(d, 0x36)?);
    let phnum = usize::from(u16_at(d, 0x38)?);
    Some((0..phnum).any(|i| {
        i.checked_mul(phentsize)
            .and_then(|o| phoff.checked_add(o))
            .and_then(|h| u32_at(d, h))
            == Some(PT_INTERP)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_and_interp_of_real_binaries() {
        // Our own test binary is a dynamic ELF executable with a .text section.
        let me = std::fs::read(std::env::current_exe().expect("current exe")).expect("read");
        assert!(section(&me, ".text").is_some_and(|s| !s.is_empty()));
        assert!(section(&me, ".no-such-section").is_none());
        assert_eq!(is_dynamic(&me), Some(true));
        assert_eq!(is_dynamic(b"#!/bin/sh\n"), None);
        assert_eq!(section(b"not an elf file at all", ".text"), None);
    }
}
