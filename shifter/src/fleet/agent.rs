//! The fleet agent inside every daemon with `[fleet]`: it keeps a heartbeat under a lease
//! (`nodes/NODE`), reads its desired state (`desired/NODE/SERVICE`) every poll, runs it with
//! the daemon's own rollout engine through [`Control`] (steps, holds, health and kernel
//! gates, automatic rollback: all local), and reports what the engine says
//! (`reports/NODE/SERVICE`).
//!
//! After every poll it tells the daemon what it saw (etcd reachable or since when not, each
//! service's fleet rollout: phase, wave, hosts done), which `status` and `shifter watch`
//! show.
//!
//! It never needs the coordinator to roll back: the local engine's gates do that, and the
//! report tells the fleet. Each `(rollout, action)` is applied once: the agent remembers
//! what it applied, and after a restart its own report in etcd says so.
//!
//! Fail static: when etcd has not answered for a lease TTL (by then the fleet counts this
//! host as lost), a fleet ramp running here is paused where it is: the weight holds, the
//! gates and automatic rollback stay armed. When etcd answers again the agent registers
//! anew and converges: the ramp resumes if the desired state still says ramp, or rolls
//! back if it says so now.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    schema::{Action, Desired, HostPhase, HostState, Keys, NodeInfo, Report, RolloutDoc},
    store::{Store, StoreError, decode_all},
};
use crate::{
    api::{
        server::Control,
        types::{FleetAgentView, FleetSeen, ServiceFleetView, ServiceStatus},
    },
    config::FleetConfig,
    rollout::OperatorCommand,
    util::error_chain,
};

/// The uid recorded in the host's event log for the agent's commands (it runs as the daemon).
pub const AGENT_UID: u32 = 0;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A service's fleet rollout as this host sees it: what it was asked (`desired`), the
/// rollout's document (`None` before it was read), what it reported, and whether it holds
/// its ramp while cut off from etcd.
pub fn service_view(
    node: &str,
    desired: &Desired,
    doc: Option<&RolloutDoc>,
    report: Option<&Report>,
    held: bool,
) -> ServiceFleetView {
    let mut v = ServiceFleetView {
        rollout: desired.rollout.clone(),
        action: desired.action.name().to_owned(),
        reported: report
            .filter(|r| r.rollout == desired.rollout)
            .map(|r| r.state.name().to_owned()),
        held,
        ..ServiceFleetView::default()
    };
    if let Some(d) = doc.filter(|d| d.id == desired.rollout) {
        v.phase = Some(d.phase.name().to_owned());
        v.reason = d.phase.reason().map(str::to_owned);
        v.waves = d.waves.len();
        v.wave = if d.waves.is_empty() { 0 } else { d.wave + 1 };
        v.host_wave = d.wave_of(node).map(|w| w + 1);
        v.hosts = d.hosts.len();
        v.hosts_done = d.hosts.values().filter(|p| **p == HostPhase::Done).count();
    }
    v
}

/// What the local rollout of a service means for the fleet.
pub fn host_state(action: &Action, s: &ServiceStatus) -> (HostState, Option<String>) {
    match action {
        Action::Rollback => {
            if s.weight_bp == 0 {
                (HostState::Reverted, None)
            } else {
                (HostState::Running, Some("rolling back".into()))
            }
        }
        Action::Ramp { .. } => {
            let Some(r) = &s.rollout else {
                return (HostState::Running, None);
            };
            match r.state.as_str() {
                "completed" => (HostState::Completed, None),
                "rolled back" => (
                    HostState::RolledBack,
                    Some(
                        r.rolled_back
                            .clone()
                            .unwrap_or_else(|| "rolled back".into()),
                    ),
                ),
                other => (HostState::Running, Some(other.to_owned())),
            }
        }
    }
}

