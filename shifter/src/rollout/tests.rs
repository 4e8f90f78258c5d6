//! Engine tests: every command in every state, step timings, approval, freeze, dry run,
//! gates, flapping, restarts; and the async driver on tokio's paused clock.
//!
//! Over 700 lines on purpose: one file of scenarios that share the fixtures at its top.

use std::time::Duration;

use super::{
    engine::{
        Cause, CommandError, Effect, Engine, Input, OperatorCommand, Phase, State, StateName,
    },
    gate::{SignalSample, Signals},
};
use crate::{
    config::{GateSettings, RolloutSettings, Step},
    health::{HealthStatus, HealthVerdict},
};

const BLUE: u16 = 8081;
const GREEN: u16 = 8082;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Ramp 1 % -> 5 % (approval) -> 100 %, 10 s each.
fn settings() -> RolloutSettings {
    RolloutSettings {
        steps: vec![
            Step {
                weight_bp: 100,
                hold: secs(10),
                approve: false,
            },
            Step {
                weight_bp: 500,
                hold: secs(10),
                approve: true,
            },
            Step {
                weight_bp: 10_000,
                hold: secs(10),
                approve: false,
            },
        ],
        hold: secs(10),
        gate: GateSettings::default(),
        analysis: Vec::new(),
        webhooks: Vec::new(),
        rollback: crate::config::RollbackPolicy::Immediate,
    }
}

fn healthy(port: u16) -> Input {
    Input::Health(HealthVerdict {
        port,
        healthy: true,
        reason: None,
    })
}

fn unhealthy(port: u16, why: &str) -> Input {
    Input::Health(HealthVerdict {
        port,
        healthy: false,
        reason: Some(why.into()),
    })
}

fn cmd(c: OperatorCommand) -> Input {
    Input::Command {
        command: c,
        uid: Some(1000),
    }
}

fn start() -> OperatorCommand {
    OperatorCommand::Start {
        steps: None,
        hold: None,
        dry_run: false,
    }
}

fn sig(new_flows: u64, refusals: u64, resets: u64) -> Signals {
    Signals {
        new_flows,
        refusals,
        resets,
    }
}

/// A sample where both backends have `n` new flows and nothing refused.
fn clean(n: u64) -> Input {
    Input::Signals(SignalSample {
        blue: sig(n * 10, 0, 0),
        green: sig(n, 0, 0),
    })
}

fn engine() -> Engine {
    let mut e = Engine::new("web", settings(), BLUE, GREEN, 0, true);
    feed(&mut e, Duration::ZERO, healthy(GREEN));
    feed(&mut e, Duration::ZERO, healthy(BLUE));
    feed(&mut e, Duration::ZERO, clean(0));
    e
}

#[track_caller]
fn feed(e: &mut Engine, now: Duration, input: Input) -> Vec<Effect> {
    e.handle(now, input.clone())
        .unwrap_or_else(|err| panic!("{input:?} at {now:?} failed: {err}"))
}

fn weights(fx: &[Effect]) -> Vec<(u16, bool)> {
    fx.iter()
        .filter_map(|f| match f {
            Effect::SetWeight { bp, dry_run, .. } => Some((*bp, *dry_run)),
            _ => None,
        })
        .collect()
}

fn events(fx: &[Effect]) -> Vec<(StateName, StateName, Cause)> {
    fx.iter()
        .filter_map(|f| match f {
            Effect::Record(ev) => Some((ev.from, ev.to, ev.cause.clone())),
            _ => None,
        })
        .collect()
}

/// Engines in every state, with the time they are at.
fn in_state(name: &str) -> (Engine, Duration) {
    let mut e = engine();
    let t = secs(1);
    match name {
        "idle" => {}
        "running" => {
            feed(&mut e, t, cmd(start()));
        }
        "paused" => {
            feed(&mut e, t, cmd(start()));
            feed(&mut e, t, cmd(OperatorCommand::Pause));
        }
        "waiting-approval" => {
            feed(&mut e, t, cmd(start()));
            feed(&mut e, secs(11), clean(100));
            feed(&mut e, secs(21), clean(200));
            assert_eq!(e.state().name(), StateName::WaitingApproval);
            return (e, secs(21));
        }
        "frozen" => {
            feed(&mut e, t, cmd(start()));
            feed(&mut e, t, cmd(OperatorCommand::Freeze));
        }
        "rolled-back" => {
            feed(&mut e, t, cmd(start()));
            feed(&mut e, t, unhealthy(GREEN, "refused"));
            feed(&mut e, t, healthy(GREEN));
        }
        "completed" => {
            feed(&mut e, t, cmd(start()));
            feed(&mut e, secs(11), clean(100));
            feed(&mut e, secs(21), clean(200));
            feed(&mut e, secs(21), cmd(OperatorCommand::Approve));
            feed(&mut e, secs(31), clean(300));
            assert_eq!(e.state(), &State::Completed);
            assert_eq!(e.weight_bp(), 10_000);
            return (e, secs(31));
        }
        other => panic!("no such state {other}"),
    }
    assert_eq!(e.state().name().to_string().replace(' ', "-"), name);
    (e, t)
}

