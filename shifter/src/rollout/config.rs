//! Per-service rollout and health-check settings: the TOML shapes (`Raw*`, deserialized with
//! unknown fields refused) and their validated forms. Validation collects every problem with
//! the field it concerns, e.g. `services[0].rollout.steps[2]: 25 is not above the previous
//! step (25)`, so the daemon's configuration loader can embed these under a field prefix:
//!
//! ```toml
//! [services.health]            # one check definition, run against blue and green
//! kind = "http"                # tcp | http | exec
//! path = "/healthz"
//! status = "200-399"           # or 200
//! host = "app.example"         # optional Host header
//! interval = "2s"              # defaults: 2s, 1s, 0s, rise 2, fall 3
//! timeout = "1s"
//! jitter = "200ms"
//! rise = 2
//! fall = 3
//! port_offset = 1000           # check backend port + 1000 (a separate health endpoint)
//!
//! [services.rollout]
//! steps = [1, 5, { weight = 25, approve = true }, 50, { weight = 100, hold = "2m" }]
//! hold = "30s"
//! max_refusal_percent = 2      # gate: green's refused / new connections over a step
//! refusal_margin_percent = 1   # ... and at most blue's ratio + this margin
//! max_reset_percent = 5
//! reset_margin_percent = 2
//! min_green_flows = 0          # fewer new green flows in a step: keep holding
//! ```

use std::{fmt, net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};
use shifter_common::WEIGHT_MAX;

/// Default interval between two checks of one backend.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default time a single check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive successes that make a backend healthy (HAProxy's default).
pub const DEFAULT_RISE: u32 = 2;
/// Consecutive failures that make a backend unhealthy (HAProxy's default).
pub const DEFAULT_FALL: u32 = 3;
/// Default ramp, in basis points: 1, 5, 25, 50, 100 %.
pub const DEFAULT_STEPS_BP: [u16; 5] = [100, 500, 2500, 5000, 10_000];
/// Default hold time of each step.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(30);

/// One problem in the configuration, named by its field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Default)]
struct Problems {
    prefix: String,
    list: Vec<FieldProblem>,
}

impl Problems {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            list: Vec::new(),
        }
    }

    fn add(&mut self, field: &str, message: impl Into<String>) {
        let field = if self.prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        };
        self.list.push(FieldProblem {
            field,
            message: message.into(),
        });
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<FieldProblem>> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(self.list)
        }
    }
}

/// A number as TOML gives it: integer, float, or text (`"12.5"`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum RawNumber {
    Int(i64),
    Float(f64),
    Text(String),
}

impl RawNumber {
    fn text(&self) -> String {
        match self {
            Self::Int(i) => i.to_string(),
            Self::Float(f) => format!("{f}"),
            Self::Text(s) => s.trim().to_owned(),
        }
    }
}

/// Basis points as percent text (`1250` -> `12.50%`).
pub fn bp_text(bp: u16) -> String {
    format!("{}.{:02}%", bp / 100, bp % 100)
}

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

// ----------------------------------------------------------------------------------------
// Health checks
// ----------------------------------------------------------------------------------------

/// `[services.health]` as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub kind: Option<String>,
    pub address: Option<String>,
    pub path: Option<String>,
    pub status: Option<RawNumber>,
    pub host: Option<String>,
    pub command: Option<Vec<String>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub jitter: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub port_offset: Option<i64>,
}

/// Inclusive range of accepted HTTP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

impl StatusRange {
    pub const fn contains(&self, status: u16) -> bool {
        self.min <= status && status <= self.max
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// What one check does against a backend (address + backend port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CheckKind {
    /// A TCP connection is accepted within the timeout.
    Tcp,
    /// `GET path` over HTTP/1.1 answers with a status in `status`.
    Http {
        path: String,
        status: StatusRange,
        host: Option<String>,
    },
    /// The command exits with status 0 within the timeout (killed otherwise). `{port}` and
    /// `{address}` in its arguments are replaced; it also gets `SHIFTER_BACKEND_PORT` and
    /// `SHIFTER_BACKEND_ADDRESS` in its environment.
    Exec { command: Vec<String> },
}

/// Validated health-check settings of a service (applied to blue and to green).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSettings {
    pub check: CheckKind,
    /// Address the backends listen on (default 127.0.0.1).
    pub address: IpAddr,
    pub interval: Duration,
    pub timeout: Duration,
    /// Each wait is `interval + random(0..=jitter)`.
    pub jitter: Duration,
    pub rise: u32,
    pub fall: u32,
    /// The check runs against `backend port + port_offset` (a separate health endpoint,
    /// e.g. a management port); verdicts still name the backend port.
    #[serde(default)]
    pub port_offset: i32,
}

