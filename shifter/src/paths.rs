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

/// Prefix of every link pinned in the bpffs directory.
pub const LINK_PIN_PREFIX: &str = "link-";
/// The pinned sock_ops link (host-wide, not per interface).
pub const SOCK_OPS_PIN: &str = "link-sockops";
/// Socket dispatch: the sk_lookup link on the network namespace.
pub const SK_LOOKUP_PIN: &str = "link-sklookup";
/// Socket dispatch: the sock_ops link that remembers backend listeners (host-wide).
pub const SOCK_LISTEN_PIN: &str = "link-socklisten";
/// The links pinned per interface: `link-<iface>-<kind>`.
pub const LINK_KINDS: [&str; 3] = ["ingress", "egress", "xdp"];

/// The pin name of the `kind` link (one of [`LINK_KINDS`]) of `iface`.
pub fn link_pin(iface: &str, kind: &str) -> String {
    format!("{LINK_PIN_PREFIX}{iface}-{kind}")
}

/// The interface and kind of a link pin name (the inverse of [`link_pin`]); `None` for any
/// other name, the host-wide and namespace-wide links included.
pub fn parse_link_pin(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(LINK_PIN_PREFIX)?
        .rsplit_once('-')
        .filter(|(_, kind)| LINK_KINDS.contains(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_round_trip() {
        assert_eq!(link_pin("eth0", "egress"), "link-eth0-egress");
        assert_eq!(parse_link_pin("link-veth-a-xdp"), Some(("veth-a", "xdp")));
        assert_eq!(parse_link_pin(SOCK_OPS_PIN), None);
        assert_eq!(parse_link_pin(SK_LOOKUP_PIN), None);
        assert_eq!(parse_link_pin(SOCK_LISTEN_PIN), None);
        assert_eq!(parse_link_pin("link-eth0-other"), None);
        assert_eq!(parse_link_pin("SHIFTER_FLOWS"), None);
    }
}
