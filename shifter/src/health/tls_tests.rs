//! HTTPS checks against a local TLS server (tokio-rustls) whose certificates come from a
//! test CA made here (rcgen): the right CA passes; a wrong CA, a wrong name or a missing
//! client certificate fail with a reason that says so; the validation reads the files.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::probe;
use crate::config::{CheckKind, HealthSettings, StatusRange, TlsSettings};

struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("CA certificate");
    Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate for `names` with `usage`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

struct Files(PathBuf);

impl Files {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("shifter-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        Self(d)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TLS server on loopback answering every request `200 OK`; with `client_ca`, it asks for
/// a client certificate signed by it.
async fn server(cert_pem: &str, key_pem: &str, client_ca: Option<&str>) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("server chain");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("server key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let config = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.expect("ca")).expect("add ca");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    }
    .with_single_cert(chain, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
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
    addr
}

fn https(tls: TlsSettings, host: Option<&str>) -> HealthSettings {
    let mut s = HealthSettings::new(CheckKind::Https {
        path: "/healthz".into(),
        status: StatusRange { min: 200, max: 299 },
        host: host.map(ToOwned::to_owned),
        tls,
    });
    s.timeout = std::time::Duration::from_secs(2);
    s
}

#[tokio::test]
async fn the_right_ca_passes_and_a_wrong_one_fails_with_a_clear_reason() {
    let files = Files::new("ca");
    let good = ca("shifter test CA");
    let (cert, key) = leaf(
        &good,
        &["app.test", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let addr = server(&cert, &key, None).await;
    let good_ca = files.write("ca.pem", &good.cert_pem);
    let wrong_ca = files.write("wrong.pem", &ca("another CA").cert_pem);

    // Verified as the address (the certificate names 127.0.0.1), then as app.test (SNI).
    let ok = |ca: &PathBuf, name: Option<&str>| TlsSettings {
        ca: Some(ca.clone()),
        server_name: name.map(ToOwned::to_owned),
        ..TlsSettings::default()
    };
    probe(&https(ok(&good_ca, None), None), addr.port())
        .await
        .expect("the right CA passes (name 127.0.0.1)");
    probe(&https(ok(&good_ca, Some("app.test")), None), addr.port())
        .await
        .expect("the right CA passes (name app.test)");
    // The Host header names the certificate when server_name is not set.
    probe(
        &https(ok(&good_ca, None), Some("app.test:8443")),
        addr.port(),
    )
    .await
    .expect("host gives the name");

    let e = probe(&https(ok(&wrong_ca, None), None), addr.port())
        .await
        .expect_err("a wrong CA fails")
        .to_string();
    assert!(
        e.contains("invalid peer certificate: UnknownIssuer")
            && e.contains(&format!("not signed by the CA in {}", wrong_ca.display())),
        "{e}"
    );
    assert!(e.starts_with(&format!("TLS handshake with {addr}")), "{e}");

    let e = probe(&https(ok(&good_ca, Some("other.test")), None), addr.port())
        .await
        .expect_err("a wrong name fails")
        .to_string();
    assert!(
        e.contains("certificate not valid for name \"other.test\"")
            && e.contains("set server_name"),
        "{e}"
    );

    // The system's roots do not know the test CA.
    let e = probe(&https(TlsSettings::default(), None), addr.port())
        .await
        .expect_err("system roots fail")
        .to_string();
    eprintln!("system roots: {e}");
    // (This machine has system roots; without any the reason says so instead.)
    assert!(
        e.ends_with(
            "UnknownIssuer (the certificate is not signed by any of the system's root certificates)"
        ) || e.contains("no system root certificates could be loaded"),
        "{e}"
    );
}

#[tokio::test]
async fn a_client_certificate_is_sent_when_configured() {
    let files = Files::new("client");
    let ca = ca("shifter test CA");
    let (cert, key) = leaf(&ca, &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let addr = server(&cert, &key, Some(&ca.cert_pem)).await;
    let (ccert, ckey) = leaf(
        &ca,
        &["shifter-health"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let tls = TlsSettings {
        ca: Some(files.write("ca.pem", &ca.cert_pem)),
        client_cert: Some(files.write("client.pem", &ccert)),
        client_key: Some(files.write("client.key", &ckey)),
        ..TlsSettings::default()
    };
    probe(&https(tls.clone(), None), addr.port())
        .await
        .expect("with the client certificate");
    let without = TlsSettings {
        client_cert: None,
        client_key: None,
        ..tls
    };
    let e = probe(&https(without, None), addr.port())
        .await
        .expect_err("the server wants a client certificate");
    assert!(
        e.to_string()
            .ends_with("received fatal alert: CertificateRequired"),
        "{e}"
    );
}

#[test]
fn the_validation_reads_the_files() {
    let files = Files::new("config");
    let ca = ca("shifter test CA");
    let ca_path = files.write("ca.pem", &ca.cert_pem);
    let (ccert, ckey) = leaf(&ca, &["x"], ExtendedKeyUsagePurpose::ClientAuth);
    let cert_path = files.write("c.pem", &ccert);
    let key_path = files.write("c.key", &ckey);
    let junk = files.write("junk.pem", "not a certificate\n");
    let svc = "[[services]]\nname = \"web\"\nport = 80\nblue_port = 8081\ngreen_port = 8082\n[services.health]\n";
    let parse = |h: &str| {
        crate::config::Config::parse(&format!("{svc}{h}"), std::path::Path::new("t.toml"))
            .map_err(|e| e.problems())
    };
    let c = parse(&format!(
        "kind = \"https\"\npath = \"/h\"\nca = \"{}\"\nserver_name = \"app.test\"\n\
         client_cert = \"{}\"\nclient_key = \"{}\"\n",
        ca_path.display(),
        cert_path.display(),
        key_path.display()
    ))
    .expect("valid");
    let Some(CheckKind::Https { tls, path, .. }) = c.services[0].health.as_ref().map(|h| &h.check)
    else {
        panic!("an https check");
    };
    assert_eq!(
        (path.as_str(), tls.server_name.as_deref()),
        ("/h", Some("app.test"))
    );
    assert_eq!(tls.ca.as_ref(), Some(&ca_path));

    let e = parse(&format!(
        "kind = \"https\"\nca = \"{}\"\nserver_name = \"bad name!\"\nclient_cert = \"{}\"\n",
        junk.display(),
        cert_path.display()
    ))
    .unwrap_err();
    assert_eq!(
        e,
        [
            "services[0].health.server_name: \"bad name!\" is not a DNS name or an IP address"
                .to_owned(),
            "services[0].health.client_key: is required with client_cert".to_owned(),
            format!(
                "services[0].health.ca: {}: no PEM certificate in it",
                junk.display()
            ),
        ]
    );
    let e = parse(&format!(
        "kind = \"https\"\nca = \"{}\"\nclient_cert = \"{}\"\n",
        ca_path.display(),
        cert_path.display()
    ))
    .unwrap_err();
    assert_eq!(
        e,
        ["services[0].health.client_key: is required with client_cert"]
    );
    let e = parse("kind = \"https\"\nca = \"ca.pem\"\n").unwrap_err();
    assert_eq!(
        e,
        ["services[0].health.ca: \"ca.pem\" is not an absolute path"]
    );
    let e = parse("kind = \"https\"\nca = \"/nonexistent/ca.pem\"\n").unwrap_err();
    assert!(
        e[0].starts_with("services[0].health.ca: /nonexistent/ca.pem: "),
        "{e:?}"
    );
    let e = parse("kind = \"http\"\nca = \"/x.pem\"\n").unwrap_err();
    assert_eq!(
        e,
        ["services[0].health.ca: is only used by https checks, not http"]
    );
    // A key that is not the certificate's.
    let (_, other_key) = leaf(&ca, &["y"], ExtendedKeyUsagePurpose::ClientAuth);
    let other = files.write("o.key", &other_key);
    let e = parse(&format!(
        "kind = \"https\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        ca_path.display(),
        cert_path.display(),
        other.display()
    ))
    .unwrap_err();
    assert!(
        e[0].starts_with("services[0].health.client_key: does not fit client_cert"),
        "{e:?}"
    );
}
