//! Persisted daemon state (weights per service, the event log) under the state directory.
//!
//! Saving writes a temporary file, fsyncs it, keeps the current file as `state.json.prev`
//! (a hard link, so `state.json` never disappears) and renames the new file over it. Loading
//! falls back to the previous copy when the current one is unreadable, and to nothing (the
//! configuration's values) when both are.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{events::EventLog, paths};

pub const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Current green weight per service name, basis points.
    pub weights: BTreeMap<String, u16>,
    #[serde(default)]
    pub log: EventLog,
    /// Services whose blue and green ports are swapped relative to the configuration
    /// (each `promote` toggles it), so a restart keeps the promoted version as blue.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub swapped: std::collections::BTreeSet<String>,
    /// What the daemon has attached, per interface. Legacy (clsact) filters leave nothing in
    /// bpffs, so this is how `shifter status` names them while the daemon is down.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attachments: BTreeMap<String, AttachmentRecord>,
    /// Services whose rollout the fleet agent started, with the fleet rollout's id: their
    /// rollout events carry it, across restarts too, until a rollout is started here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fleet_rollouts: BTreeMap<String, String>,
}

/// One interface's attachment as last persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// Ingress hook: `tc`, `xdp` or `xdp-generic`.
    pub hook: String,
    /// How TC programs are attached (`TcMode`'s display: `tcx` or `legacy clsact`).
    pub tc_mode: String,
}

/// Where the loaded state came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Current,
    Previous,
    /// No usable state file: start from the configuration.
    Empty,
}

