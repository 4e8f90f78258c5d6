//! Fleet metrics in the Prometheus text format, served by `shifter fleet coordinate
//! --metrics-address ADDR` at `/metrics`. Each scrape reads the fleet from etcd (leader or
//! standby alike: the coordinator keeps no state), so every coordinator shows the same.

use std::{collections::BTreeMap, convert::Infallible, fmt::Write as _, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::warn;

use super::{
    coordinator::{Snapshot, snapshot},
    schema::{HostPhase, Keys, RolloutDoc},
    store::Store,
};

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

const HOST_PHASES: [(HostPhase, &str); 6] = [
    (HostPhase::Pending, "pending"),
    (HostPhase::Ramping, "ramping"),
    (HostPhase::Done, "done"),
    (HostPhase::Failed, "failed"),
    (HostPhase::RollingBack, "rolling-back"),
    (HostPhase::RolledBack, "rolled-back"),
];

/// The exposition of a snapshot, as coordinator `me` sees it (`leader`: the leader key).
pub fn render(snap: &Snapshot, leader: Option<&str>, me: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP shifter_fleet_nodes Hosts with a live heartbeat lease.\n\
         # TYPE shifter_fleet_nodes gauge\nshifter_fleet_nodes {}",
        snap.nodes.len()
    );
    let _ = writeln!(
        out,
        "# HELP shifter_fleet_leader 1 when this coordinator holds the leader key.\n\
         # TYPE shifter_fleet_leader gauge\nshifter_fleet_leader{{coordinator=\"{}\"}} {}",
        label(me),
        u8::from(leader == Some(me))
    );
    // The newest rollout of each service.
    let mut newest: BTreeMap<&str, &RolloutDoc> = BTreeMap::new();
    for d in snap.rollouts.values() {
        let e = newest.entry(d.spec.service.as_str()).or_insert(d);
        if d.created_ms > e.created_ms {
            *e = d;
        }
    }
    let _ = writeln!(
        out,
        "# HELP shifter_fleet_rollout_phase The phase of each service's newest fleet rollout (1).\n\
         # TYPE shifter_fleet_rollout_phase gauge"
    );
    for d in newest.values() {
        let _ = writeln!(
            out,
            "shifter_fleet_rollout_phase{{service=\"{}\",rollout=\"{}\",phase=\"{}\"}} 1",
            label(&d.spec.service),
            label(&d.id),
            d.phase.name()
        );
    }
    let _ = writeln!(
        out,
        "# HELP shifter_fleet_rollout_wave The current wave (from 1) of the newest rollout.\n\
         # TYPE shifter_fleet_rollout_wave gauge"
    );
    for d in newest.values() {
        let _ = writeln!(
            out,
            "shifter_fleet_rollout_wave{{service=\"{}\",rollout=\"{}\"}} {}",
            label(&d.spec.service),
            label(&d.id),
            if d.waves.is_empty() { 0 } else { d.wave + 1 }
        );
    }
    let _ = writeln!(
        out,
        "# HELP shifter_fleet_rollout_waves The waves of the newest rollout.\n\
         # TYPE shifter_fleet_rollout_waves gauge"
    );
    for d in newest.values() {
        let _ = writeln!(
            out,
            "shifter_fleet_rollout_waves{{service=\"{}\",rollout=\"{}\"}} {}",
            label(&d.spec.service),
            label(&d.id),
            d.waves.len()
        );
    }
    let _ = writeln!(
        out,
        "# HELP shifter_fleet_rollout_hosts Hosts of the newest rollout by phase.\n\
         # TYPE shifter_fleet_rollout_hosts gauge"
    );
    for d in newest.values() {
        for (phase, name) in HOST_PHASES {
            let count = d.hosts.values().filter(|p| **p == phase).count();
            let _ = writeln!(
                out,
                "shifter_fleet_rollout_hosts{{service=\"{}\",rollout=\"{}\",phase=\"{name}\"}} {count}",
                label(&d.spec.service),
                label(&d.id)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP shifter_fleet_host_weight_basis_points Green's weight each host last reported.\n\
         # TYPE shifter_fleet_host_weight_basis_points gauge"
    );
    for (service, reports) in &snap.reports {
        for (node, r) in reports {
            let _ = writeln!(
                out,
                "shifter_fleet_host_weight_basis_points{{service=\"{}\",node=\"{}\"}} {}",
                label(service),
                label(node),
                r.weight_bp
            );
        }
    }
    out
}

/// Serves `/metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, store: Store, keys: Keys, me: String) {
    let ctx = Arc::new((store, keys, me));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("fleet metrics: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(answer(&ctx, req.uri().path()).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(ctx: &(Store, Keys, String), path: &str) -> Response<Full<Bytes>> {
    let (store, keys, me) = ctx;
    let reply = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header(
                hyper::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    if path != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "only /metrics is here\n".into());
    }
    let snap = snapshot(store, keys).await;
    let leader = store.get(&keys.leader()).await;
    match (snap, leader) {
        (Ok(snap), Ok(leader)) => {
            let leader = leader.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            reply(StatusCode::OK, render(&snap, leader.as_deref(), me))
        }
        (Err(e), _) | (_, Err(e)) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("etcd: {}\n", crate::util::error_chain(&e)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::schema::{FleetSpec, HostState, Phase, Report};

    #[test]
    fn exposition_of_a_rollout() {
        let mut snap = Snapshot::default();
        let spec = FleetSpec::one_step("web");
        let mut old = RolloutDoc::new("web-1".into(), spec.clone(), 1);
        old.phase = Phase::Completed;
        let mut doc = RolloutDoc::new("web-2".into(), spec, 2);
        doc.phase = Phase::Running;
        doc.waves = vec![vec!["h1".into()], vec!["h2".into()]];
        doc.wave = 1;
        doc.hosts = BTreeMap::from([
            ("h1".into(), HostPhase::Done),
            ("h2".into(), HostPhase::Ramping),
        ]);
        snap.rollouts.insert("web-1".into(), old);
        snap.rollouts.insert("web-2".into(), doc);
        snap.reports.insert(
            "web".into(),
            BTreeMap::from([(
                "h2".into(),
                Report {
                    rollout: "web-2".into(),
                    action: "ramp".into(),
                    state: HostState::Running,
                    weight_bp: 500,
                    detail: None,
                    at_ms: 0,
                },
            )]),
        );
        let text = render(&snap, Some("c1"), "c1");
        for want in [
            "shifter_fleet_nodes 0",
            "shifter_fleet_leader{coordinator=\"c1\"} 1",
            "shifter_fleet_rollout_phase{service=\"web\",rollout=\"web-2\",phase=\"running\"} 1",
            "shifter_fleet_rollout_wave{service=\"web\",rollout=\"web-2\"} 2",
            "shifter_fleet_rollout_waves{service=\"web\",rollout=\"web-2\"} 2",
            "shifter_fleet_rollout_hosts{service=\"web\",rollout=\"web-2\",phase=\"ramping\"} 1",
            "shifter_fleet_rollout_hosts{service=\"web\",rollout=\"web-2\",phase=\"failed\"} 0",
            "shifter_fleet_host_weight_basis_points{service=\"web\",node=\"h2\"} 500",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        assert!(!text.contains("web-1"), "only the newest rollout: {text}");
        assert!(
            render(&snap, Some("c2"), "c1").contains("shifter_fleet_leader{coordinator=\"c1\"} 0")
        );
    }
}
