//! The one wire schema of the control API: every JSON body, requests and answers, shared by
//! the daemon, the server and the client (and through it the CLI). A weight is a number of
//! basis points here (`weight_bp`, or the typed [`Weight`]); `{"percent": 12.5}` is accepted
//! for `curl` users and read as a number, never as text.

use serde::{Deserialize, Serialize};
use shifter_common::{
    Affinity, Dispatch, FLOW_ESTABLISHED, FLOW_FIN_IN, FLOW_FIN_OUT, FLOW_RECOVERED,
};

pub use crate::dataplane::Counters;
pub use crate::rollout::history::{
    Entry as HistoryEntry, EntryKind as HistoryEntryKind, Outcome as RolloutOutcome, RolloutRecord,
};
use crate::{
    dataplane::Flow,
    events::Event,
    model::{Service, Weight, percent},
};

/// Body of `PUT /v1/services/{name}/weight`: `{"weight_bp": 1250}` (what the client sends) or
/// `{"percent": 12.5}` (a JSON number, as the README's `curl` examples send); one of the two.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bp: Option<Weight>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<serde_json::Value>,
}

/// Body of `POST /v1/services/{name}/rollout/start` and `.../blue-green` (empty: defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// Step weights in percent, ascending: JSON numbers, or strings like `"12.5"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<serde_json::Value>>,
    /// Step weights in basis points, ascending (what the client sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_bp: Option<Vec<Weight>>,
    /// Hold of every step, e.g. `"30s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// Body of `POST /v1/services/{name}/rollback` (empty: roll back without waiting).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// How long to wait for green's flows to end, e.g. `"30s"` (none are closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
}

/// A human state of the wire (`"waiting for approval"`) as a metric label or screen word
/// (`"waiting-for-approval"`).
pub fn label(state: &str) -> String {
    state.trim().replace([' ', '_'], "-").to_lowercase()
}

/// Every error response: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub protocol: String,
    pub port: u16,
    pub local_addresses: Vec<String>,
    pub blue_port: u16,
    pub green_port: u16,
    /// Green's share of new flows, basis points (0..=10000).
    pub weight_bp: u16,
    /// The same as percent with two decimals, e.g. "12.50".
    pub weight_percent: String,
    pub affinity: String,
    /// "socket" or "rewrite": what the data plane runs (rewrite where socket dispatch was
    /// asked for and the kernel refused it; `Status::socket_dispatch_unavailable` says why).
    #[serde(default = "rewrite")]
    pub dispatch: String,
    /// Socket dispatch: the listening sockets remembered per backend (`None` for rewrite).
    #[serde(default)]
    pub listeners: Option<ListenerCounts>,
    pub slot: u32,
    pub blue: Counters,
    pub green: Counters,
    /// Health of blue and green (`None`: no checks configured).
    #[serde(default)]
    pub health: Option<HealthView>,
    #[serde(default)]
    pub rollout: Option<RolloutView>,
    /// The fleet rollout this host last took part in for the service (`[fleet]` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<ServiceFleetView>,
}

fn rewrite() -> String {
    "rewrite".to_owned()
}

/// Listening sockets the sk_lookup program can hand connections to, per backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerCounts {
    pub blue: u32,
    pub green: u32,
}

/// Health of one backend as its checks say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealthView {
    pub port: u16,
    /// The port the checks connect to (the backend port plus `health.port_offset`).
    pub check_port: u16,
    /// unknown, up, down
    pub status: String,
    pub last_failure: Option<String>,
    /// Whether the latest check passed (`None`: none ran yet).
    pub last_check_ok: Option<bool>,
    pub checks: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    pub blue: BackendHealthView,
    pub green: BackendHealthView,
}

/// A service's rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    /// idle, running, paused, waiting for approval, frozen, rolled back, completed
    pub state: String,
    /// canary or blue-green (`None`: no rollout has run).
    pub kind: Option<String>,
    pub dry_run: bool,
    /// The current step, counted from 1.
    pub step: Option<usize>,
    pub steps: usize,
    /// The current step's weight (a would-be weight in a dry run).
    pub step_weight_bp: Option<u16>,
    /// Time left in the current step's hold (running or paused).
    pub remaining_hold_ms: Option<u64>,
    /// Dry run: the weight the rollout would have set by now.
    pub would_weight_bp: Option<u16>,
    /// Why the step's gate has no verdict yet.
    pub gate_waiting: Option<String>,
    /// Why the rollout was rolled back.
    pub rolled_back: Option<String>,
    /// The Prometheus query gates and their last results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<AnalysisView>,
}

