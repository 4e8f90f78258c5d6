//! `[services.rollout]`: the default ramp of `rollout start` and the bounds of its
//! kernel-signal gate. Percentages are green's share of new connections; problems are named
//! with their full field (`services[0].rollout.steps[2]`).
//!
//! ```toml
//! [services.rollout]
//! steps = [1, 5, { weight = 25, approve = true }, 50, { weight = 100, hold = "2m" }]
//! hold = "30s"
//! max_refusal_percent = 2      # gate: green's refused / new connections over a step
//! refusal_margin_percent = 1   # ... and at most blue's ratio + this margin
//! max_reset_percent = 5
//! reset_margin_percent = 2
//! min_green_flows = 0          # fewer new green flows in a step: keep holding
//! ```

use std::{fmt, marker::PhantomData, time::Duration};

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, Visitor},
};
use shifter_common::WEIGHT_MAX;

use super::{FieldError, Number, Problems, duration};
use crate::model::bp_text;

/// Default ramp, in basis points: 1, 5, 25, 50, 100 %.
pub const DEFAULT_STEPS_BP: [u16; 5] = [100, 500, 2500, 5000, 10_000];
/// Default hold time of each step.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(30);

/// One step as written: a percentage, or a table with its own hold and approval.
#[derive(Clone, Debug, PartialEq)]
pub enum RawStep {
    Weight(Number),
    Table(RawStepTable),
}

/// `{ weight = 25, hold = "2m", approve = true }` as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStepTable {
    pub weight: Number,
    pub hold: Option<String>,
    #[serde(default)]
    pub approve: bool,
}

impl<'de> Deserialize<'de> for RawStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarOrTable::new(
            "a percentage or a table like { weight = 25, hold = \"2m\", approve = true }",
            |n| Some(Self::Weight(n)),
            Self::Table,
        ))
    }
}

/// `rollback` as written: `"immediate"`, or a table of falling steps ending at 0.
#[derive(Clone, Debug, PartialEq)]
pub enum RawRollback {
    Word(String),
    Gradual(RawGradual),
}

impl<'de> Deserialize<'de> for RawRollback {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarOrTable::new(
            "\"immediate\" or a table like { steps = [50, 10, 0], hold = \"10s\" }",
            |n| match n {
                Number::Text(word) => Some(Self::Word(word)),
                Number::Int(_) | Number::Float(_) => None,
            },
            Self::Gradual,
        ))
    }
}

/// `rollback = { steps = [50, 10, 0], hold = "10s" }` as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGradual {
    pub steps: Vec<Number>,
    pub hold: Option<String>,
}

/// Reads a setting written either as a scalar or as a table. Serde's untagged enums would
/// answer a misspelt key in the table with "data did not match any variant" (or, on a
/// variant without `deny_unknown_fields`, silently drop it: `aprove = true` would lose the
/// approval); this gives the table's own error, naming the key and the ones expected.
struct ScalarOrTable<T, R, S, M> {
    expecting: &'static str,
    scalar: S,
    table: M,
    /// The value made (`T`) and the table read (`R`).
    _types: PhantomData<fn(R) -> T>,
}

impl<T, R, S, M> ScalarOrTable<T, R, S, M> {
    fn new(expecting: &'static str, scalar: S, table: M) -> Self {
        Self {
            expecting,
            scalar,
            table,
            _types: PhantomData,
        }
    }

    fn scalar<E: de::Error>(self, n: Number, what: de::Unexpected<'_>) -> Result<T, E>
    where
        S: FnOnce(Number) -> Option<T>,
    {
        (self.scalar)(n).ok_or_else(|| E::invalid_type(what, &self.expecting))
    }
}

impl<'de, T, R, S, M> Visitor<'de> for ScalarOrTable<T, R, S, M>
where
    S: FnOnce(Number) -> Option<T>,
    M: FnOnce(R) -> T,
    R: Deserialize<'de>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.scalar(Number::Int(v), de::Unexpected::Signed(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        match i64::try_from(v) {
            Ok(i) => self.visit_i64(i),
            Err(_) => Err(E::invalid_value(
                de::Unexpected::Unsigned(v),
                &self.expecting,
            )),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.scalar(Number::Float(v), de::Unexpected::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        self.scalar(Number::Text(v.to_owned()), de::Unexpected::Str(v))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        R::deserialize(de::value::MapAccessDeserializer::new(map)).map(self.table)
    }
}

