//! The etcd v3 client: the JSON gateway (`/v3/kv/range|put|txn|deleterange`,
//! `/v3/lease/grant|keepalive|revoke`) over the hyper HTTP/1 client the API already uses.
//! It is on 3.4 and 3.5 alike, needs no protoc and no gRPC stack. Keys and values travel in
//! base64; 64-bit numbers come back as JSON strings.
//!
//! Each request goes to one endpoint; on a connection error or a timeout the next endpoint
//! is tried, and the one that answered is used first next time. Endpoints are all `http://`
//! or all `https://`; over TLS the members' certificates are verified against the configured
//! CA (or the system's roots) and a client certificate is sent when configured (etcd's
//! `--client-cert-auth`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, client::conn::http1};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no etcd endpoint answered (last: {last})")]
    Unavailable { last: String },
    #[error("etcd {endpoint} {path}: HTTP {status}: {message}")]
    Status {
        endpoint: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("etcd answer to {path} is not what was expected: {message}")]
    Decode { path: String, message: String },
    #[error("invalid etcd endpoint {0:?}: expected http://HOST:PORT or https://HOST:PORT")]
    Endpoint(String),
    #[error("etcd endpoints mix http:// and https://")]
    MixedSchemes,
    #[error("https:// etcd endpoints: {0}")]
    Tls(String),
}

/// One key-value pair as etcd holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

impl Kv {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.value)
    }
}

/// A txn comparison.
#[derive(Clone, Debug)]
pub enum Compare {
    /// The key's create revision (0: the key does not exist).
    CreateRevision(String, i64),
    /// The key's last modification revision (0: the key does not exist).
    ModRevision(String, i64),
}

/// A txn operation.
#[derive(Clone, Debug)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete(String),
}

impl Op {
    pub fn put_json<T: serde::Serialize>(key: String, value: &T) -> Self {
        Self::Put {
            key,
            value: serde_json::to_vec(value).expect("serializable"),
            lease: 0,
        }
    }
}

/// The answer of a txn.
#[derive(Clone, Debug)]
pub struct TxnResult {
    pub succeeded: bool,
    pub revision: i64,
}

/// An etcd client over a list of endpoints.
#[derive(Clone)]
pub struct Store {
    /// (URL, HOST:PORT) of each member.
    endpoints: Arc<Vec<(String, String)>>,
    preferred: Arc<AtomicUsize>,
    timeout: Duration,
    /// With https:// endpoints: the client configuration, the name to verify (`None`: each
    /// endpoint's host), and whether a client certificate is sent.
    tls: Option<(Arc<rustls::ClientConfig>, Option<String>, bool)>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads a JSON int64 that etcd writes as a string (or omits when 0).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// The end of the range of every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store {
    /// `endpoints` like `http://127.0.0.1:2379` (or all `https://`, with `tls`: the CA,
    /// client certificate and name); `timeout` bounds each request.
    pub fn new(
        endpoints: &[String],
        timeout: Duration,
        tls: Option<&crate::config::TlsSettings>,
    ) -> Result<Self, StoreError> {
        let mut list = Vec::new();
        let mut https = None;
        for e in endpoints {
            let (secure, rest) = match (e.strip_prefix("https://"), e.strip_prefix("http://")) {
                (Some(rest), _) => (true, rest),
                (None, Some(rest)) => (false, rest),
                (None, None) => return Err(StoreError::Endpoint(e.clone())),
            };
            if *https.get_or_insert(secure) != secure {
                return Err(StoreError::MixedSchemes);
            }
            let authority = Some(rest.trim_end_matches('/'))
                .filter(|a| !a.is_empty() && !a.contains('/') && a.contains(':'))
                .ok_or_else(|| StoreError::Endpoint(e.clone()))?;
            list.push((e.clone(), authority.to_owned()));
        }
        if list.is_empty() {
            return Err(StoreError::Endpoint(String::new()));
        }
        let tls = match https {
            Some(true) => {
                let settings = tls.cloned().unwrap_or_default();
                let config = settings
                    .client_config()
                    .map_err(|(field, m)| StoreError::Tls(format!("{field}: {m}")))?;
                let with_cert = settings.client_cert.is_some();
                Some((config, settings.server_name, with_cert))
            }
            _ => None,
        };
        Ok(Self {
            endpoints: Arc::new(list),
            preferred: Arc::new(AtomicUsize::new(0)),
            timeout,
            tls,
        })
    }

