//! Who may do what: SO_PEERCRED, the configured socket group and `[[daemon.grant]]`.

use std::collections::BTreeSet;

use hyper::StatusCode;
use tracing::warn;

use super::{ApiError, Peer};
use crate::config::{Grant, GrantVerb, Grantee, MAX_GRANTS, ReadAccess, SocketGroup};

/// What a peer asks for: a verb a grant can allow (`None`: only root and the group, e.g.
/// reload) on a service (`None`: every service, e.g. detach).
#[derive(Clone, Copy, Debug)]
pub(super) struct Ask<'a> {
    pub verb: Option<GrantVerb>,
    pub service: Option<&'a str>,
    /// In words, for the refusal: "change a weight".
    pub what: &'a str,
}

/// The set of grants (bit i: `grants[i]`) whose grantee is the peer `uid`/`gid` with the
/// supplementary groups `groups` (SO_PEERGROUPS) or, for a group, a user in that group.
pub(super) fn matching_grants(grants: &[Grant], uid: u32, gid: u32, groups: &[u32]) -> u64 {
    let mut set = 0u64;
    for (i, g) in grants.iter().enumerate().take(MAX_GRANTS) {
        let hit = match g.grantee {
            Grantee::Uid(u) => u == uid,
            Grantee::Gid(want) => want == gid || groups.contains(&want) || user_in_group(uid, want),
        };
        if hit {
            set |= 1 << i;
        }
    }
    set
}

/// Changes need uid 0, membership in the configured group, or a grant of the peer that
/// allows the verb on the service. Returns the uid.
pub(super) fn authorize(
    group: Option<&SocketGroup>,
    grants: &[Grant],
    peer: Peer,
    ask: Ask<'_>,
) -> Result<u32, ApiError> {
    let what = ask.what;
    let Peer::Unix {
        uid,
        gid,
        pid,
        in_group,
        grants: mine,
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
    let granted = ask.verb.is_some_and(|verb| {
        grants
            .iter()
            .enumerate()
            .take(MAX_GRANTS)
            .any(|(i, g)| mine & (1 << i) != 0 && g.allows(verb, ask.service))
    });
    if granted {
        return Ok(uid);
    }
    warn!("refused: uid {uid} gid {gid} (pid {pid:?}) may not {what}");
    let who = match group {
        Some(g) => format!("root or members of group {:?} (gid {})", g.name, g.gid),
        None => "root (no daemon.socket_group is configured)".to_owned(),
    };
    let message = if grants.is_empty() {
        format!("uid {uid} may not {what}: only {who} may change anything")
    } else {
        let verb = ask
            .verb
            .map_or_else(|| "this".to_owned(), |v| v.name().to_owned());
        format!(
            "uid {uid} may not {what}: only {who}, or a [[daemon.grant]] of {verb} on {}, may",
            ask.service
                .map_or_else(|| "every service".to_owned(), |s| format!("{s:?}"))
        )
    };
    Err(ApiError::new(StatusCode::FORBIDDEN, message))
}

/// What a peer may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Readable {
    All,
    /// These services only (`daemon.read_access = "granted"`, a peer outside root and the
    /// socket group with `read` grants on named services; empty: none).
    Only(BTreeSet<String>),
}

impl Readable {
    pub fn allows(&self, service: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(service),
        }
    }
}

