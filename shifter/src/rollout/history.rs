//! Rollout history: every rollout's start, its steps, its gate results, its end and the
//! cause, built from the engine's events. Pure: the caller gives the wall-clock time and
//! stores the [`History`] (the daemon keeps it in `<state_dir>/history.json`).
//!
//! A record opens on an operator's `start` or `blue-green` that enters `running`, and every
//! later event of the service whose `from` state belongs to a rollout (running, paused,
//! waiting for approval, frozen, completed) is appended to it. Its outcome follows the last
//! such event: completed, promoted, rolled back, aborted or frozen. Bounded: the last
//! [`MAX_ROLLOUTS`] rollouts per service, each with at most [`MAX_ENTRIES`] entries (the
//! oldest entries after the first are dropped and counted).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::types::{Cause, Rollout, RolloutEvent, RolloutKind, StateName};

/// Rollouts kept per service.
pub const MAX_ROLLOUTS: usize = 20;
/// Entries kept per rollout (a step that waits for evidence adds one per new reason).
pub const MAX_ENTRIES: usize = 200;
/// Version of the persisted history.
pub const HISTORY_VERSION: u32 = 1;

/// How a rollout ended (so far).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Still under way (running, paused or waiting for approval).
    InProgress,
    /// The last step held and passed its gates.
    Completed,
    /// Completed, then green became the new blue.
    Promoted,
    /// A failed health check or gate, or an operator's `rollback`, put the weight to 0.
    RolledBack,
    /// An operator's `rollout abort`.
    Aborted,
    /// Stopped where it was (`rollout freeze`, or a weight set outside the rollout).
    Frozen,
}

impl Outcome {
    /// Whether the rollout has ended (an in-progress one has not; a frozen one has stopped).
    pub fn ended(self) -> bool {
        self != Self::InProgress
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InProgress => "in progress",
            Self::Completed => "completed",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled back",
            Self::Aborted => "aborted",
            Self::Frozen => "frozen",
        })
    }
}

/// What kind of entry: the start, a step that moved on, a gate result, the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    Start,
    /// A step held and passed its gates (the detail is the gate's result).
    StepPassed,
    /// A step's gate had no verdict yet (the step kept holding).
    GateWaiting,
    /// A step's kernel-signal gate failed.
    GateFailed,
    /// Green failed its health check.
    HealthFailed,
    /// An operator's command (pause, resume, approve, freeze, abort, rollback, promote).
    Operator,
    /// The weight was set outside the rollout.
    OutsideWeightChange,
    /// The daemon restarted and resumed the rollout.
    Restart,
    /// A Prometheus query gate failed its failure limit (rolled back).
    AnalysisFailed,
    /// A query gate was inconclusive its limit of times in a row (paused).
    AnalysisInconclusive,
    /// The query gate that paused the rollout succeeded again (resumed).
    AnalysisResumed,
    /// A confirm webhook said go.
    HookConfirmed,
    /// A confirm webhook said no (the rollout held).
    HookRefused,
    /// A confirm webhook said no its limit of times in a row (rolled back).
    HookGaveUp,
    /// A gradual rollback moved to its next step.
    RollbackStep,
}

/// One transition of a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub kind: EntryKind,
    pub from: StateName,
    pub to: StateName,
    /// The step concerned, counted from 1 (gate results, passed steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    pub weight_before_bp: u16,
    pub weight_after_bp: u16,
    /// The peer's uid (operator commands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The cause in words, e.g. `step 2 passed: refusals 0/120 ...`.
    pub detail: String,
}

/// One rollout, from its start to its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// Numbered per daemon state directory, never reused.
    pub id: u64,
    pub service: String,
    pub kind: RolloutKind,
    pub dry_run: bool,
    /// The planned step weights, basis points.
    pub steps_bp: Vec<u16>,
    pub started_ms: u64,
    /// Who started it.
    pub started_by_uid: Option<u32>,
    pub outcome: Outcome,
    /// When it ended (completed, rolled back, aborted, frozen; a promote moves it).
    pub ended_ms: Option<u64>,
    /// Why it ended, in words.
    pub end_cause: Option<String>,
    pub entries: Vec<Entry>,
    /// Entries dropped beyond [`MAX_ENTRIES`] (the oldest after the start).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_entries: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RolloutRecord {
    /// The last gate result of the step under way or last judged: (step from 1, kind, detail).
    pub fn last_gate(&self) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| {
            matches!(
                e.kind,
                EntryKind::StepPassed
                    | EntryKind::GateWaiting
                    | EntryKind::GateFailed
                    | EntryKind::HealthFailed
                    | EntryKind::AnalysisFailed
                    | EntryKind::AnalysisInconclusive
                    | EntryKind::AnalysisResumed
            )
        })
    }
}

