//! The handle on the engine thread: the commands it takes, and the control API served by
//! sending them ([`Control`] for [`Engine`]).

use std::{path::PathBuf, thread::JoinHandle, time::Duration};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::warn;

use super::{DaemonError, actor::Actor, rollouts::Rollouts};
use crate::{
    api::{
        ControlError,
        server::Control,
        types::{
            DetachReport, DrainReport, FleetSeen, Flows, HistoryReply, ReloadReport, RolloutReply,
            ServiceStatus, Status, WeightChange,
        },
    },
    config::Config,
    events::Event,
    health::CheckReport,
    model::Weight,
    rollout::OperatorCommand,
};

pub(crate) type Reply<T> = oneshot::Sender<T>;

pub(crate) enum Command {
    Status(Reply<Status>),
    Service(String, Reply<Result<ServiceStatus, ControlError>>),
    SetWeight {
        name: String,
        weight: Weight,
        uid: u32,
        reply: Reply<Result<WeightChange, ControlError>>,
    },
    Flows(String, Reply<Result<Flows, ControlError>>),
    Events(u64, Reply<Vec<Event>>),
    Reload(Box<Config>, Reply<ReloadReport>),
    Detach(Reply<Result<DetachReport, ControlError>>),
    Sweep(Reply<()>),
    Metrics(Reply<String>),
    Ping(Reply<()>),
    /// A rollout command (`rollout ...`, `promote`, `rollback`, `blue-green`).
    Rollout {
        name: String,
        command: OperatorCommand,
        uid: u32,
        /// The fleet rollout the command is for (from the fleet agent).
        fleet: Option<String>,
        reply: Reply<Result<RolloutReply, ControlError>>,
    },
    /// What the fleet agent saw at its last poll.
    FleetSeen(FleetSeen),
    /// A request of `uid` was refused: record it.
    Refused {
        uid: u32,
        service: Option<String>,
        what: String,
    },
    /// The rollout history of one service (`Some`) or of all.
    History(Option<String>, Reply<Result<HistoryReply, ControlError>>),
    /// After `rollback --drain-timeout`: green's flows left (none are closed).
    GreenFlows(String, Reply<Result<u64, ControlError>>),
    /// A Prometheus analysis result.
    Analysis {
        service: String,
        result: crate::rollout::types::AnalysisResult,
    },
    /// A confirm webhook's answer.
    Hook {
        service: String,
        answer: crate::rollout::HookAnswer,
    },
    /// A health checker's report.
    Health {
        service: String,
        report: CheckReport,
    },
    /// Sample counters and tick the rollout engines (end of a hold, or periodic).
    Tick,
    /// Persist and stop; the data plane stays attached.
    Shutdown(Reply<()>),
}

/// Handle to the engine thread.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    /// When the earliest rollout hold ends (for the timer task).
    deadline: watch::Receiver<Option<std::time::Instant>>,
    /// The file to re-read on reload.
    config_path: Option<PathBuf>,
}

