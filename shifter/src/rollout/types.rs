//! The words of the rollout state machine: its states, the commands and inputs it takes,
//! the causes, events and effects it answers with, and its persisted progress. The machine
//! itself is [`super::engine::Engine`].

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use super::gate::SignalSample;
use crate::{
    config::{HookKind, Step},
    health::{HealthStatus, HealthVerdict},
    model::bp_text,
};

/// A point on the caller's monotonic clock.
pub type Now = Duration;

/// The state of a service's rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum State {
    /// No rollout has run (or the last one was promoted).
    Idle,
    /// Holding `step`: its hold ends `hold_left` after `step_started`.
    Running {
        step: usize,
        step_started: Now,
        hold_left: Duration,
    },
    Paused {
        step: usize,
        remaining: Duration,
    },
    /// `step` held and passed its gates; waits for `rollout approve`.
    WaitingApproval {
        step: usize,
    },
    /// Stopped at `step` by an operator (or an outside weight change), weight kept.
    Frozen {
        step: usize,
    },
    /// Waiting for the confirm webhook `hook` to answer 2xx before entering `step` (for
    /// `confirm-promotion`, before the swap); `failures` "no"s in a row so far.
    Confirming {
        step: usize,
        hook: HookKind,
        failures: u32,
    },
    /// A gradual rollback after a soft failure (`cause`): green holds `steps[index]`
    /// until `hold_left` after `step_started`, then the next; the last step is 0.
    RollingBack {
        steps: Vec<u16>,
        index: usize,
        step_started: Now,
        hold_left: Duration,
        cause: Cause,
    },
    RolledBack {
        cause: Cause,
    },
    /// The last step held and passed its gates.
    Completed,
}

/// Names of states, for events and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateName {
    Idle,
    Running,
    Paused,
    WaitingApproval,
    Frozen,
    Confirming,
    RollingBack,
    RolledBack,
    Completed,
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::WaitingApproval => "waiting for approval",
            Self::Frozen => "frozen",
            Self::Confirming => "confirming",
            Self::RollingBack => "rolling back",
            Self::RolledBack => "rolled back",
            Self::Completed => "completed",
        })
    }
}

impl State {
    pub fn name(&self) -> StateName {
        match self {
            Self::Idle => StateName::Idle,
            Self::Running { .. } => StateName::Running,
            Self::Paused { .. } => StateName::Paused,
            Self::WaitingApproval { .. } => StateName::WaitingApproval,
            Self::Frozen { .. } => StateName::Frozen,
            Self::Confirming { .. } => StateName::Confirming,
            Self::RollingBack { .. } => StateName::RollingBack,
            Self::RolledBack { .. } => StateName::RolledBack,
            Self::Completed => StateName::Completed,
        }
    }

    /// A ramp is under way (it may still move the weight up).
    pub fn in_progress(&self) -> bool {
        matches!(
            self,
            Self::Running { .. }
                | Self::Paused { .. }
                | Self::WaitingApproval { .. }
                | Self::Confirming { .. }
        )
    }
}

/// Operator commands (`shifter rollout ...`, `promote`, `rollback`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum OperatorCommand {
    /// A ramp; `None` takes the configured steps / hold. Given weights are basis points.
    Start {
        steps: Option<Vec<u16>>,
        hold: Option<Duration>,
        dry_run: bool,
    },
    /// One step to 100 % (green must be healthy), held for `hold` with its gates.
    BlueGreen {
        hold: Option<Duration>,
        dry_run: bool,
    },
    Pause,
    Resume,
    /// Ends the rollout in progress and puts green's weight back to 0.
    Abort,
    /// Green (at 100 %) becomes the new blue, with weight 0: one config-word write.
    Promote,
    /// Green's weight to 0 now.
    Rollback,
    /// Stop where it is, without rolling back.
    Freeze,
    Approve,
}

impl OperatorCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start { .. } => "start",
            Self::BlueGreen { .. } => "blue-green",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
            Self::Promote => "promote",
            Self::Rollback => "rollback",
            Self::Freeze => "freeze",
            Self::Approve => "approve",
        }
    }
}

