//! Shared helpers for the integration tests.
pub mod daemon;
pub mod netns;
pub mod pkt;
pub mod testrun;
pub mod traffic;

/// A second build of the kernel programs (`shifter-ebpf` with the `build-variant` feature,
/// built by tests/build.rs): different instructions, same maps. Loading it over a running data
/// plane is an upgrade to another build.
pub static VARIANT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shifter"));
