//! The etcd client, the election and the fence against a real 3-member etcd on loopback.

use std::time::{Duration, Instant};

use shifter::fleet::{
    election::{Elector, FenceError},
    store::{Compare, Op, Store},
};
use shifter_tests::etcd::EtcdCluster;

fn store(c: &EtcdCluster) -> Store {
    Store::new(&c.endpoints(), Duration::from_secs(2), None).expect("endpoints")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn kv_txn_lease_and_failover() {
    let mut c = EtcdCluster::start("kv");
    // The members run the binary asked for (`SHIFTER_TEST_ETCD`: 3.5 in the second run of
    // `cargo xtask test`).
    let version = c.server_version();
    eprintln!("etcd server {version}");
    assert_eq!(version, EtcdCluster::binary_version());
    let s = store(&c);
    rt().block_on(async {
        s.put("/t/a", b"1", 0).await.expect("put");
        s.put("/t/b", b"2", 0).await.expect("put");
        s.put("/u", b"x", 0).await.expect("put");
        let (kvs, rev) = s.list("/t/").await.expect("list");
        assert_eq!(
            kvs.iter()
                .map(|k| (k.key.as_str(), k.value.as_slice()))
                .collect::<Vec<_>>(),
            [("/t/a", &b"1"[..]), ("/t/b", &b"2"[..])]
        );
        assert!(rev > 0);
        let a = s.get("/t/a").await.expect("get").expect("exists");
        // A create-only txn fails on an existing key and writes nothing.
        let r = s
            .txn(
                &[Compare::CreateRevision("/t/a".into(), 0)],
                &[Op::Put {
                    key: "/t/a".into(),
                    value: b"9".to_vec(),
                    lease: 0,
                }],
            )
            .await
            .expect("txn");
        assert!(!r.succeeded);
        // A compare-and-swap on the mod revision.
        let r = s
            .txn(
                &[Compare::ModRevision("/t/a".into(), a.mod_revision)],
                &[
                    Op::Put {
                        key: "/t/a".into(),
                        value: b"3".to_vec(),
                        lease: 0,
                    },
                    Op::Delete("/t/b".into()),
                ],
            )
            .await
            .expect("txn");
        assert!(r.succeeded);
        assert_eq!(s.get("/t/a").await.unwrap().unwrap().value, b"3");
        assert!(s.get("/t/b").await.unwrap().is_none());
        // A key under a lease goes when the lease is revoked.
        let lease = s.grant(5).await.expect("grant");
        s.put("/t/l", b"x", lease).await.expect("put with lease");
        assert_eq!(s.get("/t/l").await.unwrap().unwrap().lease, lease);
        assert!(s.keepalive(lease).await.expect("keepalive") > 0);
        s.revoke(lease).await.expect("revoke");
        assert!(s.get("/t/l").await.unwrap().is_none());
        assert_eq!(
            s.keepalive(lease)
                .await
                .expect("keepalive of a revoked lease"),
            0
        );
    });
    // With the first member dead the client goes on through the others.
    c.stop_member(0);
    rt().block_on(async {
        s.put("/t/after", b"1", 0)
            .await
            .expect("put with member 0 down");
        assert!(s.get("/t/after").await.unwrap().is_some());
    });
}

#[test]
fn election_takeover_within_the_ttl_and_the_fence_holds() {
    let c = EtcdCluster::start("elect");
    let s = store(&c);
    let key = "/e/leader".to_owned();
    let a = Elector {
        store: s.clone(),
        key: key.clone(),
        id: "a".into(),
        ttl: 2,
    };
    let b = Elector {
        store: s.clone(),
        key: key.clone(),
        id: "b".into(),
        ttl: 2,
    };
    rt().block_on(async {
        let ta = a
            .try_campaign()
            .await
            .expect("campaign")
            .expect("a wins an empty election");
        assert!(
            b.try_campaign().await.expect("campaign").is_none(),
            "b must lose while a leads"
        );
        ta.write(&s, &key, &[Op::put_json("/e/doc".into(), &"by a")])
            .await
            .expect("a writes");
        // a stops renewing (as if SIGSTOPped); b campaigns and wins once a's lease expired.
        let stopped = Instant::now();
        let tb = b.campaign(Duration::from_millis(100)).await;
        let took = stopped.elapsed();
        eprintln!("takeover after the leader stopped renewing a 2 s lease: {took:?}");
        assert!(
            took <= Duration::from_millis(2000 + 1500),
            "takeover took {took:?}"
        );
        assert_ne!(ta.revision, tb.revision);
        // a wakes up: every write it tries is refused, and the document is b's.
        tb.write(&s, &key, &[Op::put_json("/e/doc".into(), &"by b")])
            .await
            .expect("b writes");
        let e = ta
            .write(&s, &key, &[Op::put_json("/e/doc".into(), &"by a, late")])
            .await
            .expect_err("the old leader must be fenced");
        assert!(matches!(e, FenceError::Fenced { .. }), "{e}");
        assert!(
            !ta.keepalive(&s).await.expect("keepalive"),
            "a's lease is gone"
        );
        let doc = s.get("/e/doc").await.unwrap().unwrap();
        assert_eq!(doc.json::<String>().unwrap(), "by b");
        // b resigns: a wins at once, with a new term.
        tb.resign(&s).await;
        let ta2 = a
            .try_campaign()
            .await
            .expect("campaign")
            .expect("a wins after b resigned");
        assert!(ta2.revision > tb.revision);
    });
}

/// etcd refuses a txn of more than 128 operations: a wave of 150 hosts is asked in several
/// fenced txns, each host once, and the document follows.
#[test]
fn a_wave_larger_than_one_txn_is_asked_in_chunks() {
    use shifter::fleet::{
        coordinator::{self, Options},
        schema::{FleetSpec, Keys, NodeInfo, OnLost, RolloutDoc, WaveSelector},
    };
    let c = EtcdCluster::start("chunks");
    let s = store(&c);
    let keys = Keys::new("/chunks/");
    rt().block_on(async {
        let too_many: Vec<Op> = (0..150)
            .map(|i| Op::put_json(format!("/x/{i}"), &i))
            .collect();
        assert!(
            s.txn(&[], &too_many).await.is_err(),
            "etcd took 150 operations in one txn; the chunking premise is wrong"
        );
        let lease = s.grant(30).await.expect("grant");
        for i in 0..150 {
            let n = NodeInfo {
                node: format!("n{i:03}"),
                labels: Default::default(),
                version: "t".into(),
                kernel: "t".into(),
                services: vec!["web".into()],
            };
            s.put(&keys.node(&n.node), &serde_json::to_vec(&n).unwrap(), lease)
                .await
                .expect("register");
        }
        let spec = FleetSpec {
            service: "web".into(),
            steps_bp: vec![10_000],
            hold_ms: 1000,
            waves: vec![WaveSelector::Rest],
            max_parallel: 0,
            min_healthy: 0,
            failures_tolerated: 0,
            on_lost: OnLost::Pause,
            wave_deadline_ms: 0,
            approve_waves: false,
        };
        let doc = RolloutDoc::new("web-1".into(), spec, 0);
        s.put(&keys.active("web"), b"web-1", 0)
            .await
            .expect("active");
        s.put(
            &keys.rollout("web-1"),
            &serde_json::to_vec(&doc).unwrap(),
            0,
        )
        .await
        .expect("doc");
        let opts = Options {
            endpoints: c.endpoints(),
            prefix: keys.prefix().to_owned(),
            id: "c".into(),
            ttl_secs: 2,
            tick: Duration::from_millis(100),
            request_timeout: Duration::from_secs(2),
            tls: None,
        };
        let run = coordinator::run(opts, tokio::time::sleep(Duration::from_secs(3)));
        run.await.expect("coordinator");
        let (desired, _) = s.list(&format!("{}desired/", keys.prefix())).await.unwrap();
        assert_eq!(desired.len(), 150);
        assert!(
            desired
                .iter()
                .all(|kv| kv.mod_revision == kv.create_revision),
            "a host was asked twice"
        );
        let doc: RolloutDoc = s
            .get(&keys.rollout("web-1"))
            .await
            .unwrap()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(doc.hosts.len(), 150);
        assert!(
            doc.hosts
                .values()
                .all(|p| *p == shifter::fleet::schema::HostPhase::Ramping),
            "{:?}",
            doc.hosts
        );
    });
}

/// etcd serving clients over TLS with `--client-cert-auth`: the store verifies the members
/// against the test CA and shows its client certificate; keys, txns and the CLI work. Without
/// the client certificate etcd refuses us, with another CA we refuse the members, each a
/// clear error; nothing is written by a refused client.
#[test]
fn tls_with_a_client_certificate() {
    use shifter::config::TlsSettings;
    let c = EtcdCluster::start_tls("tls");
    let t = c.tls.as_ref().expect("TLS files");
    let good = TlsSettings {
        ca: Some(t.ca.clone()),
        client_cert: Some(t.client_cert.clone()),
        client_key: Some(t.client_key.clone()),
        server_name: None,
    };
    let timeout = Duration::from_secs(2);
    let s = Store::new(&c.endpoints(), timeout, Some(&good)).expect("store");
    rt().block_on(async {
        s.put("/tls/a", b"1", 0).await.expect("put over TLS");
        let kv = s.get("/tls/a").await.expect("get").expect("exists");
        assert_eq!(kv.value, b"1");
        let r = s
            .txn(
                &[Compare::ModRevision("/tls/a".into(), kv.mod_revision)],
                &[Op::Put {
                    key: "/tls/b".into(),
                    value: b"2".to_vec(),
                    lease: 0,
                }],
            )
            .await
            .expect("txn");
        assert!(r.succeeded);
    });

    let no_cert = TlsSettings {
        ca: Some(t.ca.clone()),
        ..Default::default()
    };
    let refused = Store::new(&c.endpoints(), timeout, Some(&no_cert)).expect("store");
    let e = rt()
        .block_on(refused.put("/tls/c", b"3", 0))
        .expect_err("etcd takes no client without a certificate");
    eprintln!("without a client certificate: {e}");
    assert!(
        e.to_string().contains("no client certificate was sent"),
        "{e}"
    );

    let other_ca = c.dir.0.join("other-ca.pem");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other_ca, params.self_signed(&key).expect("CA").pem()).expect("write");
    let wrong = TlsSettings {
        ca: Some(other_ca),
        ..good.clone()
    };
    let distrusted = Store::new(&c.endpoints(), timeout, Some(&wrong)).expect("store");
    let e = rt()
        .block_on(distrusted.put("/tls/c", b"3", 0))
        .expect_err("members signed by another CA");
    eprintln!("with another CA: {e}");
    assert!(
        e.to_string().contains("TLS handshake") && e.to_string().contains("127.0.0.1"),
        "{e}"
    );
    assert!(
        rt().block_on(s.get("/tls/c")).expect("get").is_none(),
        "a refused client wrote"
    );

    // The CLI with the same files; without --ca it cannot verify the members.
    let cli = |extra: &[&std::ffi::OsStr]| {
        std::process::Command::new(shifter_tests::daemon::shifter_bin())
            .arg("fleet")
            .arg("--endpoints")
            .arg(c.endpoints().join(","))
            .args(["--prefix", "/tls-fleet/"])
            .args(extra)
            .args(["nodes", "--json"])
            .output()
            .expect("shifter fleet")
    };
    let ok = cli(&[
        "--ca".as_ref(),
        t.ca.as_os_str(),
        "--client-cert".as_ref(),
        t.client_cert.as_os_str(),
        "--client-key".as_ref(),
        t.client_key.as_os_str(),
    ]);
    assert!(
        ok.status.success(),
        "fleet nodes over TLS: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = cli(&[]);
    assert!(!bad.status.success(), "verified etcd without its CA");
    eprintln!(
        "the CLI without --ca: {}",
        String::from_utf8_lossy(&bad.stderr).trim()
    );
}
