//! The daemon: `run(config, shutdown)`.
//!
//! Start-up binds the control socket (refusing when another daemon answers on it), loads the
//! data plane adopting the pinned maps and links, applies the services (weights from the state
//! file win over the pinned maps, which win over the configuration), attaches, then serves the
//! control API and tells systemd it is ready. The shutdown future stops serving, persists the
//! state and returns, leaving the data plane attached and forwarding.
//!
//! - [`engine`]: the handle on the engine thread and the control API it serves.
//! - [`actor`]: the engine thread, the one owner of the data plane and of the state.
//! - [`reload`]: a reload as a pure diff of two configurations, then applied.
//! - [`rollouts`]: each service's rollout engine and health checkers.
//! - [`actuator`]: the data plane as the rollouts' actuator.
//! - [`state`]: the state file and rollout progress, written durably.
//! - [`metrics`]: the Prometheus exposition of the status.
//! - [`offline`]: the status and flows from the pins while no daemon runs.
//!
//! The daemon composes the API server ([`crate::api::server`]), which knows it only as a
//! [`Control`](crate::api::server::Control).

mod actor;
pub mod actuator;
mod analysis;
mod analysis_metrics;
pub mod engine;
mod history;
pub mod metrics;
pub mod offline;
#[cfg(test)]
mod pipeline_tests;
mod refusals;
mod reload;
mod rollouts;
mod startup;
pub mod state;
mod webhooks;

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use actuator::{ActuatorError, DataPlaneActuator, load_progress, store_progress};

