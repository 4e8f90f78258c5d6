//! The keys under the fleet prefix and the JSON documents stored at them. Who writes what:
//!
//! | key | document | written by |
//! |---|---|---|
//! | `P/leader` | the coordinator's id, under its lease | the election (create-only txn) |
//! | `P/nodes/NODE` | [`NodeInfo`], under the agent's lease (its heartbeat) | the agent |
//! | `P/active/SERVICE` | the id of the service's fleet rollout in progress | `fleet rollout start` (create-only txn); deleted by the coordinator (fenced) |
//! | `P/rollouts/ID` | [`RolloutDoc`]: spec, resolved waves, phase, every host's phase | created by `fleet rollout start`, then only the coordinator (fenced) |
//! | `P/ops/ID` | [`Ops`]: pause, abort, approvals | the operator (`fleet rollout pause` ...), compare-and-swap |
//! | `P/desired/NODE/SERVICE` | [`Desired`]: what the host runs | the coordinator (fenced) |
//! | `P/reports/NODE/SERVICE` | [`Report`]: what the host did | the agent |
//! | `P/coordinator` | [`CoordinatorBeat`]: the leader's last tick | the coordinator (fenced) |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default prefix of every fleet key.
pub const DEFAULT_PREFIX: &str = "/shifter/";

/// Key builders for one prefix (ends with `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }
    pub fn coordinator(&self) -> String {
        format!("{}coordinator", self.prefix)
    }
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }
    pub fn node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.prefix)
    }
    pub fn actives(&self) -> String {
        format!("{}active/", self.prefix)
    }
    pub fn active(&self, service: &str) -> String {
        format!("{}active/{service}", self.prefix)
    }
    pub fn rollouts(&self) -> String {
        format!("{}rollouts/", self.prefix)
    }
    pub fn rollout(&self, id: &str) -> String {
        format!("{}rollouts/{id}", self.prefix)
    }
    pub fn ops(&self, id: &str) -> String {
        format!("{}ops/{id}", self.prefix)
    }
    pub fn desired_of(&self, node: &str) -> String {
        format!("{}desired/{node}/", self.prefix)
    }
    pub fn desired(&self, node: &str, service: &str) -> String {
        format!("{}desired/{node}/{service}", self.prefix)
    }
    pub fn reports(&self) -> String {
        format!("{}reports/", self.prefix)
    }
    pub fn report(&self, node: &str, service: &str) -> String {
        format!("{}reports/{node}/{service}", self.prefix)
    }
    /// `(node, service)` of a key under `desired/` or `reports/`.
    pub fn split_node_service<'a>(&self, under: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(under)?;
        let rest = rest.strip_prefix('/')?;
        rest.split_once('/')
    }
}

/// A node's heartbeat, stored under its lease: it disappears when the agent stops renewing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub kernel: String,
    pub services: Vec<String>,
}

/// How a wave picks its hosts, among the hosts not taken by an earlier wave (by name order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaveSelector {
    /// These hosts.
    Hosts(Vec<String>),
    /// Every remaining host with all these labels.
    Labels(BTreeMap<String, String>),
    /// The next `n` remaining hosts.
    Count(u32),
    /// This share of all the rollout's hosts (rounded up), taken from the remaining ones.
    Percent(u32),
    /// Every host left.
    Rest,
}

/// What a host that vanishes (its lease expired) while it runs its part means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLost {
    #[default]
    Pause,
    Abort,
}

/// A fleet rollout as the operator asked for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSpec {
    pub service: String,
    /// Each host's ramp (basis points, rising) and the hold of every step.
    pub steps_bp: Vec<u16>,
    pub hold_ms: u64,
    pub waves: Vec<WaveSelector>,
    /// Hosts of a wave ramping at once (0: the whole wave).
    pub max_parallel: u32,
    /// Hosts that must be up and not failed (counted over all waves); fewer pauses.
    pub min_healthy: u32,
    /// Host failures (self rollbacks) accepted before the fleet rolls back.
    pub failures_tolerated: u32,
    pub on_lost: OnLost,
    /// A wave not done within this rolls the fleet back (0: no deadline).
    pub wave_deadline_ms: u64,
    /// Wait for `fleet rollout approve` before each wave after the first.
    pub approve_waves: bool,
}

#[cfg(test)]
impl FleetSpec {
    /// A rollout of `service` to 100 % in one step, one wave, no limits: for unit tests.
    pub fn one_step(service: &str) -> Self {
        Self {
            service: service.into(),
            steps_bp: vec![10_000],
            hold_ms: 1,
            waves: Vec::new(),
            max_parallel: 0,
            min_healthy: 0,
            failures_tolerated: 0,
            on_lost: OnLost::Pause,
            wave_deadline_ms: 0,
            approve_waves: false,
        }
    }
}

