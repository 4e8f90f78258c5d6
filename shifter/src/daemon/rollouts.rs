//! The rollout side of the engine actor: one rollout engine per service, its health
//! checkers, its persisted progress (`<state_dir>/rollout-<service>.json`) and the mapping of
//! its transitions to the daemon's events.
//!
//! Everything here runs on the actor's thread, which owns the data plane: every input ends
//! in `engine.handle` and `rollout::apply` on a [`DataPlaneActuator`] borrowed for that one
//! batch, so a rollback is one config-word write made right where it is decided. Health
//! checkers are tokio tasks that post their reports to the actor as commands; a timer task
//! posts a tick at the end of each hold and about every second (counter sample, then tick).
//!
//! Over 700 lines, about 50 of them its unit tests: one service's engine, checkers, analyzers and
//! confirm hooks are driven here together, because each input of one can change what the others
//! must do.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{
    actuator::{DataPlaneActuator, load_progress},
    engine::Command,
    webhooks::hook_body,
};
use crate::{
    api::types::{AnalysisView, BackendHealthView, HealthView, RolloutView},
    config::{AnalysisSettings, HealthSettings, HookKind, ServiceSpec},
    dataplane::DataPlane,
    events::{Cause, Event},
    health::{CheckReport, HealthStatus, run_checker},
    model::Service,
    rollout::{
        self, CommandError, Effect, Engine, HookAnswer, HookCall, Input, OperatorCommand,
        RolloutEvent, StateName,
        engine::Cause as RolloutCause,
        history::{History, RolloutRecord},
        types::AnalysisResult,
    },
    util::{error_chain, now_unix_ms},
};

/// How often counters are sampled and the engines ticked when no hold ends sooner.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

use super::webhooks::{Task, Webhooks};

/// The latest check of one backend, for `status`.
#[derive(Clone, Debug, Default)]
struct CheckView {
    status: Option<HealthStatus>,
    last_failure: Option<String>,
    last_ok: Option<bool>,
    checks: u64,
}

struct ServiceRollout {
    engine: Engine,
    slot: u32,
    health: Option<HealthSettings>,
    checks: BTreeMap<u16, CheckView>,
    _checkers: Vec<Task>,
    /// The Prometheus analyses the tasks below run, only while they count
    /// (`Engine::analysis_counts`; see `sync_analyzers`).
    analysis: Vec<AnalysisSettings>,
    analyzers: Vec<Task>,
    /// The confirm webhook being asked (replaced by the next attempt, dropped when the
    /// rollout leaves the state that asked).
    confirming: Option<Task>,
}

/// What one batch of effects did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub events: Vec<RolloutEvent>,
    /// The real weight after the batch, when a weight effect ran (not for dry runs).
    pub weight: Option<u16>,
    /// The roles were swapped (promote).
    pub swapped: bool,
}

pub(crate) struct Rollouts {
    origin: Instant,
    state_dir: PathBuf,
    rt: tokio::runtime::Handle,
    commands: mpsc::WeakSender<Command>,
    deadline: watch::Sender<Option<Instant>>,
    services: BTreeMap<String, ServiceRollout>,
    /// Every rollout's record, saved to `<state_dir>/history.json` when it grows.
    history: History,
    /// Notification targets and webhook calls, off this thread.
    pub webhooks: Webhooks,
}

impl Rollouts {
    pub fn new(
        state_dir: &Path,
        rt: tokio::runtime::Handle,
        commands: mpsc::WeakSender<Command>,
        deadline: watch::Sender<Option<Instant>>,
    ) -> Self {
        Self {
            origin: Instant::now(),
            state_dir: state_dir.to_owned(),
            commands,
            deadline,
            services: BTreeMap::new(),
            history: super::history::load(state_dir),
            webhooks: Webhooks::new(rt.clone()),
            rt,
        }
    }

    /// The recorded rollouts of `name`, oldest first (`None`: nothing recorded).
    pub fn history(&self, name: &str) -> Option<Vec<RolloutRecord>> {
        self.history
            .services
            .get(name)
            .map(|_| self.history.of(name))
    }

