//! Shared helpers for the integration tests.
pub mod pkt;
pub mod testrun;
pub mod netns;
pub mod traffic;
pub mod daemon;
