//! `shifter fleet coordinate|status|nodes|rollout|history`: fleet rollouts on etcd. These
//! verbs talk to etcd (the endpoints and prefix of `[fleet]` in `--config`, or
//! `--endpoints`), not to the local daemon.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use tokio::signal::unix::{SignalKind, signal};

use super::{EXIT_USAGE, Failure, VerbResult, block_on, fail, print_json};
use crate::{
    config::{Config, DEFAULT_FLEET_PREFIX, DEFAULT_REQUEST_TIMEOUT, valid_endpoint, valid_name},
    fleet::{
        coordinator::{self, Snapshot, snapshot},
        schema::{FleetSpec, Keys, OnLost, Ops, Phase, RolloutDoc, WaveSelector},
        store::{Compare, Op, Store},
    },
    model::{Weight, percent},
    paths,
    util::error_chain,
};

/// Fleet rollouts: one rollout of a service over many hosts, wave by wave, kept in etcd.
///
/// Every daemon with a `[fleet]` section is an agent; `shifter fleet coordinate` (run it on
/// one host or several: one leads, the others stand by) moves the rollouts on.
///
/// Examples: `shifter fleet nodes`, `shifter fleet rollout start web --steps 10,50,100 --hold
/// 30s --wave count=1 --wave 50% --wave rest`, `shifter fleet status`, `shifter fleet
/// coordinate --config /etc/shifter/shifter.toml`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The configuration whose `[fleet]` names etcd (endpoints, prefix).
    #[arg(long, short, default_value = paths::CONFIG, value_name = "PATH")]
    config: PathBuf,
    /// etcd endpoints (http://HOST:PORT, comma separated) instead of the configuration's.
    #[arg(long, value_delimiter = ',', global = true)]
    endpoints: Option<Vec<String>>,
    /// The key prefix instead of the configuration's.
    #[arg(long, global = true)]
    prefix: Option<String>,
    /// With https:// endpoints: the CA file verifying etcd's certificates (default: the
    /// configuration's `[fleet] ca`, else the system's roots).
    #[arg(long, global = true, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// With https:// endpoints: a client certificate for etcd (with --client-key).
    #[arg(long, global = true, value_name = "PEM", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert.
    #[arg(long, global = true, value_name = "PEM", requires = "client_cert")]
    client_key: Option<PathBuf>,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Coordinate the fleet's rollouts: campaign, lead, stand by again when fenced.
    ///
    /// Example: `shifter fleet coordinate --id coord-a --ttl 10s --tick 500ms`
    Coordinate {
        /// This coordinator's name (default: host name and pid).
        #[arg(long)]
        id: Option<String>,
        /// The leader lease (whole seconds): the longest a standby waits after a leader died.
        #[arg(long, default_value = "10s")]
        ttl: String,
        /// How often the leader decides.
        #[arg(long, default_value = "1s")]
        tick: String,
        /// Serve fleet metrics (Prometheus text) at http://ADDR/metrics, e.g. 127.0.0.1:9465.
        #[arg(long, value_name = "ADDR")]
        metrics_address: Option<std::net::SocketAddr>,
    },
    /// The fleet rollouts in progress, the leader and the hosts' phases.
    ///
    /// Example: `shifter fleet status --json`
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The registered hosts (alive heartbeats).
    ///
    /// Example: `shifter fleet nodes`
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Start, pause, resume, abort or approve a fleet rollout.
    Rollout {
        #[command(subcommand)]
        verb: RolloutVerb,
    },
    /// Every fleet rollout kept in etcd, newest first, with what happened.
    ///
    /// Example: `shifter fleet history web`
    History {
        service: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
enum RolloutVerb {
    /// Start a fleet rollout of SERVICE.
    ///
    /// Example: `shifter fleet rollout start web --steps 10,50,100 --hold 30s --wave
    /// hosts=web-1 --wave label:zone=a --wave 50% --wave rest --max-parallel 2`
    Start {
        service: String,
        /// Each host's steps in percent, ascending.
        #[arg(long, value_delimiter = ',', default_value = "1,5,25,50,100")]
        steps: Vec<String>,
        /// Hold of every step on every host.
        #[arg(long, default_value = "30s")]
        hold: String,
        /// A wave: hosts=A,B | label:KEY=VALUE[,KEY=VALUE] | count=N | N% | rest (repeat).
        #[arg(long = "wave", required = true)]
        waves: Vec<String>,
        /// Hosts of a wave ramping at once (0: all of the wave).
        #[arg(long, default_value_t = 0)]
        max_parallel: u32,
        /// Hosts that must be up and not failed; fewer pauses the rollout.
        #[arg(long, default_value_t = 0)]
        min_healthy: u32,
        /// Host failures accepted before the fleet rolls back.
        #[arg(long, default_value_t = 0)]
        failures_tolerated: u32,
        /// What a host that vanishes during its wave means: pause or abort.
        #[arg(long, default_value = "pause")]
        on_lost: String,
        /// A wave not done within this rolls the fleet back (e.g. 10m; default none).
        #[arg(long)]
        wave_deadline: Option<String>,
        /// Wait for `fleet rollout approve` before each wave after the first.
        #[arg(long)]
        approve_waves: bool,
    },
    /// Stop starting hosts (hosts already ramping go on under their own gates).
    Pause {
        service: String,
    },
    Resume {
        service: String,
    },
    /// Roll every touched host back.
    Abort {
        service: String,
    },
    /// Let the waiting wave start.
    Approve {
        service: String,
    },
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Message(msg.into(), EXIT_USAGE)
}

fn parse_duration(option: &str, v: &str) -> Result<Duration, Failure> {
    humantime::parse_duration(v)
        .map_err(|e| usage(format!("{option}: {v:?} is not a duration ({e})")))
}

/// One `--wave` value.
pub(crate) fn parse_wave(v: &str) -> Result<WaveSelector, String> {
    let v = v.trim();
    if v == "rest" {
        return Ok(WaveSelector::Rest);
    }
    if let Some(p) = v.strip_suffix('%') {
        return match p.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Ok(WaveSelector::Percent(n)),
            _ => Err(format!("--wave {v}: a percentage is 1..=100")),
        };
    }
    if let Some(n) = v.strip_prefix("count=") {
        return match n.parse::<u32>() {
            Ok(n) if n > 0 => Ok(WaveSelector::Count(n)),
            _ => Err(format!("--wave {v}: count is a number above 0")),
        };
    }
    if let Some(list) = v.strip_prefix("hosts=") {
        let hosts: Vec<String> = list.split(',').map(str::to_owned).collect();
        if hosts.iter().any(|h| !valid_name(h)) {
            return Err(format!(
                "--wave {v}: host names are letters, digits, '.', '_', '-'"
            ));
        }
        return Ok(WaveSelector::Hosts(hosts));
    }
    if let Some(list) = v.strip_prefix("label:") {
        let mut labels = BTreeMap::new();
        for kv in list.split(',') {
            match kv.split_once('=') {
                Some((k, val)) if valid_name(k) && valid_name(val) => {
                    labels.insert(k.to_owned(), val.to_owned());
                }
                _ => return Err(format!("--wave {v}: labels are KEY=VALUE")),
            }
        }
        return Ok(WaveSelector::Labels(labels));
    }
    Err(format!(
        "--wave {v}: expected hosts=A,B, label:KEY=VALUE, count=N, N% or rest"
    ))
}