/// `[services.rollout]` as written. Percentages are green's share of new connections.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    pub steps: Option<Vec<RawStep>>,
    pub hold: Option<String>,
    pub max_refusal_percent: Option<Number>,
    pub refusal_margin_percent: Option<Number>,
    pub max_reset_percent: Option<Number>,
    pub reset_margin_percent: Option<Number>,
    pub min_green_flows: Option<i64>,
    /// `[[services.rollout.analysis]]`
    pub analysis: Option<Vec<super::analysis::RawAnalysis>>,
    /// `[[services.rollout.webhook]]`
    pub webhook: Option<Vec<super::webhooks::RawWebhook>>,
    /// `rollback = "immediate" | { steps = [50, 10, 0], hold = "10s" }`
    pub rollback: Option<RawRollback>,
}

/// How a soft failure (an operator's abort, a confirm webhook's limit, an analysis's
/// inconclusive limit) rolls back. A failed health check, a failed gate and a failed
/// analysis always roll back at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RollbackPolicy {
    /// Weight 0 at once; the inconclusive limit pauses (it is no failure).
    #[default]
    Immediate,
    /// Through falling weights (basis points, the last 0), each held `hold`; the
    /// inconclusive limit rolls back this way too instead of pausing.
    Gradual { steps_bp: Vec<u16>, hold: Duration },
}

/// One step of a ramp: set green's weight, hold it, check the gates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub weight_bp: u16,
    pub hold: Duration,
    /// After the hold and passing gates, wait for `rollout approve` before moving on.
    pub approve: bool,
}

/// Bounds of the kernel-signal gate. Ratios are in parts per million of green's new flows
/// over the step (`refusals / new_flows`, `resets / new_flows`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSettings {
    pub max_refusal_ppm: u32,
    pub refusal_margin_ppm: u32,
    pub max_reset_ppm: u32,
    pub reset_margin_ppm: u32,
    /// Below this many new green flows in a step the gate has no verdict yet and the step
    /// keeps holding.
    pub min_green_flows: u64,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            max_refusal_ppm: 20_000,
            refusal_margin_ppm: 10_000,
            max_reset_ppm: 50_000,
            reset_margin_ppm: 20_000,
            min_green_flows: 0,
        }
    }
}

/// Validated rollout settings of a service: the defaults of `rollout start`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSettings {
    pub steps: Vec<Step>,
    /// Hold of steps that do not name their own (and of `--hold` on the command line).
    pub hold: Duration,
    pub gate: GateSettings,
    /// Prometheus query gates (`[[services.rollout.analysis]]`).
    #[serde(default)]
    pub analysis: Vec<super::analysis::AnalysisSettings>,
    /// Webhooks (`[[services.rollout.webhook]]`), at most one of each kind.
    #[serde(default)]
    pub webhooks: Vec<super::webhooks::WebhookSettings>,
    /// How soft failures roll back.
    #[serde(default)]
    pub rollback: RollbackPolicy,
}

impl RolloutSettings {
    /// The webhook of `kind`, if configured.
    pub fn webhook(
        &self,
        kind: super::webhooks::HookKind,
    ) -> Option<&super::webhooks::WebhookSettings> {
        self.webhooks.iter().find(|h| h.kind == kind)
    }
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self {
            steps: DEFAULT_STEPS_BP
                .iter()
                .map(|&weight_bp| Step {
                    weight_bp,
                    hold: DEFAULT_HOLD,
                    approve: false,
                })
                .collect(),
            hold: DEFAULT_HOLD,
            gate: GateSettings::default(),
            analysis: Vec::new(),
            webhooks: Vec::new(),
            rollback: RollbackPolicy::Immediate,
        }
    }
}