impl HealthSettings {
    /// The port a check of the backend on `port` connects to.
    pub fn check_port(&self, port: u16) -> u16 {
        u16::try_from(i32::from(port) + self.port_offset).unwrap_or(port)
    }

    /// Settings with the defaults for a check kind.
    pub fn new(check: CheckKind) -> Self {
        Self {
            check,
            address: IpAddr::from([127, 0, 0, 1]),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            jitter: Duration::ZERO,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            port_offset: 0,
        }
    }

    /// Validates `raw`; problems are named `prefix.field`.
    pub fn from_raw(raw: &RawHealth, prefix: &str) -> Result<Self, Vec<FieldProblem>> {
        let mut p = Problems::new(prefix);
        let kind = raw.kind.as_deref().unwrap_or("tcp");
        let check = match kind {
            "tcp" | "http" | "exec" => {
                let only = |p: &mut Problems, field: &str, set: bool, kinds: &str| {
                    if set {
                        p.add(field, format!("is only used by {kinds} checks, not {kind}"));
                    }
                };
                only(&mut p, "path", raw.path.is_some() && kind != "http", "http");
                only(
                    &mut p,
                    "status",
                    raw.status.is_some() && kind != "http",
                    "http",
                );
                only(&mut p, "host", raw.host.is_some() && kind != "http", "http");
                only(
                    &mut p,
                    "command",
                    raw.command.is_some() && kind != "exec",
                    "exec",
                );
                match kind {
                    "tcp" => CheckKind::Tcp,
                    "http" => http_check(&mut p, raw),
                    _ => exec_check(&mut p, raw),
                }
            }
            other => {
                p.add(
                    "kind",
                    format!("{other:?} is not a check kind (expected tcp, http or exec)"),
                );
                CheckKind::Tcp
            }
        };
        let address = match raw.address.as_deref() {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(a) => match a.parse::<IpAddr>() {
                Ok(ip) if !ip.is_unspecified() => ip,
                _ => {
                    p.add("address", format!("{a:?} is not a usable IP address"));
                    IpAddr::from([127, 0, 0, 1])
                }
            },
        };
        let interval = duration(
            &mut p,
            "interval",
            raw.interval.as_deref(),
            DEFAULT_INTERVAL,
        );
        let timeout = duration(&mut p, "timeout", raw.timeout.as_deref(), DEFAULT_TIMEOUT);
        let jitter = duration(&mut p, "jitter", raw.jitter.as_deref(), Duration::ZERO);
        if interval < Duration::from_millis(10) || interval > Duration::from_secs(3600) {
            p.add(
                "interval",
                format!(
                    "{} is outside 10ms..=1h",
                    humantime::format_duration(interval)
                ),
            );
        }
        if timeout.is_zero() || timeout > interval {
            p.add(
                "timeout",
                format!(
                    "{} must be above 0 and at most the interval ({})",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval)
                ),
            );
        }
        if jitter > interval {
            p.add(
                "jitter",
                format!(
                    "{} is above the interval ({})",
                    humantime::format_duration(jitter),
                    humantime::format_duration(interval)
                ),
            );
        }
        let threshold = |p: &mut Problems, field: &str, v: Option<i64>, default: u32| match v {
            None => default,
            Some(n) if (1..=100).contains(&n) => n as u32,
            Some(n) => {
                p.add(field, format!("{n} is outside 1..=100"));
                default
            }
        };
        let rise = threshold(&mut p, "rise", raw.rise, DEFAULT_RISE);
        let fall = threshold(&mut p, "fall", raw.fall, DEFAULT_FALL);
        let port_offset = match raw.port_offset {
            None => 0,
            Some(n) if (-65535..=65535).contains(&n) => n as i32,
            Some(n) => {
                p.add("port_offset", format!("{n} is outside -65535..=65535"));
                0
            }
        };
        p.finish(Self {
            port_offset,
            check,
            address,
            interval,
            timeout,
            jitter,
            rise,
            fall,
        })
    }
}