/// The history of every service, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub version: u32,
    pub next_id: u64,
    /// Oldest first.
    pub services: BTreeMap<String, VecDeque<RolloutRecord>>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            version: HISTORY_VERSION,
            next_id: 1,
            services: BTreeMap::new(),
        }
    }
}

/// States in which a rollout exists: an event leaving one of them belongs to it.
fn belongs(from: StateName) -> bool {
    matches!(
        from,
        StateName::Running
            | StateName::Paused
            | StateName::WaitingApproval
            | StateName::Frozen
            | StateName::Confirming
            | StateName::RollingBack
            | StateName::Completed
    )
}

fn entry(ev: &RolloutEvent, time_ms: u64) -> Entry {
    let (kind, step, uid) = match &ev.cause {
        Cause::Operator { command, uid } => (
            if command == "start" || command == "blue-green" {
                EntryKind::Start
            } else {
                EntryKind::Operator
            },
            None,
            *uid,
        ),
        Cause::StepPassed { step, .. } => (EntryKind::StepPassed, Some(step + 1), None),
        Cause::GateWaiting { step, .. } => (EntryKind::GateWaiting, Some(step + 1), None),
        Cause::Gate { step, .. } => (EntryKind::GateFailed, Some(step + 1), None),
        Cause::Health { .. } => (EntryKind::HealthFailed, None, None),
        Cause::Restart => (EntryKind::Restart, None, None),
        Cause::OutsideWeightChange { .. } => (EntryKind::OutsideWeightChange, None, None),
        Cause::Analysis { .. } => (EntryKind::AnalysisFailed, None, None),
        Cause::AnalysisInconclusive { .. } => (EntryKind::AnalysisInconclusive, None, None),
        Cause::AnalysisResumed { .. } => (EntryKind::AnalysisResumed, None, None),
        Cause::HookConfirmed { .. } => (EntryKind::HookConfirmed, None, None),
        Cause::HookRefused { .. } => (EntryKind::HookRefused, None, None),
        Cause::HookGaveUp { .. } => (EntryKind::HookGaveUp, None, None),
        Cause::RollbackStep { .. } => (EntryKind::RollbackStep, None, None),
    };
    Entry {
        time_ms,
        kind,
        from: ev.from,
        to: ev.to,
        step,
        weight_before_bp: ev.weight_before_bp,
        weight_after_bp: ev.weight_after_bp,
        uid,
        detail: ev.cause.to_string(),
    }
}

/// The outcome after an event that entered `to` because of `cause`.
fn outcome_of(to: StateName, cause: &Cause) -> Outcome {
    match to {
        StateName::Completed => Outcome::Completed,
        StateName::Idle => Outcome::Promoted,
        StateName::Frozen => Outcome::Frozen,
        StateName::RolledBack => match cause {
            Cause::Operator { command, .. } if command == "abort" => Outcome::Aborted,
            Cause::RollbackStep { of, .. } if matches!(&**of, Cause::Operator { command, .. } if command == "abort") => {
                Outcome::Aborted
            }
            _ => Outcome::RolledBack,
        },
        StateName::Running
        | StateName::Paused
        | StateName::WaitingApproval
        | StateName::Confirming
        | StateName::RollingBack => Outcome::InProgress,
    }
}

