//! The daemon's single owner of the data plane and the persisted state: an actor on its own
//! OS thread, fed by a channel.
//!
//! The thread is spawned by the caller of `run`, so it lives in the caller's network
//! namespace: netlink attachment and interface names are per namespace.
//!
//! Over 700 lines: the one owner of the data plane and the state, with a method per command it
//! answers; reload planning, rollouts, state, history and start-up recovery live in their own
//! modules.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::ControlFlow,
};

use tokio::sync::{broadcast, mpsc};
use tracing::{error, info, warn};

use super::{
    DaemonError,
    engine::Command,
    metrics::MetricsState,
    rollouts::{Outcome, Rollouts, to_event},
    startup::start_values,
    state::{AttachmentRecord, Source, State, Store},
    webhooks::SHUTDOWN_GRACE,
};
use crate::{
    api::{
        ControlError,
        types::{
            DetachReport, FleetSeen, FlowEntry, Flows, InterfaceStatus, RolloutReply,
            ServiceStatus, Status, WeightChange,
        },
    },
    config::Config,
    dataplane::{
        self, Adoption, DataPlane, Hook, LoadOptions, SweepPolicy, flow_clock_ns, linked_interfaces,
    },
    events::{Cause, Event},
    model::{Service, percent},
    rollout::OperatorCommand,
    util::error_chain,
};

pub(super) struct Actor {
    pub(super) dp: DataPlane,
    pub(super) config: Config,
    pub(super) slots: BTreeMap<String, u32>,
    pub(super) state: State,
    pub(super) store: Store,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) rollouts: Rollouts,
    pub(super) metrics: MetricsState,
    pub(super) refusals: super::refusals::Refusals,
    /// The last failure to register listeners, logged once until it changes.
    listener_error: Option<String>,
    /// What the fleet agent last saw (`[fleet]` only), shown in the status.
    fleet: Option<FleetSeen>,
}

pub(super) fn dp_err(e: &dataplane::Error) -> ControlError {
    ControlError::Internal(format!("data plane: {}", error_chain(e)))
}

