//! `shifter detach`

use std::path::PathBuf;

use super::{EXIT_USAGE, Failure, VerbResult, block_on, fail, offline};
use crate::{
    api::client::{Client, ClientError},
    config::Config,
    dataplane, paths,
};

/// Remove every program, link and pin the daemon made; the daemon then stops.
///
/// Traffic to the service ports is no longer steered afterwards. When the daemon is not
/// running, the attachments listed in the configuration and the pins are removed directly
/// (needs root, and the same network namespace as the daemon).
///
/// Example: `shifter detach`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Configuration used when the daemon is not running.
    #[arg(long, default_value = paths::CONFIG, value_name = "PATH")]
    config: PathBuf,
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    match block_on(client.detach()) {
        Ok(r) => {
            println!(
                "detached from {} interface(s) ({}); pins removed; the daemon stops",
                r.interfaces.len(),
                r.interfaces.join(", ")
            );
            Ok(())
        }
        Err(ClientError::NotRunning(sock)) => {
            eprintln!(
                "shifter: the daemon is not running ({}); detaching directly",
                sock.display()
            );
            offline(&a.config)
        }
        Err(e) => Err(e.into()),
    }
}

fn offline(path: &std::path::Path) -> VerbResult {
    let cfg = Config::load(path).map_err(|e| Failure::Message(e.report(), EXIT_USAGE))?;
    let dir = &cfg.daemon.bpffs_dir;
    let configured: Vec<String> = cfg.interfaces.iter().map(|i| i.name.clone()).collect();
    let removed = dataplane::detach_pinned(dir, &configured).map_err(|e| {
        fail(format!(
            "detaching directly: {}",
            offline::pins_error(dir, &e)
        ))
    })?;
    println!(
        "detached from {} interface(s) ({}); pins under {} removed",
        removed.len(),
        removed.join(", "),
        dir.display()
    );
    Ok(())
}