#[derive(Debug)]
enum Want {
    /// New state and the weight effects.
    Ok(StateName, &'static [u16]),
    NotAllowed,
    NothingToRollBack,
    NotFullyShifted,
    NothingToRamp,
}

#[test]
fn every_command_in_every_state() {
    use StateName as S;
    use Want::*;
    let commands: Vec<OperatorCommand> = vec![
        start(),
        OperatorCommand::BlueGreen {
            hold: None,
            dry_run: false,
        },
        OperatorCommand::Pause,
        OperatorCommand::Resume,
        OperatorCommand::Abort,
        OperatorCommand::Promote,
        OperatorCommand::Rollback,
        OperatorCommand::Freeze,
        OperatorCommand::Approve,
    ];
    // Columns: start, blue-green, pause, resume, abort, promote, rollback, freeze, approve.
    let table: Vec<(&str, [Want; 9])> = vec![
        (
            "idle",
            [
                Ok(S::Running, &[100]),
                Ok(S::Running, &[10_000]),
                NotAllowed,
                NotAllowed,
                NotAllowed,
                NotFullyShifted,
                NothingToRollBack,
                NotAllowed,
                NotAllowed,
            ],
        ),
        (
            "running",
            [
                NotAllowed,
                NotAllowed,
                Ok(S::Paused, &[]),
                NotAllowed,
                Ok(S::RolledBack, &[0]),
                NotAllowed,
                Ok(S::RolledBack, &[0]),
                Ok(S::Frozen, &[]),
                NotAllowed,
            ],
        ),
        (
            "paused",
            [
                NotAllowed,
                NotAllowed,
                NotAllowed,
                Ok(S::Running, &[]),
                Ok(S::RolledBack, &[0]),
                NotAllowed,
                Ok(S::RolledBack, &[0]),
                Ok(S::Frozen, &[]),
                NotAllowed,
            ],
        ),
        (
            "waiting-approval",
            [
                NotAllowed,
                NotAllowed,
                NotAllowed,
                NotAllowed,
                Ok(S::RolledBack, &[0]),
                NotAllowed,
                Ok(S::RolledBack, &[0]),
                Ok(S::Frozen, &[]),
                Ok(S::Running, &[10_000]),
            ],
        ),
        (
            "frozen",
            [
                // A new ramp from the frozen weight (1 %): the 1 % step is skipped.
                Ok(S::Running, &[500]),
                Ok(S::Running, &[10_000]),
                NotAllowed,
                NotAllowed,
                Ok(S::RolledBack, &[0]),
                NotFullyShifted,
                Ok(S::RolledBack, &[0]),
                NotAllowed,
                NotAllowed,
            ],
        ),
        (
            "rolled-back",
            [
                Ok(S::Running, &[100]),
                Ok(S::Running, &[10_000]),
                NotAllowed,
                NotAllowed,
                NotAllowed,
                NotFullyShifted,
                NothingToRollBack,
                NotAllowed,
                NotAllowed,
            ],
        ),
        (
            "completed",
            [
                NothingToRamp,
                NothingToRamp,
                NotAllowed,
                NotAllowed,
                NotAllowed,
                Ok(S::Idle, &[]),
                Ok(S::RolledBack, &[0]),
                NotAllowed,
                NotAllowed,
            ],
        ),
    ];
    for (state, row) in &table {
        for (command, want) in commands.iter().zip(row) {
            let (mut e, t) = in_state(state);
            let now = t + secs(1);
            let before_progress = e.progress(now);
            let before_status = e.status(now);
            let res = e.command(now, command.clone(), Some(0));
            let ctx = format!("{} in state {state}", command.name());
            match (want, res) {
                (Ok(to, ws), Result::Ok(fx)) => {
                    let got: Vec<u16> = weights(&fx).iter().map(|w| w.0).collect();
                    assert_eq!(&got, ws, "{ctx}: weight effects");
                    let evs = events(&fx);
                    assert_eq!(evs.len(), 1, "{ctx}: one event per transition: {evs:?}");
                    assert_eq!(evs[0].1, *to, "{ctx}: new state");
                    assert_eq!(e.state().name(), *to, "{ctx}: new state");
                    assert_eq!(
                        evs[0].2,
                        Cause::Operator {
                            command: command.name().into(),
                            uid: Some(0)
                        },
                        "{ctx}: cause"
                    );
                    assert!(
                        matches!(fx.last(), Some(Effect::Persist(_))),
                        "{ctx}: progress persisted last"
                    );
                    if matches!(command, OperatorCommand::Promote) {
                        assert!(matches!(fx[0], Effect::SwapRoles { .. }), "{ctx}: {fx:?}");
                        assert_eq!(e.ports(), (GREEN, BLUE), "{ctx}: roles swapped");
                        assert_eq!(e.weight_bp(), 0);
                    }
                }
                (want, Result::Err(err)) => {
                    let ok = matches!(
                        (want, &err),
                        (NotAllowed, CommandError::NotAllowed { .. })
                            | (NothingToRollBack, CommandError::NothingToRollBack)
                            | (NotFullyShifted, CommandError::NotFullyShifted { .. })
                            | (NothingToRamp, CommandError::NothingToRamp { .. })
                    );
                    assert!(ok, "{ctx}: wanted {want:?}, got error {err:?}");
                    assert!(!err.to_string().is_empty());
                    assert_eq!(e.progress(now), before_progress, "{ctx}: nothing changed");
                    assert_eq!(e.status(now), before_status, "{ctx}: nothing changed");
                }
                (want, Result::Ok(fx)) => {
                    panic!("{ctx}: wanted {want:?}, got effects {fx:?}")
                }
            }
        }
    }
}

#[test]
fn error_messages_are_clear() {
    let (mut e, t) = in_state("running");
    let err = e.command(t, OperatorCommand::Resume, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot resume: the rollout of web is running"
    );
    let (mut e, t) = in_state("idle");
    let err = e.command(t, OperatorCommand::Promote, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot promote: green has 0.00% of new connections; promote needs 100%"
    );
    let err = e
        .command(
            t,
            OperatorCommand::Start {
                steps: Some(vec![500, 100]),
                hold: None,
                dry_run: false,
            },
            None,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid steps: steps[1]: 1.00% is not above the previous step (5.00%)"
    );
    let mut e = Engine::new("web", settings(), BLUE, GREEN, 0, true);
    feed(
        &mut e,
        t,
        unhealthy(GREEN, "connect 127.0.0.1:8082: refused"),
    );
    let err = e.command(t, start(), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot start: green (8082) is down (last failure: connect 127.0.0.1:8082: refused)"
    );
    let mut e = Engine::new("web", settings(), BLUE, GREEN, 0, true);
    let err = e.command(t, start(), None).unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::GreenNotHealthy {
                status: HealthStatus::Unknown,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn steps_advance_exactly_at_the_end_of_their_hold() {
    let mut e = engine();
    let fx = feed(&mut e, secs(5), cmd(start()));
    assert_eq!(weights(&fx), [(100, false)]);
    assert_eq!(e.next_deadline(), Some(secs(15)));
    assert!(feed(&mut e, secs(15) - ms(1), clean(10)).is_empty());
    let fx = feed(&mut e, secs(15), clean(20));
    assert_eq!(weights(&fx), [(500, false)]);
    assert!(matches!(
        &events(&fx)[0].2,
        Cause::StepPassed { step: 0, .. }
    ));
    assert_eq!(e.next_deadline(), Some(secs(25)));
    assert!(feed(&mut e, secs(25) - ms(1), clean(25)).is_empty());
    let fx = feed(&mut e, secs(25), clean(30));
    assert!(weights(&fx).is_empty(), "the 5 % step waits for approval");
    assert_eq!(e.state(), &State::WaitingApproval { step: 1 });
    assert_eq!(e.next_deadline(), None);
    let fx = feed(&mut e, secs(40), cmd(OperatorCommand::Approve));
    assert_eq!(weights(&fx), [(10_000, false)]);
    assert_eq!(e.next_deadline(), Some(secs(50)));
    assert!(feed(&mut e, secs(49), Input::Tick).is_empty());
    let fx = feed(&mut e, secs(50), clean(40));
    assert!(weights(&fx).is_empty());
    assert_eq!(e.state(), &State::Completed);
    assert_eq!(events(&fx)[0].1, StateName::Completed);
}

#[test]
fn pause_keeps_the_remaining_hold() {
    let mut e = engine();
    feed(&mut e, secs(0), cmd(start()));
    feed(&mut e, secs(4), cmd(OperatorCommand::Pause));
    assert_eq!(e.status(secs(50)).remaining_hold, Some(secs(6)));
    // Time passing while paused changes nothing.
    assert!(feed(&mut e, secs(100), clean(5)).is_empty());
    feed(&mut e, secs(100), cmd(OperatorCommand::Resume));
    assert_eq!(e.next_deadline(), Some(secs(106)));
    assert!(feed(&mut e, secs(106) - ms(1), Input::Tick).is_empty());
    let fx = feed(&mut e, secs(106), Input::Tick);
    assert!(matches!(
        events(&fx)[0].2,
        Cause::StepPassed { step: 0, .. }
    ));
}

#[test]
fn approval_waits_for_the_operator_and_keeps_the_weight() {
    let (mut e, t) = in_state("waiting-approval");
    assert_eq!(e.weight_bp(), 500);
    for s in 1..100 {
        assert!(feed(&mut e, t + secs(s), clean(300 + s)).is_empty());
    }
    assert_eq!(e.weight_bp(), 500);
    // A failing green still rolls back while waiting.
    let fx = feed(&mut e, t + secs(200), unhealthy(GREEN, "503"));
    assert_eq!(weights(&fx), [(0, false)]);
}

#[test]
fn freeze_stops_the_ramp_but_keeps_the_safety_net() {
    let (mut e, t) = in_state("frozen");
    assert_eq!(e.weight_bp(), 100);
    for s in 1..100 {
        assert!(feed(&mut e, t + secs(s), clean(10 * s)).is_empty());
    }
    assert_eq!(e.weight_bp(), 100);
    assert_eq!(e.state(), &State::Frozen { step: 0 });
    let fx = feed(
        &mut e,
        t + secs(200),
        unhealthy(GREEN, "timed out after 1s"),
    );
    assert_eq!(weights(&fx), [(0, false)]);
    assert_eq!(
        e.state(),
        &State::RolledBack {
            cause: Cause::Health {
                port: GREEN,
                reason: "timed out after 1s".into()
            }
        }
    );
}

#[test]
fn health_rollback_is_one_effect_first() {
    let mut e = engine();
    feed(&mut e, secs(0), cmd(start()));
    feed(&mut e, secs(10), clean(50));
    feed(&mut e, secs(20), clean(60));
    feed(&mut e, secs(20), cmd(OperatorCommand::Approve));
    assert_eq!(e.weight_bp(), 10_000);
    let fx = feed(&mut e, secs(12), unhealthy(GREEN, "connection refused"));
    assert!(
        matches!(
            fx[0],
            Effect::SetWeight {
                bp: 0,
                dry_run: false,
                ..
            }
        ),
        "the weight change comes first: {fx:?}"
    );
    assert_eq!(weights(&fx).len(), 1);
    let evs = events(&fx);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].0, StateName::Running);
    assert_eq!(evs[0].1, StateName::RolledBack);
    // Blue failing does not touch green's weight.
    let mut e = engine();
    feed(&mut e, secs(0), cmd(start()));
    assert!(weights(&feed(&mut e, secs(1), unhealthy(BLUE, "x"))).is_empty());
    assert_eq!(e.status(secs(1)).blue.status, HealthStatus::Down);
    // Neither does a verdict for some other port.
    assert!(feed(&mut e, secs(1), unhealthy(9999, "x")).is_empty());
}

#[test]
fn a_flapping_green_never_makes_the_weight_oscillate() {
    let mut e = engine();
    feed(&mut e, secs(0), cmd(start()));
    let mut all = Vec::new();
    for i in 0..50u64 {
        let t = secs(1) + ms(100 * i);
        all.extend(feed(&mut e, t, unhealthy(GREEN, "flap")));
        all.extend(feed(&mut e, t + ms(50), healthy(GREEN)));
        all.extend(feed(&mut e, t + ms(60), clean(i)));
        all.extend(feed(&mut e, t + ms(70), Input::Tick));
    }
    // Hours later, green healthy: still nothing.
    all.extend(feed(&mut e, secs(100_000), clean(10_000)));
    assert_eq!(
        weights(&all),
        [(0, false)],
        "exactly one change: the rollback"
    );
    assert_eq!(e.weight_bp(), 0);
    assert!(matches!(e.state(), State::RolledBack { .. }));
    // Only an explicit start ramps again.
    let fx = feed(&mut e, secs(100_001), cmd(start()));
    assert_eq!(weights(&fx), [(100, false)]);
}

#[test]
fn gate_failure_rolls_back_at_the_end_of_the_hold() {
    let mut e = engine();
    feed(
        &mut e,
        secs(0),
        Input::Signals(SignalSample {
            blue: sig(1000, 1, 0),
            green: sig(0, 0, 0),
        }),
    );
    feed(&mut e, secs(0), cmd(start()));
    // Green refuses 30 of 100 new connections during the step; its HTTP check still passes.
    let bad = Input::Signals(SignalSample {
        blue: sig(11_000, 11, 0),
        green: sig(100, 30, 0),
    });
    assert!(
        feed(&mut e, secs(5), bad.clone()).is_empty(),
        "judged at the end of the hold"
    );
    let fx = feed(&mut e, secs(10), bad);
    assert_eq!(weights(&fx), [(0, false)]);
    match e.state() {
        State::RolledBack {
            cause: Cause::Gate { step: 0, reason },
        } => assert_eq!(
            reason,
            "green's refusal ratio 30.00% (30 of 100 new connections) is above the bound 2.00%"
        ),
        s => panic!("expected a gate rollback, got {s:?}"),
    }
}

#[test]
fn gate_compares_with_blue_over_the_step_only() {
    let mut s = settings();
    s.gate.max_refusal_ppm = 500_000;
    s.gate.refusal_margin_ppm = 10_000;
    let mut e = Engine::new("web", s, BLUE, GREEN, 0, false);
    // History before the step: green looked terrible, which must not count.
    feed(
        &mut e,
        secs(0),
        Input::Signals(SignalSample {
            blue: sig(1000, 0, 0),
            green: sig(100, 90, 0),
        }),
    );
    feed(&mut e, secs(0), cmd(start()));
    // During the step: blue refuses 10 %, green 10.5 % (within blue + 1 %).
    let fx = feed(
        &mut e,
        secs(10),
        Input::Signals(SignalSample {
            blue: sig(2000, 100, 0),
            green: sig(300, 111, 0),
        }),
    );
    assert!(
        matches!(&events(&fx)[0].2, Cause::StepPassed { step: 0, .. }),
        "{fx:?}"
    );
    // Next step: green 20 %, blue 10 % -> beyond the margin.
    let fx = feed(
        &mut e,
        secs(20),
        Input::Signals(SignalSample {
            blue: sig(3000, 200, 0),
            green: sig(400, 131, 0),
        }),
    );
    assert_eq!(weights(&fx), [(0, false)], "{:?}", e.state());
}

#[test]
fn a_step_without_enough_evidence_keeps_holding() {
    let mut s = settings();
    s.gate.min_green_flows = 50;
    let mut e = Engine::new("web", s, BLUE, GREEN, 0, true);
    feed(&mut e, secs(0), healthy(GREEN));
    feed(&mut e, secs(0), clean(0));
    feed(&mut e, secs(0), cmd(start()));
    let fx = feed(&mut e, secs(10), clean(10));
    let evs = events(&fx);
    assert_eq!(evs.len(), 1);
    assert!(
        matches!(&evs[0].2, Cause::GateWaiting { step: 0, reason } if reason == "green had 10 new connections in this step; the gate needs 50")
    );
    // The same reason is recorded once.
    assert!(feed(&mut e, secs(11), clean(10)).is_empty());
    assert!(feed(&mut e, secs(12), Input::Tick).is_empty());
    assert_eq!(
        e.status(secs(12)).gate_waiting.as_deref(),
        Some("green had 10 new connections in this step; the gate needs 50")
    );
    let fx = feed(&mut e, secs(13), clean(60));
    assert!(matches!(
        &events(&fx)[0].2,
        Cause::StepPassed { step: 0, .. }
    ));
}

#[test]
fn unknown_health_at_the_end_of_a_hold_waits() {
    // A restarted daemon: progress resumes with health unknown.
    let mut e = engine();
    feed(&mut e, secs(0), cmd(start()));
    let p = e.progress(secs(3));
    let (mut e, fx) = Engine::resume_from(p, settings(), true, secs(500));
    assert!(weights(&fx).is_empty());
    let fx = feed(&mut e, secs(507), clean(10));
    assert!(
        matches!(&events(&fx)[0].2, Cause::GateWaiting { reason, .. } if reason == "green's health is not known yet")
    );
    let fx = feed(&mut e, secs(508), healthy(GREEN));
    assert!(fx.is_empty());
    let fx = feed(&mut e, secs(508), Input::Tick);
    assert!(matches!(
        &events(&fx)[0].2,
        Cause::StepPassed { step: 0, .. }
    ));
}

#[test]
fn dry_run_follows_the_ramp_without_the_real_weight() {
    let mut e = Engine::new("web", settings(), BLUE, GREEN, 0, true);
    feed(&mut e, secs(0), healthy(GREEN));
    feed(&mut e, secs(0), clean(0));
    let fx = feed(
        &mut e,
        secs(0),
        cmd(OperatorCommand::Start {
            steps: Some(vec![100, 2500]),
            hold: Some(secs(5)),
            dry_run: true,
        }),
    );
    assert_eq!(weights(&fx), [(100, true)]);
    let ev = fx
        .iter()
        .find_map(|f| match f {
            Effect::Record(ev) => Some(ev.clone()),
            _ => None,
        })
        .unwrap();
    assert!(ev.dry_run);
    assert_eq!((ev.weight_before_bp, ev.weight_after_bp), (0, 100));
    assert_eq!(e.weight_bp(), 0, "the real weight is untouched");
    assert_eq!(e.controlled_weight(), 100);
    let fx = feed(&mut e, secs(5), clean(10));
    assert_eq!(weights(&fx), [(2500, true)]);
    let fx = feed(&mut e, secs(7), unhealthy(GREEN, "boom"));
    assert_eq!(weights(&fx), [(0, true)], "a would-be rollback");
    assert_eq!(e.weight_bp(), 0);
    match &e.status(secs(7)).progress.phase {
        Phase::RolledBack { cause } => assert!(matches!(cause, Cause::Health { .. })),
        p => panic!("{p:?}"),
    }
    assert!(e.status(secs(7)).progress.rollout.unwrap().dry_run);
    // Promote is refused after a dry run.
    let (mut e2, _) = in_state("idle");
    feed(
        &mut e2,
        secs(0),
        cmd(OperatorCommand::BlueGreen {
            hold: Some(secs(1)),
            dry_run: true,
        }),
    );
    feed(&mut e2, secs(1), clean(5));
    assert_eq!(e2.state(), &State::Completed);
    assert_eq!(
        e2.command(secs(2), OperatorCommand::Promote, None),
        Err(CommandError::DryRunPromote)
    );
}

#[test]
fn dry_run_with_a_real_weight_keeps_it() {
    // The real weight is 30 % (set by hand); a dry run starts from there.
    let mut e = Engine::new("web", settings(), BLUE, GREEN, 3000, false);
    let fx = feed(
        &mut e,
        secs(0),
        cmd(OperatorCommand::BlueGreen {
            hold: None,
            dry_run: true,
        }),
    );
    assert_eq!(weights(&fx), [(10_000, true)]);
    let fx = feed(&mut e, secs(1), cmd(OperatorCommand::Abort));
    assert_eq!(weights(&fx), [(0, true)]);
    assert_eq!(e.weight_bp(), 3000);
    // After the dry run, rollback is about the real weight.
    let fx = feed(&mut e, secs(2), cmd(OperatorCommand::Rollback));
    assert_eq!(weights(&fx), [(0, false)]);
    assert_eq!(e.weight_bp(), 0);
}

#[test]
fn restart_resumes_the_same_step_and_remaining_hold_without_a_weight_change() {
    let mut e = engine();
    feed(&mut e, secs(0), clean(0));
    feed(&mut e, secs(0), cmd(start()));
    feed(&mut e, secs(4), clean(7));
    // Progress as the last Persist effect carried it, through JSON.
    let fx = feed(&mut e, secs(4), cmd(OperatorCommand::Pause));
    feed(&mut e, secs(4), cmd(OperatorCommand::Resume));
    let Some(Effect::Persist(p)) = fx.last() else {
        panic!("no persist effect: {fx:?}")
    };
    assert_eq!(
        p.phase,
        Phase::Paused {
            step: 0,
            remaining: secs(6)
        }
    );
    let running = e.progress(secs(4));
    let json = serde_json::to_string(&running).unwrap();
    let back: super::engine::Progress = serde_json::from_str(&json).unwrap();
    assert_eq!(back, running);
    // The new process has its own clock: resume at its t = 2 s.
    let (mut r, fx) = Engine::resume_from(back, settings(), true, secs(2));
    assert!(
        weights(&fx).is_empty(),
        "no weight change on resume: {fx:?}"
    );
    assert_eq!(events(&fx)[0].2, Cause::Restart);
    assert_eq!(r.weight_bp(), 100);
    assert_eq!(r.next_deadline(), Some(secs(8)), "6 s of hold were left");
    feed(&mut r, secs(2), healthy(GREEN));
    assert!(feed(&mut r, secs(8) - ms(1), clean(9)).is_empty());
    let fx = feed(&mut r, secs(8), clean(10));
    assert!(matches!(
        &events(&fx)[0].2,
        Cause::StepPassed { step: 0, .. }
    ));
    // Paused progress resumes paused.
    let (r, fx) = Engine::resume_from(p.as_ref().clone(), settings(), true, secs(1));
    assert!(weights(&fx).is_empty());
    assert_eq!(
        r.state(),
        &State::Paused {
            step: 0,
            remaining: secs(6)
        }
    );
}

#[test]
fn an_outside_weight_change_freezes_a_ramp() {
    let (mut e, t) = in_state("running");
    let fx = feed(&mut e, t, Input::WeightChanged { bp: 4200 });
    assert!(weights(&fx).is_empty());
    assert_eq!(e.state(), &State::Frozen { step: 0 });
    assert_eq!(
        events(&fx)[0].2,
        Cause::OutsideWeightChange { weight_bp: 4200 }
    );
    assert!(feed(&mut e, t + secs(100), clean(100)).is_empty());
    assert_eq!(e.weight_bp(), 4200);
}

#[test]
fn promote_swaps_roles_and_health() {
    let (mut e, t) = in_state("completed");
    feed(&mut e, t, unhealthy(BLUE, "old blue stopped"));
    let fx = feed(&mut e, t, cmd(OperatorCommand::Promote));
    assert!(matches!(fx[0], Effect::SwapRoles { .. }));
    assert!(weights(&fx).is_empty(), "the swap carries weight 0 itself");
    let st = e.status(t);
    assert_eq!((st.blue.port, st.green.port), (GREEN, BLUE));
    assert_eq!(st.blue.status, HealthStatus::Up);
    assert_eq!(st.green.status, HealthStatus::Down);
    assert_eq!(e.state(), &State::Idle);
    // The old blue (now green) failing is no rollback trigger: weight is 0 and no rollout.
    assert!(feed(&mut e, t, unhealthy(BLUE, "x")).is_empty());
}

#[test]
fn start_skips_steps_at_or_below_the_current_weight() {
    let mut e = Engine::new("web", settings(), BLUE, GREEN, 500, false);
    let fx = feed(&mut e, secs(0), cmd(start()));
    assert_eq!(weights(&fx), [(10_000, false)]);
    assert_eq!(e.rollout().unwrap().steps.len(), 1);
}

// ---------------------------------------------------------------------------------------
// The async driver on tokio's paused clock.
// ---------------------------------------------------------------------------------------

mod driver {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use tokio::{
        sync::{mpsc, oneshot},
        time::Instant,
    };