    /// One POST on a new connection to `authority`, over TLS with https:// endpoints.
    async fn exchange(
        &self,
        authority: &str,
        req: Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), String> {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        let Some((config, name, with_cert)) = &self.tls else {
            return send(stream, req).await;
        };
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = name.clone().unwrap_or_else(|| host.to_owned());
        let server_name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| format!("{name:?} is not a TLS server name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(server_name, stream)
            .await
            .map_err(|e| format!("TLS handshake (verifying {name:?}): {e}"))?;
        // Under TLS 1.3 a server that wants a client certificate says so after our side of
        // the handshake is done: the refusal shows as a broken connection.
        send(stream, req).await.map_err(|e| {
            if *with_cert {
                e
            } else {
                format!("{e} (no client certificate was sent: does etcd want one, --client-cert-auth? set client_cert and client_key)")
            }
        })
    }

    async fn post_to(
        &self,
        authority: &str,
        path: &str,
        body: &Value,
    ) -> Result<(u16, Bytes), String> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("valid request");
        let fut = self.exchange(authority, req);
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }

    /// POSTs `body` to `path` on the first endpoint that answers. etcd's "no leader" and
    /// timeouts (quorum lost) count as not answering: the next member is tried.
    async fn post(&self, path: &str, body: Value) -> Result<Value, StoreError> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let idx = (first + i) % n;
            let (url, authority) = &self.endpoints[idx];
            match self.post_to(authority, path, &body).await {
                Ok((200, bytes)) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    // A streaming endpoint (keepalive) answers `{"result": ...}` lines.
                    let text = String::from_utf8_lossy(&bytes);
                    let first_line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("{}");
                    let v: Value =
                        serde_json::from_str(first_line).map_err(|e| StoreError::Decode {
                            path: path.to_owned(),
                            message: e.to_string(),
                        })?;
                    if let Some(err) = v.get("error") {
                        last = format!("{url}: {err}");
                        continue;
                    }
                    return Ok(v.get("result").cloned().unwrap_or(v));
                }
                Ok((status, bytes)) => {
                    let message = String::from_utf8_lossy(&bytes).trim().to_owned();
                    // 503 and gRPC "unavailable"/"deadline" while a member has no leader:
                    // another member may.
                    if status >= 500 {
                        last = format!("{url}: HTTP {status}: {message}");
                        continue;
                    }
                    return Err(StoreError::Status {
                        endpoint: url.clone(),
                        path: path.to_owned(),
                        status,
                        message,
                    });
                }
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        Err(StoreError::Unavailable { last })
    }

    fn kvs(path: &str, v: &Value) -> Result<Vec<Kv>, StoreError> {
        let Some(list) = v.get("kvs").and_then(Value::as_array) else {
            return Ok(Vec::new());
        };
        let decode = |s: &Value| -> Result<Vec<u8>, StoreError> {
            B64.decode(s.as_str().unwrap_or(""))
                .map_err(|e| StoreError::Decode {
                    path: path.to_owned(),
                    message: e.to_string(),
                })
        };
        list.iter()
            .map(|kv| {
                Ok(Kv {
                    key: String::from_utf8_lossy(&decode(&kv["key"])?).into_owned(),
                    value: decode(kv.get("value").unwrap_or(&Value::Null))?,
                    create_revision: int(&kv["create_revision"]),
                    mod_revision: int(&kv["mod_revision"]),
                    lease: int(&kv["lease"]),
                })
            })
            .collect()
    }

    /// One key.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, StoreError> {
        let v = self
            .post("/v3/kv/range", json!({ "key": b64(key.as_bytes()) }))
            .await?;
        Ok(Self::kvs("/v3/kv/range", &v)?.into_iter().next())
    }

    /// Every key under `prefix`, in key order, and the store's revision.
    pub async fn list(&self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError> {
        let v = self
            .post(
                "/v3/kv/range",
                json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)) }),
            )
            .await?;
        let rev = int(&v["header"]["revision"]);
        Ok((Self::kvs("/v3/kv/range", &v)?, rev))
    }

    /// Puts `value` (with `lease`, 0 for none).
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), StoreError> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        self.post("/v3/kv/put", body).await.map(drop)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.post("/v3/kv/deleterange", json!({ "key": b64(key.as_bytes()) }))
            .await
            .map(drop)
    }

    /// If every comparison holds, runs `ops`, all in one revision.
    pub async fn txn(&self, compare: &[Compare], ops: &[Op]) -> Result<TxnResult, StoreError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::CreateRevision(k, r) => json!({
                    "key": b64(k.as_bytes()), "result": "EQUAL", "target": "CREATE",
                    "create_revision": r.to_string()
                }),
                Compare::ModRevision(k, r) => json!({
                    "key": b64(k.as_bytes()), "result": "EQUAL", "target": "MOD",
                    "mod_revision": r.to_string()
                }),
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|o| match o {
                Op::Put { key, value, lease } => {
                    let mut p = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
                    if *lease != 0 {
                        p["lease"] = json!(lease.to_string());
                    }
                    json!({ "request_put": p })
                }
                Op::Delete(key) => {
                    json!({ "request_delete_range": { "key": b64(key.as_bytes()) } })
                }
            })
            .collect();
        let v = self
            .post(
                "/v3/kv/txn",
                json!({ "compare": compare, "success": success, "failure": [] }),
            )
            .await?;
        Ok(TxnResult {
            succeeded: v.get("succeeded").and_then(Value::as_bool).unwrap_or(false),
            revision: int(&v["header"]["revision"]),
        })
    }

    /// A new lease of `ttl` seconds; its id.
    pub async fn grant(&self, ttl: u64) -> Result<i64, StoreError> {
        let v = self
            .post(
                "/v3/lease/grant",
                json!({ "TTL": ttl.to_string(), "ID": "0" }),
            )
            .await?;
        let id = int(&v["ID"]);
        if id == 0 {
            return Err(StoreError::Decode {
                path: "/v3/lease/grant".into(),
                message: format!("no lease id in {v}"),
            });
        }
        Ok(id)
    }

    /// Renews a lease; the TTL left (0: the lease is gone).
    pub async fn keepalive(&self, lease: i64) -> Result<i64, StoreError> {
        let v = self
            .post("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        Ok(int(&v["TTL"]))
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        self.post("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await
            .map(drop)
    }
}

/// Decodes every value under a prefix as `T`, keyed by the key; undecodable ones are
/// skipped (and named in the log).
pub fn decode_all<T: DeserializeOwned>(kvs: &[Kv]) -> Vec<(String, T)> {
    kvs.iter()
        .filter_map(|kv| match kv.json::<T>() {
            Ok(v) => Some((kv.key.clone(), v)),
            Err(e) => {
                tracing::warn!("fleet: ignoring {}: {e}", kv.key);
                None
            }
        })
        .collect()
}

/// Sends `req` over `stream` (plain or TLS) and reads the whole answer.
async fn send<S>(stream: S, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn endpoints_are_http_or_https_host_port() {
        let t = Duration::from_secs(1);
        assert!(Store::new(&["http://127.0.0.1:2379".into()], t, None).is_ok());
        assert!(matches!(
            Store::new(&["http://a:1".into(), "https://b:1".into()], t, None),
            Err(StoreError::MixedSchemes)
        ));
        let missing = crate::config::TlsSettings {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = Store::new(&["https://a:1".into()], t, Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        for bad in [
            "ftp://h:1",
            "127.0.0.1:2379",
            "http://h",
            "http://h:1/x",
            "",
        ] {
            assert!(
                Store::new(&[bad.into()], t, None).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn int64_as_etcd_writes_them() {
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
    }
}
