//! `e2e`: the whole path in namespaces over veth. A client namespace talks to a server
//! namespace where two backends listen on 8081 (blue) and 8082 (green). Scenarios are
//! measured interleaved (order rotated each round), each as a ratio to "direct" of the same
//! round:
//!
//! - direct: the client connects straight to the blue port, nothing attached;
//! - direct 50/50: the client itself alternates between the blue and the green port (what a
//!   perfect splitter would cost: two backends share the load);
//! - no-op: shifter's programs attached (TC ingress + egress) with NO service configured,
//!   i.e. pass-through, client to the blue port;
//! - shifter-tc / shifter-xdp: service port 80 split 50 % between 8081 and 8082 by rewrite;
//! - shifter socket: the same split by socket dispatch (sk_lookup in the server namespace, no
//!   TC program attached);
//! - shifter-tc weight 0: the same program path, every connection to blue (one backend, as
//!   direct): tells the data plane's cost apart from the cost of splitting;
//! - nftables: DNAT of port 80 by `numgen random mod 2` (conntrack);
//! - haproxy: `mode tcp`, two servers weight 50/50;
//! - nginx: `stream` with two weighted upstream servers.
//!
//! Keep-alive requests/s: small request/reply exchanges on established connections (where
//! per-packet work shows), one connection per client thread.
//!
//! CPU per connection: the CPU time of this process (it holds the clients and the
//! backends), plus the proxy's (schedstat), plus hard and soft interrupt time of all CPUs
//! (/proc/stat), divided by the connections made in the connection-rate run.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::Context as _;
use serde_json::{Value, json};
use shifter::{Hook, Service};

use crate::{
    env::{self, Pair, Plane, Proc, SERVER_IF, TempDir},
    load::{self, Backends},
    report::{self, Table, f},
    sys,
};

pub struct Opts {
    pub rounds: usize,
    pub conn_secs: f64,
    pub conn_threads: usize,
    pub lat_reqs: usize,
    pub lat_rate: f64,
    pub tput_secs: f64,
}

impl Opts {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                rounds: 1,
                conn_secs: 0.4,
                conn_threads: 4,
                lat_reqs: 300,
                lat_rate: 2000.0,
                tput_secs: 0.4,
            }
        } else {
            Self {
                rounds: 5,
                conn_secs: 3.0,
                conn_threads: 4,
                lat_reqs: 4000,
                lat_rate: 2000.0,
                tput_secs: 2.0,
            }
        }
    }
}

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SERVICE_PORT: u16 = 80;
const BLUE_PORT: u16 = 8081;
const GREEN_PORT: u16 = 8082;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Direct,
    DirectSplit,
    Noop,
    ShifterTc,
    ShifterTcBlueOnly,
    ShifterXdp,
    ShifterSocket,
    Nftables,
    Haproxy,
    Nginx,
}

/// `Direct` first: every ratio is to it.
const SCENARIOS: [Scenario; 10] = [
    Scenario::Direct,
    Scenario::DirectSplit,
    Scenario::Noop,
    Scenario::ShifterTc,
    Scenario::ShifterTcBlueOnly,
    Scenario::ShifterXdp,
    Scenario::ShifterSocket,
    Scenario::Nftables,
    Scenario::Haproxy,
    Scenario::Nginx,
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::DirectSplit => "direct 50/50 (client alternates)",
            Self::Noop => "no-op (programs, no service)",
            Self::ShifterTc => "shifter tc",
            Self::ShifterTcBlueOnly => "shifter tc, weight 0",
            Self::ShifterXdp => "shifter xdp",
            Self::ShifterSocket => "shifter socket",
            Self::Nftables => "nftables dnat numgen",
            Self::Haproxy => "haproxy mode tcp",
            Self::Nginx => "nginx stream",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::DirectSplit => "direct_split",
            Self::Noop => "noop",
            Self::ShifterTc => "shifter_tc",
            Self::ShifterTcBlueOnly => "shifter_tc_weight0",
            Self::ShifterXdp => "shifter_xdp",
            Self::ShifterSocket => "shifter_socket",
            Self::Nftables => "nftables",
            Self::Haproxy => "haproxy",
            Self::Nginx => "nginx",
        }
    }
    /// The ports a client connects to (alternating when several). Latency and throughput use
    /// the first.
    fn ports(self) -> &'static [u16] {
        match self {
            Self::Direct | Self::Noop => &[BLUE_PORT],
            Self::DirectSplit => &[BLUE_PORT, GREEN_PORT],
            _ => &[SERVICE_PORT],
        }
    }

    /// Green's weight of shifter's service (basis points) in this scenario.
    fn weight_bp(self) -> u16 {
        if self == Self::ShifterTcBlueOnly {
            0
        } else {
            5000
        }
    }
}

