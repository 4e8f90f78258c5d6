//! The kernel-signal gate: green's refused connections (socket dispatch: its fallbacks too)
//! and resets over a step, compared with
//! a bound and with blue's over the same step. Pure arithmetic on counter snapshots.

use serde::{Deserialize, Serialize};
use shifter_common::{BackendCounters, SocketCounters};

use crate::config::GateSettings;

/// The counters of one backend the gate reads (cumulative, as the data plane keeps them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signals {
    pub new_flows: u64,
    /// RSTs from the backend answering a SYN.
    pub refusals: u64,
    /// RSTs on established connections.
    pub resets: u64,
}

impl Signals {
    /// One backend's signals from its kernel counters and its socket-dispatch counters. A
    /// fallback (a connection decided for this backend that the other one took, because
    /// this one had no listener) is a refusal the client never saw: it counts as one of
    /// this backend's new connections and as refused, so a green that stops listening fails
    /// the gate as one that refuses.
    pub fn of(c: &BackendCounters, s: &SocketCounters) -> Self {
        Self {
            new_flows: c.new_flows + s.connections + s.fallbacks,
            refusals: c.refusals + s.fallbacks,
            resets: c.resets + s.resets,
        }
    }
}

impl From<&BackendCounters> for Signals {
    fn from(c: &BackendCounters) -> Self {
        Self::of(c, &SocketCounters::default())
    }
}

impl Signals {
    /// `self - base`. A counter below its base means the counters were reset (maps
    /// recreated): then the whole current value counts.
    pub fn since(&self, base: &Self) -> Self {
        if self.new_flows < base.new_flows
            || self.refusals < base.refusals
            || self.resets < base.resets
        {
            return *self;
        }
        Self {
            new_flows: self.new_flows - base.new_flows,
            refusals: self.refusals - base.refusals,
            resets: self.resets - base.resets,
        }
    }
}

/// One snapshot of both backends' counters (`DataPlane::counters(slot)`, blue first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalSample {
    pub blue: Signals,
    pub green: Signals,
}

impl SignalSample {
    /// Both backends' signals (see `Signals::of`), blue first.
    pub fn of(c: &[BackendCounters; 2], s: &[SocketCounters; 2]) -> Self {
        Self {
            blue: Signals::of(&c[0], &s[0]),
            green: Signals::of(&c[1], &s[1]),
        }
    }
}

impl From<&[BackendCounters; 2]> for SignalSample {
    fn from(c: &[BackendCounters; 2]) -> Self {
        Self {
            blue: (&c[0]).into(),
            green: (&c[1]).into(),
        }
    }
}

/// The gate's answer for a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateResult {
    Pass(String),
    Fail(String),
    /// Not enough evidence yet (the step keeps holding).
    NoVerdict(String),
}

/// `part / whole` in parts per million; `whole == 0` counts as 0 unless `part > 0`.
pub fn ratio_ppm(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return if part == 0 { 0 } else { 1_000_000 };
    }
    ((u128::from(part) * 1_000_000) / u128::from(whole)).min(u128::from(u64::MAX)) as u64
}

/// Percent text of a ppm value (`12345` -> `1.23%`).
pub fn ppm_text(ppm: u64) -> String {
    format!("{}.{:02}%", ppm / 10_000, (ppm % 10_000) / 100)
}

