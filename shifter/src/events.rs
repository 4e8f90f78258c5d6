//! Weight-change events: what changed, when, why and, for an operator, who asked.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How many events are kept (in memory and in the state file).
pub const MAX_EVENTS: usize = 1000;

/// Why a weight changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// An operator through the control API (the event carries the uid).
    Operator,
    /// The service was configured at start-up (weight from the configuration).
    Config,
    /// The weight was restored at start-up from the state file or the pinned maps.
    Restore,
    /// A configuration reload (SIGHUP) added the service or changed its weight.
    Reload,
    /// A configuration reload removed the service.
    Removed,
    /// A rollout moved on (a step passed its hold and gates, or waits for evidence).
    RolloutStep,
    /// Automatic rollback: green's health check reached its fall threshold.
    HealthRollback,
    /// Automatic rollback: a step's kernel-signal gate failed.
    GateRollback,
    /// Green became the new blue (roles swapped, weight 0); the event carries the uid.
    Promote,
    /// An operator's `rollback` (weight 0 now); the event carries the uid.
    ManualRollback,
    /// An operator's rollout command (start, pause, resume, abort, approve, freeze,
    /// blue-green), or the rollout reacting to an outside weight change.
    Rollout,
    /// Automatic rollback: a Prometheus query gate failed its failure limit.
    AnalysisRollback,
    /// Automatic rollback: a confirm webhook said no its failure limit of times in a row.
    HookRollback,
    /// A control request was refused (403): the event names the uid, nothing changed.
    Refused,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Operator => "operator",
            Self::Config => "config",
            Self::Restore => "restore",
            Self::Reload => "reload",
            Self::Removed => "removed",
            Self::RolloutStep => "rollout-step",
            Self::HealthRollback => "health-rollback",
            Self::GateRollback => "gate-rollback",
            Self::Promote => "promote",
            Self::ManualRollback => "manual-rollback",
            Self::Rollout => "rollout",
            Self::Refused => "refused",
            Self::AnalysisRollback => "analysis-rollback",
            Self::HookRollback => "hook-rollback",
        })
    }
}

/// One recorded change. Weights are basis points (0..=10000).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub service: String,
    /// `None` when the service had no weight before (added).
    pub old_weight_bp: Option<u16>,
    /// `None` when the service was removed.
    pub new_weight_bp: Option<u16>,
    pub cause: Cause,
    /// The peer's uid for operator changes.
    pub uid: Option<u32>,
    /// Rollout events: the transition and its cause in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The weights are the would-be weights of a dry run (the real weight did not change).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// How long the map update took, nanoseconds (rollout weight changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_update_ns: Option<u64>,
    /// From the deciding health check's result to the map update returning, nanoseconds
    /// (automatic health rollbacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_decision_ns: Option<u64>,
    /// The fleet rollout this host's rollout belongs to (its agent started it), so a host's
    /// log says which fleet rollout moved its weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_rollout: Option<String>,
}

impl Event {
    /// A weight change without detail; `seq` and `time_ms` are set by `EventLog::push`.
    pub fn new(
        service: &str,
        old_weight_bp: Option<u16>,
        new_weight_bp: Option<u16>,
        cause: Cause,
        uid: Option<u32>,
    ) -> Self {
        Self {
            seq: 0,
            time_ms: 0,
            service: service.to_owned(),
            old_weight_bp,
            new_weight_bp,
            cause,
            uid,
            detail: None,
            dry_run: false,
            map_update_ns: None,
            since_decision_ns: None,
            fleet_rollout: None,
        }
    }
}

/// The bounded event log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLog {
    pub next_seq: u64,
    pub events: VecDeque<Event>,
}

impl EventLog {
    /// Appends an event (numbering and timestamping it) and drops the oldest beyond
    /// `MAX_EVENTS`. Returns the stored event.
    pub fn record(
        &mut self,
        service: &str,
        old_weight_bp: Option<u16>,
        new_weight_bp: Option<u16>,
        cause: Cause,
        uid: Option<u32>,
    ) -> Event {
        self.push(Event::new(
            service,
            old_weight_bp,
            new_weight_bp,
            cause,
            uid,
        ))
    }

    /// Appends `ev`, numbering and timestamping it, and drops the oldest beyond
    /// `MAX_EVENTS`. Returns the stored event.
    pub fn push(&mut self, mut ev: Event) -> Event {
        ev.seq = self.next_seq;
        ev.time_ms = crate::util::now_unix_ms();
        self.next_seq += 1;
        self.events.push_back(ev.clone());
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
        ev
    }

    /// Events with `seq >= since`.
    pub fn since(&self, since: u64) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| e.seq >= since)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_bounded_and_numbered() {
        let mut log = EventLog::default();
        for i in 0..(MAX_EVENTS + 5) {
            log.record(
                "web",
                Some(0),
                Some((i % 100) as u16),
                Cause::Operator,
                Some(0),
            );
        }
        assert_eq!(log.events.len(), MAX_EVENTS);
        assert_eq!(log.events.front().unwrap().seq, 5);
        assert_eq!(log.events.back().unwrap().seq, (MAX_EVENTS + 4) as u64);
        assert_eq!(log.since((MAX_EVENTS + 3) as u64).len(), 2);
    }
}
