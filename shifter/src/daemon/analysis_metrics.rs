//! The Prometheus query gates in the daemon's own metrics:
//!
//! | metric | type | what |
//! |---|---|---|
//! | `shifter_analysis_value{service,analysis}` | gauge | the query's last value |
//! | `shifter_analysis_result{service,analysis,result}` | gauge | 1 for the last result (success, failure, inconclusive) |
//! | `shifter_analysis_failures{service,analysis}` | gauge | failed results in a row during the rollout |
//! | `shifter_analysis_inconclusive{service,analysis}` | gauge | inconclusive results in a row during the rollout |
//! | `shifter_analysis_measurements_total{service,analysis}` | counter | queries answered since the daemon started |

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::api::types::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnalysisLabels {
    service: String,
    analysis: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    service: String,
    analysis: String,
    result: String,
}

/// Registers the analysis series of every service that has analyses (none otherwise).
pub(crate) fn register(reg: &mut Registry, snap: &Status) {
    let value = Family::<AnalysisLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let result = Family::<ResultLabels, Gauge>::default();
    let failures = Family::<AnalysisLabels, Gauge>::default();
    let inconclusive = Family::<AnalysisLabels, Gauge>::default();
    let mut measured = Vec::new();
    for s in &snap.services {
        for a in s.rollout.iter().flat_map(|r| &r.analysis) {
            let l = AnalysisLabels {
                service: s.name.clone(),
                analysis: a.name.clone(),
            };
            if let Some(v) = a.value.as_deref().and_then(|v| v.parse::<f64>().ok()) {
                value.get_or_create(&l).set(v);
            }
            for r in ["success", "failure", "inconclusive"] {
                result
                    .get_or_create(&ResultLabels {
                        service: s.name.clone(),
                        analysis: a.name.clone(),
                        result: r.to_owned(),
                    })
                    .set(i64::from(a.last.as_deref() == Some(r)));
            }
            failures.get_or_create(&l).set(i64::from(a.failures));
            inconclusive
                .get_or_create(&l)
                .set(i64::from(a.inconclusive));
            measured.push((l, a.measurements));
        }
    }
    if measured.is_empty() {
        return;
    }
    reg.register(
        "analysis_value",
        "The Prometheus analysis query's last value",
        value,
    );
    reg.register(
        "analysis_result",
        "1 for the analysis's last result: success, failure or inconclusive",
        result,
    );
    reg.register(
        "analysis_failures",
        "Failed analysis results in a row during the rollout",
        failures,
    );
    reg.register(
        "analysis_inconclusive",
        "Inconclusive analysis results in a row during the rollout",
        inconclusive,
    );
    let counts = Family::<AnalysisLabels, Counter>::default();
    for (l, n) in measured {
        counts.get_or_create(&l).inc_by(n);
    }
    reg.register(
        "analysis_measurements",
        "Analysis queries answered since the daemon started",
        counts,
    );
}