/// Why a transition happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "kebab-case")]
pub enum Cause {
    Operator {
        command: String,
        uid: Option<u32>,
    },
    /// A step held its time and passed its gates.
    StepPassed {
        step: usize,
        detail: String,
    },
    /// A step's gate has no verdict yet (the step keeps holding).
    GateWaiting {
        step: usize,
        reason: String,
    },
    /// Green's health went Down.
    Health {
        port: u16,
        reason: String,
    },
    /// A step's gate failed.
    Gate {
        step: usize,
        reason: String,
    },
    /// The daemon restarted and resumed the persisted progress.
    Restart,
    /// The weight was changed outside the rollout (e.g. `shifter set weight`).
    OutsideWeightChange {
        weight_bp: u16,
    },
    /// A Prometheus query gate failed `failure_limit` times in a row (rolls back).
    Analysis {
        name: String,
        reason: String,
    },
    /// A query gate was inconclusive `inconclusive_limit` times in a row (pauses).
    AnalysisInconclusive {
        name: String,
        reason: String,
    },
    /// The query gate that paused the rollout succeeded again (resumes).
    AnalysisResumed {
        name: String,
        detail: String,
    },
    /// A confirm webhook answered 2xx: the rollout goes on.
    HookConfirmed {
        hook: HookKind,
        detail: String,
    },
    /// A confirm webhook said no (or did not answer): the rollout holds and asks again.
    HookRefused {
        hook: HookKind,
        reason: String,
        failures: u32,
    },
    /// A confirm webhook said no `failure_limit` times in a row: the rollout rolls back.
    HookGaveUp {
        hook: HookKind,
        reason: String,
    },
    /// A gradual rollback's next step (to `weight_bp`; 0 ends it), started by `of`.
    RollbackStep {
        weight_bp: u16,
        of: Box<Cause>,
    },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Operator { command, uid } => match uid {
                Some(u) => write!(f, "operator (uid {u}): {command}"),
                None => write!(f, "operator: {command}"),
            },
            Self::StepPassed { step, detail } => write!(f, "step {} passed: {detail}", step + 1),
            Self::GateWaiting { step, reason } => {
                write!(f, "step {} gate has no verdict yet: {reason}", step + 1)
            }
            Self::Health { port, reason } => {
                write!(f, "green (port {port}) failed its health check: {reason}")
            }
            Self::Gate { step, reason } => write!(f, "step {} gate failed: {reason}", step + 1),
            Self::Restart => f.write_str("daemon restart: progress resumed"),
            Self::OutsideWeightChange { weight_bp } => {
                write!(
                    f,
                    "weight set to {} outside the rollout",
                    bp_text(*weight_bp)
                )
            }
            Self::Analysis { name, reason } => write!(f, "analysis {name} failed: {reason}"),
            Self::AnalysisInconclusive { name, reason } => {
                write!(f, "analysis {name} is inconclusive: {reason}")
            }
            Self::AnalysisResumed { name, detail } => {
                write!(f, "analysis {name} succeeded again, resumed: {detail}")
            }
            Self::HookConfirmed { hook, detail } => write!(f, "{hook} hook confirmed: {detail}"),
            Self::HookRefused {
                hook,
                reason,
                failures,
            } => write!(
                f,
                "{hook} hook said no ({failures} in a row), holding: {reason}"
            ),
            Self::HookGaveUp { hook, reason } => {
                write!(
                    f,
                    "{hook} hook gave no confirmation, rolling back: {reason}"
                )
            }
            Self::RollbackStep { weight_bp, of } => {
                write!(f, "gradual rollback to {} ({of})", bp_text(*weight_bp))
            }
        }
    }
}

/// What kind of rollout this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutKind {
    Canary,
    BlueGreen,
}

/// One transition, as the daemon should record it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEvent {
    pub seq: u64,
    /// Engine time of the transition.
    pub at: Now,
    pub service: String,
    pub from: StateName,
    pub to: StateName,
    pub cause: Cause,
    /// The weight the rollout controls (would-be weight for a dry run), before and after.
    pub weight_before_bp: u16,
    pub weight_after_bp: u16,
    pub dry_run: bool,
    /// Filled by the driver: how long the weight change took.
    pub actuation: Option<Actuation>,
}

/// Measured cost of a weight change (or why it failed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actuation {
    /// The actuator's own measurement of the map update.
    pub map_update: Duration,
    /// From the deciding check result to the actuator returning (health rollbacks).
    pub since_decision: Option<Duration>,
    /// The actuator failed: the data plane may still have the old weight.
    pub error: Option<String>,
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Set green's weight. With `dry_run` only the would-be weight changes (the data plane
    /// counts decisions with it but steers by the real weight).
    SetWeight {
        bp: u16,
        cause: Cause,
        dry_run: bool,
    },
    /// Promote: swap the service's blue and green ports and set the weight to 0, in one
    /// config-word write (every existing flow keeps its port).
    SwapRoles {
        cause: Cause,
    },
    Record(RolloutEvent),
    Persist(Box<Progress>),
    /// Ask the confirm webhook `hook` (again after its interval when `failures` > 0) and
    /// feed its answer back as [`Input::Hook`].
    Confirm(HookCall),
}

