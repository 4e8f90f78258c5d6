//! The daemon's single owner of the data plane and the persisted state: an actor on its own
//! OS thread, fed by a channel.
//!
//! The thread is spawned by the caller of `run`, so it lives in the caller's network
//! namespace: netlink attachment and interface names are per namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    thread::JoinHandle,
};

use hyper::StatusCode;
use shifter_common::{FLOW_ESTABLISHED, FLOW_FIN_IN, FLOW_FIN_OUT, FLOW_RECOVERED, counter_index};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::{
    Adoption, DataPlane, Hook, LoadOptions, Service,
    api::{
        error::ApiError,
        types::{
            Counters, DetachReport, FlowEntry, Flows, InterfaceStatus, ReloadReport, ServiceStatus,
            Status,
        },
    },
    config::{Config, ServiceSpec, format_percent},
    events::{Cause, Event},
    flows::SweepPolicy,
    state::{Source, State, Store},
    util::{error_chain, monotonic_ns},
};

use super::{
    DaemonError,
    rollouts::{Outcome, Rollouts, to_event},
};
use crate::{api::types::RolloutReply, health::CheckReport, rollout::OperatorCommand};

type Reply<T> = oneshot::Sender<T>;

pub(crate) enum Command {
    Status(Reply<Status>),
    Service(String, Reply<Result<ServiceStatus, ApiError>>),
    SetWeight {
        name: String,
        bp: u16,
        uid: u32,
        reply: Reply<Result<crate::api::types::WeightChange, ApiError>>,
    },
    Flows(String, Reply<Result<Flows, ApiError>>),
    Events(u64, Reply<Vec<Event>>),
    Reload(Box<Config>, Reply<ReloadReport>),
    Detach(Reply<Result<DetachReport, ApiError>>),
    Sweep(Reply<()>),
    Metrics(Reply<String>),
    Ping(Reply<()>),
    /// A rollout command (`rollout ...`, `promote`, `rollback`, `blue-green`).
    Rollout {
        name: String,
        command: OperatorCommand,
        uid: u32,
        reply: Reply<Result<RolloutReply, ApiError>>,
    },
    /// After `rollback --drain-timeout`: green's flows left (none are closed).
    GreenFlows(String, Reply<Result<u64, ApiError>>),
    /// A health checker's report.
    Health {
        service: String,
        report: CheckReport,
    },
    /// Sample counters and tick the rollout engines (end of a hold, or periodic).
    Tick,
    /// Persist and stop; the data plane stays attached.
    Shutdown(Reply<()>),
}

/// Handle to the engine thread.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    /// When the earliest rollout hold ends (for the timer task).
    deadline: watch::Receiver<Option<std::time::Instant>>,
}

