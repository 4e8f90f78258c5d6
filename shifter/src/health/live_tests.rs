//! Health checks against real servers on 127.0.0.1 ephemeral ports in this process, and
//! the checker's rise/fall timing (scripted results on tokio's paused clock, and real
//! servers in real time).

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
    task::JoinHandle,
    time::Instant,
};

use super::{HealthStatus, ProbeError, probe, run_checker, run_checker_with};
use crate::config::{CheckKind, HealthSettings, StatusRange};

fn settings(check: CheckKind) -> HealthSettings {
    let mut s = HealthSettings::new(check);
    s.timeout = Duration::from_millis(500);
    s
}

pub(crate) fn http(path: &str, min: u16, max: u16, host: Option<&str>) -> HealthSettings {
    settings(CheckKind::Http {
        path: path.into(),
        status: StatusRange { min, max },
        host: host.map(Into::into),
    })
}

/// A port nothing listens on (bound, then closed).
pub(crate) async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A minimal HTTP/1.1 server answering every request with `status`; keeps the request heads.
pub(crate) struct HttpServer {
    pub(crate) port: u16,
    status: Arc<Mutex<u16>>,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn http_server(status: u16) -> HttpServer {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    let st = Arc::new(Mutex::new(status));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (st2, heads2) = (st.clone(), heads.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (st, heads) = (st2.clone(), heads2.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16_384 {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                heads
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let code = *st.lock().unwrap();
                let resp = format!(
                    "HTTP/1.1 {code} Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    HttpServer {
        port,
        status: st,
        heads,
        task,
    }
}

#[tokio::test]
async fn tcp_up_and_down() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let s = settings(CheckKind::Tcp);
    assert_eq!(probe(&s, port).await, Ok(()));
    drop(l);
    match probe(&s, port).await {
        Err(ProbeError::Connect { addr, reason }) => {
            assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
            assert!(reason.contains("refused"), "{reason}");
        }
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

#[tokio::test]
async fn http_status_in_and_out_of_range() {
    let srv = http_server(204).await;
    assert_eq!(
        probe(&http("/healthz", 200, 299, Some("app.example")), srv.port).await,
        Ok(())
    );
    {
        let heads = srv.heads.lock().unwrap();
        let head = heads.last().expect("the server saw the request");
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nhost: app.example\r\n"),
            "{head}"
        );
    }
    *srv.status.lock().unwrap() = 503;
    let err = probe(&http("/healthz", 200, 399, None), srv.port)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "HTTP GET /healthz: status 503 is not in 200-399"
    );
    // The default Host header is address:port.
    let last = srv.heads.lock().unwrap().last().cloned().unwrap();
    assert!(
        last.to_ascii_lowercase()
            .contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", srv.port)),
        "{last:?}"
    );
    // Exact status.
    *srv.status.lock().unwrap() = 200;
    assert_eq!(probe(&http("/", 200, 200, None), srv.port).await, Ok(()));
    assert!(probe(&http("/", 201, 201, None), srv.port).await.is_err());
}

#[tokio::test]
async fn http_down_and_silent() {
    let port = closed_port().await;
    assert!(matches!(
        probe(&http("/", 200, 399, None), port).await,
        Err(ProbeError::Connect { .. })
    ));
    // A server that accepts and never answers: the check times out.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            open.push(s);
        }
    });
    let mut s = http("/", 200, 399, None);
    s.timeout = Duration::from_millis(200);
    let t = std::time::Instant::now();
    assert_eq!(
        probe(&s, port).await,
        Err(ProbeError::Timeout(Duration::from_millis(200)))
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    hold.abort();
    // Not HTTP at all.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let junk = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"SSH-2.0-nope\r\n").await;
        }
    });
    let err = probe(&http("/", 200, 399, None), port).await.unwrap_err();
    assert!(matches!(err, ProbeError::Http { .. }), "{err:?}");
    junk.abort();
}

fn exec(script: &str) -> HealthSettings {
    settings(CheckKind::Exec {
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
            "{port}".into(),
        ],
    })
}

