//! `shifter fleet coordinate`: wins the election, then every tick reads the whole fleet
//! prefix, lets [`plan::decide`] choose, and writes the result fenced (one txn, or a few
//! for a wave of more than [`MAX_TXN_OPS`] hosts). It keeps nothing between ticks that etcd does not hold, so a standby that
//! wins after a crash carries on from the same documents: a host asked once is never asked
//! again (its phase in the document says so), none is skipped (the wave waits for it).

use std::{collections::BTreeMap, future::Future, time::Duration};

use tracing::{info, warn};

use super::{
    election::{Elector, FenceError, Term},
    plan::{self, View},
    schema::{CoordinatorBeat, Keys, NodeInfo, Ops, Report, RolloutDoc},
    store::{Kv, Op, Store, StoreError},
};
use crate::util::error_chain;

#[derive(Clone, Debug)]
pub struct Options {
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// This coordinator's name (in the leader key and in every document it writes).
    pub id: String,
    /// The leader lease, whole seconds: a standby takes over at most this long after the
    /// leader stopped renewing.
    pub ttl_secs: u64,
    /// How often the leader decides (and a standby campaigns).
    pub tick: Duration,
    pub request_timeout: Duration,
    /// With https:// endpoints.
    pub tls: Option<crate::config::TlsSettings>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Everything under the prefix, sorted into what the decision needs.
#[derive(Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, NodeInfo>,
    /// service -> rollout id
    pub active: BTreeMap<String, String>,
    pub rollouts: BTreeMap<String, RolloutDoc>,
    pub ops: BTreeMap<String, Ops>,
    /// service -> node -> report
    pub reports: BTreeMap<String, BTreeMap<String, Report>>,
}

impl Snapshot {
    pub fn from_kvs(keys: &Keys, kvs: &[Kv]) -> Self {
        let mut s = Self::default();
        let p = keys.prefix();
        for kv in kvs {
            let Some(rest) = kv.key.strip_prefix(p) else {
                continue;
            };
            let (kind, name) = rest.split_once('/').unwrap_or((rest, ""));
            let bad = |e: serde_json::Error| warn!("fleet: ignoring {}: {e}", kv.key);
            match kind {
                "nodes" => match kv.json() {
                    Ok(n) => {
                        s.nodes.insert(name.to_owned(), n);
                    }
                    Err(e) => bad(e),
                },
                "active" => {
                    s.active.insert(
                        name.to_owned(),
                        String::from_utf8_lossy(&kv.value).into_owned(),
                    );
                }
                "rollouts" => match kv.json() {
                    Ok(d) => {
                        s.rollouts.insert(name.to_owned(), d);
                    }
                    Err(e) => bad(e),
                },
                "ops" => match kv.json() {
                    Ok(o) => {
                        s.ops.insert(name.to_owned(), o);
                    }
                    Err(e) => bad(e),
                },
                "reports" => {
                    if let Some((node, service)) = name.split_once('/') {
                        match kv.json() {
                            Ok(r) => {
                                s.reports
                                    .entry(service.to_owned())
                                    .or_default()
                                    .insert(node.to_owned(), r);
                            }
                            Err(e) => bad(e),
                        }
                    }
                }
                _ => {}
            }
        }
        s
    }
}

/// Reads the whole prefix.
pub async fn snapshot(store: &Store, keys: &Keys) -> Result<Snapshot, StoreError> {
    let (kvs, _) = store.list(keys.prefix()).await?;
    Ok(Snapshot::from_kvs(keys, &kvs))
}

/// Runs until `shutdown` completes; resigns then, so a standby need not wait for the TTL.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> Result<(), StoreError> {
    let store = Store::new(&opts.endpoints, opts.request_timeout, opts.tls.as_ref())?;
    let keys = Keys::new(&opts.prefix);
    let elector = Elector {
        store: store.clone(),
        key: keys.leader(),
        id: opts.id.clone(),
        ttl: opts.ttl_secs.max(1),
    };
    tokio::pin!(shutdown);
    loop {
        info!("fleet: {} campaigning for {}", opts.id, keys.leader());
        let term = tokio::select! {
            () = &mut shutdown => return Ok(()),
            t = elector.campaign(opts.tick) => t,
        };
        info!(
            "fleet: {} is the leader (term {}, lease {:x})",
            opts.id, term.revision, term.lease
        );
        let lost = tokio::select! {
            () = &mut shutdown => {
                term.resign(&store).await;
                info!("fleet: {} resigned", opts.id);
                return Ok(());
            }
            why = lead(&store, &keys, &term, &opts) => why,
        };
        warn!("fleet: {} is no longer the leader: {lost}", opts.id);
    }
}

