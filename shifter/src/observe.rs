//! A tolerant reading of the daemon's status JSON, shared by `/metrics` and `shifter watch`.
//!
//! The core fields (services, weights, counters) are the typed [`ServiceStatus`] ones. Health
//! and rollout state are optional: they are read when the status carries them and left out
//! otherwise, so neither the metrics nor the watch view show placeholders. The one place that
//! knows their field names is [`health_of`] / [`rollout_of`] (the extension point); it accepts
//! the shapes listed there.
//!
//! [`ServiceStatus`]: crate::api::types::ServiceStatus

use std::time::Duration;

use serde_json::Value;

use crate::api::types::Counters;

/// Blue then green, as in the counters map.
pub const BACKENDS: [&str; 2] = ["blue", "green"];

/// What the status says about the whole daemon.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub version: String,
    /// Capacity of the flow table.
    pub flow_table_size: u64,
    pub services: Vec<ServiceSnap>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceSnap {
    pub name: String,
    pub protocol: String,
    pub port: u16,
    /// Green's configured share of new flows, basis points.
    pub weight_bp: u16,
    pub backends: [BackendSnap; 2],
    pub rollout: Option<RolloutSnap>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendSnap {
    pub port: u16,
    pub counters: Counters,
    pub health: Option<HealthSnap>,
}

/// A backend's health as its checks say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSnap {
    /// `up`, `down`, `unknown`, `not-checked` (kebab-case, as the daemon says it).
    pub state: String,
    pub last_failure: Option<String>,
}

impl HealthSnap {
    /// Whether a check runs at all (`not-checked` means no check is configured).
    pub fn checked(&self) -> bool {
        !matches!(self.state.as_str(), "not-checked" | "not_checked" | "none")
    }
}

/// A service's rollout as its state machine says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutSnap {
    /// `idle`, `running`, `paused`, `waiting-approval`, `frozen`, `rolled-back`, `completed`.
    pub state: String,
    /// Current step, 0-based as the daemon counts.
    pub step: Option<u64>,
    /// Number of steps of the ramp.
    pub steps: Option<u64>,
    /// Weight of the current step.
    pub step_weight_bp: Option<u16>,
    /// Time left in the current step's hold.
    pub remaining: Option<Duration>,
    pub dry_run: bool,
}

impl Snapshot {
    /// Reads a `/v1/status` body. Missing core fields read as zero/empty; unknown fields are
    /// ignored.
    pub fn from_status(v: &Value) -> Self {
        let services = v
            .get("services")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(ServiceSnap::from_value).collect())
            .unwrap_or_default();
        Self {
            version: str_of(v, "version").unwrap_or_default(),
            flow_table_size: v
                .get("flow_table_size")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            services,
        }
    }

    /// Flow-table entries belonging to known services (the daemon may know a more exact
    /// total including entries of removed services).
    pub fn flow_entries(&self) -> u64 {
        self.services
            .iter()
            .flat_map(|s| &s.backends)
            .map(|b| b.counters.active_flows)
            .sum()
    }
}

impl ServiceSnap {
    pub fn from_value(v: &Value) -> Self {
        let backend = |i: usize| {
            let name = BACKENDS[i];
            BackendSnap {
                port: u16_of(v, &format!("{name}_port")).unwrap_or(0),
                counters: v
                    .get(name)
                    .and_then(|c| serde_json::from_value(c.clone()).ok())
                    .unwrap_or_default(),
                health: health_of(v, name),
            }
        };
        Self {
            name: str_of(v, "name").unwrap_or_default(),
            protocol: str_of(v, "protocol").unwrap_or_default(),
            port: u16_of(v, "port").unwrap_or(0),
            weight_bp: u16_of(v, "weight_bp").unwrap_or(0),
            backends: [backend(0), backend(1)],
            rollout: rollout_of(v),
        }
    }
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn u16_of(v: &Value, key: &str) -> Option<u16> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
}

