//! Which weight and roles a service starts with when the daemon starts: the kernel's live
//! values win over a saved copy, which wins over the configuration.
//!
//! The pinned maps are what steers traffic right now, so a restart that took its weight from
//! the state file could move live traffic: seen with a corrupt `state.json`, where the older
//! `state.json.prev` said 33 % while the kernel held 40 %. The state file matters only when the
//! pins are gone (a reboot clears bpffs, or `shifter detach`).

use crate::{
    daemon::state::Source,
    events::Cause,
    model::{Service, percent},
};

/// What a configured service starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StartValues {
    pub weight: u16,
    /// Blue and green swapped relative to the configuration (an earlier promote).
    pub swapped: bool,
    pub cause: Cause,
    /// Where the weight came from, for the log.
    pub from: &'static str,
    /// The saved roles, when they disagree with the kernel's.
    saved_swapped: bool,
}

/// The start values of `configured`, given the pinned service of the same identity (`live`),
/// the weight and roles in the state file (`saved`, `saved_swapped`).
pub(super) fn start_values(
    live: Option<&Service>,
    saved: Option<u16>,
    configured: &Service,
    saved_swapped: bool,
) -> StartValues {
    let (weight, cause, from) = match (live, saved) {
        (Some(l), _) => (l.config.weight, Cause::Restore, "pinned maps (live)"),
        (None, Some(w)) => (w, Cause::Restore, "state file"),
        (None, None) => (configured.config.weight, Cause::Config, "configuration"),
    };
    let c = &configured.config;
    let swapped = match live.map(|l| (l.config.blue_port, l.config.green_port)) {
        Some(ports) if ports == (c.blue_port, c.green_port) => false,
        Some(ports) if ports == (c.green_port, c.blue_port) => true,
        // No pins, or the configuration changed the ports: only the saved roles can tell.
        _ => saved_swapped,
    };
    StartValues {
        weight,
        swapped,
        cause,
        from,
        saved_swapped,
    }
}

impl StartValues {
    /// Words for the event log when the saved copy (`saved`, read from `source`) disagrees
    /// with what the kernel holds: the kernel's values were kept.
    pub(super) fn disagreement(&self, saved: Option<u16>, source: Source) -> Option<String> {
        if self.cause != Cause::Restore || self.from == "state file" {
            return None;
        }
        let copy = match source {
            Source::Current => "the state file",
            Source::Previous => "the previous state file (the current one was unusable)",
            Source::Empty => return None,
        };
        let mut differ = Vec::new();
        if let Some(w) = saved.filter(|w| *w != self.weight) {
            differ.push(format!(
                "weight {}% (the kernel holds {}%)",
                percent(w),
                percent(self.weight)
            ));
        }
        if self.saved_swapped != self.swapped {
            let roles = |s: bool| if s { "promoted" } else { "not promoted" };
            differ.push(format!(
                "{} (the kernel's ports say {})",
                roles(self.saved_swapped),
                roles(self.swapped)
            ));
        }
        (!differ.is_empty()).then(|| {
            format!(
                "restart: kept the live values of the pinned maps; {copy} said {}",
                differ.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(blue: u16, green: u16, weight: u16) -> Service {
        Service::tcp(80, blue, green, weight)
    }

    #[test]
    fn the_live_weight_wins_over_a_stale_state_file() {
        let live = svc(8081, 8082, 4000);
        let v = start_values(Some(&live), Some(3300), &svc(8081, 8082, 0), false);
        assert_eq!(
            (v.weight, v.swapped, v.cause),
            (4000, false, Cause::Restore)
        );
        let d = v.disagreement(Some(3300), Source::Previous).expect("told");
        assert!(
            d.contains("previous state file") && d.contains("33.00%") && d.contains("40.00%"),
            "{d}"
        );
    }

    #[test]
    fn the_state_file_counts_only_without_pins_and_the_configuration_last() {
        let v = start_values(None, Some(2500), &svc(8081, 8082, 1000), true);
        assert_eq!((v.weight, v.swapped, v.from), (2500, true, "state file"));
        assert_eq!(v.disagreement(Some(2500), Source::Current), None);
        let v = start_values(None, None, &svc(8081, 8082, 1000), false);
        assert_eq!((v.weight, v.cause), (1000, Cause::Config));
    }

    #[test]
    fn the_live_ports_decide_the_promoted_roles() {
        // Promoted in the kernel (ports swapped), the stale state file says not promoted.
        let live = svc(8082, 8081, 0);
        let v = start_values(Some(&live), Some(0), &svc(8081, 8082, 0), false);
        assert!(v.swapped);
        let d = v.disagreement(Some(0), Source::Current).expect("told");
        assert!(
            d.contains("not promoted (the kernel's ports say promoted)"),
            "{d}"
        );
        // Agreeing copies say nothing.
        let v = start_values(Some(&live), Some(0), &svc(8081, 8082, 0), true);
        assert_eq!(v.disagreement(Some(0), Source::Current), None);
        // Ports changed in the configuration: the saved roles stand.
        let v = start_values(Some(&svc(9001, 9002, 0)), None, &svc(8081, 8082, 0), true);
        assert!(v.swapped);
    }
}
