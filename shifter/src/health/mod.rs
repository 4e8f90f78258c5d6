//! Health checks of backends: TCP connect, HTTP(S) GET, or a command, each with a timeout, run by
//! one task per backend ([`checker`]) that reports every result and every change of state.
//!
//! States follow HAProxy's rise/fall counting with one deliberate difference: a backend
//! starts as [`HealthStatus::Unknown`] (HAProxy starts servers "up"). It becomes
//! [`HealthStatus::Up`] after `rise` consecutive successes and [`HealthStatus::Down`] after
//! `fall` consecutive failures, from either state; a result that agrees with the current
//! state resets the opposite count. Unknown is not healthy (a rollout does not start toward
//! it and a step's gate waits for it) but it is not a failure either: only `Down` triggers
//! an automatic rollback. So a daemon restarted mid-rollout neither rolls back nor ramps on
//! before its checks have said something.

pub mod checker;
#[cfg(test)]
pub(crate) mod live_tests;
pub mod probe;
#[cfg(test)]
mod tls_tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use checker::{CheckReport, run_checker, run_checker_with, spawn_checker};
pub use probe::{ProbeError, TlsClient, probe, probe_with, tls_client};

/// State of one backend as its checks say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    /// No verdict yet (fewer than `rise` successes or `fall` failures since start).
    Unknown,
    Up,
    Down,
    /// No health check is configured for this service.
    NotChecked,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
            Self::NotChecked => "not checked",
        })
    }
}

/// Rise/fall counting for one backend (pure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthTracker {
    pub rise: u32,
    pub fall: u32,
    pub status: HealthStatus,
    pub successes: u32,
    pub failures: u32,
    /// Reason of the last failed check, kept after recovery.
    pub last_failure: Option<String>,
    pub checks: u64,
}

impl HealthTracker {
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            status: HealthStatus::Unknown,
            successes: 0,
            failures: 0,
            last_failure: None,
            checks: 0,
        }
    }

    /// Counts one result; returns the new status when it changed.
    pub fn record(&mut self, result: Result<(), String>) -> Option<HealthStatus> {
        self.checks += 1;
        let next = match result {
            Ok(()) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                (self.status != HealthStatus::Up && self.successes >= self.rise)
                    .then_some(HealthStatus::Up)
            }
            Err(reason) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                self.last_failure = Some(reason);
                (self.status != HealthStatus::Down && self.failures >= self.fall)
                    .then_some(HealthStatus::Down)
            }
        };
        if let Some(s) = next {
            self.status = s;
        }
        next
    }
}

/// What the rollout engine is told: a backend (by port) changed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthVerdict {
    pub port: u16,
    pub healthy: bool,
    /// The deciding check's failure (for `healthy == false`).
    pub reason: Option<String>,
}

/// Time a check may take at most, and its wait before the next one: `interval + jitter'`
/// with `jitter'` uniform in `0..=jitter`, drawn from the standard library's random hasher
/// keys (no extra dependency).
pub fn next_wait(interval: Duration, jitter: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    if jitter.is_zero() {
        return interval;
    }
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let nanos = jitter.as_nanos().min(u128::from(u64::MAX)) as u64;
    interval + Duration::from_nanos(r % (nanos + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut t = HealthTracker::new(2, 3);
        assert_eq!(t.status, HealthStatus::Unknown);
        assert_eq!(t.record(Ok(())), None);
        assert_eq!(t.record(Ok(())), Some(HealthStatus::Up));
        assert_eq!(t.record(Ok(())), None);
        assert_eq!(t.record(Err("refused".into())), None);
        assert_eq!(t.record(Err("refused".into())), None);
        // A success in between resets the failure count.
        assert_eq!(t.record(Ok(())), None);
        assert_eq!(t.record(Err("a".into())), None);
        assert_eq!(t.record(Err("b".into())), None);
        assert_eq!(t.record(Err("c".into())), Some(HealthStatus::Down));
        assert_eq!(t.last_failure.as_deref(), Some("c"));
        assert_eq!(t.record(Err("d".into())), None);
        assert_eq!(t.record(Ok(())), None);
        assert_eq!(t.record(Ok(())), Some(HealthStatus::Up));
        assert_eq!(t.last_failure.as_deref(), Some("d"), "kept after recovery");
    }

    #[test]
    fn unknown_goes_down_after_fall_failures() {
        let mut t = HealthTracker::new(2, 3);
        assert_eq!(t.record(Err("x".into())), None);
        assert_eq!(t.record(Err("x".into())), None);
        assert_eq!(t.record(Err("x".into())), Some(HealthStatus::Down));
    }

    #[test]
    fn jitter_stays_in_range() {
        let i = Duration::from_millis(100);
        let j = Duration::from_millis(10);
        let mut seen_above = false;
        for _ in 0..200 {
            let w = next_wait(i, j);
            assert!(w >= i && w <= i + j, "{w:?}");
            seen_above |= w > i;
        }
        assert!(seen_above, "jitter never added anything");
        assert_eq!(next_wait(i, Duration::ZERO), i);
    }
}
