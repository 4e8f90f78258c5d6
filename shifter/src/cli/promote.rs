//! `shifter promote SERVICE`

use super::VerbResult;
use crate::api::client::Client;

/// Make green (at 100%) the new blue: the roles swap and the weight becomes 0 in one
/// config-word write, so no connection moves. The old blue is then green, ready for the
/// next version.
///
/// Example: `shifter promote web`
#[derive(clap::Args)]
pub(crate) struct Args {
    service: String,
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    super::rollout::print_reply(super::block_on(client.promote(&a.service)))
}
