use std::collections::BTreeMap;

use super::*;
use crate::fleet::schema::FleetSpec;

fn node(name: &str, zone: &str) -> (String, NodeInfo) {
    (
        name.to_owned(),
        NodeInfo {
            node: name.to_owned(),
            labels: BTreeMap::from([("zone".to_owned(), zone.to_owned())]),
            version: "t".into(),
            kernel: "t".into(),
            services: vec!["web".into()],
        },
    )
}

fn six() -> BTreeMap<String, NodeInfo> {
    ["a", "a", "b", "b", "c", "c"]
        .iter()
        .enumerate()
        .map(|(i, z)| node(&format!("h{}", i + 1), z))
        .collect()
}

fn spec(waves: Vec<WaveSelector>) -> FleetSpec {
    FleetSpec {
        steps_bp: vec![5000, 10_000],
        hold_ms: 100,
        waves,
        ..FleetSpec::one_step("web")
    }
}

fn three_waves() -> FleetSpec {
    spec(vec![
        WaveSelector::Count(2),
        WaveSelector::Count(2),
        WaveSelector::Rest,
    ])
}

fn report(id: &str, action: &str, state: HostState, weight_bp: u16) -> Report {
    Report {
        rollout: id.into(),
        action: action.into(),
        state,
        weight_bp,
        detail: Some(format!("{state:?}")),
        at_ms: 0,
    }
}

/// A little fleet: the coordinator's ticks, with hosts that do as they are told.
struct Sim {
    doc: RolloutDoc,
    alive: BTreeMap<String, NodeInfo>,
    reports: BTreeMap<String, Report>,
    ops: Ops,
    now: u64,
    /// Every desired state ever written, in order.
    written: Vec<(String, Desired)>,
}