struct Agent<C> {
    cfg: FleetConfig,
    keys: Keys,
    store: Store,
    control: C,
    services: Vec<String>,
    lease: i64,
    /// `(service, rollout, action)` already applied here.
    applied: BTreeSet<(String, String, String)>,
    /// The last report written per service (without its time).
    reported: BTreeMap<String, Report>,
    /// The desired states last read, by service.
    desired: BTreeMap<String, Desired>,
    /// Services whose fleet ramp this agent paused while cut off (and the rollout id).
    held: BTreeMap<String, String>,
    /// The documents of the fleet rollouts in `desired`, by service, as last read.
    docs: BTreeMap<String, RolloutDoc>,
    /// Since when etcd has not answered (Unix ms), and its last error.
    unreachable: Option<(u64, String)>,
    /// What the daemon was told last.
    told: Option<FleetSeen>,
}

/// Runs the agent until `stop` turns true.
pub async fn run<C: Control>(
    cfg: FleetConfig,
    control: C,
    services: Vec<String>,
    mut stop: watch::Receiver<bool>,
) {
    let store = match Store::new(&cfg.endpoints, cfg.request_timeout, cfg.tls.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            warn!("fleet: {}", error_chain(&e));
            return;
        }
    };
    let mut a = Agent {
        keys: Keys::new(&cfg.prefix),
        cfg,
        store,
        control,
        services,
        lease: 0,
        applied: BTreeSet::new(),
        reported: BTreeMap::new(),
        desired: BTreeMap::new(),
        held: BTreeMap::new(),
        docs: BTreeMap::new(),
        unreachable: None,
        told: None,
    };
    info!(
        "fleet: agent {} on {} (lease {:?}, poll {:?})",
        a.cfg.node,
        a.cfg.endpoints.join(","),
        a.cfg.lease_ttl,
        a.cfg.poll_interval
    );
    let renew_every = a.cfg.lease_ttl / 3;
    let mut last_renew = tokio::time::Instant::now();
    let mut last_ok = tokio::time::Instant::now();
    loop {
        let res = async {
            if a.lease == 0 || last_renew.elapsed() >= renew_every {
                a.heartbeat().await?;
                last_renew = tokio::time::Instant::now();
            }
            a.converge().await
        }
        .await;
        match res {
            Ok(()) => {
                last_ok = tokio::time::Instant::now();
                if a.unreachable.take().is_some() {
                    info!("fleet: etcd answers again");
                }
            }
            Err(e) => {
                let error = error_chain(&e);
                match &mut a.unreachable {
                    Some((_, last)) => *last = error,
                    None => {
                        warn!("fleet: etcd: {error}");
                        a.unreachable = Some((now_ms(), error));
                    }
                }
                if last_ok.elapsed() >= a.cfg.lease_ttl {
                    a.hold_still().await;
                }
            }
        }
        a.tell_daemon().await;
        tokio::select! {
            () = crate::util::stopped(&mut stop) => break,
            () = tokio::time::sleep(a.cfg.poll_interval) => {}
        }
    }
    // The lease is not revoked on a clean stop: a daemon restarted within the TTL (an
    // upgrade, `systemctl restart`) is never seen as lost; one that stays down is, once the
    // lease expires.
}

impl<C: Control> Agent<C> {
    /// Renews the lease, or registers afresh under a new one when it is gone.
    async fn heartbeat(&mut self) -> Result<(), StoreError> {
        if self.lease != 0 && self.store.keepalive(self.lease).await? > 0 {
            return Ok(());
        }
        let lease = self
            .store
            .grant(self.cfg.lease_ttl.as_secs().max(1))
            .await?;
        let info = NodeInfo {
            node: self.cfg.node.clone(),
            labels: self.cfg.labels.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel: kernel_release(),
            services: self.services.clone(),
        };
        let value = serde_json::to_vec(&info).expect("serializable");
        self.store
            .put(&self.keys.node(&self.cfg.node), &value, lease)
            .await?;
        if self.lease != 0 {
            info!("fleet: lease {} was gone; registered again", self.lease);
        }
        self.lease = lease;
        Ok(())
    }