/// Longest hold accepted for one step.
pub const MAX_HOLD: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most steps in one ramp.
pub const MAX_STEPS: usize = 100;

/// Checks a ramp: 1..=`MAX_STEPS` steps, weights strictly rising within 1..=10000 bp,
/// holds at most `MAX_HOLD`. Problems are named `steps[i]`.
pub fn check_steps(steps: &[Step]) -> Result<(), Vec<FieldError>> {
    let mut p = Problems::new("");
    check_steps_into(&mut p, steps);
    p.finish(())
}

fn check_steps_into(p: &mut Problems, steps: &[Step]) {
    if steps.is_empty() {
        p.add("steps", "a ramp needs at least one step");
    }
    if steps.len() > MAX_STEPS {
        p.add(
            "steps",
            format!("{} steps; at most {MAX_STEPS} are allowed", steps.len()),
        );
    }
    let mut prev: Option<u16> = None;
    for (i, s) in steps.iter().enumerate() {
        let f = format!("steps[{i}]");
        if s.weight_bp == 0 || s.weight_bp > WEIGHT_MAX {
            p.add(
                &f,
                format!("{} is outside 0.01..=100%", bp_text(s.weight_bp)),
            );
        } else if let Some(prev) = prev
            && s.weight_bp <= prev
        {
            p.add(
                &f,
                format!(
                    "{} is not above the previous step ({})",
                    bp_text(s.weight_bp),
                    bp_text(prev)
                ),
            );
        }
        if s.hold > MAX_HOLD {
            p.add(
                &f,
                format!(
                    "hold {} is above 7 days",
                    humantime::format_duration(s.hold)
                ),
            );
        }
        prev = Some(s.weight_bp);
    }
}

impl RolloutSettings {
    /// Validates `raw`; problems are named `prefix.field`.
    pub fn from_raw(raw: &RawRollout, prefix: &str) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::new(prefix);
        let hold = duration(&mut p, "hold", raw.hold.as_deref(), DEFAULT_HOLD);
        if hold > MAX_HOLD {
            p.add(
                "hold",
                format!("{} is above 7 days", humantime::format_duration(hold)),
            );
        }
        let steps = steps(&mut p, raw.steps.as_deref(), hold);
        let gate = gate(&mut p, raw);
        let analysis = super::analysis::validate(&mut p, raw.analysis.as_deref().unwrap_or(&[]));
        let webhooks =
            super::webhooks::validate_hooks(&mut p, raw.webhook.as_deref().unwrap_or(&[]));
        let rollback = rollback(&mut p, raw.rollback.as_ref(), hold);
        p.finish(Self {
            steps,
            hold,
            gate,
            analysis,
            webhooks,
            rollback,
        })
    }
}

/// The steps as written (`steps[i]`, each a percentage or a table), or the defaults with
/// `hold`.
fn steps(p: &mut Problems, steps: Option<&[RawStep]>, hold: Duration) -> Vec<Step> {
    match steps {
        None => RolloutSettings::default()
            .steps
            .into_iter()
            .map(|s| Step { hold, ..s })
            .collect(),
        Some(list) => {
            let mut steps = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let (weight, step_hold, approve) = match s {
                    RawStep::Weight(w) => (w, None, false),
                    RawStep::Table(t) => (&t.weight, t.hold.as_deref(), t.approve),
                };
                let weight_bp = match weight.weight() {
                    Ok(w) => w.bp(),
                    Err(e) => {
                        p.add(format!("steps[{i}]"), e);
                        continue;
                    }
                };
                let hold = duration(p, &format!("steps[{i}].hold"), step_hold, hold);
                steps.push(Step {
                    weight_bp,
                    hold,
                    approve,
                });
            }
            // Only check the order when every weight parsed (indices stay aligned).
            if steps.len() == list.len() {
                check_steps_into(p, &steps);
            }
            steps
        }
    }
}