impl Engine {
    /// Starts the engine thread: loads state, loads or adopts the data plane, applies the
    /// services and attaches. Returns once that is done (or failed).
    pub(crate) async fn start(config: Config) -> Result<(Self, JoinHandle<()>), DaemonError> {
        let (tx, rx) = mpsc::channel(64);
        let (events, _) = broadcast::channel(256);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (deadline_tx, deadline) = watch::channel(None);
        let ev = events.clone();
        let rollouts = Rollouts::new(
            &config.daemon.state_dir,
            tokio::runtime::Handle::current(),
            tx.downgrade(),
            deadline_tx,
        );
        let thread = std::thread::Builder::new()
            .name("shifter-engine".into())
            .spawn(move || match Actor::start(config, ev, rollouts) {
                Ok(actor) => {
                    let _ = ready_tx.send(Ok(()));
                    actor.run(rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(DaemonError::Thread)?;
        match ready_rx.await {
            Ok(Ok(())) => Ok((
                Self {
                    tx,
                    events,
                    deadline,
                },
                thread,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(DaemonError::EngineGone)
            }
        }
    }

    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, ApiError> {
        let (reply, rx) = oneshot::channel();
        let gone = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon is shutting down",
            )
        };
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// [`Engine::call`] for commands whose reply is itself a result: one error either way.
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<Result<T, ApiError>>) -> Command,
    ) -> Result<T, ApiError> {
        self.call(make).await?
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// When the earliest rollout hold ends.
    pub(crate) fn deadline(&self) -> watch::Receiver<Option<std::time::Instant>> {
        self.deadline.clone()
    }

    /// Posts a command without waiting for an answer (timer ticks).
    pub(crate) async fn post(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Stops the engine: it persists the state and drops the data plane handle, which
    /// leaves every attachment in place.
    pub(crate) async fn close(self) {
        let _ = self.call(Command::Shutdown).await;
    }
}

struct Actor {
    dp: DataPlane,
    config: Config,
    slots: BTreeMap<String, u32>,
    state: State,
    store: Store,
    events: broadcast::Sender<Event>,
    rollouts: Rollouts,
    metrics: crate::metrics::MetricsState,
}

fn dp_err(e: &crate::Error) -> ApiError {
    ApiError::internal(format!("data plane: {}", error_chain(e)))
}

impl Actor {
    fn start(
        config: Config,
        events: broadcast::Sender<Event>,
        rollouts: Rollouts,
    ) -> Result<Self, DaemonError> {
        let store = Store::new(&config.daemon.state_dir);
        let loaded = store.load();
        for w in &loaded.warnings {
            warn!("{w}");
        }
        match loaded.source {
            Source::Current => info!("state loaded from {}", store.path().display()),
            Source::Previous => warn!("state restored from the previous good copy"),
            Source::Empty => {
                info!("no saved state; weights come from the pinned maps or the configuration")
            }
        }
        let mut opts = LoadOptions::new(&config.daemon.bpffs_dir);
        opts.flow_capacity = config.daemon.flow_table_size;
        let adopting = config
            .daemon
            .bpffs_dir
            .join(shifter_common::MAP_FLOWS)
            .exists();
        let dp = DataPlane::load(&opts).map_err(DaemonError::DataPlane)?;
        info!(
            "data plane loaded, pins under {} ({})",
            config.daemon.bpffs_dir.display(),
            if adopting {
                "adopted the pinned maps: flows and counters kept"
            } else {
                "fresh maps"
            }
        );
        let mut actor = Self {
            dp,
            config,
            slots: BTreeMap::new(),
            metrics: crate::metrics::MetricsState::new(loaded.state.log.next_seq),
            state: loaded.state,
            store,
            events,
            rollouts,
        };
        actor.apply_initial().map_err(DaemonError::DataPlane)?;
        actor.sync_rollouts();
        actor.attach_initial()?;
        actor.persist();
        Ok(actor)
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                Command::Status(r) => {
                    let _ = r.send(self.status());
                }
                Command::Service(name, r) => {
                    let _ = r.send(self.service_status(&name));
                }
                Command::SetWeight {
                    name,
                    bp,
                    uid,
                    reply,
                } => {
                    let _ = reply.send(self.set_weight(&name, bp, uid));
                }
                Command::Flows(name, r) => {
                    let _ = r.send(self.flows(&name));
                }
                Command::Events(since, r) => {
                    let _ = r.send(self.state.log.since(since));
                }
                Command::Reload(config, r) => {
                    let _ = r.send(self.reload(*config));
                }
                Command::Detach(r) => {
                    let res = self.detach();
                    let ok = res.is_ok();
                    let _ = r.send(res);
                    if ok {
                        return;
                    }
                }
                Command::Sweep(r) => {
                    match self.dp.sweep(&SweepPolicy::default()) {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!("swept {n} ended or idle flows"),
                        Err(e) => warn!("flow sweep: {}", error_chain(&e)),
                    }
                    let _ = r.send(());
                }
                Command::Metrics(r) => {
                    let _ = r.send(self.metrics());
                }
                Command::Ping(r) => {
                    let _ = r.send(());
                }
                Command::Rollout {
                    name,
                    command,
                    uid,
                    reply,
                } => {
                    let _ = reply.send(self.rollout_command(&name, command, uid));
                }
                Command::GreenFlows(name, r) => {
                    let _ = r.send(self.green_flows(&name));
                }
                Command::Health { service, report } => {
                    if let Some(o) = self.rollouts.health(&mut self.dp, &service, report) {
                        self.take_outcome(&service, o);
                    }
                }
                Command::Tick => {
                    for o in self.rollouts.tick(&mut self.dp) {
                        let name = o.events.first().map(|e| e.service.clone());
                        if let Some(name) = name {
                            self.take_outcome(&name, o);
                        }
                    }
                }
                Command::Shutdown(r) => {
                    self.persist();
                    self.rollouts.persist(false);
                    info!("engine stopped; the data plane stays attached");
                    let _ = r.send(());
                    return;
                }
            }
        }
        self.persist();
        info!("engine stopped; the data plane stays attached");
    }

    fn persist(&mut self) {
        self.state.attachments = self
            .dp
            .attachments()
            .into_iter()
            .map(|(name, a)| {
                let record = crate::state::AttachmentRecord {
                    hook: a.hook.to_string(),
                    tc_mode: a.tc_mode.to_string(),
                };
                (name, record)
            })
            .collect();
        if let Err(e) = self.store.save(&self.state) {
            error!("{}", error_chain(&e));
        }
    }

    fn record(
        &mut self,
        service: &str,
        old: Option<u16>,
        new: Option<u16>,
        cause: Cause,
        uid: Option<u32>,
    ) {
        let show = |w: Option<u16>| {
            w.map_or_else(|| "none".to_owned(), |w| format!("{}%", format_percent(w)))
        };
        match uid {
            Some(uid) => info!(
                "{service}: weight {} -> {} (cause {cause}, uid {uid})",
                show(old),
                show(new)
            ),
            None => info!(
                "{service}: weight {} -> {} (cause {cause})",
                show(old),
                show(new)
            ),
        }
        let ev = self.state.log.record(service, old, new, cause, uid);
        let _ = self.events.send(ev);
    }

    fn apply_initial(&mut self) -> Result<(), crate::Error> {
        let live = self.dp.services()?;
        for svc in live.values() {
            if !self
                .config
                .services
                .iter()
                .any(|s| s.service.same_identity(svc))
            {
                info!("removing service {svc}: pinned but no longer configured");
                self.dp.remove_service(svc)?;
            }
        }
        let specs = self.config.services.clone();
        for spec in &specs {
            let existing = live
                .iter()
                .find(|(_, s)| s.same_identity(&spec.service))
                .map(|(slot, s)| (*slot, s.clone()));
            let (weight, cause, from) = match (self.state.weights.get(&spec.name), &existing) {
                (Some(w), _) => (*w, Cause::Restore, "state file"),
                (None, Some((_, s))) => (s.config.weight, Cause::Restore, "pinned maps"),
                (None, None) => (spec.service.config.weight, Cause::Config, "configuration"),
            };
            let mut want = self.with_roles(&spec.name, &spec.service);
            want.config.weight = weight;
            let slot = match &existing {
                Some((slot, s)) if *s == want => {
                    info!("{}: adopted unchanged ({want}, slot {slot})", spec.name);
                    *slot
                }
                _ => self.dp.set_service(&want)?,
            };
            let old = existing.as_ref().map(|(_, s)| s.config.weight);
            info!(
                "{}: weight {}% from the {from}",
                spec.name,
                format_percent(weight)
            );
            if old != Some(weight) {
                self.record(&spec.name, old, Some(weight), cause, None);
            }
            self.slots.insert(spec.name.clone(), slot);
            self.state.weights.insert(spec.name.clone(), weight);
        }
        let names: BTreeSet<&String> = specs.iter().map(|s| &s.name).collect();
        self.state.weights.retain(|n, _| names.contains(n));
        Ok(())
    }

    fn attach_initial(&mut self) -> Result<(), DaemonError> {
        let dir = self.config.daemon.bpffs_dir.clone();
        let pinned = crate::pinned::linked_interfaces(&dir);
        for (iface, _) in pinned
            .iter()
            .filter(|(i, _)| !self.config.interfaces.iter().any(|c| &c.name == *i))
        {
            info!("{iface}: attached by an earlier run but no longer configured; detaching");
            if let Err(e) = DataPlane::detach_leftover(&dir, iface) {
                warn!("{iface}: detaching leftover: {}", error_chain(&e));
            }
        }
        for ic in self.config.interfaces.clone() {
            let kinds = pinned.get(&ic.name).cloned().unwrap_or_default();
            self.prepare_hook_change(&ic.name, ic.hook, &kinds);
            let info = self
                .dp
                .attach(&ic.name, ic.hook)
                .map_err(|source| DaemonError::Attach {
                    iface: ic.name.clone(),
                    source,
                })?;
            let what = match info.adoption() {
                Adoption::SameBuild => {
                    "adopted, same build: the pinned links keep their programs".to_owned()
                }
                Adoption::Replaced => {
                    "upgraded programs, maps kept: the programs were replaced atomically in place"
                        .to_owned()
                }
                Adoption::Fresh if kinds.is_empty() => "attached".to_owned(),
                Adoption::Fresh => format!(
                    "attached (ingress: {}, egress: {})",
                    info.ingress, info.egress
                ),
            };
            info!(
                "{}: {what}; ingress={} egress=tc via {}",
                ic.name, info.hook, info.tc_mode
            );
        }
        Ok(())
    }

    /// When the ingress hook of an interface changed since the last run, the old ingress
    /// attachment would stay next to the new one: remove it first.
    fn prepare_hook_change(&mut self, iface: &str, hook: Hook, pinned: &BTreeSet<String>) {
        let stale = match hook {
            Hook::Tc => pinned.contains("xdp"),
            Hook::Xdp | Hook::XdpGeneric => pinned.contains("ingress"),
        };
        let legacy_ingress = hook != Hook::Tc && !pinned.contains("ingress");
        if stale {
            info!("{iface}: ingress hook changed to {hook}; removing the old attachment");
            if let Err(e) = DataPlane::detach_leftover(&self.config.daemon.bpffs_dir, iface) {
                warn!("{iface}: {}", error_chain(&e));
            }
        } else if legacy_ingress {
            // A legacy TC ingress filter of an earlier run has no pin; remove it if present.
            let _ = crate::attach::detach_legacy(iface, aya::programs::TcAttachType::Ingress);
        }
    }

    /// The configured service with blue and green swapped if a promote swapped them.
    fn with_roles(&self, name: &str, svc: &Service) -> Service {
        let mut s = svc.clone();
        if self.state.swapped.contains(name) {
            std::mem::swap(&mut s.config.blue_port, &mut s.config.green_port);
        }
        s
    }

    /// Creates, resumes or updates the rollout engine of every configured service and
    /// drops those of services that are gone.
    fn sync_rollouts(&mut self) {
        let live = match self.dp.services() {
            Ok(l) => l,
            Err(e) => {
                error!("rollouts: reading the services: {}", error_chain(&e));
                return;
            }
        };
        for spec in self.config.services.clone() {
            let Some(&slot) = self.slots.get(&spec.name) else {
                self.rollouts.remove(&spec.name);
                continue;
            };
            let Some(svc) = live.get(&slot) else {
                continue;
            };
            for o in self.rollouts.ensure(&mut self.dp, &spec, slot, svc) {
                self.take_outcome(&spec.name, o);
            }
        }
        let gone: Vec<String> = self
            .state
            .weights
            .keys()
            .filter(|n| !self.slots.contains_key(*n))
            .cloned()
            .collect();
        for n in gone {
            self.rollouts.remove(&n);
        }
        for spec in &self.config.services {
            if !self.slots.contains_key(&spec.name) {
                self.rollouts.remove(&spec.name);
            }
        }
    }

    /// Records what a batch of rollout effects did: its events, the weight it set, a swap.
    fn take_outcome(&mut self, name: &str, o: Outcome) -> Vec<Event> {
        if let Some(w) = o.weight {
            self.state.weights.insert(name.to_owned(), w);
        }
        if o.swapped && !self.state.swapped.remove(name) {
            self.state.swapped.insert(name.to_owned());
        }
        let mut recorded = Vec::new();
        for ev in &o.events {
            // An operator's weight change is already recorded; the rollout's own event
            // only matters when it changed the rollout's state (a ramp froze).
            if matches!(ev.cause, crate::rollout::Cause::OutsideWeightChange { .. })
                && ev.from == ev.to
            {
                continue;
            }
            let e = to_event(ev);
            let timing = match (e.map_update_ns, e.since_decision_ns) {
                (Some(m), Some(d)) => format!(
                    "; map update {:.3} ms, {:.3} ms after the deciding check",
                    m as f64 / 1e6,
                    d as f64 / 1e6
                ),
                (Some(m), None) => format!("; map update {:.3} ms", m as f64 / 1e6),
                _ => String::new(),
            };
            info!(
                "{name}: {}weight {}% -> {}% (cause {}{}) {}{timing}",
                if e.dry_run { "dry run: would-be " } else { "" },
                format_percent(e.old_weight_bp.unwrap_or(0)),
                format_percent(e.new_weight_bp.unwrap_or(0)),
                e.cause,
                e.uid.map(|u| format!(", uid {u}")).unwrap_or_default(),
                e.detail.as_deref().unwrap_or("")
            );
            let stored = self.state.log.push(e);
            let _ = self.events.send(stored.clone());
            recorded.push(stored);
        }
        if o.weight.is_some() || o.swapped || !o.events.is_empty() {
            self.persist();
        }
        recorded
    }

    fn rollout_command(
        &mut self,
        name: &str,
        command: OperatorCommand,
        uid: u32,
    ) -> Result<RolloutReply, ApiError> {
        self.slot_of(name)?;
        let what = command.name();
        let o = self
            .rollouts
            .command(&mut self.dp, name, command, uid)
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
        info!("{name}: rollout command {what} by uid {uid}");
        let events = self.take_outcome(name, o);
        let slot = self.slot_of(name)?;
        let weight_bp = self
            .dp
            .services()
            .map_err(|e| dp_err(&e))?
            .get(&slot)
            .map_or(0, |s| s.config.weight);
        let (rollout, _) = self
            .rollouts
            .view(name)
            .ok_or_else(|| ApiError::internal(format!("service {name:?} has no rollout engine")))?;
        Ok(RolloutReply {
            service: name.to_owned(),
            events,
            weight_bp,
            rollout,
            drain: None,
        })
    }

    fn green_flows(&mut self, name: &str) -> Result<u64, ApiError> {
        let slot = self.slot_of(name)?;
        Ok(self
            .dp
            .flows(Some(slot))
            .map_err(|e| dp_err(&e))?
            .iter()
            .filter(|f| f.backend as u8 & 1 == 1 && !f.has_ended())
            .count() as u64)
    }

    fn slot_of(&self, name: &str) -> Result<u32, ApiError> {
        self.slots
            .get(name)
            .copied()
            .ok_or_else(|| ApiError::unknown_service(name))
    }

    fn set_weight(
        &mut self,
        name: &str,
        bp: u16,
        uid: u32,
    ) -> Result<crate::api::types::WeightChange, ApiError> {
        let slot = self.slot_of(name)?;
        let old = self
            .dp
            .service_config(slot)
            .map_err(|e| dp_err(&e))?
            .map(|c| c.weight)
            .ok_or_else(|| {
                ApiError::internal(format!("service {name:?} is missing from the maps"))
            })?;
        let mut event = None;
        if old != bp {
            self.dp.set_weight(slot, bp).map_err(|e| dp_err(&e))?;
            self.state.weights.insert(name.to_owned(), bp);
            self.record(name, Some(old), Some(bp), Cause::Operator, Some(uid));
            event = self.state.log.events.back().cloned();
            self.persist();
            // A ramp under way stops where the operator put the weight.
            if let Ok(o) = self.rollouts.feed(
                &mut self.dp,
                name,
                crate::rollout::Input::WeightChanged { bp },
                None,
            ) {
                self.take_outcome(name, o);
            }
        }
        Ok(crate::api::types::WeightChange {
            service: name.to_owned(),
            old_weight_bp: old,
            new_weight_bp: bp,
            event,
        })
    }

    fn counters(&mut self, slot: u32, live: [u64; 2]) -> Result<[Counters; 2], crate::Error> {
        let raw = self.dp.counters(slot)?;
        let mut urem = [0u64; 2];
        {
            let map = self.dp.user_removed_map()?;
            for (b, u) in urem.iter_mut().enumerate() {
                *u = map
                    .get(&counter_index(slot, b as u8), 0)
                    .map_err(crate::error::map_err(shifter_common::MAP_USER_REMOVED))?;
            }
        }
        Ok(counters_view(&raw, urem, live))
    }

    fn statuses(&mut self, only: Option<&str>) -> Result<Vec<ServiceStatus>, crate::Error> {
        let live_services = self.dp.services()?;
        let live_flows = self.dp.flow_counts()?;
        let mut out = Vec::new();
        for spec in self.config.services.clone() {
            if only.is_some_and(|n| n != spec.name) {
                continue;
            }
            let Some(&slot) = self.slots.get(&spec.name) else {
                continue;
            };
            let Some(svc) = live_services.get(&slot) else {
                continue;
            };
            let [blue, green] =
                self.counters(slot, live_flows.get(&slot).copied().unwrap_or_default())?;
            let mut st = service_status(&spec.name, slot, svc, blue, green);
            if let Some((rollout, health)) = self.rollouts.view(&spec.name) {
                st.rollout = Some(rollout);
                st.health = health;
            }
            out.push(st);
        }
        Ok(out)
    }

    fn status(&mut self) -> Status {
        let services = self.statuses(None).unwrap_or_else(|e| {
            error!("reading the maps: {}", error_chain(&e));
            Vec::new()
        });
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            bpffs_dir: self.config.daemon.bpffs_dir.display().to_string(),
            state_dir: self.config.daemon.state_dir.display().to_string(),
            flow_table_size: self.config.daemon.flow_table_size,
            interfaces: self
                .dp
                .attachments()
                .into_iter()
                .map(|(name, a)| InterfaceStatus {
                    name,
                    hook: a.hook.to_string(),
                    tc_mode: a.tc_mode.to_string(),
                })
                .collect(),
            services,
        }
    }

    fn service_status(&mut self, name: &str) -> Result<ServiceStatus, ApiError> {
        self.slot_of(name)?;
        self.statuses(Some(name))
            .map_err(|e| dp_err(&e))?
            .pop()
            .ok_or_else(|| ApiError::internal(format!("service {name:?} is missing from the maps")))
    }

    fn flows(&mut self, name: &str) -> Result<Flows, ApiError> {
        let slot = self.slot_of(name)?;
        let now = monotonic_ns();
        let flows = self
            .dp
            .flows(Some(slot))
            .map_err(|e| dp_err(&e))?
            .into_iter()
            .map(|f| flow_entry(&f, now))
            .collect();
        Ok(Flows {
            service: name.to_owned(),
            flows,
        })
    }

    fn reload(&mut self, mut new: Config) -> ReloadReport {
        let mut report = ReloadReport::default();
        let (od, nd) = (&self.config.daemon, &new.daemon);
        for (field, changed) in [
            ("daemon.socket", od.socket != nd.socket),
            ("daemon.socket_group", od.socket_group != nd.socket_group),
            ("daemon.socket_mode", od.socket_mode != nd.socket_mode),
            ("daemon.state_dir", od.state_dir != nd.state_dir),
            ("daemon.bpffs_dir", od.bpffs_dir != nd.bpffs_dir),
            (
                "daemon.flow_table_size",
                od.flow_table_size != nd.flow_table_size,
            ),
            (
                "daemon.metrics_address",
                od.metrics_address != nd.metrics_address,
            ),
            (
                "daemon.sweep_interval_secs",
                od.sweep_interval != nd.sweep_interval,
            ),
        ] {
            if changed {
                warn!("reload: {field} changed; it takes effect after a restart");
                report.needs_restart.push(field.to_owned());
            }
        }
        new.daemon = self.config.daemon.clone();
        let old = std::mem::replace(&mut self.config, new.clone());
        let find = |c: &Config, name: &str| c.service(name).cloned();

        // Removed services first, so their ports are free for added ones.
        for spec in &old.services {
            if find(&new, &spec.name).is_none() {
                match self.dp.remove_service(&spec.service) {
                    Ok(()) => {
                        let w = self.state.weights.remove(&spec.name);
                        self.slots.remove(&spec.name);
                        self.state.swapped.remove(&spec.name);
                        self.record(&spec.name, w, None, Cause::Removed, None);
                        report.removed.push(spec.name.clone());
                    }
                    Err(e) => {
                        report
                            .errors
                            .push(format!("removing {}: {}", spec.name, error_chain(&e)))
                    }
                }
            }
        }
        // Changed services whose identity changed are removed before any is re-added.
        let mut readd: Vec<(ServiceSpec, u16)> = Vec::new();
        for spec in &new.services {
            let Some(o) = find(&old, &spec.name) else {
                continue;
            };
            if o.service == spec.service {
                report.unchanged.push(spec.name.clone());
                continue;
            }
            // New backend ports: an earlier promote's swap no longer applies.
            if (o.service.config.blue_port, o.service.config.green_port)
                != (
                    spec.service.config.blue_port,
                    spec.service.config.green_port,
                )
            {
                self.state.swapped.remove(&spec.name);
            }
            let current = self
                .state
                .weights
                .get(&spec.name)
                .copied()
                .unwrap_or(o.service.config.weight);
            // A weight edited in the file wins; otherwise the current (operator's) weight stays.
            let weight = if o.service.config.weight == spec.service.config.weight {
                current
            } else {
                spec.service.config.weight
            };
            if o.service.same_identity(&spec.service) {
                let mut want = self.with_roles(&spec.name, &spec.service);
                want.config.weight = weight;
                match self.dp.set_service(&want) {
                    Ok(slot) => {
                        self.slots.insert(spec.name.clone(), slot);
                        self.state.weights.insert(spec.name.clone(), weight);
                        if weight != current {
                            self.record(
                                &spec.name,
                                Some(current),
                                Some(weight),
                                Cause::Reload,
                                None,
                            );
                        }
                        report.changed.push(spec.name.clone());
                    }
                    Err(e) => {
                        report
                            .errors
                            .push(format!("updating {}: {}", spec.name, error_chain(&e)))
                    }
                }
            } else {
                match self.dp.remove_service(&o.service) {
                    Ok(()) => readd.push((spec.clone(), weight)),
                    Err(e) => {
                        report
                            .errors
                            .push(format!("updating {}: {}", spec.name, error_chain(&e)))
                    }
                }
                self.slots.remove(&spec.name);
            }
        }
        for (spec, weight) in readd {
            let current = self.state.weights.get(&spec.name).copied();
            let mut want = self.with_roles(&spec.name, &spec.service);
            want.config.weight = weight;
            match self.dp.set_service(&want) {
                Ok(slot) => {
                    self.slots.insert(spec.name.clone(), slot);
                    self.state.weights.insert(spec.name.clone(), weight);
                    if current != Some(weight) {
                        self.record(&spec.name, current, Some(weight), Cause::Reload, None);
                    }
                    report.changed.push(spec.name.clone());
                }
                Err(e) => {
                    report
                        .errors
                        .push(format!("updating {}: {}", spec.name, error_chain(&e)))
                }
            }
        }
        for spec in &new.services {
            if find(&old, &spec.name).is_some() {
                continue;
            }
            match self.dp.set_service(&spec.service) {
                Ok(slot) => {
                    self.slots.insert(spec.name.clone(), slot);
                    let w = spec.service.config.weight;
                    self.state.weights.insert(spec.name.clone(), w);
                    self.record(&spec.name, None, Some(w), Cause::Reload, None);
                    report.added.push(spec.name.clone());
                }
                Err(e) => report
                    .errors
                    .push(format!("adding {}: {}", spec.name, error_chain(&e))),
            }
        }
        // Interfaces.
        let held: BTreeMap<String, Hook> = self
            .dp
            .attachments()
            .into_iter()
            .map(|(n, a)| (n, a.hook))
            .collect();
        for (name, hook) in &held {
            let want = new.interfaces.iter().find(|i| &i.name == name);
            if want.is_none_or(|w| w.hook != *hook) {
                match self.dp.detach(name) {
                    Ok(()) => report.interfaces_detached.push(name.clone()),
                    Err(e) => report
                        .errors
                        .push(format!("detaching {name}: {}", error_chain(&e))),
                }
            }
        }
        for ic in &new.interfaces {
            if held.get(&ic.name) == Some(&ic.hook) {
                continue;
            }
            match self.dp.attach(&ic.name, ic.hook) {
                Ok(_) => report.interfaces_attached.push(ic.name.clone()),
                Err(e) => report
                    .errors
                    .push(format!("attaching {}: {}", ic.name, error_chain(&e))),
            }
        }
        self.sync_rollouts();
        for e in &report.errors {
            error!("reload: {e}");
        }
        info!(
            "configuration reloaded: added {:?}, removed {:?}, changed {:?}, unchanged {:?}",
            report.added, report.removed, report.changed, report.unchanged
        );
        self.persist();
        report
    }

    fn detach(&mut self) -> Result<DetachReport, ApiError> {
        let dir = self.config.daemon.bpffs_dir.clone();
        let interfaces: Vec<String> = self.dp.attachments().into_iter().map(|(n, _)| n).collect();
        self.dp.detach_all().map_err(|e| dp_err(&e))?;
        for iface in crate::pinned::linked_interfaces(&dir).keys() {
            DataPlane::detach_leftover(&dir, iface).map_err(|e| dp_err(&e))?;
        }
        self.persist();
        self.slots.clear();
        // The pinned maps go with the directory; our handles close when the engine stops.
        let removed = std::fs::remove_dir_all(&dir);
        if let Err(e) = &removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(ApiError::internal(format!(
                "removing {}: {e}",
                dir.display()
            )));
        }
        info!(
            "detached from {interfaces:?} and removed the pins under {}",
            dir.display()
        );
        Ok(DetachReport {
            interfaces,
            pins_removed: true,
        })
    }