/// One Prometheus query gate of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisView {
    pub name: String,
    /// success, failure or inconclusive (`None`: no query answered yet).
    pub last: Option<String>,
    /// The value as Prometheus gave it.
    pub value: Option<String>,
    pub detail: Option<String>,
    /// Failed results in a row during the rollout (rolls back at the failure limit).
    pub failures: u32,
    /// Inconclusive results in a row during the rollout (pauses at the limit).
    pub inconclusive: u32,
    pub measurements: u64,
}

/// Answer to a rollout command (`rollout ...`, `promote`, `rollback`, `blue-green`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutReply {
    pub service: String,
    /// The events the command recorded.
    pub events: Vec<Event>,
    /// Green's real weight afterwards, basis points.
    pub weight_bp: u16,
    pub rollout: RolloutView,
    /// `rollback --drain-timeout`: green's flows left after the timeout (none are closed).
    pub drain: Option<DrainReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    pub timeout_ms: u64,
    /// How long the rollback waited: until green had no open flow, or the whole timeout.
    pub waited_ms: u64,
    /// Green's open flows (not yet ended) when the wait stopped; 0 means drained.
    pub green_flows_remaining: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub hook: String,
    pub tc_mode: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub bpffs_dir: String,
    pub state_dir: String,
    pub flow_table_size: u32,
    pub interfaces: Vec<InterfaceStatus>,
    pub services: Vec<ServiceStatus>,
    /// Packets for a service the kernel programs gave up on and passed unchanged, by reason
    /// (`Skip` names: every reason, zeros included; empty when the maps predate the counter).
    #[serde(default)]
    pub skipped_packets: std::collections::BTreeMap<String, u64>,
    /// Why this kernel cannot do socket dispatch (`None`: it can).
    #[serde(default)]
    pub socket_dispatch_unavailable: Option<String>,
    /// Why backend listeners were left unregistered by the last registration (`None`: none
    /// were).
    #[serde(default)]
    pub listener_registration_problem: Option<String>,
    /// This host's fleet agent (`None`: no `[fleet]` section).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetAgentView>,
}

/// What this host's fleet agent last saw of etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetAgentView {
    pub node: String,
    /// etcd answered the last poll.
    pub etcd_reachable: bool,
    /// Since when etcd has not answered (Unix ms; `None` while it answers).
    pub unreachable_since_ms: Option<u64>,
    /// The etcd error of the last failed poll.
    pub last_error: Option<String>,
}

impl FleetAgentView {
    /// "node h1, etcd reachable", or since when (at `now_ms`) and why it is not.
    pub fn summary(&self, now_ms: u64) -> String {
        match self.unreachable_since_ms {
            None => format!("node {}, etcd reachable", self.node),
            Some(since) => {
                let secs = now_ms.saturating_sub(since) / 1000;
                let mut t = format!("node {}, etcd unreachable for {secs}s", self.node);
                if let Some(e) = &self.last_error {
                    t.push_str(&format!(" ({e})"));
                }
                t
            }
        }
    }
}

impl ServiceFleetView {
    /// One line: "web-7 running, wave 2/3, 2/6 hosts done; here: wave 2, ramp running".
    pub fn summary(&self) -> String {
        let mut t = format!(
            "{} {}",
            self.rollout,
            self.phase.as_deref().unwrap_or("unread")
        );
        if let Some(r) = &self.reason {
            t.push_str(&format!(" ({r})"));
        }
        if self.waves > 0 {
            t.push_str(&format!(
                ", wave {}/{}, {}/{} hosts done",
                self.wave, self.waves, self.hosts_done, self.hosts
            ));
        }
        t.push_str("; here: ");
        if let Some(w) = self.host_wave {
            t.push_str(&format!("wave {w}, "));
        }
        t.push_str(&format!(
            "{} {}",
            self.action,
            self.reported.as_deref().unwrap_or("not reported")
        ));
        if self.held {
            t.push_str(", held while etcd is unreachable");
        }
        t
    }
}

/// What the fleet agent tells the daemon after each poll of etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetSeen {
    pub agent: FleetAgentView,
    /// By service name.
    pub services: std::collections::BTreeMap<String, ServiceFleetView>,
}

