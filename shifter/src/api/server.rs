//! The control API server: HTTP/1.1 + JSON on a Unix socket, authorised by SO_PEERCRED.

use std::{
    convert::Infallible,
    os::fd::AsRawFd as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Frame, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::{
    net::{TcpListener, UnixListener},
    sync::{broadcast, mpsc, watch},
    task::JoinSet,
};
use tracing::{debug, info, warn};

use super::{
    error::ApiError,
    types::{ErrorBody, Events},
};
use crate::{
    config::{Config, DaemonConfig, SocketGroup, number_text, parse_percent},
    daemon::{
        DaemonError,
        engine::{Command, Engine},
    },
    events::Event,
    rollout::OperatorCommand,
    util::error_chain,
};

/// Largest request body accepted (a weight change is about 20 bytes).
pub const BODY_LIMIT: usize = 1024;
/// How long open connections get to finish when the daemon stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

type Body = BoxBody<Bytes, Infallible>;

/// Who is asking.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    /// A Unix-socket peer, from SO_PEERCRED; `in_group`: its gid, its supplementary groups
    /// (SO_PEERGROUPS) or the user's groups (getgrouplist) include the configured group.
    Unix {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
        in_group: bool,
    },
    /// The optional TCP metrics listener: only `/metrics` is served.
    Metrics,
}

pub(crate) struct ApiContext {
    pub engine: Engine,
    pub group: Option<SocketGroup>,
    pub config_path: Option<PathBuf>,
    /// Set to true to stop the daemon (after `detach`) and, by the daemon, to stop serving.
    pub stop: watch::Sender<bool>,
}

/// Binds the control socket with the configured mode and group. Refuses when another
/// daemon answers on it; removes a stale socket file otherwise.
pub(crate) fn bind(cfg: &DaemonConfig) -> Result<UnixListener, DaemonError> {
    let path = &cfg.socket;
    let err = |source: std::io::Error| DaemonError::Socket {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning { path: path.clone() });
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.socket_mode))
        .map_err(err)?;
    if let Some(g) = &cfg.socket_group {
        std::os::unix::fs::chown(path, None, Some(g.gid)).map_err(err)?;
    }
    Ok(listener)
}

/// Removes the socket file if it is still ours.
pub(crate) fn unlink(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Serves the Unix socket until `stop` turns true.
pub(crate) async fn serve_unix(
    listener: UnixListener,
    ctx: Arc<ApiContext>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = crate::util::stopped(&mut stop) => break,
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    let peer = match stream.peer_cred() {
                        Ok(c) => {
                            let in_group = ctx.group.as_ref().is_some_and(|g| {
                                c.gid() == g.gid
                                    || peer_groups(stream.as_raw_fd()).contains(&g.gid)
                                    || user_in_group(c.uid(), g.gid)
                            });
                            Peer::Unix { uid: c.uid(), gid: c.gid(), pid: c.pid(), in_group }
                        }
                        Err(e) => {
                            warn!("control socket: no peer credentials ({e}); closing the connection");
                            continue;
                        }
                    };
                    conns.spawn(serve_conn(TokioIo::new(stream), ctx.clone(), peer, stop.clone()));
                }
                Err(e) => {
                    warn!("control socket: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drain(conns).await;
}

/// Serves `/metrics` on the TCP listener until `stop` turns true.
pub(crate) async fn serve_metrics(
    listener: TcpListener,
    ctx: Arc<ApiContext>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = crate::util::stopped(&mut stop) => break,
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    conns.spawn(serve_conn(TokioIo::new(stream), ctx.clone(), Peer::Metrics, stop.clone()));
                }
                Err(e) => {
                    warn!("metrics listener: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drain(conns).await;
}

async fn drain(mut conns: JoinSet<()>) {
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

async fn serve_conn<IO>(
    io: TokioIo<IO>,
    ctx: Arc<ApiContext>,
    peer: Peer,
    mut stop: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stop_for_handler = stop.clone();
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        let stop = stop_for_handler.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, peer, req, stop).await) }
    });
    let conn = http1::Builder::new().serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                debug!("control connection: {e}");
            }
        }
        () = crate::util::stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_str(content_type).expect("valid header"),
    );
    r
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(v).expect("API types serialize");
    body.push(b'\n');
    full(status, "application/json", body)
}