    /// Reads the desired state and runs what is new; reports every service that has one.
    async fn converge(&mut self) -> Result<(), StoreError> {
        let (kvs, _) = self
            .store
            .list(&self.keys.desired_of(&self.cfg.node))
            .await?;
        for (key, desired) in decode_all::<Desired>(&kvs) {
            let Some((_, service)) = self.keys.split_node_service("desired", &key) else {
                continue;
            };
            let service = service.to_owned();
            self.desired.insert(service.clone(), desired.clone());
            if let Some(rollout) = self.held.remove(&service)
                && rollout == desired.rollout
                && matches!(desired.action, Action::Ramp { .. })
            {
                info!("fleet: {service}: etcd is back; resuming the ramp of {rollout}");
                if let Err(e) = self
                    .control
                    .fleet_rollout(service.clone(), OperatorCommand::Resume, rollout.clone())
                    .await
                {
                    warn!("fleet: {service}: resume: {e}");
                }
            }
            self.apply_once(&service, &desired).await?;
            self.report(&service, &desired).await?;
            // A finished rollout's document no longer changes: read it once, not every poll.
            let finished = self
                .docs
                .get(&service)
                .is_some_and(|doc| doc.id == desired.rollout && doc.phase.is_terminal());
            if finished {
                continue;
            }
            if let Some(doc) = self
                .store
                .get(&self.keys.rollout(&desired.rollout))
                .await?
                .and_then(|kv| kv.json::<RolloutDoc>().ok())
            {
                self.docs.insert(service, doc);
            }
        }
        Ok(())
    }

    /// Tells the daemon what the last poll saw, for its status and `shifter watch`, when it
    /// differs from what it was told last.
    async fn tell_daemon(&mut self) {
        let services = self
            .desired
            .iter()
            .map(|(service, d)| {
                let view = service_view(
                    &self.cfg.node,
                    d,
                    self.docs.get(service),
                    self.reported.get(service),
                    self.held.contains_key(service),
                );
                (service.clone(), view)
            })
            .collect();
        let agent = FleetAgentView {
            node: self.cfg.node.clone(),
            etcd_reachable: self.unreachable.is_none(),
            unreachable_since_ms: self.unreachable.as_ref().map(|(since, _)| *since),
            last_error: self.unreachable.as_ref().map(|(_, e)| e.clone()),
        };
        let seen = FleetSeen { agent, services };
        if self.told.as_ref() == Some(&seen) {
            return;
        }
        self.control.fleet_seen(seen.clone()).await;
        self.told = Some(seen);
    }

    /// Cut off from etcd for a lease TTL: pauses every fleet ramp running here, so the
    /// weight holds (fail static) until the fleet can be asked again.
    async fn hold_still(&mut self) {
        let ramps: Vec<(String, String)> = self
            .desired
            .iter()
            .filter(|(s, d)| matches!(d.action, Action::Ramp { .. }) && !self.held.contains_key(*s))
            .map(|(s, d)| (s.clone(), d.rollout.clone()))
            .collect();
        for (service, rollout) in ramps {
            let Ok(s) = self.control.service(service.clone()).await else {
                continue;
            };
            if s.rollout.as_ref().is_none_or(|r| r.state != "running") {
                continue;
            }
            match self
                .control
                .fleet_rollout(service.clone(), OperatorCommand::Pause, rollout.clone())
                .await
            {
                Ok(r) => {
                    warn!(
                        "fleet: {service}: cut off from etcd for {:?}: ramp of {rollout} paused at {} bp (fail static)",
                        self.cfg.lease_ttl, r.weight_bp
                    );
                    self.held.insert(service, rollout);
                }
                Err(e) => warn!("fleet: {service}: pause: {e}"),
            }
        }
    }

