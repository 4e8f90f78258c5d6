//! Gradual rollback: soft failures (an operator's abort, a confirm webhook's limit, an
//! analysis's inconclusive limit) follow the policy's steps below the current weight; a
//! failed health check during it goes to 0 at once; a restart continues it.

use std::time::Duration;

use super::{
    engine::{Cause, Effect, Engine, Input, OperatorCommand, Phase, State, StateName},
    gate::SignalSample,
    types::{AnalysisResult, HookAnswer, Measurement},
};
use crate::{
    config::{
        AnalysisSettings, Bound, HookKind, RollbackPolicy, RolloutSettings, Step, WebhookSettings,
    },
    health::HealthVerdict,
};

const BLUE: u16 = 8081;
const GREEN: u16 = 8082;

fn settings(rollback: RollbackPolicy) -> RolloutSettings {
    RolloutSettings {
        steps: [2500, 7500, 10_000]
            .map(|weight_bp| Step {
                weight_bp,
                hold: Duration::from_secs(10),
                approve: false,
            })
            .to_vec(),
        rollback,
        ..RolloutSettings::default()
    }
}

fn gradual() -> RollbackPolicy {
    RollbackPolicy::Gradual {
        steps_bp: vec![5000, 1000, 0],
        hold: Duration::from_secs(3),
    }
}

fn engine(s: RolloutSettings) -> Engine {
    let mut e = Engine::new("web", s, BLUE, GREEN, 0, true);
    for port in [BLUE, GREEN] {
        feed(
            &mut e,
            0,
            Input::Health(HealthVerdict {
                port,
                healthy: true,
                reason: None,
            }),
        );
    }
    feed(&mut e, 0, Input::Signals(SignalSample::default()));
    e
}

#[track_caller]
fn feed(e: &mut Engine, secs: u64, input: Input) -> Vec<Effect> {
    e.handle(Duration::from_secs(secs), input).expect("input")
}

fn cmd(command: OperatorCommand) -> Input {
    Input::Command {
        command,
        uid: Some(0),
    }
}

fn start() -> Input {
    cmd(OperatorCommand::Start {
        steps: None,
        hold: None,
        dry_run: false,
    })
}

fn weights(fx: &[Effect]) -> Vec<u16> {
    fx.iter()
        .filter_map(|f| match f {
            Effect::SetWeight { bp, .. } => Some(*bp),
            _ => None,
        })
        .collect()
}

/// Starts and passes the first step: green at 75 %.
fn at_75(s: RolloutSettings) -> Engine {
    let mut e = engine(s);
    assert_eq!(weights(&feed(&mut e, 0, start())), [2500]);
    assert_eq!(weights(&feed(&mut e, 10, Input::Tick)), [7500]);
    e
}

#[test]
fn an_abort_follows_the_steps_below_the_weight() {
    let mut e = at_75(settings(gradual()));
    let fx = feed(&mut e, 11, cmd(OperatorCommand::Abort));
    assert_eq!(weights(&fx), [5000], "75 % -> 50 %: the first step below");
    assert_eq!(e.state().name(), StateName::RollingBack);
    assert_eq!(e.next_deadline(), Some(Duration::from_secs(14)));
    assert!(
        weights(&feed(&mut e, 13, Input::Tick)).is_empty(),
        "held 3 s"
    );
    let fx = feed(&mut e, 14, Input::Tick);
    assert_eq!(weights(&fx), [1000]);
    let Some(Effect::Record(ev)) = fx.iter().find(|f| matches!(f, Effect::Record(_))) else {
        panic!("an event: {fx:?}");
    };
    assert!(
        matches!(&ev.cause, Cause::RollbackStep { weight_bp: 1000, of } if matches!(&**of, Cause::Operator { .. }))
    );
    assert_eq!(weights(&feed(&mut e, 17, Input::Tick)), [0]);
    assert!(matches!(
        e.state(),
        State::RolledBack {
            cause: Cause::Operator { .. }
        }
    ));
    assert_eq!(e.next_deadline(), None);
    assert!(feed(&mut e, 30, Input::Tick).is_empty());
}

#[test]
fn a_health_failure_during_it_goes_to_zero_at_once() {
    let mut e = at_75(settings(gradual()));
    feed(&mut e, 11, cmd(OperatorCommand::Abort));
    assert_eq!(e.weight_bp(), 5000);
    let fx = feed(
        &mut e,
        12,
        Input::Health(HealthVerdict {
            port: GREEN,
            healthy: false,
            reason: Some("refused".into()),
        }),
    );
    assert_eq!(weights(&fx), [0]);
    assert!(matches!(
        e.state(),
        State::RolledBack {
            cause: Cause::Health { .. }
        }
    ));
    assert!(
        feed(&mut e, 20, Input::Tick).is_empty(),
        "nothing left of the gradual one"
    );
}

