//! The control API: HTTP/1.1 + JSON on the daemon's Unix socket.
//!
//! - [`types`]: the one wire schema (requests and answers).
//! - [`error`]: why a request failed, by kind ([`ControlError`]), without HTTP.
//! - [`server`]: HTTP over the socket, authorised by SO_PEERCRED, for anything that implements
//!   [`server::Control`] (the daemon does); it maps [`ControlError`] kinds to HTTP statuses.
//! - [`client`]: typed calls of every endpoint (the CLI's only way to the daemon).
//!
//! | Method | Path | Who | What |
//! |---|---|---|---|
//! | GET | `/v1/status` | any peer | daemon, interfaces, services with counters |
//! | GET | `/v1/services/{name}` | any peer | one service |
//! | PUT | `/v1/services/{name}/weight` | root, group or grant | body `{"percent": 12.5}` or `{"weight_bp": 1250}` |
//! | GET | `/v1/services/{name}/flows` | any peer | the service's flow-table entries |
//! | GET | `/v1/services/{name}/history`, `/v1/history` | any peer | recorded rollouts: start, steps, gate results, end |
//! | GET | `/v1/events[?since=N][&follow=true]` | any peer | weight changes (JSON lines when following) |
//! | POST | `/v1/reload` | root or group | re-read the configuration file (like SIGHUP) |
//! | POST | `/v1/detach` | root, group or grant | remove every program, link and pin, then stop |
//! | GET | `/metrics` | any peer | Prometheus text format |

pub mod client;
pub mod error;
pub mod server;
pub mod types;

pub use error::ControlError;