/// What a scenario holds while it is measured; dropping it tears the scenario down.
enum Active<'a> {
    Nothing,
    Plane(&'a mut Plane),
    /// Socket dispatch: the service is set in namespace `ns` (sk_lookup attached there).
    Socket {
        plane: &'a mut Plane,
        ns: String,
        service: Service,
    },
    Nft {
        ns: String,
        table: String,
    },
    Proxy(Proc),
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        match self {
            Self::Nothing | Self::Proxy(_) => {}
            Self::Plane(p) => {
                if let Err(e) = p.detach() {
                    eprintln!("warning: {e:#}");
                }
                let _ = p.dp().clear_flows();
            }
            Self::Socket { plane, ns, service } => {
                // Without the service and the links, port 80 is free for the proxies.
                let dp = plane.dp();
                let r = env::run_in(ns, || {
                    dp.remove_service(service)?;
                    Ok(dp.detach_all()?)
                });
                if let Err(e) = r {
                    eprintln!("warning: socket dispatch teardown: {e}");
                }
            }
            Self::Nft { ns, table } => {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "exec", ns, "nft", "delete", "table", "ip", table])
                    .status();
            }
        }
    }
}

struct Ctx {
    pair: Pair,
    noop: Plane,
    svc: Plane,
    svc_slot: u32,
    sock: Plane,
    dir: TempDir,
}

fn haproxy_cfg() -> String {
    format!(
        "global\n  maxconn 9000\n  nbthread 2\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         listen shb\n  bind {SERVER}:{SERVICE_PORT}\n  balance roundrobin\n\
         \x20 server blue {SERVER}:{BLUE_PORT} weight 50\n\
         \x20 server green {SERVER}:{GREEN_PORT} weight 50\n"
    )
}

fn nginx_cfg(dir: &std::path::Path, module: &str) -> String {
    let d = dir.display();
    format!(
        "load_module {module};\nworker_processes 2;\ndaemon off;\npid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\nevents {{ worker_connections 8000; }}\n\
         stream {{\n  upstream shb {{ server {SERVER}:{BLUE_PORT} weight=1; server {SERVER}:{GREEN_PORT} weight=1; }}\n\
         \x20 server {{ listen {SERVER}:{SERVICE_PORT}; proxy_pass shb; }}\n}}\n"
    )
}

fn nginx_module() -> anyhow::Result<String> {
    for p in [
        "/usr/lib/nginx/modules/ngx_stream_module.so",
        "/usr/lib64/nginx/modules/ngx_stream_module.so",
    ] {
        if std::path::Path::new(p).exists() {
            return Ok(p.to_owned());
        }
    }
    anyhow::bail!("nginx's stream module is missing (Debian: libnginx-mod-stream)")
}