    fn metrics(&mut self) -> String {
        let status = serde_json::to_value(self.status()).unwrap_or_default();
        let entries = self
            .dp
            .flow_counts()
            .ok()
            .map(|c| c.values().flatten().sum::<u64>());
        let events: Vec<serde_json::Value> = self
            .state
            .log
            .since(self.metrics.next_seq())
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect();
        self.metrics.observe_events(&events);
        self.metrics
            .render(&crate::observe::Snapshot::from_status(&status), entries)
    }
}

/// The API's counters from the kernel's (summed over CPUs), the entries userspace removed and
/// the live entries, per backend: evictions are derived (LRU evictions are silent).
pub(crate) fn counters_view(
    raw: &[shifter_common::BackendCounters; 2],
    urem: [u64; 2],
    live: [u64; 2],
) -> [Counters; 2] {
    let mut out: [Counters; 2] = Default::default();
    for b in 0..2 {
        let c = &raw[b];
        out[b] = Counters {
            new_flows: c.new_flows,
            active_flows: live[b],
            packets: c.packets,
            bytes: c.bytes,
            egress_packets: c.egress_packets,
            egress_bytes: c.egress_bytes,
            recoveries: c.recoveries,
            evictions: (c.new_flows + c.recoveries).saturating_sub(c.closed + urem[b] + live[b]),
            refusals: c.refusals,
            resets: c.resets,
            dry_new_flows: c.dry_new_flows,
        };
    }
    out
}

/// A flow-table entry as the API shows it; `now` is CLOCK_MONOTONIC in ns.
pub(crate) fn flow_entry(f: &crate::flows::Flow, now: u64) -> FlowEntry {
    FlowEntry {
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
        idle_ms: now.saturating_sub(f.last_seen_ns) / 1_000_000,
    }
}

pub(crate) fn backend_name(b: u8) -> &'static str {
    if b & 1 == 0 { "blue" } else { "green" }
}

pub(crate) fn service_status(
    name: &str,
    slot: u32,
    svc: &Service,
    blue: Counters,
    green: Counters,
) -> ServiceStatus {
    ServiceStatus {
        name: name.to_owned(),
        protocol: svc.protocol.to_string(),
        port: svc.port,
        local_addresses: svc.local_addrs.iter().map(ToString::to_string).collect(),
        blue_port: svc.config.blue_port,
        green_port: svc.config.green_port,
        weight_bp: svc.config.weight,
        weight_percent: format_percent(svc.config.weight),
        affinity: match svc.config.affinity {
            shifter_common::Affinity::Connection => "connection",
            shifter_common::Affinity::Client => "client",
        }
        .to_owned(),
        slot,
        blue,
        green,
        health: None,
        rollout: None,
    }
}
