//! `shifter status [SERVICE] [--json]`

use hyper::Method;

use super::{VerbResult, block_on, print_json, table};
use crate::api::{
    client::Client,
    types::{ServiceStatus, Status},
};

/// Show the daemon, its interfaces and services (weights, flows, counters).
///
/// Examples: `shifter status`, `shifter status web`, `shifter status --json`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Show only this service, in detail.
    service: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    block_on(async {
        if let Some(name) = &a.service {
            let s: ServiceStatus = client
                .call(Method::GET, &format!("/v1/services/{name}"), None)
                .await?;
            if a.json {
                print_json(&s);
            } else {
                print!("{}", detail(&s));
            }
            return Ok(());
        }
        let s: Status = client.call(Method::GET, "/v1/status", None).await?;
        if a.json {
            print_json(&s);
            return Ok(());
        }
        println!(
            "shifter {} (pid {}), pins {}, flow table {} entries",
            s.version, s.pid, s.bpffs_dir, s.flow_table_size
        );
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
            return Ok(());
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
        Ok(())
    })
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
