//! `[[services.rollout.analysis]]`: Prometheus query gates of a rollout.
//!
//! ```toml
//! [[services.rollout.analysis]]
//! name = "errors"                          # required, unique in the service
//! prometheus = "http://127.0.0.1:9090"     # required: base URL (http only)
//! query = 'sum(rate(http_errors_total{service="{{service}}",backend="{{backend}}"}[{{interval}}]))'
//! max = 0.05                               # success when the value is at most this
//! # min = 0.99                             # ... and/or at least this
//! interval = "30s"                         # one query per interval (also {{interval}})
//! timeout = "5s"                           # a query slower than this is inconclusive
//! failure_limit = 2                        # this many failed results in a row roll back
//! inconclusive_limit = 3                   # this many inconclusive in a row pause
//! ```
//!
//! A result is a success when the query's value is within the bounds, a failure when it is
//! outside, and inconclusive when there is no value (no data, not a number, a query error,
//! a timeout), as in Argo Rollouts' analysis.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Number, Problems, duration, duration_within};

pub const DEFAULT_ANALYSIS_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_ANALYSIS_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_FAILURE_LIMIT: u32 = 2;
pub const DEFAULT_INCONCLUSIVE_LIMIT: u32 = 3;
/// Most analyses per service.
pub const MAX_ANALYSES: usize = 16;

/// A finite bound; `Eq` holds because NaN is refused by the validation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bound(pub f64);

impl Eq for Bound {}

