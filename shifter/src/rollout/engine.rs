//! The rollout engine: a pure state machine for one service. It is fed inputs (clock ticks,
//! health verdicts, counter samples, operator commands, outside weight changes) with the
//! current time, and answers with effects for the caller to carry out, in order: at most one
//! weight change or role swap first (so a rollback is one config-word write and nothing runs
//! before it), then the event describing the transition, then the progress to persist.
//!
//! Time is a [`Duration`] on a monotonic clock of the caller's choosing (the driver uses
//! tokio's clock since its start), so the engine does no I/O and tests need no real time.
//!
//! Rules worth knowing:
//! - A ramp never lowers green's weight: `start` skips steps at or below the current weight.
//! - Automatic rollback (green's health goes Down, or a step's gate fails) sets the weight to 0
//!   in one effect, while a rollout is running, paused, waiting for approval, frozen or
//!   completed-but-not-promoted. After a rollback nothing restarts by itself: a green that
//!   comes back up, or flaps, leaves the weight at 0 until an operator starts again.
//! - `freeze` stops the ramp where it is without rolling back; the safety net stays armed
//!   (green still gets traffic). A frozen rollout does not resume: `start` begins a new ramp
//!   from the current weight.
//! - Dry run: the engine follows the ramp with a would-be weight and emits weight effects
//!   flagged `dry_run`; the real weight is left alone (the data plane steers by it).
//! - An invalid command returns a [`CommandError`] and changes nothing.
//!
//! - Prometheus analyses (`Input::Analysis`): failures in a row up to an analysis's limit roll
//!   back like a failed gate; inconclusive results in a row pause a running step, and the
//!   next success of that analysis resumes it.
//!
//! - Confirm webhooks (`confirm-rollout`, `confirm-step`, `confirm-promotion`): the engine
//!   holds in `Confirming` before the step (or the swap) with the weight unchanged, emits
//!   `Effect::Confirm`, and takes the answer as `Input::Hook`: a yes enters the step, a no
//!   asks again, `failure_limit` no's in a row roll back (a soft failure). Health, gates and
//!   analyses stay armed meanwhile.
//! - Soft failures (an abort, a hook's limit, the inconclusive limit under a gradual policy)
//!   roll back by `settings.rollback`: at once, or through `RollingBack` steps; hard ones
//!   (health, gate, analysis failure, `rollback`) always at once.
//!
//! About 1200 lines on purpose: the transitions of the one state machine stay together (its
//! vocabulary is in `types.rs`, its scenario tests in `tests.rs`, `analysis_tests.rs`,
//! `hook_tests.rs` and `rollback_tests.rs`).
//!
//! Over 700 lines on purpose: one state machine, every state's answer to every input in one place,
//! so a transition can be checked against all the others.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shifter_common::WEIGHT_MAX;

use super::gate::{GateResult, SignalSample, evaluate};
pub use super::types::*;
use crate::{
    config::{HookKind, RollbackPolicy, RolloutSettings, Step, check_steps},
    health::{HealthStatus, HealthVerdict},
};

/// The rollout engine of one service.
#[derive(Clone, Debug)]
pub struct Engine {
    service: String,
    settings: RolloutSettings,
    state: State,
    rollout: Option<Rollout>,
    weight_bp: u16,
    blue: BackendHealth,
    green: BackendHealth,
    last_sample: Option<SignalSample>,
    /// Reason of the last "gate has no verdict" event, so it is recorded once.
    gate_wait: Option<String>,
    next_seq: u64,
    /// Each analysis's standing, by name (counts only while a rollout can move).
    analysis: std::collections::BTreeMap<String, AnalysisStatus>,
    /// The analysis whose inconclusive results paused the rollout (a success resumes it).
    analysis_pause: Option<String>,
}

/// A read-only view for `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub progress: Progress,
    pub blue: BackendHealth,
    pub green: BackendHealth,
    /// Why the current step's gate has no verdict yet.
    pub gate_waiting: Option<String>,
    /// Weight of the current step and its remaining hold, if running or paused.
    pub step_weight_bp: Option<u16>,
    pub remaining_hold: Option<Duration>,
    /// The Prometheus analyses, in configuration order.
    pub analysis: Vec<AnalysisStatus>,
}

impl Engine {
    /// A new engine for a service whose green currently has `weight_bp`.
    /// `health_checked`: whether health checks run for this service (if not, health
    /// counts as passing).
    pub fn new(
        service: impl Into<String>,
        settings: RolloutSettings,
        blue_port: u16,
        green_port: u16,
        weight_bp: u16,
        health_checked: bool,
    ) -> Self {
        let initial = if health_checked {
            HealthStatus::Unknown
        } else {
            HealthStatus::NotChecked
        };
        Self {
            service: service.into(),
            settings,
            state: State::Idle,
            rollout: None,
            weight_bp,
            blue: BackendHealth {
                port: blue_port,
                status: initial,
                last_failure: None,
            },
            green: BackendHealth {
                port: green_port,
                status: initial,
                last_failure: None,
            },
            last_sample: None,
            gate_wait: None,
            next_seq: 0,
            analysis: std::collections::BTreeMap::new(),
            analysis_pause: None,
        }
    }

