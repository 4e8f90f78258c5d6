//! Finding the TCP listeners of this network namespace (`/proc/net/tcp`, `tcp6`) and taking
//! a duplicate of each from a process that holds it (`pidfd_getfd`), for socket dispatch to
//! remember the listeners that were there before its programs.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::OwnedFd,
};

/// One listening socket as the kernel lists it. A wildcard address is given as loopback,
/// which it also listens on. Members of a reuseport group share address and port and differ
/// in `inode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Listener {
    pub addr: IpAddr,
    pub port: u16,
    /// The socket's inode number: `socket:[inode]` in `/proc/PID/fd`.
    pub inode: u64,
}

/// The TCP listeners on `ports` in the calling thread's network namespace.
pub(crate) fn tcp_listeners(ports: &[u16]) -> Vec<Listener> {
    let mut out = Vec::new();
    for (file, v6) in [
        ("/proc/thread-self/net/tcp", false),
        ("/proc/thread-self/net/tcp6", true),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        out.extend(
            parse_proc_net_tcp_listeners(&text, v6)
                .into_iter()
                .filter(|l| ports.contains(&l.port)),
        );
    }
    out
}

/// The LISTEN entries (`st` 0A) of a /proc/net/tcp or tcp6 table.
fn parse_proc_net_tcp_listeners(text: &str, v6: bool) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        let (Some(local), Some(&"0A"), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
            continue;
        };
        let Some((addr_hex, port_hex)) = local.split_once(':') else {
            continue;
        };
        let (Ok(port), Some(addr), Ok(inode)) = (
            u16::from_str_radix(port_hex, 16),
            parse_proc_addr(addr_hex, v6),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        out.push(Listener { addr, port, inode });
    }
    out
}

/// An address as /proc/net/tcp prints it: 32-bit words in host (little-endian) order; the
/// wildcard address as loopback.
fn parse_proc_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    if !v6 {
        let [w] = words[..] else { return None };
        let addr = Ipv4Addr::from(w.to_le_bytes());
        return Some(if addr.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(addr)
        });
    }
    let [a, b, c, d] = words[..] else { return None };
    let mut bytes = [0u8; 16];
    for (i, w) in [a, b, c, d].into_iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    let addr = Ipv6Addr::from(bytes);
    Some(if addr.is_unspecified() {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V6(addr)
    })
}

/// What [`duplicate_sockets`] got: a duplicate per socket it could take, and for the rest
/// the first refusal (`None` when no process holds them, or none could be looked at).
pub(crate) struct Duplicates {
    pub taken: BTreeMap<u64, OwnedFd>,
    pub refused: Option<io::Error>,
}

/// Takes a duplicate of each socket in `inodes` from a process that holds it: the process's
/// fd table (`/proc/PID/fd`) names the socket, `pidfd_getfd` copies the descriptor. Both
/// need ptrace access to the process: CAP_SYS_PTRACE for processes of other users (the
/// systemd unit grants it, and allows the syscall, which systemd files under `@debug`).
pub(crate) fn duplicate_sockets(inodes: &BTreeSet<u64>) -> Duplicates {
    let mut out = Duplicates {
        taken: BTreeMap::new(),
        refused: None,
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let pids = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok());
    for pid in pids {
        if out.taken.len() == inodes.len() {
            break;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue; // exited meanwhile, or not ours to look at
        };
        let mut pidfd: Option<OwnedFd> = None;
        for entry in fds.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Some(inode) = std::fs::read_link(entry.path())
                .ok()
                .and_then(|target| socket_inode(target.to_str()?))
            else {
                continue;
            };
            if !inodes.contains(&inode) || out.taken.contains_key(&inode) {
                continue;
            }
            let taken = match &pidfd {
                Some(p) => super::sys::pidfd_getfd(p, fd),
                None => super::sys::pidfd_open(pid).and_then(|p| {
                    let got = super::sys::pidfd_getfd(&p, fd);
                    pidfd = Some(p);
                    got
                }),
            };
            match taken {
                Ok(dup) => {
                    out.taken.insert(inode, dup);
                }
                Err(e) => {
                    out.refused.get_or_insert(e);
                }
            }
        }
    }
    out
}

/// The inode of a `/proc/PID/fd` link target `socket:[N]`.
fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    use super::*;

    #[test]
    fn listeners_from_proc_net_tcp() {
        // As 6.1 prints it: 0.0.0.0:8081 and 198.18.0.2:8082 listening, one established.
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  0: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11 1 0 100 0 0 10 0\n\
                  1: 020012C6:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12 1 0 100 0 0 10 0\n\
                  2: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 13 1 0 20 4 30 10 -1\n";
        let l = |addr: IpAddr, port, inode| Listener { addr, port, inode };
        assert_eq!(
            parse_proc_net_tcp_listeners(v4, false),
            [
                l(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081, 11),
                l(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 8082, 12)
            ]
        );
        // [::]:8081 and [2001:2::1]:8082.
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21 1 0\n\
                  1: 02000120000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22 1 0\n\
                  2: 02000120000000000000000001000000:1F93 00000000000000000000000000000000:0000 0A truncated\n";
        assert_eq!(
            parse_proc_net_tcp_listeners(v6, true),
            [
                l(IpAddr::V6(Ipv6Addr::LOCALHOST), 8081, 21),
                l(IpAddr::V6("2001:2::1".parse().unwrap()), 8082, 22)
            ]
        );
    }

    #[test]
    fn socket_link_targets() {
        assert_eq!(socket_inode("socket:[123]"), Some(123));
        assert_eq!(socket_inode("pipe:[123]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn a_socket_of_this_process_is_found_and_duplicated() {
        // Our own process: ptrace access to ourselves needs no privilege.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let target =
            std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).expect("fd link");
        let inode = socket_inode(target.to_str().unwrap()).expect("a socket");
        let got = duplicate_sockets(&BTreeSet::from([inode]));
        let dup = got.taken.get(&inode).unwrap_or_else(|| {
            panic!("not duplicated: {:?}", got.refused);
        });
        let dup_target =
            std::fs::read_link(format!("/proc/self/fd/{}", dup.as_raw_fd())).expect("dup link");
        assert_eq!(dup_target, target, "the same socket");
        let port = listener.local_addr().unwrap().port();
        let found = tcp_listeners(&[port]);
        assert_eq!(
            found,
            [Listener {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
                inode
            }]
        );
    }
}
