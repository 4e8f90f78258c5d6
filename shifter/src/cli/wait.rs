//! `shifter rollout start SERVICE --wait` and `shifter rollout status SERVICE [--wait]`:
//! follow one rollout (the service's latest in the history) until it ends, showing its
//! progress, and exit with a code that says how it ended.
//!
//! On a terminal one line is redrawn in place (step, weight, time left in the hold, green's
//! health, the gate's last result); otherwise a plain line is printed whenever something
//! but the time left changes, so logs of deploy scripts stay short.

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use super::{EXIT_UNAVAILABLE, EXIT_USAGE, Failure, VerbResult, fail};
use crate::{
    api::{
        client::{Client, ClientError},
        types::{RolloutOutcome, RolloutRecord, ServiceStatus},
    },
    model::percent as format_percent,
};

/// Exit code: the rollout was rolled back (a failed health check or gate, or `rollback`).
pub const EXIT_ROLLED_BACK: u8 = 2;
/// Exit code: the rollout was aborted (`rollout abort`).
pub const EXIT_ABORTED: u8 = 3;
/// Exit code: the rollout was frozen (`rollout freeze`, or a weight set outside it): it
/// stopped without an outcome.
pub const EXIT_FROZEN: u8 = 4;
/// Exit code: `--timeout` passed before the rollout ended (the rollout goes on).
pub const EXIT_WAIT_TIMEOUT: u8 = 5;

/// How often the daemon is asked.
const POLL: Duration = Duration::from_millis(250);
/// How long the daemon may not answer (a restart) before the wait gives up.
const UNREACHABLE_LIMIT: Duration = Duration::from_secs(30);

/// The exit code of an outcome (`None`: not ended yet).
pub(crate) fn exit_code(outcome: RolloutOutcome) -> Option<u8> {
    match outcome {
        RolloutOutcome::InProgress => None,
        RolloutOutcome::Completed | RolloutOutcome::Promoted => Some(0),
        RolloutOutcome::RolledBack => Some(EXIT_ROLLED_BACK),
        RolloutOutcome::Aborted => Some(EXIT_ABORTED),
        RolloutOutcome::Frozen => Some(EXIT_FROZEN),
    }
}

/// A duration option such as `--timeout 10m`.
pub(crate) fn parse_timeout(v: Option<&str>) -> Result<Option<Duration>, Failure> {
    v.map(|t| {
        humantime::parse_duration(t).map_err(|e| {
            Failure::Message(
                format!("--timeout: {t:?} is not a duration ({e})"),
                EXIT_USAGE,
            )
        })
    })
    .transpose()
}

/// The progress of `r` as one line; `with_time`: include the time left in the hold.
fn progress_line(r: &RolloutRecord, s: Option<&ServiceStatus>, with_time: bool) -> String {
    let mut t = format!("{}: rollout {} {}", r.service, r.id, r.outcome);
    if let Some(s) = s {
        if let Some(v) = s.rollout.as_ref().filter(|_| !r.outcome.ended()) {
            t = format!("{}: rollout {} {}", r.service, r.id, v.state);
            if let Some(step) = v.step {
                t.push_str(&format!(" step {step}/{}", v.steps));
                if let Some(w) = v.step_weight_bp {
                    t.push_str(&format!(" ({}%)", format_percent(w)));
                }
            }
            if with_time && let Some(ms) = v.remaining_hold_ms {
                t.push_str(&format!(
                    ", hold {} left",
                    humantime::format_duration(Duration::from_secs(ms.div_ceil(1000)))
                ));
            }
        }
        t.push_str(&format!(", weight {}%", format_percent(s.weight_bp)));
        if let Some(h) = &s.health {
            t.push_str(&format!(", green {}", h.green.status));
        }
        if let Some(g) = s.rollout.as_ref().and_then(|v| v.gate_waiting.as_ref()) {
            t.push_str(&format!(", gate: no verdict yet: {g}"));
        }
    }
    if let Some(g) = r.last_gate() {
        t.push_str(&format!(", last gate: {}", g.detail));
    }
    t
}

