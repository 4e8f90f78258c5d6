//! `shifter rollback SERVICE [--drain-timeout 30s]`

use super::{EXIT_USAGE, Failure, VerbResult};
use crate::api::client::Client;

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
    let mut body = serde_json::Map::new();
    if let Some(t) = a.drain_timeout {
        humantime::parse_duration(&t).map_err(|e| {
            Failure::Message(
                format!("--drain-timeout: {t:?} is not a duration ({e})"),
                EXIT_USAGE,
            )
        })?;
        body.insert("drain_timeout".into(), t.into());
    }
    super::rollout::post(
        client,
        &format!("/v1/services/{}/rollback", a.service),
        Some(body),
    )
}
