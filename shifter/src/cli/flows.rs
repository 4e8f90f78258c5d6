//! `shifter flows SERVICE [--json]`

use hyper::Method;

use super::{VerbResult, block_on, print_json, table};
use crate::api::{client::Client, types::Flows};

/// List the flow-table entries of a service: which client went to which backend.
///
/// Examples: `shifter flows web`, `shifter flows web --json`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The service's name in the configuration.
    service: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn endpoint(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    block_on(async {
        let f: Flows = client
            .call(
                Method::GET,
                &format!("/v1/services/{}/flows", a.service),
                None,
            )
            .await?;
        if a.json {
            print_json(&f);
            return Ok(());
        }
        let rows: Vec<Vec<String>> = f
            .flows
            .iter()
            .map(|e| {
                let mut state = Vec::new();
                if e.established {
                    state.push("established");
                }
                if e.recovered {
                    state.push("recovered");
                }
                if e.fin_in {
                    state.push("fin-in");
                }
                if e.fin_out {
                    state.push("fin-out");
                }
                vec![
                    e.protocol.clone(),
                    endpoint(&e.client, e.client_port),
                    endpoint(&e.local, e.service_port),
                    e.backend.clone(),
                    e.backend_port.to_string(),
                    format!("{:.1}", e.idle_ms as f64 / 1000.0),
                    if state.is_empty() {
                        "-".into()
                    } else {
                        state.join(",")
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(
                &[
                    "PROTO", "CLIENT", "SERVICE", "BACKEND", "PORT", "IDLE S", "STATE"
                ],
                &rows
            )
        );
        println!("{} flow(s)", f.flows.len());
        Ok(())
    })
}
