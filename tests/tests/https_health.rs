//! HTTPS health checks in a real daemon (in-process, server namespace): blue's and green's
//! health endpoints (backend port + 1000) are TLS servers whose certificate, for the server
//! address, is signed by a test CA made here (rcgen). With that CA configured both backends
//! are up and a rollout starts; with another CA green is down and `status` says why.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde_json::Value;
use shifter_tests::{
    daemon::{DaemonBed, InProcess},
    netns::{self, BLUE_PORT, GREEN_PORT, SERVER_V4, SERVICE_PORT},
    patient,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const OFFSET: u16 = 1000;

/// A CA: its certificate (PEM) and issuer.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

/// TLS servers answering `200 OK` on the health ports of blue and green, on a runtime of
/// their own (their sockets are bound in `ns`).
fn tls_backends(ns: &str, issuer: &Issuer<'static, KeyPair>) -> tokio::runtime::Runtime {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![SERVER_V4.to_string()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, issuer).expect("sign");
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    for port in [BLUE_PORT + OFFSET, GREEN_PORT + OFFSET] {
        let l = netns::run_in(ns, || {
            std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(SERVER_V4), port))
                .expect("bind a health endpoint")
        });
        l.set_nonblocking(true).expect("nonblocking");
        let acceptor = acceptor.clone();
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(l).expect("tokio listener");
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
    }
    rt
}

fn config(ca: &Path) -> String {
    format!(
        "[[services]]\nname = \"web\"\nport = {SERVICE_PORT}\nblue_port = {BLUE_PORT}\n\
         green_port = {GREEN_PORT}\nweight = 0\n\n[services.health]\nkind = \"https\"\n\
         path = \"/healthz\"\naddress = \"{SERVER_V4}\"\nport_offset = {OFFSET}\nca = \"{}\"\n\
         interval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 2\n\n\
         [services.rollout]\nsteps = [10, 100]\nhold = \"1h\"\n",
        ca.display()
    )
}

fn health(bed: &DaemonBed) -> Value {
    bed.status()["services"][0]["health"].clone()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let limit = patient(Duration::from_secs(10));
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn https_checks_pass_with_the_test_ca_and_fail_with_another() {
    let bed = DaemonBed::new("https-health");
    let (ca_pem, issuer) = ca("shifter test CA");
    let _backends = tls_backends(bed.server_ns(), &issuer);
    let good: PathBuf = bed.dir.0.join("ca.pem");
    let wrong: PathBuf = bed.dir.0.join("wrong-ca.pem");
    std::fs::write(&good, &ca_pem).expect("write ca");
    std::fs::write(&wrong, ca("another CA").0).expect("write wrong ca");

    bed.write_config(&config(&wrong));
    let out = bed.cli(
        &["check-config", bed.config_path.to_str().expect("path")],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let daemon = InProcess::start(&bed);
    wait_for("green down with the wrong CA", || {
        health(&bed)["green"]["status"] == "down"
    });
    let h = health(&bed);
    let why = h["green"]["last_failure"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    eprintln!("wrong CA: {why}");
    assert!(
        why.contains("invalid peer certificate: UnknownIssuer")
            && why.contains(&format!("not signed by the CA in {}", wrong.display())),
        "{h:#}"
    );
    let out = bed.cli(&["rollout", "start", "web"], None);
    assert!(
        !out.status.success(),
        "a rollout toward a green that is down is refused"
    );
    daemon.stop();

    bed.write_config(&config(&good));
    let daemon = InProcess::start(&bed);
    wait_for("both up with the test CA", || {
        let h = health(&bed);
        h["green"]["status"] == "up" && h["blue"]["status"] == "up"
    });
    bed.cli_ok(&["rollout", "start", "web"]);
    assert_eq!(bed.status()["services"][0]["weight_bp"], 1000);
    daemon.stop();
}