fn error_response(e: &ApiError) -> Response<Body> {
    json(
        e.status,
        &ErrorBody {
            error: e.message.clone(),
        },
    )
}

async fn handle(
    ctx: &ApiContext,
    peer: Peer,
    req: Request<Incoming>,
    stop: watch::Receiver<bool>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = route(ctx, peer, req, stop).await;
    match res {
        Ok(r) => r,
        Err((e, allow)) => {
            if e.status.is_server_error() {
                warn!("{method} {path}: {}", e.message);
            } else {
                debug!("{method} {path}: {}", e.message);
            }
            let mut r = error_response(&e);
            if let Some(allow) = allow {
                r.headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            }
            r
        }
    }
}

type RouteError = (ApiError, Option<&'static str>);

fn method(got: &Method, want: &Method, allow: &'static str) -> Result<(), RouteError> {
    if got == want {
        Ok(())
    } else {
        Err((
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {got} is not allowed here (allowed: {allow})"),
            ),
            Some(allow),
        ))
    }
}

/// The method must be `want` and the request carries no query parameters.
fn no_query(
    got: &Method,
    req: &Request<Incoming>,
    want: &Method,
    allow: &'static str,
) -> Result<(), RouteError> {
    method(got, want, allow)?;
    query(req, &[]).map(drop)
}

fn plain(e: ApiError) -> RouteError {
    (e, None)
}