fn setup(s: Scenario, ctx: &mut Ctx) -> anyhow::Result<(Active<'_>, Option<i32>)> {
    let server = ctx.pair.server.name.clone();
    Ok(match s {
        Scenario::Direct | Scenario::DirectSplit => (Active::Nothing, None),
        Scenario::Noop => {
            ctx.noop.attach(&server, SERVER_IF, Hook::Tc)?;
            (Active::Plane(&mut ctx.noop), None)
        }
        Scenario::ShifterTc | Scenario::ShifterTcBlueOnly | Scenario::ShifterXdp => {
            let hook = if s == Scenario::ShifterXdp {
                Hook::Xdp
            } else {
                Hook::Tc
            };
            ctx.svc
                .dp()
                .set_weight(ctx.svc_slot, s.weight_bp())
                .context("set the scenario's weight")?;
            ctx.svc.attach(&server, SERVER_IF, hook)?;
            (Active::Plane(&mut ctx.svc), None)
        }
        Scenario::ShifterSocket => {
            let mut service = Service::tcp(SERVICE_PORT, BLUE_PORT, GREEN_PORT, s.weight_bp());
            service.config.dispatch = shifter::Dispatch::Socket;
            let dp = ctx.sock.dp();
            anyhow::ensure!(
                dp.socket_dispatch_unavailable().is_none(),
                "socket dispatch unavailable: {}",
                dp.socket_dispatch_unavailable().unwrap_or_default()
            );
            env::run_in(&server, || Ok(dp.set_service(&service)?))
                .context("set the socket service")?;
            (
                Active::Socket {
                    plane: &mut ctx.sock,
                    ns: server,
                    service,
                },
                None,
            )
        }
        Scenario::Nftables => {
            let table = format!("shb{}", std::process::id());
            let file = ctx.dir.0.join("dnat.nft");
            std::fs::write(
                &file,
                format!(
                    "table ip {table} {{\n chain pre {{\n  type nat hook prerouting priority dstnat; policy accept;\n  \
                     tcp dport {SERVICE_PORT} dnat to {SERVER} : numgen random mod 2 map {{ 0 : {BLUE_PORT}, 1 : {GREEN_PORT} }}\n }}\n}}\n"
                ),
            )?;
            let active = Active::Nft {
                ns: server.clone(),
                table,
            };
            let st = std::process::Command::new("ip")
                .args(["netns", "exec", &server, "nft", "-f"])
                .arg(&file)
                .status()
                .context("run nft")?;
            anyhow::ensure!(st.success(), "nft -f {} failed", file.display());
            (active, None)
        }
        Scenario::Haproxy => {
            let cfg = ctx.dir.0.join("haproxy.cfg");
            std::fs::write(&cfg, haproxy_cfg())?;
            let cfg = cfg.to_string_lossy().into_owned();
            let p = Proc::spawn_in(
                &server,
                "haproxy",
                &["-db", "-f", &cfg],
                &ctx.dir.0.join("haproxy.log"),
            )?;
            let pg = p.pgid();
            (Active::Proxy(p), Some(pg))
        }
        Scenario::Nginx => {
            let cfg = ctx.dir.0.join("nginx.conf");
            std::fs::write(&cfg, nginx_cfg(&ctx.dir.0, &nginx_module()?))?;
            let (cfg, prefix) = (
                cfg.to_string_lossy().into_owned(),
                format!("{}/", ctx.dir.0.display()),
            );
            let err = ctx
                .dir
                .0
                .join("nginx-early.log")
                .to_string_lossy()
                .into_owned();
            let p = Proc::spawn_in(
                &server,
                "nginx",
                &["-c", &cfg, "-p", &prefix, "-e", &err],
                &ctx.dir.0.join("nginx.log"),
            )?;
            let pg = p.pgid();
            (Active::Proxy(p), Some(pg))
        }
    })
}

/// One scenario's figures in one round.
#[derive(Clone, Debug, Default)]
struct Sample {
    conn_rate: f64,
    conn_errors: u64,
    cpu_us_per_conn: f64,
    lat_p50_us: f64,
    lat_p99_us: f64,
    tput1_gbps: f64,
    tput2_gbps: f64,
    keepalive_rps: f64,
    green_share: f64,
}

