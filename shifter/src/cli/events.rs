//! `shifter events [--json] [--follow]`

use super::{VerbResult, block_on, fail, print_json, table};
use crate::{
    api::client::Client, events::Event, model::percent as format_percent, util::format_time_ms,
};

/// Show the recorded weight changes: when, which service, old and new weight, why, and who.
///
/// Examples: `shifter events`, `shifter events --follow`, `shifter events --json`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Print JSON (with --follow: one JSON object per line).
    #[arg(long)]
    json: bool,
    /// Keep printing new events as they happen.
    #[arg(long, short)]
    follow: bool,
}

const HEADER: [&str; 8] = [
    "SEQ", "TIME", "SERVICE", "OLD", "NEW", "CAUSE", "UID", "DETAIL",
];

fn row(e: &Event) -> Vec<String> {
    let w =
        |w: Option<u16>| w.map_or_else(|| "-".to_owned(), |w| format!("{}%", format_percent(w)));
    vec![
        e.seq.to_string(),
        format_time_ms(e.time_ms),
        e.service.clone(),
        w(e.old_weight_bp),
        w(e.new_weight_bp),
        e.cause.to_string(),
        e.uid.map_or_else(|| "-".to_owned(), |u| u.to_string()),
        {
            let mut d = e.detail.clone().unwrap_or_default();
            if e.dry_run {
                d.insert_str(0, "[dry run] ");
            }
            if let Some(fleet) = &e.fleet_rollout {
                d.push_str(&format!(" [fleet rollout {fleet}]"));
            }
            if let Some(ns) = e.since_decision_ns {
                d.push_str(&format!(
                    " [{:.3} ms after the deciding check]",
                    ns as f64 / 1e6
                ));
            }
            d
        },
    ]
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    block_on(async {
        if !a.follow {
            let ev = client.events(0).await?;
            if a.json {
                print_json(&ev);
            } else {
                let rows: Vec<Vec<String>> = ev.events.iter().map(row).collect();
                print!("{}", table::render(&HEADER, &rows));
            }
            return Ok(());
        }
        let mut s = client.follow_events().await?;
        if !a.json {
            println!("{}", HEADER.join("  "));
        }
        while let Some(line) = s.next_line().await? {
            if a.json {
                println!("{}", String::from_utf8_lossy(&line));
                continue;
            }
            let e: Event = serde_json::from_slice(&line)
                .map_err(|e| fail(format!("bad event from the daemon: {e}")))?;
            println!("{}", row(&e).join("  "));
        }
        Err(fail("the daemon closed the event stream (it stopped)"))
    })
}