#[tokio::test]
async fn exec_success_failure_and_substitution() {
    assert_eq!(
        probe(
            &exec(r#"test "$0" = 4242 && test "$SHIFTER_BACKEND_PORT" = 4242 && test "$SHIFTER_BACKEND_ADDRESS" = 127.0.0.1"#),
            4242
        )
        .await,
        Ok(())
    );
    let err = probe(&exec("echo 'backend says no' >&2; exit 3"), 1)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "command \"/bin/sh\" exit status: 3: backend says no"
    );
    let mut s = exec("true");
    s.check = CheckKind::Exec {
        command: vec!["/nonexistent/check".into()],
    };
    assert!(matches!(probe(&s, 1).await, Err(ProbeError::Spawn { .. })));
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    if r != 0 {
        return false;
    }
    // A zombie still "exists"; it is dead for our purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn exec_timeout_kills_the_command_and_what_it_started() {
    let dir = std::env::temp_dir().join(format!("shifter-health-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let pids = dir.join("pids");
    let mut s = exec(&format!("sleep 30 & echo $$ $! > {}; wait", pids.display()));
    s.timeout = Duration::from_millis(300);
    let t = std::time::Instant::now();
    assert_eq!(
        probe(&s, 1).await,
        Err(ProbeError::Timeout(Duration::from_millis(300)))
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let text = std::fs::read_to_string(&pids).expect("the command wrote its pids");
    let ids: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(ids.len(), 2, "{text:?}");
    // Give the kernel a moment to deliver SIGKILL to the background sleep (bounded).
    for _ in 0..100 {
        if ids.iter().all(|&p| !alive(p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for p in ids {
        assert!(!alive(p), "process {p} survived the check's timeout");
    }
}

/// Scripted check results on the paused clock: the schedule is fixed-rate and verdicts come
/// exactly at the rise-th success and the fall-th failure.
#[tokio::test(start_paused = true)]
async fn checker_rise_and_fall_on_the_paused_clock() {
    let mut s = HealthSettings::new(CheckKind::Tcp);
    s.interval = Duration::from_secs(2);
    s.rise = 2;
    s.fall = 3;
    let script: VecDeque<Result<(), String>> = [
        Ok(()),
        Ok(()), // up at t = 2 s
        Err("a".to_string()),
        Err("b".to_string()),
        Ok(()), // resets the failure count
        Err("c".to_string()),
        Err("d".to_string()),
        Err("e".to_string()), // down at t = 14 s
        Ok(()),
        Ok(()), // up at t = 18 s
    ]
    .into_iter()
    .collect();
    let script = Arc::new(Mutex::new(script));
    let origin = Instant::now();
    let (tx, mut rx) = mpsc::channel(64);
    let sc = script.clone();
    let task = tokio::spawn(async move {
        run_checker_with(&s, 9, tx, move || {
            let r = sc.lock().unwrap().pop_front();
            async move {
                // Each check takes 100 ms of (paused) time.
                tokio::time::sleep(Duration::from_millis(100)).await;
                r.unwrap_or(Ok(()))
            }
        })
        .await;
    });
    let mut verdicts = Vec::new();
    for _ in 0..10 {
        let r = rx.recv().await.expect("a report");
        let t = origin.elapsed().as_millis();
        if let Some(v) = r.verdict {
            verdicts.push((t, v.healthy, v.reason));
        }
    }
    task.abort();
    assert_eq!(
        verdicts,
        [
            (2_100, true, None),
            (14_100, false, Some("e".into())),
            (18_100, true, None)
        ]
    );
}

/// Real servers in real time: a backend that goes away is Down within `fall` intervals.
#[tokio::test]
async fn checker_detects_a_killed_backend_within_fall_intervals() {
    let srv = http_server(200).await;
    let mut s = http("/healthz", 200, 399, None);
    s.interval = Duration::from_millis(50);
    s.timeout = Duration::from_millis(40);
    s.rise = 2;
    s.fall = 3;
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(run_checker(s.clone(), srv.port, tx));
    let up = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = rx.recv().await.expect("reports");
            if r.status == HealthStatus::Up {
                return r;
            }
        }
    })
    .await
    .expect("the backend came up within 5 s");
    assert!(up.verdict.is_some_and(|v| v.healthy));
    let port = srv.port;
    let killed = std::time::Instant::now();
    drop(srv);
    // The accept loop is gone; wait until the port refuses (the abort is asynchronous).
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let down = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = rx.recv().await.expect("reports");
            if let Some(v) = r.verdict {
                return (r.decided_at, v);
            }
        }
    })
    .await
    .expect("the backend went down within 5 s");
    task.abort();
    assert!(!down.1.healthy);
    assert!(
        down.1
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("refused")),
        "{:?}",
        down.1
    );
    let took = down.0 - killed;
    println!("killed backend detected after {took:?} (fall 3 x interval 50 ms)");
    assert!(
        took <= 3 * s.interval + Duration::from_millis(100),
        "{took:?}"
    );
}