/// `rollback`: `"immediate"` (the default) or `{ steps = [...], hold = "..." }`, steps
/// strictly falling within 0..100 % and ending at 0, hold at most `MAX_HOLD` (default: the
/// rollout's hold).
fn rollback(p: &mut Problems, raw: Option<&RawRollback>, hold: Duration) -> RollbackPolicy {
    let (steps, step_hold) = match raw {
        None => return RollbackPolicy::Immediate,
        Some(RawRollback::Word(w)) if w == "immediate" => return RollbackPolicy::Immediate,
        Some(RawRollback::Word(w)) => {
            p.add(
                "rollback",
                format!("{w:?}: want \"immediate\" or {{ steps = [50, 10, 0], hold = \"10s\" }}"),
            );
            return RollbackPolicy::Immediate;
        }
        Some(RawRollback::Gradual(g)) => (&g.steps, g.hold.as_deref()),
    };
    let hold = duration(p, "rollback.hold", step_hold, hold);
    if hold > MAX_HOLD {
        p.add(
            "rollback.hold",
            format!("{} is above 7 days", humantime::format_duration(hold)),
        );
    }
    if steps.is_empty() || steps.len() > MAX_STEPS {
        p.add(
            "rollback.steps",
            format!("{} steps; want 1..={MAX_STEPS}, the last 0", steps.len()),
        );
    }
    let mut out: Vec<u16> = Vec::new();
    for (i, n) in steps.iter().enumerate() {
        let f = format!("rollback.steps[{i}]");
        let bp = match n.weight() {
            Ok(w) => w.bp(),
            Err(e) => {
                p.add(&f, e);
                continue;
            }
        };
        if bp >= WEIGHT_MAX {
            p.add(&f, format!("{} is not below 100%", bp_text(bp)));
        } else if let Some(&prev) = out.last()
            && bp >= prev
        {
            p.add(
                &f,
                format!(
                    "{} is not below the previous step ({})",
                    bp_text(bp),
                    bp_text(prev)
                ),
            );
        }
        out.push(bp);
    }
    if out.len() == steps.len() && out.last().is_some_and(|&w| w != 0) {
        p.add(
            format!("rollback.steps[{}]", steps.len() - 1),
            "the last step must be 0",
        );
    }
    RollbackPolicy::Gradual {
        steps_bp: out,
        hold,
    }
}

