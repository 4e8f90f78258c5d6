//! Types and pure logic shared by the shifter kernel programs and userspace.
//!
//! Everything here is `no_std` so the very same code runs in the eBPF programs and in
//! ordinary host tests. Map keys and values are `#[repr(C)]` with explicit padding.
#![no_std]

pub mod config;
pub mod decision;
pub mod maps;

pub use config::{Affinity, ServiceConfig};
pub use decision::{Backend, FlowTuple, WEIGHT_MAX, bucket, choose_backend, flow_hash};
pub use maps::*;