/// What one poll saw.
struct Seen {
    record: RolloutRecord,
    status: Option<ServiceStatus>,
}

/// The rollout `id` (or the latest) of `service` and its status; `None`: not recorded.
async fn poll(
    client: &Client,
    service: &str,
    id: Option<u64>,
) -> Result<Option<Seen>, ClientError> {
    let h = client.history(Some(service)).await?;
    let record = match id {
        Some(id) => h.rollouts.into_iter().find(|r| r.id == id),
        None => h.rollouts.into_iter().last(),
    };
    let Some(record) = record else {
        return Ok(None);
    };
    let status = client.service(service).await.ok();
    Ok(Some(Seen { record, status }))
}

/// Follows the latest rollout of `service` until it ends (`wait`), or prints it once.
pub(crate) async fn follow(
    client: &Client,
    service: &str,
    wait: bool,
    timeout: Option<Duration>,
) -> VerbResult {
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut id = None;
    let mut last_plain = String::new();
    let mut unreachable_since: Option<Instant> = None;
    let mut out = std::io::stdout();
    loop {
        match poll(client, service, id).await {
            Ok(None) => {
                return Err(fail(match id {
                    Some(id) => format!("rollout {id} of {service} is no longer in the history"),
                    None => format!("no rollout of {service} is recorded"),
                }));
            }
            Ok(Some(seen)) => {
                unreachable_since = None;
                id = Some(seen.record.id);
                let ended = exit_code(seen.record.outcome);
                if tty && wait {
                    let line = progress_line(&seen.record, seen.status.as_ref(), true);
                    let _ = write!(out, "\r\x1b[2K{line}");
                    if ended.is_some() {
                        let _ = writeln!(out);
                    }
                    let _ = out.flush();
                } else {
                    let line = progress_line(&seen.record, seen.status.as_ref(), false);
                    if line != last_plain {
                        let timed = progress_line(&seen.record, seen.status.as_ref(), true);
                        let _ = writeln!(out, "{timed}");
                        last_plain = line;
                    }
                }
                if !wait {
                    return Ok(());
                }
                if let Some(code) = ended {
                    let why = seen.record.end_cause.clone().unwrap_or_default();
                    return match code {
                        0 => Ok(()),
                        code => Err(Failure::Message(
                            format!(
                                "rollout {} of {service} {}: {why}",
                                seen.record.id, seen.record.outcome
                            ),
                            code,
                        )),
                    };
                }
            }
            Err(ClientError::NotRunning(p)) if wait => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_LIMIT {
                    return Err(Failure::Message(
                        format!("{} (for {UNREACHABLE_LIMIT:?})", ClientError::NotRunning(p)),
                        EXIT_UNAVAILABLE,
                    ));
                }
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(t) = timeout
            && started.elapsed() >= t
        {
            if tty {
                let _ = writeln!(out);
            }
            return Err(Failure::Message(
                format!(
                    "waited {} for the rollout of {service}; it has not ended (it goes on)",
                    humantime::format_duration(t)
                ),
                EXIT_WAIT_TIMEOUT,
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_documented_code() {
        assert_eq!(exit_code(RolloutOutcome::InProgress), None);
        assert_eq!(exit_code(RolloutOutcome::Completed), Some(0));
        assert_eq!(exit_code(RolloutOutcome::Promoted), Some(0));
        assert_eq!(exit_code(RolloutOutcome::RolledBack), Some(2));
        assert_eq!(exit_code(RolloutOutcome::Aborted), Some(3));
        assert_eq!(exit_code(RolloutOutcome::Frozen), Some(4));
        assert_eq!(EXIT_WAIT_TIMEOUT, 5);
        assert!(parse_timeout(Some("nope")).is_err());
        assert_eq!(
            parse_timeout(Some("90s")).ok().flatten(),
            Some(Duration::from_secs(90))
        );
    }
}
