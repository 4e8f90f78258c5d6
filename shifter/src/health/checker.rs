//! The checker task of one backend: a check every `interval + jitter` (fixed rate, measured
//! from the start of the previous check), rise/fall counting, and a report of every result
//! into a channel. The first check runs at once.

use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use super::{
    HealthStatus, HealthTracker, HealthVerdict, next_wait, probe::probe_with, probe::tls_client,
};
use crate::config::HealthSettings;

/// One check's result and the backend's state after it.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub port: u16,
    /// `Err(reason)` for a failed check.
    pub result: Result<(), String>,
    pub status: HealthStatus,
    /// `Some` when this check changed the state: what the rollout engine must hear.
    pub verdict: Option<HealthVerdict>,
    pub last_failure: Option<String>,
    /// Real time the check finished (the start of the rollback latency measurement).
    pub decided_at: std::time::Instant,
    /// How long the check took.
    pub took: Duration,
}

/// Runs checks of `port` until the receiver of `tx` is gone (or the task is aborted).
pub async fn run_checker(settings: HealthSettings, port: u16, tx: mpsc::Sender<CheckReport>) {
    let s = settings.clone();
    // An https check's TLS configuration (CA, client certificate) is read once per checker:
    // at start-up, and when a reload changes the check.
    let tls = tls_client(&settings);
    run_checker_with(&settings, port, tx, move || {
        let s = s.clone();
        let tls = tls.clone();
        async move {
            probe_with(&s, port, tls.as_ref())
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
}

/// [`run_checker`] with the check itself supplied (tests script results with it).
pub async fn run_checker_with<F, Fut>(
    settings: &HealthSettings,
    port: u16,
    tx: mpsc::Sender<CheckReport>,
    mut check: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut tracker = HealthTracker::new(settings.rise, settings.fall);
    let mut next = Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        let started = Instant::now();
        next = started + next_wait(settings.interval, settings.jitter);
        let real_start = std::time::Instant::now();
        let result = check().await;
        let decided_at = std::time::Instant::now();
        let changed = tracker.record(result.clone());
        let verdict = changed.map(|s| HealthVerdict {
            port,
            healthy: s == HealthStatus::Up,
            reason: if s == HealthStatus::Up {
                None
            } else {
                tracker.last_failure.clone()
            },
        });
        let report = CheckReport {
            port,
            result,
            status: tracker.status,
            verdict,
            last_failure: tracker.last_failure.clone(),
            decided_at,
            took: decided_at - real_start,
        };
        if tx.send(report).await.is_err() {
            return;
        }
    }
}

/// Spawns [`run_checker`] on the current runtime.
pub fn spawn_checker(
    settings: HealthSettings,
    port: u16,
    tx: mpsc::Sender<CheckReport>,
) -> JoinHandle<()> {
    tokio::spawn(run_checker(settings, port, tx))
}