    /// Every service's recorded rollouts.
    pub fn all_history(&self) -> Vec<RolloutRecord> {
        self.history
            .services
            .values()
            .flat_map(|l| l.iter().cloned())
            .collect()
    }

    /// The engines' clock.
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn progress_path(state_dir: &Path, name: &str) -> PathBuf {
        state_dir.join(format!("rollout-{name}.json"))
    }

    /// Creates, resumes or updates the rollout of a configured service whose data-plane
    /// entry is `live` in `slot`. Returns the batches it ran (a resume, an outside weight
    /// change).
    /// The progress a new engine of `name` continues from: a rollout already running here
    /// (health checks switched on or off) keeps its progress through its own snapshot;
    /// otherwise the file is the source. Progress of other ports is dropped.
    fn saved_progress(
        &mut self,
        name: &str,
        ports: (u16, u16),
        now: Duration,
    ) -> Option<rollout::Progress> {
        let path = Self::progress_path(&self.state_dir, name);
        let progress = match self.services.remove(name) {
            Some(old) if old.engine.ports() == ports => Some(old.engine.progress(now)),
            _ => match load_progress(&path) {
                Ok(p) => p,
                Err(e) => {
                    warn!("{name}: ignoring the rollout progress: {}", error_chain(&e));
                    None
                }
            },
        };
        progress.filter(|p| {
            let fits = p.service == name && (p.blue_port, p.green_port) == ports;
            if !fits {
                warn!(
                    "{name}: the saved rollout progress is for ports {}/{}, the service now has {}/{}; starting afresh",
                    p.blue_port, p.green_port, ports.0, ports.1
                );
            }
            fits
        })
    }

    pub fn ensure(
        &mut self,
        dp: &mut DataPlane,
        spec: &ServiceSpec,
        slot: u32,
        live: &Service,
    ) -> Vec<Outcome> {
        let name = spec.name.clone();
        let ports = (live.config.blue_port, live.config.green_port);
        let mut out = Vec::new();
        let keep = self.services.get(&name).is_some_and(|s| {
            s.engine.ports() == ports
                && s.slot == slot
                && s.health.is_some() == spec.health.is_some()
        });
        if keep {
            self.update_settings(&name, spec, ports);
        } else if let Some(o) = self.start(dp, spec, slot, live) {
            out.push(o);
        }
        let known = self.services[&name].engine.weight_bp();
        if known != live.config.weight
            && let Ok(o) = self.feed(
                dp,
                &name,
                Input::WeightChanged {
                    bp: live.config.weight,
                },
                None,
            )
        {
            out.push(o);
        }
        self.publish_deadline();
        out
    }

    /// A service kept across a reload takes the new settings: rollout settings at once, and
    /// new health checkers or analyzers only when those settings changed.
    fn update_settings(&mut self, name: &str, spec: &ServiceSpec, ports: (u16, u16)) {
        let s = self.services.get_mut(name).expect("checked");
        s.engine.set_settings(spec.rollout.clone());
        // A reload that removed the confirm hook being asked lets the rollout go on.
        if let rollout::State::Confirming { step, hook, .. } = *s.engine.state()
            && spec.rollout.webhook(hook).is_none()
            && let Some(commands) = self.commands.upgrade()
        {
            s.confirming = None;
            let answer = HookAnswer {
                hook,
                step,
                ok: true,
                detail: "the hook was removed from the configuration".into(),
            };
            let _ = commands.try_send(Command::Hook {
                service: name.to_owned(),
                answer,
            });
        }
        if s.health != spec.health {
            s.health.clone_from(&spec.health);
            s.checks.clear();
            s._checkers = Vec::new();
            let checkers = self.spawn_checkers(name, spec.health.as_ref(), ports);
            self.services.get_mut(name).expect("checked")._checkers = checkers;
        }
        let s = self.services.get_mut(name).expect("checked");
        if s.analysis != spec.rollout.analysis {
            s.analysis.clone_from(&spec.rollout.analysis);
            s.analyzers = Vec::new();
            self.sync_analyzers(name);
        }
    }

