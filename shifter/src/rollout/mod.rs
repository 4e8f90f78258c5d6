//! Rollouts: canary ramps and blue-green switches that undo themselves.
//!
//! - [`engine`]: the pure state machine (no I/O, no clock of its own).
//! - [`gate`]: the kernel-signal gate over counter snapshots.
//! - [`driver`]: carries out the engine's effects on an [`driver::Actuator`] and runs an
//!   engine from tokio's clock.
//! - [`dataplane`]: the `DataPlane` as an actuator, and durable progress storage.
//! - [`config`]: the per-service `[services.health]` and `[services.rollout]` settings.

pub mod config;
pub mod dataplane;
pub mod driver;
pub mod engine;
pub mod gate;

#[cfg(test)]
mod tests;

pub use config::{HealthSettings, RolloutSettings, Step};
pub use dataplane::{DataPlaneActuator, load_progress, store_progress};
pub use driver::{Actuator, Driver, Message, apply};
pub use engine::{
    Cause, CommandError, Effect, Engine, Input, OperatorCommand, Progress, RolloutEvent, State,
    StateName, Status,
};
pub use gate::{SignalSample, Signals};
