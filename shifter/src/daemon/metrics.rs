//! Prometheus metrics (text format 0.0.4) built with `prometheus-client`.
//!
//! The data-plane numbers are read fresh from the maps on every scrape (the daemon's status),
//! so each scrape builds a registry from the typed [`Status`]; only the event-derived counters
//! (weight changes and rollbacks by cause) live across scrapes in [`MetricsState`].
//!
//! Every series carries `service` and, per backend, `backend` (`blue`/`green`) labels:
//!
//! | metric | type | what |
//! |---|---|---|
//! | `shifter_new_flows_total` | counter | new connections (flows) decided for the backend |
//! | `shifter_active_flows` | gauge | flow-table entries of the backend |
//! | `shifter_packets_total`, `shifter_bytes_total` | counter | ingress packets / L3 bytes steered to it |
//! | `shifter_egress_packets_total`, `shifter_egress_bytes_total` | counter | replies rewritten back |
//! | `shifter_refused_connections_total` | counter | RSTs answering a SYN (connection refused) |
//! | `shifter_reset_connections_total` | counter | resets of established connections |
//! | `shifter_recoveries_total` | counter | flow entries restored by socket lookup |
//! | `shifter_evictions_total` | counter | entries evicted from the full flow table |
//! | `shifter_fallbacks_total` | counter | socket dispatch: connections decided for the backend that the other took (it had no listener) |
//! | `shifter_service_dispatch` | gauge | 1 for the service's `dispatch` (socket or rewrite; service label) |
//! | `shifter_listening_sockets` | gauge | socket dispatch: the backend's remembered listeners (socket services only) |
//! | `shifter_weight_basis_points` | gauge | green's configured share (service label only) |
//! | `shifter_backend_weight_ratio` | gauge | the backend's configured share, 0..1 |
//! | `shifter_flow_table_entries`, `_capacity`, `_fill_ratio` | gauge | flow-table fill (no labels) |
//! | `shifter_weight_changes_total` | counter | weight changes by `cause` since the daemon started |
//! | `shifter_rollbacks_total` | counter | rollbacks by `cause` (only once one happened) |
//! | `shifter_backend_health` | gauge | 1 for the backend's `state` (only where health is reported) |
//! | `shifter_backend_up` | gauge | 1 up, 0 otherwise (only where a check runs) |
//! | `shifter_rollout_state` | gauge | 1 for the rollout's `state` (only where a rollout is reported) |
//! | `shifter_rollout_step`, `_steps`, `_step_weight_basis_points`, `_hold_remaining_seconds`, `_dry_run` | gauge | rollout progress |
//! | `shifter_fleet_etcd_reachable` | gauge | `[fleet]` only: 1 while the agent's last poll of etcd succeeded (no labels) |
//! | `shifter_fleet_ramp_held` | gauge | `[fleet]` only: 1 while the service's fleet ramp is held because etcd does not answer |
//! | `shifter_build_info` | gauge | 1, with the daemon's `version` |
//!
//! Health and rollout series come from the optional parts of the status; nothing is emitted
//! for them while the status has none.
//!
//! Over 700 lines, about 270 of them its unit tests: one register function per family of series.

use std::sync::atomic::AtomicU64;

use crate::{
    api::types::{BackendHealthView, Counters, ServiceStatus, Status, label},
    events::{Cause, Event},
};
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

/// Blue then green, as in the counters map.
const BACKENDS: [&str; 2] = ["blue", "green"];