/// Query parameters, rejecting any not in `allowed`.
fn query(req: &Request<Incoming>, allowed: &[&str]) -> Result<Vec<(String, String)>, RouteError> {
    let mut out = Vec::new();
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&k) {
            return Err(plain(ApiError::bad_request(format!(
                "unknown query parameter {k:?} (allowed: {})",
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            ))));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

async fn route(
    ctx: &ApiContext,
    peer: Peer,
    req: Request<Incoming>,
    stop: watch::Receiver<bool>,
) -> Result<Response<Body>, RouteError> {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let m = req.method().clone();
    if matches!(peer, Peer::Metrics) && segs.as_slice() != ["metrics"] {
        return Err(plain(ApiError::not_found(format!(
            "no endpoint {path} (this listener serves /metrics only)"
        ))));
    }
    let engine = &ctx.engine;
    match segs.as_slice() {
        ["v1", "status"] => {
            no_query(&m, &req, &Method::GET, "GET")?;
            let s = engine.call(Command::Status).await.map_err(plain)?;
            Ok(json(StatusCode::OK, &s))
        }
        ["v1", "services", name] => {
            no_query(&m, &req, &Method::GET, "GET")?;
            let name = (*name).to_owned();
            let s = engine
                .ask(|r| Command::Service(name, r))
                .await
                .map_err(plain)?;
            Ok(json(StatusCode::OK, &s))
        }
        ["v1", "services", name, "flows"] => {
            no_query(&m, &req, &Method::GET, "GET")?;
            let name = (*name).to_owned();
            let f = engine
                .ask(|r| Command::Flows(name, r))
                .await
                .map_err(plain)?;
            Ok(json(StatusCode::OK, &f))
        }
        ["v1", "services", name, "weight"] => {
            no_query(&m, &req, &Method::PUT, "PUT")?;
            let uid = authorize(ctx, peer, "change a weight").map_err(plain)?;
            let name = (*name).to_owned();
            let body = read_body(req).await.map_err(plain)?;
            let bp = parse_weight_body(&body).map_err(plain)?;
            let c = engine
                .ask(|reply| Command::SetWeight {
                    name,
                    bp,
                    uid,
                    reply,
                })
                .await
                .map_err(plain)?;
            Ok(json(StatusCode::OK, &c))
        }
        ["v1", "services", name, "rollout", verb] => {
            no_query(&m, &req, &Method::POST, "POST")?;
            if !["start", "pause", "resume", "abort", "approve", "freeze"].contains(verb) {
                return Err(plain(ApiError::not_found(format!(
                    "no rollout verb {verb:?} (expected start, pause, resume, abort, approve or freeze)"
                ))));
            }
            let uid = authorize(ctx, peer, "change a rollout").map_err(plain)?;
            let body = read_body(req).await.map_err(plain)?;
            let command = rollout_command(verb, &body).map_err(plain)?;
            run_rollout(ctx, name, command, uid, None).await
        }
        [
            "v1",
            "services",
            name,
            verb @ ("promote" | "rollback" | "blue-green"),
        ] => {
            no_query(&m, &req, &Method::POST, "POST")?;
            let uid = authorize(ctx, peer, "change a rollout").map_err(plain)?;
            let body = read_body(req).await.map_err(plain)?;
            let (command, drain) = match *verb {
                "promote" => {
                    empty_body(&body, "promote").map_err(plain)?;
                    (OperatorCommand::Promote, None)
                }
                "rollback" => {
                    let b: RollbackBody =
                        json_body(&body, "{\"drain_timeout\": \"30s\"}").map_err(plain)?;
                    let drain = b
                        .drain_timeout
                        .as_deref()
                        .map(|t| parse_duration("drain_timeout", t, MAX_DRAIN))
                        .transpose()
                        .map_err(plain)?;
                    (OperatorCommand::Rollback, drain)
                }
                _ => (rollout_command("blue-green", &body).map_err(plain)?, None),
            };
            run_rollout(ctx, name, command, uid, drain).await
        }
        ["v1", "events"] => {
            method(&m, &Method::GET, "GET")?;
            let q = query(&req, &["since", "follow"])?;
            let mut since = 0u64;
            let mut follow = false;
            for (k, v) in q {
                match k.as_str() {
                    "since" => {
                        since = v.parse().map_err(|_| {
                            plain(ApiError::bad_request(format!(
                                "since: {v:?} is not an event number"
                            )))
                        })?;
                    }
                    _ => {
                        follow = match v.as_str() {
                            "" | "1" | "true" => true,
                            "0" | "false" => false,
                            other => {
                                return Err(plain(ApiError::bad_request(format!(
                                    "follow: {other:?} is not true or false"
                                ))));
                            }
                        };
                    }
                }
            }
            if follow {
                return Ok(follow_events(engine.clone(), since, stop));
            }
            let events = engine
                .call(|r| Command::Events(since, r))
                .await
                .map_err(plain)?;
            Ok(json(StatusCode::OK, &Events { events }))
        }
        ["v1", "detach"] => {
            no_query(&m, &req, &Method::POST, "POST")?;
            let uid = authorize(ctx, peer, "detach the data plane").map_err(plain)?;
            let _ = read_body(req).await.map_err(plain)?;
            info!("detach requested by uid {uid}");
            let report = engine.ask(Command::Detach).await.map_err(plain)?;
            let _ = ctx.stop.send(true);
            Ok(json(StatusCode::OK, &report))
        }
        ["v1", "reload"] => {
            no_query(&m, &req, &Method::POST, "POST")?;
            let uid = authorize(ctx, peer, "reload the configuration").map_err(plain)?;
            let _ = read_body(req).await.map_err(plain)?;
            info!("reload requested by uid {uid}");
            let report = reload(ctx).await.map_err(plain)?;
            Ok(json(StatusCode::OK, &report))
        }
        ["metrics"] => {
            method(&m, &Method::GET, "GET")?;
            let text = engine.call(Command::Metrics).await.map_err(plain)?;
            Ok(full(StatusCode::OK, crate::metrics::CONTENT_TYPE, text))
        }
        _ => Err(plain(ApiError::not_found(format!("no endpoint {path}")))),
    }
}

/// The longest `rollback --drain-timeout` the API waits.
const MAX_DRAIN: Duration = Duration::from_secs(3600);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartBody {
    /// Percent values (numbers or strings), ascending.
    steps: Option<Vec<serde_json::Value>>,
    hold: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    drain_timeout: Option<String>,
}

/// An empty body (or whitespace) is `T::default()`; otherwise JSON.
fn json_body<T: serde::de::DeserializeOwned + Default>(
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

fn empty_body(body: &[u8], what: &str) -> Result<(), ApiError> {
    let ok = body.iter().all(u8::is_ascii_whitespace)
        || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
            .is_ok_and(|m| m.is_empty());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("{what} takes no parameters")))
    }
}

