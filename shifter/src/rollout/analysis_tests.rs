//! The engine and Prometheus analysis results: failures in a row roll back, inconclusive
//! results in a row pause, a success resumes what this analysis paused; results outside a
//! rollout count nothing.

use std::time::Duration;

use super::{
    engine::{Cause, Effect, Engine, Input, OperatorCommand, State, StateName},
    types::{AnalysisResult, Measurement},
};
use crate::config::{AnalysisSettings, Bound, RolloutSettings, Step};

const BLUE: u16 = 8081;
const GREEN: u16 = 8082;

fn analysis(name: &str, failure_limit: u32, inconclusive_limit: u32) -> AnalysisSettings {
    AnalysisSettings {
        name: name.into(),
        prometheus: "http://127.0.0.1:9090".into(),
        query: "x".into(),
        max: Some(Bound(0.05)),
        min: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        failure_limit,
        inconclusive_limit,
    }
}

fn engine() -> Engine {
    Engine::new("web", e_settings(), BLUE, GREEN, 0, false)
}

fn e_settings() -> RolloutSettings {
    RolloutSettings {
        steps: [1000, 10_000]
            .map(|weight_bp| Step {
                weight_bp,
                hold: Duration::from_secs(60),
                approve: false,
            })
            .to_vec(),
        hold: Duration::from_secs(60),
        analysis: vec![analysis("errors", 2, 2), analysis("latency", 1, 3)],
        ..RolloutSettings::default()
    }
}

fn result(name: &str, m: Measurement) -> Input {
    Input::Analysis(AnalysisResult {
        name: name.into(),
        measurement: m,
        value: Some("0.5".into()),
        detail: format!("{m}"),
    })
}

fn at(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn start(e: &mut Engine, now: Duration) {
    e.handle(
        now,
        Input::Command {
            command: OperatorCommand::Start {
                steps: None,
                hold: None,
                dry_run: false,
            },
            uid: Some(0),
        },
    )
    .expect("start");
}

fn feed(e: &mut Engine, now: Duration, i: Input) -> Vec<Effect> {
    e.handle(now, i).expect("input")
}

fn recorded(fx: &[Effect]) -> Vec<(StateName, StateName, Cause)> {
    fx.iter()
        .filter_map(|f| match f {
            Effect::Record(ev) => Some((ev.from, ev.to, ev.cause.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn failures_in_a_row_roll_back_and_a_success_breaks_the_run() {
    let mut e = engine();
    start(&mut e, at(0));
    assert!(feed(&mut e, at(1), result("errors", Measurement::Failure)).is_empty());
    assert!(feed(&mut e, at(2), result("errors", Measurement::Success)).is_empty());
    assert!(feed(&mut e, at(3), result("errors", Measurement::Failure)).is_empty());
    // Inconclusive is no evidence either way: the failure run goes on.
    assert!(feed(&mut e, at(4), result("errors", Measurement::Inconclusive)).is_empty());
    let fx = feed(&mut e, at(5), result("errors", Measurement::Failure));
    assert!(
        matches!(fx.first(), Some(Effect::SetWeight { bp: 0, .. })),
        "the weight goes to 0 first: {fx:?}"
    );
    let ev = recorded(&fx);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].0, ev[0].1),
        (StateName::Running, StateName::RolledBack)
    );
    let Cause::Analysis { name, reason } = &ev[0].2 else {
        panic!("{:?}", ev[0].2)
    };
    assert_eq!(name, "errors");
    assert!(reason.contains("2 failed results in a row"), "{reason}");
    assert_eq!(e.weight_bp(), 0);
    let st = e.status(at(5));
    assert_eq!(st.analysis[0].failures, 2);
    assert_eq!(st.analysis[0].measurements, 5);
    assert_eq!(st.analysis[0].last, Some(Measurement::Failure));
    // Rolled back: further failures change nothing.
    assert!(feed(&mut e, at(6), result("errors", Measurement::Failure)).is_empty());
}

#[test]
fn inconclusive_results_pause_and_the_same_analysis_resumes_with_the_hold_left() {
    let mut e = engine();
    start(&mut e, at(0));
    assert!(feed(&mut e, at(10), result("errors", Measurement::Inconclusive)).is_empty());
    let fx = feed(&mut e, at(20), result("errors", Measurement::Inconclusive));
    let ev = recorded(&fx);
    assert_eq!((ev[0].0, ev[0].1), (StateName::Running, StateName::Paused));
    assert!(matches!(&ev[0].2, Cause::AnalysisInconclusive { name, .. } if name == "errors"));
    assert_eq!(
        e.state(),
        &State::Paused {
            step: 0,
            remaining: at(40)
        }
    );
    assert_eq!(e.weight_bp(), 1000, "a pause keeps the weight");
    // A restart keeps which analysis paused the step.
    let (mut e, _) = Engine::resume_from(e.progress(at(25)), e_settings(), false, at(25));
    assert_eq!(e.progress(at(25)).analysis_pause.as_deref(), Some("errors"));
    // Another analysis's success does not resume what "errors" paused.
    assert!(feed(&mut e, at(30), result("latency", Measurement::Success)).is_empty());
    let fx = feed(&mut e, at(100), result("errors", Measurement::Success));
    let ev = recorded(&fx);
    assert_eq!((ev[0].0, ev[0].1), (StateName::Paused, StateName::Running));
    assert!(matches!(&ev[0].2, Cause::AnalysisResumed { name, .. } if name == "errors"));
    assert_eq!(e.next_deadline(), Some(at(140)), "40 s of hold left");
    // A failure while paused still rolls back (latency: limit 1).
    let mut p = engine();
    start(&mut p, at(0));
    feed(&mut p, at(1), result("errors", Measurement::Inconclusive));
    feed(&mut p, at(2), result("errors", Measurement::Inconclusive));
    let fx = feed(&mut p, at(3), result("latency", Measurement::Failure));
    assert!(matches!(fx.first(), Some(Effect::SetWeight { bp: 0, .. })));
}

#[test]
fn an_operator_pause_is_not_resumed_by_a_success_and_idle_results_count_nothing() {
    let mut e = engine();
    for t in 0..5 {
        assert!(feed(&mut e, at(t), result("errors", Measurement::Failure)).is_empty());
    }
    assert_eq!(
        e.status(at(5)).analysis[0].failures,
        0,
        "no rollout: nothing counts"
    );
    assert_eq!(e.status(at(5)).analysis[0].measurements, 5);
    start(&mut e, at(10));
    e.handle(
        at(11),
        Input::Command {
            command: OperatorCommand::Pause,
            uid: Some(0),
        },
    )
    .expect("pause");
    assert!(feed(&mut e, at(12), result("errors", Measurement::Success)).is_empty());
    assert!(matches!(e.state(), State::Paused { .. }));
    // Unknown analyses (removed by a reload) are ignored.
    assert!(feed(&mut e, at(13), result("gone", Measurement::Failure)).is_empty());
}