    use super::{BLUE, GREEN, settings};
    use crate::{
        health::HealthVerdict,
        rollout::{
            Actuator, Cause, Driver, Engine, Message, OperatorCommand, Progress, RolloutEvent,
            SignalSample, Signals, StateName,
        },
    };

    #[derive(Default)]
    struct Log {
        weights: Vec<(Duration, u16, bool)>,
        events: Vec<RolloutEvent>,
        persisted: Option<Progress>,
        green_new_flows: u64,
    }

    struct Fake {
        origin: Instant,
        log: Arc<Mutex<Log>>,
    }

    impl Actuator for Fake {
        type Error = std::io::Error;

        fn set_weight(
            &mut self,
            bp: u16,
            dry_run: bool,
            _cause: &Cause,
        ) -> Result<Duration, Self::Error> {
            let t = std::time::Instant::now();
            self.log
                .lock()
                .unwrap()
                .weights
                .push((self.origin.elapsed(), bp, dry_run));
            Ok(t.elapsed())
        }

        fn swap_roles(&mut self, _cause: &Cause) -> Result<Duration, Self::Error> {
            Ok(Duration::ZERO)
        }

        fn sample(&mut self) -> Result<SignalSample, Self::Error> {
            let n = self.log.lock().unwrap().green_new_flows;
            Ok(SignalSample {
                blue: Signals {
                    new_flows: n * 10,
                    ..Signals::default()
                },
                green: Signals {
                    new_flows: n,
                    ..Signals::default()
                },
            })
        }