fn parse_duration(field: &str, text: &str, max: Duration) -> Result<Duration, ApiError> {
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

fn percent_value(field: &str, v: &serde_json::Value) -> Result<u16, ApiError> {
    let text = match v {
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) => {
                number_text(f).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))?
            }
            _ => return Err(ApiError::bad_request(format!("{field}: not a number"))),
        },
        serde_json::Value::String(s) => s.clone(),
        other => {
            return Err(ApiError::bad_request(format!(
                "{field}: {other} is not a percentage"
            )));
        }
    };
    parse_percent(&text).map_err(|e| ApiError::bad_request(format!("{field}: {text} {e}")))
}

/// The command of `POST .../rollout/{verb}` (or `blue-green`) with its body.
pub fn rollout_command(verb: &str, body: &[u8]) -> Result<OperatorCommand, ApiError> {
    let hold = |b: &StartBody| {
        b.hold
            .as_deref()
            .map(|h| parse_duration("hold", h, crate::rollout::config::MAX_HOLD))
            .transpose()
    };
    Ok(match verb {
        "start" => {
            let b: StartBody = json_body(
                body,
                "{\"steps\": [1, 5, 25, 50, 100], \"hold\": \"30s\", \"dry_run\": false}",
            )?;
            let steps = b
                .steps
                .as_ref()
                .map(|list| {
                    list.iter()
                        .enumerate()
                        .map(|(i, v)| percent_value(&format!("steps[{i}]"), v))
                        .collect::<Result<Vec<u16>, ApiError>>()
                })
                .transpose()?;
            OperatorCommand::Start {
                steps,
                hold: hold(&b)?,
                dry_run: b.dry_run,
            }
        }
        "blue-green" => {
            let b: StartBody = json_body(body, "{\"hold\": \"30s\", \"dry_run\": false}")?;
            if b.steps.is_some() {
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

async fn run_rollout(
    ctx: &ApiContext,
    name: &str,
    command: OperatorCommand,
    uid: u32,
    drain: Option<Duration>,
) -> Result<Response<Body>, RouteError> {
    let engine = &ctx.engine;
    let name = name.to_owned();
    let n = name.clone();
    let mut reply = engine
        .ask(|reply| Command::Rollout {
            name: n,
            command,
            uid,
            reply,
        })
        .await
        .map_err(plain)?;
    if let Some(timeout) = drain {
        reply.drain = Some(wait_for_green_drain(engine, &name, timeout).await?);
    }
    Ok(json(StatusCode::OK, &reply))
}

/// How often `rollback --drain-timeout` counts green's open flows.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// Waits until green has no open flow or `timeout` passes. Nothing is closed: existing green
/// connections finish on their own; this only reports how many are left.
async fn wait_for_green_drain(
    engine: &Engine,
    name: &str,
    timeout: Duration,
) -> Result<super::types::DrainReport, RouteError> {
    let start = tokio::time::Instant::now();
    loop {
        let n = name.to_owned();
        let remaining = engine
            .ask(|r| Command::GreenFlows(n, r))
            .await
            .map_err(plain)?;
        let waited = start.elapsed();
        if remaining == 0 || waited >= timeout {
            return Ok(super::types::DrainReport {
                timeout_ms: timeout.as_millis() as u64,
                waited_ms: waited.as_millis() as u64,
                green_flows_remaining: remaining,
            });
        }
        tokio::time::sleep(DRAIN_POLL.min(timeout - waited)).await;
    }
}

/// Reloads the configuration file into the engine.
pub(crate) async fn reload(ctx: &ApiContext) -> Result<super::types::ReloadReport, ApiError> {
    let Some(path) = ctx.config_path.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the daemon was started without a configuration file",
        ));
    };
    let config = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            for p in e.problems() {
                warn!("reload refused: {p}");
            }
            ApiError::bad_request(format!(
                "configuration not reloaded: {}",
                e.problems().join("; ")
            ))
        })?;
    ctx.engine
        .call(|r| Command::Reload(Box::new(config), r))
        .await
}

