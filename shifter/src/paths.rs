//! Every filesystem path shifter uses by default, defined once.

/// The daemon's configuration file.
pub const CONFIG: &str = "/etc/shifter/shifter.toml";
/// The control API's Unix socket (systemd `RuntimeDirectory=shifter`).
pub const SOCKET: &str = "/run/shifter/shifter.sock";
/// Persisted state: weights and events (systemd `StateDirectory=shifter`).
pub const STATE_DIR: &str = "/var/lib/shifter";
/// bpffs directory for pinned maps and links.
pub const BPFFS_DIR: &str = "/sys/fs/bpf/shifter";
/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// The last good state file, kept when a new one replaces it.
pub const STATE_FILE_PREV: &str = "state.json.prev";
/// Where an unreadable state file is moved so it is not overwritten.
pub const STATE_FILE_BAD: &str = "state.json.bad";