/// A service's backends with their counters and health, blue then green.
fn backends(s: &ServiceStatus) -> [(&'static str, &Counters, Option<&BackendHealthView>); 2] {
    [
        ("blue", &s.blue, s.health.as_ref().map(|h| &h.blue)),
        ("green", &s.green, s.health.as_ref().map(|h| &h.green)),
    ]
}

/// The cause of `ev` as a rollback (`health-rollback`, `gate-rollback`, `analysis-rollback`,
/// `manual-rollback`); `None` for every other change.
pub(crate) fn rollback_cause(ev: &Event) -> Option<String> {
    matches!(
        ev.cause,
        Cause::HealthRollback
            | Cause::GateRollback
            | Cause::AnalysisRollback
            | Cause::HookRollback
            | Cause::ManualRollback
    )
    .then(|| ev.cause.to_string())
}

/// The `Content-Type` of [`MetricsState::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    service: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    service: String,
    backend: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutStateLabels {
    service: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    service: String,
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Counters kept across scrapes: weight changes and rollbacks, counted from the event log
/// from the daemon's start on.
pub struct MetricsState {
    next_seq: u64,
    weight_changes: Family<CauseLabels, Counter>,
    rollbacks: Family<CauseLabels, Counter>,
    /// Whether `rollbacks` has a series (the family cannot say outside tests).
    any_rollback: bool,
    /// Webhook and notification counts (none in tests of the other series).
    webhooks: Option<std::sync::Arc<super::webhooks::WebhookStats>>,
}

impl MetricsState {
    /// Counts events from sequence number `next_seq` on (the log's next number at start-up,
    /// so events of earlier runs are not counted again).
    pub fn new(next_seq: u64) -> Self {
        Self {
            next_seq,
            weight_changes: Family::default(),
            rollbacks: Family::default(),
            any_rollback: false,
            webhooks: None,
        }
    }

    /// Also renders the webhooks' series from `stats`.
    pub(crate) fn with_webhooks(
        mut self,
        stats: std::sync::Arc<super::webhooks::WebhookStats>,
    ) -> Self {
        self.webhooks = Some(stats);
        self
    }

    /// The first event not yet counted.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Counts events; events already counted are skipped.
    pub fn observe_events(&mut self, events: &[Event]) {
        for ev in events {
            if ev.seq < self.next_seq {
                continue;
            }
            self.next_seq = ev.seq + 1;
            let service = ev.service.clone();
            self.weight_changes
                .get_or_create(&CauseLabels {
                    service: service.clone(),
                    cause: ev.cause.to_string(),
                })
                .inc();
            if let Some(cause) = rollback_cause(ev) {
                self.any_rollback = true;
                self.rollbacks
                    .get_or_create(&CauseLabels { service, cause })
                    .inc();
            }
        }
    }

    /// The text exposition of `snap`. `flow_entries`: the flow table's exact entry count if
    /// known (else the sum of the services' active flows).
    pub fn render(&self, snap: &Status, flow_entries: Option<u64>) -> String {
        let mut reg = Registry::with_prefix("shifter");
        register_backend_counters(&mut reg, snap);
        register_listeners(&mut reg, snap);

        register_weights(&mut reg, snap);
        register_flow_table(&mut reg, snap, flow_entries);

        reg.register(
            "weight_changes",
            "Weight changes since the daemon started, by cause",
            self.weight_changes.clone(),
        );
        if self.any_rollback {
            reg.register(
                "rollbacks",
                "Automatic or manual rollbacks since the daemon started, by cause",
                self.rollbacks.clone(),
            );
        }
        register_skipped(&mut reg, snap);
        register_health(&mut reg, snap);
        register_rollout(&mut reg, snap);
        register_fleet(&mut reg, snap);
        super::analysis_metrics::register(&mut reg, snap);
        if let Some(w) = &self.webhooks {
            w.register(&mut reg);
        }
        reg.register(
            "build",
            "The daemon's version",
            Info::new(VersionLabels {
                version: snap.version.clone(),
            }),
        );

        let mut out = String::new();
        prometheus_text::encode(&mut out, &reg).expect("writing to a String cannot fail");
        out
    }
}

/// Green's configured share per service, and each backend's.
fn register_weights(reg: &mut Registry, snap: &Status) {
    let weight = Family::<ServiceLabels, Gauge>::default();
    let ratio = Family::<BackendLabels, FloatGauge>::default();
    for s in &snap.services {
        weight
            .get_or_create(&ServiceLabels {
                service: s.name.clone(),
            })
            .set(i64::from(s.weight_bp));
        let green = f64::from(s.weight_bp) / 10_000.0;
        for (b, share) in BACKENDS.iter().zip([1.0 - green, green]) {
            ratio.get_or_create(&backend(&s.name, b)).set(share);
        }
    }
    reg.register(
        "weight_basis_points",
        "Green's configured share of new connections, basis points (0..10000)",
        weight,
    );
    reg.register(
        "backend_weight_ratio",
        "The backend's configured share of new connections (0..1)",
        ratio,
    );
}

/// The flow table's entries (`flow_entries` if known exactly, else the services' active
/// flows), capacity and fill ratio.
fn register_flow_table(reg: &mut Registry, snap: &Status, flow_entries: Option<u64>) {
    let entries = flow_entries.unwrap_or_else(|| {
        snap.services
            .iter()
            .map(|s| s.blue.active_flows + s.green.active_flows)
            .sum()
    });
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(entries).unwrap_or(i64::MAX));
    reg.register("flow_table_entries", "Entries in the flow table", g);
    let g = Gauge::<i64>::default();
    g.set(i64::from(snap.flow_table_size));
    reg.register("flow_table_capacity", "Capacity of the flow table", g);
    if snap.flow_table_size > 0 {
        let g = FloatGauge::default();
        #[expect(
            clippy::cast_precision_loss,
            reason = "a fill ratio; entries far below 2^52"
        )]
        g.set(entries as f64 / f64::from(snap.flow_table_size));
        reg.register(
            "flow_table_fill_ratio",
            "Flow-table entries over its capacity (0..1)",
            g,
        );
    }
}

