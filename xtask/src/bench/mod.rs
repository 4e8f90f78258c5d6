//! `cargo xtask bench`: runs the benchmark binary (crate `shifter-bench`, which builds the
//! eBPF programs through shifter's build script like everything else), then draws the
//! charts from its JSON. A full run also copies the JSON and charts to docs/bench/.

mod chart;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::{cargo, cmd, setup};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Cost per packet of each program path (`BPF_PROG_TEST_RUN`).
    Prog,
    /// The whole path over veth against direct, nftables, `HAProxy` and nginx.
    E2e,
    /// Memory per flow, weight-change latency, a 90 % full flow table.
    Scale,
    /// Every suite.
    All,
    /// Only redraw the charts from docs/bench/*.json (no root needed).
    Charts,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Which suite to run.
    #[arg(value_enum, default_value_t = Suite::All)]
    suite: Suite,
    /// Reduced run of the suites (under 3 minutes; CI keeps the harness working with it),
    /// on the debug build: its figures are not benchmarks. Results stay in target/bench and
    /// docs/bench is not touched.
    #[arg(long)]
    quick: bool,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let root = workspace_root();
    let docs = root.join("docs/bench");
    if args.suite == Suite::Charts {
        return chart::render_all(&docs, &docs);
    }
    crate::require_root("bench")?;
    setup::ensure(setup::Scope::RUN)?;
    let out = root.join("target/bench");
    let suite = match args.suite {
        Suite::Prog => "prog",
        Suite::E2e => "e2e",
        Suite::Scale => "scale",
        Suite::All | Suite::Charts => "all",
    };
    // A quick run only keeps the harness working (its figures mean nothing), so it uses the
    // debug build `cargo build` already made instead of a second, release, build of
    // everything (minutes of CI time and ~600 MB of disk).
    let profile: &[&str] = if args.quick { &[] } else { &["--release"] };
    // `scale` runs the real daemon: the shifter binary next to the benchmark's.
    cmd::step("build shifter");
    cmd::run(
        "build shifter",
        cargo()
            .current_dir(&root)
            .args(["build", "-p", "shifter", "--bin", "shifter"])
            .args(profile),
    )?;
    cmd::step(&format!("bench {suite}"));
    let mut c = cargo();
    c.current_dir(&root).arg("run").args(profile).args([
        "-p",
        "shifter-bench",
        "--",
        suite,
        "--out",
    ]);
    c.arg(&out);
    if args.quick {
        c.arg("--quick");
    }
    cmd::run("bench", &mut c)?;
    cmd::step("charts");
    if args.quick {
        return chart::render_all(&out, &out);
    }
    std::fs::create_dir_all(&docs).with_context(|| format!("create {}", docs.display()))?;
    for s in ["prog", "e2e", "scale"] {
        let from = out.join(format!("{s}.json"));
        if (suite == "all" || suite == s) && from.exists() {
            let to = docs.join(format!("{s}.json"));
            std::fs::copy(&from, &to).with_context(|| format!("copy to {}", to.display()))?;
            eprintln!("copied {}", to.display());
        }
    }
    chart::render_all(&docs, &docs)
}