impl History {
    /// Takes the events of one batch of `service`'s engine; `plan` is the engine's rollout
    /// after the batch. Returns whether anything was recorded.
    pub fn observe(
        &mut self,
        service: &str,
        events: &[RolloutEvent],
        plan: Option<&Rollout>,
        time_ms: u64,
    ) -> bool {
        let mut changed = false;
        for ev in events {
            let starts = matches!(&ev.cause, Cause::Operator { command, .. }
                if command == "start" || command == "blue-green")
                // A confirm-rollout hook holds the start in Confirming.
                && matches!(ev.to, StateName::Running | StateName::Confirming);
            if starts {
                let uid = match &ev.cause {
                    Cause::Operator { uid, .. } => *uid,
                    _ => None,
                };
                let record = RolloutRecord {
                    id: self.next_id,
                    service: service.to_owned(),
                    kind: plan.map_or(RolloutKind::Canary, |p| p.kind),
                    dry_run: ev.dry_run,
                    steps_bp: plan
                        .map_or_else(Vec::new, |p| p.steps.iter().map(|s| s.weight_bp).collect()),
                    started_ms: time_ms,
                    started_by_uid: uid,
                    outcome: Outcome::InProgress,
                    ended_ms: None,
                    end_cause: None,
                    entries: vec![entry(ev, time_ms)],
                    dropped_entries: 0,
                };
                self.next_id += 1;
                let list = self.services.entry(service.to_owned()).or_default();
                // A start while another rollout was still open ends that one (the engine
                // allows `start` from frozen and completed).
                if let Some(prev) = list.back_mut()
                    && prev.ended_ms.is_none()
                {
                    prev.ended_ms = Some(time_ms);
                    prev.end_cause = Some(format!("replaced by rollout {}", record.id));
                }
                list.push_back(record);
                while list.len() > MAX_ROLLOUTS {
                    list.pop_front();
                }
                changed = true;
                continue;
            }
            if !belongs(ev.from) {
                continue;
            }
            let Some(record) = self.services.get_mut(service).and_then(|l| l.back_mut()) else {
                continue;
            };
            // Events after a promote or an end in `rolled back` belong to no rollout; the
            // `from` check above already drops them.
            record.entries.push(entry(ev, time_ms));
            if record.entries.len() > MAX_ENTRIES {
                record.entries.remove(1);
                record.dropped_entries += 1;
            }
            if ev.from != ev.to {
                record.outcome = outcome_of(ev.to, &ev.cause);
                if record.outcome.ended() {
                    record.ended_ms = Some(time_ms);
                    record.end_cause = Some(ev.cause.to_string());
                } else {
                    record.ended_ms = None;
                    record.end_cause = None;
                }
            }
            changed = true;
        }
        changed
    }

