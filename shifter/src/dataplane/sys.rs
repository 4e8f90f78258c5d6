//! The bpf(2) commands aya 0.14 does not expose: generic links, the tag of a link's program,
//! batched reads of a hash map and test runs; a namespace's cookie; and the pidfd calls that
//! copy a descriptor out of another process.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
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

/// The tag (hash of the instructions, map references zeroed) of the program that the link
/// `link` runs: equal tags mean the same build of the program.
///
/// Read from the link's fdinfo (`prog_tag:`, there since links came in 5.7), which needs
/// nothing but the fd. The obvious route, `BPF_PROG_GET_FD_BY_ID` on the link's program id,
/// needs CAP_SYS_ADMIN, which the daemon's unit rightly does not grant: with it, every
/// restart under systemd failed to adopt the attached programs (EPERM).
pub(crate) fn link_prog_tag(link: BorrowedFd<'_>) -> io::Result<[u8; 8]> {
    let path = format!("/proc/self/fdinfo/{}", link.as_raw_fd());
    let fdinfo = std::fs::read_to_string(&path)?;
    parse_prog_tag(&fdinfo).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: no prog_tag line (is the fd a BPF link?)"),
        )
    })
}

/// The `prog_tag:` of a BPF link's fdinfo text, 16 hex digits.
fn parse_prog_tag(fdinfo: &str) -> Option<[u8; 8]> {
    let hex = fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("prog_tag:"))?
        .trim();
    if hex.len() != 16 {
        return None;
    }
    let mut tag = [0u8; 8];
    for (i, byte) in tag.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(tag)
}

/// Runs `prog` once on `frame` (`BPF_PROG_TEST_RUN`) and returns its return value. The
/// frame's skb belongs to the calling thread's network namespace.
pub(crate) fn prog_test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> io::Result<u32> {
    let mut attr = [0u64; 8];
    // struct { __u32 prog_fd, retval, data_size_in, data_size_out; __aligned_u64 data_in,
    //          data_out; __u32 repeat, duration; ... }
    attr[0] = u64::from(prog.as_raw_fd() as u32);
    attr[1] = frame.len() as u64;
    attr[2] = frame.as_ptr() as u64;
    attr[4] = 1; // repeat
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok((attr[0] >> 32) as u32)
}

/// A pidfd for process `pid` (`pidfd_open`, Linux 5.3+).
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; a returned descriptor is new and ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A duplicate, in this process, of descriptor `fd` of the process behind `pidfd`
/// (`pidfd_getfd`, Linux 5.6+; needs ptrace access to that process).
pub(crate) fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; a returned descriptor is new and ours (close-on-exec).
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`, Linux 5.14+),
/// what `bpf_get_netns_cookie` returns for its sockets.
pub(crate) fn netns_cookie() -> io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a new socket we own; getsockopt writes at most `len` bytes into `cookie`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let ret = libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &mut len,
        );
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cookie)
    }
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

#[cfg(test)]
mod tests {
    use super::parse_prog_tag;

    #[test]
    fn prog_tag_from_link_fdinfo() {
        // As 6.1 and 6.18 print it for a tcx or cgroup link.
        let fdinfo = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1057\n\
                      link_type:\ttcx\nlink_id:\t7\nprog_tag:\t0a1b2c3d4e5f6071\n\
                      prog_id:\t42\nifindex:\t2\nattach_type:\t46\n";
        assert_eq!(
            parse_prog_tag(fdinfo),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71])
        );
    }

    #[test]
    fn fdinfo_without_a_whole_tag_is_refused() {
        assert_eq!(parse_prog_tag("link_type:\ttcx\nprog_id:\t42\n"), None);
        assert_eq!(parse_prog_tag("prog_tag:\t0a1b2c\n"), None);
        assert_eq!(parse_prog_tag("prog_tag:\tzz1b2c3d4e5f6071\n"), None);
    }
}
