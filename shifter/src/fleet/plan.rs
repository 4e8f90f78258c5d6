//! The coordinator's logic, pure: waves resolved from the registered hosts, and one
//! decision per tick from the rollout document and what etcd says about the hosts. No
//! clock, no I/O: the coordinator reads, calls [`decide`], and writes the result fenced.

use std::collections::{BTreeMap, BTreeSet};

use super::schema::{
    Action, Desired, HostPhase, HostState, NodeInfo, OnLost, Ops, Phase, Report, RolloutDoc,
    WaveSelector,
};

/// Picks the hosts of every wave among the registered hosts that serve `service`. Hosts no
/// wave picks are left alone. Every wave must pick at least one host.
pub fn resolve_waves(
    service: &str,
    waves: &[WaveSelector],
    nodes: &BTreeMap<String, NodeInfo>,
) -> Result<Vec<Vec<String>>, String> {
    let candidates: Vec<&String> = nodes
        .iter()
        .filter(|(_, n)| n.services.iter().any(|s| s == service))
        .map(|(name, _)| name)
        .collect();
    if candidates.is_empty() {
        return Err(format!("no registered host serves {service}"));
    }
    if waves.is_empty() {
        return Err("a fleet rollout needs at least one wave".into());
    }
    let total = candidates.len();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for (i, sel) in waves.iter().enumerate() {
        let remaining: Vec<&String> = candidates
            .iter()
            .copied()
            .filter(|h| !taken.contains(*h))
            .collect();
        let wave: Vec<String> = match sel {
            WaveSelector::Hosts(list) => {
                for h in list {
                    if !candidates.contains(&h) {
                        return Err(format!(
                            "wave {}: host {h} is not registered with {service}",
                            i + 1
                        ));
                    }
                    if taken.contains(h) {
                        return Err(format!("wave {}: host {h} is already in a wave", i + 1));
                    }
                }
                list.clone()
            }
            WaveSelector::Labels(want) => remaining
                .iter()
                .filter(|h| {
                    let labels = &nodes[**h].labels;
                    want.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
                .map(|h| (*h).clone())
                .collect(),
            WaveSelector::Count(n) => remaining
                .iter()
                .take(*n as usize)
                .map(|h| (*h).clone())
                .collect(),
            WaveSelector::Percent(p) => {
                let n = (total * (*p as usize)).div_ceil(100).max(1);
                remaining.iter().take(n).map(|h| (*h).clone()).collect()
            }
            WaveSelector::Rest => remaining.iter().map(|h| (*h).clone()).collect(),
        };
        if wave.is_empty() {
            return Err(format!("wave {} selects no host", i + 1));
        }
        taken.extend(wave.iter().cloned());
        out.push(wave);
    }
    Ok(out)
}

/// What etcd says right now, besides the rollout document.
pub struct View<'a> {
    pub now_ms: u64,
    /// Hosts whose heartbeat lease is alive.
    pub alive: &'a BTreeMap<String, NodeInfo>,
    /// The hosts' reports for the rollout's service (any rollout id; others are ignored).
    pub reports: &'a BTreeMap<String, Report>,
    pub ops: &'a Ops,
}

/// One tick's result.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The new document, when it changed.
    pub doc: Option<RolloutDoc>,
    /// Desired states to write, by host.
    pub desired: Vec<(String, Desired)>,
}

/// Decides one tick of a fleet rollout.
pub fn decide(doc: &RolloutDoc, view: &View<'_>) -> Decision {
    let mut d = doc.clone();
    let mut desired = Vec::new();
    let mut t = Tick {
        doc: &mut d,
        view,
        desired: &mut desired,
    };
    t.run();
    let changed = d != *doc;
    if changed {
        d.updated_ms = view.now_ms;
    }
    Decision {
        doc: changed.then_some(d),
        desired,
    }
}

struct Tick<'a, 'v> {
    doc: &'a mut RolloutDoc,
    view: &'a View<'v>,
    desired: &'a mut Vec<(String, Desired)>,
}

impl Tick<'_, '_> {
    fn log(&mut self, text: String) {
        self.doc.history.push((self.view.now_ms, text));
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.doc.phase != phase {
            let text = match phase.reason() {
                Some(r) => format!("{}: {r}", phase.name()),
                None => phase.name().to_owned(),
            };
            self.doc.phase = phase;
            self.log(text);
        }
    }

    /// This rollout's report of a host.
    fn report(&self, host: &str) -> Option<&Report> {
        self.view
            .reports
            .get(host)
            .filter(|r| r.rollout == self.doc.id)
    }

