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