/// The phase of a fleet rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// Written by `rollout start`; the coordinator resolves the waves.
    Pending,
    Running,
    WaitingApproval,
    Paused {
        reason: String,
    },
    RollingBack {
        reason: String,
    },
    RolledBack {
        reason: String,
    },
    Completed,
    /// Could not start (no host matched, ...); nothing was touched.
    Failed {
        reason: String,
    },
}

impl Phase {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::RolledBack { .. } | Self::Completed | Self::Failed { .. }
        )
    }
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::WaitingApproval => "waiting-approval",
            Self::Paused { .. } => "paused",
            Self::RollingBack { .. } => "rolling-back",
            Self::RolledBack { .. } => "rolled-back",
            Self::Completed => "completed",
            Self::Failed { .. } => "failed",
        }
    }
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Paused { reason }
            | Self::RollingBack { reason }
            | Self::RolledBack { reason }
            | Self::Failed { reason } => Some(reason),
            _ => None,
        }
    }
}

/// One host's part, as the coordinator tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostPhase {
    /// Not yet asked.
    Pending,
    /// Asked to ramp.
    Ramping,
    /// Ramp completed at 100 %.
    Done,
    /// Rolled back by its own gates.
    Failed,
    /// Asked to roll back.
    RollingBack,
    /// At weight 0 after the fleet's rollback.
    RolledBack,
}

/// Everything about one fleet rollout: the one document the coordinator reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutDoc {
    pub id: String,
    pub spec: FleetSpec,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The resolved waves (host names), fixed when the rollout starts.
    pub waves: Vec<Vec<String>>,
    /// The current wave (index into `waves`).
    pub wave: usize,
    pub wave_started_ms: u64,
    #[serde(flatten)]
    pub phase: Phase,
    pub hosts: BTreeMap<String, HostPhase>,
    /// What happened, oldest first (time in ms, text).
    pub history: Vec<(u64, String)>,
    /// The coordinator that wrote this version.
    pub writer: String,
}

impl RolloutDoc {
    pub fn new(id: String, spec: FleetSpec, now_ms: u64) -> Self {
        Self {
            id,
            spec,
            created_ms: now_ms,
            updated_ms: now_ms,
            waves: Vec::new(),
            wave: 0,
            wave_started_ms: now_ms,
            phase: Phase::Pending,
            hosts: BTreeMap::new(),
            history: vec![(now_ms, "requested".into())],
            writer: String::new(),
        }
    }

    /// The wave a host belongs to.
    pub fn wave_of(&self, host: &str) -> Option<usize> {
        self.waves.iter().position(|w| w.iter().any(|h| h == host))
    }
}

/// The operator's wishes about a rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ops {
    #[serde(default)]
    pub pause: bool,
    #[serde(default)]
    pub abort: bool,
    /// Waves (by index) the operator approved.
    #[serde(default)]
    pub approved: Vec<usize>,
}

/// What a host is to do for a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    Ramp { steps_bp: Vec<u16>, hold_ms: u64 },
    Rollback,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ramp { .. } => "ramp",
            Self::Rollback => "rollback",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub rollout: String,
    #[serde(flatten)]
    pub action: Action,
}

/// A host's state of its part, as reported by its agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostState {
    /// Ramping (or paused, or waiting) under the local engine.
    Running,
    Completed,
    /// The local gates rolled green back to 0.
    RolledBack,
    /// The fleet's rollback is done here (green at 0).
    Reverted,
    /// The command could not run (the service is unknown here, ...).
    Error,
}

impl HostState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::RolledBack => "rolled-back",
            Self::Reverted => "reverted",
            Self::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub rollout: String,
    /// The action this report answers (`ramp` or `rollback`).
    pub action: String,
    pub state: HostState,
    pub weight_bp: u16,
    pub detail: Option<String>,
    pub at_ms: u64,
}

/// The leader's tick, fenced like every coordinator write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorBeat {
    pub id: String,
    pub at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_and_round_trip() {
        let k = Keys::new("/t");
        assert_eq!(k.desired("h1", "web"), "/t/desired/h1/web");
        assert_eq!(
            k.split_node_service("reports", &k.report("h1", "web")),
            Some(("h1", "web"))
        );
        assert_eq!(k.split_node_service("reports", "/t/desired/h1/web"), None);
    }

    #[test]
    fn documents_are_flat_json() {
        let d = Desired {
            rollout: "r1".into(),
            action: Action::Ramp {
                steps_bp: vec![5000, 10_000],
                hold_ms: 100,
            },
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["action"], "ramp");
        assert_eq!(v["steps_bp"][1], 10_000);
        assert_eq!(serde_json::from_value::<Desired>(v).unwrap(), d);
        for state in [
            HostState::Running,
            HostState::Completed,
            HostState::RolledBack,
            HostState::Reverted,
            HostState::Error,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.name());
        }
        let p = Phase::RollingBack { reason: "x".into() };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"phase": "rolling-back", "reason": "x"})
        );
    }
}
