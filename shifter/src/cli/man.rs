//! `shifter man`

use clap::CommandFactory as _;

use super::{Cli, VerbResult, fail};

/// Print the manual page (roff).
///
/// Example: `shifter man | man -l -`
#[derive(clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_: Args) -> VerbResult {
    clap_mangen::Man::new(Cli::command())
        .render(&mut std::io::stdout())
        .map_err(|e| fail(format!("writing the manual page: {e}")))
}
