//! The health checker feeding a rollout driver, as the daemon wires them: a verdict from a
//! real check rolls back through the driver (health and rollout meet only here).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::mpsc, time::Instant};

use crate::health::{
    live_tests::{closed_port, http, http_server},
    run_checker,
};

/// Checker -> channel -> driver -> actuator, in real time: the rollback event carries the
/// time from the deciding check to the weight change returning.
#[tokio::test]
async fn checker_verdict_rolls_back_through_the_driver() {
    use tokio::sync::oneshot;

    use crate::rollout::{
        Actuator, Cause, Driver, Engine, Message, OperatorCommand, Progress, RolloutEvent,
        RolloutSettings, SignalSample, StateName,
    };

    struct Fake(Arc<Mutex<Vec<RolloutEvent>>>, Arc<Mutex<Vec<u16>>>);
    impl Actuator for Fake {
        type Error = std::io::Error;
        fn set_weight(&mut self, bp: u16, _: bool, _: &Cause) -> Result<Duration, Self::Error> {
            self.1.lock().unwrap().push(bp);
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
        fn record(&mut self, event: RolloutEvent) {
            self.0.lock().unwrap().push(event);
        }
        fn confirm(&mut self, call: crate::rollout::HookCall) {
            panic!("these tests configure no webhook, yet {call:?} was asked");
        }
    }

    let srv = http_server(200).await;
    let green = srv.port;
    let blue = closed_port().await;
    let mut s = http("/", 200, 399, None);
    s.interval = Duration::from_millis(20);
    s.timeout = Duration::from_millis(20);
    let events = Arc::new(Mutex::new(Vec::new()));
    let weights = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::new("web", RolloutSettings::default(), blue, green, 0, true);
    let driver = Driver::new(
        engine,
        Fake(events.clone(), weights.clone()),
        Instant::now(),
        Duration::from_millis(100),
    );
    let (dtx, drx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let driver = tokio::spawn(driver.run(drx, async {
        let _ = stop_rx.await;
    }));
    let (ctx, mut crx) = mpsc::channel(64);
    let checker = tokio::spawn(run_checker(s, green, ctx));
    // Forward verdicts (what the daemon does) and start the rollout once green is up.
    let fwd_tx = dtx.clone();
    let (up_tx, up_rx) = oneshot::channel();
    let forward = tokio::spawn(async move {
        let mut up_tx = Some(up_tx);
        while let Some(r) = crx.recv().await {
            if let Some(v) = r.verdict {
                let healthy = v.healthy;
                let _ = fwd_tx
                    .send(Message::Health {
                        verdict: v,
                        decided_at: r.decided_at,
                    })
                    .await;
                if healthy && let Some(t) = up_tx.take() {
                    let _ = t.send(());
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), up_rx)
        .await
        .expect("green up within 5 s")
        .unwrap();
    let (reply, rx) = oneshot::channel();
    dtx.send(Message::Command {
        command: OperatorCommand::Start {
            steps: None,
            hold: None,
            dry_run: false,
        },
        uid: None,
        reply,
    })
    .await
    .unwrap();
    rx.await.unwrap().expect("start");
    drop(srv);
    let rb = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(ev) = events
                .lock()
                .unwrap()
                .iter()
                .find(|e| e.to == StateName::RolledBack)
            {
                return ev.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("rolled back within 5 s of the kill");
    let _ = stop_tx.send(());
    driver.await.unwrap();
    checker.abort();
    forward.abort();
    assert_eq!(*weights.lock().unwrap(), [100, 0]);
    assert!(matches!(rb.cause, Cause::Health { port, .. } if port == green));
    let since = rb.actuation.unwrap().since_decision.unwrap();
    println!("checker verdict -> channel -> driver -> set_weight returned: {since:?}");
    assert!(since < Duration::from_millis(20), "{since:?}");
}
