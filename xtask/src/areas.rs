//! The integration tests are one binary (`tests/tests/main.rs`, cargo target [`TARGET`]) with a
//! module per area: `packets`, `fleet`, `systemd`, ... The stack links once, not once per area.
//!
//! Each area's tests were written to run side by side with each other, not with another area's
//! (namespaces, pins and ports are unique within an area, and timing tests count on the load of
//! their own area only), so the host run (`cargo xtask test`) and the guest run (`cargo xtask
//! vm-test`) run one area after the other: the binary lists its tests (`--list`, with the
//! caller's harness arguments, so a name filter narrows the list), they are grouped by area, and
//! each area runs with `--exact` and its own test names.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

/// The cargo test target of the integration tests (`[[test]]` in tests/Cargo.toml).
pub const TARGET: &str = "integration";

/// One module of the integration binary and the full names of its tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    pub name: String,
    pub tests: Vec<String>,
}

impl Area {
    /// Harness arguments that select exactly this area's tests.
    pub fn selection(&self) -> Vec<String> {
        std::iter::once("--exact".to_owned())
            .chain(self.tests.iter().cloned())
            .collect()
    }
}

/// Groups the harness's `--list --format terse` output (`area::name: test` lines) by area, in
/// the order listed (alphabetical, so each area's tests come together).
pub fn parse_list(text: &str) -> anyhow::Result<Vec<Area>> {
    let mut areas: Vec<Area> = Vec::new();
    for line in text.lines() {
        let Some(full) = line.trim().strip_suffix(": test") else {
            continue;
        };
        let Some((area, _)) = full.split_once("::") else {
            bail!("test `{full}` is not in an area module of tests/tests/main.rs");
        };
        match areas.iter_mut().find(|a| a.name == area) {
            Some(a) => a.tests.push(full.to_owned()),
            None => areas.push(Area {
                name: area.to_owned(),
                tests: vec![full.to_owned()],
            }),
        }
    }
    Ok(areas)
}

/// The areas of the integration binary `exe` and their tests, narrowed by `harness_args` as a
/// run with them would be (a name filter, `--ignored`, `--skip`).
pub fn list(exe: &Path, harness_args: &[String]) -> anyhow::Result<Vec<Area>> {
    let out = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .args(harness_args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("listing the tests of {}", exe.display()))?;
    if !out.status.success() {
        bail!("`{} --list` failed ({})", exe.display(), out.status);
    }
    parse_list(&String::from_utf8_lossy(&out.stdout))
}

/// Builds the integration binary with the package selection of `cargo xtask test` (the same
/// features, so nothing links twice) and returns its path.
pub fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let args = ["test", "--workspace", "--exclude", "shifter-ebpf"];
    crate::built::cargo(root, &[&args[..], &["--test", TARGET, "--no-run"]].concat())?
        .into_iter()
        .find(|(kind, name, _)| *kind == crate::built::Kind::Test && name == TARGET)
        .map(|(_, _, exe)| exe)
        .with_context(|| format!("cargo built no `{TARGET}` test executable"))
}

/// How [`run`] runs each area.
pub struct Run<'a> {
    /// The integration binary.
    pub exe: &'a Path,
    /// Where the tests run, as under `cargo test`: the tests crate's directory.
    pub dir: &'a Path,
    pub test_threads: usize,
    /// Passed to every area's run after its selection (e.g. `--nocapture`).
    pub harness_args: &'a [String],
    pub env: &'a [(&'a str, &'a OsStr)],
}

/// Runs `areas` one after the other; every area runs even when an earlier one failed, and the
/// failed ones are named in the error. Prints each area's time at the end.
pub fn run(how: &Run<'_>, areas: &[Area]) -> anyhow::Result<()> {
    let mut times = Vec::new();
    let mut failed = Vec::new();
    for area in areas {
        eprintln!(
            "\n==> area {} ({} tests, {} threads)",
            area.name,
            area.tests.len(),
            how.test_threads
        );
        let started = Instant::now();
        let status = Command::new(how.exe)
            .args(area.selection())
            .args(["--test-threads", &how.test_threads.to_string()])
            .args(how.harness_args)
            .envs(how.env.iter().copied())
            .current_dir(how.dir)
            .status()
            .with_context(|| format!("running {}", how.exe.display()))?;
        times.push((area.name.as_str(), started.elapsed(), status.success()));
        if !status.success() {
            failed.push(area.name.as_str());
        }
    }
    eprintln!("\n==> areas");
    for (name, took, ok) in &times {
        let verdict = if *ok { "ok" } else { "FAILED" };
        eprintln!("  {name:<20} {:>6.1} s  {verdict}", took.as_secs_f64());
    }
    if !failed.is_empty() {
        bail!("integration tests failed in: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_grouped_by_area_in_order() {
        let text = "fleet::a: test\nfleet::b: test\nfleet_store::a: test\n\
                    packets::v4::x: test\nsome_bench: bench\n";
        let areas = parse_list(text).expect("parse");
        let names: Vec<_> = areas.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["fleet", "fleet_store", "packets"]);
        assert_eq!(areas[0].tests, ["fleet::a", "fleet::b"]);
        assert_eq!(areas[2].selection(), ["--exact", "packets::v4::x"]);
    }

    #[test]
    fn a_test_outside_every_area_is_an_error() {
        let err = parse_list("stray: test\n").expect_err("no area");
        assert!(err.to_string().contains("`stray`"), "{err}");
    }
}
