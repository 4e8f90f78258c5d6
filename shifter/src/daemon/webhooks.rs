//! Webhooks and notifications, off the engine's thread.
//!
//! - Confirm hooks (`confirm-rollout`, `confirm-step`, `confirm-promotion`): the engine holds
//!   and emits a [`HookCall`]; [`Webhooks::confirm`] starts one task that waits the hook's
//!   interval (not before the first attempt), POSTs, and posts the answer to the actor as
//!   `Command::Hook`. The engine decides what the answer means (go, hold, give up).
//! - Told hooks (`post-rollout`, `rollback`): one task per call, retried every interval up to
//!   the hook's failure limit; they never hold anything.
//! - Notifications (`[[daemon.notify]]`): every rollout event goes to each target's bounded
//!   queue with `try_send`, so the engine never waits; a full queue drops the event and counts
//!   it. One task per target sends them in order, retried with backoff (500 ms doubling, at
//!   most 30 s) up to the target's `retries`.
//!
//! Every outcome is counted ([`WebhookStats`], in `/metrics`) and failures are logged.
//! `https://` URLs go over rustls, verified for the URL's host against the URL's `ca` or
//! the system roots (that configuration is built once).
//!
//! Over 700 lines, about 330 of them its unit tests: confirm hooks, told hooks and notification
//! queues share one HTTP client, one retry schedule and one set of counters.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use serde_json::json;
use tokio::{net::TcpStream, sync::mpsc};
use tracing::{debug, warn};

use super::engine::Command;
use crate::{
    config::{HookKind, NotifyFormat, NotifySettings, WebhookSettings},
    model::bp_text,
    rollout::{HookAnswer, HookCall, RolloutEvent},
    util::{error_chain, now_unix_ms},
};

/// Largest answer body read (and dropped) from a webhook.
const ANSWER_LIMIT: usize = 64 << 10;
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A URL as logs and metrics show it: scheme, host and port only. The path and query of a
/// webhook URL often are its secret (Slack's incoming webhooks), and `/metrics` is readable
/// by every peer of the socket.
pub(crate) fn shown(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(u) => format!(
            "{}://{}",
            u.scheme_str().unwrap_or("?"),
            u.authority()
                .map_or("?", |a| a.as_str().rsplit('@').next().unwrap_or("?"))
        ),
        Err(_) => "?".to_owned(),
    }
}

/// The `target` label (and log name) of the `i`-th notification target.
pub(crate) fn target_label(i: usize, url: &str) -> String {
    format!("notify[{i}] {}", shown(url))
}

/// A tokio task aborted when dropped.
pub(crate) struct Task(pub tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// POSTs `body` (JSON) to `url` (`ca`: the CA of an https receiver, else the system roots);
/// the answer's status, or why there is none. `timeout` bounds the whole exchange.
pub(crate) async fn post(
    url: &str,
    ca: Option<&std::path::PathBuf>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<StatusCode, String> {
    tokio::time::timeout(timeout, post_inner(url, ca, body))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            ))
        })
}

/// The TLS client configuration of an https URL; the system-roots one is built once.
fn tls_config(tls: &crate::config::TlsSettings) -> Result<Arc<rustls::ClientConfig>, String> {
    static SYSTEM: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    let build = || tls.client_config().map_err(|(_, m)| m);
    if tls.ca.is_none() {
        return SYSTEM.get_or_init(build).clone();
    }
    build()
}

async fn post_inner(
    url: &str,
    ca: Option<&std::path::PathBuf>,
    body: Vec<u8>,
) -> Result<StatusCode, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let host = uri.host().ok_or("URL has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = crate::config::url_tls(url, ca);
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let Some(tls) = tls else {
        return exchange(stream, &uri, host, body).await;
    };
    let config = tls_config(&tls)?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
    exchange(stream, &uri, host, body).await
}

