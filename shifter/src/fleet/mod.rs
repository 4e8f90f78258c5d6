//! Fleet rollouts: one rollout of a service across many hosts, wave by wave, on etcd v3.
//!
//! - [`schema`]: the keys and the documents stored at them, and who writes which.
//! - [`plan`]: the coordinator's decisions, pure (waves, host phases, rollback).
//! - [`store`]: the etcd v3 client (its JSON gateway over hyper).
//! - [`election`]: leader election on a lease and fenced writes.
//! - [`agent`]: the part of every daemon with `[fleet]`: heartbeat, desired state, reports.
//! - [`coordinator`]: `shifter fleet coordinate`.
//! - [`metrics`]: the fleet's Prometheus exposition (`coordinate --metrics-address`).
//!
//! The layer: above `api` (the agent drives the daemon through [`crate::api::server::Control`]),
//! below `daemon` and `cli`.

pub mod agent;
pub mod coordinator;
pub mod election;
pub mod metrics;
pub mod plan;
pub mod schema;
pub mod store;