/// Packets the kernel programs passed unchanged, by reason.
fn register_skipped(reg: &mut Registry, snap: &Status) {
    let skipped = Family::<ReasonLabels, Counter>::default();
    for (reason, n) in &snap.skipped_packets {
        skipped
            .get_or_create(&ReasonLabels {
                reason: reason.clone(),
            })
            .inc_by(*n);
    }
    reg.register(
        "skipped_packets",
        "Packets for a service the kernel programs passed unchanged, by reason",
        skipped,
    );
}

/// The fleet agent's view (`[fleet]` only): whether etcd answers, and per service whether
/// its fleet ramp is held because it does not.
fn register_fleet(reg: &mut Registry, snap: &Status) {
    let Some(agent) = &snap.fleet else {
        return;
    };
    let reachable = Gauge::<i64>::default();
    reachable.set(i64::from(agent.etcd_reachable));
    reg.register(
        "fleet_etcd_reachable",
        "1 while the fleet agent's last poll of etcd succeeded",
        reachable,
    );
    let held = Family::<ServiceLabels, Gauge>::default();
    for s in &snap.services {
        if let Some(f) = &s.fleet {
            held.get_or_create(&ServiceLabels {
                service: s.name.clone(),
            })
            .set(i64::from(f.held));
        }
    }
    reg.register(
        "fleet_ramp_held",
        "1 while the service's fleet ramp is paused here because etcd does not answer (fail static)",
        held,
    );
}

fn backend(service: &str, b: &str) -> BackendLabels {
    BackendLabels {
        service: service.to_owned(),
        backend: b.to_owned(),
    }
}

type Get = fn(&Counters) -> u64;

/// (name, help, is_counter, value)
const PER_BACKEND: [(&str, &str, bool, Get); 11] = [
    (
        "new_flows",
        "New connections (flows) decided for the backend",
        true,
        |c| c.new_flows,
    ),
    (
        "active_flows",
        "Flow-table entries of the backend",
        false,
        |c| c.active_flows,
    ),
    (
        "packets",
        "Ingress packets steered to the backend",
        true,
        |c| c.packets,
    ),
    (
        "bytes",
        "Ingress bytes (L3) steered to the backend",
        true,
        |c| c.bytes,
    ),
    (
        "egress_packets",
        "Reply packets rewritten back to the service port",
        true,
        |c| c.egress_packets,
    ),
    (
        "egress_bytes",
        "Reply bytes (L3) rewritten back to the service port",
        true,
        |c| c.egress_bytes,
    ),
    (
        "refused_connections",
        "Connections refused by the backend (a RST answering a SYN)",
        true,
        |c| c.refusals,
    ),
    (
        "reset_connections",
        "Resets of established connections",
        true,
        |c| c.resets,
    ),
    (
        "recoveries",
        "Flow entries restored by socket lookup",
        true,
        |c| c.recoveries,
    ),
    (
        "evictions",
        "Flow entries evicted from the full flow table",
        true,
        |c| c.evictions,
    ),
    (
        "fallbacks",
        "Socket dispatch: connections decided for the backend that the other one took because it had no listener",
        true,
        |c| c.fallbacks,
    ),
];