/// One validated analysis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisSettings {
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:9090` (no trailing slash).
    pub prometheus: String,
    /// PromQL with `{{service}}`, `{{backend}}` and `{{interval}}` still in it.
    pub query: String,
    pub max: Option<Bound>,
    pub min: Option<Bound>,
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
}

impl AnalysisSettings {
    /// The query for `service`, about green: `{{service}}`, `{{backend}}` ("green") and
    /// `{{interval}}` (e.g. "30s") replaced.
    pub fn query_for(&self, service: &str) -> String {
        self.query
            .replace("{{service}}", service)
            .replace("{{backend}}", "green")
            .replace("{{interval}}", &prom_duration(self.interval))
    }

    /// Whether `v` is within the bounds.
    pub fn passes(&self, v: f64) -> bool {
        self.max.is_none_or(|m| v <= m.0) && self.min.is_none_or(|m| v >= m.0)
    }

    /// The bounds in words, e.g. `<= 0.05`.
    pub fn bounds_text(&self) -> String {
        match (self.max, self.min) {
            (Some(max), Some(min)) => format!("within {}..={}", min.0, max.0),
            (Some(max), None) => format!("<= {}", max.0),
            (None, Some(min)) => format!(">= {}", min.0),
            (None, None) => "any value".to_owned(),
        }
    }
}

/// A duration as PromQL writes it: whole seconds (`30s`), or milliseconds (`1500ms`).
pub fn prom_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    pub name: Option<String>,
    pub prometheus: Option<String>,
    pub query: Option<String>,
    pub max: Option<Number>,
    pub min: Option<Number>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub failure_limit: Option<i64>,
    pub inconclusive_limit: Option<i64>,
}

fn bound(p: &mut Problems, field: &str, v: Option<&Number>) -> Option<Bound> {
    let v = v?;
    let f = match v {
        Number::Int(i) => *i as f64,
        Number::Float(f) => *f,
        Number::Text(t) => match t.trim().parse::<f64>() {
            Ok(f) => f,
            Err(_) => {
                p.add(field, format!("{t:?} is not a number"));
                return None;
            }
        },
    };
    if f.is_finite() {
        Some(Bound(f))
    } else {
        p.add(field, format!("{f} is not a finite number"));
        None
    }
}

fn limit(p: &mut Problems, field: &str, v: Option<i64>, default: u32) -> u32 {
    match v {
        None => default,
        Some(n) if (1..=100).contains(&n) => n as u32,
        Some(n) => {
            p.add(field, format!("{n} is outside 1..=100"));
            default
        }
    }
}

/// An analysis's name: required, of letters, digits, '.', '_' and '-', unique in the service.
fn analysis_name(
    p: &mut Problems,
    field: &str,
    v: Option<&str>,
    earlier: &[AnalysisSettings],
) -> String {
    match v {
        None | Some("") => {
            p.add(field, "required");
            String::new()
        }
        Some(n)
            if !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            p.add(
                field,
                format!("{n:?}: only letters, digits, '.', '_' and '-'"),
            );
            n.to_owned()
        }
        Some(n) => {
            if earlier.iter().any(|o| o.name == n) {
                p.add(field, format!("{n:?} is used twice in this service"));
            }
            n.to_owned()
        }
    }
}

/// The Prometheus base URL: required, http:// with a host and no query; kept without a
/// trailing slash.
fn prometheus_url(p: &mut Problems, field: &str, v: Option<&str>) -> String {
    let Some(u) = v else {
        p.add(
            field,
            "required: the base URL, e.g. \"http://127.0.0.1:9090\"",
        );
        return String::new();
    };
    match u.parse::<hyper::Uri>() {
        Ok(x)
            if x.scheme_str() == Some("http") && x.authority().is_some() && x.query().is_none() =>
        {
            u.trim_end_matches('/').to_owned()
        }
        _ => {
            p.add(
                field,
                format!("{u:?} is not an http:// URL with a host (https is not supported)"),
            );
            String::new()
        }
    }
}

/// Validates the analyses of one service; fields are named `analysis[i].field`.
pub(super) fn validate(p: &mut Problems, raw: &[RawAnalysis]) -> Vec<AnalysisSettings> {
    if raw.len() > MAX_ANALYSES {
        p.add(
            "analysis",
            format!("{} analyses; at most {MAX_ANALYSES}", raw.len()),
        );
    }
    let mut out: Vec<AnalysisSettings> = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        let f = |k: &str| format!("analysis[{i}].{k}");
        let name = analysis_name(p, &f("name"), a.name.as_deref(), &out);
        let prometheus = prometheus_url(p, &f("prometheus"), a.prometheus.as_deref());
        let query = match a.query.as_deref().map(str::trim) {
            None | Some("") => {
                p.add(f("query"), "required: a PromQL expression");
                String::new()
            }
            Some(q) => q.to_owned(),
        };
        let max = bound(p, &f("max"), a.max.as_ref());
        let min = bound(p, &f("min"), a.min.as_ref());
        if a.max.is_none() && a.min.is_none() {
            p.add(f("max"), "an analysis needs max, min or both");
        }
        if let (Some(lo), Some(hi)) = (min, max)
            && lo.0 > hi.0
        {
            p.add(f("min"), format!("{} is above max {}", lo.0, hi.0));
        }
        let interval = duration_within(
            p,
            &f("interval"),
            a.interval.as_deref(),
            DEFAULT_ANALYSIS_INTERVAL,
            Duration::from_millis(100)..=Duration::from_secs(3600),
        );
        let timeout = duration(
            p,
            &f("timeout"),
            a.timeout.as_deref(),
            DEFAULT_ANALYSIS_TIMEOUT.min(interval),
        );
        if timeout.is_zero() || timeout > interval {
            p.add(f("timeout"), "must be above 0 and at most the interval");
        }
        out.push(AnalysisSettings {
            name,
            prometheus,
            query,
            max,
            min,
            interval,
            timeout,
            failure_limit: limit(
                p,
                &f("failure_limit"),
                a.failure_limit,
                DEFAULT_FAILURE_LIMIT,
            ),
            inconclusive_limit: limit(
                p,
                &f("inconclusive_limit"),
                a.inconclusive_limit,
                DEFAULT_INCONCLUSIVE_LIMIT,
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(analysis: &str) -> Result<Config, Vec<String>> {
        let text = format!(
            "[[services]]\nname = \"web\"\nport = 80\nblue_port = 8081\ngreen_port = 8082\n\
             [services.rollout]\n{analysis}"
        );
        Config::parse(&text, Path::new("t.toml")).map_err(|e| e.problems())
    }

    const GOOD: &str = "[[services.rollout.analysis]]\nname = \"errors\"\n\
        prometheus = \"http://127.0.0.1:9090/\"\nquery = 'rate(e[{{interval}}])'\nmax = 0.05\n";

    #[test]
    fn an_analysis_parses_with_its_defaults() {
        let c = parse(GOOD).expect("valid");
        let a = &c.services[0].rollout.analysis[0];
        assert_eq!(a.name, "errors");
        assert_eq!(a.prometheus, "http://127.0.0.1:9090");
        assert_eq!(a.max, Some(Bound(0.05)));
        assert_eq!(a.min, None);
        assert_eq!(
            (a.interval, a.timeout, a.failure_limit, a.inconclusive_limit),
            (DEFAULT_ANALYSIS_INTERVAL, DEFAULT_ANALYSIS_TIMEOUT, 2, 3)
        );
        assert_eq!(a.query_for("web"), "rate(e[30s])");
        assert_eq!(prom_duration(Duration::from_millis(1500)), "1500ms");
        assert!(
            parse("").expect("none").services[0]
                .rollout
                .analysis
                .is_empty()
        );
    }

    #[test]
    fn every_bad_analysis_value_is_named() {
        let cases = [
            ("name = \"errors\"", "", "analysis[0].name: required"),
            (
                "name = \"errors\"",
                "name = \"a b\"",
                "analysis[0].name: \"a b\": only letters",
            ),
            (
                "prometheus = \"http://127.0.0.1:9090/\"",
                "prometheus = \"https://p:9090\"",
                "analysis[0].prometheus: \"https://p:9090\" is not an http:// URL",
            ),
            (
                "prometheus = \"http://127.0.0.1:9090/\"",
                "",
                "analysis[0].prometheus: required",
            ),
            (
                "query = 'rate(e[{{interval}}])'",
                "query = ' '",
                "analysis[0].query: required",
            ),
            (
                "max = 0.05",
                "",
                "analysis[0].max: an analysis needs max, min or both",
            ),
            (
                "max = 0.05",
                "max = \"x\"",
                "analysis[0].max: \"x\" is not a number",
            ),
            (
                "max = 0.05",
                "max = 1\nmin = 2",
                "analysis[0].min: 2 is above max 1",
            ),
            (
                "max = 0.05",
                "max = 1\ninterval = \"2h\"",
                "analysis[0].interval: 2h is outside 100ms..=1h",
            ),
            (
                "max = 0.05",
                "max = 1\ninterval = \"1s\"\ntimeout = \"2s\"",
                "analysis[0].timeout: must be above 0 and at most the interval",
            ),
            (
                "max = 0.05",
                "max = 1\nfailure_limit = 0",
                "analysis[0].failure_limit: 0 is outside 1..=100",
            ),
            (
                "max = 0.05",
                "max = 1\ninconclusive_limit = 101",
                "analysis[0].inconclusive_limit: 101 is outside 1..=100",
            ),
        ];
        for (from, to, want) in cases {
            let text = GOOD.replacen(from, to, 1);
            let problems = parse(&text).expect_err(to);
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{to}: want {want:?} in {problems:?}"
            );
            assert!(
                problems
                    .iter()
                    .all(|p| p.contains("services[0].rollout.analysis[0]")),
                "{problems:?}"
            );
        }
        let twice = parse(&format!("{GOOD}{GOOD}")).expect_err("twice");
        assert!(
            twice.iter().any(|p| p.contains("\"errors\" is used twice")),
            "{twice:?}"
        );
        let unknown = parse(&format!("{GOOD}threshold = 1\n")).expect_err("unknown key");
        assert!(
            unknown.iter().any(|p| p.contains("threshold")),
            "{unknown:?}"
        );
    }
}
