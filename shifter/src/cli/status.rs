//! `shifter status [SERVICE] [--json]`

use std::path::PathBuf;

use hyper::Method;

use super::{VerbResult, block_on, fail, offline, print_json, table};
use crate::{
    api::{
        client::{Client, ClientError},
        types::{ServiceStatus, Status},
    },
    paths,
};

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
        let res: Result<ServiceStatus, ClientError> =
            block_on(client.call(Method::GET, &format!("/v1/services/{name}"), None));
        match res {
            Ok(s) if a.json => print_json(&s),
            Ok(s) => print!("{}", detail(&s)),
            Err(ClientError::NotRunning(sock)) => {
                let (config, maps) = offline::open(&a.config, &sock)?;
                let status = maps
                    .status(&config)
                    .map_err(|e| offline::read_err(&maps, &e))?;
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
    let res: Result<Status, ClientError> = block_on(client.call(Method::GET, "/v1/status", None));
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
            let s = maps
                .status(&config)
                .map_err(|e| offline::read_err(&maps, &e))?;
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
                format!("{}/{}", v.blue.active_flows, v.green.active_flows),
                format!("{}/{}", v.blue.new_flows, v.green.new_flows),
                format!("{}/{}", v.blue.refusals, v.green.refusals),
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
                "FLOWS B/G",
                "NEW B/G",
                "REFUSED B/G"
            ],
            &rows
        )
    );
}

fn detail(s: &ServiceStatus) -> String {
    let addrs = if s.local_addresses.is_empty() {
        "any".to_owned()
    } else {
        s.local_addresses.join(", ")
    };
    let mut out = format!(
        "service {}: {} port {} on {addrs}\nblue port {}, green port {}, green weight {}%, affinity {}\n\n",
        s.name, s.protocol, s.port, s.blue_port, s.green_port, s.weight_percent, s.affinity
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
    ];
    out.push_str(&table::render(&["COUNTER", "BLUE", "GREEN"], &rows));
    out
}
