//! `shifter detach`

use std::path::PathBuf;

use hyper::Method;

use super::{EXIT_USAGE, Failure, VerbResult, block_on, fail};
use crate::{
    DataPlane,
    api::{
        client::{Client, ClientError},
        types::DetachReport,
    },
    config::Config,
    paths,
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
    match block_on(client.call::<DetachReport>(Method::POST, "/v1/detach", None)) {
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
    let cfg =
        Config::load(path).map_err(|e| Failure::Message(e.problems().join("\n"), EXIT_USAGE))?;
    let dir = &cfg.daemon.bpffs_dir;
    let mut ifaces: Vec<String> = cfg.interfaces.iter().map(|i| i.name.clone()).collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some((iface, _)) = n.strip_prefix("link-").and_then(|r| r.rsplit_once('-'))
                && !ifaces.iter().any(|i| i == iface)
            {
                ifaces.push(iface.to_owned());
            }
        }
    }
    let mut removed = Vec::new();
    for iface in &ifaces {
        match DataPlane::detach_leftover(dir, iface) {
            Ok(true) => removed.push(iface.clone()),
            Ok(false) => {}
            Err(e) => return Err(fail(format!("{iface}: {}", crate::util::error_chain(&e)))),
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(format!("removing {}: {e}", dir.display()))),
    }
    println!(
        "detached from {} interface(s) ({}); pins under {} removed",
        removed.len(),
        removed.join(", "),
        dir.display()
    );
    Ok(())
}