/// How the CLI reaches etcd, resolved once from the options over the configuration's
/// `[fleet]`.
struct Connection {
    store: Store,
    keys: Keys,
    endpoints: Vec<String>,
    request_timeout: Duration,
    tls: Option<crate::config::TlsSettings>,
}

/// The etcd endpoints, prefix and TLS files: the options, else the configuration's `[fleet]`.
fn connect(a: &Args) -> Result<Connection, Failure> {
    let fleet = if a.endpoints.is_some() && a.prefix.is_some() {
        None
    } else {
        match Config::load(&a.config) {
            Ok(c) => c.fleet,
            Err(e) if a.endpoints.is_some() => {
                let _ = e;
                None
            }
            Err(e) => {
                return Err(usage(format!(
                    "{}; give --endpoints or a configuration with [fleet]",
                    e.problems().join("; ")
                )));
            }
        }
    };
    let endpoints = match (&a.endpoints, &fleet) {
        (Some(e), _) => e.clone(),
        (None, Some(f)) => f.endpoints.clone(),
        (None, None) => {
            return Err(usage(format!(
                "{} has no [fleet] section; give --endpoints",
                a.config.display()
            )));
        }
    };
    if let Some(bad) = endpoints.iter().find(|e| !valid_endpoint(e)) {
        return Err(usage(format!(
            "--endpoints: {bad:?} is not http://HOST:PORT or https://HOST:PORT"
        )));
    }
    let tls = tls_of(a, fleet.as_ref());
    let prefix = a
        .prefix
        .clone()
        .or_else(|| fleet.as_ref().map(|f| f.prefix.clone()))
        .unwrap_or_else(|| DEFAULT_FLEET_PREFIX.to_owned());
    let request_timeout = fleet
        .as_ref()
        .map_or(DEFAULT_REQUEST_TIMEOUT, |f| f.request_timeout);
    let store =
        Store::new(&endpoints, request_timeout, tls.as_ref()).map_err(|e| usage(e.to_string()))?;
    Ok(Connection {
        store,
        keys: Keys::new(&prefix),
        endpoints,
        request_timeout,
        tls,
    })
}