fn http_check(p: &mut Problems, raw: &RawHealth) -> CheckKind {
    let path = raw.path.clone().unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
        p.add(
            "path",
            format!("{path:?} is not a request path (starts with '/', no spaces)"),
        );
    }
    let status = match &raw.status {
        None => StatusRange { min: 200, max: 399 },
        Some(n) => match parse_status(&n.text()) {
            Ok(r) => r,
            Err(e) => {
                p.add("status", e);
                StatusRange { min: 200, max: 399 }
            }
        },
    };
    if let Some(h) = &raw.host
        && (h.is_empty() || h.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20))
    {
        p.add("host", format!("{h:?} is not a host name"));
    }
    CheckKind::Http {
        path,
        status,
        host: raw.host.clone(),
    }
}

fn parse_status(text: &str) -> Result<StatusRange, String> {
    let code = |s: &str| match s.trim().parse::<u16>() {
        Ok(c) if (100..=599).contains(&c) => Ok(c),
        _ => Err(format!(
            "{text:?} is not a status or range like 200 or 200-399 (codes 100..=599)"
        )),
    };
    let (min, max) = match text.split_once('-') {
        Some((a, b)) => (code(a)?, code(b)?),
        None => {
            let c = code(text)?;
            (c, c)
        }
    };
    if min > max {
        return Err(format!("{text:?} is an empty range"));
    }
    Ok(StatusRange { min, max })
}

fn exec_check(p: &mut Problems, raw: &RawHealth) -> CheckKind {
    let command = raw.command.clone().unwrap_or_default();
    match command.first() {
        None => p.add(
            "command",
            "is required for exec checks (a list: program and arguments)",
        ),
        Some(prog) if prog.is_empty() => p.add("command[0]", "the program is empty"),
        Some(_) => {}
    }
    CheckKind::Exec { command }
}

// ----------------------------------------------------------------------------------------
// Rollouts
// ----------------------------------------------------------------------------------------

/// One step as written: a percentage, or a table with its own hold and approval.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum RawStep {
    Weight(RawNumber),
    Table {
        weight: RawNumber,
        hold: Option<String>,
        #[serde(default)]
        approve: bool,
    },
}

/// `[services.rollout]` as written. Percentages are green's share of new connections.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    pub steps: Option<Vec<RawStep>>,
    pub hold: Option<String>,
    pub max_refusal_percent: Option<RawNumber>,
    pub refusal_margin_percent: Option<RawNumber>,
    pub max_reset_percent: Option<RawNumber>,
    pub reset_margin_percent: Option<RawNumber>,
    pub min_green_flows: Option<i64>,
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
        }
    }
}

/// Longest hold accepted for one step.
pub const MAX_HOLD: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most steps in one ramp.
pub const MAX_STEPS: usize = 100;