/// A state name from a string, or from `{"state": "..."}` / `{"status": "..."}` /
/// `{"kind": "..."}`, or from an externally tagged enum `{"name": {...}}`; kebab-cased.
pub fn tag_of(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => {
            if let Some(s) = ["state", "status", "kind", "type"]
                .iter()
                .find_map(|k| m.get(*k).and_then(Value::as_str))
            {
                s.to_owned()
            } else if m.len() == 1 {
                m.keys().next().expect("one key").clone()
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(kebab(&s))
}

/// `WaitingApproval`, `waiting_approval`, `waiting approval` -> `waiting-approval`.
fn kebab(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.trim().chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('-') {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '_' || c == ' ' {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A duration as milliseconds (number), `{"secs": s, "nanos": n}` (serde's `Duration`),
/// or humantime text ("12s").
fn duration_of(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_millis),
        Value::Object(m) => {
            let secs = m.get("secs")?.as_u64()?;
            let nanos = m.get("nanos").and_then(Value::as_u64).unwrap_or(0);
            Some(Duration::from_secs(secs) + Duration::from_nanos(nanos))
        }
        Value::String(s) => humantime::parse_duration(s).ok(),
        _ => None,
    }
}

/// Extension point: the health of `backend` ("blue"/"green") in a service's status.
///
/// Accepted: `health: {blue: H, green: H}`, `{backend}_health: H` or `{backend}: {..., health: H}`,
/// where H is a state string or an object with `status`/`state` and an optional
/// `last_failure` (a string or `null`).
pub fn health_of(svc: &Value, backend: &str) -> Option<HealthSnap> {
    let h = svc
        .get("health")
        .and_then(|h| h.get(backend))
        .or_else(|| svc.get(format!("{backend}_health")))
        .or_else(|| svc.get(backend).and_then(|b| b.get("health")))?;
    if h.is_null() {
        return None;
    }
    Some(HealthSnap {
        state: tag_of(h)?,
        last_failure: h
            .get("last_failure")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Extension point: the rollout of a service (`rollout: {...}`, absent or `null` when none).
///
/// The object may carry the state as `state` (a string or a tagged object like the
/// rollout engine's `State`), or nest it as `progress.state`. `step`, `steps` (a number or
/// the list of step weights), `step_weight_bp`, and the hold left as `remaining_hold`,
/// `remaining_hold_ms`, `hold_left` or `remaining` are read where present, at the top or
/// inside the state object; `dry_run` defaults to false.
pub fn rollout_of(svc: &Value) -> Option<RolloutSnap> {
    let r = svc.get("rollout").filter(|r| !r.is_null())?;
    let state_v = r
        .get("state")
        .or_else(|| r.get("progress").and_then(|p| p.get("state")))
        .unwrap_or(r);
    let state = tag_of(state_v)?;
    let find = |key: &str| -> Option<&Value> {
        r.get(key)
            .or_else(|| state_v.get(key))
            .or_else(|| r.get("progress").and_then(|p| p.get(key)))
            .filter(|v| !v.is_null())
    };
    let steps = find("steps").and_then(|s| match s {
        Value::Array(a) => Some(a.len() as u64),
        other => other.as_u64(),
    });
    let remaining = [
        "remaining_hold_ms",
        "remaining_hold",
        "hold_left",
        "remaining",
    ]
    .iter()
    .find_map(|k| find(k).and_then(duration_of));
    Some(RolloutSnap {
        state,
        step: find("step").and_then(Value::as_u64),
        steps,
        step_weight_bp: find("step_weight_bp")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
        remaining,
        dry_run: find("dry_run").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The label of an event's cause: a string cause as is, a tagged or externally tagged
/// object by its tag ("operator", "health", "gate", ...).
pub fn cause_label(event: &Value) -> String {
    event
        .get("cause")
        .and_then(tag_of)
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Extension point: whether an event is a rollback, and its cause. A rollback is an event
/// whose cause is a health failure, a failed gate or an explicit rollback (its label names
/// one of those); weight changes by operators, reloads and restores are not.
pub fn rollback_cause(event: &Value) -> Option<String> {
    let cause = cause_label(event);
    ["rollback", "health", "gate"]
        .iter()
        .any(|k| cause.contains(k))
        .then_some(cause)
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// One service as `GET /v1/status` shows it (also the metrics tests' fixture).
    pub(crate) fn svc() -> Value {
        json!({
            "name": "web", "protocol": "tcp", "port": 80, "local_addresses": [],
            "blue_port": 8080, "green_port": 8081, "weight_bp": 2500, "weight_percent": "25.00",
            "affinity": "connection", "slot": 0,
            "blue": {"new_flows": 3, "active_flows": 2, "packets": 10, "bytes": 1000,
                     "egress_packets": 9, "egress_bytes": 900, "recoveries": 0, "evictions": 0,
                     "refusals": 1, "resets": 0},
            "green": {"new_flows": 1, "active_flows": 1, "packets": 4, "bytes": 400,
                      "egress_packets": 4, "egress_bytes": 400, "recoveries": 0, "evictions": 5,
                      "refusals": 0, "resets": 2}
        })
    }

    #[test]
    fn core_fields_without_optional_parts() {
        let s = Snapshot::from_status(&json!({
            "version": "0.1.0", "flow_table_size": 1024, "services": [svc()]
        }));
        assert_eq!(s.flow_table_size, 1024);
        assert_eq!(s.flow_entries(), 3);
        let w = &s.services[0];
        assert_eq!((w.name.as_str(), w.port, w.weight_bp), ("web", 80, 2500));
        assert_eq!(w.backends[0].port, 8080);
        assert_eq!(w.backends[1].counters.resets, 2);
        assert_eq!(w.backends[0].health, None);
        assert_eq!(w.rollout, None);
    }

    #[test]
    fn health_shapes() {
        let mut v = svc();
        v["health"] = json!({"blue": {"status": "up", "last_failure": null},
                             "green": {"status": "down", "last_failure": "connect: refused"}});
        let s = ServiceSnap::from_value(&v);
        assert_eq!(s.backends[0].health.as_ref().unwrap().state, "up");
        let g = s.backends[1].health.as_ref().unwrap();
        assert_eq!(
            (g.state.as_str(), g.last_failure.as_deref()),
            ("down", Some("connect: refused"))
        );
        let mut v = svc();
        v["green_health"] = json!("NotChecked");
        let s = ServiceSnap::from_value(&v);
        assert!(!s.backends[1].health.as_ref().unwrap().checked());
        assert_eq!(s.backends[0].health, None);
    }

    #[test]
    fn rollout_shapes() {
        let mut v = svc();
        // The rollout engine's tagged `State` plus its status fields.
        v["rollout"] = json!({
            "state": {"state": "running", "step": 2, "step_started": {"secs": 5, "nanos": 0},
                      "hold_left": {"secs": 30, "nanos": 0}},
            "steps": [100, 500, 2500, 5000, 10000],
            "step_weight_bp": 2500,
            "remaining_hold": {"secs": 12, "nanos": 500_000_000},
            "dry_run": true
        });
        let r = ServiceSnap::from_value(&v).rollout.unwrap();
        assert_eq!(r.state, "running");
        assert_eq!(
            (r.step, r.steps, r.step_weight_bp),
            (Some(2), Some(5), Some(2500))
        );
        assert_eq!(r.remaining, Some(Duration::from_millis(12_500)));
        assert!(r.dry_run);
        v["rollout"] = json!({"state": "WaitingApproval", "step": 1, "remaining_hold_ms": 0});
        let r = ServiceSnap::from_value(&v).rollout.unwrap();
        assert_eq!(r.state, "waiting-approval");
        assert_eq!(r.remaining, Some(Duration::ZERO));
        v["rollout"] = Value::Null;
        assert_eq!(ServiceSnap::from_value(&v).rollout, None);
    }

    #[test]
    fn causes() {
        assert_eq!(cause_label(&json!({"cause": "operator"})), "operator");
        assert_eq!(
            cause_label(&json!({"cause": {"Health": {"port": 1, "reason": "x"}}})),
            "health"
        );
        assert_eq!(
            rollback_cause(&json!({"cause": {"kind": "gate", "step": 1}})),
            Some("gate".into())
        );
        assert_eq!(rollback_cause(&json!({"cause": "reload"})), None);
        assert_eq!(cause_label(&json!({})), "unknown");
    }
}
