//! Carrying out the engine's effects, and an async driver that feeds the engine from tokio's
//! clock, a message channel and counter samples.
//!
//! The daemon can use either piece: [`apply`] is synchronous and fits an actor that owns the
//! `DataPlane` on its own thread; [`Driver`] runs one service's engine as a task over any
//! [`Actuator`].

use std::{future::Future, time::Duration};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{error, warn};

use super::{
    engine::{
        Actuation, Cause, CommandError, Effect, Engine, HookAnswer, HookCall, Input,
        OperatorCommand, Progress, RolloutEvent, Status,
    },
    gate::SignalSample,
};
use crate::health::HealthVerdict;

/// What the engine's effects act on: the data plane (weights, counters) and the state store.
pub trait Actuator {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sets green's weight in basis points in one config-word write (`dry_run`: only the
    /// would-be weight the data plane counts decisions with). Returns the time the map
    /// update took, measured by the actuator.
    fn set_weight(
        &mut self,
        bp: u16,
        dry_run: bool,
        cause: &Cause,
    ) -> Result<Duration, Self::Error>;

    /// Promote: swaps blue and green ports and sets the weight to 0 in one config-word
    /// write. Returns the time the map update took.
    fn swap_roles(&mut self, cause: &Cause) -> Result<Duration, Self::Error>;

    /// Current counters of both backends.
    fn sample(&mut self) -> Result<SignalSample, Self::Error>;

    /// Stores progress durably (temp file, fsync, rename).
    fn persist(&mut self, progress: &Progress) -> Result<(), Self::Error>;

    /// Records a transition (event log, broadcast to watchers).
    fn record(&mut self, event: RolloutEvent);

    /// Asks a confirm webhook; its answer comes back later as `Input::Hook`. Must not block.
    fn confirm(&mut self, call: HookCall);
}

/// Carries out `effects` in order. A weight change or role swap comes first and is timed;
/// its [`Actuation`] is attached to the event that follows it. `decided_at`: when the input
/// that caused these effects was decided (a health check's result), so the event carries the
/// time from that decision to the weight change returning.
pub fn apply<A: Actuator>(
    actuator: &mut A,
    effects: Vec<Effect>,
    decided_at: Option<std::time::Instant>,
) -> Vec<RolloutEvent> {
    let mut pending: Option<Actuation> = None;
    let mut recorded = Vec::new();
    for effect in effects {
        match effect {
            Effect::SetWeight { bp, cause, dry_run } => {
                let res = actuator.set_weight(bp, dry_run, &cause);
                pending = Some(actuation(res, decided_at));
            }
            Effect::SwapRoles { cause } => {
                let res = actuator.swap_roles(&cause);
                pending = Some(actuation(res, decided_at));
            }
            Effect::Record(mut ev) => {
                ev.actuation = pending.take();
                if let Some(Actuation { error: Some(e), .. }) = &ev.actuation {
                    error!("{}: weight change for {} failed: {e}", ev.service, ev.cause);
                }
                actuator.record(ev.clone());
                recorded.push(ev);
            }
            Effect::Confirm(call) => actuator.confirm(call),
            Effect::Persist(p) => {
                if let Err(e) = actuator.persist(&p) {
                    error!(
                        "{}: persisting rollout progress: {}",
                        p.service,
                        crate::util::error_chain(&e)
                    );
                }
            }
        }
    }
    recorded
}

fn actuation<E: std::error::Error + 'static>(
    res: Result<Duration, E>,
    decided_at: Option<std::time::Instant>,
) -> Actuation {
    let since_decision = decided_at.map(|t| t.elapsed());
    match res {
        Ok(map_update) => Actuation {
            map_update,
            since_decision,
            error: None,
        },
        Err(e) => Actuation {
            map_update: Duration::ZERO,
            since_decision,
            error: Some(crate::util::error_chain(&e)),
        },
    }
}

/// Messages to a running [`Driver`].
#[derive(Debug)]
pub enum Message {
    /// A health checker's change of state; `decided_at` is when its deciding check finished.
    Health {
        verdict: HealthVerdict,
        decided_at: std::time::Instant,
    },
    Command {
        command: OperatorCommand,
        uid: Option<u32>,
        reply: oneshot::Sender<Result<Vec<RolloutEvent>, CommandError>>,
    },
    /// The real weight was changed outside the rollout.
    WeightChanged {
        bp: u16,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    /// A confirm webhook's answer (to a call the actuator was given).
    Hook(HookAnswer),
}

/// Runs one service's engine: ticks at the end of each hold, counter samples every
/// `sample_every` (and right before a hold ends), and messages.
pub struct Driver<A: Actuator> {
    pub engine: Engine,
    pub actuator: A,
    origin: Instant,
    sample_every: Duration,
}

impl<A: Actuator> Driver<A> {
    /// `origin` is the zero of the engine's clock (keep it for the engine's lifetime).
    pub fn new(engine: Engine, actuator: A, origin: Instant, sample_every: Duration) -> Self {
        Self {
            engine,
            actuator,
            origin,
            sample_every: sample_every.max(Duration::from_millis(1)),
        }
    }

    /// The engine's clock: tokio time since `origin` (follows a paused test clock).
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn feed(
        &mut self,
        input: Input,
        decided_at: Option<std::time::Instant>,
    ) -> Result<Vec<RolloutEvent>, CommandError> {
        let now = self.now();
        let fx = self.engine.handle(now, input)?;
        Ok(apply(&mut self.actuator, fx, decided_at))
    }

    fn sample_and_tick(&mut self) {
        match self.actuator.sample() {
            Ok(s) => {
                let _ = self.feed(Input::Signals(s), None);
            }
            Err(e) => warn!(
                "{}: reading counters: {}",
                self.engine.service(),
                crate::util::error_chain(&e)
            ),
        }
        let _ = self.feed(Input::Tick, None);
    }

    /// Handles one message (also usable without [`Driver::run`]).
    pub fn on_message(&mut self, msg: Message) {
        match msg {
            Message::Health {
                verdict,
                decided_at,
            } => {
                let _ = self.feed(Input::Health(verdict), Some(decided_at));
            }
            Message::Command {
                command,
                uid,
                reply,
            } => {
                let _ = reply.send(self.feed(Input::Command { command, uid }, None));
            }
            Message::WeightChanged { bp } => {
                let _ = self.feed(Input::WeightChanged { bp }, None);
            }
            Message::Status { reply } => {
                let _ = reply.send(self.engine.status(self.now()));
            }
            Message::Hook(answer) => {
                let _ = self.feed(Input::Hook(answer), None);
            }
        }
    }

    /// Runs until `shutdown` resolves or every sender is gone; returns the engine and the
    /// actuator (the last progress was persisted with every transition).
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Message>,
        shutdown: impl Future<Output = ()>,
    ) -> (Engine, A) {
        tokio::pin!(shutdown);
        let mut next_sample = Instant::now();
        loop {
            // A hold that ended without a gate verdict waits for the next sample.
            let hold_end = self
                .engine
                .next_deadline()
                .map(|d| self.origin + d)
                .filter(|h| *h > Instant::now());
            let wake = hold_end.map_or(next_sample, |h| h.min(next_sample));
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                msg = rx.recv() => match msg {
                    Some(m) => self.on_message(m),
                    None => break,
                },
                () = tokio::time::sleep_until(wake) => {
                    self.sample_and_tick();
                    let now = Instant::now();
                    if now >= next_sample {
                        next_sample = now + self.sample_every;
                    }
                }
            }
        }
        (self.engine, self.actuator)
    }
}
