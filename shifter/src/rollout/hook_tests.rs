//! The engine and confirm webhooks: a confirm hook holds before the step (or the swap) it
//! guards, a 2xx enters it, a "no" holds and asks again, the failure limit rolls back; a
//! restart asks again; health still rolls back at once while a hook is being asked.

use std::time::Duration;

use super::{
    engine::{Cause, Effect, Engine, Input, OperatorCommand, Phase, State, StateName},
    gate::SignalSample,
    types::{HookAnswer, HookCall},
};
use crate::{
    config::{HookKind, RolloutSettings, Step, WebhookSettings},
    health::HealthVerdict,
};

const BLUE: u16 = 8081;
const GREEN: u16 = 8082;

fn hook(kind: HookKind, failure_limit: u32) -> WebhookSettings {
    WebhookSettings {
        kind,
        url: "http://127.0.0.1:9/hook".into(),
        timeout: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        failure_limit,
        ca: None,
    }
}

fn engine(hooks: Vec<WebhookSettings>) -> Engine {
    let settings = RolloutSettings {
        steps: [1000, 10_000]
            .map(|weight_bp| Step {
                weight_bp,
                hold: Duration::from_secs(10),
                approve: false,
            })
            .to_vec(),
        webhooks: hooks,
        ..RolloutSettings::default()
    };
    let mut e = Engine::new("web", settings, BLUE, GREEN, 0, false);
    // A counter sample, so a step's kernel-signal gate has a verdict at its end.
    feed(&mut e, 0, Input::Signals(SignalSample::default()));
    e
}

#[track_caller]
fn feed(e: &mut Engine, secs: u64, input: Input) -> Vec<Effect> {
    e.handle(Duration::from_secs(secs), input).expect("input")
}

fn start() -> Input {
    Input::Command {
        command: OperatorCommand::Start {
            steps: None,
            hold: None,
            dry_run: false,
        },
        uid: Some(0),
    }
}