    /// The rollouts of `service`, oldest first.
    pub fn of(&self, service: &str) -> Vec<RolloutRecord> {
        self.services
            .get(service)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Step;

    fn ev(from: StateName, to: StateName, cause: Cause, before: u16, after: u16) -> RolloutEvent {
        RolloutEvent {
            seq: 0,
            at: Duration::ZERO,
            service: "web".into(),
            from,
            to,
            cause,
            weight_before_bp: before,
            weight_after_bp: after,
            dry_run: false,
            actuation: None,
        }
    }

    fn op(command: &str) -> Cause {
        Cause::Operator {
            command: command.into(),
            uid: Some(1000),
        }
    }

    fn plan() -> Rollout {
        Rollout {
            kind: RolloutKind::Canary,
            steps: [1000, 10_000]
                .map(|weight_bp| Step {
                    weight_bp,
                    hold: Duration::from_secs(1),
                    approve: false,
                })
                .to_vec(),
            dry_run: false,
            would_weight_bp: 0,
            baseline: None,
        }
    }

    fn start(h: &mut History, t: u64) {
        let e = ev(StateName::Idle, StateName::Running, op("start"), 0, 1000);
        assert!(h.observe("web", &[e], Some(&plan()), t));
    }

    #[test]
    fn a_completed_then_promoted_rollout_has_its_steps_gates_and_end() {
        let mut h = History::default();
        start(&mut h, 10);
        let passed = Cause::StepPassed {
            step: 0,
            detail: "refusals 0/12".into(),
        };
        let waiting = Cause::GateWaiting {
            step: 1,
            reason: "3 of 10 green flows".into(),
        };
        let last = Cause::StepPassed {
            step: 1,
            detail: "refusals 0/40".into(),
        };
        h.observe(
            "web",
            &[
                ev(StateName::Running, StateName::Running, passed, 1000, 10_000),
                ev(
                    StateName::Running,
                    StateName::Running,
                    waiting,
                    10_000,
                    10_000,
                ),
            ],
            Some(&plan()),
            20,
        );
        let r = &h.of("web")[0];
        assert_eq!(r.outcome, Outcome::InProgress);
        assert_eq!(r.last_gate().map(|e| e.kind), Some(EntryKind::GateWaiting));
        assert_eq!(r.last_gate().and_then(|e| e.step), Some(2));
        h.observe(
            "web",
            &[ev(
                StateName::Running,
                StateName::Completed,
                last,
                10_000,
                10_000,
            )],
            Some(&plan()),
            30,
        );
        let r = &h.of("web")[0];
        assert_eq!(
            (r.id, r.outcome, r.ended_ms, r.started_by_uid),
            (1, Outcome::Completed, Some(30), Some(1000))
        );
        assert_eq!(r.steps_bp, [1000, 10_000]);
        assert_eq!(r.entries.len(), 4);
        assert_eq!(r.entries[0].kind, EntryKind::Start);
        assert!(r.end_cause.as_deref().unwrap().contains("step 2 passed"));
        h.observe(
            "web",
            &[ev(
                StateName::Completed,
                StateName::Idle,
                op("promote"),
                10_000,
                0,
            )],
            None,
            40,
        );
        let r = &h.of("web")[0];
        assert_eq!((r.outcome, r.ended_ms), (Outcome::Promoted, Some(40)));
        assert_eq!(r.entries.last().unwrap().uid, Some(1000));
    }

    #[test]
    fn rollback_abort_and_events_outside_a_rollout() {
        let mut h = History::default();
        // A rollback of a weight set by hand is no rollout.
        assert!(!h.observe(
            "web",
            &[ev(
                StateName::Idle,
                StateName::RolledBack,
                op("rollback"),
                5000,
                0
            )],
            None,
            1,
        ));
        assert!(h.of("web").is_empty());
        start(&mut h, 2);
        let health = Cause::Health {
            port: 8082,
            reason: "connection refused".into(),
        };
        h.observe(
            "web",
            &[ev(
                StateName::Running,
                StateName::RolledBack,
                health,
                1000,
                0,
            )],
            None,
            3,
        );
        start(&mut h, 4);
        h.observe(
            "web",
            &[ev(
                StateName::Paused,
                StateName::RolledBack,
                op("abort"),
                1000,
                0,
            )],
            None,
            5,
        );
        // An event after the end (from rolled back) belongs to no rollout.
        assert!(!h.observe(
            "web",
            &[ev(
                StateName::RolledBack,
                StateName::RolledBack,
                Cause::Restart,
                0,
                0
            )],
            None,
            6,
        ));
        let all = h.of("web");
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].id, all[0].outcome), (1, Outcome::RolledBack));
        assert_eq!(
            all[0].last_gate().map(|e| e.kind),
            Some(EntryKind::HealthFailed)
        );
        assert!(all[0].end_cause.as_deref().unwrap().contains("health"));
        assert_eq!((all[1].id, all[1].outcome), (2, Outcome::Aborted));
        assert_eq!(all[1].ended_ms, Some(5));
    }

    #[test]
    fn a_start_over_a_frozen_rollout_ends_it_and_history_is_bounded() {
        let mut h = History::default();
        start(&mut h, 1);
        h.observe(
            "web",
            &[ev(
                StateName::Running,
                StateName::Frozen,
                Cause::OutsideWeightChange { weight_bp: 500 },
                1000,
                500,
            )],
            None,
            2,
        );
        assert_eq!(h.of("web")[0].outcome, Outcome::Frozen);
        // Frozen keeps its rollback armed: a later rollback still belongs to it.
        h.observe(
            "web",
            &[ev(
                StateName::Frozen,
                StateName::RolledBack,
                Cause::Gate {
                    step: 0,
                    reason: "refusals 9%".into(),
                },
                500,
                0,
            )],
            None,
            3,
        );
        assert_eq!(h.of("web")[0].outcome, Outcome::RolledBack);
        for t in 0..(MAX_ROLLOUTS as u64 + 3) {
            start(&mut h, 10 + t);
        }
        let all = h.of("web");
        assert_eq!(all.len(), MAX_ROLLOUTS);
        assert_eq!(all.last().unwrap().id, MAX_ROLLOUTS as u64 + 4);
        // Each start closed the open rollout before it.
        assert!(
            all[..all.len() - 1].iter().all(|r| r
                .end_cause
                .as_deref()
                .unwrap()
                .starts_with("replaced by"))
        );
        // Entries are bounded, the start is kept.
        let waiting = |i: usize| {
            ev(
                StateName::Running,
                StateName::Running,
                Cause::GateWaiting {
                    step: 0,
                    reason: format!("reason {i}"),
                },
                1000,
                1000,
            )
        };
        let many: Vec<_> = (0..MAX_ENTRIES + 10).map(waiting).collect();
        h.observe("web", &many, None, 99);
        let last = h.of("web").pop().unwrap();
        assert_eq!(last.entries.len(), MAX_ENTRIES);
        assert_eq!(last.entries[0].kind, EntryKind::Start);
        assert_eq!(last.dropped_entries, 11);
        assert_eq!(
            last.entries.last().unwrap().detail,
            format!("step 1 gate has no verdict yet: reason {}", MAX_ENTRIES + 9)
        );
    }
}