fn measure(s: Scenario, ctx: &mut Ctx, backends: &Backends, opts: &Opts) -> anyhow::Result<Sample> {
    let client = ctx.pair.client.name.clone();
    let (mut active, pgid) = setup(s, ctx)?;
    let targets: Vec<SocketAddr> = s
        .ports()
        .iter()
        .map(|&p| SocketAddr::from((SERVER, p)))
        .collect();
    let target = targets[0];
    if let Err(e) = load::wait_ready(&client, target, s.name()) {
        if let Active::Proxy(p) = &mut active {
            p.check_running()
                .with_context(|| format!("{} (see its log in the bench temp dir)", s.name()))?;
        }
        return Err(e);
    }
    // Warm-up: connections and a little data.
    load::conn_rate(&client, &targets, opts.conn_threads, 0.2)?;
    let (b0, g0) = (backends.accepted(BLUE_PORT), backends.accepted(GREEN_PORT));
    let cpu = || sys::self_cpu() + pgid.map_or(Duration::ZERO, sys::group_cpu) + sys::irq_time();
    let c0 = cpu();
    let cr = load::conn_rate(&client, &targets, opts.conn_threads, opts.conn_secs)?;
    let c1 = cpu();
    let (b1, g1) = (backends.accepted(BLUE_PORT), backends.accepted(GREEN_PORT));
    let lat = load::latency(&client, target, opts.lat_reqs, opts.lat_rate)?;
    let tput1 = load::throughput(&client, target, 1, opts.tput_secs, &backends.sink_bytes)?;
    let tput2 = load::throughput(&client, target, 2, opts.tput_secs, &backends.sink_bytes)?;
    let keepalive = load::keepalive_rps(&client, &targets, opts.conn_threads, opts.tput_secs)?;
    if let Active::Proxy(p) = &mut active {
        p.check_running()?;
    }
    drop(active);
    let accepted = (b1 - b0 + g1 - g0).max(1);
    Ok(Sample {
        conn_rate: cr.ok as f64 / cr.elapsed.as_secs_f64(),
        conn_errors: cr.errors,
        cpu_us_per_conn: c1.checked_sub(c0).unwrap().as_secs_f64() * 1e6 / cr.ok.max(1) as f64,
        lat_p50_us: report::median(&lat),
        lat_p99_us: report::percentile(&lat, 99.0),
        tput1_gbps: tput1,
        tput2_gbps: tput2,
        keepalive_rps: keepalive,
        green_share: (g1 - g0) as f64 / accepted as f64,
    })
}

pub fn run(opts: &Opts) -> anyhow::Result<Value> {
    env::require_root()?;
    env::ensure_packages(&["nftables", "haproxy", "nginx", "libnginx-mod-stream"])?;
    let pair = Pair::new("e2e")?;
    let backends = Backends::start(&pair.server.name, &[BLUE_PORT, GREEN_PORT], 8)?;
    let noop = Plane::load("e2e-noop", None)?;
    let sock = Plane::load("e2e-sock", None)?;
    let mut svc = Plane::load("e2e-svc", None)?;
    let svc_slot = svc
        .dp()
        .set_service(&Service::tcp(SERVICE_PORT, BLUE_PORT, GREEN_PORT, 5000))
        .context("set service")?;
    let mut ctx = Ctx {
        pair,
        noop,
        svc,
        svc_slot,
        sock,
        dir: TempDir::new("e2e")?,
    };
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); SCENARIOS.len()];
    for round in 0..opts.rounds {
        for k in 0..SCENARIOS.len() {
            let i = (k + round) % SCENARIOS.len();
            let s = SCENARIOS[i];
            eprintln!(
                "bench e2e: round {}/{} {} (load {:.1})",
                round + 1,
                opts.rounds,
                s.name(),
                sys::loadavg()
            );
            let m = measure(s, &mut ctx, &backends, opts)
                .with_context(|| format!("scenario {}", s.name()))?;
            samples[i].push(m);
        }
    }
    drop(backends);
    Ok(render(&samples, opts))
}

/// `op(g(a), g(b))` for each round of two scenarios.
fn per_round(
    a: &[Sample],
    b: &[Sample],
    g: fn(&Sample) -> f64,
    op: fn(f64, f64) -> f64,
) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| op(g(x), g(y))).collect()
}