impl Sim {
    fn new(spec: FleetSpec) -> Self {
        Self {
            doc: RolloutDoc::new("r1".into(), spec, 0),
            alive: six(),
            reports: BTreeMap::new(),
            ops: Ops::default(),
            now: 0,
            written: Vec::new(),
        }
    }
    fn tick(&mut self) -> Vec<(String, Desired)> {
        self.now += 10;
        let d = decide(
            &self.doc,
            &View {
                now_ms: self.now,
                alive: &self.alive,
                reports: &self.reports,
                ops: &self.ops,
            },
        );
        if let Some(doc) = d.doc {
            self.doc = doc;
        }
        self.written.extend(d.desired.iter().cloned());
        d.desired
    }
    fn set(&mut self, host: &str, action: &str, state: HostState, w: u16) {
        self.reports
            .insert(host.into(), report("r1", action, state, w));
    }
    fn hosts_in(&self, phase: HostPhase) -> Vec<String> {
        self.doc
            .hosts
            .iter()
            .filter(|(_, p)| **p == phase)
            .map(|(h, _)| h.clone())
            .collect()
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn waves_by_hosts_labels_percent_rest() {
    let w = resolve_waves(
        "web",
        &[
            WaveSelector::Hosts(names(&["h6"])),
            WaveSelector::Labels(BTreeMap::from([("zone".into(), "a".into())])),
            // 34 % of 6 hosts rounds up to 3, taken from what is left, by name.
            WaveSelector::Percent(34),
            WaveSelector::Rest,
        ],
        &six(),
    );
    assert_eq!(
        w,
        Err("wave 4 selects no host".to_owned()),
        "h3, h4, h5 went to the percent wave"
    );
    let w = resolve_waves(
        "web",
        &[
            WaveSelector::Hosts(names(&["h6"])),
            WaveSelector::Labels(BTreeMap::from([("zone".into(), "a".into())])),
            WaveSelector::Percent(16),
            WaveSelector::Rest,
        ],
        &six(),
    )
    .unwrap();
    assert_eq!(
        w,
        vec![
            names(&["h6"]),
            names(&["h1", "h2"]),
            names(&["h3"]),
            names(&["h4", "h5"])
        ]
    );
}

#[test]
fn waves_refuse_unknown_taken_and_empty() {
    let e = resolve_waves("web", &[WaveSelector::Hosts(names(&["h9"]))], &six()).unwrap_err();
    assert_eq!(e, "wave 1: host h9 is not registered with web");
    let e = resolve_waves(
        "web",
        &[WaveSelector::Count(1), WaveSelector::Hosts(names(&["h1"]))],
        &six(),
    )
    .unwrap_err();
    assert_eq!(e, "wave 2: host h1 is already in a wave");
    let e = resolve_waves("db", &[WaveSelector::Rest], &six()).unwrap_err();
    assert_eq!(e, "no registered host serves db");
    let e = resolve_waves(
        "web",
        &[WaveSelector::Labels(BTreeMap::from([(
            "zone".into(),
            "z".into(),
        )]))],
        &six(),
    )
    .unwrap_err();
    assert_eq!(e, "wave 1 selects no host");
}

#[test]
fn three_waves_complete_in_order_each_host_once() {
    let mut s = Sim::new(three_waves());
    let first = s.tick();
    assert_eq!(s.doc.phase, Phase::Running);
    assert_eq!(
        first.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["h1", "h2"]
    );
    // Nothing reported yet: nothing new is asked.
    assert!(s.tick().is_empty());
    s.set("h1", "ramp", HostState::Completed, 10_000);
    assert!(s.tick().is_empty(), "wave 1 is not done while h2 ramps");
    s.set("h2", "ramp", HostState::Completed, 10_000);
    let second = s.tick();
    assert_eq!(
        second.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["h3", "h4"]
    );
    assert_eq!(s.doc.wave, 1);
    for h in ["h3", "h4"] {
        s.set(h, "ramp", HostState::Completed, 10_000);
    }
    s.tick();
    for h in ["h5", "h6"] {
        s.set(h, "ramp", HostState::Completed, 10_000);
    }
    s.tick();
    assert_eq!(s.doc.phase, Phase::Completed);
    let hosts: Vec<&str> = s.written.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(hosts, ["h1", "h2", "h3", "h4", "h5", "h6"]);
    assert!(s.tick().is_empty(), "a completed rollout writes nothing");
}

#[test]
fn a_completed_report_below_100_percent_is_not_done() {
    let mut s = Sim::new(three_waves());
    s.tick();
    s.set("h1", "ramp", HostState::Completed, 5000);
    s.set("h2", "ramp", HostState::Completed, 10_000);
    s.tick();
    assert_eq!(s.doc.hosts["h1"], HostPhase::Ramping);
    assert_eq!(s.doc.wave, 0);
}

#[test]
fn reports_of_another_rollout_are_ignored() {
    let mut s = Sim::new(three_waves());
    s.tick();
    s.reports
        .insert("h1".into(), report("r0", "ramp", HostState::RolledBack, 0));
    s.tick();
    assert_eq!(s.doc.phase, Phase::Running);
}

#[test]
fn failure_in_wave_two_rolls_back_waves_one_and_two_never_three() {
    let mut s = Sim::new(three_waves());
    s.tick();
    s.set("h1", "ramp", HostState::Completed, 10_000);
    s.set("h2", "ramp", HostState::Completed, 10_000);
    s.tick();
    s.set("h3", "ramp", HostState::RolledBack, 0);
    let back = s.tick();
    assert!(
        matches!(s.doc.phase, Phase::RollingBack { .. }),
        "{:?}",
        s.doc.phase
    );
    let mut hosts: Vec<&str> = back.iter().map(|(h, _)| h.as_str()).collect();
    hosts.sort_unstable();
    assert_eq!(hosts, ["h1", "h2", "h3", "h4"]);
    assert!(back.iter().all(|(_, d)| d.action == Action::Rollback));
    // Until every touched host confirms, the rollback goes on (and asks nothing twice).
    for h in ["h1", "h2", "h3"] {
        s.set(h, "rollback", HostState::Reverted, 0);
    }
    assert!(s.tick().is_empty());
    assert!(matches!(s.doc.phase, Phase::RollingBack { .. }));
    s.set("h4", "rollback", HostState::Reverted, 0);
    s.tick();
    let Phase::RolledBack { reason } = &s.doc.phase else {
        panic!("{:?}", s.doc.phase)
    };
    assert!(reason.contains("h3"), "{reason}");
    assert!(
        s.written.iter().all(|(h, _)| h != "h5" && h != "h6"),
        "wave 3 was touched: {:?}",
        s.written
    );
    assert_eq!(s.hosts_in(HostPhase::Pending), names(&["h5", "h6"]));
}

#[test]
fn failures_tolerated_lets_the_wave_finish() {
    let mut sp = three_waves();
    sp.failures_tolerated = 1;
    let mut s = Sim::new(sp);
    s.tick();
    s.set("h1", "ramp", HostState::RolledBack, 0);
    s.set("h2", "ramp", HostState::Completed, 10_000);
    s.tick();
    assert_eq!(s.doc.phase, Phase::Running);
    assert_eq!(s.doc.wave, 1);
    s.set("h3", "ramp", HostState::Error, 0);
    s.tick();
    assert!(matches!(s.doc.phase, Phase::RollingBack { .. }));
}

#[test]
fn max_parallel_limits_hosts_at_once() {
    let mut sp = spec(vec![WaveSelector::Rest]);
    sp.max_parallel = 2;
    let mut s = Sim::new(sp);
    assert_eq!(s.tick().len(), 2);
    s.set("h1", "ramp", HostState::Completed, 10_000);
    let next = s.tick();
    assert_eq!(
        next.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["h3"]
    );
}

#[test]
fn lost_host_pauses_then_resumes_or_aborts() {
    let mut s = Sim::new(three_waves());
    s.tick();
    s.alive.remove("h2");
    s.tick();
    assert_eq!(
        s.doc.phase,
        Phase::Paused {
            reason: "host(s) lost: h2".into()
        }
    );
    s.alive = six();
    s.tick();
    assert_eq!(s.doc.phase, Phase::Running);

    let mut sp = three_waves();
    sp.on_lost = OnLost::Abort;
    let mut s = Sim::new(sp);
    s.tick();
    s.alive.remove("h2");
    let back = s.tick();
    assert!(matches!(s.doc.phase, Phase::RollingBack { .. }));
    assert_eq!(back.len(), 2, "h1 and (lost) h2 are told to roll back");
    s.set("h1", "rollback", HostState::Reverted, 0);
    s.tick();
    let Phase::RolledBack { reason } = &s.doc.phase else {
        panic!("{:?}", s.doc.phase)
    };
    assert!(
        reason.contains("not confirmed by lost host(s) h2"),
        "{reason}"
    );
}

#[test]
fn min_healthy_pauses() {
    let mut sp = three_waves();
    sp.min_healthy = 6;
    let mut s = Sim::new(sp);
    s.tick();
    s.alive.remove("h6");
    s.tick();
    assert_eq!(
        s.doc.phase,
        Phase::Paused {
            reason: "5 healthy host(s), at least 6 needed".into()
        }
    );
}

#[test]
fn operator_pause_resume_abort() {
    let mut s = Sim::new(three_waves());
    s.tick();
    s.ops.pause = true;
    s.set("h1", "ramp", HostState::Completed, 10_000);
    s.set("h2", "ramp", HostState::Completed, 10_000);
    assert!(s.tick().is_empty(), "a paused rollout starts no host");
    assert!(matches!(s.doc.phase, Phase::Paused { .. }));
    s.ops.pause = false;
    assert_eq!(s.tick().len(), 2);
    s.ops.abort = true;
    s.tick();
    assert_eq!(
        s.doc.phase,
        Phase::RollingBack {
            reason: "aborted by the operator".into()
        }
    );
}

#[test]
fn approval_between_waves() {
    let mut sp = three_waves();
    sp.approve_waves = true;
    let mut s = Sim::new(sp);
    assert_eq!(s.tick().len(), 2, "the first wave needs no approval");
    s.set("h1", "ramp", HostState::Completed, 10_000);
    s.set("h2", "ramp", HostState::Completed, 10_000);
    assert!(s.tick().is_empty());
    assert_eq!(s.doc.phase, Phase::WaitingApproval);
    assert!(s.tick().is_empty());
    s.ops.approved.push(1);
    assert_eq!(s.tick().len(), 2);
    assert_eq!(s.doc.phase, Phase::Running);
}

#[test]
fn wave_deadline_rolls_back() {
    let mut sp = three_waves();
    sp.wave_deadline_ms = 25;
    let mut s = Sim::new(sp);
    s.tick();
    s.tick();
    assert_eq!(s.doc.phase, Phase::Running);
    s.tick();
    s.tick();
    assert!(
        matches!(&s.doc.phase, Phase::RollingBack { reason } if reason.contains("deadline")),
        "{:?}",
        s.doc.phase
    );
}

#[test]
fn no_host_fails_the_rollout_untouched() {
    let mut s = Sim::new(spec(vec![WaveSelector::Hosts(names(&["nope"]))]));
    assert!(s.tick().is_empty());
    assert!(matches!(s.doc.phase, Phase::Failed { .. }));
}