#[test]
fn hard_failures_and_the_immediate_policy_go_to_zero_at_once() {
    let mut e = at_75(settings(gradual()));
    let fx = feed(
        &mut e,
        11,
        Input::Health(HealthVerdict {
            port: GREEN,
            healthy: false,
            reason: Some("refused".into()),
        }),
    );
    assert_eq!(weights(&fx), [0], "a failed health check is never gradual");
    let mut e = at_75(settings(RollbackPolicy::Immediate));
    assert_eq!(weights(&feed(&mut e, 11, cmd(OperatorCommand::Abort))), [0]);
    // An operator's rollback is always at once, also during a gradual one.
    let mut e = at_75(settings(gradual()));
    feed(&mut e, 11, cmd(OperatorCommand::Abort));
    assert_eq!(
        weights(&feed(&mut e, 12, cmd(OperatorCommand::Rollback))),
        [0]
    );
    assert_eq!(e.state().name(), StateName::RolledBack);
}

#[test]
fn a_confirm_hook_at_its_limit_rolls_back_gradually() {
    let mut s = settings(gradual());
    s.webhooks = vec![WebhookSettings {
        kind: HookKind::ConfirmStep,
        url: "http://127.0.0.1:9/".into(),
        timeout: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        failure_limit: 1,
        ca: None,
    }];
    let mut e = engine(s);
    feed(&mut e, 0, start());
    feed(&mut e, 10, Input::Tick);
    assert_eq!(e.state().name(), StateName::Confirming);
    let no = Input::Hook(HookAnswer {
        hook: HookKind::ConfirmStep,
        step: 1,
        ok: false,
        detail: "HTTP 500".into(),
    });
    // Green is at 25 %: the steps below it are 10 % and 0.
    assert_eq!(weights(&feed(&mut e, 11, no)), [1000]);
    assert_eq!(weights(&feed(&mut e, 14, Input::Tick)), [0]);
    assert!(matches!(
        e.state(),
        State::RolledBack {
            cause: Cause::HookGaveUp { .. }
        }
    ));
}

#[test]
fn the_inconclusive_limit_rolls_back_gradually_instead_of_pausing() {
    let mut s = settings(gradual());
    s.analysis = vec![AnalysisSettings {
        name: "errors".into(),
        prometheus: "http://127.0.0.1:9090".into(),
        query: "x".into(),
        max: Some(Bound(1.0)),
        min: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        failure_limit: 2,
        inconclusive_limit: 2,
    }];
    let mut e = at_75(s);
    let nodata = || {
        Input::Analysis(AnalysisResult {
            name: "errors".into(),
            measurement: Measurement::Inconclusive,
            value: None,
            detail: "no data".into(),
        })
    };
    assert!(weights(&feed(&mut e, 11, nodata())).is_empty());
    assert_eq!(weights(&feed(&mut e, 12, nodata())), [5000]);
    assert_eq!(e.state().name(), StateName::RollingBack);
}

#[test]
fn a_restart_continues_a_gradual_rollback() {
    let mut e = at_75(settings(gradual()));
    feed(&mut e, 11, cmd(OperatorCommand::Abort));
    let p = e.progress(Duration::from_secs(12));
    assert!(matches!(
        &p.phase,
        Phase::RollingBack { index: 0, remaining, .. } if *remaining == Duration::from_secs(2)
    ));
    let (mut e2, fx) = Engine::resume_from(p, settings(gradual()), true, Duration::from_secs(100));
    assert!(weights(&fx).is_empty(), "a restart changes no weight");
    assert_eq!(e2.next_deadline(), Some(Duration::from_secs(102)));
    assert_eq!(weights(&feed(&mut e2, 102, Input::Tick)), [1000]);
}

#[test]
fn a_weight_at_or_below_the_last_step_rolls_back_at_once() {
    let mut e = engine(settings(RollbackPolicy::Gradual {
        steps_bp: vec![5000, 0],
        hold: Duration::from_secs(3),
    }));
    feed(&mut e, 0, start());
    assert_eq!(e.weight_bp(), 2500);
    assert_eq!(
        weights(&feed(&mut e, 1, cmd(OperatorCommand::Abort))),
        [0],
        "no step between 25 % and 0"
    );
    assert_eq!(e.state().name(), StateName::RolledBack);
}
