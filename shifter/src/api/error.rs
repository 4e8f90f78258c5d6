//! Why the daemon refused or failed a control request, by kind and without HTTP: the daemon
//! answers with these, `server.rs` maps each kind to an HTTP status.

/// The error of one control request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No configured service has this name.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// The request is valid but the current state refuses it (a rollout command in the wrong
    /// state, a reload without a configuration file).
    #[error("{0}")]
    Conflict(String),
    /// What the request carries is invalid (a configuration that does not validate).
    #[error("{0}")]
    Invalid(String),
    /// The daemon is stopping and no longer answers.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// Something failed inside the daemon (the data plane, the file system).
    #[error("{0}")]
    Internal(String),
}
