//! `shifter completions SHELL`

use clap::CommandFactory as _;

use super::{Cli, VerbResult};

/// Print a shell completion script.
///
/// Example: `shifter completions bash > /etc/bash_completion.d/shifter`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

pub(crate) fn run(a: Args) -> VerbResult {
    clap_complete::generate(
        a.shell,
        &mut Cli::command(),
        "shifter",
        &mut std::io::stdout(),
    );
    Ok(())
}