/// Checks a ramp: 1..=`MAX_STEPS` steps, weights strictly rising within 1..=10000 bp,
/// holds at most `MAX_HOLD`. Problems are named `steps[i]`.
pub fn check_steps(steps: &[Step]) -> Result<(), Vec<FieldProblem>> {
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
    pub fn from_raw(raw: &RawRollout, prefix: &str) -> Result<Self, Vec<FieldProblem>> {
        let mut p = Problems::new(prefix);
        let hold = duration(&mut p, "hold", raw.hold.as_deref(), DEFAULT_HOLD);
        if hold > MAX_HOLD {
            p.add(
                "hold",
                format!("{} is above 7 days", humantime::format_duration(hold)),
            );
        }
        let steps = match &raw.steps {
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
                        RawStep::Table {
                            weight,
                            hold,
                            approve,
                        } => (weight, hold.as_deref(), *approve),
                    };
                    let text = weight.text();
                    let weight_bp = match crate::config::parse_percent(&text) {
                        Ok(bp) => bp,
                        Err(e) => {
                            p.add(&format!("steps[{i}]"), format!("{text} {e}"));
                            continue;
                        }
                    };
                    let hold = duration(&mut p, &format!("steps[{i}].hold"), step_hold, hold);
                    steps.push(Step {
                        weight_bp,
                        hold,
                        approve,
                    });
                }
                // Only check the order when every weight parsed (indices stay aligned).
                if steps.len() == list.len() {
                    check_steps_into(&mut p, &steps);
                }
                steps
            }
        };
        let ppm = |p: &mut Problems, field: &str, v: &Option<RawNumber>, default: u32| match v {
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
        let gate = GateSettings {
            max_refusal_ppm: ppm(
                &mut p,
                "max_refusal_percent",
                &raw.max_refusal_percent,
                d.max_refusal_ppm,
            ),
            refusal_margin_ppm: ppm(
                &mut p,
                "refusal_margin_percent",
                &raw.refusal_margin_percent,
                d.refusal_margin_ppm,
            ),
            max_reset_ppm: ppm(
                &mut p,
                "max_reset_percent",
                &raw.max_reset_percent,
                d.max_reset_ppm,
            ),
            reset_margin_ppm: ppm(
                &mut p,
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
        };
        p.finish(Self { steps, hold, gate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(toml_text: &str) -> Result<HealthSettings, Vec<String>> {
        let raw: RawHealth = toml::from_str(toml_text).expect("toml parses");
        HealthSettings::from_raw(&raw, "services[0].health")
            .map_err(|v| v.iter().map(ToString::to_string).collect())
    }

    fn rollout(toml_text: &str) -> Result<RolloutSettings, Vec<String>> {
        let raw: RawRollout = toml::from_str(toml_text).expect("toml parses");
        RolloutSettings::from_raw(&raw, "services[0].rollout")
            .map_err(|v| v.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn health_defaults_are_haproxy_like() {
        let h = health("").unwrap();
        assert_eq!(h, HealthSettings::new(CheckKind::Tcp));
        assert_eq!((h.rise, h.fall), (2, 3));
    }

    #[test]
    fn http_health_parses() {
        let h = health(
            r#"kind = "http"
               path = "/healthz"
               status = "200-299"
               host = "app.example"
               interval = "500ms"
               timeout = "250ms"
               jitter = "50ms"
               rise = 1
               fall = 2"#,
        )
        .unwrap();
        assert_eq!(
            h.check,
            CheckKind::Http {
                path: "/healthz".into(),
                status: StatusRange { min: 200, max: 299 },
                host: Some("app.example".into())
            }
        );
        assert_eq!(h.interval, Duration::from_millis(500));
        assert_eq!((h.rise, h.fall), (1, 2));
        let h = health("kind = \"http\"\nstatus = 204").unwrap();
        assert!(
            matches!(h.check, CheckKind::Http { status, .. } if status == StatusRange { min: 204, max: 204 })
        );
    }

    #[test]
    fn health_problems_name_their_field() {
        let e = health(
            r#"kind = "http"
               path = "healthz"
               status = "300-200"
               interval = "soon"
               rise = 0
               command = ["x"]"#,
        )
        .unwrap_err();
        let want = [
            "services[0].health.command: is only used by exec checks, not http",
            "services[0].health.path: \"healthz\" is not a request path (starts with '/', no spaces)",
            "services[0].health.status: \"300-200\" is an empty range",
            "services[0].health.rise: 0 is outside 1..=100",
        ];
        for w in want {
            assert!(e.iter().any(|x| x == w), "missing {w:?} in {e:#?}");
        }
        assert!(
            e.iter()
                .any(|x| x.starts_with("services[0].health.interval: \"soon\" is not a duration")),
            "{e:#?}"
        );
        let e = health("kind = \"exec\"").unwrap_err();
        assert_eq!(
            e,
            [
                "services[0].health.command: is required for exec checks (a list: program and arguments)"
            ]
        );
        let e = health("kind = \"udp\"").unwrap_err();
        assert_eq!(
            e,
            ["services[0].health.kind: \"udp\" is not a check kind (expected tcp, http or exec)"]
        );
        let e = health("interval = \"1s\"\ntimeout = \"2s\"").unwrap_err();
        assert_eq!(
            e,
            ["services[0].health.timeout: 2s must be above 0 and at most the interval (1s)"]
        );
        assert!(toml::from_str::<RawHealth>("intervall = \"1s\"").is_err());
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