/// One POST over an open connection (plain or TLS).
async fn exchange<S>(
    stream: S,
    uri: &hyper::Uri,
    host: String,
    body: Vec<u8>,
) -> Result<StatusCode, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| error_chain(&e))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = uri.authority().map_or(host, ToString::to_string);
    let req = Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "shifter-webhook/1")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let out = match sender.send_request(req).await {
        Ok(r) => {
            let status = r.status();
            let _ = Limited::new(r.into_body(), ANSWER_LIMIT).collect().await;
            Ok(status)
        }
        Err(e) => Err(error_chain(&e)),
    };
    drop(sender);
    conn.abort();
    out
}

/// Counts of every webhook call and notification, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct WebhookStats {
    /// (service, hook, result "success" | "failure") -> calls.
    hooks: Mutex<BTreeMap<(String, HookKind, &'static str), u64>>,
    /// (target URL, result "sent" | "failed" | "given-up" | "dropped") -> count.
    notify: Mutex<BTreeMap<(String, &'static str), u64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    service: String,
    hook: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    target: String,
    result: String,
}

impl WebhookStats {
    fn hook(&self, service: &str, hook: HookKind, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        *self
            .hooks
            .lock()
            .expect("stats lock")
            .entry((service.to_owned(), hook, result))
            .or_default() += 1;
    }

    fn notified(&self, url: &str, result: &'static str) {
        *self
            .notify
            .lock()
            .expect("stats lock")
            .entry((url.to_owned(), result))
            .or_default() += 1;
    }

    /// The notification count of `url` with `result`.
    #[cfg(test)]
    pub fn notifications(&self, url: &str, result: &'static str) -> u64 {
        self.notify
            .lock()
            .expect("stats lock")
            .get(&(url.to_owned(), result))
            .copied()
            .unwrap_or(0)
    }

    /// `shifter_webhook_calls_total{service,hook,result}` and
    /// `shifter_notifications_total{target,result}` (sent, failed attempts, given up, dropped).
    pub fn register(&self, reg: &mut Registry) {
        let hooks = Family::<HookLabels, Counter>::default();
        for ((service, hook, result), n) in self.hooks.lock().expect("stats lock").iter() {
            hooks
                .get_or_create(&HookLabels {
                    service: service.clone(),
                    hook: hook.name().to_owned(),
                    result: (*result).to_owned(),
                })
                .inc_by(*n);
        }
        reg.register(
            "webhook_calls",
            "Webhook calls by service, hook and result (success: a 2xx answer)",
            hooks,
        );
        let notify = Family::<NotifyLabels, Counter>::default();
        for ((target, result), n) in self.notify.lock().expect("stats lock").iter() {
            notify
                .get_or_create(&NotifyLabels {
                    target: target.clone(),
                    result: (*result).to_owned(),
                })
                .inc_by(*n);
        }
        reg.register(
            "notifications",
            "Rollout-event notifications by target and result (sent, failed attempts, given-up events, dropped on a full queue)",
            notify,
        );
    }
}

/// One notification target: its queue and its sending task.
struct Target {
    settings: NotifySettings,
    /// `notify[i] scheme://host:port`: what logs and metrics show of it.
    label: String,
    tx: mpsc::Sender<Vec<u8>>,
    /// Events queued or being sent: what a shutdown that cannot wait drops.
    undelivered: Arc<AtomicU64>,
    task: Task,
}

/// The webhooks of the daemon: notification targets and the tasks of told hooks.
pub(crate) struct Webhooks {
    rt: tokio::runtime::Handle,
    targets: Vec<Target>,
    /// Post-rollout and rollback hooks still being told (finished ones pruned).
    told: Vec<Task>,
    pub stats: Arc<WebhookStats>,
}

/// How long a stopping daemon waits for queued notifications and told hooks.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The JSON body of a hook call.
pub(crate) fn hook_body(
    service: &str,
    rollout_id: Option<u64>,
    call: &HookCall,
    steps: usize,
    reason: &str,
) -> serde_json::Value {
    json!({
        "hook": call.hook.name(),
        "service": service,
        "rollout_id": rollout_id,
        "step": call.step + 1,
        "steps": steps,
        "weight_before_bp": call.weight_before_bp,
        "weight_after_bp": call.weight_after_bp,
        "reason": reason,
        "attempt": call.failures + 1,
        "time_ms": now_unix_ms(),
    })
}

/// The notification body of a rollout event in `format`.
pub(crate) fn notice(format: NotifyFormat, ev: &RolloutEvent, rollout_id: Option<u64>) -> Vec<u8> {
    let v = match format {
        NotifyFormat::Json => json!({
            "service": ev.service,
            "rollout_id": rollout_id,
            "seq": ev.seq,
            "from": ev.from,
            "to": ev.to,
            "cause": ev.cause,
            "reason": ev.cause.to_string(),
            "weight_before_bp": ev.weight_before_bp,
            "weight_after_bp": ev.weight_after_bp,
            "dry_run": ev.dry_run,
            "time_ms": now_unix_ms(),
        }),
        NotifyFormat::Slack => json!({
            "text": format!(
                "shifter: {}: rollout {} -> {}, green {} -> {}{}: {}",
                ev.service,
                ev.from,
                ev.to,
                bp_text(ev.weight_before_bp),
                bp_text(ev.weight_after_bp),
                if ev.dry_run { " (dry run)" } else { "" },
                ev.cause
            ),
        }),
    };
    serde_json::to_vec(&v).expect("JSON of plain values")
}

impl Webhooks {
    pub fn new(rt: tokio::runtime::Handle) -> Self {
        Self {
            rt,
            targets: Vec::new(),
            told: Vec::new(),
            stats: Arc::default(),
        }
    }

    /// Sets the notification targets; unchanged targets keep their queue and task.
    pub fn set_targets(&mut self, targets: &[NotifySettings]) {
        let mut old = std::mem::take(&mut self.targets);
        for (n, settings) in targets.iter().enumerate() {
            let label = target_label(n, &settings.url);
            if let Some(i) = old
                .iter()
                .position(|t| &t.settings == settings && t.label == label)
            {
                self.targets.push(old.swap_remove(i));
                continue;
            }
            let (tx, rx) = mpsc::channel(settings.queue);
            let undelivered = Arc::new(AtomicU64::new(0));
            let task = Task(self.rt.spawn(deliver(
                settings.clone(),
                label.clone(),
                rx,
                self.stats.clone(),
                undelivered.clone(),
            )));
            self.targets.push(Target {
                settings: settings.clone(),
                label,
                tx,
                undelivered,
                task,
            });
        }
    }

    /// Queues `ev` for every target without waiting: a full queue drops it (counted).
    pub fn notify(&self, ev: &RolloutEvent, rollout_id: Option<u64>) {
        for t in &self.targets {
            let body = notice(t.settings.format, ev, rollout_id);
            if t.tx.try_send(body).is_ok() {
                t.undelivered.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.notified(&t.label, "dropped");
                debug!(
                    "notify {}: queue full ({}), event {} of {} dropped",
                    t.label, t.settings.queue, ev.seq, ev.service
                );
            }
        }
    }

    /// Starts asking a confirm hook; the task posts the answer to the actor.
    pub fn confirm(
        &self,
        settings: WebhookSettings,
        service: String,
        call: HookCall,
        body: serde_json::Value,
        commands: mpsc::Sender<Command>,
    ) -> Task {
        let stats = self.stats.clone();
        Task(self.rt.spawn(async move {
            if call.failures > 0 {
                tokio::time::sleep(settings.interval).await;
            }
            let body = serde_json::to_vec(&body).expect("JSON of plain values");
            let (ok, detail) =
                match post(&settings.url, settings.ca.as_ref(), body, settings.timeout).await {
                    Ok(s) => (s.is_success(), format!("HTTP {}", s.as_u16())),
                    Err(e) => (false, e),
                };
            stats.hook(&service, call.hook, ok);
            if !ok {
                warn!(
                    "{service}: {} hook {}: {detail}",
                    call.hook,
                    shown(&settings.url)
                );
            }
            let answer = HookAnswer {
                hook: call.hook,
                step: call.step,
                ok,
                detail,
            };
            let _ = commands.send(Command::Hook { service, answer }).await;
        }))
    }

    /// Tells a post-rollout or rollback hook, retried every interval up to its failure
    /// limit; nothing waits for it.
    pub fn tell(&mut self, settings: WebhookSettings, service: String, body: serde_json::Value) {
        let stats = self.stats.clone();
        let body = serde_json::to_vec(&body).expect("JSON of plain values");
        self.told.retain(|t| !t.0.is_finished());
        let task = self.rt.spawn(async move {
            let retry = Retry {
                attempts: settings.failure_limit,
                first_pause: settings.interval,
                max_pause: settings.interval,
            };
            let sent = post_retried(
                &settings.url,
                settings.ca.as_ref(),
                &body,
                settings.timeout,
                retry,
                |attempt, why| {
                    stats.hook(&service, settings.kind, false);
                    warn!(
                        "{service}: {} hook {} (attempt {attempt} of {}): {why}",
                        settings.kind,
                        shown(&settings.url),
                        settings.failure_limit
                    );
                },
            )
            .await;
            if sent {
                stats.hook(&service, settings.kind, true);
            }
        });
        self.told.push(Task(task));
    }

    /// At shutdown: closes every notification queue and waits up to `grace` for what is
    /// queued, and for the hooks being told, to be delivered (retries included); what is
    /// still undelivered then is logged and counted as dropped. Called from outside the
    /// runtime (the engine thread).
    pub fn drain(&mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let targets = std::mem::take(&mut self.targets);
        let told = std::mem::take(&mut self.told);
        let stats = self.stats.clone();
        self.rt.block_on(async move {
            for t in targets {
                drop(t.tx);
                let mut task = t.task;
                if tokio::time::timeout_at(deadline, &mut task.0)
                    .await
                    .is_err()
                {
                    let left = t.undelivered.load(Ordering::Relaxed);
                    for _ in 0..left {
                        stats.notified(&t.label, "dropped");
                    }
                    warn!(
                        "notify {}: {left} notification(s) undelivered after the shutdown \
                         grace of {} s, dropped",
                        t.label,
                        grace.as_secs()
                    );
                }
            }
            for mut hook in told {
                if tokio::time::timeout_at(deadline, &mut hook.0)
                    .await
                    .is_err()
                {
                    warn!(
                        "a post-rollout or rollback hook was still being told after the \
                         shutdown grace of {} s: given up",
                        grace.as_secs()
                    );
                }
            }
        });
    }
}

/// Sends one target's queue in order.
async fn deliver(
    settings: NotifySettings,
    label: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    stats: Arc<WebhookStats>,
    undelivered: Arc<AtomicU64>,
) {
    while let Some(body) = rx.recv().await {
        deliver_one(&settings, &label, body, &stats).await;
        undelivered.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One event to one target, retried with backoff up to the target's limit.
async fn deliver_one(settings: &NotifySettings, label: &str, body: Vec<u8>, stats: &WebhookStats) {
    let attempts = settings.retries + 1;
    let retry = Retry {
        attempts,
        first_pause: BACKOFF_FIRST,
        max_pause: BACKOFF_MAX,
    };
    let sent = post_retried(
        &settings.url,
        settings.ca.as_ref(),
        &body,
        settings.timeout,
        retry,
        |attempt, why| {
            stats.notified(label, "failed");
            if attempt == attempts {
                stats.notified(label, "given-up");
                warn!("notify {label}: giving up an event after {attempts} attempts: {why}");
            } else {
                debug!("notify {label} (attempt {attempt}): {why}");
            }
        },
    )
    .await;
    if sent {
        stats.notified(label, "sent");
    }
}

/// How a POST is retried: `attempts` in all; the pause after the first failure is
/// `first_pause`, doubling after each further one up to `max_pause`.
#[derive(Clone, Copy)]
struct Retry {
    attempts: u32,
    first_pause: Duration,
    max_pause: Duration,
}

/// POSTs `body` until a 2xx answer or `retry.attempts` tries; `failed(attempt, why)` hears of
/// each failed try (attempts count from 1). Returns whether it was delivered.
async fn post_retried(
    url: &str,
    ca: Option<&std::path::PathBuf>,
    body: &[u8],
    timeout: Duration,
    retry: Retry,
    mut failed: impl FnMut(u32, &str),
) -> bool {
    let mut pause = retry.first_pause;
    for attempt in 1..=retry.attempts {
        let why = match post(url, ca, body.to_vec(), timeout).await {
            Ok(s) if s.is_success() => return true,
            Ok(s) => format!("HTTP {}", s.as_u16()),
            Err(e) => e,
        };
        failed(attempt, &why);
        if attempt < retry.attempts {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(retry.max_pause);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::*;
    use crate::rollout::{Cause, StateName};

    /// A receiver on loopback answering `status` after `delay`; every body it got, in order.
    async fn receiver(
        status: u16,
        delay: Duration,
    ) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = l.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then Content-Length bytes of body.
                let body = loop {
                    let n = c.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break Some(buf[end + 4..end + 4 + len].to_vec());
                        }
                    }
                };
                if let Some(b) = body {
                    g.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&b).expect("a JSON body"));
                }
                tokio::time::sleep(delay).await;
                let _ = c
                    .write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        (url, got)
    }

    fn event(seq: u64) -> RolloutEvent {
        RolloutEvent {
            seq,
            at: Duration::from_secs(seq),
            service: "web".into(),
            from: StateName::Running,
            to: StateName::Running,
            cause: Cause::StepPassed {
                step: 0,
                detail: "ok".into(),
            },
            weight_before_bp: 100,
            weight_after_bp: 500,
            dry_run: false,
            actuation: None,
        }
    }

    fn target(url: &str, queue: usize, retries: u32) -> NotifySettings {
        NotifySettings {
            url: url.into(),
            format: NotifyFormat::Json,
            timeout: Duration::from_secs(1),
            retries,
            queue,
            ca: None,
        }
    }

    #[tokio::test]
    async fn notifications_arrive_once_each_in_order() {
        let (url, got) = receiver(200, Duration::ZERO).await;
        let mut w = Webhooks::new(tokio::runtime::Handle::current());
        w.set_targets(&[target(&url, 64, 3)]);
        for seq in 0..20 {
            w.notify(&event(seq), Some(7));
        }
        let start = Instant::now();
        while w.stats.notifications(&target_label(0, &url), "sent") < 20 {
            assert!(start.elapsed() < Duration::from_secs(10), "not all sent");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seqs: Vec<u64> = got
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>());
        let first = got.lock().unwrap()[0].clone();
        assert_eq!(first["rollout_id"], 7);
        assert_eq!(first["cause"]["cause"], "step-passed");
        assert_eq!(first["weight_after_bp"], 500);
        assert_eq!(w.stats.notifications(&target_label(0, &url), "failed"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopping_daemon_delivers_what_is_queued_within_the_grace() {
        // 200 ms per answer: five events take about a second, well inside the grace.
        let (url, got) = receiver(200, Duration::from_millis(200)).await;
        let mut w = Webhooks::new(tokio::runtime::Handle::current());
        w.set_targets(&[target(&url, 64, 0)]);
        for seq in 0..5 {
            w.notify(&event(seq), None);
        }
        // The engine thread drains from outside the runtime.
        let w = tokio::task::spawn_blocking(move || {
            w.drain(Duration::from_secs(5));
            w
        })
        .await
        .expect("drain");
        let seqs: Vec<u64> = got
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..5).collect::<Vec<_>>(), "all delivered, in order");
        assert_eq!(w.stats.notifications(&target_label(0, &url), "dropped"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_the_grace_cannot_deliver_is_counted_as_dropped() {
        // 2 s per answer against a grace of 300 ms: the first is in flight, four wait.
        let (url, _got) = receiver(200, Duration::from_secs(2)).await;
        let mut w = Webhooks::new(tokio::runtime::Handle::current());
        w.set_targets(&[target(&url, 64, 0)]);
        for seq in 0..5 {
            w.notify(&event(seq), None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the first is taken
        let start = Instant::now();
        let w = tokio::task::spawn_blocking(move || {
            w.drain(Duration::from_millis(300));
            w
        })
        .await
        .expect("drain");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "bounded by the grace"
        );
        // The one in flight and the four queued.
        assert_eq!(w.stats.notifications(&target_label(0, &url), "dropped"), 5);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        // A receiver that answers after 2 s: the task is busy with the first event.
        let (url, _got) = receiver(200, Duration::from_secs(2)).await;
        let mut w = Webhooks::new(tokio::runtime::Handle::current());
        w.set_targets(&[target(&url, 2, 0)]);
        let t = Instant::now();
        for seq in 0..10 {
            w.notify(&event(seq), None);
        }
        assert!(
            t.elapsed() < Duration::from_millis(50),
            "notify waited: {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // One in flight (taken from the queue) plus two queued at most; the rest dropped.
        assert!(
            w.stats.notifications(&target_label(0, &url), "dropped") >= 7,
            "{:?}",
            w.stats
        );
        let mut reg = Registry::with_prefix("shifter");
        w.stats.register(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(
            text.contains(&format!(
                "shifter_notifications_total{{target=\"{}\",result=\"dropped\"}}",
                target_label(0, &url)
            )),
            "{text}"
        );
    }

    #[tokio::test]
    async fn failures_are_retried_then_given_up_and_counted() {
        let (url, got) = receiver(500, Duration::ZERO).await;
        let mut w = Webhooks::new(tokio::runtime::Handle::current());
        w.set_targets(&[target(&url, 8, 1)]);
        w.notify(&event(1), None);
        let start = Instant::now();
        while w.stats.notifications(&target_label(0, &url), "given-up") < 1 {
            assert!(start.elapsed() < Duration::from_secs(10), "{:?}", w.stats);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            w.stats.notifications(&target_label(0, &url), "failed"),
            2,
            "one try and one retry"
        );
        assert_eq!(got.lock().unwrap().len(), 2);
        // A closed port: an error, quickly.
        let e = post(
            "http://127.0.0.1:9/x",
            None,
            b"{}".to_vec(),
            Duration::from_secs(1),
        )
        .await;
        assert!(e.as_ref().is_err_and(|e| e.contains("connect")), "{e:?}");
    }

    #[test]
    fn urls_are_shown_without_their_path_query_or_user() {
        assert_eq!(
            shown("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            shown("http://user:pw@10.0.0.1:9000/x?token=1"),
            "http://10.0.0.1:9000"
        );
        assert_eq!(
            target_label(2, "http://[::1]:80/a"),
            "notify[2] http://[::1]:80"
        );
    }

    #[test]
    fn slack_format_is_one_text() {
        let v: serde_json::Value =
            serde_json::from_slice(&notice(NotifyFormat::Slack, &event(3), None)).unwrap();
        assert_eq!(
            v["text"],
            "shifter: web: rollout running -> running, green 1.00% -> 5.00%: step 1 passed: ok"
        );
        assert_eq!(v.as_object().unwrap().len(), 1);
    }

    /// An https receiver on loopback with a certificate for 127.0.0.1 from a test CA:
    /// (URL, the CA's PEM).
    async fn tls_receiver() -> (String, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://127.0.0.1:{}/hook", l.local_addr().unwrap().port());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (url, ca_pem)
    }

    #[tokio::test]
    async fn https_receivers_are_verified_against_their_ca() {
        let (url, ca_pem) = tls_receiver().await;
        let ca = std::env::temp_dir().join(format!("shifter-hook-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, ca_pem).unwrap();
        let t = Duration::from_secs(2);
        let ok = post(&url, Some(&ca), b"{}".to_vec(), t).await;
        assert_eq!(ok, Ok(StatusCode::NO_CONTENT));
        let e = post(&url, None, b"{}".to_vec(), t).await.unwrap_err();
        assert!(
            e.starts_with("TLS handshake with 127.0.0.1:") && e.contains("UnknownIssuer"),
            "{e}"
        );
        let _ = std::fs::remove_file(&ca);
    }
}