fn register_backend_counters(reg: &mut Registry, snap: &Status) {
    for (name, help, is_counter, get) in PER_BACKEND {
        if is_counter {
            let fam = Family::<BackendLabels, Counter>::default();
            for s in &snap.services {
                for (b, counters, _) in backends(s) {
                    fam.get_or_create(&backend(&s.name, b))
                        .inc_by(get(counters));
                }
            }
            reg.register(name, help, fam);
        } else {
            let fam = Family::<BackendLabels, Gauge>::default();
            for s in &snap.services {
                for (b, counters, _) in backends(s) {
                    fam.get_or_create(&backend(&s.name, b))
                        .set(i64::try_from(get(counters)).unwrap_or(i64::MAX));
                }
            }
            reg.register(name, help, fam);
        }
    }
}

/// Labels of `shifter_service_dispatch`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DispatchLabels {
    service: String,
    dispatch: String,
}

fn register_listeners(reg: &mut Registry, snap: &Status) {
    let dispatch = Family::<DispatchLabels, Gauge>::default();
    for s in &snap.services {
        dispatch
            .get_or_create(&DispatchLabels {
                service: s.name.clone(),
                dispatch: s.dispatch.clone(),
            })
            .set(1);
    }
    reg.register(
        "service_dispatch",
        "1 for the dispatch the data plane runs for the service (socket or rewrite)",
        dispatch,
    );
    let fam = Family::<BackendLabels, Gauge>::default();
    let mut any = false;
    for s in &snap.services {
        let Some(l) = s.listeners else { continue };
        any = true;
        for (b, n) in [("blue", l.blue), ("green", l.green)] {
            fam.get_or_create(&backend(&s.name, b)).set(i64::from(n));
        }
    }
    if any {
        reg.register(
            "listening_sockets",
            "Socket dispatch: listening sockets of the backend that new connections can be handed to",
            fam,
        );
    }
}

fn register_health(reg: &mut Registry, snap: &Status) {
    let state = Family::<StateLabels, Gauge>::default();
    let up = Family::<BackendLabels, Gauge>::default();
    let (mut any_state, mut any_up) = (false, false);
    for s in &snap.services {
        for (b, _, h) in backends(s) {
            let Some(h) = h else { continue };
            any_state = true;
            let state_label = label(&h.status);
            state
                .get_or_create(&StateLabels {
                    service: s.name.clone(),
                    backend: b.to_owned(),
                    state: state_label.clone(),
                })
                .set(1);
            if h.checked() {
                any_up = true;
                up.get_or_create(&backend(&s.name, b))
                    .set(i64::from(state_label == "up"));
            }
        }
    }
    if any_state {
        reg.register(
            "backend_health",
            "1 for the backend's health state as its checks say",
            state,
        );
    }
    if any_up {
        reg.register(
            "backend_up",
            "1 when the backend's health checks pass, else 0",
            up,
        );
    }
}