fn answer(hook: HookKind, step: usize, ok: bool) -> Input {
    Input::Hook(HookAnswer {
        hook,
        step,
        ok,
        detail: if ok { "HTTP 200" } else { "HTTP 503" }.into(),
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

fn calls(fx: &[Effect]) -> Vec<HookCall> {
    fx.iter()
        .filter_map(|f| match f {
            Effect::Confirm(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn causes(fx: &[Effect]) -> Vec<Cause> {
    fx.iter()
        .filter_map(|f| match f {
            Effect::Record(ev) => Some(ev.cause.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn confirm_rollout_holds_the_first_step_until_a_yes() {
    let mut e = engine(vec![hook(HookKind::ConfirmRollout, 3)]);
    let fx = feed(&mut e, 0, start());
    assert!(weights(&fx).is_empty(), "no weight before the hook says go");
    assert_eq!(
        calls(&fx),
        vec![HookCall {
            hook: HookKind::ConfirmRollout,
            step: 0,
            weight_before_bp: 0,
            weight_after_bp: 1000,
            failures: 0,
        }]
    );
    assert_eq!(e.state().name(), StateName::Confirming);
    assert_eq!(e.next_deadline(), None, "nothing ticks while confirming");

    let fx = feed(&mut e, 1, answer(HookKind::ConfirmRollout, 0, false));
    assert!(weights(&fx).is_empty());
    assert_eq!(calls(&fx)[0].failures, 1, "asked again, counting the no");
    assert!(matches!(
        causes(&fx)[0],
        Cause::HookRefused { failures: 1, .. }
    ));
    // An answer about another hook or step changes nothing.
    assert!(feed(&mut e, 1, answer(HookKind::ConfirmStep, 0, true)).is_empty());
    assert!(feed(&mut e, 1, answer(HookKind::ConfirmRollout, 1, true)).is_empty());

    let fx = feed(&mut e, 2, answer(HookKind::ConfirmRollout, 0, true));
    assert_eq!(weights(&fx), vec![1000]);
    assert!(matches!(e.state(), State::Running { step: 0, .. }));
    assert_eq!(
        e.next_deadline(),
        Some(Duration::from_secs(12)),
        "the hold starts at the yes"
    );
    // Without confirm-step, the next step follows its hold.
    assert_eq!(weights(&feed(&mut e, 12, Input::Tick)), vec![10_000]);
}

#[test]
fn the_failure_limit_rolls_back() {
    let mut e = engine(vec![hook(HookKind::ConfirmStep, 2)]);
    assert_eq!(weights(&feed(&mut e, 0, start())), vec![1000]);
    let fx = feed(&mut e, 10, Input::Tick);
    assert!(weights(&fx).is_empty(), "step 2 waits for confirm-step");
    assert_eq!(calls(&fx)[0].step, 1);
    assert_eq!(calls(&fx)[0].weight_after_bp, 10_000);
    assert!(matches!(causes(&fx)[0], Cause::StepPassed { step: 0, .. }));
    feed(&mut e, 11, answer(HookKind::ConfirmStep, 1, false));
    let fx = feed(&mut e, 12, answer(HookKind::ConfirmStep, 1, false));
    assert_eq!(weights(&fx), vec![0]);
    assert!(calls(&fx).is_empty());
    assert!(matches!(
        e.state(),
        State::RolledBack {
            cause: Cause::HookGaveUp {
                hook: HookKind::ConfirmStep,
                ..
            }
        }
    ));
}

#[test]
fn confirm_step_guards_each_further_step_and_health_still_rolls_back_at_once() {
    let mut e = engine(vec![hook(HookKind::ConfirmStep, 5)]);
    feed(&mut e, 0, start());
    feed(&mut e, 10, Input::Tick);
    let fx = feed(
        &mut e,
        11,
        Input::Health(HealthVerdict {
            port: GREEN,
            healthy: false,
            reason: Some("refused".into()),
        }),
    );
    assert_eq!(
        weights(&fx),
        vec![0],
        "a hook being asked holds no rollback"
    );
    assert_eq!(e.state().name(), StateName::RolledBack);
    assert!(feed(&mut e, 12, answer(HookKind::ConfirmStep, 1, true)).is_empty());
}

#[test]
fn confirm_promotion_holds_the_swap() {
    let mut e = engine(vec![hook(HookKind::ConfirmPromotion, 5)]);
    feed(&mut e, 0, start());
    feed(&mut e, 10, Input::Tick);
    feed(&mut e, 20, Input::Tick);
    assert_eq!(e.state(), &State::Completed);
    let promote = Input::Command {
        command: OperatorCommand::Promote,
        uid: Some(0),
    };
    let fx = feed(&mut e, 21, promote);
    assert!(!fx.iter().any(|f| matches!(f, Effect::SwapRoles { .. })));
    assert_eq!(calls(&fx)[0].hook, HookKind::ConfirmPromotion);
    assert_eq!(e.weight_bp(), 10_000);
    let fx = feed(&mut e, 22, answer(HookKind::ConfirmPromotion, 1, true));
    assert!(fx.iter().any(|f| matches!(f, Effect::SwapRoles { .. })));
    assert_eq!(e.state(), &State::Idle);
    assert_eq!(e.ports(), (GREEN, BLUE));
}

#[test]
fn a_restart_asks_again_with_its_count() {
    let mut e = engine(vec![hook(HookKind::ConfirmRollout, 5)]);
    feed(&mut e, 0, start());
    feed(&mut e, 1, answer(HookKind::ConfirmRollout, 0, false));
    let p = e.progress(Duration::from_secs(2));
    assert!(matches!(
        p.phase,
        Phase::Confirming {
            step: 0,
            failures: 1,
            ..
        }
    ));
    let settings = e.settings().clone();
    let (e2, fx) = Engine::resume_from(p, settings, false, Duration::ZERO);
    assert_eq!(e2.state().name(), StateName::Confirming);
    assert_eq!(calls(&fx)[0].failures, 1);
    assert!(weights(&fx).is_empty());
}

#[test]
fn abort_while_confirming_rolls_back() {
    let mut e = engine(vec![hook(HookKind::ConfirmStep, 5)]);
    feed(&mut e, 0, start());
    feed(&mut e, 10, Input::Tick);
    let fx = feed(
        &mut e,
        11,
        Input::Command {
            command: OperatorCommand::Abort,
            uid: Some(0),
        },
    );
    assert_eq!(weights(&fx), vec![0]);
    assert_eq!(e.state().name(), StateName::RolledBack);
}

/// The async driver passes confirm calls to its actuator and hook answers to the engine.
#[tokio::test(start_paused = true)]
async fn the_driver_carries_calls_and_answers() {
    use std::sync::{Arc, Mutex};

    use super::{
        driver::{Actuator, Driver, Message},
        engine::{OperatorCommand, Progress, RolloutEvent},
    };

    #[derive(Default)]
    struct Log {
        weights: Vec<u16>,
        calls: Vec<HookCall>,
    }
    struct Fake(Arc<Mutex<Log>>);
    impl Actuator for Fake {
        type Error = std::io::Error;
        fn set_weight(&mut self, bp: u16, _: bool, _: &Cause) -> Result<Duration, Self::Error> {
            self.0.lock().unwrap().weights.push(bp);
            Ok(Duration::ZERO)
        }
        fn swap_roles(&mut self, _: &Cause) -> Result<Duration, Self::Error> {
            Ok(Duration::ZERO)
        }
        fn sample(&mut self) -> Result<SignalSample, Self::Error> {
            Ok(SignalSample::default())
        }
        fn persist(&mut self, _: &Progress) -> Result<(), Self::Error> {
            Ok(())
        }
        fn record(&mut self, _: RolloutEvent) {}
        fn confirm(&mut self, call: HookCall) {
            self.0.lock().unwrap().calls.push(call);
        }
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let mut d = Driver::new(
        engine(vec![hook(HookKind::ConfirmRollout, 3)]),
        Fake(log.clone()),
        tokio::time::Instant::now(),
        Duration::from_secs(1),
    );
    let (reply, _rx) = tokio::sync::oneshot::channel();
    d.on_message(Message::Command {
        command: OperatorCommand::Start {
            steps: None,
            hold: None,
            dry_run: false,
        },
        uid: None,
        reply,
    });
    assert_eq!(log.lock().unwrap().calls.len(), 1);
    assert!(log.lock().unwrap().weights.is_empty());
    d.on_message(Message::Hook(HookAnswer {
        hook: HookKind::ConfirmRollout,
        step: 0,
        ok: true,
        detail: "HTTP 200".into(),
    }));
    assert_eq!(log.lock().unwrap().weights, [1000]);
}
