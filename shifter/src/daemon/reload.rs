//! A configuration reload: first a pure diff of the running and the new configuration
//! ([`plan`]), then the actor applies it, in an order that keeps the data plane consistent:
//! removed services first (their ports become free), services whose identity changed are
//! removed before any is added again, then new services, then the interfaces.

use std::collections::BTreeMap;

use tracing::{error, info, warn};

use super::actor::Actor;
use crate::{
    api::types::ReloadReport,
    config::{Config, DaemonConfig, InterfaceConfig, ServiceSpec},
    dataplane::Hook,
    events::Cause,
    util::error_chain,
};

/// What a reload changes, computed without touching anything.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// `[daemon]` settings that changed in the file but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
    /// Services no longer in the file.
    pub removed: Vec<ServiceSpec>,
    /// Services whose settings did not change.
    pub unchanged: Vec<String>,
    /// Services whose settings changed, in the file's order.
    pub changed: Vec<Change>,
    /// Services new in the file.
    pub added: Vec<ServiceSpec>,
    /// Interfaces to detach: no longer configured, or with another hook.
    pub detach: Vec<String>,
    /// Interfaces to attach: new, or with another hook.
    pub attach: Vec<InterfaceConfig>,
}

/// One service whose settings changed.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Change {
    pub old: ServiceSpec,
    pub new: ServiceSpec,
    /// The weight in the state (the operator's or a rollout's), if any.
    pub state_weight: Option<u16>,
    /// The weight it gets: one edited in the file wins, otherwise the current one stays.
    pub weight: u16,
    /// Same identity (protocol, port, addresses): updated in place with one word write.
    /// Otherwise it is removed, and added again once every removal is done.
    pub in_place: bool,
    /// Its backend ports changed: an earlier promote's swap no longer applies.
    pub ports_changed: bool,
}

impl Change {
    /// The weight now: the state's, else the running configuration's.
    pub fn current(&self) -> u16 {
        self.state_weight.unwrap_or(self.old.service.config.weight)
    }
}

/// The `[daemon]` fields that differ between `old` and `new`.
fn restart_fields(old: &DaemonConfig, new: &DaemonConfig) -> Vec<&'static str> {
    [
        ("daemon.socket", old.socket != new.socket),
        ("daemon.socket_group", old.socket_group != new.socket_group),
        ("daemon.socket_mode", old.socket_mode != new.socket_mode),
        ("daemon.grant", old.grants != new.grants),
        ("daemon.read_access", old.read_access != new.read_access),
        ("daemon.notify", old.notify != new.notify),
        ("daemon.state_dir", old.state_dir != new.state_dir),
        ("daemon.bpffs_dir", old.bpffs_dir != new.bpffs_dir),
        (
            "daemon.flow_table_size",
            old.flow_table_size != new.flow_table_size,
        ),
        (
            "daemon.metrics_address",
            old.metrics_address != new.metrics_address,
        ),
        (
            "daemon.sweep_interval_secs",
            old.sweep_interval != new.sweep_interval,
        ),
    ]
    .into_iter()
    .filter_map(|(field, changed)| changed.then_some(field))
    .collect()
}

/// The diff of `old` (running, with the interfaces `held` and the state's `weights`) and `new`.
pub(super) fn plan(
    old: &Config,
    new: &Config,
    held: &BTreeMap<String, Hook>,
    weights: &BTreeMap<String, u16>,
) -> Plan {
    let mut p = Plan {
        needs_restart: restart_fields(&old.daemon, &new.daemon),
        ..Plan::default()
    };
    // The fleet agent is started with the daemon (its node name, lease and endpoints).
    if old.fleet != new.fleet {
        p.needs_restart.push("fleet");
    }
    p.removed = old
        .services
        .iter()
        .filter(|s| new.service(&s.name).is_none())
        .cloned()
        .collect();
    for spec in &new.services {
        let Some(o) = old.service(&spec.name) else {
            p.added.push(spec.clone());
            continue;
        };
        if o.service == spec.service {
            p.unchanged.push(spec.name.clone());
            continue;
        }
        let (oc, nc) = (&o.service.config, &spec.service.config);
        let state_weight = weights.get(&spec.name).copied();
        let current = state_weight.unwrap_or(oc.weight);
        p.changed.push(Change {
            old: o.clone(),
            new: spec.clone(),
            state_weight,
            weight: if oc.weight == nc.weight {
                current
            } else {
                nc.weight
            },
            in_place: o.service.same_identity(&spec.service),
            ports_changed: (oc.blue_port, oc.green_port) != (nc.blue_port, nc.green_port),
        });
    }
    for (name, hook) in held {
        let want = new.interfaces.iter().find(|i| &i.name == name);
        if want.is_none_or(|w| w.hook != *hook) {
            p.detach.push(name.clone());
        }
    }
    p.attach = new
        .interfaces
        .iter()
        .filter(|ic| held.get(&ic.name) != Some(&ic.hook))
        .cloned()
        .collect();
    p
}