fn register_rollout(reg: &mut Registry, snap: &Status) {
    let state = Family::<RolloutStateLabels, Gauge>::default();
    let step = Family::<ServiceLabels, Gauge>::default();
    let steps = Family::<ServiceLabels, Gauge>::default();
    let step_weight = Family::<ServiceLabels, Gauge>::default();
    let remaining = Family::<ServiceLabels, FloatGauge>::default();
    let dry_run = Family::<ServiceLabels, Gauge>::default();
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut any = [false; 5];
    for s in &snap.services {
        let Some(r) = &s.rollout else { continue };
        any[0] = true;
        let l = ServiceLabels {
            service: s.name.clone(),
        };
        state
            .get_or_create(&RolloutStateLabels {
                service: s.name.clone(),
                state: label(&r.state),
            })
            .set(1);
        dry_run.get_or_create(&l).set(i64::from(r.dry_run));
        if let Some(n) = r.step {
            any[1] = true;
            step.get_or_create(&l).set(to_i64(n as u64));
        }
        any[2] = true;
        steps.get_or_create(&l).set(to_i64(r.steps as u64));
        if let Some(w) = r.step_weight_bp {
            any[3] = true;
            step_weight.get_or_create(&l).set(i64::from(w));
        }
        if let Some(ms) = r.remaining_hold_ms {
            any[4] = true;
            #[expect(clippy::cast_precision_loss, reason = "a hold of at most 7 days in ms")]
            remaining.get_or_create(&l).set(ms as f64 / 1000.0);
        }
    }
    if !any[0] {
        return;
    }
    reg.register("rollout_state", "1 for the service's rollout state", state);
    reg.register(
        "rollout_dry_run",
        "1 when the rollout only computes what it would do",
        dry_run,
    );
    if any[1] {
        reg.register(
            "rollout_step",
            "The rollout's current step, counted from 1",
            step,
        );
    }
    if any[2] {
        reg.register("rollout_steps", "Number of steps of the rollout", steps);
    }
    if any[3] {
        reg.register(
            "rollout_step_weight_basis_points",
            "Green's weight at the current step, basis points",
            step_weight,
        );
    }
    if any[4] {
        reg.register(
            "rollout_hold_remaining_seconds",
            "Time left in the current step's hold",
            remaining,
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::types::{HealthView, RolloutView};

    /// One service as `GET /v1/status` shows it.
    pub(crate) fn svc() -> ServiceStatus {
        ServiceStatus {
            name: "web".into(),
            protocol: "tcp".into(),
            port: 80,
            local_addresses: vec![],
            blue_port: 8080,
            green_port: 8081,
            weight_bp: 2500,
            weight_percent: "25.00".into(),
            affinity: "connection".into(),
            dispatch: "socket".into(),
            listeners: Some(crate::api::types::ListenerCounts { blue: 2, green: 1 }),
            slot: 0,
            blue: Counters {
                new_flows: 3,
                active_flows: 2,
                packets: 10,
                bytes: 1000,
                egress_packets: 9,
                egress_bytes: 900,
                refusals: 1,
                ..Counters::default()
            },
            green: Counters {
                new_flows: 1,
                active_flows: 1,
                packets: 4,
                bytes: 400,
                egress_packets: 4,
                egress_bytes: 400,
                evictions: 5,
                resets: 2,
                fallbacks: 7,
                ..Counters::default()
            },
            health: None,
            rollout: None,
            fleet: None,
        }
    }

    fn status(svc: ServiceStatus) -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 1,
            bpffs_dir: String::new(),
            state_dir: String::new(),
            flow_table_size: 100,
            interfaces: vec![],
            skipped_packets: [("truncated".to_owned(), 3), ("no_config".to_owned(), 0)].into(),
            services: vec![svc],
            socket_dispatch_unavailable: None,
            listener_registration_problem: None,
            fleet: None,
        }
    }

    fn event(seq: u64, cause: Cause) -> Event {
        Event {
            seq,
            time_ms: 0,
            service: "web".into(),
            old_weight_bp: None,
            new_weight_bp: Some(0),
            cause,
            uid: None,
            detail: None,
            dry_run: false,
            map_update_ns: None,
            since_decision_ns: None,
            fleet_rollout: None,
        }
    }

    fn render(svc: ServiceStatus, events: &[Event]) -> String {
        let mut m = MetricsState::new(0);
        m.observe_events(events);
        m.render(&status(svc), None)
    }

    #[test]
    fn core_series() {
        let t = render(svc(), &[event(0, Cause::Config)]);
        for line in [
            "# TYPE shifter_new_flows_total counter",
            "shifter_new_flows_total{service=\"web\",backend=\"blue\"} 3",
            "# TYPE shifter_skipped_packets_total counter",
            "shifter_skipped_packets_total{reason=\"truncated\"} 3",
            "shifter_skipped_packets_total{reason=\"no_config\"} 0",
            "shifter_active_flows{service=\"web\",backend=\"green\"} 1",
            "shifter_refused_connections_total{service=\"web\",backend=\"blue\"} 1",
            "shifter_reset_connections_total{service=\"web\",backend=\"green\"} 2",
            "shifter_evictions_total{service=\"web\",backend=\"green\"} 5",
            "shifter_fallbacks_total{service=\"web\",backend=\"green\"} 7",
            "shifter_listening_sockets{service=\"web\",backend=\"blue\"} 2",
            "shifter_service_dispatch{service=\"web\",dispatch=\"socket\"} 1",
            "shifter_listening_sockets{service=\"web\",backend=\"green\"} 1",
            "shifter_weight_basis_points{service=\"web\"} 2500",
            "shifter_backend_weight_ratio{service=\"web\",backend=\"blue\"} 0.75",
            "shifter_flow_table_entries 3",
            "shifter_flow_table_capacity 100",
            "shifter_flow_table_fill_ratio 0.03",
            "shifter_weight_changes_total{service=\"web\",cause=\"config\"} 1",
            "shifter_build_info{version=\"0.1.0\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        for absent in ["rollback", "health", "rollout", "backend_up", "fleet"] {
            assert!(!t.contains(absent), "{absent} emitted without data:\n{t}");
        }
    }

    #[test]
    fn fleet_series_on_a_host_cut_off_from_etcd() {
        let mut snap = status(ServiceStatus {
            fleet: Some(crate::api::types::ServiceFleetView {
                rollout: "web-7".into(),
                action: "ramp".into(),
                held: true,
                ..Default::default()
            }),
            ..svc()
        });
        snap.fleet = Some(crate::api::types::FleetAgentView {
            node: "h1".into(),
            etcd_reachable: false,
            unreachable_since_ms: Some(1),
            last_error: Some("connection refused".into()),
        });
        let t = MetricsState::new(0).render(&snap, None);
        for line in [
            "# TYPE shifter_fleet_etcd_reachable gauge",
            "shifter_fleet_etcd_reachable 0",
            "shifter_fleet_ramp_held{service=\"web\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    fn health(status: &str, last_failure: Option<&str>) -> BackendHealthView {
        BackendHealthView {
            port: 0,
            check_port: 0,
            status: status.into(),
            last_failure: last_failure.map(str::to_owned),
            last_check_ok: None,
            checks: 1,
        }
    }

    /// A render with every optional part present.
    fn full() -> String {
        let mut s = svc();
        s.health = Some(HealthView {
            blue: health("up", None),
            green: health("down", Some("x")),
        });
        s.rollout = Some(RolloutView {
            state: "running".into(),
            kind: Some("canary".into()),
            dry_run: false,
            step: Some(1),
            steps: 3,
            step_weight_bp: Some(2500),
            remaining_hold_ms: Some(1500),
            would_weight_bp: None,
            gate_waiting: None,
            rolled_back: None,
            analysis: Vec::new(),
        });
        render(
            s,
            &[
                event(4, Cause::Operator),
                event(5, Cause::HealthRollback),
                event(5, Cause::HealthRollback),
            ],
        )
    }

    #[test]
    fn states_are_labels() {
        let mut s = svc();
        s.health = Some(HealthView {
            blue: health("not checked", None),
            green: health("unknown", None),
        });
        s.rollout = Some(RolloutView {
            state: "waiting for approval".into(),
            kind: None,
            dry_run: true,
            step: None,
            steps: 0,
            step_weight_bp: None,
            remaining_hold_ms: None,
            would_weight_bp: None,
            gate_waiting: None,
            rolled_back: None,
            analysis: Vec::new(),
        });
        let t = render(s, &[]);
        for line in [
            "shifter_backend_health{service=\"web\",backend=\"blue\",state=\"not-checked\"} 1",
            "shifter_backend_up{service=\"web\",backend=\"green\"} 0",
            "shifter_rollout_state{service=\"web\",state=\"waiting-for-approval\"} 1",
            "shifter_rollout_dry_run{service=\"web\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        assert!(
            !t.contains("backend_up{service=\"web\",backend=\"blue\"}"),
            "{t}"
        );
    }

    #[test]
    fn optional_series_when_present() {
        let t = full();
        for line in [
            "shifter_backend_health{service=\"web\",backend=\"green\",state=\"down\"} 1",
            "shifter_backend_up{service=\"web\",backend=\"blue\"} 1",
            "shifter_backend_up{service=\"web\",backend=\"green\"} 0",
            "shifter_rollout_state{service=\"web\",state=\"running\"} 1",
            "shifter_rollout_step{service=\"web\"} 1",
            "shifter_rollout_steps{service=\"web\"} 3",
            "shifter_rollout_step_weight_basis_points{service=\"web\"} 2500",
            "shifter_rollout_hold_remaining_seconds{service=\"web\"} 1.5",
            "shifter_rollbacks_total{service=\"web\",cause=\"health-rollback\"} 1",
            "shifter_weight_changes_total{service=\"web\",cause=\"operator\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn the_dashboard_uses_only_metrics_that_exist() {
        let dash = include_str!("../../../packaging/grafana-shifter.json");
        let t = full();
        let emitted: std::collections::BTreeSet<&str> = t
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let mut used = std::collections::BTreeSet::new();
        let mut rest = dash;
        while let Some(i) = rest.find("shifter_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            used.insert(name);
        }
        assert!(
            used.len() >= 10,
            "the dashboard queries shifter metrics: {used:?}"
        );
        for name in &used {
            assert!(
                emitted.contains(name.as_str()),
                "the dashboard queries {name}, which /metrics does not emit ({emitted:?})"
            );
        }
    }
}