        fn persist(&mut self, progress: &Progress) -> Result<(), Self::Error> {
            self.log.lock().unwrap().persisted = Some(progress.clone());
            Ok(())
        }

        fn record(&mut self, event: RolloutEvent) {
            self.log.lock().unwrap().events.push(event);
        }

        fn confirm(&mut self, call: crate::rollout::HookCall) {
            panic!("these tests configure no webhook, yet {call:?} was asked");
        }
    }

    async fn command(tx: &mpsc::Sender<Message>, command: OperatorCommand) {
        let (reply, rx) = oneshot::channel();
        tx.send(Message::Command {
            command,
            uid: Some(0),
            reply,
        })
        .await
        .unwrap();
        rx.await
            .unwrap()
            .unwrap_or_else(|e| panic!("command failed: {e}"));
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn driver_ramps_on_time_and_rolls_back_on_a_verdict() {
        let origin = Instant::now();
        let log = Arc::new(Mutex::new(Log::default()));
        let mut s = settings();
        s.steps.remove(1);
        s.steps[0].approve = true;
        let mut engine = Engine::new("web", s, BLUE, GREEN, 0, true);
        engine
            .handle(
                Duration::ZERO,
                crate::rollout::Input::Health(HealthVerdict {
                    port: GREEN,
                    healthy: true,
                    reason: None,
                }),
            )
            .unwrap();
        let driver = Driver::new(
            engine,
            Fake {
                origin,
                log: log.clone(),
            },
            origin,
            Duration::from_secs(1),
        );
        let (tx, rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(driver.run(rx, async {
            let _ = stop_rx.await;
        }));

        tokio::time::advance(Duration::from_millis(500)).await;
        command(&tx, super::start()).await;
        log.lock().unwrap().green_new_flows = 40;
        // Step 1 holds 10 s from t = 0.5 s.
        tokio::time::advance(Duration::from_millis(9_999)).await;
        settle().await;
        assert_eq!(log.lock().unwrap().weights.len(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        let last = log.lock().unwrap().events.last().cloned().unwrap();
        assert_eq!(last.to, StateName::WaitingApproval, "{last:?}");
        assert_eq!(last.at, Duration::from_millis(10_500));
        command(&tx, OperatorCommand::Approve).await;
        tokio::time::advance(Duration::from_secs(3)).await;
        settle().await;

        // Green fails: the checker's verdict reaches the driver.
        let decided_at = std::time::Instant::now();
        tx.send(Message::Health {
            verdict: HealthVerdict {
                port: GREEN,
                healthy: false,
                reason: Some("connect refused".into()),
            },
            decided_at,
        })
        .await
        .unwrap();
        settle().await;
        let (status_tx, status_rx) = oneshot::channel();
        tx.send(Message::Status { reply: status_tx }).await.unwrap();
        let status = status_rx.await.unwrap();
        assert_eq!(status.progress.weight_bp, 0);
        let _ = stop_tx.send(());
        let (engine, _) = task.await.unwrap();
        assert_eq!(engine.weight_bp(), 0);

        let log = log.lock().unwrap();
        let w: Vec<(u128, u16)> = log
            .weights
            .iter()
            .map(|(t, bp, _)| (t.as_millis(), *bp))
            .collect();
        assert_eq!(w, [(500, 100), (10_500, 10_000), (13_500, 0)]);
        let rb = log.events.last().unwrap();
        assert_eq!(rb.to, StateName::RolledBack);
        let act = rb
            .actuation
            .clone()
            .expect("the rollback carries its timing");
        let since = act.since_decision.expect("time since the deciding check");
        println!(
            "rollback: map update {:?}, decision to update returned {:?}",
            act.map_update, since
        );
        assert!(since < Duration::from_millis(50), "{since:?}");
        assert_eq!(log.persisted.as_ref().unwrap().weight_bp, 0);
    }
}
