//! Prometheus query gates: one task per `[[services.rollout.analysis]]` queries
//! `GET <prometheus>/api/v1/query?query=...` every interval (the first at once) and posts
//! each result to the engine thread, which hands it to the service's rollout engine.
//!
//! The query must give one number: a scalar, or an instant vector with one series. No
//! series, several series, NaN, an error answer, a failed connection or a timeout are
//! inconclusive; a value inside the bounds is a success, outside a failure.

use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{
    config::AnalysisSettings,
    rollout::types::{AnalysisResult, Measurement},
};

/// Largest answer read from Prometheus.
const ANSWER_LIMIT: usize = 1 << 20;

/// `%XX` for every byte but the unreserved ones (RFC 3986), for the query parameter.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The answer's one value (as Prometheus wrote it), or why there is none.
pub(crate) fn value_of(body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            v["error"].as_str().unwrap_or("no error text")
        ));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let series = data["result"].as_array().map_or(&[][..], Vec::as_slice);
            match series {
                [] => return Err("no data".into()),
                [one] => &one["value"],
                many => {
                    return Err(format!(
                        "{} series; the query must give one value (e.g. sum(...))",
                        many.len()
                    ));
                }
            }
        }
        other => return Err(format!("result type {other:?}: want a scalar or a vector")),
    };
    sample[1]
        .as_str()
        .map(ToOwned::to_owned)
        .ok_or_else(|| format!("no sample value in {sample}"))
}

/// The verdict on an answer (or the failure to get one).
pub(crate) fn judge(settings: &AnalysisSettings, answer: Result<String, String>) -> AnalysisResult {
    let inconclusive = |detail: String, value: Option<String>| AnalysisResult {
        name: settings.name.clone(),
        measurement: Measurement::Inconclusive,
        value,
        detail,
    };
    let text = match answer {
        Ok(t) => t,
        Err(why) => return inconclusive(why, None),
    };
    let Ok(v) = text.parse::<f64>() else {
        return inconclusive(format!("{text:?} is not a number"), Some(text));
    };
    if v.is_nan() {
        return inconclusive("the value is NaN".into(), Some(text));
    }
    let (measurement, detail) = if settings.passes(v) {
        (
            Measurement::Success,
            format!("{text} is {}", settings.bounds_text()),
        )
    } else {
        (
            Measurement::Failure,
            format!("{text} is not {}", settings.bounds_text()),
        )
    };
    AnalysisResult {
        name: settings.name.clone(),
        measurement,
        value: Some(text),
        detail,
    }
}

async fn fetch(settings: &AnalysisSettings, query: &str) -> Result<String, String> {
    let base: hyper::Uri = settings
        .prometheus
        .parse()
        .map_err(|e| format!("prometheus URL: {e}"))?;
    let host = base.host().ok_or("prometheus URL has no host")?.to_owned();
    let port = base.port_u16().unwrap_or(80);
    let path = format!(
        "{}/api/v1/query?query={}",
        base.path().trim_end_matches('/'),
        encode(query)
    );
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect {}: {e}", settings.prometheus))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let authority = base.authority().map(ToString::to_string).unwrap_or(host);
    let req = Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "shifter-analysis/1")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| crate::util::error_chain(&e));
    let out = match res {
        Ok(r) => {
            let status = r.status();
            let body = Limited::new(r.into_body(), ANSWER_LIMIT)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            // Prometheus answers errors (bad query: 400, 422, 503) with the same JSON.
            value_of(&body).map_err(|e| {
                if status.is_success() {
                    e
                } else {
                    format!("HTTP {status}: {e}")
                }
            })
        }
        Err(e) => Err(e),
    };
    drop(sender);
    conn.abort();
    out
}

/// One query of `settings` for `service`, bounded by its timeout.
pub(crate) async fn measure(settings: &AnalysisSettings, service: &str) -> AnalysisResult {
    let query = settings.query_for(service);
    let answer = tokio::time::timeout(settings.timeout, fetch(settings, &query))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "timed out after {}",
                humantime::format_duration(settings.timeout)
            ))
        });
    judge(settings, answer)
}

/// Queries every interval until the receiver is gone.
pub(crate) async fn run(
    settings: AnalysisSettings,
    service: String,
    tx: tokio::sync::mpsc::Sender<AnalysisResult>,
) {
    let mut every = tokio::time::interval(settings.interval.max(Duration::from_millis(100)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let r = measure(&settings, &service).await;
        if tx.send(r).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bound;

    fn settings(max: Option<f64>, min: Option<f64>) -> AnalysisSettings {
        AnalysisSettings {
            name: "errors".into(),
            prometheus: "http://127.0.0.1:9".into(),
            query: "rate(e{s=\"{{service}}\",b=\"{{backend}}\"}[{{interval}}])".into(),
            max: max.map(Bound),
            min: min.map(Bound),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
            failure_limit: 2,
            inconclusive_limit: 3,
        }
    }

    #[test]
    fn answers_are_judged_like_argo() {
        let s = settings(Some(0.05), None);
        assert_eq!(s.query_for("web"), "rate(e{s=\"web\",b=\"green\"}[30s])");
        let vector = |v: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1.5,"{v}"]}}]}}}}"#
            )
        };
        let m = |body: &str| judge(&s, value_of(body.as_bytes())).measurement;
        assert_eq!(m(&vector("0.01")), Measurement::Success);
        assert_eq!(m(&vector("0.05")), Measurement::Success);
        assert_eq!(m(&vector("0.2")), Measurement::Failure);
        assert_eq!(m(&vector("NaN")), Measurement::Inconclusive);
        assert_eq!(m(&vector("+Inf")), Measurement::Failure);
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(judge(&s, value_of(empty.as_bytes())).detail, "no data");
        let two = r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#;
        assert_eq!(m(two), Measurement::Inconclusive);
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"0.5"]}}"#;
        assert_eq!(m(scalar), Measurement::Failure);
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let r = judge(&s, value_of(error.as_bytes()));
        assert_eq!(r.measurement, Measurement::Inconclusive);
        assert_eq!(r.detail, "query failed: parse error");
        assert_eq!(m("<html>"), Measurement::Inconclusive);
        let both = settings(Some(1.0), Some(0.9));
        assert_eq!(
            judge(&both, Ok("0.95".into())).measurement,
            Measurement::Success
        );
        let r = judge(&both, Ok("0.5".into()));
        assert_eq!(r.measurement, Measurement::Failure);
        assert_eq!(r.detail, "0.5 is not within 0.9..=1");
        assert_eq!(encode("a b{\"x\"}"), "a%20b%7B%22x%22%7D");
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_inconclusive() {
        let r = measure(&settings(Some(1.0), None), "web").await;
        assert_eq!(r.measurement, Measurement::Inconclusive, "{r:?}");
        assert!(r.detail.contains("connect"), "{}", r.detail);
    }
}
