//! `shifter status [SERVICE] [--json]`

use std::path::PathBuf;

use super::{VerbResult, block_on, fail, offline, print_json, table};
use crate::{
    api::{
        client::{Client, ClientError},
        types::{HealthView, RolloutView, ServiceStatus, Status},
    },
    daemon::offline as pinned,
    model::percent as format_percent,
    paths,
    util::now_unix_ms,
};

/// One line for a rollout: phase, step, time left, would-be weight of a dry run.
pub(crate) fn rollout_text(r: &RolloutView) -> String {
    let mut t = if r.dry_run {
        format!("dry-run {}", r.state)
    } else {
        r.state.clone()
    };
    if let Some(step) = r.step {
        t.push_str(&format!(" step {step}/{}", r.steps));
        if let Some(w) = r.step_weight_bp {
            t.push_str(&format!(" ({}%)", format_percent(w)));
        }
    }
    if let Some(ms) = r.remaining_hold_ms {
        let secs = ms.div_ceil(1000);
        t.push_str(&format!(
            ", {} left",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        ));
    }
    if let Some(w) = r.would_weight_bp {
        t.push_str(&format!(", would be {}%", format_percent(w)));
    }
    if let Some(g) = &r.gate_waiting {
        t.push_str(&format!(", gate waiting: {g}"));
    }
    if let Some(c) = &r.rolled_back {
        t.push_str(&format!(": {c}"));
    }
    for a in &r.analysis {
        if let Some(last) = &a.last {
            t.push_str(&format!(
                ", analysis {}: {last} ({})",
                a.name,
                a.detail.as_deref().unwrap_or("")
            ));
        }
    }
    t
}

fn health_short(h: Option<&HealthView>) -> String {
    h.map_or_else(
        || "-".to_owned(),
        |h| format!("{}/{}", h.blue.status, h.green.status),
    )
}

/// Would-be split of a dry run, from the kernel's dry counters.
fn dry_split(v: &ServiceStatus) -> Option<String> {
    let (b, g) = (v.blue.dry_new_flows, v.green.dry_new_flows);
    if b + g == 0 {
        return None;
    }
    Some(format!(
        "{b}/{g} ({:.1}% green)",
        g as f64 * 100.0 / (b + g) as f64
    ))
}

/// Show the daemon, its interfaces and services (weights, flows, counters).
///
/// When the daemon is not running, the same is read from the pinned maps (found through
/// --config; needs root) and labelled so.
///
/// Examples: `shifter status`, `shifter status web`, `shifter status --json`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Show only this service, in detail.
    service: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Configuration to find the pinned maps when the daemon is not running.
    #[arg(long, default_value = paths::CONFIG, value_name = "PATH")]
    config: PathBuf,
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    if let Some(name) = &a.service {
        let res: Result<ServiceStatus, ClientError> = block_on(client.service(name));
        match res {
            Ok(s) if a.json => print_json(&s),
            Ok(s) => print!("{}", detail(&s)),
            Err(ClientError::NotRunning(sock)) => {
                let (config, maps) = offline::open(&a.config, &sock)?;
                let status =
                    pinned::status(&maps, &config).map_err(|e| offline::read_err(&maps, &e))?;
                let s = status
                    .services
                    .into_iter()
                    .find(|s| &s.name == name)
                    .ok_or_else(|| {
                        fail(format!(
                            "unknown service {name:?}: not in {} or not in the pinned maps",
                            a.config.display()
                        ))
                    })?;
                if a.json {
                    print_json(&offline::labelled_json(&s));
                } else {
                    println!("{}", offline::LABEL);
                    print!("{}", detail(&s));
                }
            }
            Err(e) => return Err(e.into()),
        }
        return Ok(());
    }
    let res: Result<Status, ClientError> = block_on(client.status());
    match res {
        Ok(s) if a.json => print_json(&s),
        Ok(s) => {
            println!(
                "shifter {} (pid {}), pins {}, flow table {} entries",
                s.version, s.pid, s.bpffs_dir, s.flow_table_size
            );
            print_overview(&s);
        }
        Err(ClientError::NotRunning(sock)) => {
            let (config, maps) = offline::open(&a.config, &sock)?;
            let s = pinned::status(&maps, &config).map_err(|e| offline::read_err(&maps, &e))?;
            if a.json {
                print_json(&offline::labelled_json(&s));
            } else {
                println!("{}", offline::LABEL);
                println!(
                    "pins {}, flow table {} entries",
                    s.bpffs_dir, s.flow_table_size
                );
                print_overview(&s);
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The reasons the kernel passed service packets unchanged, non-zero ones only.
fn skipped_text(s: &Status) -> String {
    let nonzero: Vec<String> = s
        .skipped_packets
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if nonzero.is_empty() {
        "none".to_owned()
    } else {
        nonzero.join(", ")
    }
}

fn print_overview(s: &Status) {
    if s.interfaces.is_empty() {
        println!("interfaces: none");
    } else {
        let ifs: Vec<String> = s
            .interfaces
            .iter()
            .map(|i| format!("{} (ingress {}, tc via {})", i.name, i.hook, i.tc_mode))
            .collect();
        println!("interfaces: {}", ifs.join(", "));
    }
    println!("skipped packets: {}", skipped_text(s));
    if let Some(reason) = &s.socket_dispatch_unavailable {
        println!("socket dispatch: unavailable, TCP services use rewrite ({reason})");
    }
    if let Some(problem) = &s.listener_registration_problem {
        println!("socket dispatch: {problem}");
    }
    if let Some(a) = &s.fleet {
        println!("fleet: {}", a.summary(now_unix_ms()));
    }
    println!();
    if s.services.is_empty() {
        println!("no services configured");
        return;
    }
    let rows: Vec<Vec<String>> = s
        .services
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.protocol.clone(),
                v.port.to_string(),
                v.blue_port.to_string(),
                v.green_port.to_string(),
                format!("{}%", v.weight_percent),
                v.affinity.clone(),
                dispatch_text(v),
                format!("{}/{}", v.blue.active_flows, v.green.active_flows),
                format!("{}/{}", v.blue.new_flows, v.green.new_flows),
                format!("{}/{}", v.blue.refusals, v.green.refusals),
                health_short(v.health.as_ref()),
                v.rollout.as_ref().map_or_else(
                    || "-".to_owned(),
                    |r| {
                        let mut t = rollout_text(r);
                        if let (true, Some(d)) = (r.dry_run, dry_split(v)) {
                            t.push_str(&format!(", would-be new B/G {d}"));
                        }
                        t
                    },
                ),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "SERVICE",
                "PROTO",
                "PORT",
                "BLUE",
                "GREEN",
                "WEIGHT",
                "AFFINITY",
                "DISPATCH",
                "FLOWS B/G",
                "NEW B/G",
                "REFUSED B/G",
                "HEALTH B/G",
                "ROLLOUT"
            ],
            &rows
        )
    );
    for v in &s.services {
        if let Some(f) = &v.fleet {
            println!("fleet rollout of {}: {}", v.name, f.summary());
        }
    }
}