impl Actor {
    pub(super) fn start(
        config: Config,
        events: broadcast::Sender<Event>,
        mut rollouts: Rollouts,
    ) -> Result<Self, DaemonError> {
        rollouts.webhooks.set_targets(&config.daemon.notify);
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
            metrics: MetricsState::new(loaded.state.log.next_seq)
                .with_webhooks(rollouts.webhooks.stats.clone()),
            listener_error: None,
            fleet: None,
            state: loaded.state,
            store,
            events,
            rollouts,
            refusals: super::refusals::Refusals::default(),
        };
        actor
            .apply_initial(loaded.source)
            .map_err(DaemonError::DataPlane)?;
        actor.sync_rollouts();
        actor.attach_initial()?;
        actor.persist();
        Ok(actor)
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.blocking_recv() {
            if self.handle(cmd).is_break() {
                self.rollouts.webhooks.drain(SHUTDOWN_GRACE);
                return;
            }
        }
        self.persist();
        info!("engine stopped; the data plane stays attached");
        // Last: the state is safe before the notifications of its last events go out.
        self.rollouts.webhooks.drain(SHUTDOWN_GRACE);
    }

    /// Carries out one command; `Break` when the engine stops (shutdown, detach).
    fn handle(&mut self, cmd: Command) -> ControlFlow<()> {
        match cmd {
            Command::Status(r) => {
                let _ = r.send(self.status());
            }
            Command::Service(name, r) => {
                let _ = r.send(self.service_status(&name));
            }
            Command::SetWeight {
                name,
                weight,
                uid,
                reply,
            } => {
                let _ = reply.send(self.operator_weight(&name, weight.bp(), uid));
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
                    return ControlFlow::Break(());
                }
            }
            Command::Sweep(r) => {
                self.sweep();
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
                fleet,
                reply,
            } => {
                let _ = reply.send(self.rollout_command(&name, command, uid, fleet));
            }
            Command::Refused { uid, service, what } => self.refused(uid, service, &what),
            Command::FleetSeen(seen) => self.fleet = Some(seen),
            Command::History(name, r) => {
                let _ = r.send(self.history(name));
            }
            Command::GreenFlows(name, r) => {
                let _ = r.send(self.green_flows(&name));
            }
            Command::Health { service, report } => {
                if let Some(o) = self.rollouts.health(&mut self.dp, &service, report) {
                    self.take_outcome(&service, o);
                }
            }
            Command::Analysis { service, result } => {
                if let Some(o) = self.rollouts.analysis(&mut self.dp, &service, result) {
                    self.take_outcome(&service, o);
                }
            }
            Command::Hook { service, answer } => {
                if let Some(o) = self.rollouts.hook(&mut self.dp, &service, answer) {
                    self.take_outcome(&service, o);
                }
            }
            Command::Tick => self.tick(),
            Command::Shutdown(r) => {
                self.persist();
                self.rollouts.persist(false);
                info!("engine stopped; the data plane stays attached");
                let _ = r.send(());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn sweep(&mut self) {
        match self.dp.sweep(&SweepPolicy::default()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!("swept {n} ended or idle flows"),
            Err(e) => warn!("flow sweep: {}", error_chain(&e)),
        }
    }

    /// Samples the counters and ticks the rollout engines; registers the listeners of
    /// socket-dispatched backends that have none remembered (a reuseport group whose one
    /// remembered member closed, a listener that appeared while no program could see it).
    fn tick(&mut self) {
        match self.dp.register_listeners() {
            Ok(0) => self.listener_error = None,
            Ok(n) => {
                info!("socket dispatch: registered {n} listening sockets");
                self.listener_error = None;
            }
            Err(e) => {
                let text = error_chain(&e);
                if self.listener_error.as_ref() != Some(&text) {
                    warn!("socket dispatch: registering listeners: {text}");
                    self.listener_error = Some(text);
                }
            }
        }
        for o in self.rollouts.tick(&mut self.dp) {
            let name = o.events.first().map(|e| e.service.clone());
            if let Some(name) = name {
                self.take_outcome(&name, o);
            }
        }
    }

    pub(super) fn persist(&mut self) {
        self.state.attachments = self
            .dp
            .attachments()
            .into_iter()
            .map(|(name, a)| {
                let record = AttachmentRecord {
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

    pub(super) fn record(
        &mut self,
        service: &str,
        old: Option<u16>,
        new: Option<u16>,
        cause: Cause,
        uid: Option<u32>,
    ) {
        let show =
            |w: Option<u16>| w.map_or_else(|| "none".to_owned(), |w| format!("{}%", percent(w)));
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

    /// Sets every configured service: the live pinned values win over the state file (read
    /// from `source`), which wins over the configuration (see `startup`).
    fn apply_initial(&mut self, source: Source) -> Result<(), dataplane::Error> {
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
            let saved = self.state.weights.get(&spec.name).copied();
            let live = existing.as_ref().map(|(_, s)| s);
            let start = start_values(
                live,
                saved,
                &spec.service,
                self.state.swapped.contains(&spec.name),
            );
            if let Some(detail) = start.disagreement(saved, source) {
                warn!("{}: {detail}", spec.name);
                let old = live.map(|s| s.config.weight);
                let ev = Event {
                    detail: Some(detail),
                    ..Event::new(&spec.name, old, Some(start.weight), Cause::Restore, None)
                };
                let ev = self.state.log.push(ev);
                let _ = self.events.send(ev);
            }
            if start.swapped {
                self.state.swapped.insert(spec.name.clone());
            } else {
                self.state.swapped.remove(&spec.name);
            }
            let (weight, cause, from) = (start.weight, start.cause, start.from);
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
            info!("{}: weight {}% from the {from}", spec.name, percent(weight));
            if old != Some(weight) {
                self.record(&spec.name, old, Some(weight), cause, None);
            }
            self.slots.insert(spec.name.clone(), slot);
            self.state.weights.insert(spec.name.clone(), weight);
        }
        self.dp.adopt_socket_dispatch()?;
        let names: BTreeSet<&String> = specs.iter().map(|s| &s.name).collect();
        self.state.weights.retain(|n, _| names.contains(n));
        Ok(())
    }

    fn attach_initial(&mut self) -> Result<(), DaemonError> {
        let dir = self.config.daemon.bpffs_dir.clone();
        let pinned = linked_interfaces(&dir);
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
                    "adopted, same build: this run's copy swapped into the pinned links".to_owned()
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
            let _ = dataplane::attach::detach_legacy(iface, aya::programs::TcAttachType::Ingress);
        }
    }

    /// The configured service with blue and green swapped if a promote swapped them.
    pub(super) fn with_roles(&self, name: &str, svc: &Service) -> Service {
        let mut s = svc.clone();
        if self.state.swapped.contains(name) {
            std::mem::swap(&mut s.config.blue_port, &mut s.config.green_port);
        }
        s
    }

    /// Creates, resumes or updates the rollout engine of every configured service and
    /// drops those of services that are gone.
    pub(super) fn sync_rollouts(&mut self) {
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
            let mut e = to_event(ev);
            e.fleet_rollout = self.state.fleet_rollouts.get(name).cloned();
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
                percent(e.old_weight_bp.unwrap_or(0)),
                percent(e.new_weight_bp.unwrap_or(0)),
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

    /// An operator's rollout command, or the fleet agent's for the fleet rollout `fleet`.
    fn rollout_command(
        &mut self,
        name: &str,
        command: OperatorCommand,
        uid: u32,
        fleet: Option<String>,
    ) -> Result<RolloutReply, ControlError> {
        self.slot_of(name)?;
        let what = command.name();
        let starts = matches!(
            command,
            OperatorCommand::Start { .. } | OperatorCommand::BlueGreen { .. }
        );
        let o = self
            .rollouts
            .command(&mut self.dp, name, command, uid)
            .map_err(|e| ControlError::Conflict(e.to_string()))?;
        match fleet {
            Some(f) => {
                info!("{name}: rollout command {what} by the fleet agent (fleet rollout {f})");
                self.state.fleet_rollouts.insert(name.to_owned(), f);
            }
            None => {
                info!("{name}: rollout command {what} by uid {uid}");
                // A rollout started here is not the fleet's (its events no longer say so).
                if starts {
                    self.state.fleet_rollouts.remove(name);
                }
            }
        }
        let events = self.take_outcome(name, o);
        let slot = self.slot_of(name)?;
        let weight_bp = self
            .dp
            .services()
            .map_err(|e| dp_err(&e))?
            .get(&slot)
            .map_or(0, |s| s.config.weight);
        let (rollout, _) = self.rollouts.view(name).ok_or_else(|| {
            ControlError::Internal(format!("service {name:?} has no rollout engine"))
        })?;
        Ok(RolloutReply {
            service: name.to_owned(),
            events,
            weight_bp,
            rollout,
            drain: None,
        })
    }

    /// Green's open connections: its flow entries that have not ended (rewrite) and the
    /// connections socket dispatch handed to it that have not closed.
    fn green_flows(&mut self, name: &str) -> Result<u64, ControlError> {
        let slot = self.slot_of(name)?;
        let rewritten = self
            .dp
            .flows(Some(slot))
            .map_err(|e| dp_err(&e))?
            .iter()
            .filter(|f| f.backend as u8 & 1 == 1 && !f.has_ended())
            .count() as u64;
        let socket = self.dp.socket_counters(slot).map_err(|e| dp_err(&e))?[1].open();
        Ok(rewritten + socket)
    }

    pub(super) fn slot_of(&self, name: &str) -> Result<u32, ControlError> {
        self.slots
            .get(name)
            .copied()
            .ok_or_else(|| ControlError::UnknownService(name.to_owned()))
    }

    /// An operator's weight change: the one kernel write (`DataPlane::set_weight`), its event
    /// with the uid, the state persisted, and the rollout told (a ramp stops there).
    fn operator_weight(
        &mut self,
        name: &str,
        bp: u16,
        uid: u32,
    ) -> Result<WeightChange, ControlError> {
        let slot = self.slot_of(name)?;
        let old = self
            .dp
            .service_config(slot)
            .map_err(|e| dp_err(&e))?
            .map(|c| c.weight)
            .ok_or_else(|| {
                ControlError::Internal(format!("service {name:?} is missing from the maps"))
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
        Ok(WeightChange {
            service: name.to_owned(),
            old_weight_bp: old,
            new_weight_bp: bp,
            event,
        })
    }

    fn statuses(&mut self, only: Option<&str>) -> Result<Vec<ServiceStatus>, dataplane::Error> {
        let live_services = self.dp.services()?;
        let live_flows = self.dp.flow_counts()?;
        let listening = self.dp.listener_counts()?;
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
            let counters = self
                .dp
                .counters_with(slot, live_flows.get(&slot).copied().unwrap_or_default())?;
            let mut st =
                ServiceStatus::new(&spec.name, slot, svc, counters).with_listeners(svc, &listening);
            if let Some((rollout, health)) = self.rollouts.view(&spec.name) {
                st.rollout = Some(rollout);
                st.health = health;
            }
            st.fleet = self
                .fleet
                .as_ref()
                .and_then(|f| f.services.get(&spec.name).cloned());
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
            skipped_packets: self
                .dp
                .skip_counts()
                .map(|c| c.by_name())
                .unwrap_or_else(|e| {
                    error!("reading the skip counters: {}", error_chain(&e));
                    std::collections::BTreeMap::new()
                }),
            socket_dispatch_unavailable: self.dp.socket_dispatch_unavailable().map(str::to_owned),
            listener_registration_problem: self
                .dp
                .listener_registration_problem()
                .map(str::to_owned),
            fleet: self.fleet.as_ref().map(|f| f.agent.clone()),
        }
    }

    fn service_status(&mut self, name: &str) -> Result<ServiceStatus, ControlError> {
        self.slot_of(name)?;
        self.statuses(Some(name))
            .map_err(|e| dp_err(&e))?
            .pop()
            .ok_or_else(|| {
                ControlError::Internal(format!("service {name:?} is missing from the maps"))
            })
    }

    fn flows(&mut self, name: &str) -> Result<Flows, ControlError> {
        let slot = self.slot_of(name)?;
        let now = flow_clock_ns();
        let flows = self
            .dp
            .flows(Some(slot))
            .map_err(|e| dp_err(&e))?
            .into_iter()
            .map(|f| FlowEntry::new(&f, now))
            .collect();
        Ok(Flows {
            service: name.to_owned(),
            flows,
        })
    }

    /// Removes the data plane for good: this process's attachments, what an earlier run
    /// left pinned, and the pins (maps included).
    fn detach(&mut self) -> Result<DetachReport, ControlError> {
        let dir = self.config.daemon.bpffs_dir.clone();
        let interfaces: Vec<String> = self.dp.attachments().into_iter().map(|(n, _)| n).collect();
        self.dp.detach_all().map_err(|e| dp_err(&e))?;
        self.persist();
        self.slots.clear();
        // The pinned maps go with the directory; our handles close when the engine stops.
        dataplane::detach_pinned(&dir, &[]).map_err(|e| match e {
            dataplane::Error::RemovePins { .. } => ControlError::Internal(error_chain(&e)),
            e => dp_err(&e),
        })?;
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
        let status = self.status();
        let entries = self
            .dp
            .flow_counts()
            .ok()
            .map(|c| c.values().flatten().sum::<u64>());
        let events = self.state.log.since(self.metrics.next_seq());
        self.metrics.observe_events(&events);
        self.metrics.render(&status, entries)
    }
}