impl Engine {
    /// Starts the engine thread: loads state, loads or adopts the data plane, applies the
    /// services and attaches. Returns once that is done (or failed).
    pub(crate) async fn start(
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Result<(Self, JoinHandle<()>), DaemonError> {
        let (tx, rx) = mpsc::channel(64);
        let (events, _) = broadcast::channel(256);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (deadline_tx, deadline) = watch::channel(None);
        let ev = events.clone();
        let rollouts = Rollouts::new(
            &config.daemon.state_dir,
            tokio::runtime::Handle::current(),
            tx.downgrade(),
            deadline_tx,
        );
        let thread = std::thread::Builder::new()
            .name("shifter-engine".into())
            .spawn(move || match Actor::start(config, ev, rollouts) {
                Ok(actor) => {
                    let _ = ready_tx.send(Ok(()));
                    actor.run(rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(DaemonError::Thread)?;
        match ready_rx.await {
            Ok(Ok(())) => Ok((
                Self {
                    tx,
                    events,
                    deadline,
                    config_path,
                },
                thread,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(DaemonError::EngineGone)
            }
        }
    }

    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ControlError::ShuttingDown)?;
        rx.await.map_err(|_| ControlError::ShuttingDown)
    }

    /// [`Engine::call`] for commands whose reply is itself a result: one error either way.
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<Result<T, ControlError>>) -> Command,
    ) -> Result<T, ControlError> {
        self.call(make).await?
    }

    /// When the earliest rollout hold ends.
    pub(crate) fn deadline(&self) -> watch::Receiver<Option<std::time::Instant>> {
        self.deadline.clone()
    }

    /// Posts a command without waiting for an answer (timer ticks).
    pub(crate) async fn post(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Stops the engine: it persists the state and drops the data plane handle, which
    /// leaves every attachment in place.
    pub(crate) async fn close(self) {
        let _ = self.call(Command::Shutdown).await;
    }

    /// Reads the configuration file again and applies it (SIGHUP and `POST /v1/reload`).
    pub(crate) async fn reload_file(&self) -> Result<ReloadReport, ControlError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ControlError::Conflict(
                "the daemon was started without a configuration file".into(),
            ));
        };
        let config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| {
                for p in e.problems() {
                    warn!("reload refused: {p}");
                }
                ControlError::Invalid(format!(
                    "configuration not reloaded: {}",
                    e.problems().join("; ")
                ))
            })?;
        self.call(|r| Command::Reload(Box::new(config), r)).await
    }

    /// Waits until green has no open flow or `timeout` passes. Nothing is closed: existing
    /// green connections finish on their own; this only reports how many are left.
    async fn wait_for_green_drain(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<DrainReport, ControlError> {
        let start = tokio::time::Instant::now();
        loop {
            let n = name.to_owned();
            let remaining = self.ask(|r| Command::GreenFlows(n, r)).await?;
            let waited = start.elapsed();
            if remaining == 0 || waited >= timeout {
                return Ok(DrainReport {
                    timeout_ms: timeout.as_millis() as u64,
                    waited_ms: waited.as_millis() as u64,
                    green_flows_remaining: remaining,
                });
            }
            tokio::time::sleep(DRAIN_POLL.min(timeout - waited)).await;
        }
    }
}

/// How often `rollback --drain-timeout` counts green's open flows.
const DRAIN_POLL: Duration = Duration::from_millis(200);

impl Control for Engine {
    async fn status(&self) -> Result<Status, ControlError> {
        self.call(Command::Status).await
    }

    async fn service(&self, name: String) -> Result<ServiceStatus, ControlError> {
        self.ask(|r| Command::Service(name, r)).await
    }

    async fn flows(&self, name: String) -> Result<Flows, ControlError> {
        self.ask(|r| Command::Flows(name, r)).await
    }

    async fn set_weight(
        &self,
        name: String,
        weight: Weight,
        uid: u32,
    ) -> Result<WeightChange, ControlError> {
        self.ask(|reply| Command::SetWeight {
            name,
            weight,
            uid,
            reply,
        })
        .await
    }

    async fn rollout(
        &self,
        name: String,
        command: OperatorCommand,
        uid: u32,
        drain: Option<Duration>,
    ) -> Result<RolloutReply, ControlError> {
        let n = name.clone();
        let mut reply = self
            .ask(|reply| Command::Rollout {
                name: n,
                command,
                uid,
                fleet: None,
                reply,
            })
            .await?;
        if let Some(timeout) = drain {
            reply.drain = Some(self.wait_for_green_drain(&name, timeout).await?);
        }
        Ok(reply)
    }

    async fn fleet_rollout(
        &self,
        name: String,
        command: OperatorCommand,
        fleet: String,
    ) -> Result<RolloutReply, ControlError> {
        self.ask(|reply| Command::Rollout {
            name,
            command,
            uid: crate::fleet::agent::AGENT_UID,
            fleet: Some(fleet),
            reply,
        })
        .await
    }

    async fn refused(&self, uid: u32, service: Option<String>, what: String) {
        let _ = self.post(Command::Refused { uid, service, what }).await;
    }

    async fn fleet_seen(&self, seen: FleetSeen) {
        let _ = self.post(Command::FleetSeen(seen)).await;
    }

    async fn history(&self, name: Option<String>) -> Result<HistoryReply, ControlError> {
        self.ask(|r| Command::History(name, r)).await
    }

    async fn events(&self, since: u64) -> Result<Vec<Event>, ControlError> {
        self.call(|r| Command::Events(since, r)).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    async fn reload(&self) -> Result<ReloadReport, ControlError> {
        self.reload_file().await
    }

    async fn detach(&self) -> Result<DetachReport, ControlError> {
        self.ask(Command::Detach).await
    }

    async fn metrics(&self) -> Result<String, ControlError> {
        self.call(Command::Metrics).await
    }
}
