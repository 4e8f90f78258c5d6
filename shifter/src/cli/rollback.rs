//! `shifter rollback SERVICE [--drain-timeout 30s]`

use super::{
    VerbResult, block_on,
    rollout::{checked_duration, print_reply},
};
use crate::api::{client::Client, types::RollbackRequest};

/// Put green's weight to 0 now (ends a rollout in progress). Established green
/// connections are left to finish; with `--drain-timeout` the command waits until green has
/// no open connection, at most that long, and reports how many remain (it closes none).
///
/// Examples: `shifter rollback web`, `shifter rollback web --drain-timeout 30s`
#[derive(clap::Args)]
pub(crate) struct Args {
    service: String,
    /// Wait at most this long for green's connections to finish, then report how many are
    /// still open.
    #[arg(long)]
    drain_timeout: Option<String>,
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    let request = RollbackRequest {
        drain_timeout: checked_duration("--drain-timeout", a.drain_timeout)?,
    };
    print_reply(block_on(client.rollback(&a.service, &request)))
}
