//! Removing the data plane for good: the one detach of everything under a bpffs directory,
//! used by the daemon's `POST /v1/detach` and by `shifter detach` without a daemon.

use std::path::Path;

use super::{
    error::{Error, Result},
    load::DataPlane,
    pinned::linked_interfaces,
};

/// Removes what is attached to `also` and to every interface with a link pinned under
/// `pin_dir` (pinned tcx/XDP links and our legacy filters), then the pins themselves, maps
/// included: flows and counters are gone for good. Returns the interfaces where something
/// was removed. A `pin_dir` that does not exist is not an error.
pub fn detach_pinned(pin_dir: &Path, also: &[String]) -> Result<Vec<String>> {
    let mut ifaces: Vec<String> = also.to_vec();
    for iface in linked_interfaces(pin_dir).into_keys() {
        if !ifaces.contains(&iface) {
            ifaces.push(iface);
        }
    }
    let mut removed = Vec::new();
    for iface in ifaces {
        let found = DataPlane::detach_leftover(pin_dir, &iface).map_err(|e| Error::Leftover {
            iface: iface.clone(),
            source: Box::new(e),
        })?;
        if found {
            removed.push(iface);
        }
    }
    match std::fs::remove_dir_all(pin_dir) {
        Ok(()) => Ok(removed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(removed),
        Err(source) => Err(Error::RemovePins {
            path: pin_dir.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_the_pinned_links_of_every_interface_then_the_pins() {
        let dir = std::env::temp_dir().join(format!("shifter-detach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for pin in [
            "link-shft-a0-egress",
            "link-shft-a0-ingress",
            "link-shft-b0-xdp",
            crate::paths::SOCK_OPS_PIN,
            "SHIFTER_FLOWS",
        ] {
            std::fs::write(dir.join(pin), b"").unwrap();
        }
        // A configured interface with nothing pinned (and no such interface): nothing removed.
        let removed = detach_pinned(&dir, &["shft-c0".to_owned()]).unwrap();
        assert_eq!(removed, ["shft-a0", "shft-b0"]);
        assert!(!dir.exists(), "the pin directory goes too");
        // Nothing left: not an error.
        assert!(detach_pinned(&dir, &[]).unwrap().is_empty());
    }
}
