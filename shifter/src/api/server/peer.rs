//! Who may do what: SO_PEERCRED and the configured socket group.

use hyper::StatusCode;
use tracing::warn;

use super::{ApiError, Peer};
use crate::config::SocketGroup;

/// Changes need uid 0 or membership in the configured group. Returns the uid.
pub(super) fn authorize(
    group: Option<&SocketGroup>,
    peer: Peer,
    what: &str,
) -> Result<u32, ApiError> {
    let Peer::Unix {
        uid,
        gid,
        pid,
        in_group,
    } = peer
    else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "changes are not allowed on the metrics listener",
        ));
    };
    if uid == 0 {
        return Ok(uid);
    }
    if in_group {
        return Ok(uid);
    }
    warn!("refused: uid {uid} gid {gid} (pid {pid:?}) may not {what}");
    let who = match group {
        Some(g) => format!("root or members of group {:?} (gid {})", g.name, g.gid),
        None => "root (no daemon.socket_group is configured)".to_owned(),
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!("uid {uid} may not {what}: only {who} may change anything"),
    ))
}

/// The peer's supplementary groups at connect time (SO_PEERGROUPS); empty when unknown.
pub(super) fn peer_groups(fd: std::os::fd::RawFd) -> Vec<u32> {
    let mut groups = vec![0u32; 256];
    let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
    // SAFETY: the buffer and its length are valid; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / std::mem::size_of::<u32>());
    groups
}

/// Whether the user `uid` has `gid` among its groups (primary or supplementary).
pub fn user_in_group(uid: u32, gid: u32) -> bool {
    use nix::unistd::{Gid, Uid, User, getgrouplist};
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    if user.gid.as_raw() == gid {
        return true;
    }
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&Gid::from_raw(gid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_its_group() {
        assert!(user_in_group(0, 0));
    }
}
