//! `shifter daemon [--config PATH]`

use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use super::{EXIT_NOPERM, EXIT_USAGE, Failure, VerbResult, fail};
use crate::{
    config::Config,
    daemon, paths,
    util::{error_chain, is_permission_denied},
};

/// Run the daemon: attach the data plane, serve the control API (usually under systemd).
///
/// SIGTERM/SIGINT stop it and leave the data plane forwarding; SIGHUP reloads the
/// configuration. A bad configuration exits 64 naming the field; a privilege the kernel
/// refuses at start-up (EPERM/EACCES: a missing capability or syscall) exits 77.
///
/// Example: `shifter daemon --config /etc/shifter/shifter.toml`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The configuration file.
    #[arg(long, short, default_value = paths::CONFIG, value_name = "PATH")]
    config: PathBuf,
}

pub(crate) fn init_logging() {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd the journal adds its own timestamps.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let _ = fmt()
            .with_env_filter(filter)
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .try_init();
    } else {
        let _ = fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .with_target(false)
            .try_init();
    }
}

pub(crate) fn run(a: Args) -> VerbResult {
    init_logging();
    let config = match Config::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            for p in e.problems() {
                error!("bad configuration: {p}");
            }
            return Err(Failure::Message(
                format!("bad configuration in {}; not started", a.config.display()),
                EXIT_USAGE,
            ));
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(format!("starting the runtime: {e}")))?;
    rt.block_on(async move {
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| fail(format!("SIGTERM handler: {e}")))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(|e| fail(format!("SIGINT handler: {e}")))?;
        let mut hup =
            signal(SignalKind::hangup()).map_err(|e| fail(format!("SIGHUP handler: {e}")))?;
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                info!("SIGHUP received");
                if reload_tx.send(()).await.is_err() {
                    return;
                }
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
            }
        };
        let opts = daemon::Options {
            config_path: Some(a.config.clone()),
            reload: Some(reload_rx),
        };
        daemon::run_with(config, opts, shutdown).await.map_err(|e| {
            let msg = error_chain(&e);
            error!("{msg}");
            if is_permission_denied(&e) {
                Failure::Message(msg, EXIT_NOPERM)
            } else {
                fail(msg)
            }
        })
    })
}
