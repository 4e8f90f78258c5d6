//! Everything that touches the kernel, and nothing above it: load the programs and create or
//! adopt the pinned maps ([`load`]), attach to and detach from interfaces ([`attach`],
//! [`detach`]), the services and their configuration words ([`services`], [`cfgword`]),
//! dry runs ([`dryrun`]), socket dispatch ([`socket`], and the listeners it registers:
//! [`listeners`]), the flow table ([`flows`]), the counters ([`counters`]) and a
//! read-only open of the pins for readers without the daemon ([`pinned`]).
//!
//! This layer imports only [`crate::model`] and [`crate::paths`] (and the common crate).

pub mod attach;
pub mod cfgword;
pub mod counters;
pub mod detach;
mod dryrun;
pub mod error;
pub mod flows;
mod listeners;
mod load;
pub mod pinned;
pub mod services;
pub mod skips;
mod socket;
pub(crate) mod sys;

pub use attach::{Adoption, Hook, TcMode};
pub use counters::Counters;
pub use detach::detach_pinned;
pub use error::{Error, Result};
pub use flows::{Flow, SweepPolicy, flow_clock_ns};
pub use load::{AttachInfo, DataPlane, LoadOptions};
pub use pinned::{PinnedMaps, linked_interfaces};
pub use skips::{Skip, SkipCount, SkipCounts, pinned_skip_counts};
pub use socket::ListenerRegistration;