    fn alive(&self, host: &str) -> bool {
        self.view.alive.contains_key(host)
    }

    fn run(&mut self) {
        if self.doc.phase.is_terminal() {
            return;
        }
        if self.doc.phase == Phase::Pending {
            match resolve_waves(
                &self.doc.spec.service,
                &self.doc.spec.waves,
                self.view.alive,
            ) {
                Ok(waves) => {
                    self.doc.hosts = waves
                        .iter()
                        .flatten()
                        .map(|h| (h.clone(), HostPhase::Pending))
                        .collect();
                    let text = waves
                        .iter()
                        .enumerate()
                        .map(|(i, w)| format!("wave {}: {}", i + 1, w.join(",")))
                        .collect::<Vec<_>>()
                        .join("; ");
                    self.doc.waves = waves;
                    self.doc.wave = 0;
                    self.doc.wave_started_ms = self.view.now_ms;
                    self.log(format!("planned {text}"));
                    self.set_phase(Phase::Running);
                }
                Err(reason) => {
                    self.set_phase(Phase::Failed { reason });
                    return;
                }
            }
        }
        if matches!(self.doc.phase, Phase::RollingBack { .. }) {
            self.roll_back();
            return;
        }
        if let Some(reason) = self.why_roll_back() {
            self.set_phase(Phase::RollingBack { reason });
            self.roll_back();
            return;
        }
        if let Some(reason) = self.why_pause() {
            self.set_phase(Phase::Paused { reason });
            return;
        }
        match self.doc.phase {
            Phase::Paused { .. } => self.set_phase(Phase::Running),
            Phase::WaitingApproval => {
                if self.view.ops.approved.contains(&self.doc.wave) {
                    let text = format!("wave {} approved", self.doc.wave + 1);
                    self.log(text);
                    self.doc.wave_started_ms = self.view.now_ms;
                    self.set_phase(Phase::Running);
                } else {
                    return;
                }
            }
            _ => {}
        }
        self.advance();
    }

    /// Updates the hosts from their reports; a reason to roll the fleet back, if any.
    fn why_roll_back(&mut self) -> Option<String> {
        if self.view.ops.abort {
            return Some("aborted by the operator".into());
        }
        let hosts: Vec<String> = self.doc.hosts.keys().cloned().collect();
        let mut failures = Vec::new();
        for h in hosts {
            let phase = self.doc.hosts[&h];
            let Some(r) = self.report(&h).cloned() else {
                continue;
            };
            if phase == HostPhase::Ramping && r.action == "ramp" {
                match r.state {
                    HostState::Completed if r.weight_bp == shifter_common::WEIGHT_MAX => {
                        self.doc.hosts.insert(h.clone(), HostPhase::Done);
                        self.log(format!("{h}: completed"));
                    }
                    HostState::RolledBack | HostState::Error => {
                        self.doc.hosts.insert(h.clone(), HostPhase::Failed);
                        let detail = r.detail.unwrap_or_else(|| "rolled back".into());
                        self.log(format!("{h}: failed: {detail}"));
                        failures.push(format!("{h}: {detail}"));
                    }
                    _ => {}
                }
            }
        }
        let failed = self
            .doc
            .hosts
            .values()
            .filter(|p| **p == HostPhase::Failed)
            .count();
        if failed > self.doc.spec.failures_tolerated as usize {
            let first = failures.first().cloned().unwrap_or_else(|| {
                format!(
                    "{failed} failed host(s), {} tolerated",
                    self.doc.spec.failures_tolerated
                )
            });
            return Some(format!("host failed its gates ({first})"));
        }
        let lost = self.lost();
        if !lost.is_empty() && self.doc.spec.on_lost == OnLost::Abort {
            return Some(format!("host(s) lost: {}", lost.join(",")));
        }
        let deadline = self.doc.spec.wave_deadline_ms;
        if deadline > 0
            && self.doc.phase == Phase::Running
            && self.view.now_ms.saturating_sub(self.doc.wave_started_ms) > deadline
        {
            return Some(format!(
                "wave {} missed its deadline of {deadline} ms",
                self.doc.wave + 1
            ));
        }
        None
    }

    /// Hosts of the current wave that should be working but have no heartbeat.
    fn lost(&self) -> Vec<String> {
        let Some(wave) = self.doc.waves.get(self.doc.wave) else {
            return Vec::new();
        };
        wave.iter()
            .filter(|h| {
                matches!(
                    self.doc.hosts.get(*h),
                    Some(HostPhase::Ramping | HostPhase::Pending)
                ) && !self.alive(h)
            })
            .cloned()
            .collect()
    }

