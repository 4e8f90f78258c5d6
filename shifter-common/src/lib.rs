//! Types and pure logic shared by the shifter kernel programs and userspace.
//!
//! Everything here is `no_std` so the very same code runs in the eBPF programs and in
//! ordinary host tests. Map keys and values are `#[repr(C)]` with explicit padding.
//!
//! Modules, each importing only from the ones before it:
//! - `service`: a service's configuration (`ServiceConfig`, its packed word), `Backend`,
//!   `Affinity`, `WEIGHT_MAX`.
//! - `flow`: the tuple the decision hashes and the flow table's key and value, with the
//!   constructors every program uses.
//! - `decision`: hash, bucket and `choose_backend`.
//! - `maps`: map and program names, service keys, counters, and the skip reasons (`Skip`).
//!
//! Every public name is also re-exported here (`shifter_common::FlowKey`, ...).
#![no_std]

pub mod decision;
pub mod flow;
pub mod maps;
pub mod service;

pub use decision::{bucket, choose_backend, flow_hash};
pub use flow::*;
pub use maps::*;
pub use service::{Affinity, Backend, ConfigError, Dispatch, ServiceConfig, WEIGHT_MAX};
