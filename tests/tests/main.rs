//! The integration tests: one binary, one module per area (aya's `test/integration-test` is the
//! model). The whole stack links once instead of once per area, which is what once filled CI's
//! disk. Each area's tests were written to run side by side with each other, not with another
//! area's, so `cargo xtask test` and `cargo xtask vm-test` run the areas one after the other
//! (xtask/src/areas.rs); a plain `cargo test` runs them all at once.
//!
//! Areas that need root, namespaces or BPF say so in their own header.

mod analysis;
mod atomicity;
mod attach_mode;
mod daemon_api;
mod daemon_process;
mod deb_package;
mod dryrun;
mod fleet;
mod fleet_store;
mod grants;
mod history;
mod https_health;
mod metrics;
mod netns_tc;
mod netns_xdp;
mod packets;
mod rollback_gradual;
mod rollout_dataplane;
mod rollout_e2e;
mod rollout_wait;
mod server_first;
mod services;
mod smoke_load;
mod systemd;
mod upgrade;
mod watch;
mod webhooks;

/// The namespace scenarios `netns_tc` and `netns_xdp` share.
mod netns_suite;