    /// A service new to the engine (or moved to another slot or ports): its engine resumed
    /// from its progress file, else started at the live weight; its checkers and analyzers.
    fn start(
        &mut self,
        dp: &mut DataPlane,
        spec: &ServiceSpec,
        slot: u32,
        live: &Service,
    ) -> Option<Outcome> {
        let name = spec.name.clone();
        let ports = (live.config.blue_port, live.config.green_port);
        let now = self.now();
        let health_checked = spec.health.is_some();
        let progress = self.saved_progress(&name, ports, now);
        let (engine, fx) = match progress {
            Some(p) => {
                info!(
                    "{name}: resuming the rollout ({:?}) without changing the weight",
                    p.phase
                );
                Engine::resume_from(p, spec.rollout.clone(), health_checked, now)
            }
            None => (
                Engine::new(
                    name.clone(),
                    spec.rollout.clone(),
                    ports.0,
                    ports.1,
                    live.config.weight,
                    health_checked,
                ),
                Vec::new(),
            ),
        };
        let checkers = self.spawn_checkers(&name, spec.health.as_ref(), ports);
        self.services.insert(
            name.clone(),
            ServiceRollout {
                engine,
                slot,
                health: spec.health.clone(),
                checks: BTreeMap::new(),
                _checkers: checkers,
                analysis: spec.rollout.analysis.clone(),
                analyzers: Vec::new(),
                confirming: None,
            },
        );
        self.sync_analyzers(&name);
        (!fx.is_empty()).then(|| self.run(dp, &name, fx, None))
    }

    /// Forgets a service that left the configuration (its progress file goes too).
    pub fn remove(&mut self, name: &str) {
        if self.services.remove(name).is_some() {
            let _ = std::fs::remove_file(Self::progress_path(&self.state_dir, name));
        }
        self.publish_deadline();
    }