    async fn apply_once(&mut self, service: &str, d: &Desired) -> Result<(), StoreError> {
        let id = (
            service.to_owned(),
            d.rollout.clone(),
            d.action.name().to_owned(),
        );
        if self.applied.contains(&id) {
            return Ok(());
        }
        // After a restart: our own report says whether this was applied already.
        if let Some(kv) = self
            .store
            .get(&self.keys.report(&self.cfg.node, service))
            .await?
            && let Ok(r) = kv.json::<Report>()
            && r.rollout == d.rollout
            && r.action == d.action.name()
        {
            info!(
                "fleet: {service}: {} of {} was applied before this start",
                r.action, r.rollout
            );
            self.reported.insert(service.to_owned(), r);
            self.applied.insert(id);
            return Ok(());
        }
        let result = match &d.action {
            Action::Ramp { steps_bp, hold_ms } => {
                info!(
                    "fleet: {service}: ramp {steps_bp:?} hold {hold_ms} ms (fleet rollout {})",
                    d.rollout
                );
                self.control
                    .fleet_rollout(
                        service.to_owned(),
                        OperatorCommand::Start {
                            steps: Some(steps_bp.clone()),
                            hold: Some(Duration::from_millis(*hold_ms)),
                            dry_run: false,
                        },
                        d.rollout.clone(),
                    )
                    .await
                    .map(drop)
            }
            Action::Rollback => self.roll_back(service, &d.rollout).await,
        };
        if let Err(e) = result {
            warn!("fleet: {service}: {}: {e}", d.action.name());
            self.write_report(
                service,
                Report {
                    rollout: d.rollout.clone(),
                    action: d.action.name().to_owned(),
                    state: HostState::Error,
                    weight_bp: 0,
                    detail: Some(e.to_string()),
                    at_ms: now_ms(),
                },
            )
            .await?;
        }
        self.applied.insert(id);
        Ok(())
    }

    /// Green to 0: abort a ramp under way, or roll back a finished one; nothing at 0.
    async fn roll_back(
        &self,
        service: &str,
        rollout: &str,
    ) -> Result<(), crate::api::ControlError> {
        let s = self.control.service(service.to_owned()).await?;
        if s.weight_bp == 0 {
            info!("fleet: {service}: rollback of {rollout}: green is at 0 already");
            return Ok(());
        }
        let running = s.rollout.as_ref().is_some_and(|r| {
            matches!(
                r.state.as_str(),
                "running" | "paused" | "waiting for approval" | "frozen"
            )
        });
        let cmd = if running {
            OperatorCommand::Abort
        } else {
            OperatorCommand::Rollback
        };
        info!("fleet: {service}: {} (fleet rollout {rollout})", cmd.name());
        self.control
            .fleet_rollout(service.to_owned(), cmd, rollout.to_owned())
            .await
            .map(drop)
    }

    async fn report(&mut self, service: &str, d: &Desired) -> Result<(), StoreError> {
        let status = match self.control.service(service.to_owned()).await {
            Ok(s) => s,
            Err(e) => {
                let r = Report {
                    rollout: d.rollout.clone(),
                    action: d.action.name().to_owned(),
                    state: HostState::Error,
                    weight_bp: 0,
                    detail: Some(e.to_string()),
                    at_ms: now_ms(),
                };
                return self.write_report(service, r).await;
            }
        };
        if let Some(prev) = self.reported.get(service)
            && prev.rollout == d.rollout
            && prev.action == d.action.name()
            && prev.state == HostState::Error
        {
            return Ok(());
        }
        let (state, detail) = host_state(&d.action, &status);
        let r = Report {
            rollout: d.rollout.clone(),
            action: d.action.name().to_owned(),
            state,
            weight_bp: status.weight_bp,
            detail,
            at_ms: now_ms(),
        };
        self.write_report(service, r).await
    }

