//! Rollouts: canary ramps and blue-green switches that undo themselves. Pure logic: nothing
//! here touches the data plane or a file; the daemon carries the effects out.
//!
//! - [`engine`]: the pure state machine (no I/O, no clock of its own); its vocabulary
//!   (states, commands, causes, effects, progress) is [`types`].
//! - [`gate`]: the kernel-signal gate over counter snapshots.
//! - [`history`]: the record of every rollout (start, steps, gate results, end), bounded.
//! - [`driver`]: carries out the engine's effects on an [`driver::Actuator`] and runs an
//!   engine from tokio's clock.
//!
//! Its settings (`[services.rollout]`, `[services.health]`) are read by [`crate::config`];
//! the data plane as an actuator is [`crate::daemon::actuator`].

pub mod driver;
pub mod engine;
pub mod gate;
pub mod history;
pub mod types;

#[cfg(test)]
mod analysis_tests;
#[cfg(test)]
mod hook_tests;
#[cfg(test)]
mod rollback_tests;
#[cfg(test)]
mod tests;

pub use crate::config::{HealthSettings, RolloutSettings, Step};
pub use driver::{Actuator, Driver, Message, apply};
pub use engine::{
    Cause, CommandError, Effect, Engine, HookAnswer, HookCall, Input, OperatorCommand, Progress,
    RolloutEvent, State, StateName, Status,
};
pub use gate::{SignalSample, Signals};