    fn why_pause(&self) -> Option<String> {
        let lost = self.lost();
        if !lost.is_empty() {
            return Some(format!("host(s) lost: {}", lost.join(",")));
        }
        let healthy = self
            .doc
            .hosts
            .iter()
            .filter(|(h, p)| **p != HostPhase::Failed && self.alive(h))
            .count();
        let min = self.doc.spec.min_healthy as usize;
        if healthy < min {
            return Some(format!("{healthy} healthy host(s), at least {min} needed"));
        }
        if self.view.ops.pause {
            return Some("paused by the operator".into());
        }
        None
    }

    /// Moves the current wave on: finished wave -> next wave (or done); starts hosts.
    fn advance(&mut self) {
        loop {
            let wave = self.doc.waves[self.doc.wave].clone();
            let finished = wave
                .iter()
                .all(|h| matches!(self.doc.hosts[h], HostPhase::Done | HostPhase::Failed));
            if !finished {
                break;
            }
            self.log(format!("wave {} done", self.doc.wave + 1));
            if self.doc.wave + 1 == self.doc.waves.len() {
                self.set_phase(Phase::Completed);
                return;
            }
            self.doc.wave += 1;
            self.doc.wave_started_ms = self.view.now_ms;
            if self.doc.spec.approve_waves && !self.view.ops.approved.contains(&self.doc.wave) {
                self.set_phase(Phase::WaitingApproval);
                return;
            }
        }
        let wave = self.doc.waves[self.doc.wave].clone();
        let ramping = wave
            .iter()
            .filter(|h| self.doc.hosts[*h] == HostPhase::Ramping)
            .count();
        let max = match self.doc.spec.max_parallel {
            0 => usize::MAX,
            n => n as usize,
        };
        let mut free = max.saturating_sub(ramping);
        for h in wave {
            if free == 0 {
                break;
            }
            if self.doc.hosts[&h] == HostPhase::Pending && self.alive(&h) {
                self.doc.hosts.insert(h.clone(), HostPhase::Ramping);
                self.desired.push((
                    h.clone(),
                    Desired {
                        rollout: self.doc.id.clone(),
                        action: Action::Ramp {
                            steps_bp: self.doc.spec.steps_bp.clone(),
                            hold_ms: self.doc.spec.hold_ms,
                        },
                    },
                ));
                self.log(format!("{h}: ramp (wave {})", self.doc.wave + 1));
                free -= 1;
            }
        }
    }

    /// Rolls back every touched host of the current and earlier waves; later waves are
    /// never touched. Done when every touched host that is alive reports green at 0.
    fn roll_back(&mut self) {
        let touched: Vec<String> = self.doc.waves[..=self.doc.wave.min(self.doc.waves.len() - 1)]
            .iter()
            .flatten()
            .filter(|h| self.doc.hosts[*h] != HostPhase::Pending)
            .cloned()
            .collect();
        let mut waiting = Vec::new();
        for h in &touched {
            match self.doc.hosts[h] {
                HostPhase::Ramping | HostPhase::Done | HostPhase::Failed => {
                    self.doc.hosts.insert(h.clone(), HostPhase::RollingBack);
                    self.desired.push((
                        h.clone(),
                        Desired {
                            rollout: self.doc.id.clone(),
                            action: Action::Rollback,
                        },
                    ));
                    self.log(format!("{h}: roll back"));
                    waiting.push(h.clone());
                }
                HostPhase::RollingBack => {
                    let reverted = self
                        .report(h)
                        .is_some_and(|r| r.action == "rollback" && r.state == HostState::Reverted);
                    if reverted {
                        self.doc.hosts.insert(h.clone(), HostPhase::RolledBack);
                        self.log(format!("{h}: rolled back"));
                    } else if self.alive(h) {
                        waiting.push(h.clone());
                    }
                }
                HostPhase::Pending | HostPhase::RolledBack => {}
            }
        }
        if waiting.is_empty() {
            let reason = self.doc.phase.reason().unwrap_or("rolled back").to_owned();
            let unconfirmed: Vec<&String> = touched
                .iter()
                .filter(|h| self.doc.hosts[*h] == HostPhase::RollingBack)
                .collect();
            let reason = if unconfirmed.is_empty() {
                reason
            } else {
                let list: Vec<&str> = unconfirmed.iter().map(|s| s.as_str()).collect();
                format!(
                    "{reason}; not confirmed by lost host(s) {} (their desired state says rollback)",
                    list.join(",")
                )
            };
            self.set_phase(Phase::RolledBack { reason });
        }
    }
}

#[cfg(test)]
mod tests;