/// Changes need uid 0 or membership in the configured group. Returns the uid.
fn authorize(ctx: &ApiContext, peer: Peer, what: &str) -> Result<u32, ApiError> {
    let Peer::Unix {
        uid,
        gid,
        pid,
        in_group,
    } = peer
    else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "changes are not allowed on the metrics listener",
        ));
    };
    if uid == 0 {
        return Ok(uid);
    }
    if in_group {
        return Ok(uid);
    }
    warn!("refused: uid {uid} gid {gid} (pid {pid:?}) may not {what}");
    let who = match &ctx.group {
        Some(g) => format!("root or members of group {:?} (gid {})", g.name, g.gid),
        None => "root (no daemon.socket_group is configured)".to_owned(),
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!("uid {uid} may not {what}: only {who} may change anything"),
    ))
}

/// The peer's supplementary groups at connect time (SO_PEERGROUPS); empty when unknown.
fn peer_groups(fd: std::os::fd::RawFd) -> Vec<u32> {
    let mut groups = vec![0u32; 256];
    let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
    // SAFETY: the buffer and its length are valid; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / std::mem::size_of::<u32>());
    groups
}

/// Whether the user `uid` has `gid` among its groups (primary or supplementary).
pub fn user_in_group(uid: u32, gid: u32) -> bool {
    use nix::unistd::{Gid, Uid, User, getgrouplist};
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    if user.gid.as_raw() == gid {
        return true;
    }
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&Gid::from_raw(gid)))
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {BODY_LIMIT} bytes"),
        )
    };
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH)
        && len
            .to_str()
            .ok()
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|l| l > BODY_LIMIT as u64)
    {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightRequest {
    percent: serde_json::Value,
}

/// `{"percent": 12.5}` -> basis points, or a 400 naming the problem.
pub fn parse_weight_body(body: &[u8]) -> Result<u16, ApiError> {
    let req: WeightRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body (expected {{\"percent\": 12.5}}): {e}"
        ))
    })?;
    let text = match &req.percent {
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (None, Some(i), _) => i.to_string(),
            (None, None, Some(f)) => {
                number_text(f).map_err(|e| ApiError::bad_request(format!("percent: {e}")))?
            }
            _ => return Err(ApiError::bad_request("percent: not a number")),
        },
        other => {
            return Err(ApiError::bad_request(format!(
                "percent: {other} is not a number"
            )));
        }
    };
    parse_percent(&text).map_err(|e| ApiError::bad_request(format!("percent: {text} {e}")))
}

/// A response body fed by a channel (for `?follow`).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn line(ev: &Event) -> Bytes {
    let mut v = serde_json::to_vec(ev).expect("events serialize");
    v.push(b'\n');
    Bytes::from(v)
}

/// Streams events as JSON lines: those since `since`, then new ones as they happen, until
/// the client goes away or the daemon stops.
fn follow_events(engine: Engine, since: u64, mut stop: watch::Receiver<bool>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let mut sub = engine.subscribe();
    tokio::spawn(async move {
        let mut next = since;
        let Ok(backlog) = engine.call(|r| Command::Events(since, r)).await else {
            return;
        };
        for ev in &backlog {
            if tx.send(line(ev)).await.is_err() {
                return;
            }
            next = ev.seq + 1;
        }
        loop {
            tokio::select! {
                () = crate::util::stopped(&mut stop) => return,
                () = tx.closed() => return,
                r = sub.recv() => match r {
                    Ok(ev) if ev.seq >= next => {
                        next = ev.seq + 1;
                        if tx.send(line(&ev)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let Ok(missed) = engine.call(|r| Command::Events(next, r)).await else {
                            return;
                        };
                        for ev in &missed {
                            if tx.send(line(ev)).await.is_err() {
                                return;
                            }
                            next = ev.seq + 1;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let mut r = Response::new(http_body_util::BodyExt::boxed(ChannelBody(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Logs the error chain of a failed reload triggered by a signal.
pub(crate) fn log_reload_result(res: &Result<super::types::ReloadReport, ApiError>) {
    if let Err(e) = res {
        warn!("reload failed: {}", error_chain(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_bodies() {
        assert_eq!(parse_weight_body(br#"{"percent": 12.5}"#), Ok(1250));
        assert_eq!(parse_weight_body(br#"{"percent": 0}"#), Ok(0));
        assert_eq!(parse_weight_body(br#"{"percent": 100}"#), Ok(10_000));
        assert_eq!(parse_weight_body(br#"{"percent": 0.01}"#), Ok(1));
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

    #[test]
    fn root_is_in_its_group() {
        assert!(user_in_group(0, 0));
    }
}
