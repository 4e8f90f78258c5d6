//! Request bodies: JSON into the typed requests of [`crate::api::types`], and those into
//! what the daemon is asked. Every problem is a 400 naming the field.

use std::time::Duration;

use super::ApiError;
use crate::{
    api::types::{RollbackRequest, RolloutRequest, WeightRequest},
    config::MAX_HOLD,
    model::{Weight, WeightError},
    rollout::OperatorCommand,
};

/// The longest `rollback --drain-timeout` the API waits.
pub(super) const MAX_DRAIN: Duration = Duration::from_secs(3600);

/// An empty body (or whitespace) is `T::default()`; otherwise JSON.
pub(super) fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    example: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("invalid JSON body (expected e.g. {example}): {e}"))
    })
}

pub(super) fn empty_body(body: &[u8], what: &str) -> Result<(), ApiError> {
    let ok = body.iter().all(u8::is_ascii_whitespace)
        || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
            .is_ok_and(|m| m.is_empty());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("{what} takes no parameters")))
    }
}

pub(super) fn parse_duration(field: &str, text: &str, max: Duration) -> Result<Duration, ApiError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        ApiError::bad_request(format!(
            "{field}: {text:?} is not a duration like 30s or 1m30s ({e})"
        ))
    })?;
    if d > max {
        return Err(ApiError::bad_request(format!(
            "{field}: {text} is above {}",
            humantime::format_duration(max)
        )));
    }
    Ok(d)
}

/// A JSON number of percent as a weight; the message names `field` and the number.
fn percent_number(field: &str, n: &serde_json::Number) -> Result<Weight, ApiError> {
    let bad =
        |shown: String, e: WeightError| ApiError::bad_request(format!("{field}: {shown} {e}"));
    if let Some(i) = n.as_i64() {
        return Weight::from_percent_int(i128::from(i)).map_err(|e| bad(i.to_string(), e));
    }
    if let Some(u) = n.as_u64() {
        return Weight::from_percent_int(i128::from(u)).map_err(|e| bad(u.to_string(), e));
    }
    match n.as_f64() {
        Some(f) => Weight::from_percent_f64(f).map_err(|e| bad(format!("{f}"), e)),
        None => Err(ApiError::bad_request(format!("{field}: not a number"))),
    }
}

/// A step weight: a JSON number of percent, or percent text (`"12.5"`).
fn percent_value(field: &str, v: &serde_json::Value) -> Result<u16, ApiError> {
    match v {
        serde_json::Value::Number(n) => percent_number(field, n).map(Weight::bp),
        serde_json::Value::String(s) => s
            .parse::<Weight>()
            .map(Weight::bp)
            .map_err(|e| ApiError::bad_request(format!("{field}: {s} {e}"))),
        other => Err(ApiError::bad_request(format!(
            "{field}: {other} is not a percentage"
        ))),
    }
}

/// The command of `POST .../rollout/{verb}` (or `blue-green`) with its body.
pub fn rollout_command(verb: &str, body: &[u8]) -> Result<OperatorCommand, ApiError> {
    let hold = |b: &RolloutRequest| {
        b.hold
            .as_deref()
            .map(|h| parse_duration("hold", h, MAX_HOLD))
            .transpose()
    };
    Ok(match verb {
        "start" => {
            let b: RolloutRequest = json_body(
                body,
                "{\"steps\": [1, 5, 25, 50, 100], \"hold\": \"30s\", \"dry_run\": false}",
            )?;
            let steps = match (&b.steps, &b.steps_bp) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(
                        "steps: give either steps (percent) or steps_bp, not both",
                    ));
                }
                (None, Some(list)) => Some(list.iter().map(|w| w.bp()).collect()),
                (Some(list), None) => Some(
                    list.iter()
                        .enumerate()
                        .map(|(i, v)| percent_value(&format!("steps[{i}]"), v))
                        .collect::<Result<Vec<u16>, ApiError>>()?,
                ),
                (None, None) => None,
            };
            OperatorCommand::Start {
                steps,
                hold: hold(&b)?,
                dry_run: b.dry_run,
            }
        }
        "blue-green" => {
            let b: RolloutRequest = json_body(body, "{\"hold\": \"30s\", \"dry_run\": false}")?;
            if b.steps.is_some() || b.steps_bp.is_some() {
                return Err(ApiError::bad_request(
                    "steps: a blue-green switch has one step (to 100%)",
                ));
            }
            OperatorCommand::BlueGreen {
                hold: hold(&b)?,
                dry_run: b.dry_run,
            }
        }
        other => {
            empty_body(body, other)?;
            match other {
                "pause" => OperatorCommand::Pause,
                "resume" => OperatorCommand::Resume,
                "abort" => OperatorCommand::Abort,
                "approve" => OperatorCommand::Approve,
                _ => OperatorCommand::Freeze,
            }
        }
    })
}

/// The drain timeout of `POST .../rollback`.
pub(super) fn rollback_drain(body: &[u8]) -> Result<Option<Duration>, ApiError> {
    let b: RollbackRequest = json_body(body, "{\"drain_timeout\": \"30s\"}")?;
    b.drain_timeout
        .as_deref()
        .map(|t| parse_duration("drain_timeout", t, MAX_DRAIN))
        .transpose()
}

