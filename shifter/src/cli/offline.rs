//! Reads when the daemon is not running: `status` and `flows` read the maps pinned under the
//! configuration's bpffs directory instead (needs root), and say so.

use std::path::Path;

use serde::Serialize;

use super::{EXIT_UNAVAILABLE, Failure};
use crate::{config::Config, dataplane::PinnedMaps, util::error_chain};

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
    if !dir.exists() {
        return Err(fail(format!(
            "{down}, and nothing is pinned under {}: the data plane is not loaded",
            dir.display()
        )));
    }
    let maps = PinnedMaps::open(dir).map_err(|e| {
        fail(format!(
            "{down}; reading the pinned maps under {}: {}",
            dir.display(),
            error_chain(&e)
        ))
    })?;
    Ok((config, maps))
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
    Failure::Message(
        format!(
            "reading the pinned maps under {}: {}",
            maps.dir().display(),
            error_chain(e)
        ),
        1,
    )
}
