//! The bpf(2) commands aya 0.14 does not expose: generic links, a program's tag by id, and
//! batched reads of a hash map.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_LINK_UPDATE: libc::c_long = 29;
/// The kernel's ENOTSUPP (not in libc): a map type without batch operations.
const ENOTSUPP: i32 = 524;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zeroed, large-enough `union bpf_attr` for both commands.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a pinned BPF object.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = [0u64; 8];
    attr[0] = c.as_ptr() as u64; // pathname
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Atomically replaces the program of a link.
pub(crate) fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = [0u64; 8];
    // struct { __u32 link_fd; __u32 new_prog_fd; __u32 flags; __u32 old_prog_fd; }
    attr[0] = u64::from(link.as_raw_fd() as u32) | (u64::from(prog.as_raw_fd() as u32) << 32);
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// The tag (hash of the instructions, map references zeroed) of the loaded program `id`:
/// equal tags mean the same build of the program.
pub(crate) fn prog_tag_by_id(id: u32) -> io::Result<[u8; 8]> {
    let mut attr = [0u64; 8];
    attr[0] = u64::from(id); // prog_id
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The head of struct bpf_prog_info: __u32 type, __u32 id, __u8 tag[8]. The kernel fills
    // only as much as info_len asks for.
    let mut info = [0u8; 16];
    let mut attr = [0u64; 8];
    // struct { __u32 bpf_fd; __u32 info_len; __aligned_u64 info; }
    attr[0] = u64::from(fd.as_raw_fd() as u32) | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&info[8..16]);
    Ok(tag)
}

/// Entries per `BPF_MAP_LOOKUP_BATCH` call: large enough that one hash bucket always fits.
const BATCH: usize = 4096;

/// Calls `f` with every entry of the hash map `fd` (keys `K`, values `V`, plain C structs of
/// the map's key and value sizes). Reads `BATCH` entries per syscall where the kernel has batch
/// lookups (5.6+), which for a 1 M-entry table is ~500 calls instead of 2 M; else one key at a
/// time. Entries added or removed meanwhile may or may not be seen, as with any map walk.
pub(crate) fn for_each_entry<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    mut f: impl FnMut(&K, &V),
) -> io::Result<()> {
    let mut keys = vec![K::default(); BATCH];
    let mut values = vec![V::default(); BATCH];
    let mut token: Option<u32> = None;
    loop {
        // Hash maps use a u32 bucket index as the batch position.
        let in_batch = token.unwrap_or(0);
        let mut out_batch = 0u32;
        let mut attr = [0u64; 8];
        // struct { in_batch, out_batch, keys, values: __aligned_u64; count, map_fd: __u32;
        //          elem_flags, flags: __aligned_u64 }
        attr[0] = token.map_or(0, |_| std::ptr::from_ref(&in_batch) as u64);
        attr[1] = std::ptr::from_mut(&mut out_batch) as u64;
        attr[2] = keys.as_mut_ptr() as u64;
        attr[3] = values.as_mut_ptr() as u64;
        attr[4] = BATCH as u64 | (u64::from(fd.as_raw_fd() as u32) << 32);
        let res = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        // The kernel writes back how many entries it copied, also with ENOENT (the end).
        let n = (attr[4] & 0xffff_ffff) as usize;
        let done = match res {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e)
                if token.is_none() && matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP)) =>
            {
                return for_each_entry_one_by_one(fd, f);
            }
            Err(e) => return Err(e),
        };
        for (k, v) in keys.iter().zip(&values).take(n.min(BATCH)) {
            f(k, v);
        }
        if done {
            return Ok(());
        }
        token = Some(out_batch);
    }
}

/// The walk for kernels without batch lookups: next key, then its value.
fn for_each_entry_one_by_one<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    mut f: impl FnMut(&K, &V),
) -> io::Result<()> {
    let map_fd = u64::from(fd.as_raw_fd() as u32);
    let mut key: Option<K> = None;
    loop {
        let mut next = K::default();
        let mut attr = [0u64; 8];
        // struct { __u32 map_fd; __aligned_u64 key; __aligned_u64 next_key; }
        attr[0] = map_fd;
        attr[1] = key.as_ref().map_or(0, |k| std::ptr::from_ref(k) as u64);
        attr[2] = std::ptr::from_mut(&mut next) as u64;
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut value = V::default();
        let mut attr = [0u64; 8];
        // struct { __u32 map_fd; __aligned_u64 key; __aligned_u64 value; __u64 flags; }
        attr[0] = map_fd;
        attr[1] = std::ptr::from_ref(&next) as u64;
        attr[2] = std::ptr::from_mut(&mut value) as u64;
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(_) => f(&next, &value),
            // Removed between the two calls: go on from it all the same.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        key = Some(next);
    }
}
