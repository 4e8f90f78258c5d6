//! The rollout engine acting on a real, loaded data plane (maps only, nothing attached):
//! a health rollback after a real backend dies, timed from the deciding check to the map
//! update returning; promote as one config-word write; ramp weights land in the map.
//!
//! Backends are plain TCP listeners on 127.0.0.1 ephemeral ports; probes use blocking
//! connects so the measured path is exactly: check result -> engine -> map write.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use shifter::{
    Service, ServiceConfig,
    daemon::DataPlaneActuator,
    health::{HealthStatus, HealthTracker, HealthVerdict},
    rollout::{Cause, Effect, Engine, Input, OperatorCommand, RolloutSettings, StateName, apply},
};
use shifter_tests::testrun::TestDataPlane;

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let p = l.local_addr().unwrap().port();
    (l, p)
}

fn check(port: u16) -> Result<(), String> {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .map(drop)
    .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))
}

fn weight_in_map(dp: &mut shifter::DataPlane, slot: u32) -> ServiceConfig {
    dp.services().expect("read services")[&slot].config
}

/// A health verdict: `port` is up.
fn up(port: u16) -> Input {
    Input::Health(HealthVerdict {
        port,
        healthy: true,
        reason: None,
    })
}

/// A health verdict: `port` is down for `reason`.
fn down(port: u16, reason: Option<String>) -> Input {
    Input::Health(HealthVerdict {
        port,
        healthy: false,
        reason,
    })
}

fn start(steps: Vec<u16>) -> Input {
    Input::Command {
        command: OperatorCommand::Start {
            steps: Some(steps),
            hold: Some(Duration::ZERO),
            dry_run: false,
        },
        uid: Some(0),
    }
}

#[test]
fn health_rollback_and_promote_on_the_real_maps() {
    let mut dp = TestDataPlane::load("rollout");
    let (blue_l, blue) = listener();
    let (green_l, green) = listener();
    let (_svc_l, svc_port) = listener();
    let service = Service::tcp(svc_port, blue, green, 0);
    let slot = dp.set_service(&service).expect("set service");
    let mut engine = Engine::new("web", RolloutSettings::default(), blue, green, 0, true);
    let mut clock = Duration::ZERO;
    let mut tick = || {
        clock += Duration::from_millis(1);
        clock
    };

    // Green comes up (rise 2) through real checks.
    let mut tracker = HealthTracker::new(2, 3);
    let mut verdict = None;
    for _ in 0..2 {
        verdict = tracker.record(check(green)).or(verdict);
    }
    assert_eq!(
        verdict,
        Some(HealthStatus::Up),
        "{:?}",
        tracker.last_failure
    );
    engine.handle(tick(), up(green)).unwrap();

    // Ramp: 25 % lands in the map.
    let fx = engine.handle(tick(), start(vec![2500, 5000])).unwrap();
    let ev = apply(&mut DataPlaneActuator::new(&mut dp, slot, None), fx, None);
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0].actuation.as_ref().is_some_and(|a| a.error.is_none()),
        "{ev:?}"
    );
    assert_eq!(weight_in_map(&mut dp, slot).weight, 2500);

    // Green dies; real checks until the tracker says Down; that result decides.
    drop(green_l);
    let mut decided = None;
    for _ in 0..10 {
        let r = check(green);
        let decided_at = Instant::now();
        if tracker.record(r) == Some(HealthStatus::Down) {
            decided = Some(decided_at);
            break;
        }
    }
    let decided_at = decided.expect("three refused connects make green Down");
    let fx = engine
        .handle(tick(), down(green, tracker.last_failure.clone()))
        .unwrap();
    assert!(matches!(fx[0], Effect::SetWeight { bp: 0, .. }), "{fx:?}");
    let ev = apply(
        &mut DataPlaneActuator::new(&mut dp, slot, None),
        fx,
        Some(decided_at),
    );
    assert_eq!(weight_in_map(&mut dp, slot).weight, 0);
    assert_eq!(ev[0].to, StateName::RolledBack);
    assert!(matches!(ev[0].cause, Cause::Health { port, .. } if port == green));
    let act = ev[0].actuation.clone().expect("timed");
    let since = act.since_decision.expect("decision time carried");
    eprintln!(
        "real rollback: map update {:?}, deciding check -> map update returned {:?}",
        act.map_update, since
    );

    // The same path many times (synthetic Down verdicts) for a distribution.
    let mut samples = Vec::new();
    for _ in 0..200 {
        engine.handle(tick(), up(green)).unwrap();
        let fx = engine.handle(tick(), start(vec![2500])).unwrap();
        apply(&mut DataPlaneActuator::new(&mut dp, slot, None), fx, None);
        assert_eq!(weight_in_map(&mut dp, slot).weight, 2500);
        let decided_at = Instant::now();
        let fx = engine
            .handle(tick(), down(green, Some("synthetic".into())))
            .unwrap();
        let ev = apply(
            &mut DataPlaneActuator::new(&mut dp, slot, None),
            fx,
            Some(decided_at),
        );
        assert_eq!(weight_in_map(&mut dp, slot).weight, 0);
        samples.push(ev[0].actuation.as_ref().unwrap().since_decision.unwrap());
    }
    samples.sort();
    let (p50, p99, max) = (samples[100], samples[197], samples[199]);
    eprintln!(
        "rollback decision -> map update returned over 200 runs: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(
        p50 < Duration::from_millis(1),
        "median rollback latency {p50:?} is above the 1 ms goal"
    );

    // Ramp to 100 %, then promote: the ports swap with weight 0 in the same slot.
    engine.handle(tick(), up(green)).unwrap();
    let fx = engine.handle(tick(), start(vec![10_000])).unwrap();
    apply(&mut DataPlaneActuator::new(&mut dp, slot, None), fx, None);
    let fx = engine
        .handle(tick(), Input::Signals(Default::default()))
        .unwrap();
    apply(&mut DataPlaneActuator::new(&mut dp, slot, None), fx, None);
    assert_eq!(engine.state().name(), StateName::Completed);
    assert_eq!(weight_in_map(&mut dp, slot).weight, 10_000);
    let fx = engine
        .handle(
            tick(),
            Input::Command {
                command: OperatorCommand::Promote,
                uid: Some(0),
            },
        )
        .unwrap();
    let ev = apply(&mut DataPlaneActuator::new(&mut dp, slot, None), fx, None);
    assert!(
        ev[0].actuation.as_ref().is_some_and(|a| a.error.is_none()),
        "{ev:?}"
    );
    let services = dp.services().unwrap();
    assert_eq!(services.len(), 1, "still one service: {services:?}");
    let after = services[&slot].config;
    assert_eq!(
        (after.blue_port, after.green_port, after.weight),
        (green, blue, 0)
    );
    assert_eq!(engine.ports(), (green, blue));
    drop(blue_l);
}