/// What `peer` may read under `access`.
pub(super) fn readable(access: ReadAccess, grants: &[Grant], peer: Peer) -> Readable {
    let Peer::Unix {
        uid,
        in_group,
        grants: mine,
        ..
    } = peer
    else {
        // The metrics listener: the operator chose to publish metrics on it.
        return Readable::All;
    };
    if access == ReadAccess::Open || uid == 0 || in_group {
        return Readable::All;
    }
    let mut only = BTreeSet::new();
    for (i, g) in grants.iter().enumerate().take(MAX_GRANTS) {
        if mine & (1 << i) == 0 || !g.verbs.contains(&GrantVerb::Read) {
            continue;
        }
        match &g.services {
            None => return Readable::All,
            Some(list) => only.extend(list.iter().cloned()),
        }
    }
    Readable::Only(only)
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

    fn grant(grantee: Grantee, services: Option<&[&str]>, verbs: &[GrantVerb]) -> Grant {
        Grant {
            grantee,
            name: String::new(),
            services: services.map(|l| l.iter().map(|s| (*s).to_owned()).collect()),
            verbs: verbs.iter().copied().collect(),
        }
    }

    fn peer(uid: u32, gid: u32, groups: &[u32], grants: &[Grant]) -> Peer {
        Peer::Unix {
            uid,
            gid,
            pid: None,
            in_group: false,
            grants: matching_grants(grants, uid, gid, groups),
        }
    }

    fn ask(verb: Option<GrantVerb>, service: Option<&str>) -> Ask<'_> {
        Ask {
            verb,
            service,
            what: "do it",
        }
    }

    #[test]
    fn a_grant_allows_its_verbs_on_its_services_for_its_grantee_only() {
        let grants = [
            grant(Grantee::Uid(1001), Some(&["web"]), &[GrantVerb::Rollout]),
            grant(
                Grantee::Gid(2000),
                None,
                &[GrantVerb::Weight, GrantVerb::Detach],
            ),
        ];
        let alice = peer(1001, 1001, &[], &grants);
        let ok = |p, v, s| authorize(None, &grants, p, ask(v, s)).is_ok();
        assert!(ok(alice, Some(GrantVerb::Rollout), Some("web")));
        assert!(!ok(alice, Some(GrantVerb::Rollout), Some("api")));
        assert!(!ok(alice, Some(GrantVerb::Weight), Some("web")));
        assert!(!ok(alice, None, None), "reload is for root and the group");
        let bob = peer(1002, 1002, &[2000], &grants);
        assert!(ok(bob, Some(GrantVerb::Weight), Some("api")));
        assert!(ok(bob, Some(GrantVerb::Detach), None));
        assert!(!ok(bob, Some(GrantVerb::Rollout), Some("web")));
        let carol = peer(1003, 2000, &[], &grants);
        assert!(
            ok(carol, Some(GrantVerb::Weight), Some("web")),
            "primary group"
        );
        let eve = peer(1004, 1004, &[], &grants);
        for v in GrantVerb::ALL {
            assert!(!ok(eve, Some(v), Some("web")), "{v:?}");
        }
        let e = authorize(
            None,
            &grants,
            eve,
            ask(Some(GrantVerb::Promote), Some("web")),
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("uid 1004"), "{}", e.message);
        assert!(authorize(None, &grants, peer(0, 0, &[], &grants), ask(None, None)).is_ok());
    }

    #[test]
    fn granted_read_access_limits_readers_to_their_read_grants() {
        let grants = [
            grant(
                Grantee::Uid(1001),
                Some(&["web", "api"]),
                &[GrantVerb::Read, GrantVerb::Rollout],
            ),
            grant(Grantee::Uid(1001), Some(&["db"]), &[GrantVerb::Rollout]),
            grant(Grantee::Gid(2000), None, &[GrantVerb::Read]),
        ];
        let read = |p| readable(ReadAccess::Granted, &grants, p);
        let alice = peer(1001, 1001, &[], &grants);
        let only = |l: &[&str]| Readable::Only(l.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(
            read(alice),
            only(&["api", "web"]),
            "rollout on db gives no read"
        );
        assert!(read(alice).allows("web") && !read(alice).allows("db"));
        assert_eq!(
            read(peer(1002, 1002, &[2000], &grants)),
            Readable::All,
            "\"*\""
        );
        assert_eq!(read(peer(1004, 1004, &[], &grants)), only(&[]));
        assert_eq!(read(peer(0, 0, &[], &grants)), Readable::All, "root");
        let member = Peer::Unix {
            uid: 1005,
            gid: 1005,
            pid: None,
            in_group: true,
            grants: 0,
        };
        assert_eq!(read(member), Readable::All, "the socket group");
        assert_eq!(read(Peer::Metrics), Readable::All);
        assert_eq!(
            readable(ReadAccess::Open, &grants, peer(1004, 1004, &[], &grants)),
            Readable::All,
            "open: everyone who can connect"
        );
    }
}
