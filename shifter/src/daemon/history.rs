//! The rollout history on disk: `<state_dir>/history.json`, written with the daemon's one
//! durable write ([`write_durably`]: temp file, fsync, rename, fsync the directory) after
//! every batch of rollout events that added to it. An unreadable file is moved aside to
//! `history.json.bad` (so the next save does not overwrite it) and the history starts empty.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use tracing::warn;

use super::state::write_durably;
use crate::{
    api::{ControlError, types::HistoryReply},
    rollout::history::{HISTORY_VERSION, History},
};

/// File name of the history inside the state directory.
pub const HISTORY_FILE: &str = "history.json";

#[derive(Debug, thiserror::Error)]
#[error("saving the rollout history to {}", .path.display())]
pub struct HistorySaveError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

pub(crate) fn history_path(state_dir: &Path) -> PathBuf {
    state_dir.join(HISTORY_FILE)
}

/// Loads the history, never failing: a missing file is an empty history, an unusable one is
/// moved aside with a warning.
pub(crate) fn load(state_dir: &Path) -> History {
    let path = history_path(state_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return History::default(),
        Err(e) => {
            warn!("rollout history {}: {e}; starting empty", path.display());
            return History::default();
        }
    };
    let reason = match serde_json::from_slice::<History>(&bytes) {
        Ok(h) if h.version == HISTORY_VERSION => return h,
        Ok(h) => format!("version {} is not {HISTORY_VERSION}", h.version),
        Err(e) => e.to_string(),
    };
    let bad = state_dir.join(format!("{HISTORY_FILE}.bad"));
    let moved = fs::rename(&path, &bad).is_ok();
    warn!(
        "rollout history {} is unusable ({reason}){}; starting empty",
        path.display(),
        if moved {
            format!(", moved it to {}", bad.display())
        } else {
            String::new()
        }
    );
    History::default()
}

/// Writes the history durably.
pub(crate) fn save(state_dir: &Path, history: &History) -> Result<(), HistorySaveError> {
    let path = history_path(state_dir);
    let err = |source| HistorySaveError {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(state_dir).map_err(err)?;
    let mut body = serde_json::to_vec_pretty(history).map_err(|e| err(io::Error::other(e)))?;
    body.push(b'\n');
    let tmp = state_dir.join(format!("{HISTORY_FILE}.tmp"));
    write_durably(&path, &tmp, &body, || Ok(())).map_err(err)
}

impl super::actor::Actor {
    /// The recorded rollouts of a configured service (or one that has a history), or of all.
    pub(super) fn history(&self, name: Option<String>) -> Result<HistoryReply, ControlError> {
        let Some(name) = name else {
            return Ok(HistoryReply {
                service: None,
                rollouts: self.rollouts.all_history(),
            });
        };
        let rollouts = match self.rollouts.history(&name) {
            Some(r) => r,
            None => {
                self.slot_of(&name)?;
                Vec::new()
            }
        };
        Ok(HistoryReply {
            service: Some(name),
            rollouts,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rollout::{
        Cause, RolloutEvent, StateName,
        history::{MAX_ROLLOUTS, Outcome},
    };
    use crate::util::TestDir;

    fn started(history: &mut History, t: u64) {
        let ev = RolloutEvent {
            seq: 0,
            at: Duration::ZERO,
            service: "web".into(),
            from: StateName::Idle,
            to: StateName::Running,
            cause: Cause::Operator {
                command: "start".into(),
                uid: Some(0),
            },
            weight_before_bp: 0,
            weight_after_bp: 100,
            dry_run: false,
            actuation: None,
        };
        history.observe("web", &[ev], None, t);
    }

    #[test]
    fn saved_history_loads_back_bounded() {
        let d = TestDir::new("history-roundtrip");
        assert_eq!(load(&d.0), History::default());
        let mut h = History::default();
        for t in 0..(MAX_ROLLOUTS as u64 + 2) {
            started(&mut h, t);
        }
        save(&d.0, &h).unwrap();
        let back = load(&d.0);
        assert_eq!(back, h);
        assert_eq!(back.of("web").len(), MAX_ROLLOUTS);
        assert_eq!(back.of("web")[0].outcome, Outcome::InProgress);
        assert!(!d.0.join("history.json.tmp").exists());
    }

    #[test]
    fn unusable_file_is_moved_aside_and_history_starts_empty() {
        let d = TestDir::new("history-corrupt");
        fs::write(history_path(&d.0), b"{\"version\": 1, \"next_id\": ").unwrap();
        assert_eq!(load(&d.0), History::default());
        assert!(d.0.join("history.json.bad").exists());
        assert!(!history_path(&d.0).exists());
        fs::write(
            history_path(&d.0),
            b"{\"version\": 7, \"next_id\": 1, \"services\": {}}",
        )
        .unwrap();
        assert_eq!(load(&d.0), History::default());
    }
}