fn render(samples: &[Vec<Sample>], opts: &Opts) -> Value {
    let direct = &samples[0];
    let split = &samples[SCENARIOS
        .iter()
        .position(|s| *s == Scenario::DirectSplit)
        .expect("direct 50/50 is a scenario")];
    // Per round, against "direct" and against "direct 50/50" (what remains once the cost of
    // sharing the load between two backends is taken out).
    let ratio = |i: usize, g: fn(&Sample) -> f64| per_round(&samples[i], direct, g, |a, b| a / b);
    let diff = |i: usize, g: fn(&Sample) -> f64| per_round(&samples[i], direct, g, |a, b| a - b);
    let ratio_split =
        |i: usize, g: fn(&Sample) -> f64| per_round(&samples[i], split, g, |a, b| a / b);
    let diff_split =
        |i: usize, g: fn(&Sample) -> f64| per_round(&samples[i], split, g, |a, b| a - b);
    let col = |i: usize, g: fn(&Sample) -> f64| -> Vec<f64> { samples[i].iter().map(g).collect() };
    let mut table = Table::new(
        &format!(
            "bench e2e: {} rounds, medians (ratio to direct of the same round: median [min-max])",
            opts.rounds
        ),
        &[
            "scenario",
            "conn/s",
            "x direct",
            "x direct 50/50",
            "CPU us/conn",
            "p50 us",
            "+p50 us",
            "p99 us",
            "1-stream Gb/s",
            "x direct",
            "2-stream Gb/s",
            "x direct",
            "keep-alive req/s",
            "x direct 50/50",
            "green %",
        ],
    );
    let mm = |v: &[f64]| {
        format!(
            "{} [{}-{}]",
            f(report::median(v), 2),
            f(report::min(v), 2),
            f(report::max(v), 2)
        )
    };
    let mut out = serde_json::Map::new();
    for (i, s) in SCENARIOS.iter().enumerate() {
        let cr = col(i, |m| m.conn_rate);
        let cr_x = ratio(i, |m| m.conn_rate);
        let cpu = col(i, |m| m.cpu_us_per_conn);
        let p50 = col(i, |m| m.lat_p50_us);
        let p50_add = diff(i, |m| m.lat_p50_us);
        let p99 = col(i, |m| m.lat_p99_us);
        let t1 = col(i, |m| m.tput1_gbps);
        let t1_x = ratio(i, |m| m.tput1_gbps);
        let t2 = col(i, |m| m.tput2_gbps);
        let t2_x = ratio(i, |m| m.tput2_gbps);
        let ka = col(i, |m| m.keepalive_rps);
        let ka_split = ratio_split(i, |m| m.keepalive_rps);
        let green = col(i, |m| m.green_share * 100.0);
        table.row(vec![
            s.name().to_owned(),
            f(report::median(&cr), 0),
            mm(&cr_x),
            f(report::median(&ratio_split(i, |m| m.conn_rate)), 2),
            f(report::median(&cpu), 1),
            f(report::median(&p50), 1),
            f(report::median(&p50_add), 1),
            f(report::median(&p99), 1),
            f(report::median(&t1), 2),
            mm(&t1_x),
            f(report::median(&t2), 2),
            mm(&t2_x),
            f(report::median(&ka), 0),
            mm(&ka_split),
            f(report::median(&green), 0),
        ]);
        out.insert(
            s.key().to_owned(),
            json!({
                "name": s.name(),
                "conn_per_s": report::summary(&cr),
                "conn_ratio": report::summary(&cr_x),
                "conn_ratio_to_direct_split": report::summary(&ratio_split(i, |m| m.conn_rate)),
                "cpu_added_over_direct_split_us": report::summary(&diff_split(i, |m| m.cpu_us_per_conn)),
                "conn_errors": samples[i].iter().map(|m| m.conn_errors).sum::<u64>(),
                "cpu_us_per_conn": report::summary(&cpu),
                "cpu_added_us_per_conn": report::summary(&diff(i, |m| m.cpu_us_per_conn)),
                "lat_p50_us": report::summary(&p50),
                "lat_p50_added_us": report::summary(&p50_add),
                "lat_p99_us": report::summary(&p99),
                "tput1_gbps": report::summary(&t1),
                "tput1_ratio": report::summary(&t1_x),
                "tput2_gbps": report::summary(&t2),
                "tput2_ratio": report::summary(&t2_x),
                "keepalive_rps": report::summary(&ka),
                "keepalive_ratio_to_direct_split": report::summary(&ka_split),
                "green_percent": report::summary(&green),
            }),
        );
    }
    print!("{}", table.render());
    let goals = goals(&out);
    println!(
        "goals: {}",
        serde_json::to_string_pretty(&goals).unwrap_or_default()
    );
    json!({
        "suite": "e2e",
        "method": "namespaces over veth; scenarios interleaved per round (order rotated); ratios to direct of the same round; CPU = this process (clients+backends) + proxy (schedstat) + irq/softirq (/proc/stat), during the connection-rate run",
        "opts": {
            "rounds": opts.rounds, "conn_secs": opts.conn_secs, "conn_threads": opts.conn_threads,
            "lat_reqs": opts.lat_reqs, "lat_rate_per_s": opts.lat_rate, "tput_secs": opts.tput_secs,
        },
        "environment": report::environment(),
        "scenarios": out,
        "order": SCENARIOS.iter().map(|s| s.key()).collect::<Vec<_>>(),
        "goals": goals,
    })
}

