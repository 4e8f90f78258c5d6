//! `shifter blue-green SERVICE [--hold 30s] [--dry-run]`

use super::{
    VerbResult, block_on,
    rollout::{checked_duration, print_reply},
};
use crate::api::{client::Client, types::RolloutRequest};

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
    let request = RolloutRequest {
        hold: checked_duration("--hold", a.hold)?,
        dry_run: a.dry_run,
        ..RolloutRequest::default()
    };
    print_reply(block_on(client.blue_green(&a.service, &request)))
}
