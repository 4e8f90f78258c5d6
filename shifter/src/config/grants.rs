//! `[[daemon.grant]]`: rights per service for peers that are neither root nor in
//! `daemon.socket_group` (those keep every right).
//!
//! ```toml
//! [[daemon.grant]]
//! group = "deploy"            # a group name or gid; or `uid = "alice"` (a user name or uid)
//! services = ["web", "api"]   # or ["*"]: every service
//! verbs = ["rollout", "rollback"]
//! ```
//!
//! Verbs: `read` (status, flows, events, history, metrics; needed only with
//! `daemon.read_access = "granted"`, otherwise every peer that can connect reads everything),
//! `weight` (`set-weight`), `rollout`
//! (`rollout start|pause|resume|abort|approve|freeze`, `blue-green`), `promote`, `rollback`,
//! `detach` (removes every service, so only with `services = ["*"]`). A reload stays with
//! root and the socket group.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{Number, Problems, services::ServiceSpec};

/// At most this many grants (a peer's matching grants are kept as a 64-bit set).
pub const MAX_GRANTS: usize = 64;

/// What a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GrantVerb {
    Read,
    Weight,
    Rollout,
    Promote,
    Rollback,
    Detach,
}

impl GrantVerb {
    pub const ALL: [Self; 6] = [
        Self::Read,
        Self::Weight,
        Self::Rollout,
        Self::Promote,
        Self::Rollback,
        Self::Detach,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Weight => "weight",
            Self::Rollout => "rollout",
            Self::Promote => "promote",
            Self::Rollback => "rollback",
            Self::Detach => "detach",
        }
    }
}

impl std::fmt::Display for GrantVerb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `daemon.read_access`: who may read (status, flows, events, history, metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadAccess {
    /// Every peer that can connect reads everything (the default).
    #[default]
    Open,
    /// Root and the socket group read everything; other peers only the services their
    /// grants give `read` on (daemon-wide reads, e.g. metrics, need `read` on `"*"`).
    Granted,
}

impl ReadAccess {
    pub(super) fn parse(p: &mut Problems, v: Option<&str>) -> Self {
        match v {
            None | Some("open") => Self::Open,
            Some("granted") => Self::Granted,
            Some(other) => {
                p.add(
                    "daemon.read_access",
                    format!("{other:?} is neither \"open\" nor \"granted\""),
                );
                Self::Open
            }
        }
    }
}

/// Who a grant is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grantee {
    Uid(u32),
    /// The peer's primary or a supplementary group, or a group of its user.
    Gid(u32),
}

/// One `[[daemon.grant]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub grantee: Grantee,
    /// The uid or gid, for messages.
    pub name: String,
    /// `None`: every service (`"*"`).
    pub services: Option<BTreeSet<String>>,
    pub verbs: BTreeSet<GrantVerb>,
}

