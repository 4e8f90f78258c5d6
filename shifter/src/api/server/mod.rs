//! The control API server: HTTP/1.1 + JSON on a Unix socket, authorised by SO_PEERCRED.
//!
//! The server knows the daemon only as a [`Control`]: it turns requests into calls of it and
//! [`ControlError`]s into HTTP statuses. Request bodies are read in [`bodies`], peers are
//! authorised in [`peer`].
//!
//! Over 700 lines: the router with one short handler per endpoint and the listeners around it;
//! bodies and peers are in their own modules.

mod bodies;
mod follow;
mod peer;

use std::{
    convert::Infallible,
    future::Future,
    os::fd::AsRawFd as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::prometheus_text;
use tokio::{
    net::{TcpListener, UnixListener},
    sync::{broadcast, watch},
    task::JoinSet,
};
use tracing::{debug, info, warn};

pub use bodies::{parse_weight_body, rollout_command};
pub use peer::user_in_group;
use peer::{Ask, Readable};

use super::{
    ControlError,
    types::{
        DetachReport, ErrorBody, Events, FleetSeen, Flows, HistoryReply, ReloadReport,
        RolloutReply, ServiceStatus, Status, WeightChange,
    },
};
use crate::{
    config::{DaemonConfig, Grant, GrantVerb, ReadAccess, SocketGroup},
    events::Event,
    model::Weight,
    rollout::OperatorCommand,
};

/// Largest request body accepted (a weight change is about 20 bytes).
pub const BODY_LIMIT: usize = 1024;
/// How long open connections get to finish when the daemon stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

type Body = BoxBody<Bytes, Infallible>;

/// What the API serves. The daemon's engine handle implements it; the server calls nothing else.
pub trait Control: Clone + Send + Sync + 'static {
    fn status(&self) -> impl Future<Output = Result<Status, ControlError>> + Send;
    fn service(
        &self,
        name: String,
    ) -> impl Future<Output = Result<ServiceStatus, ControlError>> + Send;
    fn flows(&self, name: String) -> impl Future<Output = Result<Flows, ControlError>> + Send;
    /// Sets green's weight of `name` for the peer `uid`.
    fn set_weight(
        &self,
        name: String,
        weight: Weight,
        uid: u32,
    ) -> impl Future<Output = Result<WeightChange, ControlError>> + Send;
    /// A rollout command; `drain`: after a rollback, wait this long for green's flows to end.
    fn rollout(
        &self,
        name: String,
        command: OperatorCommand,
        uid: u32,
        drain: Option<Duration>,
    ) -> impl Future<Output = Result<RolloutReply, ControlError>> + Send;
    /// A rollout command of the fleet agent (as root) for the fleet rollout `fleet`: the
    /// host's rollout events carry its id.
    fn fleet_rollout(
        &self,
        name: String,
        command: OperatorCommand,
        fleet: String,
    ) -> impl Future<Output = Result<RolloutReply, ControlError>> + Send;
    /// The recorded rollouts of service `name`, or of every service (`None`).
    fn history(
        &self,
        name: Option<String>,
    ) -> impl Future<Output = Result<HistoryReply, ControlError>> + Send;
    /// Records that `uid` was refused `what` (on `service`): an event naming the uid.
    fn refused(
        &self,
        uid: u32,
        service: Option<String>,
        what: String,
    ) -> impl Future<Output = ()> + Send;
    /// What the fleet agent saw at its last poll of etcd, for the status.
    fn fleet_seen(&self, seen: FleetSeen) -> impl Future<Output = ()> + Send;
    /// Events with `seq >= since`.
    fn events(&self, since: u64) -> impl Future<Output = Result<Vec<Event>, ControlError>> + Send;
    /// New events as they are recorded.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
    /// Re-reads the configuration file.
    fn reload(&self) -> impl Future<Output = Result<ReloadReport, ControlError>> + Send;
    /// Removes the data plane for good.
    fn detach(&self) -> impl Future<Output = Result<DetachReport, ControlError>> + Send;
    /// The Prometheus text exposition.
    fn metrics(&self) -> impl Future<Output = Result<String, ControlError>> + Send;
}