impl Actor {
    /// Applies a new configuration (its `[daemon]` section only after a restart).
    pub(super) fn reload(&mut self, mut new: Config) -> ReloadReport {
        let held: BTreeMap<String, Hook> = self
            .dp
            .attachments()
            .into_iter()
            .map(|(n, a)| (n, a.hook))
            .collect();
        let plan = plan(&self.config, &new, &held, &self.state.weights);
        let mut report = ReloadReport::default();
        for field in &plan.needs_restart {
            warn!("reload: {field} changed; it takes effect after a restart");
            report.needs_restart.push((*field).to_owned());
        }
        new.daemon = self.config.daemon.clone();
        self.config = new;
        self.remove_services(&plan.removed, &mut report);
        report.unchanged = plan.unchanged;
        self.change_services(plan.changed, &mut report);
        self.add_services(&plan.added, &mut report);
        self.reattach(&plan.detach, &plan.attach, &mut report);
        self.sync_rollouts();
        for e in &report.errors {
            error!("reload: {e}");
        }
        info!(
            "configuration reloaded: added {:?}, removed {:?}, changed {:?}, unchanged {:?}",
            report.added, report.removed, report.changed, report.unchanged
        );
        self.persist();
        report
    }

    fn remove_services(&mut self, removed: &[ServiceSpec], report: &mut ReloadReport) {
        for spec in removed {
            match self.dp.remove_service(&spec.service) {
                Ok(()) => {
                    let w = self.state.weights.remove(&spec.name);
                    self.slots.remove(&spec.name);
                    self.state.swapped.remove(&spec.name);
                    self.record(&spec.name, w, None, Cause::Removed, None);
                    report.removed.push(spec.name.clone());
                }
                Err(e) => {
                    report
                        .errors
                        .push(format!("removing {}: {}", spec.name, error_chain(&e)))
                }
            }
        }
    }

    /// Updates changed services in place, or removes them; then adds the removed ones again.
    fn change_services(&mut self, changed: Vec<Change>, report: &mut ReloadReport) {
        let mut readd = Vec::new();
        for c in changed {
            if c.ports_changed {
                self.state.swapped.remove(&c.new.name);
            }
            if c.in_place {
                let current = Some(c.current());
                self.put_service(&c.new, c.weight, current, report);
            } else {
                self.slots.remove(&c.new.name);
                match self.dp.remove_service(&c.old.service) {
                    Ok(()) => readd.push(c),
                    Err(e) => {
                        report
                            .errors
                            .push(format!("updating {}: {}", c.new.name, error_chain(&e)))
                    }
                }
            }
        }
        for c in readd {
            let current = self.state.weights.get(&c.new.name).copied();
            self.put_service(&c.new, c.weight, current, report);
        }
    }

    /// Writes `spec` (roles as promoted) with `weight`; records the change from `current`.
    fn put_service(
        &mut self,
        spec: &ServiceSpec,
        weight: u16,
        current: Option<u16>,
        report: &mut ReloadReport,
    ) {
        let mut want = self.with_roles(&spec.name, &spec.service);
        want.config.weight = weight;
        match self.dp.set_service(&want) {
            Ok(slot) => {
                self.slots.insert(spec.name.clone(), slot);
                self.state.weights.insert(spec.name.clone(), weight);
                if current != Some(weight) {
                    self.record(&spec.name, current, Some(weight), Cause::Reload, None);
                }
                report.changed.push(spec.name.clone());
            }
            Err(e) => report
                .errors
                .push(format!("updating {}: {}", spec.name, error_chain(&e))),
        }
    }

    fn add_services(&mut self, added: &[ServiceSpec], report: &mut ReloadReport) {
        for spec in added {
            match self.dp.set_service(&spec.service) {
                Ok(slot) => {
                    self.slots.insert(spec.name.clone(), slot);
                    let w = spec.service.config.weight;
                    self.state.weights.insert(spec.name.clone(), w);
                    self.record(&spec.name, None, Some(w), Cause::Reload, None);
                    report.added.push(spec.name.clone());
                }
                Err(e) => report
                    .errors
                    .push(format!("adding {}: {}", spec.name, error_chain(&e))),
            }
        }
    }

