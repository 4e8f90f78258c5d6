//! `shifter rollout start|pause|resume|abort|approve|freeze SERVICE`

use super::{EXIT_USAGE, Failure, VerbResult, block_on};
use crate::{
    api::{
        client::{Client, ClientError},
        types::{RolloutReply, RolloutRequest},
    },
    model::{Weight, percent as format_percent},
};

/// Run a canary rollout: green's weight goes up step by step, each step held for a while
/// and judged by green's health checks and the kernel's counters (refused connections and
/// resets, compared with blue). A failing check or gate puts the weight back to 0 at once.
///
/// Examples: `shifter rollout start web`, `shifter rollout start web --steps 1,5,25,50,100
/// --hold 30s`, `shifter rollout start web --dry-run`, `shifter rollout pause web`,
/// `shifter rollout approve web`, `shifter rollout start web --wait --timeout 15m`,
/// `shifter rollout status web --wait`
///
/// `start --wait` and `status --wait` follow the rollout until it ends and exit with:
/// 0 completed (or completed and promoted), 2 rolled back (a failed health check or gate,
/// or `shifter rollback`), 3 aborted, 4 frozen (stopped without an outcome), 5 `--timeout`
/// passed (the rollout goes on), 69 the daemon is not running (or stopped answering for
/// 30 s), 64 bad arguments, 1 any other error.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Start a ramp (defaults from the service's `[services.rollout]`).
    Start {
        service: String,
        /// Step weights in percent, ascending, e.g. 1,5,25,50,100.
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<String>>,
        /// Hold time of every step, e.g. 30s or 2m.
        #[arg(long)]
        hold: Option<String>,
        /// Count what the ramp would do without steering by it.
        #[arg(long)]
        dry_run: bool,
        /// Follow the rollout until it ends; the exit code says how (see above).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (exit 5), e.g. 15m. Default: no limit.
        #[arg(long, requires = "wait")]
        timeout: Option<String>,
    },
    /// Show the service's latest rollout; with --wait, follow it until it ends.
    Status {
        service: String,
        /// Follow the rollout until it ends; the exit code says how (see above).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (exit 5), e.g. 15m. Default: no limit.
        #[arg(long, requires = "wait")]
        timeout: Option<String>,
    },
    /// Pause the hold of the current step (the weight stays).
    Pause { service: String },
    /// Continue a paused step with the hold time it had left.
    Resume { service: String },
    /// End the rollout and put green's weight back to 0.
    Abort { service: String },
    /// Let a step that waits for approval move on.
    Approve { service: String },
    /// Stop where it is, keeping the weight (automatic rollback stays armed).
    Freeze { service: String },
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    let mut wait = None;
    let (service, verb, body) = match a.verb {
        Verb::Status {
            service,
            wait,
            timeout,
        } => {
            let timeout = super::wait::parse_timeout(timeout.as_deref())?;
            return block_on(super::wait::follow(client, &service, wait, timeout));
        }
        Verb::Start {
            service,
            steps,
            hold,
            dry_run,
            wait: w,
            timeout,
        } => {
            if w {
                wait = Some(super::wait::parse_timeout(timeout.as_deref())?);
            }
            let steps_bp = steps
                .map(|list| {
                    list.iter()
                        .map(|s| {
                            s.parse::<Weight>().map_err(|e| {
                                Failure::Message(format!("--steps: {s} {e}"), EXIT_USAGE)
                            })
                        })
                        .collect::<Result<Vec<Weight>, Failure>>()
                })
                .transpose()?;
            let request = RolloutRequest {
                steps_bp,
                hold: checked_duration("--hold", hold)?,
                dry_run,
                ..RolloutRequest::default()
            };
            (service, "start", Some(request))
        }
        Verb::Pause { service } => (service, "pause", None),
        Verb::Resume { service } => (service, "resume", None),
        Verb::Abort { service } => (service, "abort", None),
        Verb::Approve { service } => (service, "approve", None),
        Verb::Freeze { service } => (service, "freeze", None),
    };
    print_reply(block_on(client.rollout(&service, verb, body.as_ref())))?;
    match wait {
        Some(timeout) => block_on(super::wait::follow(client, &service, true, timeout)),
        None => Ok(()),
    }
}

/// A duration option as given (the daemon reads it), checked here first.
pub(crate) fn checked_duration(option: &str, v: Option<String>) -> Result<Option<String>, Failure> {
    if let Some(h) = &v {
        humantime::parse_duration(h).map_err(|e| {
            Failure::Message(
                format!("{option}: {h:?} is not a duration ({e})"),
                EXIT_USAGE,
            )
        })?;
    }
    Ok(v)
}

/// Prints what a rollout command did.
pub(crate) fn print_reply(reply: Result<RolloutReply, ClientError>) -> VerbResult {
    print!("{}", describe(&reply?));
    Ok(())
}

pub(crate) fn describe(r: &RolloutReply) -> String {
    let mut out = String::new();
    for e in &r.events {
        out.push_str(&format!(
            "{}: {}\n",
            r.service,
            e.detail.as_deref().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "{}: weight {}%, rollout {}\n",
        r.service,
        format_percent(r.weight_bp),
        super::status::rollout_text(&r.rollout)
    ));
    if let Some(d) = &r.drain {
        let waited = humantime::format_duration(std::time::Duration::from_millis(d.waited_ms));
        if d.green_flows_remaining == 0 {
            out.push_str(&format!(
                "{}: green drained: no open green flow after {waited}\n",
                r.service
            ));
        } else {
            out.push_str(&format!(
                "{}: {} green flow(s) still open after {waited} (none were closed)\n",
                r.service, d.green_flows_remaining
            ));
        }
    }
    out
}
