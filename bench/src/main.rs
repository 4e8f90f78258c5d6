//! shifter benchmarks: `prog` (cost per packet of each program path), `e2e` (the whole path
//! in namespaces over veth against direct connections, nftables, HAProxy and nginx) and
//! `scale` (memory per flow, weight-change latency, a nearly full flow table).
//!
//! Run through `cargo xtask bench`, which also draws the charts; see docs/benchmarks.md.

mod daemon;
mod e2e;
mod env;
mod load;
mod pkt;
mod prog;
mod report;
mod scale;
mod sys;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Suite {
    Prog,
    E2e,
    Scale,
    All,
}

#[derive(Parser)]
#[command(name = "shifter-bench", about = "shifter benchmarks (root)")]
struct Cli {
    /// Which suite to run.
    #[arg(value_enum, default_value_t = Suite::All)]
    suite: Suite,
    /// Reduced version of every suite (seconds, not minutes); figures are indicative only.
    #[arg(long)]
    quick: bool,
    /// Directory for the JSON results.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    env::require_root()?;
    let all = cli.suite == Suite::All;
    if all || cli.suite == Suite::Prog {
        let v = prog::run(&prog::Opts::new(cli.quick))?;
        report::write_json(&cli.out, "prog", v)?;
    }
    if all || cli.suite == Suite::E2e {
        let v = e2e::run(&e2e::Opts::new(cli.quick))?;
        report::write_json(&cli.out, "e2e", v)?;
    }
    if all || cli.suite == Suite::Scale {
        let v = scale::run(&scale::Opts::new(cli.quick))?;
        report::write_json(&cli.out, "scale", v)?;
    }
    Ok(())
}