/// The TLS settings: the configuration's, with the options over them.
fn tls_of(
    a: &Args,
    fleet: Option<&crate::config::FleetConfig>,
) -> Option<crate::config::TlsSettings> {
    let mut tls = fleet.and_then(|f| f.tls.clone());
    if a.ca.is_some() || a.client_cert.is_some() {
        let t = tls.get_or_insert_with(Default::default);
        if a.ca.is_some() {
            t.ca.clone_from(&a.ca);
        }
        if a.client_cert.is_some() {
            t.client_cert.clone_from(&a.client_cert);
            t.client_key.clone_from(&a.client_key);
        }
    }
    tls
}

fn etcd(e: impl std::error::Error + 'static) -> Failure {
    fail(format!("etcd: {}", error_chain(&e)))
}

pub(crate) fn run(a: Args) -> VerbResult {
    let Connection {
        store,
        keys,
        endpoints,
        request_timeout,
        tls,
    } = connect(&a)?;
    match a.verb {
        Verb::Coordinate {
            id,
            ttl,
            tick,
            metrics_address,
        } => {
            let ttl = parse_duration("--ttl", &ttl)?;
            if ttl.subsec_nanos() != 0 || ttl.as_secs() == 0 {
                return Err(usage(format!(
                    "--ttl: {} is not a whole number of seconds >= 1",
                    humantime::format_duration(ttl)
                )));
            }
            let tick = parse_duration("--tick", &tick)?;
            if tick < Duration::from_millis(10) {
                return Err(usage("--tick: at least 10ms"));
            }
            super::daemon::init_logging();
            let id = id.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
            let opts = coordinator::Options {
                endpoints,
                prefix: keys.prefix().to_owned(),
                id,
                ttl_secs: ttl.as_secs(),
                tick,
                request_timeout,
                tls,
            };
            block_on(async {
                if let Some(addr) = metrics_address {
                    let listener = tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|e| usage(format!("--metrics-address {addr}: {e}")))?;
                    tracing::info!("fleet metrics on http://{addr}/metrics");
                    tokio::spawn(crate::fleet::metrics::serve(
                        listener,
                        store.clone(),
                        keys.clone(),
                        opts.id.clone(),
                    ));
                }
                let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
                let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
                coordinator::run(opts, async {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                })
                .await
                .map_err(etcd)
            })
        }
        Verb::Status { json } => {
            let snap = block_on(snapshot(&store, &keys)).map_err(etcd)?;
            let leader = block_on(store.get(&keys.leader())).map_err(etcd)?;
            let leader = leader.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            let active: Vec<&RolloutDoc> = snap
                .active
                .values()
                .filter_map(|id| snap.rollouts.get(id))
                .collect();
            if json {
                print_json(&serde_json::json!({ "leader": leader, "rollouts": active }));
            } else {
                println!("leader: {}", leader.as_deref().unwrap_or("(none)"));
                if active.is_empty() {
                    println!("no fleet rollout in progress");
                }
                for d in active {
                    print!("{}", describe(d, &snap));
                }
            }
            Ok(())
        }
        Verb::Nodes { json } => {
            let snap = block_on(snapshot(&store, &keys)).map_err(etcd)?;
            if json {
                print_json(&snap.nodes);
            } else {
                for n in snap.nodes.values() {
                    let labels: Vec<String> =
                        n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{}  labels {}  services {}  shifter {}  kernel {}",
                        n.node,
                        if labels.is_empty() {
                            "-".into()
                        } else {
                            labels.join(",")
                        },
                        n.services.join(","),
                        n.version,
                        n.kernel
                    );
                }
            }
            Ok(())
        }
        Verb::History { service, json } => {
            let snap = block_on(snapshot(&store, &keys)).map_err(etcd)?;
            let mut docs: Vec<&RolloutDoc> = snap
                .rollouts
                .values()
                .filter(|d| service.as_ref().is_none_or(|s| *s == d.spec.service))
                .collect();
            docs.sort_by_key(|d| std::cmp::Reverse(d.created_ms));
            if json {
                print_json(&docs);
            } else {
                for d in docs {
                    print!("{}", describe(d, &snap));
                    for (at, text) in &d.history {
                        println!("    +{:>6} ms  {text}", at.saturating_sub(d.created_ms));
                    }
                }
            }
            Ok(())
        }
        Verb::Rollout { verb } => rollout(&store, &keys, verb),
    }
}

