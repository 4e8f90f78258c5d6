//! shifter: steer new connections for a service port to a blue or green backend port, in
//! the kernel.
//!
//! The crate is layered; a module imports only from the layers below it (see
//! docs/ARCHITECTURE.md, checked by `cargo xtask test`):
//!
//! | layer | modules |
//! |---|---|
//! | words | [`model`] (service, protocol, weight), [`paths`], [`util`], [`events`] |
//! | kernel | [`dataplane`]: load, attach, adopt, detach, services, flows, counters, pins |
//! | settings | [`config`]: the TOML tree and its validation |
//! | logic | [`health`] (probes, checker), [`rollout`] (the pure state machine) |
//! | wire | [`api`]: the wire schema, the HTTP server over a [`api::server::Control`], the client |
//! | fleet | [`fleet`]: fleet rollouts on etcd (store, election, agent, coordinator, pure plan) |
//! | daemon | [`daemon`]: `run(config, shutdown)`, the actor, reload, state, metrics |
//! | command line | `cli` (feature `cli`, on by default): one module per verb, the terminal UI |

pub mod api;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod events;
pub mod fleet;
pub mod health;
pub mod model;
pub mod paths;
pub mod rollout;
pub mod util;

/// `crate::sys` for the files moved into `dataplane/` whose code names it so (their logic is
/// left as it was; see docs/ARCHITECTURE.md).
pub(crate) use dataplane::sys;

pub use dataplane::{Adoption, DataPlane, Error, Hook, LoadOptions, TcMode};
pub use model::{Protocol, Service, Weight};
pub use shifter_common::{Affinity, Backend, Dispatch, ServiceConfig};

/// The kernel programs, built by `build.rs` from the `shifter-ebpf` crate.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shifter"));
