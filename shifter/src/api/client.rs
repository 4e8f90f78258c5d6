//! A client of the control API over the Unix socket: one typed method per endpoint (the CLI
//! reaches the daemon only through these). Bodies are the typed requests of
//! [`super::types`]; a weight is sent as its number of basis points.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::types::{
    DetachReport, ErrorBody, Events, Flows, HistoryReply, ReloadReport, RollbackRequest,
    RolloutReply, RolloutRequest, ServiceStatus, Status, WeightChange, WeightRequest,
};
use crate::model::Weight;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the shifter daemon is not running (nothing listens on {})", .0.display())]
    NotRunning(PathBuf),
    #[error("permission denied on {} (reading needs access to the socket: root or its group)", .0.display())]
    PermissionDenied(PathBuf),
    #[error("connecting to {}: {source}", .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Http(#[from] hyper::Error),
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("unexpected answer from the daemon: {0}")]
    Decode(String),
}

pub struct Client {
    socket: PathBuf,
}

/// A response whose body is still streaming.
pub struct Streaming {
    body: Incoming,
    buf: Vec<u8>,
}

impl Streaming {
    /// The next complete line, or `None` at the end of the stream.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                return Ok(Some(line));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(f) => {
                    if let Ok(data) = f?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(self.socket.clone())
                }
                std::io::ErrorKind::PermissionDenied => {
                    ClientError::PermissionDenied(self.socket.clone())
                }
                _ => ClientError::Connect {
                    path: self.socket.clone(),
                    source: e,
                },
            })?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "shifter");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("valid request");
        let resp = sender.send_request(req).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| {
                    format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim())
                });
            return Err(ClientError::Api { status, message });
        }
        Ok(resp)
    }

    /// A request whose JSON answer is decoded as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let resp = self.send(method, path, body).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// A request whose answer is returned as text.
    async fn text(&self, method: Method, path: &str) -> Result<String, ClientError> {
        let resp = self.send(method, path, None).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A GET whose answer streams (JSON lines).
    async fn stream(&self, path: &str) -> Result<Streaming, ClientError> {
        let resp = self.send(Method::GET, path, None).await?;
        Ok(Streaming {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }

    /// `GET /v1/status`
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(Method::GET, "/v1/status", None).await
    }

    /// `GET /v1/services/{name}`
    pub async fn service(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.call(Method::GET, &format!("/v1/services/{name}"), None)
            .await
    }

    /// `GET /v1/services/{name}/flows`
    pub async fn flows(&self, name: &str) -> Result<Flows, ClientError> {
        self.call(Method::GET, &format!("/v1/services/{name}/flows"), None)
            .await
    }

    /// `PUT /v1/services/{name}/weight` with `{"weight_bp": ...}`.
    pub async fn set_weight(
        &self,
        name: &str,
        weight: Weight,
    ) -> Result<WeightChange, ClientError> {
        let body = WeightRequest {
            weight_bp: Some(weight),
            percent: None,
        };
        self.call(
            Method::PUT,
            &format!("/v1/services/{name}/weight"),
            Some(to_json(&body)),
        )
        .await
    }

    /// `POST /v1/services/{name}/rollout/{verb}` (`start` with `request`, or `pause`,
    /// `resume`, `abort`, `approve`, `freeze` without).
    pub async fn rollout(
        &self,
        name: &str,
        verb: &str,
        request: Option<&RolloutRequest>,
    ) -> Result<RolloutReply, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/services/{name}/rollout/{verb}"),
            request.map(to_json),
        )
        .await
    }

    /// `POST /v1/services/{name}/promote`
    pub async fn promote(&self, name: &str) -> Result<RolloutReply, ClientError> {
        self.call(Method::POST, &format!("/v1/services/{name}/promote"), None)
            .await
    }

    /// `POST /v1/services/{name}/rollback`
    pub async fn rollback(
        &self,
        name: &str,
        request: &RollbackRequest,
    ) -> Result<RolloutReply, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/services/{name}/rollback"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/services/{name}/blue-green`
    pub async fn blue_green(
        &self,
        name: &str,
        request: &RolloutRequest,
    ) -> Result<RolloutReply, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/services/{name}/blue-green"),
            Some(to_json(request)),
        )
        .await
    }

    /// `GET /v1/services/{name}/history`, or `GET /v1/history` for every service.
    pub async fn history(&self, name: Option<&str>) -> Result<HistoryReply, ClientError> {
        let path = match name {
            Some(n) => format!("/v1/services/{n}/history"),
            None => "/v1/history".to_owned(),
        };
        self.call(Method::GET, &path, None).await
    }

    /// `GET /v1/events[?since=N]`
    pub async fn events(&self, since: u64) -> Result<Events, ClientError> {
        let path = if since == 0 {
            "/v1/events".to_owned()
        } else {
            format!("/v1/events?since={since}")
        };
        self.call(Method::GET, &path, None).await
    }

    /// `GET /v1/events?follow=true`: the events so far, then new ones, as JSON lines.
    pub async fn follow_events(&self) -> Result<Streaming, ClientError> {
        self.stream("/v1/events?follow=true").await
    }

    /// `POST /v1/reload`
    pub async fn reload(&self) -> Result<ReloadReport, ClientError> {
        self.call(Method::POST, "/v1/reload", None).await
    }

    /// `POST /v1/detach`
    pub async fn detach(&self) -> Result<DetachReport, ClientError> {
        self.call(Method::POST, "/v1/detach", None).await
    }

    /// `GET /metrics`
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.text(Method::GET, "/metrics").await
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("API types serialize")
}
