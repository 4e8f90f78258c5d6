//! The daemon's TOML configuration: one tree, parsed, then validated completely before
//! anything touches the kernel. Every problem is reported with the field it concerns and the
//! bad value, e.g. `services[2].weight: 12.345 has more than two decimals`, as one
//! [`FieldError`]; numbers as TOML gives them are one [`Number`] type.
//!
//! One module per section: [`daemon`] (`[daemon]`, with [`grants`] `[[daemon.grant]]`), [`interfaces`] (`[[interfaces]]`),
//! [`services`] (`[[services]]`), and in each service [`health`] (`[services.health]`) and
//! [`rollout`] (`[services.rollout]`); [`fleet`] (`[fleet]`). See `examples/shifter.toml` for a commented example.

mod analysis;
mod daemon;
mod fleet;
mod grants;
mod health;
mod interfaces;
mod rollout;
mod services;
#[cfg(test)]
mod tests;
mod tls;
mod webhooks;

use std::{fmt, ops::RangeInclusive, path::Path, path::PathBuf, time::Duration};

use serde::Deserialize;

pub use analysis::{AnalysisSettings, Bound, RawAnalysis, prom_duration};
pub use daemon::{
    DEFAULT_SOCKET_MODE, DEFAULT_SWEEP_INTERVAL, DaemonConfig, FLOW_TABLE_MAX, FLOW_TABLE_MIN,
    SocketGroup,
};
pub use fleet::{
    DEFAULT_FLEET_PREFIX, DEFAULT_LEASE_TTL, DEFAULT_POLL_INTERVAL, DEFAULT_REQUEST_TIMEOUT,
    FleetConfig, valid_endpoint, valid_name,
};
pub use grants::{Grant, GrantVerb, Grantee, MAX_GRANTS, ReadAccess};
pub use health::{
    CheckKind, DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT, HealthSettings,
    RawHealth, StatusRange,
};
pub use interfaces::InterfaceConfig;
pub use rollout::{
    DEFAULT_HOLD, DEFAULT_STEPS_BP, GateSettings, MAX_HOLD, MAX_STEPS, RawRollback, RawRollout,
    RawStep, RollbackPolicy, RolloutSettings, Step, check_steps,
};
pub use services::ServiceSpec;
pub use tls::{TlsProblem, TlsSettings};
pub use webhooks::{
    HookKind, MAX_NOTIFY, NotifyFormat, NotifySettings, RawNotify, RawWebhook, WebhookSettings,
    url_tls,
};

use crate::model::Weight;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub interfaces: Vec<InterfaceConfig>,
    pub services: Vec<ServiceSpec>,
    /// `[fleet]`: this daemon is a fleet agent.
    pub fleet: Option<FleetConfig>,
}

/// One problem in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {}", join_errors(.errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

