//! `shifter history [SERVICE] [--json]`

use super::{VerbResult, block_on, print_json, table};
use crate::{
    api::{
        client::Client,
        types::{HistoryEntry, RolloutRecord},
    },
    model::percent as format_percent,
    util::format_time_ms,
};

/// Show past and current rollouts: when each started and ended, its steps, every gate
/// result, and how and why it ended. Kept across daemon restarts (the last 20 rollouts of
/// each service). With SERVICE: every entry of each of its rollouts.
///
/// Examples: `shifter history`, `shifter history web`, `shifter history web --json`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Only this service, with every entry of its rollouts.
    service: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

const HEADER: [&str; 8] = [
    "ID", "SERVICE", "KIND", "STARTED", "ENDED", "OUTCOME", "STEPS", "CAUSE",
];

fn steps(r: &RolloutRecord) -> String {
    r.steps_bp
        .iter()
        .map(|w| format_percent(*w))
        .collect::<Vec<_>>()
        .join(",")
}

fn row(r: &RolloutRecord) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.service.clone(),
        format!("{}{:?}", if r.dry_run { "dry-run " } else { "" }, r.kind).to_lowercase(),
        format_time_ms(r.started_ms),
        r.ended_ms.map_or_else(|| "-".to_owned(), format_time_ms),
        r.outcome.to_string(),
        steps(r),
        r.end_cause.clone().unwrap_or_else(|| "-".to_owned()),
    ]
}

fn entry_line(e: &HistoryEntry) -> String {
    format!(
        "  {}  {:<20} {} -> {}  {}% -> {}%  {}{}",
        format_time_ms(e.time_ms),
        format!("{:?}", e.kind),
        e.from,
        e.to,
        format_percent(e.weight_before_bp),
        format_percent(e.weight_after_bp),
        e.detail,
        e.uid.map(|u| format!(" (uid {u})")).unwrap_or_default()
    )
}

/// The text of a history answer (a table; with a service, each rollout's entries too).
pub(crate) fn describe(rollouts: &[RolloutRecord], detailed: bool) -> String {
    let rows: Vec<Vec<String>> = rollouts.iter().map(row).collect();
    let mut out = table::render(&HEADER, &rows);
    if detailed {
        for r in rollouts {
            out.push_str(&format!("\nrollout {} of {}:\n", r.id, r.service));
            for e in &r.entries {
                out.push_str(&entry_line(e));
                out.push('\n');
            }
            if r.dropped_entries > 0 {
                out.push_str(&format!(
                    "  ({} older entries not kept)\n",
                    r.dropped_entries
                ));
            }
        }
    }
    out
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    let reply = block_on(client.history(a.service.as_deref()))?;
    if a.json {
        print_json(&reply);
    } else if reply.rollouts.is_empty() {
        println!("no rollouts recorded");
    } else {
        print!("{}", describe(&reply.rollouts, a.service.is_some()));
    }
    Ok(())
}