/// "rewrite", or "socket" with the listeners each backend has ("socket 2/0 listening").
fn dispatch_text(s: &ServiceStatus) -> String {
    match s.listeners {
        Some(l) => format!("socket {}/{} listening", l.blue, l.green),
        None => s.dispatch.clone(),
    }
}

fn detail(s: &ServiceStatus) -> String {
    let addrs = if s.local_addresses.is_empty() {
        "any".to_owned()
    } else {
        s.local_addresses.join(", ")
    };
    let mut out = format!(
        "service {}: {} port {} on {addrs}\nblue port {}, green port {}, green weight {}%, affinity {}\n\
         dispatch {}\n\n",
        s.name,
        s.protocol,
        s.port,
        s.blue_port,
        s.green_port,
        s.weight_percent,
        s.affinity,
        match s.listeners {
            Some(l) => format!(
                "socket: {} blue and {} green listening sockets registered",
                l.blue, l.green
            ),
            None => s.dispatch.clone(),
        }
    );
    let row = |name: &str, b: u64, g: u64| vec![name.to_owned(), b.to_string(), g.to_string()];
    let (b, g) = (&s.blue, &s.green);
    let rows = vec![
        row("active flows", b.active_flows, g.active_flows),
        row("new flows", b.new_flows, g.new_flows),
        row("packets in", b.packets, g.packets),
        row("bytes in", b.bytes, g.bytes),
        row("packets out", b.egress_packets, g.egress_packets),
        row("bytes out", b.egress_bytes, g.egress_bytes),
        row("recoveries", b.recoveries, g.recoveries),
        row("evictions", b.evictions, g.evictions),
        row("refusals", b.refusals, g.refusals),
        row("resets", b.resets, g.resets),
        row("dry-run new flows", b.dry_new_flows, g.dry_new_flows),
        row("fallbacks", b.fallbacks, g.fallbacks),
    ];
    if let Some(h) = &s.health {
        for (name, b) in [("blue", &h.blue), ("green", &h.green)] {
            out.push_str(&format!(
                "health {name} (port {}, checked on {}): {}, {} checks{}\n",
                b.port,
                b.check_port,
                b.status,
                b.checks,
                b.last_failure
                    .as_ref()
                    .map(|f| format!(", last failure: {f}"))
                    .unwrap_or_default()
            ));
        }
    } else {
        out.push_str("health: not checked\n");
    }
    if let Some(r) = &s.rollout {
        out.push_str(&format!("rollout: {}\n", rollout_text(r)));
        if r.dry_run
            && let Some(d) = dry_split(s)
        {
            out.push_str(&format!("dry run: would-be new flows blue/green {d}\n"));
        }
    }
    if let Some(f) = &s.fleet {
        out.push_str(&format!("fleet rollout: {}\n", f.summary()));
    }
    out.push('\n');
    out.push_str(&table::render(&["COUNTER", "BLUE", "GREEN"], &rows));
    out
}