    fn reattach(
        &mut self,
        detach: &[String],
        attach: &[InterfaceConfig],
        report: &mut ReloadReport,
    ) {
        for name in detach {
            match self.dp.detach(name) {
                Ok(()) => report.interfaces_detached.push(name.clone()),
                Err(e) => report
                    .errors
                    .push(format!("detaching {name}: {}", error_chain(&e))),
            }
        }
        for ic in attach {
            match self.dp.attach(&ic.name, ic.hook) {
                Ok(_) => report.interfaces_attached.push(ic.name.clone()),
                Err(e) => report
                    .errors
                    .push(format!("attaching {}: {}", ic.name, error_chain(&e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).expect("valid test configuration")
    }

    const BASE: &str = "[[interfaces]]\nname = \"eth0\"\n\
        [[services]]\nname = \"web\"\nport = 80\nblue_port = 8081\ngreen_port = 8082\nweight = 10\n\
        [[services]]\nname = \"dns\"\nprotocol = \"udp\"\nport = 53\nblue_port = 5301\ngreen_port = 5302\n";

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let c = config(BASE);
        let held = BTreeMap::from([("eth0".to_owned(), Hook::Tc)]);
        let p = plan(&c, &c, &held, &BTreeMap::new());
        assert_eq!(p.unchanged, ["web", "dns"]);
        assert!(p.changed.is_empty() && p.added.is_empty() && p.removed.is_empty());
        assert!(p.detach.is_empty() && p.attach.is_empty() && p.needs_restart.is_empty());
    }

    #[test]
    fn the_operators_weight_stays_unless_the_file_edits_it() {
        let old = config(BASE);
        let weights = BTreeMap::from([("web".to_owned(), 4200)]);
        // Only the affinity changes: the operator's 42 % stays.
        let new =
            config(&BASE.replacen("weight = 10\n", "weight = 10\naffinity = \"client\"\n", 1));
        let p = plan(&old, &new, &BTreeMap::new(), &weights);
        assert_eq!(p.changed.len(), 1);
        let c = &p.changed[0];
        assert_eq!(
            (c.weight, c.current(), c.in_place, c.ports_changed),
            (4200, 4200, true, false)
        );
        // The file's weight changes: it wins.
        let new = config(&BASE.replacen("weight = 10", "weight = 20", 1));
        let c = &plan(&old, &new, &BTreeMap::new(), &weights).changed[0];
        assert_eq!(c.weight, 2000);
    }

    #[test]
    fn new_identity_is_replaced_and_ports_drop_the_swap() {
        let old = config(BASE);
        let new = config(
            &BASE
                .replacen("port = 80", "port = 81", 1)
                .replacen("8082", "8083", 1),
        );
        let c = &plan(&old, &new, &BTreeMap::new(), &BTreeMap::new()).changed[0];
        assert!(!c.in_place && c.ports_changed);
        assert_eq!(c.weight, 1000);
    }

    #[test]
    fn services_and_interfaces_come_and_go() {
        let old = config(BASE);
        let new = config(
            "[daemon]\nflow_table_size = 1024\n[[interfaces]]\nname = \"eth0\"\nhook = \"xdp\"\n\
             [[interfaces]]\nname = \"eth1\"\n\
             [[services]]\nname = \"ssh\"\nport = 22\nblue_port = 2201\ngreen_port = 2202\n",
        );
        let held = BTreeMap::from([("eth0".to_owned(), Hook::Tc)]);
        let p = plan(&old, &new, &held, &BTreeMap::new());
        let names = |v: &[ServiceSpec]| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&p.removed), ["web", "dns"]);
        assert_eq!(names(&p.added), ["ssh"]);
        assert_eq!(p.detach, ["eth0"]);
        let attach: Vec<_> = p.attach.iter().map(|i| (i.name.as_str(), i.hook)).collect();
        assert_eq!(attach, [("eth0", Hook::Xdp), ("eth1", Hook::Tc)]);
        assert_eq!(p.needs_restart, ["daemon.flow_table_size"]);
    }

    #[test]
    fn a_changed_fleet_section_needs_a_restart() {
        let fleet = "[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\nnode = \"h1\"\n";
        let with = config(&format!("{BASE}\n{fleet}"));
        let p = plan(&config(BASE), &with, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(p.needs_restart, ["fleet"]);
        let p = plan(&with, &with, &BTreeMap::new(), &BTreeMap::new());
        assert!(p.needs_restart.is_empty());
    }
}
