//! `shifter flows SERVICE [--json]`

use std::path::PathBuf;

use super::{VerbResult, block_on, fail, offline, print_json, table};
use crate::{
    api::{
        client::{Client, ClientError},
        types::Flows,
    },
    daemon::offline as pinned,
    paths,
};

/// List the flow-table entries of a service: which client went to which backend.
///
/// When the daemon is not running, the entries are read from the pinned maps (found through
/// --config; needs root) and labelled so.
///
/// Examples: `shifter flows web`, `shifter flows web --json`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The service's name in the configuration.
    service: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Configuration to find the pinned maps when the daemon is not running.
    #[arg(long, default_value = paths::CONFIG, value_name = "PATH")]
    config: PathBuf,
}

fn endpoint(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    let res: Result<Flows, ClientError> = block_on(client.flows(&a.service));
    let f = match res {
        Ok(f) => {
            if a.json {
                print_json(&f);
                return Ok(());
            }
            f
        }
        Err(ClientError::NotRunning(sock)) => {
            let (config, maps) = offline::open(&a.config, &sock)?;
            let flows = pinned::service_flows(&maps, &config, &a.service)
                .map_err(|e| offline::read_err(&maps, &e))?
                .ok_or_else(|| {
                    fail(format!(
                        "unknown service {:?}: not in {} or not in the pinned maps",
                        a.service,
                        a.config.display()
                    ))
                })?;
            let f = Flows {
                service: a.service.clone(),
                flows,
            };
            if a.json {
                print_json(&offline::labelled_json(&f));
                return Ok(());
            }
            println!("{}", offline::LABEL);
            f
        }
        Err(e) => return Err(e.into()),
    };
    print!("{}", render(&f));
    Ok(())
}

fn render(f: &Flows) -> String {
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
    format!(
        "{}{} flow(s)\n",
        table::render(
            &[
                "PROTO", "CLIENT", "SERVICE", "BACKEND", "PORT", "IDLE S", "STATE"
            ],
            &rows
        ),
        f.flows.len()
    )
}
