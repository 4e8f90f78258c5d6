//! `shifter rollout start|pause|resume|abort|approve|freeze SERVICE`

use hyper::Method;

use super::{EXIT_USAGE, Failure, VerbResult, block_on};
use crate::{
    api::{client::Client, types::RolloutReply},
    config::{format_percent, parse_percent},
};

/// Run a canary rollout: green's weight goes up step by step, each step held for a while
/// and judged by green's health checks and the kernel's counters (refused connections and
/// resets, compared with blue). A failing check or gate puts the weight back to 0 at once.
///
/// Examples: `shifter rollout start web`, `shifter rollout start web --steps 1,5,25,50,100
/// --hold 30s`, `shifter rollout start web --dry-run`, `shifter rollout pause web`,
/// `shifter rollout approve web`
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
    let (service, verb, body) = match a.verb {
        Verb::Start {
            service,
            steps,
            hold,
            dry_run,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(steps) = steps {
                let mut list = Vec::new();
                for s in steps {
                    let bp = parse_percent(&s)
                        .map_err(|e| Failure::Message(format!("--steps: {s} {e}"), EXIT_USAGE))?;
                    list.push(serde_json::Value::String(format_percent(bp)));
                }
                body.insert("steps".into(), list.into());
            }
            if let Some(h) = hold {
                humantime::parse_duration(&h).map_err(|e| {
                    Failure::Message(format!("--hold: {h:?} is not a duration ({e})"), EXIT_USAGE)
                })?;
                body.insert("hold".into(), h.into());
            }
            if dry_run {
                body.insert("dry_run".into(), true.into());
            }
            (service, "start", Some(body))
        }
        Verb::Pause { service } => (service, "pause", None),
        Verb::Resume { service } => (service, "resume", None),
        Verb::Abort { service } => (service, "abort", None),
        Verb::Approve { service } => (service, "approve", None),
        Verb::Freeze { service } => (service, "freeze", None),
    };
    post(
        client,
        &format!("/v1/services/{service}/rollout/{verb}"),
        body,
    )
}

/// POSTs a rollout command and prints what it did.
pub(crate) fn post(
    client: &Client,
    path: &str,
    body: Option<serde_json::Map<String, serde_json::Value>>,
) -> VerbResult {
    let body = body.map(|b| serde_json::to_vec(&b).expect("JSON"));
    block_on(async {
        let r: RolloutReply = client.call(Method::POST, path, body).await?;
        print!("{}", describe(&r));
        Ok(())
    })
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