    /// Writes a report when it says something new.
    async fn write_report(&mut self, service: &str, r: Report) -> Result<(), StoreError> {
        let same = self.reported.get(service).is_some_and(|p| {
            Report {
                at_ms: 0,
                ..p.clone()
            } == Report {
                at_ms: 0,
                ..r.clone()
            }
        });
        if same {
            return Ok(());
        }
        let value = serde_json::to_vec(&r).expect("serializable");
        self.store
            .put(&self.keys.report(&self.cfg.node, service), &value, 0)
            .await?;
        if r.state != HostState::Running {
            info!(
                "fleet: {service}: reported {:?} at {} bp for {} {}",
                r.state, r.weight_bp, r.action, r.rollout
            );
        }
        self.reported.insert(service.to_owned(), r);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::RolloutView;

    fn status(weight_bp: u16, state: Option<&str>, rolled_back: Option<&str>) -> ServiceStatus {
        ServiceStatus {
            weight_bp,
            rollout: state.map(|s| RolloutView {
                state: s.to_owned(),
                kind: None,
                dry_run: false,
                step: None,
                steps: 0,
                step_weight_bp: None,
                remaining_hold_ms: None,
                would_weight_bp: None,
                gate_waiting: None,
                rolled_back: rolled_back.map(str::to_owned),
                analysis: Vec::new(),
            }),
            ..ServiceStatus::default()
        }
    }

    #[test]
    fn the_local_rollout_as_the_fleet_sees_it() {
        let ramp = Action::Ramp {
            steps_bp: vec![10_000],
            hold_ms: 1,
        };
        assert_eq!(
            host_state(&ramp, &status(10_000, Some("completed"), None)),
            (HostState::Completed, None)
        );
        assert_eq!(
            host_state(&ramp, &status(0, Some("rolled back"), Some("green down"))),
            (HostState::RolledBack, Some("green down".into()))
        );
        for s in ["running", "paused", "waiting for approval", "idle"] {
            assert_eq!(
                host_state(&ramp, &status(500, Some(s), None)).0,
                HostState::Running
            );
        }
        assert_eq!(
            host_state(&ramp, &status(0, None, None)).0,
            HostState::Running
        );
        // A rollback is done when green is at 0, whatever the engine's state.
        assert_eq!(
            host_state(&Action::Rollback, &status(0, Some("completed"), None)).0,
            HostState::Reverted
        );
        assert_eq!(
            host_state(&Action::Rollback, &status(100, Some("running"), None)).0,
            HostState::Running
        );
    }

    #[test]
    fn a_service_view_says_where_the_fleet_rollout_and_this_host_are() {
        use crate::fleet::schema::{FleetSpec, Phase};
        let desired = Desired {
            rollout: "web-7".into(),
            action: Action::Ramp {
                steps_bp: vec![10_000],
                hold_ms: 1,
            },
        };
        // Before the document was read: what the host was asked, nothing more.
        let v = service_view("h3", &desired, None, None, false);
        assert_eq!((v.rollout.as_str(), v.action.as_str()), ("web-7", "ramp"));
        assert_eq!((v.phase, v.waves, v.host_wave), (None, 0, None));
        let mut doc = RolloutDoc::new("web-7".into(), FleetSpec::one_step("web"), 1);
        doc.waves = vec![vec!["h1".into(), "h2".into()], vec!["h3".into()]];
        doc.wave = 1;
        doc.phase = Phase::Paused {
            reason: "host(s) lost: h3".into(),
        };
        doc.hosts = [
            ("h1".into(), HostPhase::Done),
            ("h2".into(), HostPhase::Done),
            ("h3".into(), HostPhase::Ramping),
        ]
        .into();
        let report = Report {
            rollout: "web-7".into(),
            action: "ramp".into(),
            state: HostState::Running,
            weight_bp: 2500,
            detail: None,
            at_ms: 2,
        };
        let v = service_view("h3", &desired, Some(&doc), Some(&report), true);
        assert_eq!(v.phase.as_deref(), Some("paused"));
        assert_eq!(v.reason.as_deref(), Some("host(s) lost: h3"));
        assert_eq!((v.wave, v.host_wave, v.waves), (2, Some(2), 2));
        assert_eq!((v.hosts_done, v.hosts), (2, 3));
        assert_eq!(v.reported.as_deref(), Some("running"));
        assert!(v.held);
        // The document or report of another rollout says nothing about this one.
        let other = RolloutDoc {
            id: "web-6".into(),
            ..doc
        };
        let old = Report {
            rollout: "web-6".into(),
            ..report
        };
        let v = service_view("h3", &desired, Some(&other), Some(&old), false);
        assert_eq!((v.phase, v.reported), (None, None));
    }
}
