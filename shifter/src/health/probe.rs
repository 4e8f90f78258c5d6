//! One health check against one backend: TCP connect, HTTP/1.1 GET (hyper), the same over
//! TLS (rustls, the certificate verified against the configured CA or the system roots), or
//! a command.
//! Every check is bounded by its timeout; a command that overruns is killed with its whole
//! process group.

use std::{
    net::{IpAddr, SocketAddr},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use http_body_util::Empty;
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite},
    net::TcpStream,
    process::Command,
};

use crate::config::{CheckKind, HealthSettings, StatusRange, TlsSettings};

/// A built TLS client configuration, or why it could not be built (every check fails with it).
pub type TlsClient = Result<Arc<rustls::ClientConfig>, String>;

/// The client configuration of an https check (`None` for other kinds).
pub fn tls_client(settings: &HealthSettings) -> Option<TlsClient> {
    match &settings.check {
        CheckKind::Https { tls, .. } => Some(
            tls.client_config()
                .map_err(|(field, message)| format!("TLS settings: {field}: {message}")),
        ),
        _ => None,
    }
}

/// Why a check failed. The text is what `status` shows as the last failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("connect {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("HTTP GET {path}: {reason}")]
    Http { path: String, reason: String },
    #[error("TLS handshake with {addr} as {name:?}: {reason}")]
    Tls {
        addr: SocketAddr,
        name: String,
        reason: String,
    },
    #[error("HTTP GET {path}: status {status} is not in {expected}")]
    Status {
        path: String,
        status: u16,
        expected: StatusRange,
    },
    #[error("command {program:?} could not run: {reason}")]
    Spawn { program: String, reason: String },
    #[error("command {program:?} {status}{}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    Exit {
        program: String,
        status: String,
        stderr: String,
    },
}

/// Runs one check of `settings.check` against `settings.address:port` (an https check
/// builds its TLS client configuration for this one check).
pub async fn probe(settings: &HealthSettings, port: u16) -> Result<(), ProbeError> {
    probe_with(settings, port, tls_client(settings).as_ref()).await
}

/// [`probe`] with the TLS client configuration of an https check built once by the caller.
pub async fn probe_with(
    settings: &HealthSettings,
    port: u16,
    tls_client: Option<&TlsClient>,
) -> Result<(), ProbeError> {
    let port = settings.check_port(port);
    let addr = SocketAddr::new(settings.address, port);
    let timeout = settings.timeout;
    match &settings.check {
        CheckKind::Tcp => bounded(timeout, tcp(addr)).await,
        CheckKind::Http { path, status, host } => {
            let get = async {
                let stream = connect(addr).await?;
                http(stream, addr, path, *status, host.as_deref()).await
            };
            bounded(timeout, get).await
        }
        CheckKind::Https {
            path,
            status,
            host,
            tls,
        } => {
            let get = async {
                let config = match tls_client {
                    Some(Ok(c)) => c.clone(),
                    Some(Err(e)) => {
                        return Err(ProbeError::Tls {
                            addr,
                            name: tls.name_for(host.as_deref(), addr.ip()),
                            reason: e.clone(),
                        });
                    }
                    None => return Err(tls_settings_missing(addr)),
                };
                let stream = tls_connect(addr, tls, host.as_deref(), config).await?;
                http(stream, addr, path, *status, host.as_deref()).await
            };
            bounded(timeout, get).await
        }
        // The command handles its own timeout: it must kill the process group.
        CheckKind::Exec { command } => exec(command, settings.address, port, timeout).await,
    }
}

async fn bounded(
    timeout: Duration,
    f: impl Future<Output = Result<(), ProbeError>>,
) -> Result<(), ProbeError> {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or(Err(ProbeError::Timeout(timeout)))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ProbeError> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeError::Connect {
            addr,
            reason: e.to_string(),
        })?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

async fn tcp(addr: SocketAddr) -> Result<(), ProbeError> {
    connect(addr).await.map(drop)
}

fn tls_settings_missing(addr: SocketAddr) -> ProbeError {
    ProbeError::Tls {
        addr,
        name: String::new(),
        reason: "no TLS client configuration was built for this check".into(),
    }
}

/// Connects and completes the TLS handshake; the certificate must chain to the configured
/// roots and carry the check's server name.
async fn tls_connect(
    addr: SocketAddr,
    tls: &TlsSettings,
    host: Option<&str>,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
    let name = tls.name_for(host, addr.ip());
    let tls_err = |reason: String| ProbeError::Tls {
        addr,
        name: name.clone(),
        reason,
    };
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| tls_err(format!("not a server name: {e}")))?;
    let tcp = connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| {
            let mut reason = e.to_string();
            let roots = match &tls.ca {
                Some(ca) => format!("the CA in {}", ca.display()),
                None => "any of the system's root certificates".to_owned(),
            };
            if reason.contains("UnknownIssuer") {
                reason.push_str(&format!(" (the certificate is not signed by {roots})"));
            } else if reason.contains("not valid for name") {
                reason.push_str(&format!(
                    " (the certificate does not name {name:?}; set server_name)"
                ));
            }
            tls_err(reason)
        })
}

async fn http<S>(
    stream: S,
    addr: SocketAddr,
    path: &str,
    expected: StatusRange,
    host: Option<&str>,
) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let err = |reason: String| ProbeError::Http {
        path: path.to_owned(),
        reason,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| err(e.to_string()))?;
    // The connection task ends when the request is answered and the sender dropped.
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let host = host.map_or_else(|| addr.to_string(), ToOwned::to_owned);
    let req = Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "shifter-health/1")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| err(e.to_string()))?;
    let res = sender.send_request(req).await;
    drop(sender);
    conn.abort();
    let res = res.map_err(|e| err(crate::util::error_chain(&e)))?;
    let status = res.status().as_u16();
    if expected.contains(status) {
        Ok(())
    } else {
        Err(ProbeError::Status {
            path: path.to_owned(),
            status,
            expected,
        })
    }
}

/// Most bytes of a command's stderr kept for the failure reason.
const STDERR_KEEP: usize = 512;

async fn exec(
    argv: &[String],
    address: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let subst = |a: &String| {
        a.replace("{port}", &port.to_string())
            .replace("{address}", &address.to_string())
    };
    let program = argv.first().map(subst).unwrap_or_default();
    let mut cmd = Command::new(&program);
    cmd.args(argv.iter().skip(1).map(subst))
        .env("SHIFTER_BACKEND_PORT", port.to_string())
        .env("SHIFTER_BACKEND_ADDRESS", address.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| ProbeError::Spawn {
        program: program.clone(),
        reason: e.to_string(),
    })?;
    let pid = child.id();
    let mut stderr = child.stderr.take();
    let run = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            // Keep the head; a chatty command must not block on a full pipe, so the
            // rest is read and dropped.
            let mut chunk = [0u8; 4096];
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = STDERR_KEEP.saturating_sub(buf.len());
                        buf.extend_from_slice(&chunk[..n.min(room)]);
                    }
                }
            }
        }
        let status = child.wait().await;
        (status, buf)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((Ok(status), buf)) if status.success() => {
            drop(buf);
            Ok(())
        }
        Ok((status, buf)) => Err(ProbeError::Exit {
            program,
            status: match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            },
            stderr: String::from_utf8_lossy(&buf).trim().to_owned(),
        }),
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: plain syscall; a negative pid names the process group the child
                // leads (it was started with process_group(0)).
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            let _ = child.kill().await;
            Err(ProbeError::Timeout(timeout))
        }
    }
}