use crate::{
    api::server::{self, ApiContext, BindError},
    config::Config,
    util::error_chain,
};
use engine::{Command, Engine};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("control socket {}", .path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another shifter daemon is already serving {}", .path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("metrics address {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("data plane")]
    DataPlane(#[source] crate::dataplane::Error),
    #[error("interface {iface}")]
    Attach {
        iface: String,
        #[source]
        source: crate::dataplane::Error,
    },
    #[error("starting the engine thread")]
    Thread(#[source] std::io::Error),
    #[error("the engine thread stopped unexpectedly")]
    EngineGone,
}

/// Everything but the configuration and the shutdown signal.
#[derive(Default)]
pub struct Options {
    /// The file to re-read on reload (SIGHUP or `POST /v1/reload`).
    pub config_path: Option<PathBuf>,
    /// Each message reloads the configuration (the binary feeds SIGHUP into it).
    pub reload: Option<mpsc::Receiver<()>>,
}

/// Runs the daemon until `shutdown` completes (or the data plane is detached through the API).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    run_with(config, Options::default(), shutdown).await
}

/// `run` with a configuration file to reload and a reload trigger.
pub async fn run_with(
    config: Config,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let socket_path = config.daemon.socket.clone();
    let (listener, metrics_listener) = bind(&config).await?;
    let (engine, thread) = match Engine::start(config.clone(), opts.config_path.clone()).await {
        Ok(x) => x,
        Err(e) => {
            server::unlink(&socket_path);
            return Err(e);
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(ApiContext {
        control: engine.clone(),
        group: config.daemon.socket_group.clone(),
        grants: config.daemon.grants.clone(),
        read_access: config.daemon.read_access,
        stop: stop_tx.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server::serve_unix(listener, ctx.clone(), stop_rx.clone()));
    if let Some(l) = metrics_listener {
        info!(
            "metrics on http://{}/metrics",
            config.daemon.metrics_address.expect("set")
        );
        tasks.spawn(server::serve_metrics(l, ctx.clone(), stop_rx.clone()));
    }
    tasks.spawn(sweep_loop(
        engine.clone(),
        config.daemon.sweep_interval,
        stop_rx.clone(),
    ));
    tasks.spawn(watchdog_loop(engine.clone(), stop_rx.clone()));
    tasks.spawn(rollout_timer_loop(engine.clone(), stop_rx.clone()));
    if let Some(fleet) = config.fleet.clone() {
        // The fleet agent drives this daemon's own rollout engine through the control API.
        let services = config.services.iter().map(|s| s.name.clone()).collect();
        tasks.spawn(crate::fleet::agent::run(
            fleet,
            engine.clone(),
            services,
            stop_rx.clone(),
        ));
    }

    let status = format!(
        "serving {} service(s) on {} interface(s)",
        config.services.len(),
        config.interfaces.len()
    );
    info!("ready: {status}; control socket {}", socket_path.display());
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);

    serve_until_stopped(&engine, opts.reload, stop_rx, shutdown).await;
    notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    drop(ctx);
    engine.close().await;
    if tokio::task::spawn_blocking(move || thread.join())
        .await
        .is_err()
    {
        warn!("the engine thread panicked");
    }
    server::unlink(&socket_path);
    Ok(())
}

/// Binds the control socket and the optional metrics address (nothing is left bound when
/// one of them fails).
async fn bind(
    config: &Config,
) -> Result<(tokio::net::UnixListener, Option<tokio::net::TcpListener>), DaemonError> {
    let listener = server::bind(&config.daemon).map_err(|e| match e {
        BindError::AlreadyRunning { path } => DaemonError::AlreadyRunning { path },
        BindError::Io { path, source } => DaemonError::Socket { path, source },
    })?;
    let metrics_listener = match config.daemon.metrics_address {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(source) => {
                server::unlink(&config.daemon.socket);
                return Err(DaemonError::Metrics { addr, source });
            }
        },
        None => None,
    };
    Ok((listener, metrics_listener))
}

/// Reloads on each message of `reload` until `shutdown` completes or the data plane was
/// detached (`stop` turned true).
async fn serve_until_stopped(
    engine: &Engine,
    mut reload: Option<mpsc::Receiver<()>>,
    mut stop: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                info!("shutting down; the data plane stays attached");
                return;
            }
            () = crate::util::stopped(&mut stop) => {
                info!("data plane detached; stopping");
                return;
            }
            Some(()) = async {
                match reload.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                info!("reloading the configuration");
                notify(&[sd_notify::NotifyState::Reloading]);
                if let Err(e) = engine.reload_file().await {
                    warn!("reload failed: {}", error_chain(&e));
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        warn!("systemd notify: {e}");
    }
}

async fn sweep_loop(engine: Engine, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = crate::util::stopped(&mut stop) => return,
            _ = tick.tick() => {
                if engine.call(Command::Sweep).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Ticks the rollout engines at the end of each hold and every `SAMPLE_EVERY` (each tick
/// samples the counters first).
async fn rollout_timer_loop(engine: Engine, mut stop: watch::Receiver<bool>) {
    let mut deadline = engine.deadline();
    let mut next_sample = tokio::time::Instant::now() + rollouts::SAMPLE_EVERY;
    loop {
        // A hold end already ticked (the engine publishes the next one) waits for no one.
        let hold_end = (*deadline.borrow_and_update())
            .map(tokio::time::Instant::from_std)
            .filter(|h| *h > tokio::time::Instant::now());
        let wake = hold_end.map_or(next_sample, |h| h.min(next_sample));
        tokio::select! {
            () = crate::util::stopped(&mut stop) => return,
            changed = deadline.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if !engine.post(Command::Tick).await {
                    return;
                }
                let now = tokio::time::Instant::now();
                if now >= next_sample {
                    next_sample = now + rollouts::SAMPLE_EVERY;
                }
            }
        }
    }
}

/// Pings systemd's watchdog at half its interval, but only while the engine answers.
async fn watchdog_loop(engine: Engine, mut stop: watch::Receiver<bool>) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    info!("systemd watchdog every {every:?}");
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = crate::util::stopped(&mut stop) => return,
            _ = tick.tick() => {
                match tokio::time::timeout(every, engine.call(Command::Ping)).await {
                    Ok(Ok(())) => notify(&[sd_notify::NotifyState::Watchdog]),
                    Ok(Err(e)) => warn!("watchdog: engine: {}", error_chain(&e)),
                    Err(_) => warn!("watchdog: the engine did not answer within {every:?}"),
                }
            }
        }
    }
}
