//! The bpf(2) commands aya 0.14 does not expose: generic links, and a program's tag by id.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;

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
