//! Reads when the daemon is not running: `status` and `flows` read the maps pinned under the
//! configuration's bpffs directory instead (needs root), and say so.

use std::path::Path;

use serde::Serialize;

use super::{EXIT_UNAVAILABLE, Failure};
use crate::{
    config::Config,
    dataplane::PinnedMaps,
    util::{error_chain, is_permission_denied},
};

/// The line that tells a human the answer did not come from the daemon.
pub(crate) const LABEL: &str = "(daemon not running; read from pinned maps)";

/// The configuration (for the bpffs directory and the services' names) and the pinned maps.
pub(crate) fn open(config_path: &Path, socket: &Path) -> Result<(Config, PinnedMaps), Failure> {
    let down = format!(
        "the shifter daemon is not running (nothing listens on {})",
        socket.display()
    );
    let fail = |msg: String| Failure::Message(msg, EXIT_UNAVAILABLE);
    let config = Config::load(config_path).map_err(|e| {
        fail(format!(
            "{down}; reading the pinned maps instead needs the configuration (--config): {}",
            e.problems().join("; ")
        ))
    })?;
    let dir = &config.daemon.bpffs_dir;
    match std::fs::metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(format!(
                "{down}, and nothing is pinned under {}: the data plane is not loaded",
                dir.display()
            )));
        }
        Err(e) => return Err(fail(format!("{down}; {}", pins_error(dir, &e)))),
    }
    let maps =
        PinnedMaps::open(dir).map_err(|e| fail(format!("{down}; {}", pins_error(dir, &e))))?;
    Ok((config, maps))
}

/// What went wrong reading the pins under `dir`, in words: the plain `os error 13` of a
/// non-root user becomes what to do about it.
pub(crate) fn pins_error(dir: &Path, e: &(dyn std::error::Error + 'static)) -> String {
    if is_permission_denied(e) {
        format!(
            "the pinned maps under {} can only be read and changed by root (bpffs is mode \
             0700): run this as root, or start the daemon and ask it",
            dir.display()
        )
    } else {
        format!(
            "reading the pinned maps under {}: {}",
            dir.display(),
            error_chain(e)
        )
    }
}

/// `v` as JSON with `"source": "pinned-maps"` added, so scripts can tell.
pub(crate) fn labelled_json<T: Serialize>(v: &T) -> serde_json::Value {
    let mut j = serde_json::to_value(v).expect("serializable");
    if let Some(o) = j.as_object_mut() {
        o.insert("source".into(), "pinned-maps".into());
    }
    j
}

pub(crate) fn read_err(maps: &PinnedMaps, e: &crate::dataplane::Error) -> Failure {
    Failure::Message(pins_error(maps.dir(), e), 1)
}
