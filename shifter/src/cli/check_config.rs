//! `shifter check-config PATH`

use std::path::PathBuf;

use super::{EXIT_USAGE, Failure, VerbResult};
use crate::config::Config;

/// Validate a configuration file without touching the kernel.
///
/// Prints every problem with the field it concerns; exits 64 when there is any.
///
/// Example: `shifter check-config /etc/shifter/shifter.toml`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The configuration file.
    path: PathBuf,
}

pub(crate) fn run(a: Args) -> VerbResult {
    match Config::load(&a.path) {
        Ok(c) => {
            println!(
                "{}: ok ({} interface(s), {} service(s))",
                a.path.display(),
                c.interfaces.len(),
                c.services.len()
            );
            Ok(())
        }
        Err(e) => Err(Failure::Message(e.report(), EXIT_USAGE)),
    }
}
