//! shifter: steer new connections for a service port to a blue or green backend port, in
//! the kernel.
//!
//! This library is the typed API the daemon and CLI are built on: load the programs, attach
//! them to interfaces, pin them, manage services and read counters and flows.

pub mod api;
pub mod attach;
pub mod cfgword;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
mod dryrun;
pub mod error;
pub mod events;
pub mod flows;
pub mod health;
pub mod metrics;
pub mod observe;
pub mod paths;
pub mod pinned;
pub mod rollout;
pub mod service;
pub mod skips;
pub mod state;
pub mod stats;
mod sys;
pub mod util;
pub mod watch;

pub use attach::{Adoption, Hook, TcMode};
pub use dataplane::{DataPlane, LoadOptions};
pub use error::Error;
pub use service::{Protocol, Service};
pub use shifter_common::{Affinity, Backend, ServiceConfig};

/// The kernel programs, built by `build.rs` from the `shifter-ebpf` crate.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shifter"));
