//! Webhooks of a rollout (`[[services.rollout.webhook]]`) and notifications of rollout
//! events (`[[daemon.notify]]`).
//!
//! ```toml
//! [[services.rollout.webhook]]
//! kind = "confirm-step"              # confirm-rollout | confirm-step | confirm-promotion
//!                                    # | post-rollout | rollback
//! url = "http://127.0.0.1:9000/go"   # required, http:// or https://
//! # ca = "/etc/shifter/hooks-ca.pem" # https: the CA that signs the receiver (default: system roots)
//! timeout = "5s"                     # an answer slower than this is a "no"
//! interval = "10s"                   # between attempts after a "no"
//! failure_limit = 30                 # this many "no"s in a row: give up (see below)
//!
//! [[daemon.notify]]
//! url = "http://127.0.0.1:9000/events"
//! format = "json"                    # json | slack (Slack's incoming-webhook {"text": ...})
//! # ca = "/etc/shifter/hooks-ca.pem" # https: as above
//! timeout = "5s"
//! retries = 5                        # further attempts per event, backoff 500ms doubling to 30s
//! queue = 1024                       # events waiting; a full queue drops (counted)
//! ```
//!
//! A confirm hook answered 2xx means go; anything else, or no answer within the timeout,
//! holds the rollout and asks again after `interval`; at `failure_limit` "no"s in a row the
//! rollout rolls back (as Argo Rollouts aborts on a failed webhook; the rollout's `rollback`
//! policy decides how). `post-rollout` and `rollback` hooks are told after the fact and never
//! hold anything: they are retried up to `failure_limit` times, then given up (logged, counted).

use std::{fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{Problems, duration_within};

pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HOOK_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_HOOK_FAILURE_LIMIT: u32 = 30;
pub const DEFAULT_NOTIFY_RETRIES: u32 = 5;
pub const DEFAULT_NOTIFY_QUEUE: usize = 1024;
/// Most notification targets, and most webhooks of one service.
pub const MAX_NOTIFY: usize = 16;

/// When a webhook is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookKind {
    /// Before the first step's weight is set.
    ConfirmRollout,
    /// Before each further step's weight is set.
    ConfirmStep,
    /// Before `promote` swaps the roles.
    ConfirmPromotion,
    /// After a rollout completed or rolled back (told, never waited for).
    PostRollout,
    /// After a rollback began (told, never waited for: a rollback waits for nobody).
    Rollback,
}

impl HookKind {
    pub const ALL: [Self; 5] = [
        Self::ConfirmRollout,
        Self::ConfirmStep,
        Self::ConfirmPromotion,
        Self::PostRollout,
        Self::Rollback,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ConfirmRollout => "confirm-rollout",
            Self::ConfirmStep => "confirm-step",
            Self::ConfirmPromotion => "confirm-promotion",
            Self::PostRollout => "post-rollout",
            Self::Rollback => "rollback",
        }
    }

    /// A confirm hook holds the rollout until it answers 2xx.
    pub fn confirms(self) -> bool {
        matches!(
            self,
            Self::ConfirmRollout | Self::ConfirmStep | Self::ConfirmPromotion
        )
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One validated webhook of a service's rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSettings {
    pub kind: HookKind,
    pub url: String,
    pub timeout: Duration,
    pub interval: Duration,
    pub failure_limit: u32,
    /// https: the CA file that signs the receiver's certificate (`None`: system roots).
    pub ca: Option<PathBuf>,
}

/// The body format of a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyFormat {
    /// The rollout event as JSON.
    Json,
    /// Slack's incoming-webhook format: `{"text": "..."}`.
    Slack,
}

/// One validated notification target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifySettings {
    pub url: String,
    pub format: NotifyFormat,
    pub timeout: Duration,
    pub retries: u32,
    pub queue: usize,
    /// https: the CA file that signs the receiver's certificate (`None`: system roots).
    pub ca: Option<PathBuf>,
}

/// The TLS settings of an `https://` URL with `ca` (`None` for `http://`); the server name
/// is the URL's host.
pub fn url_tls(url: &str, ca: Option<&PathBuf>) -> Option<super::TlsSettings> {
    url.starts_with("https://").then(|| super::TlsSettings {
        ca: ca.cloned(),
        ..super::TlsSettings::default()
    })
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub timeout: Option<String>,
    pub interval: Option<String>,
    pub failure_limit: Option<i64>,
    pub ca: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub url: Option<String>,
    pub format: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<i64>,
    pub queue: Option<i64>,
    pub ca: Option<String>,
}

/// An `http(s)://host[:port]/path` URL, or the problem.
fn http_url(p: &mut Problems, field: &str, v: Option<&str>) -> String {
    let Some(u) = v else {
        p.add(field, "required: an http:// or https:// URL");
        return String::new();
    };
    match u.parse::<hyper::Uri>() {
        Ok(x)
            if matches!(x.scheme_str(), Some("http" | "https"))
                && x.host().is_some_and(|h| !h.is_empty()) =>
        {
            u.to_owned()
        }
        _ => {
            p.add(
                field,
                format!("{u:?} is not an http:// or https:// URL with a host"),
            );
            String::new()
        }
    }
}