/// The bounds of the kernel-signal gate.
fn gate(p: &mut Problems, raw: &RawRollout) -> GateSettings {
    let ppm = |p: &mut Problems, field: &str, v: &Option<Number>, default: u32| match v {
        None => default,
        Some(n) => {
            let text = n.text();
            match text.parse::<f64>() {
                Ok(x) if (0.0..=100.0).contains(&x) => (x * 10_000.0).round() as u32,
                _ => {
                    p.add(field, format!("{text} is not a percentage in 0..=100"));
                    default
                }
            }
        }
    };
    let d = GateSettings::default();
    GateSettings {
        max_refusal_ppm: ppm(
            p,
            "max_refusal_percent",
            &raw.max_refusal_percent,
            d.max_refusal_ppm,
        ),
        refusal_margin_ppm: ppm(
            p,
            "refusal_margin_percent",
            &raw.refusal_margin_percent,
            d.refusal_margin_ppm,
        ),
        max_reset_ppm: ppm(
            p,
            "max_reset_percent",
            &raw.max_reset_percent,
            d.max_reset_ppm,
        ),
        reset_margin_ppm: ppm(
            p,
            "reset_margin_percent",
            &raw.reset_margin_percent,
            d.reset_margin_ppm,
        ),
        min_green_flows: match raw.min_green_flows {
            None => d.min_green_flows,
            Some(n) if n >= 0 => n as u64,
            Some(n) => {
                p.add("min_green_flows", format!("{n} is negative"));
                d.min_green_flows
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(toml_text: &str) -> Result<RolloutSettings, Vec<String>> {
        let raw: RawRollout = toml::from_str(toml_text).expect("toml parses");
        RolloutSettings::from_raw(&raw, "services[0].rollout")
            .map_err(|v| v.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn rollback_policies() {
        assert_eq!(rollout("").unwrap().rollback, RollbackPolicy::Immediate);
        assert_eq!(
            rollout("rollback = \"immediate\"").unwrap().rollback,
            RollbackPolicy::Immediate
        );
        assert_eq!(
            rollout("hold = \"5s\"\nrollback = { steps = [50, 10.5, 0] }")
                .unwrap()
                .rollback,
            RollbackPolicy::Gradual {
                steps_bp: vec![5000, 1050, 0],
                hold: Duration::from_secs(5)
            }
        );
        assert_eq!(
            rollout("rollback = { steps = [0], hold = \"1s\" }")
                .unwrap()
                .rollback,
            RollbackPolicy::Gradual {
                steps_bp: vec![0],
                hold: Duration::from_secs(1)
            }
        );
        assert_eq!(
            rollout("rollback = \"slowly\"").unwrap_err(),
            [
                "services[0].rollout.rollback: \"slowly\": want \"immediate\" or { steps = [50, 10, 0], hold = \"10s\" }"
            ]
        );
        assert_eq!(
            rollout("rollback = { steps = [100, 10, 20, 5], hold = \"8d\" }").unwrap_err(),
            [
                "services[0].rollout.rollback.hold: 8days is above 7 days",
                "services[0].rollout.rollback.steps[0]: 100.00% is not below 100%",
                "services[0].rollout.rollback.steps[2]: 20.00% is not below the previous step (10.00%)",
                "services[0].rollout.rollback.steps[3]: the last step must be 0",
            ]
        );
        assert_eq!(
            rollout("rollback = { steps = [] }").unwrap_err(),
            ["services[0].rollout.rollback.steps: 0 steps; want 1..=100, the last 0"]
        );
        assert!(
            toml::from_str::<RawRollout>("rollback = { steps = [1, 0], holds = \"1s\" }").is_err()
        );
    }

    #[test]
    fn rollout_defaults_and_steps() {
        let r = rollout("").unwrap();
        assert_eq!(r, RolloutSettings::default());
        let r = rollout(
            r#"steps = [0.5, "5", { weight = 25, approve = true }, { weight = 100, hold = "2m" }]
               hold = "10s"
               max_refusal_percent = 1.5
               min_green_flows = 20"#,
        )
        .unwrap();
        let w: Vec<_> = r
            .steps
            .iter()
            .map(|s| (s.weight_bp, s.hold.as_secs(), s.approve))
            .collect();
        assert_eq!(
            w,
            [
                (50, 10, false),
                (500, 10, false),
                (2500, 10, true),
                (10_000, 120, false)
            ]
        );
        assert_eq!(r.gate.max_refusal_ppm, 15_000);
        assert_eq!(r.gate.min_green_flows, 20);
    }

    #[test]
    fn rollout_problems_name_their_field() {
        let e = rollout("steps = [5, 5, 101]").unwrap_err();
        assert_eq!(e, ["services[0].rollout.steps[2]: 101 is outside 0..=100"]);
        let e = rollout("steps = [5, 5, 100]").unwrap_err();
        assert_eq!(
            e,
            ["services[0].rollout.steps[1]: 5.00% is not above the previous step (5.00%)"]
        );
        let e = rollout("steps = [0, 1.234]").unwrap_err();
        assert_eq!(
            e,
            ["services[0].rollout.steps[1]: 1.234 has more than two decimals"]
        );
        let e = rollout("steps = [0, 1]").unwrap_err();
        assert_eq!(
            e,
            ["services[0].rollout.steps[0]: 0.00% is outside 0.01..=100%"]
        );
        let e = rollout("steps = []\nmax_reset_percent = 120\nmin_green_flows = -1").unwrap_err();
        assert_eq!(
            e,
            [
                "services[0].rollout.steps: a ramp needs at least one step",
                "services[0].rollout.max_reset_percent: 120 is not a percentage in 0..=100",
                "services[0].rollout.min_green_flows: -1 is negative",
            ]
        );
        let e = rollout("steps = [{ weight = 5, hold = \"forever\" }]").unwrap_err();
        assert!(
            e[0].starts_with("services[0].rollout.steps[0].hold: \"forever\""),
            "{e:?}"
        );
    }
}