/// Judges a step from its baseline sample to the current one.
pub fn evaluate(gate: &GateSettings, baseline: &SignalSample, now: &SignalSample) -> GateResult {
    let green = now.green.since(&baseline.green);
    let blue = now.blue.since(&baseline.blue);
    if green.new_flows < gate.min_green_flows {
        return GateResult::NoVerdict(format!(
            "green had {} new connections in this step; the gate needs {}",
            green.new_flows, gate.min_green_flows
        ));
    }
    let checks = [
        (
            "refusal",
            green.refusals,
            blue.refusals,
            gate.max_refusal_ppm,
            gate.refusal_margin_ppm,
        ),
        (
            "reset",
            green.resets,
            blue.resets,
            gate.max_reset_ppm,
            gate.reset_margin_ppm,
        ),
    ];
    let mut summary = Vec::new();
    for (what, g, b, max, margin) in checks {
        let g_ppm = ratio_ppm(g, green.new_flows);
        let b_ppm = ratio_ppm(b, blue.new_flows);
        if g_ppm > u64::from(max) {
            return GateResult::Fail(format!(
                "green's {what} ratio {} ({g} of {} new connections) is above the bound {}",
                ppm_text(g_ppm),
                green.new_flows,
                ppm_text(max.into())
            ));
        }
        if g_ppm > b_ppm + u64::from(margin) {
            return GateResult::Fail(format!(
                "green's {what} ratio {} ({g} of {}) exceeds blue's {} ({b} of {}) by more than {}",
                ppm_text(g_ppm),
                green.new_flows,
                ppm_text(b_ppm),
                blue.new_flows,
                ppm_text(margin.into())
            ));
        }
        summary.push(format!(
            "{what}s green {} blue {}",
            ppm_text(g_ppm),
            ppm_text(b_ppm)
        ));
    }
    GateResult::Pass(format!(
        "{} new green connections; {}",
        green.new_flows,
        summary.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(new_flows: u64, refusals: u64, resets: u64) -> Signals {
        Signals {
            new_flows,
            refusals,
            resets,
        }
    }

    fn sample(blue: Signals, green: Signals) -> SignalSample {
        SignalSample { blue, green }
    }

    #[test]
    fn a_socket_fallback_is_a_refused_new_connection_of_the_chosen_backend() {
        let c = BackendCounters {
            new_flows: 10,
            refusals: 1,
            resets: 2,
            ..BackendCounters::default()
        };
        let sockets = SocketCounters {
            connections: 30,
            fallbacks: 5,
            resets: 1,
            ..SocketCounters::default()
        };
        assert_eq!(Signals::of(&c, &sockets), s(45, 6, 3));
        assert_eq!(Signals::from(&c), s(10, 1, 2));
        // Green listens nowhere: every connection decided for it fell back to blue, and
        // the gate sees a green that refuses them all.
        let g = GateSettings {
            max_refusal_ppm: 20_000,
            refusal_margin_ppm: 10_000,
            max_reset_ppm: 50_000,
            reset_margin_ppm: 20_000,
            min_green_flows: 10,
        };
        let none = SocketCounters::default();
        let base = SignalSample::of(&[BackendCounters::default(); 2], &[none, none]);
        let down = SocketCounters {
            fallbacks: 40,
            ..SocketCounters::default()
        };
        let blue = SocketCounters {
            connections: 80,
            ..SocketCounters::default()
        };
        let now = SignalSample::of(&[BackendCounters::default(); 2], &[blue, down]);
        assert!(matches!(evaluate(&g, &base, &now), GateResult::Fail(_)));
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio_ppm(0, 0), 0);
        assert_eq!(ratio_ppm(1, 0), 1_000_000);
        assert_eq!(ratio_ppm(1, 4), 250_000);
        assert_eq!(ppm_text(12_345), "1.23%");
        assert_eq!(ppm_text(1_000_000), "100.00%");
    }

    #[test]
    fn gate_cases() {
        let g = GateSettings {
            max_refusal_ppm: 20_000,
            refusal_margin_ppm: 10_000,
            max_reset_ppm: 50_000,
            reset_margin_ppm: 20_000,
            min_green_flows: 10,
        };
        let base = sample(s(1000, 5, 5), s(100, 0, 0));
        // Healthy step: 1 refusal of 100 (1%), blue 1%.
        let ok = sample(s(2000, 15, 10), s(200, 1, 0));
        assert!(matches!(evaluate(&g, &base, &ok), GateResult::Pass(_)));
        // Too few green flows.
        let few = sample(s(2000, 15, 10), s(105, 0, 0));
        assert_eq!(
            evaluate(&g, &base, &few),
            GateResult::NoVerdict(
                "green had 5 new connections in this step; the gate needs 10".into()
            )
        );
        // Above the absolute bound: 3 of 100.
        let bad = sample(s(2000, 15, 10), s(200, 3, 0));
        match evaluate(&g, &base, &bad) {
            GateResult::Fail(r) => assert_eq!(
                r,
                "green's refusal ratio 3.00% (3 of 100 new connections) is above the bound 2.00%"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
        // Under the bound but more than blue + margin: green 4% resets, blue 0.5%, margin 2%.
        let worse = sample(s(2000, 5, 10), s(200, 0, 4));
        match evaluate(&g, &base, &worse) {
            GateResult::Fail(r) => assert!(r.contains("exceeds blue's 0.50%"), "{r}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        // Counters went backwards (maps recreated): the current values count as a whole.
        let reset = sample(s(10, 0, 0), s(50, 5, 0));
        assert!(matches!(evaluate(&g, &base, &reset), GateResult::Fail(_)));
    }
}
