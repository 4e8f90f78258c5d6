//! JSON bodies of the control API, shared by the daemon (server) and the CLI (client).

use serde::{Deserialize, Serialize};

use crate::events::Event;

/// Every error response: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub new_flows: u64,
    pub active_flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub egress_packets: u64,
    pub egress_bytes: u64,
    pub recoveries: u64,
    pub evictions: u64,
    pub refusals: u64,
    pub resets: u64,
    /// Dry run: new flows this backend would have got under the would-be weight.
    #[serde(default)]
    pub dry_new_flows: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    pub slot: u32,
    pub blue: Counters,
    pub green: Counters,
    /// Health of blue and green (`None`: no checks configured).
    #[serde(default)]
    pub health: Option<HealthView>,
    #[serde(default)]
    pub rollout: Option<RolloutView>,
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub bpffs_dir: String,
    pub state_dir: String,
    pub flow_table_size: u32,
    pub interfaces: Vec<InterfaceStatus>,
    pub services: Vec<ServiceStatus>,
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

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachReport {
    pub interfaces: Vec<String>,
    pub pins_removed: bool,
}