/// The error of one HTTP request: a status and a message naming the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<ControlError> for ApiError {
    /// The one mapping of the daemon's answers to HTTP.
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::UnknownService(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

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
        /// Bit i: `[[daemon.grant]]` i is for this peer (its uid, or one of its groups).
        grants: u64,
    },
    /// The optional TCP metrics listener: only `/metrics` is served.
    Metrics,
}

/// What every connection shares.
pub struct ApiContext<C> {
    pub control: C,
    pub group: Option<SocketGroup>,
    /// `[[daemon.grant]]`: rights per service for the other peers.
    pub grants: Vec<Grant>,
    /// `daemon.read_access`: whether reads need a `read` grant too.
    pub read_access: ReadAccess,
    /// Set to true to stop the daemon (after `detach`) and, by the daemon, to stop serving.
    pub stop: watch::Sender<bool>,
}

/// Why the control socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another shifter daemon is already serving {}", .path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("control socket {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the control socket with the configured mode and group. Refuses when another
/// daemon answers on it; removes a stale socket file otherwise.
pub fn bind(cfg: &DaemonConfig) -> Result<UnixListener, BindError> {
    let path = &cfg.socket;
    let err = |source: std::io::Error| BindError::Io {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::AlreadyRunning { path: path.clone() });
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
pub fn unlink(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Serves the Unix socket until `stop` turns true.
pub async fn serve_unix<C: Control>(
    listener: UnixListener,
    ctx: Arc<ApiContext<C>>,
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
                            let groups = peer::peer_groups(stream.as_raw_fd());
                            let in_group = ctx.group.as_ref().is_some_and(|g| {
                                c.gid() == g.gid
                                    || groups.contains(&g.gid)
                                    || peer::user_in_group(c.uid(), g.gid)
                            });
                            let grants =
                                peer::matching_grants(&ctx.grants, c.uid(), c.gid(), &groups);
                            Peer::Unix { uid: c.uid(), gid: c.gid(), pid: c.pid(), in_group, grants }
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
pub async fn serve_metrics<C: Control>(
    listener: TcpListener,
    ctx: Arc<ApiContext<C>>,
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

async fn serve_conn<C: Control, IO>(
    io: TokioIo<IO>,
    ctx: Arc<ApiContext<C>>,
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
async fn handle<C: Control>(
    ctx: &ApiContext<C>,
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

fn plain_control(e: ControlError) -> RouteError {
    plain(e.into())
}

/// Dispatches a request to the handler of its endpoint.
async fn route<C: Control>(
    ctx: &ApiContext<C>,
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
    let c = &ctx.control;
    match segs.as_slice() {
        ["v1", "status"] => {
            no_query(&m, &req, &Method::GET, "GET")?;
            let readable = may_read(ctx, peer, None, "read the status").await?;
            ok_json(c.status().await.map(|mut st| {
                st.services.retain(|s| readable.allows(&s.name));
                st
            }))
        }
        ["v1", "services", name] => {
            no_query(&m, &req, &Method::GET, "GET")?;
            may_read(ctx, peer, Some(name), "read a service").await?;
            ok_json(c.service((*name).to_owned()).await)
        }
        ["v1", "services", name, "flows"] => {
            no_query(&m, &req, &Method::GET, "GET")?;
            may_read(ctx, peer, Some(name), "read a service's flows").await?;
            ok_json(c.flows((*name).to_owned()).await)
        }
        ["v1", "services", name, "history"] => {
            no_query(&m, &req, &Method::GET, "GET")?;
            may_read(ctx, peer, Some(name), "read a service's history").await?;
            ok_json(c.history(Some((*name).to_owned())).await)
        }
        ["v1", "history"] => {
            no_query(&m, &req, &Method::GET, "GET")?;
            let readable = may_read(ctx, peer, None, "read the history").await?;
            ok_json(c.history(None).await.map(|mut h| {
                h.rollouts.retain(|r| readable.allows(&r.service));
                h
            }))
        }
        ["v1", "services", name, "weight"] => {
            no_query(&m, &req, &Method::PUT, "PUT")?;
            put_weight(ctx, peer, name, req).await
        }
        ["v1", "services", name, "rollout", verb] => {
            no_query(&m, &req, &Method::POST, "POST")?;
            post_rollout(ctx, peer, name, verb, req).await
        }
        [
            "v1",
            "services",
            name,
            verb @ ("promote" | "rollback" | "blue-green"),
        ] => {
            no_query(&m, &req, &Method::POST, "POST")?;
            post_service_verb(ctx, peer, name, verb, req).await
        }
        ["v1", "events"] => {
            method(&m, &Method::GET, "GET")?;
            let readable = may_read(ctx, peer, None, "read the events").await?;
            get_events(c, &req, readable, stop).await
        }
        ["v1", "detach"] => {
            no_query(&m, &req, &Method::POST, "POST")?;
            post_detach(ctx, peer, req).await
        }
        ["v1", "reload"] => {
            no_query(&m, &req, &Method::POST, "POST")?;
            post_reload(ctx, peer, req).await
        }
        ["metrics"] => {
            method(&m, &Method::GET, "GET")?;
            get_metrics(ctx, peer).await
        }
        _ => Err(plain(ApiError::not_found(format!("no endpoint {path}")))),
    }
}

/// `POST /v1/detach`: the data plane removed, then the daemon stops.
async fn post_detach<C: Control>(
    ctx: &ApiContext<C>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<Response<Body>, RouteError> {
    let ask = Ask {
        verb: Some(GrantVerb::Detach),
        service: None,
        what: "detach the data plane",
    };
    let uid = authorize(ctx, peer, ask).await?;
    let _ = read_body(req).await.map_err(plain)?;
    info!("detach requested by uid {uid}");
    let report = ctx.control.detach().await.map_err(plain_control)?;
    let _ = ctx.stop.send(true);
    Ok(json(StatusCode::OK, &report))
}

/// `POST /v1/reload`: the configuration file read again (full rights only).
async fn post_reload<C: Control>(
    ctx: &ApiContext<C>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<Response<Body>, RouteError> {
    let ask = Ask {
        verb: None,
        service: None,
        what: "reload the configuration",
    };
    let uid = authorize(ctx, peer, ask).await?;
    let _ = read_body(req).await.map_err(plain)?;
    info!("reload requested by uid {uid}");
    ok_json(ctx.control.reload().await)
}

/// `GET /metrics`: every service's series, so it needs read on all of them.
async fn get_metrics<C: Control>(
    ctx: &ApiContext<C>,
    peer: Peer,
) -> Result<Response<Body>, RouteError> {
    if peer::readable(ctx.read_access, &ctx.grants, peer) != Readable::All {
        let ask = Ask {
            verb: Some(GrantVerb::Read),
            service: None,
            what: "read the metrics",
        };
        authorize(ctx, peer, ask).await?;
    }
    let text = ctx.control.metrics().await.map_err(plain_control)?;
    Ok(full(StatusCode::OK, prometheus_text::CONTENT_TYPE, text))
}

fn ok_json<T: serde::Serialize>(
    res: Result<T, ControlError>,
) -> Result<Response<Body>, RouteError> {
    res.map(|v| json(StatusCode::OK, &v)).map_err(plain_control)
}

/// What the peer may read: `Some(service)` must be readable, a daemon-wide read (`None`)
/// needs some service readable (the answer is then filtered to what is). Otherwise 403, the
/// refusal recorded as for changes.
async fn may_read<C: Control>(
    ctx: &ApiContext<C>,
    peer: Peer,
    service: Option<&str>,
    what: &str,
) -> Result<Readable, RouteError> {
    let readable = peer::readable(ctx.read_access, &ctx.grants, peer);
    let refused = match (&readable, service) {
        (r, Some(s)) => !r.allows(s),
        (Readable::Only(set), None) => set.is_empty(),
        (Readable::All, None) => false,
    };
    if refused {
        let ask = Ask {
            verb: Some(GrantVerb::Read),
            service,
            what,
        };
        authorize(ctx, peer, ask).await?;
    }
    Ok(readable)
}

/// The peer's uid when it may do what it asks; otherwise 403, and the refusal is recorded
/// as an event naming the uid.
async fn authorize<C: Control>(
    ctx: &ApiContext<C>,
    peer: Peer,
    ask: Ask<'_>,
) -> Result<u32, RouteError> {
    match peer::authorize(ctx.group.as_ref(), &ctx.grants, peer, ask) {
        Ok(uid) => Ok(uid),
        Err(e) => {
            if let Peer::Unix { uid, .. } = peer {
                let service = ask.service.map(ToOwned::to_owned);
                ctx.control.refused(uid, service, ask.what.to_owned()).await;
            }
            Err(plain(e))
        }
    }
}

async fn put_weight<C: Control>(
    ctx: &ApiContext<C>,
    peer: Peer,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, RouteError> {
    let ask = Ask {
        verb: Some(GrantVerb::Weight),
        service: Some(name),
        what: "change a weight",
    };
    let uid = authorize(ctx, peer, ask).await?;
    let body = read_body(req).await.map_err(plain)?;
    let weight = parse_weight_body(&body).map_err(plain)?;
    ok_json(ctx.control.set_weight(name.to_owned(), weight, uid).await)
}

async fn post_rollout<C: Control>(
    ctx: &ApiContext<C>,
    peer: Peer,
    name: &str,
    verb: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, RouteError> {
    if !["start", "pause", "resume", "abort", "approve", "freeze"].contains(&verb) {
        return Err(plain(ApiError::not_found(format!(
            "no rollout verb {verb:?} (expected start, pause, resume, abort, approve or freeze)"
        ))));
    }
    let ask = Ask {
        verb: Some(GrantVerb::Rollout),
        service: Some(name),
        what: "change a rollout",
    };
    let uid = authorize(ctx, peer, ask).await?;
    let body = read_body(req).await.map_err(plain)?;
    let command = rollout_command(verb, &body).map_err(plain)?;
    ok_json(
        ctx.control
            .rollout(name.to_owned(), command, uid, None)
            .await,
    )
}

/// `promote`, `rollback` (with an optional drain wait) and `blue-green`.
async fn post_service_verb<C: Control>(
    ctx: &ApiContext<C>,
    peer: Peer,
    name: &str,
    verb: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, RouteError> {
    let (grant, what) = match verb {
        "promote" => (GrantVerb::Promote, "promote"),
        "rollback" => (GrantVerb::Rollback, "roll back"),
        _ => (GrantVerb::Rollout, "change a rollout"),
    };
    let ask = Ask {
        verb: Some(grant),
        service: Some(name),
        what,
    };
    let uid = authorize(ctx, peer, ask).await?;
    let body = read_body(req).await.map_err(plain)?;
    let (command, drain) = match verb {
        "promote" => {
            bodies::empty_body(&body, "promote").map_err(plain)?;
            (OperatorCommand::Promote, None)
        }
        "rollback" => (
            OperatorCommand::Rollback,
            bodies::rollback_drain(&body).map_err(plain)?,
        ),
        _ => (rollout_command("blue-green", &body).map_err(plain)?, None),
    };
    ok_json(
        ctx.control
            .rollout(name.to_owned(), command, uid, drain)
            .await,
    )
}

async fn get_events<C: Control>(
    c: &C,
    req: &Request<Incoming>,
    readable: Readable,
    stop: watch::Receiver<bool>,
) -> Result<Response<Body>, RouteError> {
    let mut since = 0u64;
    let mut follow = false;
    for (k, v) in query(req, &["since", "follow"])? {
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
        return Ok(follow::events(c.clone(), since, readable, stop));
    }
    let mut events = c.events(since).await.map_err(plain_control)?;
    events.retain(|e| readable.allows(&e.service));
    Ok(json(StatusCode::OK, &Events { events }))
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