/// Leads until the leadership is lost; the reason.
async fn lead(store: &Store, keys: &Keys, term: &Term, opts: &Options) -> String {
    let renew_every = Duration::from_secs(opts.ttl_secs.max(1)) / 3;
    let mut last_renew = tokio::time::Instant::now();
    loop {
        // The first thing after any pause is a fenced write: a leader that was stopped
        // past its lease learns it here, and writes nothing.
        let beat = CoordinatorBeat {
            id: opts.id.clone(),
            at_ms: now_ms(),
        };
        match term
            .write(
                store,
                &keys.leader(),
                &[Op::put_json(keys.coordinator(), &beat)],
            )
            .await
        {
            Ok(_) => {}
            Err(e @ FenceError::Fenced { .. }) => return e.to_string(),
            Err(e) => warn!("fleet: {}", error_chain(&e)),
        }
        if last_renew.elapsed() >= renew_every {
            match term.keepalive(store).await {
                Ok(true) => last_renew = tokio::time::Instant::now(),
                Ok(false) => return "the leader lease expired".into(),
                Err(e) => warn!("fleet: renewing the leader lease: {}", error_chain(&e)),
            }
        }
        match tick(store, keys, term, opts).await {
            Ok(()) => {}
            Err(e @ FenceError::Fenced { .. }) => return e.to_string(),
            Err(e) => warn!("fleet: tick: {}", error_chain(&e)),
        }
        tokio::time::sleep(opts.tick).await;
    }
}

/// The most operations a coordinator puts in one txn (etcd's default limit is 128).
pub const MAX_TXN_OPS: usize = 100;

/// One decision for every active rollout, each written in fenced txns (one, unless more
/// than [`MAX_TXN_OPS`] hosts are asked at once).
async fn tick(store: &Store, keys: &Keys, term: &Term, opts: &Options) -> Result<(), FenceError> {
    let snap = snapshot(store, keys).await?;
    let now = now_ms();
    for (service, id) in &snap.active {
        let Some(doc) = snap.rollouts.get(id) else {
            warn!("fleet: active/{service} names {id}, which does not exist; clearing it");
            term.write(store, &keys.leader(), &[Op::Delete(keys.active(service))])
                .await?;
            continue;
        };
        let ops = snap.ops.get(id).cloned().unwrap_or_default();
        let empty = BTreeMap::new();
        let reports = snap.reports.get(service).unwrap_or(&empty);
        let d = plan::decide(
            doc,
            &View {
                now_ms: now,
                alive: &snap.nodes,
                reports,
                ops: &ops,
            },
        );
        if d.doc.is_none() && d.desired.is_empty() {
            if doc.phase.is_terminal() {
                term.write(store, &keys.leader(), &[Op::Delete(keys.active(service))])
                    .await?;
            }
            continue;
        }
        // Desired states first, in fenced txns of at most MAX_TXN_OPS (etcd refuses more
        // than 128 operations in one txn), the document last. A leader that dies in
        // between leaves hosts asked whose document still says pending: the next leader
        // asks them again with the same desired state, which an agent applies only once.
        let mut desired: Vec<Op> = Vec::new();
        for (host, want) in &d.desired {
            info!("fleet: {id}: {host}: {} {service}", want.action.name());
            desired.push(Op::put_json(keys.desired(host, service), want));
        }
        if desired.len() >= MAX_TXN_OPS {
            for chunk in desired.chunks(MAX_TXN_OPS) {
                term.write(store, &keys.leader(), chunk).await?;
            }
            desired.clear();
        }
        let mut txn = desired;
        if let Some(mut new) = d.doc {
            new.writer.clone_from(&opts.id);
            if new.phase != doc.phase {
                info!(
                    "fleet: {id}: {service}: {}{}",
                    new.phase.name(),
                    new.phase
                        .reason()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
            if new.phase.is_terminal() {
                txn.push(Op::Delete(keys.active(service)));
            }
            txn.push(Op::put_json(keys.rollout(id), &new));
        }
        term.write(store, &keys.leader(), &txn).await?;
    }
    Ok(())
}