impl ConfigError {
    /// The individual problems (one for read and syntax errors).
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Invalid { errors, .. } => errors.iter().map(ToString::to_string).collect(),
            // The caller names the file.
            Self::Syntax { message, .. } => vec![message.clone()],
            other => vec![crate::util::error_chain(other)],
        }
    }

    /// Every problem on its own line, each starting with the file, for a terminal.
    pub fn report(&self) -> String {
        match self {
            // Already names the file.
            Self::Read { .. } => crate::util::error_chain(self),
            Self::Syntax { path, .. } | Self::Invalid { path, .. } => self
                .problems()
                .iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

fn join_errors(errors: &[FieldError]) -> String {
    let v: Vec<String> = errors.iter().map(ToString::to_string).collect();
    v.join("; ")
}

/// A number as written in TOML or JSON: its shortest decimal text. (Rust prints floats
/// without exponent and with the fewest digits that read back the same value.) Only for
/// messages: a weight is read from the number itself ([`Number::weight`]).
fn number_text(v: f64) -> Result<String, String> {
    if !v.is_finite() {
        return Err("is not a finite number".into());
    }
    if v == 0.0 && v.is_sign_negative() {
        return Ok("-0".into());
    }
    Ok(format!("{v}"))
}

/// A number as TOML gives it: integer, float, or text (`"12.5"`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Number {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Number {
    /// The number as a weight in percent; the error names the value as written.
    pub fn weight(&self) -> Result<Weight, String> {
        match self {
            Self::Int(i) => {
                Weight::from_percent_int(i128::from(*i)).map_err(|e| format!("{i} {e}"))
            }
            Self::Float(f) => {
                let text = number_text(*f)?;
                Weight::from_percent_f64(*f).map_err(|e| format!("{text} {e}"))
            }
            Self::Text(s) => s.parse::<Weight>().map_err(|e| format!("{s} {e}")),
        }
    }

    /// The number as text, for settings read from text (status ranges, gate percentages).
    fn text(&self) -> String {
        match self {
            Self::Int(i) => i.to_string(),
            Self::Float(f) => format!("{f}"),
            Self::Text(s) => s.trim().to_owned(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: daemon::RawDaemon,
    #[serde(default)]
    interfaces: Vec<interfaces::RawInterface>,
    #[serde(default)]
    services: Vec<services::RawService>,
    fleet: Option<fleet::RawFleet>,
}

/// Collects the problems of one section while validating; fields are named `prefix.field`.
#[derive(Default)]
struct Problems {
    prefix: String,
    list: Vec<FieldError>,
}

impl Problems {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            list: Vec::new(),
        }
    }

    fn add(&mut self, field: impl AsRef<str>, message: impl Into<String>) {
        let field = field.as_ref();
        let field = if self.prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        };
        self.list.push(FieldError {
            field,
            message: message.into(),
        });
    }

    /// Takes the problems of a nested section (already named with their full field).
    fn extend(&mut self, list: Vec<FieldError>) {
        self.list.extend(list);
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(self.list)
        }
    }
}

/// A duration like `30s` or `1m30s`; `default` when absent or bad (the problem is recorded).
fn duration(p: &mut Problems, field: &str, v: Option<&str>, default: Duration) -> Duration {
    match v {
        None => default,
        Some(s) => match humantime::parse_duration(s.trim()) {
            Ok(d) => d,
            Err(e) => {
                p.add(
                    field,
                    format!("{s:?} is not a duration like 30s or 1m30s ({e})"),
                );
                default
            }
        },
    }
}

/// A [`duration`] that must lie within `range`; the problem names the value and the range.
fn duration_within(
    p: &mut Problems,
    field: &str,
    v: Option<&str>,
    default: Duration,
    range: RangeInclusive<Duration>,
) -> Duration {
    let d = duration(p, field, v, default);
    if !range.contains(&d) {
        let show = humantime::format_duration;
        p.add(
            field,
            format!(
                "{} is outside {}..={}",
                show(d),
                show(*range.start()),
                show(*range.end())
            ),
        );
    }
    d
}

/// A TOML or type error on one line: where it is, the line, and what is wrong (toml's own
/// text spans several lines with a drawing of the source).
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', " ");
    match e.span() {
        Some(span) => {
            // The line itself names the key: toml's type errors do not.
            let before = &text[..span.start.min(text.len())];
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let source = text[line_start..].lines().next().unwrap_or("").trim();
            let line = before.matches('\n').count() + 1;
            let column = before.len() - line_start + 1;
            format!("line {line}, column {column} ({source}): {message}")
        }
        None => message,
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: syntax_message(text, &e),
        })?;
        let mut p = Problems::default();
        let cfg = Self {
            daemon: daemon::validate(raw.daemon, &mut p),
            interfaces: interfaces::validate(raw.interfaces, &mut p),
            services: services::validate(raw.services, &mut p),
            fleet: raw.fleet.map(|f| fleet::validate(f, &mut p)),
        };
        grants::check_services(&cfg.daemon.grants, &cfg.services, &mut p);
        p.finish(cfg).map_err(|errors| ConfigError::Invalid {
            path: path.to_owned(),
            errors,
        })
    }

    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}