#[derive(Debug)]
pub struct Loaded {
    pub state: State,
    pub source: Source,
    /// What went wrong on the way (for the log): corrupt or unreadable files.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("saving state to {path}")]
pub struct SaveError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The state files in one directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.join(paths::STATE_FILE)
    }
    fn prev_path(&self) -> PathBuf {
        self.dir.join(paths::STATE_FILE_PREV)
    }

    /// Loads the state, never failing: problems become warnings.
    pub fn load(&self) -> Loaded {
        let mut warnings = Vec::new();
        let cur = self.path();
        match read(&cur) {
            Ok(Some(state)) => {
                return Loaded {
                    state,
                    source: Source::Current,
                    warnings,
                };
            }
            Ok(None) => {}
            Err(e) => {
                let bad = self.dir.join(paths::STATE_FILE_BAD);
                let moved = fs::rename(&cur, &bad).is_ok();
                warnings.push(format!(
                    "state file {} is unusable ({e}){}",
                    cur.display(),
                    if moved {
                        format!("; moved it to {}", bad.display())
                    } else {
                        String::new()
                    }
                ));
            }
        }
        let prev = self.prev_path();
        match read(&prev) {
            Ok(Some(state)) => {
                warnings.push(format!("using the previous good copy {}", prev.display()));
                Loaded {
                    state,
                    source: Source::Previous,
                    warnings,
                }
            }
            Ok(None) => {
                if !warnings.is_empty() {
                    warnings
                        .push("no previous copy; starting from the configuration's weights".into());
                }
                Loaded {
                    state: empty(),
                    source: Source::Empty,
                    warnings,
                }
            }
            Err(e) => {
                warnings.push(format!(
                    "previous copy {} is unusable too ({e}); starting from the configuration's weights",
                    prev.display()
                ));
                Loaded {
                    state: empty(),
                    source: Source::Empty,
                    warnings,
                }
            }
        }
    }

    /// Writes `state` durably (temp file, fsync, keep previous, rename, fsync directory).
    pub fn save(&self, state: &State) -> Result<(), SaveError> {
        let path = self.path();
        let err = |source| SaveError {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self.dir.join(format!("{}.tmp", paths::STATE_FILE));
        let mut body = serde_json::to_vec_pretty(state).map_err(|e| err(io::Error::other(e)))?;
        body.push(b'\n');
        write_durably(&path, &tmp, &body, || {
            if read(&path).is_ok_and(|s| s.is_some()) {
                let prev = self.prev_path();
                let _ = fs::remove_file(&prev);
                fs::hard_link(&path, &prev)?;
            }
            Ok(())
        })
        .map_err(err)
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new file, never a part:
/// write `tmp` (same directory), fsync it, run `before_rename` (the state file keeps its
/// previous copy there), rename it over `path`, fsync the directory. The one durable write
/// of the daemon (state file and rollout progress).
pub(crate) fn write_durably(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    {
        let mut f = fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    before_rename()?;
    fs::rename(tmp, path)?;
    fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

fn empty() -> State {
    State {
        version: STATE_VERSION,
        ..State::default()
    }
}

/// `Ok(None)` when the file does not exist; `Err` with a reason when it is unusable.
fn read(path: &Path) -> Result<Option<State>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if state.version != STATE_VERSION {
        return Err(format!("version {} is not {STATE_VERSION}", state.version));
    }
    if let Some((name, w)) = state.weights.iter().find(|(_, w)| **w > 10_000) {
        return Err(format!(
            "weight {w} of {name} is outside 0..=10000 basis points"
        ));
    }
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Cause;
    use crate::util::TestDir;

    fn state(w: u16) -> State {
        let mut s = empty();
        s.weights.insert("web".into(), w);
        s.log
            .record("web", Some(0), Some(w), Cause::Operator, Some(1000));
        s
    }

    #[test]
    fn missing_dir_is_empty_without_warnings() {
        let d = TestDir::new("state-missing");
        let l = Store::new(d.0.join("nope")).load();
        assert_eq!(l.source, Source::Empty);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(l.state, empty());
    }

    #[test]
    fn save_then_load_round_trips_and_keeps_previous() {
        let d = TestDir::new("state-roundtrip");
        let store = Store::new(&d.0);
        store.save(&state(100)).unwrap();
        let second = state(200);
        store.save(&second).unwrap();
        let l = store.load();
        assert_eq!(l.source, Source::Current);
        assert_eq!(l.state, second);
        assert!(l.warnings.is_empty());
        let prev: State = serde_json::from_slice(&fs::read(store.prev_path()).unwrap()).unwrap();
        assert_eq!(prev.weights["web"], 100);
        assert!(!d.0.join("state.json.tmp").exists());
    }

    #[test]
    fn truncated_file_falls_back_to_previous() {
        let d = TestDir::new("state-truncated");
        let store = Store::new(&d.0);
        store.save(&state(100)).unwrap();
        store.save(&state(200)).unwrap();
        let bytes = fs::read(store.path()).unwrap();
        fs::write(store.path(), &bytes[..bytes.len() / 2]).unwrap();
        let l = store.load();
        assert_eq!(l.source, Source::Previous);
        assert_eq!(l.state.weights["web"], 100);
        assert!(l.warnings[0].contains("unusable"), "{:?}", l.warnings);
        assert!(d.0.join(paths::STATE_FILE_BAD).exists());
        // The next save does not turn the bad file into the previous copy.
        store.save(&state(300)).unwrap();
        assert_eq!(store.load().state.weights["web"], 300);
    }

    #[test]
    fn garbage_everywhere_starts_empty() {
        let d = TestDir::new("state-garbage");
        let store = Store::new(&d.0);
        fs::write(store.path(), b"\x00\x01garbage").unwrap();
        fs::write(
            store.prev_path(),
            b"{\"version\": 1, \"weights\": {\"web\": 20000}}",
        )
        .unwrap();
        let l = store.load();
        assert_eq!(l.source, Source::Empty);
        assert_eq!(l.state, empty());
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert!(
            l.warnings[1].contains("outside 0..=10000"),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn wrong_version_is_unusable() {
        let d = TestDir::new("state-version");
        let store = Store::new(&d.0);
        fs::write(store.path(), b"{\"version\": 99, \"weights\": {}}").unwrap();
        let l = store.load();
        assert_eq!(l.source, Source::Empty);
        assert!(l.warnings[0].contains("version 99"), "{:?}", l.warnings);
    }

    #[test]
    fn attachments_round_trip_and_older_files_have_none() {
        let d = TestDir::new("state-attach");
        let store = Store::new(&d.0);
        // A file written before attachments were recorded.
        fs::write(
            store.path(),
            b"{\"version\": 1, \"weights\": {\"web\": 2500}}",
        )
        .unwrap();
        let l = store.load();
        assert_eq!(l.source, Source::Current);
        assert!(l.state.attachments.is_empty());
        let mut st = state(300);
        st.attachments.insert(
            "eth0".into(),
            AttachmentRecord {
                hook: "tc".into(),
                tc_mode: "legacy clsact".into(),
            },
        );
        store.save(&st).unwrap();
        assert_eq!(store.load().state.attachments, st.attachments);
    }
}