/// A service's fleet rollout as this host's agent last read it from etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFleetView {
    /// The fleet rollout id.
    pub rollout: String,
    /// What the fleet asks of this host: `ramp` or `rollback`.
    pub action: String,
    /// The fleet rollout's phase (`running`, `waiting-approval`, `paused`, ...; `None`
    /// until its document was read) and why, for the phases that have a reason.
    pub phase: Option<String>,
    pub reason: Option<String>,
    /// The wave under way and this host's wave, counted from 1, of `waves`.
    pub wave: usize,
    pub host_wave: Option<usize>,
    pub waves: usize,
    /// Hosts of the rollout done (at 100 %) and in all.
    pub hosts_done: usize,
    pub hosts: usize,
    /// What this host last reported (`running`, `completed`, `rolled-back`, ...).
    pub reported: Option<String>,
    /// The agent paused this host's ramp because etcd stopped answering (fail static).
    pub held: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntry {
    pub protocol: String,
    pub client: String,
    pub client_port: u16,
    pub local: String,
    pub service_port: u16,
    pub backend: String,
    pub backend_port: u16,
    pub established: bool,
    pub recovered: bool,
    pub fin_in: bool,
    pub fin_out: bool,
    /// Milliseconds since the last packet.
    pub idle_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flows {
    pub service: String,
    pub flows: Vec<FlowEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightChange {
    pub service: String,
    pub old_weight_bp: u16,
    pub new_weight_bp: u16,
    /// The event recorded for the change (`None` when the weight was already that value).
    pub event: Option<Event>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    pub interfaces_attached: Vec<String>,
    pub interfaces_detached: Vec<String>,
    /// Settings that changed in the file but only take effect after a restart.
    pub needs_restart: Vec<String>,
    /// What could not be applied (the rest was).
    pub errors: Vec<String>,
}

/// Answer of `GET /v1/services/{name}/history` (`service` set) and `GET /v1/history`: the
/// recorded rollouts, oldest first (see [`crate::rollout::history`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReply {
    pub service: Option<String>,
    pub rollouts: Vec<RolloutRecord>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachReport {
    pub interfaces: Vec<String>,
    pub pins_removed: bool,
}

impl ServiceStatus {
    /// The status of the configured service `name` in `slot`, without health or rollout.
    pub fn new(name: &str, slot: u32, svc: &Service, [blue, green]: [Counters; 2]) -> Self {
        Self {
            name: name.to_owned(),
            protocol: svc.protocol.to_string(),
            port: svc.port,
            local_addresses: svc.local_addrs.iter().map(ToString::to_string).collect(),
            blue_port: svc.config.blue_port,
            green_port: svc.config.green_port,
            weight_bp: svc.config.weight,
            weight_percent: percent(svc.config.weight),
            affinity: match svc.config.affinity {
                Affinity::Connection => "connection",
                Affinity::Client => "client",
            }
            .to_owned(),
            dispatch: match svc.config.dispatch {
                Dispatch::Socket => "socket",
                Dispatch::Rewrite => "rewrite",
            }
            .to_owned(),
            listeners: None,
            slot,
            blue,
            green,
            health: None,
            rollout: None,
            fleet: None,
        }
    }

    /// Sets, for a socket-dispatched service, the listeners each backend has from the counts
    /// per backend port (`DataPlane::listener_counts`, `PinnedMaps::listener_counts`).
    pub fn with_listeners(
        mut self,
        svc: &Service,
        listening: &std::collections::BTreeMap<u16, u32>,
    ) -> Self {
        if svc.config.dispatch == Dispatch::Socket {
            let of = |port| listening.get(&port).copied().unwrap_or(0);
            self.listeners = Some(ListenerCounts {
                blue: of(svc.config.blue_port),
                green: of(svc.config.green_port),
            });
        }
        self
    }
}

impl BackendHealthView {
    /// Whether a check runs at all.
    pub fn checked(&self) -> bool {
        self.status != "not checked"
    }
}

/// `"blue"` or `"green"`, for a backend number of the maps (0 or 1).
pub fn backend_name(b: u8) -> &'static str {
    if b & 1 == 0 { "blue" } else { "green" }
}

impl FlowEntry {
    /// A flow-table entry as the API shows it; `now` from [`crate::dataplane::flow_clock_ns`].
    pub fn new(f: &Flow, now: u64) -> Self {
        Self {
            protocol: f.protocol.to_string(),
            client: f.client.to_string(),
            client_port: f.client_port,
            local: f.local.to_string(),
            service_port: f.service_port,
            backend: backend_name(f.backend as u8).to_owned(),
            backend_port: f.backend_port,
            established: f.flags & FLOW_ESTABLISHED != 0,
            recovered: f.flags & FLOW_RECOVERED != 0,
            fin_in: f.flags & FLOW_FIN_IN != 0,
            fin_out: f.flags & FLOW_FIN_OUT != 0,
            idle_ms: f.idle_ms(now),
        }
    }
}