/// A few lines about one rollout.
fn describe(d: &RolloutDoc, snap: &Snapshot) -> String {
    let mut out = format!(
        "{} {}: {}{}, wave {}/{}\n",
        d.id,
        d.spec.service,
        d.phase.name(),
        d.phase
            .reason()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        (d.wave + 1).min(d.waves.len().max(1)),
        d.waves.len()
    );
    for (i, wave) in d.waves.iter().enumerate() {
        let hosts: Vec<String> = wave
            .iter()
            .map(|h| {
                let w = snap
                    .reports
                    .get(&d.spec.service)
                    .and_then(|r| r.get(h))
                    .filter(|r| r.rollout == d.id)
                    .map(|r| format!(" {}%", percent(r.weight_bp)))
                    .unwrap_or_default();
                let phase = d.hosts.get(h).map_or("?".into(), |p| {
                    serde_json::to_value(p)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                });
                let alive = if snap.nodes.contains_key(h) {
                    ""
                } else {
                    " (no heartbeat)"
                };
                format!("{h} {phase}{w}{alive}")
            })
            .collect();
        out.push_str(&format!("  wave {}: {}\n", i + 1, hosts.join(", ")));
    }
    out
}

fn rollout(store: &Store, keys: &Keys, verb: RolloutVerb) -> VerbResult {
    match verb {
        RolloutVerb::Start {
            service,
            steps,
            hold,
            waves,
            max_parallel,
            min_healthy,
            failures_tolerated,
            on_lost,
            wave_deadline,
            approve_waves,
        } => {
            let steps_bp = steps
                .iter()
                .map(|s| {
                    s.parse::<Weight>()
                        .map(|w| w.bp())
                        .map_err(|e| usage(format!("--steps: {s} {e}")))
                })
                .collect::<Result<Vec<u16>, Failure>>()?;
            let check: Vec<crate::config::Step> = steps_bp
                .iter()
                .map(|&weight_bp| crate::config::Step {
                    weight_bp,
                    hold: Duration::ZERO,
                    approve: false,
                })
                .collect();
            if let Err(e) = crate::config::check_steps(&check) {
                let list: Vec<String> = e.iter().map(ToString::to_string).collect();
                return Err(usage(format!("--steps: {}", list.join("; "))));
            }
            if *steps_bp.last().expect("checked") != shifter_common::WEIGHT_MAX {
                return Err(usage(
                    "--steps: the last step must be 100 (a fleet rollout completes at 100%)",
                ));
            }
            let hold = parse_duration("--hold", &hold)?;
            let waves = waves
                .iter()
                .map(|w| parse_wave(w).map_err(usage))
                .collect::<Result<Vec<_>, _>>()?;
            let on_lost = match on_lost.as_str() {
                "pause" => OnLost::Pause,
                "abort" => OnLost::Abort,
                other => return Err(usage(format!("--on-lost: {other:?} is not pause or abort"))),
            };
            let wave_deadline_ms = match wave_deadline {
                Some(d) => parse_duration("--wave-deadline", &d)?.as_millis() as u64,
                None => 0,
            };
            if !valid_name(&service) {
                return Err(usage(format!("{service:?} is not a service name")));
            }
            let spec = FleetSpec {
                service: service.clone(),
                steps_bp,
                hold_ms: hold.as_millis() as u64,
                waves,
                max_parallel,
                min_healthy,
                failures_tolerated,
                on_lost,
                wave_deadline_ms,
                approve_waves,
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let id = format!("{service}-{now}");
            let doc = RolloutDoc::new(id.clone(), spec, now);
            let r = block_on(store.txn(
                &[Compare::CreateRevision(keys.active(&service), 0)],
                &[
                    Op::Put {
                        key: keys.active(&service),
                        value: id.clone().into_bytes(),
                        lease: 0,
                    },
                    Op::put_json(keys.rollout(&id), &doc),
                    Op::put_json(keys.ops(&id), &Ops::default()),
                ],
            ))
            .map_err(etcd)?;
            if !r.succeeded {
                let cur = block_on(store.get(&keys.active(&service))).map_err(etcd)?;
                let cur = cur
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                    .unwrap_or_default();
                return Err(fail(format!(
                    "a fleet rollout of {service} is in progress: {cur}"
                )));
            }
            println!("{id}: started (the coordinator plans the waves)");
            Ok(())
        }
        RolloutVerb::Pause { service } => change_ops(store, keys, &service, "paused", |o, _| {
            o.pause = true;
            Ok(())
        }),
        RolloutVerb::Resume { service } => change_ops(store, keys, &service, "resumed", |o, _| {
            o.pause = false;
            Ok(())
        }),
        RolloutVerb::Abort { service } => change_ops(store, keys, &service, "aborting", |o, _| {
            o.abort = true;
            Ok(())
        }),
        RolloutVerb::Approve { service } => {
            change_ops(store, keys, &service, "approved", |o, d| {
                if d.phase != Phase::WaitingApproval {
                    return Err(fail(format!(
                        "{}: {} is {}, not waiting for approval",
                        d.id,
                        service_of(d),
                        d.phase.name()
                    )));
                }
                if !o.approved.contains(&d.wave) {
                    o.approved.push(d.wave);
                }
                Ok(())
            })
        }
    }
}

fn service_of(d: &RolloutDoc) -> &str {
    &d.spec.service
}

/// Changes the operator's wishes of the service's rollout in progress (compare-and-swap).
fn change_ops(
    store: &Store,
    keys: &Keys,
    service: &str,
    done: &str,
    change: impl Fn(&mut Ops, &RolloutDoc) -> Result<(), Failure>,
) -> VerbResult {
    block_on(async {
        for _ in 0..10 {
            let Some(active) = store.get(&keys.active(service)).await.map_err(etcd)? else {
                return Err(fail(format!(
                    "no fleet rollout of {service} is in progress"
                )));
            };
            let id = String::from_utf8_lossy(&active.value).into_owned();
            let doc: RolloutDoc = store
                .get(&keys.rollout(&id))
                .await
                .map_err(etcd)?
                .and_then(|kv| kv.json().ok())
                .ok_or_else(|| fail(format!("{id}: the rollout document is missing")))?;
            let cur = store.get(&keys.ops(&id)).await.map_err(etcd)?;
            let rev = cur.as_ref().map_or(0, |kv| kv.mod_revision);
            let mut ops: Ops = cur.and_then(|kv| kv.json().ok()).unwrap_or_default();
            change(&mut ops, &doc)?;
            let r = store
                .txn(
                    &[Compare::ModRevision(keys.ops(&id), rev)],
                    &[Op::put_json(keys.ops(&id), &ops)],
                )
                .await
                .map_err(etcd)?;
            if r.succeeded {
                println!("{id}: {done}");
                return Ok(());
            }
        }
        Err(fail(
            "the rollout's operator state changes too fast; try again",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wave_syntax() {
        assert_eq!(parse_wave("rest"), Ok(WaveSelector::Rest));
        assert_eq!(parse_wave("25%"), Ok(WaveSelector::Percent(25)));
        assert_eq!(parse_wave("count=3"), Ok(WaveSelector::Count(3)));
        assert_eq!(
            parse_wave("hosts=a,b"),
            Ok(WaveSelector::Hosts(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            parse_wave("label:zone=a,tier=web"),
            Ok(WaveSelector::Labels(BTreeMap::from([
                ("tier".into(), "web".into()),
                ("zone".into(), "a".into())
            ])))
        );
        for bad in ["0%", "101%", "count=0", "hosts=a/b", "label:zone", "half"] {
            assert!(parse_wave(bad).is_err(), "{bad} accepted");
        }
    }
}
