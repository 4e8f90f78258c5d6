//! Shared helpers for the integration tests.
pub mod daemon;
pub mod etcd;
pub mod netns;
pub mod pkt;
pub mod testrun;
pub mod traffic;

use std::time::Duration;

/// How many times longer than on a quiet host a wait for events may take on this machine:
/// `SHIFTER_TEST_PATIENCE` (a factor, `cargo xtask vm-test` sets it for TCG guests), else 1.
/// It scales the bounds of waits for N events (the test waits for them and gives up only at
/// the bound), never the property a test checks.
pub fn patience() -> u32 {
    std::env::var("SHIFTER_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&f| f >= 1)
        .unwrap_or(1)
}

/// `bound` scaled by [`patience`].
pub fn patient(bound: Duration) -> Duration {
    bound * patience()
}

/// A second build of the kernel programs (`shifter-ebpf` with the `build-variant` feature,
/// built by tests/build.rs): different instructions, same maps. Loading it over a running data
/// plane is an upgrade to another build.
pub static VARIANT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shifter"));