/// `ca` of an https URL: an absolute path to a PEM file with a certificate (read now).
fn ca_file(p: &mut Problems, field: &str, url: &str, v: Option<&str>) -> Option<PathBuf> {
    let v = v?;
    if !url.starts_with("https://") {
        p.add(field, "is only used with an https:// url");
        return None;
    }
    let path = PathBuf::from(v);
    if !path.is_absolute() {
        p.add(field, format!("{v:?} is not an absolute path"));
        return None;
    }
    let tls = super::TlsSettings {
        ca: Some(path.clone()),
        ..super::TlsSettings::default()
    };
    if let Err((_, message)) = tls.client_config() {
        p.add(field, message);
    }
    Some(path)
}

fn int_in(p: &mut Problems, field: &str, v: Option<i64>, range: (i64, i64), default: i64) -> i64 {
    match v {
        None => default,
        Some(n) if (range.0..=range.1).contains(&n) => n,
        Some(n) => {
            p.add(field, format!("{n} is outside {}..={}", range.0, range.1));
            default
        }
    }
}

fn timeout(p: &mut Problems, field: &str, v: Option<&str>) -> Duration {
    duration_within(
        p,
        field,
        v,
        DEFAULT_HOOK_TIMEOUT,
        Duration::from_millis(10)..=Duration::from_secs(60),
    )
}

/// Validates a service's webhooks; fields are named `webhook[i].field`. One hook of each kind.
pub(super) fn validate_hooks(p: &mut Problems, raw: &[RawWebhook]) -> Vec<WebhookSettings> {
    if raw.len() > HookKind::ALL.len() {
        p.add(
            "webhook",
            format!("{} webhooks; at most one of each kind", raw.len()),
        );
    }
    let mut out: Vec<WebhookSettings> = Vec::new();
    for (i, h) in raw.iter().enumerate() {
        let f = |k: &str| format!("webhook[{i}].{k}");
        let kind = match h.kind.as_deref() {
            None => {
                p.add(f("kind"), "required: confirm-rollout, confirm-step, confirm-promotion, post-rollout or rollback");
                continue;
            }
            Some(k) => match HookKind::ALL.iter().find(|x| x.name() == k) {
                Some(k) => *k,
                None => {
                    p.add(
                        f("kind"),
                        format!("{k:?}: want confirm-rollout, confirm-step, confirm-promotion, post-rollout or rollback"),
                    );
                    continue;
                }
            },
        };
        if out.iter().any(|o| o.kind == kind) {
            p.add(
                f("kind"),
                format!("{kind} is configured twice in this service"),
            );
        }
        let url = http_url(p, &f("url"), h.url.as_deref());
        let ca = ca_file(p, &f("ca"), &url, h.ca.as_deref());
        let timeout = timeout(p, &f("timeout"), h.timeout.as_deref());
        let interval = duration_within(
            p,
            &f("interval"),
            h.interval.as_deref(),
            DEFAULT_HOOK_INTERVAL,
            Duration::from_millis(10)..=Duration::from_secs(3600),
        );
        let failure_limit = int_in(
            p,
            &f("failure_limit"),
            h.failure_limit,
            (1, 10_000),
            i64::from(DEFAULT_HOOK_FAILURE_LIMIT),
        ) as u32;
        out.push(WebhookSettings {
            kind,
            url,
            timeout,
            interval,
            failure_limit,
            ca,
        });
    }
    out
}