    /// Rebuilds an engine from persisted progress at time `now`. The hold of a running step
    /// continues with its persisted remaining time. Emits an event and no weight effect.
    /// Health starts Unknown (or NotChecked) again. If the data plane's weight differs from
    /// `progress.weight_bp`, feed [`Input::WeightChanged`] right after.
    pub fn resume_from(
        progress: Progress,
        settings: RolloutSettings,
        health_checked: bool,
        now: Now,
    ) -> (Self, Vec<Effect>) {
        let mut e = Self::new(
            progress.service,
            settings,
            progress.blue_port,
            progress.green_port,
            progress.weight_bp,
            health_checked,
        );
        e.next_seq = progress.next_seq;
        e.rollout = progress.rollout;
        e.analysis_pause = progress.analysis_pause;
        e.state = match progress.phase {
            Phase::Idle => State::Idle,
            Phase::Running { step, remaining } => State::Running {
                step,
                step_started: now,
                hold_left: remaining,
            },
            Phase::Paused { step, remaining } => State::Paused { step, remaining },
            Phase::WaitingApproval { step } => State::WaitingApproval { step },
            Phase::Frozen { step } => State::Frozen { step },
            Phase::Confirming {
                step,
                hook,
                failures,
            } => State::Confirming {
                step,
                hook,
                failures,
            },
            Phase::RollingBack {
                steps,
                index,
                remaining,
                cause,
            } => State::RollingBack {
                steps,
                index,
                step_started: now,
                hold_left: remaining,
                cause,
            },
            Phase::RolledBack { cause } => State::RolledBack { cause },
            Phase::Completed => State::Completed,
        };
        // A progress whose step index does not fit its rollout is not trusted to move the
        // weight: freeze it where it is.
        let steps = e.rollout.as_ref().map_or(0, |r| r.steps.len());
        let step_ok = match e.state {
            State::Running { step, .. }
            | State::Paused { step, .. }
            | State::WaitingApproval { step }
            | State::Frozen { step }
            | State::Confirming { step, .. } => step < steps,
            _ => true,
        };
        if !step_ok {
            e.state = State::Frozen {
                step: steps.saturating_sub(1),
            };
        }
        let mut fx = Vec::new();
        let name = e.state.name();
        let w = e.controlled_weight();
        e.record(&mut fx, now, name, Cause::Restart, w);
        e.persist(&mut fx, now);
        // A confirm hook that was being asked is asked again (its count of "no"s kept).
        if let State::Confirming {
            step,
            hook,
            failures,
        } = e.state
        {
            e.confirm_effect(&mut fx, step, hook, failures);
        }
        (e, fx)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn settings(&self) -> &RolloutSettings {
        &self.settings
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The real weight of green as the engine knows it.
    pub fn weight_bp(&self) -> u16 {
        self.weight_bp
    }

    pub fn rollout(&self) -> Option<&Rollout> {
        self.rollout.as_ref()
    }

    pub fn ports(&self) -> (u16, u16) {
        (self.blue.port, self.green.port)
    }

    /// Replaces the settings (configuration reload); the rollout under way keeps its steps.
    pub fn set_settings(&mut self, settings: RolloutSettings) {
        self.settings = settings;
    }

    fn dry_run(&self) -> bool {
        self.rollout.as_ref().is_some_and(|r| r.dry_run)
    }

    /// The weight the rollout steers: the would-be weight of a dry run, else the real one.
    pub fn controlled_weight(&self) -> u16 {
        match &self.rollout {
            Some(r) if r.dry_run => r.would_weight_bp,
            _ => self.weight_bp,
        }
    }

    fn step(&self, i: usize) -> Option<Step> {
        self.rollout.as_ref().and_then(|r| r.steps.get(i).copied())
    }

    /// When the engine next needs a tick (end of the current hold), if running.
    pub fn next_deadline(&self) -> Option<Now> {
        match self.state {
            State::Running {
                step_started,
                hold_left,
                ..
            }
            | State::RollingBack {
                step_started,
                hold_left,
                ..
            } => Some(step_started + hold_left),
            _ => None,
        }
    }

    /// Snapshot to persist. Running state is stored with its remaining hold at `now`.
    pub fn progress(&self, now: Now) -> Progress {
        let phase = match &self.state {
            State::Idle => Phase::Idle,
            State::Running {
                step,
                step_started,
                hold_left,
            } => Phase::Running {
                step: *step,
                remaining: hold_left.saturating_sub(now.saturating_sub(*step_started)),
            },
            State::Paused { step, remaining } => Phase::Paused {
                step: *step,
                remaining: *remaining,
            },
            State::WaitingApproval { step } => Phase::WaitingApproval { step: *step },
            State::Frozen { step } => Phase::Frozen { step: *step },
            State::Confirming {
                step,
                hook,
                failures,
            } => Phase::Confirming {
                step: *step,
                hook: *hook,
                failures: *failures,
            },
            State::RollingBack {
                steps,
                index,
                step_started,
                hold_left,
                cause,
            } => Phase::RollingBack {
                steps: steps.clone(),
                index: *index,
                remaining: hold_left.saturating_sub(now.saturating_sub(*step_started)),
                cause: cause.clone(),
            },
            State::RolledBack { cause } => Phase::RolledBack {
                cause: cause.clone(),
            },
            State::Completed => Phase::Completed,
        };
        Progress {
            service: self.service.clone(),
            blue_port: self.blue.port,
            green_port: self.green.port,
            weight_bp: self.weight_bp,
            phase,
            rollout: self.rollout.clone(),
            next_seq: self.next_seq,
            analysis_pause: self.analysis_pause.clone(),
        }
    }

    pub fn status(&self, now: Now) -> Status {
        let progress = self.progress(now);
        let (step_weight_bp, remaining_hold) = match &progress.phase {
            Phase::Running { step, remaining } | Phase::Paused { step, remaining } => {
                (self.step(*step).map(|s| s.weight_bp), Some(*remaining))
            }
            Phase::WaitingApproval { step }
            | Phase::Frozen { step }
            | Phase::Confirming { step, .. } => (self.step(*step).map(|s| s.weight_bp), None),
            Phase::RollingBack {
                steps,
                index,
                remaining,
                ..
            } => (steps.get(*index).copied(), Some(*remaining)),
            _ => (None, None),
        };
        Status {
            progress,
            blue: self.blue.clone(),
            green: self.green.clone(),
            gate_waiting: self.gate_wait.clone(),
            step_weight_bp,
            remaining_hold,
            analysis: self
                .settings
                .analysis
                .iter()
                .map(|a| {
                    self.analysis
                        .get(&a.name)
                        .cloned()
                        .unwrap_or(AnalysisStatus {
                            name: a.name.clone(),
                            ..AnalysisStatus::default()
                        })
                })
                .collect(),
        }
    }

    /// Feeds one input at `now`. Only commands can fail; a failed command changes nothing.
    pub fn handle(&mut self, now: Now, input: Input) -> Result<Vec<Effect>, CommandError> {
        match input {
            Input::Tick => Ok(self.tick(now)),
            Input::Analysis(r) => Ok(self.analysis_result(now, r)),
            Input::Health(v) => Ok(self.health(now, &v)),
            Input::Signals(s) => Ok(self.signals(now, s)),
            Input::Command { command, uid } => self.command(now, command, uid),
            Input::WeightChanged { bp } => Ok(self.weight_changed(now, bp)),
            Input::Hook(a) => Ok(self.hook_answer(now, a)),
        }
    }

    fn record(
        &mut self,
        fx: &mut Vec<Effect>,
        now: Now,
        from: StateName,
        cause: Cause,
        before: u16,
    ) {
        let ev = RolloutEvent {
            seq: self.next_seq,
            at: now,
            service: self.service.clone(),
            from,
            to: self.state.name(),
            cause,
            weight_before_bp: before,
            weight_after_bp: self.controlled_weight(),
            dry_run: self.dry_run(),
            actuation: None,
        };
        self.next_seq += 1;
        fx.push(Effect::Record(ev));
    }

    fn persist(&self, fx: &mut Vec<Effect>, now: Now) {
        fx.push(Effect::Persist(Box::new(self.progress(now))));
    }

    /// Sets the controlled weight (real or would-be) and emits the effect.
    fn weight_effect(&mut self, fx: &mut Vec<Effect>, bp: u16, cause: &Cause) {
        let dry_run = self.dry_run();
        match &mut self.rollout {
            Some(r) if r.dry_run => r.would_weight_bp = bp,
            _ => self.weight_bp = bp,
        }
        fx.push(Effect::SetWeight {
            bp,
            cause: cause.clone(),
            dry_run,
        });
    }

    /// Weight to 0, state RolledBack, event: the automatic and the operator path.
    fn roll_back(&mut self, now: Now, cause: Cause) -> Vec<Effect> {
        let mut fx = Vec::new();
        let from = self.state.name();
        let before = self.controlled_weight();
        self.weight_effect(&mut fx, 0, &cause);
        self.state = State::RolledBack {
            cause: cause.clone(),
        };
        self.gate_wait = None;
        self.analysis_pause = None;
        self.record(&mut fx, now, from, cause, before);
        self.persist(&mut fx, now);
        fx
    }

    /// Automatic rollback is armed while green carries (would-be) traffic for a rollout.
    /// Whether Prometheus analyses count now: during a rollout, and while green keeps a
    /// share under its gates (after completion until promote). Otherwise nothing needs them
    /// and the daemon does not query.
    pub fn analysis_counts(&self) -> bool {
        self.armed() || self.state.in_progress()
    }

    fn armed(&self) -> bool {
        self.controlled_weight() > 0
            && matches!(
                self.state,
                State::Running { .. }
                    | State::Paused { .. }
                    | State::WaitingApproval { .. }
                    | State::Frozen { .. }
                    | State::Confirming { .. }
                    | State::RollingBack { .. }
                    | State::Completed
            )
    }

    /// A soft failure (an operator's abort, a confirm hook's limit, an analysis's
    /// inconclusive limit under a gradual policy): rolls back by the service's policy,
    /// through the policy's steps below the current weight, or at once.
    fn soft_roll_back(&mut self, now: Now, cause: Cause) -> Vec<Effect> {
        let RollbackPolicy::Gradual { steps_bp, hold } = &self.settings.rollback else {
            return self.roll_back(now, cause);
        };
        let hold = *hold;
        let current = self.controlled_weight();
        let steps: Vec<u16> = steps_bp.iter().copied().filter(|&w| w < current).collect();
        let Some(&first) = steps.first() else {
            return self.roll_back(now, cause);
        };
        if first == 0 {
            return self.roll_back(now, cause);
        }
        let mut fx = Vec::new();
        let from = self.state.name();
        self.weight_effect(&mut fx, first, &cause);
        self.state = State::RollingBack {
            steps,
            index: 0,
            step_started: now,
            hold_left: hold,
            cause: cause.clone(),
        };
        self.gate_wait = None;
        self.analysis_pause = None;
        self.record(&mut fx, now, from, cause, current);
        self.persist(&mut fx, now);
        fx
    }

    /// The end of a gradual rollback step's hold: the next step, the last (0) ending it.
    fn rollback_tick(&mut self, now: Now) -> Vec<Effect> {
        let State::RollingBack {
            steps,
            index,
            step_started,
            hold_left,
            cause,
        } = &self.state
        else {
            return Vec::new();
        };
        if now < *step_started + *hold_left {
            return Vec::new();
        }
        let (index, cause) = (index + 1, cause.clone());
        let next = steps.get(index).copied().unwrap_or(0);
        let steps = steps.clone();
        let step_cause = Cause::RollbackStep {
            weight_bp: next,
            of: Box::new(cause.clone()),
        };
        let mut fx = Vec::new();
        let before = self.controlled_weight();
        self.weight_effect(&mut fx, next, &step_cause);
        self.state = if next == 0 {
            State::RolledBack { cause }
        } else {
            State::RollingBack {
                steps,
                index,
                step_started: now,
                hold_left: self.rollback_hold(),
                cause,
            }
        };
        self.record(&mut fx, now, StateName::RollingBack, step_cause, before);
        self.persist(&mut fx, now);
        fx
    }

    fn rollback_hold(&self) -> Duration {
        match &self.settings.rollback {
            RollbackPolicy::Gradual { hold, .. } => *hold,
            RollbackPolicy::Immediate => Duration::ZERO,
        }
    }

    /// Asks the confirm hook `hook` about entering `step` (the swap, for confirm-promotion).
    fn confirm_effect(&self, fx: &mut Vec<Effect>, step: usize, hook: HookKind, failures: u32) {
        let before = self.controlled_weight();
        let after = if hook == HookKind::ConfirmPromotion {
            0
        } else {
            self.step(step).map_or(before, |s| s.weight_bp)
        };
        fx.push(Effect::Confirm(HookCall {
            hook,
            step,
            weight_before_bp: before,
            weight_after_bp: after,
            failures,
        }));
    }

    /// Holds before `step` (or the swap) until the confirm hook `hook` says go.
    fn confirm(
        &mut self,
        now: Now,
        step: usize,
        hook: HookKind,
        from: StateName,
        cause: Cause,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        let w = self.controlled_weight();
        self.state = State::Confirming {
            step,
            hook,
            failures: 0,
        };
        self.gate_wait = None;
        self.record(&mut fx, now, from, cause, w);
        self.persist(&mut fx, now);
        self.confirm_effect(&mut fx, step, hook, 0);
        fx
    }

    /// A confirm hook's answer about the step (or swap) the rollout holds before. A "yes"
    /// enters it; a "no" holds and asks again; the `failure_limit`-th "no" in a row rolls
    /// back. Answers about anything else (a state left meanwhile) are dropped.
    fn hook_answer(&mut self, now: Now, a: HookAnswer) -> Vec<Effect> {
        let State::Confirming {
            step,
            hook,
            failures,
        } = self.state
        else {
            return Vec::new();
        };
        if a.hook != hook || a.step != step {
            return Vec::new();
        }
        if a.ok {
            let cause = Cause::HookConfirmed {
                hook,
                detail: a.detail,
            };
            if hook == HookKind::ConfirmPromotion {
                return self.promote_now(now, StateName::Confirming, cause);
            }
            let Some(next) = self.step(step) else {
                return Vec::new();
            };
            let mut fx = Vec::new();
            let before = self.controlled_weight();
            self.weight_effect(&mut fx, next.weight_bp, &cause);
            self.state = State::Running {
                step,
                step_started: now,
                hold_left: next.hold,
            };
            let sample = self.last_sample;
            if let Some(r) = &mut self.rollout {
                r.baseline = sample;
            }
            self.record(&mut fx, now, StateName::Confirming, cause, before);
            self.persist(&mut fx, now);
            return fx;
        }
        let failures = failures + 1;
        let limit = self.settings.webhook(hook).map_or(1, |h| h.failure_limit);
        if failures >= limit {
            let reason = format!("{} ({failures} in a row)", a.detail);
            return self.soft_roll_back(now, Cause::HookGaveUp { hook, reason });
        }
        let mut fx = Vec::new();
        let w = self.controlled_weight();
        self.state = State::Confirming {
            step,
            hook,
            failures,
        };
        let cause = Cause::HookRefused {
            hook,
            reason: a.detail,
            failures,
        };
        self.record(&mut fx, now, StateName::Confirming, cause, w);
        self.persist(&mut fx, now);
        self.confirm_effect(&mut fx, step, hook, failures);
        fx
    }

    /// Green becomes the new blue with weight 0, in one config-word write.
    fn promote_now(&mut self, now: Now, from: StateName, cause: Cause) -> Vec<Effect> {
        let mut fx = Vec::new();
        let before = self.controlled_weight();
        fx.push(Effect::SwapRoles {
            cause: cause.clone(),
        });
        std::mem::swap(&mut self.blue, &mut self.green);
        self.weight_bp = 0;
        self.rollout = None;
        self.state = State::Idle;
        self.gate_wait = None;
        self.record(&mut fx, now, from, cause, before);
        self.persist(&mut fx, now);
        fx
    }

    fn health(&mut self, now: Now, v: &HealthVerdict) -> Vec<Effect> {
        let status = if v.healthy {
            HealthStatus::Up
        } else {
            HealthStatus::Down
        };
        let b = if v.port == self.green.port {
            &mut self.green
        } else if v.port == self.blue.port {
            &mut self.blue
        } else {
            return Vec::new();
        };
        b.status = status;
        if !v.healthy {
            b.last_failure.clone_from(&v.reason);
        }
        if v.port == self.green.port && !v.healthy && self.armed() {
            let reason = v.reason.clone().unwrap_or_else(|| "unhealthy".into());
            return self.roll_back(
                now,
                Cause::Health {
                    port: v.port,
                    reason,
                },
            );
        }
        Vec::new()
    }

    /// A Prometheus analysis result. While a rollout can move (or is armed): failures in a
    /// row up to the analysis's limit roll back, inconclusive results in a row up to its
    /// limit pause a running step, and a success resets both and resumes a rollout that
    /// this analysis paused. Otherwise the result is only kept for `status`.
    fn analysis_result(&mut self, now: Now, r: AnalysisResult) -> Vec<Effect> {
        let Some(settings) = self.settings.analysis.iter().find(|a| a.name == r.name) else {
            return Vec::new();
        };
        let (failure_limit, inconclusive_limit) =
            (settings.failure_limit, settings.inconclusive_limit);
        let armed = self.armed();
        let counting = self.analysis_counts();
        let t = self.analysis.entry(r.name.clone()).or_default();
        t.name.clone_from(&r.name);
        t.measurements += 1;
        t.last = Some(r.measurement);
        t.value.clone_from(&r.value);
        t.detail = Some(r.detail.clone());
        if !counting {
            t.failures = 0;
            t.inconclusive = 0;
            return Vec::new();
        }
        match r.measurement {
            Measurement::Success => {
                t.failures = 0;
                t.inconclusive = 0;
                if self.analysis_pause.as_deref() == Some(r.name.as_str())
                    && let State::Paused { step, remaining } = self.state
                {
                    let mut fx = Vec::new();
                    let w = self.controlled_weight();
                    self.state = State::Running {
                        step,
                        step_started: now,
                        hold_left: remaining,
                    };
                    self.analysis_pause = None;
                    let cause = Cause::AnalysisResumed {
                        name: r.name,
                        detail: r.detail,
                    };
                    self.record(&mut fx, now, StateName::Paused, cause, w);
                    self.persist(&mut fx, now);
                    return fx;
                }
                Vec::new()
            }
            Measurement::Failure => {
                t.inconclusive = 0;
                t.failures += 1;
                if t.failures >= failure_limit && armed {
                    let reason = format!("{} ({} failed results in a row)", r.detail, t.failures);
                    return self.roll_back(
                        now,
                        Cause::Analysis {
                            name: r.name,
                            reason,
                        },
                    );
                }
                Vec::new()
            }
            Measurement::Inconclusive => {
                t.inconclusive += 1;
                let n = t.inconclusive;
                // Under a gradual rollback policy the limit is a soft failure: roll back
                // through the policy's steps instead of pausing.
                if n >= inconclusive_limit
                    && matches!(self.settings.rollback, RollbackPolicy::Gradual { .. })
                    && self.state.in_progress()
                {
                    let reason = format!(
                        "{} ({n} inconclusive results in a row), rolling back",
                        r.detail
                    );
                    let cause = Cause::AnalysisInconclusive {
                        name: r.name,
                        reason,
                    };
                    return self.soft_roll_back(now, cause);
                }
                if n >= inconclusive_limit
                    && let State::Running {
                        step,
                        step_started,
                        hold_left,
                    } = self.state
                {
                    let mut fx = Vec::new();
                    let w = self.controlled_weight();
                    self.state = State::Paused {
                        step,
                        remaining: hold_left.saturating_sub(now.saturating_sub(step_started)),
                    };
                    self.analysis_pause = Some(r.name.clone());
                    let reason =
                        format!("{} ({n} inconclusive results in a row), paused", r.detail);
                    let cause = Cause::AnalysisInconclusive {
                        name: r.name,
                        reason,
                    };
                    self.record(&mut fx, now, StateName::Running, cause, w);
                    self.persist(&mut fx, now);
                    return fx;
                }
                Vec::new()
            }
        }
    }

    fn signals(&mut self, now: Now, s: SignalSample) -> Vec<Effect> {
        self.last_sample = Some(s);
        if let Some(r) = &mut self.rollout
            && r.baseline.is_none()
            && self.state.in_progress()
        {
            r.baseline = Some(s);
        }
        // A sample may complete a step that was waiting for evidence.
        self.tick(now)
    }

    fn weight_changed(&mut self, now: Now, bp: u16) -> Vec<Effect> {
        if bp == self.weight_bp {
            return Vec::new();
        }
        let before = self.controlled_weight();
        self.weight_bp = bp;
        let mut fx = Vec::new();
        let from = self.state.name();
        let step = match self.state {
            State::Running { step, .. }
            | State::Paused { step, .. }
            | State::WaitingApproval { step } => Some(step),
            State::Confirming { step, .. } => Some(step.saturating_sub(1)),
            // An operator's weight stops a gradual rollback too, at the ramp's last step
            // at or below it.
            State::RollingBack { .. } => Some(
                self.rollout
                    .as_ref()
                    .and_then(|r| r.steps.iter().rposition(|s| s.weight_bp <= bp))
                    .unwrap_or(0),
            ),
            _ => None,
        };
        // A real ramp must not fight an operator: it stops where the operator put it.
        if let Some(step) = step
            && !self.dry_run()
        {
            self.state = State::Frozen { step };
            self.gate_wait = None;
        }
        self.record(
            &mut fx,
            now,
            from,
            Cause::OutsideWeightChange { weight_bp: bp },
            before,
        );
        self.persist(&mut fx, now);
        fx
    }

    fn tick(&mut self, now: Now) -> Vec<Effect> {
        if matches!(self.state, State::RollingBack { .. }) {
            return self.rollback_tick(now);
        }
        let State::Running {
            step,
            step_started,
            hold_left,
        } = self.state
        else {
            return Vec::new();
        };
        if now < step_started + hold_left {
            return Vec::new();
        }
        let mut fx = Vec::new();
        let result = self.judge_step();
        match result {
            GateResult::Fail(reason) => self.roll_back(now, Cause::Gate { step, reason }),
            GateResult::NoVerdict(reason) => {
                if self.gate_wait.as_ref() != Some(&reason) {
                    self.gate_wait = Some(reason.clone());
                    let w = self.controlled_weight();
                    self.record(
                        &mut fx,
                        now,
                        StateName::Running,
                        Cause::GateWaiting { step, reason },
                        w,
                    );
                }
                fx
            }
            GateResult::Pass(detail) => {
                self.gate_wait = None;
                let cause = Cause::StepPassed { step, detail };
                let approve = self.step(step).is_some_and(|s| s.approve);
                if approve {
                    let w = self.controlled_weight();
                    self.state = State::WaitingApproval { step };
                    self.record(&mut fx, now, StateName::Running, cause, w);
                    self.persist(&mut fx, now);
                    fx
                } else {
                    self.advance(now, step, StateName::Running, cause)
                }
            }
        }
    }

    /// Health and signal gates at the end of a step's hold.
    fn judge_step(&self) -> GateResult {
        match self.green.status {
            HealthStatus::Up | HealthStatus::NotChecked => {}
            HealthStatus::Unknown => {
                return GateResult::NoVerdict("green's health is not known yet".into());
            }
            HealthStatus::Down => {
                return GateResult::Fail(format!(
                    "green is down: {}",
                    self.green.last_failure.as_deref().unwrap_or("unhealthy")
                ));
            }
        }
        let Some(now) = &self.last_sample else {
            return GateResult::NoVerdict("no counter sample yet".into());
        };
        let base = self
            .rollout
            .as_ref()
            .and_then(|r| r.baseline)
            .unwrap_or_default();
        evaluate(&self.settings.gate, &base, now)
    }

    /// After `step` passed (and was approved if needed): next step, or Completed.
    fn advance(&mut self, now: Now, step: usize, from: StateName, cause: Cause) -> Vec<Effect> {
        let mut fx = Vec::new();
        let before = self.controlled_weight();
        if self.step(step + 1).is_some() && self.settings.webhook(HookKind::ConfirmStep).is_some() {
            return self.confirm(now, step + 1, HookKind::ConfirmStep, from, cause);
        }
        match self.step(step + 1) {
            Some(next) => {
                self.weight_effect(&mut fx, next.weight_bp, &cause);
                self.state = State::Running {
                    step: step + 1,
                    step_started: now,
                    hold_left: next.hold,
                };
                let sample = self.last_sample;
                if let Some(r) = &mut self.rollout {
                    r.baseline = sample;
                }
            }
            None => self.state = State::Completed,
        }
        self.record(&mut fx, now, from, cause, before);
        self.persist(&mut fx, now);
        fx
    }

    fn not_allowed(&self, command: &OperatorCommand) -> CommandError {
        CommandError::NotAllowed {
            command: command.name(),
            service: self.service.clone(),
            state: self.state.name(),
        }
    }

    fn require_green_healthy(&self, command: &OperatorCommand) -> Result<(), CommandError> {
        match self.green.status {
            HealthStatus::Up | HealthStatus::NotChecked => Ok(()),
            status => Err(CommandError::GreenNotHealthy {
                command: command.name(),
                port: self.green.port,
                status,
                reason: self.green.last_failure.clone(),
            }),
        }
    }

    /// Runs an operator command; on error nothing changed.
    pub fn command(
        &mut self,
        now: Now,
        command: OperatorCommand,
        uid: Option<u32>,
    ) -> Result<Vec<Effect>, CommandError> {
        let cause = Cause::Operator {
            command: command.name().to_owned(),
            uid,
        };
        let from = self.state.name();
        let before = self.controlled_weight();
        let mut fx = Vec::new();
        match &command {
            OperatorCommand::Start {
                steps,
                hold,
                dry_run,
            } => {
                let plan = self.plan_ramp(steps.as_deref(), *hold)?;
                return self.begin(now, &command, RolloutKind::Canary, plan, *dry_run, cause);
            }
            OperatorCommand::BlueGreen { hold, dry_run } => {
                let plan = vec![Step {
                    weight_bp: WEIGHT_MAX,
                    hold: hold.unwrap_or(self.settings.hold),
                    approve: false,
                }];
                return self.begin(now, &command, RolloutKind::BlueGreen, plan, *dry_run, cause);
            }
            OperatorCommand::Pause => match self.state {
                State::Running {
                    step,
                    step_started,
                    hold_left,
                } => {
                    self.state = State::Paused {
                        step,
                        remaining: hold_left.saturating_sub(now.saturating_sub(step_started)),
                    };
                }
                _ => return Err(self.not_allowed(&command)),
            },
            OperatorCommand::Resume => match self.state {
                State::Paused { step, remaining } => {
                    self.state = State::Running {
                        step,
                        step_started: now,
                        hold_left: remaining,
                    };
                }
                _ => return Err(self.not_allowed(&command)),
            },
            OperatorCommand::Freeze => match self.state {
                State::Running { step, .. }
                | State::Paused { step, .. }
                | State::WaitingApproval { step } => self.state = State::Frozen { step },
                State::Confirming { step, .. } => {
                    self.state = State::Frozen {
                        step: step.saturating_sub(1),
                    };
                }
                _ => return Err(self.not_allowed(&command)),
            },
            OperatorCommand::Approve => match self.state {
                State::WaitingApproval { step } => {
                    return Ok(self.advance(now, step, from, cause));
                }
                _ => return Err(self.not_allowed(&command)),
            },
            OperatorCommand::Abort => match self.state {
                State::Running { .. }
                | State::Paused { .. }
                | State::WaitingApproval { .. }
                | State::Confirming { .. }
                | State::Frozen { .. } => return Ok(self.soft_roll_back(now, cause)),
                // An abort during a gradual rollback: to 0 now.
                State::RollingBack { .. } => return Ok(self.roll_back(now, cause)),
                _ => return Err(self.not_allowed(&command)),
            },
            OperatorCommand::Rollback => {
                let active = matches!(
                    self.state,
                    State::Running { .. }
                        | State::Paused { .. }
                        | State::WaitingApproval { .. }
                        | State::Confirming { .. }
                        | State::RollingBack { .. }
                        | State::Frozen { .. }
                );
                // After a finished dry run, rollback is about the real weight again.
                let finished_dry =
                    matches!(self.state, State::Idle | State::RolledBack { .. }) && self.dry_run();
                let weight = if finished_dry {
                    self.weight_bp
                } else {
                    self.controlled_weight()
                };
                if !active && weight == 0 {
                    return Err(CommandError::NothingToRollBack);
                }
                if finished_dry {
                    self.rollout = None;
                }
                return Ok(self.roll_back(now, cause));
            }
            OperatorCommand::Promote => {
                if self.state.in_progress() {
                    return Err(self.not_allowed(&command));
                }
                if self.dry_run() && self.weight_bp != WEIGHT_MAX {
                    return Err(CommandError::DryRunPromote);
                }
                if self.weight_bp != WEIGHT_MAX {
                    return Err(CommandError::NotFullyShifted {
                        weight_bp: self.weight_bp,
                    });
                }
                if self.settings.webhook(HookKind::ConfirmPromotion).is_some() {
                    let step = self
                        .rollout
                        .as_ref()
                        .map_or(0, |r| r.steps.len().saturating_sub(1));
                    return Ok(self.confirm(now, step, HookKind::ConfirmPromotion, from, cause));
                }
                return Ok(self.promote_now(now, from, cause));
            }
        }
        self.gate_wait = None;
        self.analysis_pause = None;
        self.record(&mut fx, now, from, cause, before);
        self.persist(&mut fx, now);
        Ok(fx)
    }

    fn plan_ramp(
        &self,
        weights: Option<&[u16]>,
        hold: Option<Duration>,
    ) -> Result<Vec<Step>, CommandError> {
        let steps: Vec<Step> = match weights {
            None => self
                .settings
                .steps
                .iter()
                .map(|s| Step {
                    hold: hold.unwrap_or(s.hold),
                    ..*s
                })
                .collect(),
            Some(ws) => ws
                .iter()
                .map(|&weight_bp| Step {
                    weight_bp,
                    hold: hold.unwrap_or(self.settings.hold),
                    // A configured approval step keeps its approval when named again.
                    approve: self
                        .settings
                        .steps
                        .iter()
                        .any(|s| s.weight_bp == weight_bp && s.approve),
                })
                .collect(),
        };
        check_steps(&steps).map_err(|p| {
            CommandError::InvalidSteps(
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(steps)
    }

    fn begin(
        &mut self,
        now: Now,
        command: &OperatorCommand,
        kind: RolloutKind,
        plan: Vec<Step>,
        dry_run: bool,
        cause: Cause,
    ) -> Result<Vec<Effect>, CommandError> {
        if self.state.in_progress() || matches!(self.state, State::RollingBack { .. }) {
            return Err(self.not_allowed(command));
        }
        self.require_green_healthy(command)?;
        // The ramp never lowers the weight: skip steps at or below it.
        let steps: Vec<Step> = plan
            .into_iter()
            .filter(|s| s.weight_bp > self.weight_bp)
            .collect();
        let Some(first) = steps.first().copied() else {
            return Err(CommandError::NothingToRamp {
                weight_bp: self.weight_bp,
            });
        };
        let from = self.state.name();
        let before = self.controlled_weight();
        self.rollout = Some(Rollout {
            kind,
            steps,
            dry_run,
            would_weight_bp: self.weight_bp,
            baseline: self.last_sample,
        });
        self.gate_wait = None;
        self.analysis_pause = None;
        for t in self.analysis.values_mut() {
            t.failures = 0;
            t.inconclusive = 0;
        }
        if self.settings.webhook(HookKind::ConfirmRollout).is_some() {
            return Ok(self.confirm(now, 0, HookKind::ConfirmRollout, from, cause));
        }
        let mut fx = Vec::new();
        self.weight_effect(&mut fx, first.weight_bp, &cause);
        self.state = State::Running {
            step: 0,
            step_started: now,
            hold_left: first.hold,
        };
        self.gate_wait = None;
        // Each rollout counts its analyses' results afresh.
        self.analysis_pause = None;
        for t in self.analysis.values_mut() {
            t.failures = 0;
            t.inconclusive = 0;
        }
        self.record(&mut fx, now, from, cause, before);
        self.persist(&mut fx, now);
        Ok(fx)
    }
}
