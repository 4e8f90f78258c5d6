//! `[[interfaces]]`: where the programs attach, and with which ingress hook.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::Problems;
use crate::dataplane::Hook;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub hook: Hook,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    name: String,
    hook: Option<String>,
}

pub(super) fn validate(raw: Vec<RawInterface>, p: &mut Problems) -> Vec<InterfaceConfig> {
    let mut interfaces = Vec::new();
    let mut seen_ifaces = BTreeSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let f = |k: &str| format!("interfaces[{i}].{k}");
        if !valid_ifname(&r.name) {
            p.add(
                f("name"),
                format!(
                    "{:?} is not an interface name (1..=15 characters, no '/', ':' or spaces)",
                    r.name
                ),
            );
        } else if !seen_ifaces.insert(r.name.clone()) {
            p.add(f("name"), format!("{:?} is listed twice", r.name));
        }
        let hook = match r.hook.as_deref().unwrap_or("tc").parse::<Hook>() {
            Ok(h) => h,
            Err(_) => {
                p.add(
                    f("hook"),
                    format!(
                        "{:?} is not a hook (expected tc, xdp or xdp-generic)",
                        r.hook.unwrap_or_default()
                    ),
                );
                Hook::Tc
            }
        };
        interfaces.push(InterfaceConfig { name: r.name, hook });
    }
    interfaces
}

fn valid_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && !s
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
        && s != "."
        && s != ".."
}