/// Validates `[[daemon.notify]]`; fields are named `daemon.notify[i].field`.
pub(super) fn validate_notify(p: &mut Problems, raw: &[RawNotify]) -> Vec<NotifySettings> {
    if raw.len() > MAX_NOTIFY {
        p.add(
            "daemon.notify",
            format!("{} targets; at most {MAX_NOTIFY}", raw.len()),
        );
    }
    raw.iter()
        .enumerate()
        .map(|(i, n)| {
            let f = |k: &str| format!("daemon.notify[{i}].{k}");
            let url = http_url(p, &f("url"), n.url.as_deref());
            let ca = ca_file(p, &f("ca"), &url, n.ca.as_deref());
            let format = match n.format.as_deref() {
                None | Some("json") => NotifyFormat::Json,
                Some("slack") => NotifyFormat::Slack,
                Some(other) => {
                    p.add(f("format"), format!("{other:?}: want json or slack"));
                    NotifyFormat::Json
                }
            };
            NotifySettings {
                url,
                format,
                timeout: timeout(p, &f("timeout"), n.timeout.as_deref()),
                retries: int_in(
                    p,
                    &f("retries"),
                    n.retries,
                    (0, 100),
                    i64::from(DEFAULT_NOTIFY_RETRIES),
                ) as u32,
                queue: int_in(
                    p,
                    &f("queue"),
                    n.queue,
                    (1, 1 << 20),
                    DEFAULT_NOTIFY_QUEUE as i64,
                ) as usize,
                ca,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const SVC: &str =
        "[[services]]\nname = \"web\"\nport = 80\nblue_port = 8081\ngreen_port = 8082\n";

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(text, Path::new("t.toml")).map_err(|e| e.problems())
    }

    #[test]
    fn webhooks_and_notify_targets_parse() {
        let c = parse(&format!(
            "[[daemon.notify]]\nurl = \"http://127.0.0.1:9000/n\"\nformat = \"slack\"\nretries = 2\nqueue = 8\n\
             [[daemon.notify]]\nurl = \"http://[::1]:9001/\"\n\
             {SVC}[[services.rollout.webhook]]\nkind = \"confirm-step\"\nurl = \"http://hooks.example:8080/go?x=1\"\n\
             timeout = \"2s\"\ninterval = \"500ms\"\nfailure_limit = 4\n\
             [[services.rollout.webhook]]\nkind = \"rollback\"\nurl = \"http://127.0.0.1:9000/rb\"\n"
        ))
        .unwrap();
        let n = &c.daemon.notify;
        assert_eq!(n.len(), 2);
        assert_eq!(
            (n[0].format, n[0].retries, n[0].queue),
            (NotifyFormat::Slack, 2, 8)
        );
        assert_eq!(
            (n[1].format, n[1].retries, n[1].queue, n[1].timeout),
            (
                NotifyFormat::Json,
                DEFAULT_NOTIFY_RETRIES,
                DEFAULT_NOTIFY_QUEUE,
                DEFAULT_HOOK_TIMEOUT
            )
        );
        let r = &c.services[0].rollout;
        let h = r.webhook(HookKind::ConfirmStep).expect("confirm-step");
        assert_eq!(h.url, "http://hooks.example:8080/go?x=1");
        assert_eq!(
            (h.timeout, h.interval, h.failure_limit),
            (Duration::from_secs(2), Duration::from_millis(500), 4)
        );
        let rb = r.webhook(HookKind::Rollback).expect("rollback");
        assert_eq!(rb.failure_limit, DEFAULT_HOOK_FAILURE_LIMIT);
        assert!(r.webhook(HookKind::ConfirmRollout).is_none());
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = parse(&format!(
            "[[daemon.notify]]\nurl = \"ftp://x/\"\nformat = \"xml\"\nretries = -1\nqueue = 0\ntimeout = \"0s\"\n\
             {SVC}[[services.rollout.webhook]]\nkind = \"confirm\"\nurl = \"http://x/\"\n\
             [[services.rollout.webhook]]\nkind = \"confirm-step\"\n\
             [[services.rollout.webhook]]\nkind = \"confirm-step\"\nurl = \"ftp://x\"\nfailure_limit = 0\ninterval = \"soon\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            e,
            [
                "daemon.notify[0].url: \"ftp://x/\" is not an http:// or https:// URL with a host",
                "daemon.notify[0].format: \"xml\": want json or slack",
                "daemon.notify[0].timeout: 0s is outside 10ms..=1m",
                "daemon.notify[0].retries: -1 is outside 0..=100",
                "daemon.notify[0].queue: 0 is outside 1..=1048576",
                "services[0].rollout.webhook[0].kind: \"confirm\": want confirm-rollout, confirm-step, confirm-promotion, post-rollout or rollback",
                "services[0].rollout.webhook[1].url: required: an http:// or https:// URL",
                "services[0].rollout.webhook[2].kind: confirm-step is configured twice in this service",
                "services[0].rollout.webhook[2].url: \"ftp://x\" is not an http:// or https:// URL with a host",
                "services[0].rollout.webhook[2].interval: \"soon\" is not a duration like 30s or 1m30s (expected number at 0)",
                "services[0].rollout.webhook[2].failure_limit: 0 is outside 1..=10000",
            ]
            .map(String::from)
        );
        assert!(
            parse(&format!(
                "{SVC}[[services.rollout.webhook]]\nkind = \"rollback\"\nuri = \"http://x\"\n"
            ))
            .unwrap_err()[0]
                .contains("unknown field `uri`")
        );
        assert_eq!(
            parse(&format!(
                "{SVC}[[services.rollout.webhook]]\nkind = \"rollback\"\nurl = \"http://x/\"\nca = \"/x.pem\"\n\
                 [[services.rollout.webhook]]\nkind = \"post-rollout\"\nurl = \"https://x/\"\nca = \"x.pem\"\n\
                 [[services.rollout.webhook]]\nkind = \"confirm-step\"\nurl = \"https://x/\"\nca = \"/nonexistent.pem\"\n"
            ))
            .unwrap_err()
            .iter()
            .map(|e| e.split(": I/O error").next().unwrap_or(e).to_owned())
            .collect::<Vec<_>>(),
            [
                "services[0].rollout.webhook[0].ca: is only used with an https:// url",
                "services[0].rollout.webhook[1].ca: \"x.pem\" is not an absolute path",
                "services[0].rollout.webhook[2].ca: /nonexistent.pem",
            ]
        );
        let c = parse(&format!(
            "{SVC}[[services.rollout.webhook]]\nkind = \"rollback\"\nurl = \"https://hooks.example/rb\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.services[0].rollout.webhooks[0].ca, None,
            "https with the system roots"
        );
    }
}