fn med(out: &serde_json::Map<String, Value>, s: &str, field: &str) -> f64 {
    out.get(s)
        .and_then(|v| v.get(field))
        .and_then(|v| v.get("median"))
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn goals(out: &serde_json::Map<String, Value>) -> Value {
    let mut g = serde_json::Map::new();
    for s in ["shifter_tc", "shifter_xdp"] {
        let conn_x = med(out, s, "conn_ratio");
        let vs_haproxy = med(out, s, "conn_per_s") / med(out, "haproxy", "conn_per_s");
        let t1 = med(out, s, "tput1_ratio");
        let t2 = med(out, s, "tput2_ratio");
        let p50 = med(out, s, "lat_p50_added_us");
        let cpu_added = med(out, s, "cpu_added_us_per_conn");
        let cpu_added_haproxy = med(out, "haproxy", "cpu_added_us_per_conn");
        let cpu_vs_haproxy =
            med(out, "haproxy", "cpu_us_per_conn") / med(out, s, "cpu_us_per_conn");
        let conn_x_split = med(out, s, "conn_ratio_to_direct_split");
        let cpu_added_split = med(out, s, "cpu_added_over_direct_split_us");
        let cpu_added_split_haproxy = med(out, "haproxy", "cpu_added_over_direct_split_us");
        g.insert(
            s.to_owned(),
            json!({
                "conn_rate_ge_95pct_direct": { "value": conn_x, "met": conn_x >= 0.95 },
                // Not the goals: the same two judged against a client that splits
                // the load itself (no program, no proxy).
                "against_direct_split": {
                    "conn_ratio": conn_x_split,
                    "cpu_added_us": cpu_added_split,
                    "haproxy_cpu_added_us": cpu_added_split_haproxy,
                    "cpu_added_ratio_haproxy": cpu_added_split_haproxy / cpu_added_split.max(0.01),
                },
                "conn_rate_ge_2x_haproxy": { "value": vs_haproxy, "met": vs_haproxy >= 2.0 },
                "throughput_ge_95pct_direct": { "value": [t1, t2], "met": t1 >= 0.95 && t2 >= 0.95 },
                "added_p50_le_2us": { "value": p50, "met": p50 <= 2.0 },
                "cpu_per_conn_10x_lower_than_haproxy": {
                    "total_ratio": cpu_vs_haproxy,
                    "added_over_direct_us": cpu_added,
                    "haproxy_added_over_direct_us": cpu_added_haproxy,
                    "added_ratio": cpu_added_haproxy / cpu_added.max(0.01),
                    "met": cpu_added_haproxy / cpu_added.max(0.01) >= 10.0,
                },
            }),
        );
    }
    // Socket dispatch's goals (issue 12), judged against the splitting client ("direct
    // 50/50") and against direct.
    let s = "shifter_socket";
    let conn_split = med(out, s, "conn_ratio_to_direct_split");
    let conn_direct = med(out, s, "conn_ratio");
    let cpu_added_split = med(out, s, "cpu_added_over_direct_split_us");
    let haproxy_added_split = med(out, "haproxy", "cpu_added_over_direct_split_us");
    let ka = med(out, s, "keepalive_ratio_to_direct_split");
    g.insert(
        s.to_owned(),
        json!({
            "conn_rate_ge_97pct_direct_split": { "value": conn_split, "met": conn_split >= 0.97 },
            "conn_rate_ge_90pct_direct": { "value": conn_direct, "met": conn_direct >= 0.90 },
            // Added CPU near zero is within the noise: the ratio is bounded by the noise floor
            // (0.01 us), and both figures are printed.
            "cpu_added_le_1_30_of_haproxy": {
                "added_over_direct_split_us": cpu_added_split,
                "haproxy_added_over_direct_split_us": haproxy_added_split,
                "ratio": haproxy_added_split / cpu_added_split.max(0.01),
                "met": cpu_added_split <= haproxy_added_split / 30.0,
            },
            "throughput_equal_direct": {
                "value": [med(out, s, "tput1_ratio"), med(out, s, "tput2_ratio")],
            },
            "added_p50_us": med(out, s, "lat_p50_added_us"),
            "keepalive_equal_direct_split": { "value": ka, "met": ka >= 0.97 },
        }),
    );
    Value::Object(g)
}