/// `{"weight_bp": 1250}` or `{"percent": 12.5}` -> the weight, or a 400 naming the problem.
pub fn parse_weight_body(body: &[u8]) -> Result<Weight, ApiError> {
    let req: WeightRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body (expected {{\"percent\": 12.5}}): {e}"
        ))
    })?;
    match (req.weight_bp, &req.percent) {
        (Some(w), None) => Ok(w),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give either weight_bp or percent, not both",
        )),
        (None, Some(serde_json::Value::Number(n))) => percent_number("percent", n),
        (None, Some(other)) => Err(ApiError::bad_request(format!(
            "percent: {other} is not a number"
        ))),
        // The message serde gives for a missing field, as before `weight_bp` existed.
        (None, None) => Err(ApiError::bad_request(
            "invalid JSON body (expected {\"percent\": 12.5}): missing field `percent`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    #[test]
    fn weight_bodies() {
        let parse_weight_body = |b: &[u8]| parse_weight_body(b).map(Weight::bp);
        assert_eq!(parse_weight_body(br#"{"percent": 12.5}"#), Ok(1250));
        assert_eq!(parse_weight_body(br#"{"percent": 0}"#), Ok(0));
        assert_eq!(parse_weight_body(br#"{"percent": 100}"#), Ok(10_000));
        assert_eq!(parse_weight_body(br#"{"percent": 0.01}"#), Ok(1));
        assert_eq!(parse_weight_body(br#"{"weight_bp": 1250}"#), Ok(1250));
        assert_eq!(parse_weight_body(br#"{"weight_bp": 0}"#), Ok(0));
        let msg = |b: &[u8]| parse_weight_body(b).unwrap_err().message;
        assert_eq!(
            msg(br#"{"percent": 12.345}"#),
            "percent: 12.345 has more than two decimals"
        );
        assert_eq!(
            msg(br#"{"percent": 100.01}"#),
            "percent: 100.01 is outside 0..=100"
        );
        assert_eq!(
            msg(br#"{"percent": -1}"#),
            "percent: -1 is negative (a weight is 0..=100 percent)"
        );
        assert_eq!(
            msg(br#"{"percent": "12"}"#),
            "percent: \"12\" is not a number"
        );
        assert!(msg(br#"{"percent": 1, "x": 2}"#).contains("unknown field"));
        assert!(msg(br#"{"weight": 1}"#).contains("unknown field"));
        assert!(msg(b"{}").contains("missing field `percent`"));
        assert!(msg(b"not json").contains("invalid JSON body"));
        assert_eq!(
            parse_weight_body(b"[]").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert!(msg(br#"{"weight_bp": 10001}"#).contains("outside 0..=10000"));
        assert!(msg(br#"{"weight_bp": 1, "percent": 1}"#).contains("not both"));
    }

    #[test]
    fn rollout_bodies() {
        use std::time::Duration;
        assert_eq!(
            rollout_command("start", b""),
            Ok(OperatorCommand::Start {
                steps: None,
                hold: None,
                dry_run: false
            })
        );
        assert_eq!(
            rollout_command(
                "start",
                br#"{"steps": [1, "5", 12.5, 100], "hold": "1m30s", "dry_run": true}"#
            ),
            Ok(OperatorCommand::Start {
                steps: Some(vec![100, 500, 1250, 10_000]),
                hold: Some(Duration::from_secs(90)),
                dry_run: true
            })
        );
        assert_eq!(
            rollout_command("blue-green", br#"{"hold": "10s"}"#),
            Ok(OperatorCommand::BlueGreen {
                hold: Some(Duration::from_secs(10)),
                dry_run: false
            })
        );
        assert_eq!(
            rollout_command("start", br#"{"steps_bp": [100, 1250]}"#),
            Ok(OperatorCommand::Start {
                steps: Some(vec![100, 1250]),
                hold: None,
                dry_run: false
            })
        );
        assert_eq!(rollout_command("pause", b"{}"), Ok(OperatorCommand::Pause));
        assert_eq!(rollout_command("freeze", b""), Ok(OperatorCommand::Freeze));
        let msg = |v: &str, b: &[u8]| rollout_command(v, b).unwrap_err().message;
        assert_eq!(
            msg("start", br#"{"steps": [1, 12.345]}"#),
            "steps[1]: 12.345 has more than two decimals"
        );
        assert!(
            msg("start", br#"{"hold": "soon"}"#).starts_with("hold: \"soon\" is not a duration")
        );
        assert!(msg("start", br#"{"hold": "30d"}"#).starts_with("hold: 30d is above"));
        assert!(msg("start", br#"{"stepz": []}"#).contains("unknown field"));
        assert_eq!(msg("pause", br#"{"x": 1}"#), "pause takes no parameters");
        assert_eq!(
            msg("blue-green", br#"{"steps": [100]}"#),
            "steps: a blue-green switch has one step (to 100%)"
        );
    }
}