    fn spawn_checkers(
        &self,
        name: &str,
        health: Option<&HealthSettings>,
        (blue, green): (u16, u16),
    ) -> Vec<Task> {
        let Some(settings) = health else {
            return Vec::new();
        };
        let Some(commands) = self.commands.upgrade() else {
            return Vec::new();
        };
        [blue, green]
            .into_iter()
            .map(|port| {
                let (tx, mut rx) = mpsc::channel::<CheckReport>(16);
                let settings = settings.clone();
                let commands = commands.clone();
                let service = name.to_owned();
                Task(self.rt.spawn(async move {
                    let forward = async {
                        while let Some(report) = rx.recv().await {
                            let cmd = Command::Health {
                                service: service.clone(),
                                report,
                            };
                            if commands.send(cmd).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::join!(run_checker(settings, port, tx), forward);
                }))
            })
            .collect()
    }

    /// Starts the service's analyses when they begin to count (a rollout starts, or resumes
    /// after a restart) and stops them when they no longer do (it ended at 0 or was
    /// promoted): Prometheus is queried only while a result can matter.
    fn sync_analyzers(&mut self, name: &str) {
        let Some(s) = self.services.get(name) else {
            return;
        };
        let want = !s.analysis.is_empty() && s.engine.analysis_counts();
        match (want, s.analyzers.is_empty()) {
            (true, true) => {
                let analyzers = self.spawn_analyzers(name, &s.analysis);
                self.services.get_mut(name).expect("checked").analyzers = analyzers;
            }
            (false, false) => {
                tracing::debug!("{name}: analyses stop (no rollout needs them)");
                self.services.get_mut(name).expect("checked").analyzers = Vec::new();
            }
            _ => {}
        }
    }

    /// One task per analysis, posting each result to the actor.
    fn spawn_analyzers(&self, name: &str, analysis: &[AnalysisSettings]) -> Vec<Task> {
        let Some(commands) = self.commands.upgrade() else {
            return Vec::new();
        };
        analysis
            .iter()
            .map(|a| {
                let (tx, mut rx) = mpsc::channel::<AnalysisResult>(4);
                let commands = commands.clone();
                let service = name.to_owned();
                let run = super::analysis::run(a.clone(), name.to_owned(), tx);
                Task(self.rt.spawn(async move {
                    let forward = async {
                        while let Some(result) = rx.recv().await {
                            let cmd = Command::Analysis {
                                service: service.clone(),
                                result,
                            };
                            if commands.send(cmd).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::join!(run, forward);
                }))
            })
            .collect()
    }

    /// A Prometheus analysis result for the engine of `name`.
    pub fn analysis(
        &mut self,
        dp: &mut DataPlane,
        name: &str,
        result: AnalysisResult,
    ) -> Option<Outcome> {
        if result.measurement != rollout::types::Measurement::Success {
            tracing::debug!("{name}: analysis {}: {}", result.name, result.detail);
        }
        self.feed(dp, name, Input::Analysis(result), None).ok()
    }

    /// Feeds one input to a service's engine and carries out its effects.
    pub fn feed(
        &mut self,
        dp: &mut DataPlane,
        name: &str,
        input: Input,
        decided_at: Option<Instant>,
    ) -> Result<Outcome, CommandError> {
        let now = self.now();
        let Some(s) = self.services.get_mut(name) else {
            return Ok(Outcome::default());
        };
        let fx = s.engine.handle(now, input)?;
        let o = self.run(dp, name, fx, decided_at);
        self.publish_deadline();
        Ok(o)
    }

    /// An operator command.
    pub fn command(
        &mut self,
        dp: &mut DataPlane,
        name: &str,
        command: OperatorCommand,
        uid: u32,
    ) -> Result<Outcome, CommandError> {
        self.feed(
            dp,
            name,
            Input::Command {
                command,
                uid: Some(uid),
            },
            None,
        )
    }

    fn run(
        &mut self,
        dp: &mut DataPlane,
        name: &str,
        fx: Vec<Effect>,
        decided_at: Option<Instant>,
    ) -> Outcome {
        let Some(s) = self.services.get_mut(name) else {
            return Outcome::default();
        };
        let mut weight = None;
        let mut swapped = false;
        for e in &fx {
            match e {
                Effect::SetWeight { dry_run: false, .. } => weight = Some(()),
                Effect::SwapRoles { .. } => {
                    weight = Some(());
                    swapped = true;
                }
                _ => {}
            }
        }
        let path = Self::progress_path(&self.state_dir, name);
        let mut actuator = DataPlaneActuator::new(dp, s.slot, Some(&path));
        let events = rollout::apply(&mut actuator, fx, decided_at);
        let confirms = std::mem::take(&mut actuator.confirms);
        if self
            .history
            .observe(name, &events, s.engine.rollout(), now_unix_ms())
            && let Err(e) = super::history::save(&self.state_dir, &self.history)
        {
            warn!("{name}: {}", error_chain(&e));
        }
        self.hooks_after(name, &events, confirms);
        self.sync_analyzers(name);
        let s = &self.services[name];
        Outcome {
            events,
            weight: weight.map(|()| s.engine.weight_bp()),
            swapped,
        }
    }

    /// The id of the service's latest recorded rollout.
    fn rollout_id(&self, name: &str) -> Option<u64> {
        self.history.services.get(name)?.back().map(|r| r.id)
    }

    /// After a batch: notifications of its events, the told hooks (post-rollout at the end
    /// of a rollout, rollback when one began) and the confirm hook it asks for. None of it
    /// waits here.
    fn hooks_after(&mut self, name: &str, events: &[RolloutEvent], confirms: Vec<HookCall>) {
        let id = self.rollout_id(name);
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        let settings = s.engine.settings().clone();
        let steps = s.engine.rollout().map_or(0, |r| r.steps.len());
        for ev in events {
            self.webhooks.notify(ev, id);
            // The rollback hook is told once, when a rollback begins (at once or gradual).
            let told = match ev.to {
                _ if ev.from == ev.to || ev.from == StateName::RollingBack => None,
                StateName::RolledBack | StateName::RollingBack => Some(HookKind::Rollback),
                _ => None,
            };
            let ended = matches!(ev.to, StateName::Completed | StateName::RolledBack)
                && ev.from != ev.to
                && ev.from != StateName::Idle;
            for kind in told
                .into_iter()
                .chain(ended.then_some(HookKind::PostRollout))
            {
                if let Some(h) = settings.webhook(kind) {
                    let call = HookCall {
                        hook: kind,
                        step: 0,
                        weight_before_bp: ev.weight_before_bp,
                        weight_after_bp: ev.weight_after_bp,
                        failures: 0,
                    };
                    let mut body = hook_body(name, id, &call, steps, &ev.cause.to_string());
                    body["state"] = serde_json::json!(ev.to);
                    self.webhooks.tell(h.clone(), name.to_owned(), body);
                }
            }
        }
        if !matches!(s.engine.state(), rollout::State::Confirming { .. }) {
            s.confirming = None;
        }
        let Some(commands) = self.commands.upgrade() else {
            return;
        };
        for call in confirms {
            let Some(h) = settings.webhook(call.hook) else {
                continue;
            };
            let reason = match call.hook {
                HookKind::ConfirmPromotion => "promote: green becomes the new blue".to_owned(),
                _ => format!(
                    "step {} of {steps}: green {} -> {}",
                    call.step + 1,
                    crate::model::bp_text(call.weight_before_bp),
                    crate::model::bp_text(call.weight_after_bp)
                ),
            };
            let body = hook_body(name, id, &call, steps, &reason);
            s.confirming = Some(self.webhooks.confirm(
                h.clone(),
                name.to_owned(),
                call,
                body,
                commands.clone(),
            ));
        }
    }

    /// A confirm webhook's answer for the engine of `name`.
    pub fn hook(&mut self, dp: &mut DataPlane, name: &str, answer: HookAnswer) -> Option<Outcome> {
        self.feed(dp, name, Input::Hook(answer), None).ok()
    }

    /// Samples every service's counters, then ticks its engine.
    pub fn tick(&mut self, dp: &mut DataPlane) -> Vec<Outcome> {
        let names: Vec<(String, u32)> = self
            .services
            .iter()
            .map(|(n, s)| (n.clone(), s.slot))
            .collect();
        let mut out = Vec::new();
        for (name, slot) in names {
            match dp
                .counters(slot)
                .and_then(|c| Ok((c, dp.socket_counters(slot)?)))
            {
                Ok((c, s)) => {
                    let sample = rollout::SignalSample::of(&c, &s);
                    if let Ok(o) = self.feed(dp, &name, Input::Signals(sample), None) {
                        out.push(o);
                    }
                }
                Err(e) => warn!("{name}: reading counters: {}", error_chain(&e)),
            }
            if let Ok(o) = self.feed(dp, &name, Input::Tick, None) {
                out.push(o);
            }
        }
        out.retain(|o| !o.events.is_empty());
        // A running hold's remaining time is kept fresh on disk, so even a killed daemon
        // resumes close to where it was.
        self.persist(true);
        out
    }

    /// Stores every engine's progress (`running_only`: only those holding a step).
    pub fn persist(&self, running_only: bool) {
        let now = self.now();
        for (name, s) in &self.services {
            if running_only
                && !matches!(
                    s.engine.state(),
                    rollout::State::Running { .. } | rollout::State::RollingBack { .. }
                )
            {
                continue;
            }
            let path = Self::progress_path(&self.state_dir, name);
            if let Err(e) = super::actuator::store_progress(&path, &s.engine.progress(now)) {
                warn!("{name}: {}", error_chain(&e));
            }
        }
    }

    /// A health checker's report: kept for `status`; a change of state goes to the engine,
    /// timed from the check's end.
    pub fn health(
        &mut self,
        dp: &mut DataPlane,
        name: &str,
        report: CheckReport,
    ) -> Option<Outcome> {
        let s = self.services.get_mut(name)?;
        let view = s.checks.entry(report.port).or_default();
        view.status = Some(report.status);
        view.last_failure.clone_from(&report.last_failure);
        view.last_ok = Some(report.result.is_ok());
        view.checks += 1;
        let verdict = report.verdict?;
        if !verdict.healthy {
            warn!(
                "{name}: port {} is down: {}",
                verdict.port,
                verdict.reason.as_deref().unwrap_or("unhealthy")
            );
        } else {
            info!("{name}: port {} is up", verdict.port);
        }
        self.feed(dp, name, Input::Health(verdict), Some(report.decided_at))
            .ok()
    }

    /// The rollout and health of a service for `status`.
    pub fn view(&self, name: &str) -> Option<(RolloutView, Option<HealthView>)> {
        let s = self.services.get(name)?;
        let st = s.engine.status(self.now());
        let r = s.engine.rollout();
        let dry_run = r.is_some_and(|r| r.dry_run);
        let step = match &st.progress.phase {
            rollout::engine::Phase::Running { step, .. }
            | rollout::engine::Phase::Paused { step, .. }
            | rollout::engine::Phase::WaitingApproval { step }
            | rollout::engine::Phase::Frozen { step }
            | rollout::engine::Phase::Confirming { step, .. } => Some(step + 1),
            _ => None,
        };
        let gate_waiting = match s.engine.state() {
            rollout::State::Confirming { hook, failures, .. } => Some(format!(
                "waiting for the {hook} webhook to answer 2xx ({failures} \"no\" so far)"
            )),
            rollout::State::RollingBack {
                steps,
                index,
                cause,
                ..
            } => Some(format!(
                "rolling back gradually, step {} of {} ({cause})",
                index + 1,
                steps.len()
            )),
            _ => st.gate_waiting.clone(),
        };
        let rolled_back = match s.engine.state() {
            rollout::State::RolledBack { cause } => Some(cause.to_string()),
            _ => None,
        };
        let view = RolloutView {
            state: s.engine.state().name().to_string(),
            kind: r.map(|r| {
                match r.kind {
                    rollout::engine::RolloutKind::Canary => "canary",
                    rollout::engine::RolloutKind::BlueGreen => "blue-green",
                }
                .to_owned()
            }),
            dry_run,
            step,
            steps: r.map_or(0, |r| r.steps.len()),
            step_weight_bp: st.step_weight_bp,
            remaining_hold_ms: st.remaining_hold.map(|d| d.as_millis() as u64),
            would_weight_bp: r.filter(|r| r.dry_run).map(|r| r.would_weight_bp),
            gate_waiting,
            rolled_back,
            analysis: st
                .analysis
                .iter()
                .map(|a| AnalysisView {
                    name: a.name.clone(),
                    last: a.last.map(|m| m.to_string()),
                    value: a.value.clone(),
                    detail: a.detail.clone(),
                    failures: a.failures,
                    inconclusive: a.inconclusive,
                    measurements: a.measurements,
                })
                .collect(),
        };
        let health = s.health.as_ref().map(|h| {
            let backend = |b: &rollout::engine::BackendHealth| {
                let c = s.checks.get(&b.port).cloned().unwrap_or_default();
                BackendHealthView {
                    port: b.port,
                    check_port: h.check_port(b.port),
                    status: c.status.unwrap_or(b.status).to_string(),
                    last_failure: c.last_failure.or_else(|| b.last_failure.clone()),
                    last_check_ok: c.last_ok,
                    checks: c.checks,
                }
            };
            HealthView {
                blue: backend(&st.blue),
                green: backend(&st.green),
            }
        });
        Some((view, health))
    }

    /// Tells the timer task when the earliest hold ends (none: only the periodic sample).
    fn publish_deadline(&self) {
        let now = Instant::now();
        let next = self
            .services
            .values()
            .filter_map(|s| s.engine.next_deadline())
            .map(|d| self.origin + d)
            .filter(|t| *t > now)
            .min();
        self.deadline.send_if_modified(|cur| {
            if *cur == next {
                false
            } else {
                *cur = next;
                true
            }
        });
    }
}

/// The daemon event for a rollout transition.
pub(crate) fn to_event(ev: &RolloutEvent) -> Event {
    let (cause, uid) = match &ev.cause {
        RolloutCause::Operator { command, uid } if command == "promote" => (Cause::Promote, *uid),
        // Counted by `shifter_rollbacks_total` beside the automatic ones.
        RolloutCause::Operator { command, uid } if command == "rollback" => {
            (Cause::ManualRollback, *uid)
        }
        RolloutCause::Operator { uid, .. } => (Cause::Rollout, *uid),
        RolloutCause::StepPassed { .. } | RolloutCause::GateWaiting { .. } => {
            (Cause::RolloutStep, None)
        }
        RolloutCause::Health { .. } => (Cause::HealthRollback, None),
        RolloutCause::Gate { .. } => (Cause::GateRollback, None),
        RolloutCause::Restart => (Cause::Restore, None),
        RolloutCause::OutsideWeightChange { .. } => (Cause::Rollout, None),
        RolloutCause::Analysis { .. } => (Cause::AnalysisRollback, None),
        // The limit under a gradual policy starts a rollback.
        RolloutCause::AnalysisInconclusive { .. } if ev.to == StateName::RollingBack => {
            (Cause::AnalysisRollback, None)
        }
        RolloutCause::AnalysisInconclusive { .. }
        | RolloutCause::AnalysisResumed { .. }
        | RolloutCause::RollbackStep { .. }
        | RolloutCause::HookConfirmed { .. }
        | RolloutCause::HookRefused { .. } => (Cause::RolloutStep, None),
        RolloutCause::HookGaveUp { .. } => (Cause::HookRollback, None),
    };
    let a = ev.actuation.as_ref();
    let mut detail = format!("rollout {} -> {}: {}", ev.from, ev.to, ev.cause);
    if let Some(err) = a.and_then(|a| a.error.as_deref()) {
        detail.push_str(&format!(" (the weight change FAILED: {err})"));
    }
    Event {
        seq: 0,
        time_ms: 0,
        service: ev.service.clone(),
        old_weight_bp: Some(ev.weight_before_bp),
        new_weight_bp: Some(ev.weight_after_bp),
        cause,
        uid,
        detail: Some(detail),
        dry_run: ev.dry_run,
        map_update_ns: a
            .filter(|a| a.error.is_none())
            .map(|a| a.map_update.as_nanos() as u64),
        since_decision_ns: a
            .and_then(|a| a.since_decision)
            .map(|d| d.as_nanos() as u64),
        fleet_rollout: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rollout::engine::StateName;

    fn operator(command: &str) -> RolloutEvent {
        RolloutEvent {
            seq: 1,
            at: Duration::from_secs(5),
            service: "web".into(),
            from: StateName::Running,
            to: StateName::RolledBack,
            cause: RolloutCause::Operator {
                command: command.into(),
                uid: Some(1000),
            },
            weight_before_bp: 2500,
            weight_after_bp: 0,
            dry_run: false,
            actuation: None,
        }
    }

    #[test]
    fn operator_rollback_is_a_manual_rollback_with_its_uid() {
        let e = to_event(&operator("rollback"));
        assert_eq!(e.cause, Cause::ManualRollback);
        assert_eq!(e.uid, Some(1000));
        assert_eq!((e.old_weight_bp, e.new_weight_bp), (Some(2500), Some(0)));
        assert_eq!(
            super::super::metrics::rollback_cause(&e).as_deref(),
            Some("manual-rollback")
        );
    }

    #[test]
    fn other_operator_commands_are_not_rollbacks() {
        for command in ["abort", "pause", "start", "freeze"] {
            let e = to_event(&operator(command));
            assert_eq!(e.cause, Cause::Rollout, "{command}");
            assert_eq!(super::super::metrics::rollback_cause(&e), None, "{command}");
        }
        assert_eq!(to_event(&operator("promote")).cause, Cause::Promote);
    }
}
