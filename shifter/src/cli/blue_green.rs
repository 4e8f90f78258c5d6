//! `shifter blue-green SERVICE [--hold 30s] [--dry-run]`

use super::{EXIT_USAGE, Failure, VerbResult};
use crate::api::client::Client;

/// Switch every new connection to green in one step, once green passes its health checks;
/// the step is held and judged like a rollout step (and rolled back if it fails).
///
/// Examples: `shifter blue-green web`, `shifter blue-green web --hold 1m --dry-run`
#[derive(clap::Args)]
pub(crate) struct Args {
    service: String,
    /// How long the switch is watched before it counts as done.
    #[arg(long)]
    hold: Option<String>,
    /// Count what the switch would do without steering by it.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    let mut body = serde_json::Map::new();
    if let Some(h) = a.hold {
        humantime::parse_duration(&h).map_err(|e| {
            Failure::Message(format!("--hold: {h:?} is not a duration ({e})"), EXIT_USAGE)
        })?;
        body.insert("hold".into(), h.into());
    }
    if a.dry_run {
        body.insert("dry_run".into(), true.into());
    }
    super::rollout::post(
        client,
        &format!("/v1/services/{}/blue-green", a.service),
        Some(body),
    )
}