/// A confirm webhook to ask: about entering `step` (0-based) of the rollout, moving green
/// from `weight_before_bp` to `weight_after_bp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookCall {
    pub hook: HookKind,
    pub step: usize,
    pub weight_before_bp: u16,
    pub weight_after_bp: u16,
    /// "No"s in a row so far (0: the first attempt, made at once).
    pub failures: u32,
}

/// A confirm webhook's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookAnswer {
    pub hook: HookKind,
    pub step: usize,
    /// 2xx.
    pub ok: bool,
    /// `HTTP 200`, `HTTP 503`, `connect ...: refused`, `timed out after 1s`.
    pub detail: String,
}

/// A command that cannot run in the current state. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("cannot {command}: the rollout of {service} is {state}")]
    NotAllowed {
        command: &'static str,
        service: String,
        state: StateName,
    },
    #[error("cannot {command}: green ({port}) is {status}{}", .reason.as_ref().map(|r| format!(" (last failure: {r})")).unwrap_or_default())]
    GreenNotHealthy {
        command: &'static str,
        port: u16,
        status: HealthStatus,
        reason: Option<String>,
    },
    #[error("cannot start: every step is at or below green's current weight {}", bp_text(*.weight_bp))]
    NothingToRamp { weight_bp: u16 },
    #[error("cannot roll back: green's weight is already 0")]
    NothingToRollBack,
    #[error("cannot promote: green has {} of new connections; promote needs 100%", bp_text(*.weight_bp))]
    NotFullyShifted { weight_bp: u16 },
    #[error("cannot promote a dry run: the real weight was never changed")]
    DryRunPromote,
    #[error("invalid steps: {0}")]
    InvalidSteps(String),
}

/// Persisted progress: enough to resume after a restart without touching the weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub service: String,
    pub blue_port: u16,
    pub green_port: u16,
    /// The real weight the engine last set or saw.
    pub weight_bp: u16,
    pub phase: Phase,
    pub rollout: Option<Rollout>,
    pub next_seq: u64,
    /// The analysis whose inconclusive results paused the step (its next success resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_pause: Option<String>,
}

/// State without clock points (a remaining time instead of a start instant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Phase {
    Idle,
    Running {
        step: usize,
        remaining: Duration,
    },
    Paused {
        step: usize,
        remaining: Duration,
    },
    WaitingApproval {
        step: usize,
    },
    Frozen {
        step: usize,
    },
    Confirming {
        step: usize,
        hook: HookKind,
        failures: u32,
    },
    RollingBack {
        steps: Vec<u16>,
        index: usize,
        remaining: Duration,
        cause: Cause,
    },
    RolledBack {
        cause: Cause,
    },
    Completed,
}

/// The rollout being run (or last run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub kind: RolloutKind,
    pub steps: Vec<Step>,
    pub dry_run: bool,
    /// Dry run only: the weight the rollout would have set.
    pub would_weight_bp: u16,
    /// Counters at the start of the current step (kernel counters survive restarts).
    pub baseline: Option<SignalSample>,
}

/// Health of one backend as the engine knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealth {
    pub port: u16,
    pub status: HealthStatus,
    pub last_failure: Option<String>,
}

/// The verdict of one query of a Prometheus analysis (Argo's three results).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measurement {
    /// The value is within the bounds.
    Success,
    /// The value is outside the bounds.
    Failure,
    /// No value: no data, not a number, a query error or a timeout.
    Inconclusive,
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Inconclusive => "inconclusive",
        })
    }
}

/// One query result of the analysis `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisResult {
    pub name: String,
    pub measurement: Measurement,
    /// The value as Prometheus gave it (text, so the type stays `Eq`).
    pub value: Option<String>,
    /// In words: `0.12 is not <= 0.05`, `no data`, `query failed: ...`.
    pub detail: String,
}

/// Where an analysis stands, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisStatus {
    pub name: String,
    pub last: Option<Measurement>,
    pub value: Option<String>,
    pub detail: Option<String>,
    /// Failed results in a row during the rollout (rolls back at the failure limit).
    pub failures: u32,
    /// Inconclusive results in a row during the rollout (pauses at the limit).
    pub inconclusive: u32,
    pub measurements: u64,
}

/// Inputs besides commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A Prometheus analysis result.
    Analysis(AnalysisResult),
    Tick,
    Health(HealthVerdict),
    Signals(SignalSample),
    Command {
        command: OperatorCommand,
        uid: Option<u32>,
    },
    /// The real weight was changed outside the engine.
    WeightChanged {
        bp: u16,
    },
    /// A confirm webhook answered.
    Hook(HookAnswer),
}