impl Grant {
    /// Whether this grant allows `verb` on `service` (`None`: a request about no one service,
    /// i.e. detach, which needs every service).
    pub fn allows(&self, verb: GrantVerb, service: Option<&str>) -> bool {
        self.verbs.contains(&verb)
            && match (&self.services, service) {
                (None, _) => true,
                (Some(list), Some(s)) => list.contains(s),
                (Some(_), None) => false,
            }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrant {
    uid: Option<Number>,
    group: Option<Number>,
    services: Option<Vec<String>>,
    verbs: Option<Vec<String>>,
}

/// A grant's services: `Some(None)` for every service (`["*"]`), `Some(Some(names))`, or
/// `None` when the list is missing or bad (the problem is recorded).
fn grant_services(
    p: &mut Problems,
    field: &str,
    v: Option<Vec<String>>,
) -> Option<Option<BTreeSet<String>>> {
    match v {
        None => {
            p.add(field, "required: service names, or [\"*\"] for all");
            None
        }
        Some(list) if list.is_empty() => {
            p.add(field, "is empty: name services, or [\"*\"] for all");
            None
        }
        Some(list) if list.iter().any(|s| s == "*") => {
            if list.len() > 1 {
                p.add(field, "\"*\" stands alone (it means every service)");
            }
            Some(None)
        }
        Some(list) => Some(Some(list.into_iter().collect())),
    }
}

/// A grant's verbs, each known; unknown ones are recorded as problems.
fn grant_verbs(p: &mut Problems, field: &str, v: Option<Vec<String>>) -> BTreeSet<GrantVerb> {
    let mut verbs = BTreeSet::new();
    match v {
        None => p.add(
            field,
            "required: some of read, weight, rollout, promote, rollback, detach",
        ),
        Some(list) if list.is_empty() => p.add(field, "is empty"),
        Some(list) => {
            for v in list {
                match GrantVerb::ALL.iter().find(|k| k.name() == v) {
                    Some(k) => {
                        verbs.insert(*k);
                    }
                    None => p.add(
                        field,
                        format!(
                            "{v:?} is not a verb (read, weight, rollout, promote, rollback, detach)"
                        ),
                    ),
                }
            }
        }
    }
    verbs
}

/// Validates the grants; `socket_mode` says whether a grantee can connect at all.
pub(super) fn validate(raw: Vec<RawGrant>, socket_mode: u32, p: &mut Problems) -> Vec<Grant> {
    if raw.len() > MAX_GRANTS {
        p.add(
            "daemon.grant",
            format!("{} grants; at most {MAX_GRANTS}", raw.len()),
        );
    }
    let mut out = Vec::new();
    for (i, g) in raw.into_iter().enumerate().take(MAX_GRANTS) {
        let field = |f: &str| format!("daemon.grant[{i}].{f}");
        let grantee = match (g.uid, g.group) {
            (Some(u), None) => resolve(p, &field("uid"), &u, true),
            (None, Some(gr)) => resolve(p, &field("group"), &gr, false),
            _ => {
                p.add(
                    format!("daemon.grant[{i}]"),
                    "needs exactly one of uid or group",
                );
                None
            }
        };
        let services = grant_services(p, &field("services"), g.services);
        let verbs = grant_verbs(p, &field("verbs"), g.verbs);
        if verbs.contains(&GrantVerb::Detach) && matches!(services, Some(Some(_))) {
            p.add(
                field("verbs"),
                "\"detach\" removes every service: it needs services = [\"*\"]",
            );
        }
        // Root, the owner and the socket group keep every right anyway: a grant is for
        // others, who connect only through the socket's "other" bits.
        if socket_mode & 0o006 != 0o006 && grantee.is_some() {
            p.add(
                format!("daemon.grant[{i}]"),
                format!(
                    "cannot connect to the socket: daemon.socket_mode 0{socket_mode:o} gives other users no read and write (e.g. \"0666\")"
                ),
            );
        }
        if let (Some(grantee), Some(services)) = (grantee, services) {
            let name = match &grantee {
                Grantee::Uid(u) | Grantee::Gid(u) => u.to_string(),
            };
            out.push(Grant {
                grantee,
                name,
                services,
                verbs,
            });
        }
    }
    out
}

/// Every service a grant names must be configured.
pub(super) fn check_services(grants: &[Grant], services: &[ServiceSpec], p: &mut Problems) {
    for (i, g) in grants.iter().enumerate() {
        for s in g.services.iter().flatten() {
            if !services.iter().any(|spec| &spec.name == s) {
                p.add(
                    format!("daemon.grant[{i}].services"),
                    format!("{s:?} is not a configured service"),
                );
            }
        }
    }
}

/// A user or group name, or a numeric id.
fn resolve(p: &mut Problems, field: &str, v: &Number, user: bool) -> Option<Grantee> {
    let text = match v {
        Number::Int(i) => i.to_string(),
        Number::Text(t) => t.clone(),
        Number::Float(f) => {
            p.add(field, format!("{f} is not a name or an id"));
            return None;
        }
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(id) if user => Some(Grantee::Uid(id)),
            Ok(id) => Some(Grantee::Gid(id)),
            Err(_) => {
                p.add(field, format!("{text} is not an id"));
                None
            }
        };
    }
    let found = if user {
        nix::unistd::User::from_name(&text).map(|u| u.map(|u| Grantee::Uid(u.uid.as_raw())))
    } else {
        nix::unistd::Group::from_name(&text).map(|g| g.map(|g| Grantee::Gid(g.gid.as_raw())))
    };
    match found {
        Ok(Some(g)) => Some(g),
        Ok(None) => {
            p.add(
                field,
                format!("{text:?}: no such {}", if user { "user" } else { "group" }),
            );
            None
        }
        Err(e) => {
            p.add(field, format!("{text:?}: cannot look it up: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(grants: &str, mode: &str) -> Result<Config, Vec<String>> {
        let text = format!(
            "[daemon]\nsocket_mode = \"{mode}\"\n{grants}\n\
             [[services]]\nname = \"web\"\nport = 80\nblue_port = 8081\ngreen_port = 8082\n\
             [[services]]\nname = \"api\"\nport = 81\nblue_port = 9081\ngreen_port = 9082\n"
        );
        Config::parse(&text, Path::new("t.toml")).map_err(|e| e.problems())
    }

    #[test]
    fn grants_parse_with_names_ids_and_star() {
        let c = parse(
            "[[daemon.grant]]\nuid = 1001\nservices = [\"web\"]\nverbs = [\"rollout\", \"rollback\"]\n\
             [[daemon.grant]]\ngroup = \"root\"\nservices = [\"*\"]\nverbs = [\"read\", \"weight\", \"detach\"]\n\
             [[daemon.grant]]\nuid = \"root\"\nservices = [\"api\", \"web\"]\nverbs = [\"promote\"]\n",
            "0666",
        )
        .expect("valid");
        let g = &c.daemon.grants;
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].grantee, Grantee::Uid(1001));
        assert!(g[0].allows(GrantVerb::Rollout, Some("web")));
        assert!(!g[0].allows(GrantVerb::Rollout, Some("api")));
        assert!(!g[0].allows(GrantVerb::Weight, Some("web")));
        assert_eq!(g[1].grantee, Grantee::Gid(0));
        assert_eq!(g[1].services, None);
        assert!(g[1].allows(GrantVerb::Detach, None));
        assert_eq!(g[2].grantee, Grantee::Uid(0));
        assert!(!g[2].allows(GrantVerb::Promote, None));
        assert!(
            parse("", "0660")
                .expect("no grants")
                .daemon
                .grants
                .is_empty()
        );
    }

    #[test]
    fn every_bad_grant_is_named() {
        let cases: [(&str, &str, &str); 11] = [
            (
                "uid = 1\ngroup = 1\nservices = [\"web\"]\nverbs = [\"read\"]",
                "0666",
                "daemon.grant[0]: needs exactly one of uid or group",
            ),
            (
                "services = [\"web\"]\nverbs = [\"read\"]",
                "0666",
                "daemon.grant[0]: needs exactly one of uid or group",
            ),
            (
                "uid = \"no-such-user-xyz\"\nservices = [\"web\"]\nverbs = [\"read\"]",
                "0666",
                "daemon.grant[0].uid: \"no-such-user-xyz\": no such user",
            ),
            (
                "group = \"no-such-group-xyz\"\nservices = [\"web\"]\nverbs = [\"read\"]",
                "0666",
                "daemon.grant[0].group: \"no-such-group-xyz\": no such group",
            ),
            (
                "uid = 1.5\nservices = [\"web\"]\nverbs = [\"read\"]",
                "0666",
                "daemon.grant[0].uid: 1.5 is not a name or an id",
            ),
            (
                "uid = 1\nverbs = [\"read\"]",
                "0666",
                "daemon.grant[0].services: required",
            ),
            (
                "uid = 1\nservices = [\"web\", \"*\"]\nverbs = [\"read\"]",
                "0666",
                "daemon.grant[0].services: \"*\" stands alone",
            ),
            (
                "uid = 1\nservices = [\"nope\"]\nverbs = [\"read\"]",
                "0666",
                "daemon.grant[0].services: \"nope\" is not a configured service",
            ),
            (
                "uid = 1\nservices = [\"web\"]\nverbs = [\"write\"]",
                "0666",
                "daemon.grant[0].verbs: \"write\" is not a verb",
            ),
            (
                "uid = 1\nservices = [\"web\"]\nverbs = [\"detach\"]",
                "0666",
                "daemon.grant[0].verbs: \"detach\" removes every service",
            ),
            (
                "group = 100\nservices = [\"web\"]\nverbs = [\"weight\"]",
                "0660",
                "daemon.grant[0]: cannot connect to the socket: daemon.socket_mode 0660",
            ),
        ];
        for (grant, mode, want) in cases {
            let problems = parse(&format!("[[daemon.grant]]\n{grant}\n"), mode).expect_err(grant);
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{grant}: want {want:?} in {problems:?}"
            );
        }
        let unknown = parse(
            "[[daemon.grant]]\nuid = 1\nservices = [\"web\"]\nverbs = [\"read\"]\nservice = 1\n",
            "0666",
        )
        .expect_err("unknown key");
        assert!(unknown.iter().any(|p| p.contains("service")), "{unknown:?}");
    }
}
