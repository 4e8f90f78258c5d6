//! `shifter set-weight SERVICE PERCENT`

use super::{EXIT_USAGE, Failure, VerbResult, block_on};
use crate::{
    api::client::Client,
    model::{Weight, percent as format_percent},
};

/// Set green's share of new connections, in percent with up to two decimals.
///
/// Established connections keep their backend. Needs root or the daemon's socket group.
///
/// Examples: `shifter set-weight web 12.5`, `shifter set-weight web 0` (all new to blue)
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The service's name in the configuration.
    service: String,
    /// Green's weight in percent, 0..=100, at most two decimals.
    percent: String,
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    let weight: Weight = a
        .percent
        .parse()
        .map_err(|e| Failure::Message(format!("PERCENT: {} {e}", a.percent), EXIT_USAGE))?;
    block_on(async {
        let c = client.set_weight(&a.service, weight).await?;
        if c.old_weight_bp == c.new_weight_bp {
            println!(
                "{}: weight is already {}%",
                c.service,
                format_percent(c.new_weight_bp)
            );
        } else {
            println!(
                "{}: weight {}% -> {}%",
                c.service,
                format_percent(c.old_weight_bp),
                format_percent(c.new_weight_bp)
            );
        }
        Ok(())
    })
}
