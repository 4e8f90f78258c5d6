//! Developer workflows for shifter: `cargo xtask <command>` (the alias lives in .cargo/config.toml).
//!
//! Every command except `setup` first checks the machine and runs setup when something is missing.

mod areas;
mod bench;
mod built;
mod cmd;
mod deb;
mod modcycles;
mod setup;
mod vm;

use anyhow::bail;
use clap::{Parser, Subcommand};
use std::process::{Command, ExitCode};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "shifter developer workflows",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make this machine able to build and test shifter (idempotent).
    ///
    /// On Debian as root installs the packages, bpf-linker and the `debian-bpf` rustup toolchain,
    /// and mounts bpffs at /sys/fs/bpf. Elsewhere prints what is missing and how to get it.
    ///
    /// Example: `cargo xtask setup`
    Setup,
    /// Build the workspace (userspace crates; shifter's build script builds and embeds the eBPF
    /// programs).
    ///
    /// Example: `cargo xtask build --release`
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build, lint (clippy, rustfmt) and run every test, including the privileged ones (root).
    ///
    /// Example: `cargo xtask test` or `cargo xtask test -- smoke_load`
    Test {
        /// Test threads per test binary, and per area of the integration tests (the namespace
        /// tests are heavy; the machine is small).
        #[arg(long, default_value_t = 2)]
        test_threads: usize,
        /// Skip the VM suites: the integration tests on Debian's 6.1 and newest 7.x kernels
        /// and the systemd scenarios of the package (CI runs them).
        #[arg(long)]
        no_vm: bool,
        /// Skip the reduced benchmark run that keeps the harness working (CI runs it).
        #[arg(long)]
        no_bench: bool,
        /// Arguments for the test harness, e.g. a test name filter.
        #[arg(last = true)]
        harness_args: Vec<String>,
    },
    /// Run the demo: blue and green servers in namespaces, the real `shifter daemon` on a
    /// generated config, weights changed through the CLI, the observed split printed (root).
    ///
    /// `--fleet`: a fleet rollout over four daemons on a 3-member etcd, first rolled back
    /// (green breaks on one host of wave 2), then completed.
    ///
    /// Example: `cargo xtask demo` or `cargo xtask demo --fleet`
    Demo {
        /// The fleet demo (etcd, four hosts, a coordinator) instead of the single host one.
        #[arg(long)]
        fleet: bool,
        /// Arguments for the demo binary.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the privileged integration tests in a qemu VM (TCG) on another kernel; no root
    /// needed on the host. See docs/vm-tests.md.
    ///
    /// Example: `cargo xtask vm-test` (Debian 6.1) or
    /// `cargo xtask vm-test --kernel ./bzImage --modules ./lib/modules/6.6.0`
    VmTest(vm::VmArgs),
    /// Benchmarks (root): `prog`, `e2e`, `scale` or `all`; `--quick` for a reduced run; `charts`
    /// redraws docs/bench/*.svg. See docs/benchmarks.md.
    ///
    /// Example: `cargo xtask bench --quick` or `cargo xtask bench e2e`
    Bench(bench::BenchArgs),
    /// Build the Debian package (dpkg-deb): binary, systemd unit, example config as a
    /// conffile, completions, man page, `shifter` group. See xtask/src/deb.rs.
    ///
    /// Example: `cargo xtask deb` (writes target/debian/shifter_<version>_<arch>.deb)
    Deb(deb::DebArgs),
    /// The fleet tests (real 3-member etcd, root) on Debian 13's etcd 3.5, fetched into
    /// target/vm/packages/ (`cargo test -p shifter-tests --test integration fleet` runs them on the
    /// machine's 3.4; `cargo xtask test` runs both).
    ///
    /// Example: `cargo xtask fleet-test-etcd35`
    FleetTestEtcd35 {
        #[arg(long, default_value_t = 2)]
        test_threads: usize,
    },
    /// Check the layer rule: no import circles between the top-level modules of shifter/src
    /// and shifter-common/src (also a step of `cargo xtask test`). See docs/ARCHITECTURE.md.
    ///
    /// Example: `cargo xtask modcycles`
    Modcycles,
}

/// The crates whose top-level modules must not import each other in circles.
const LAYERED_CRATES: [&str; 2] = ["shifter", "shifter-common"];

fn workspace_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
}

fn cargo() -> Command {
    // The rustup proxy: picks the workspace's toolchain and finds clippy and rustfmt.
    Command::new("cargo")
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "`cargo xtask {what}` must run as root: it loads eBPF programs, creates network \
             namespaces and pins under /sys/fs/bpf (try `sudo -E cargo xtask {what}`)"
        );
    }
    Ok(())
}

fn build(release: bool) -> anyhow::Result<()> {
    setup::ensure(setup::Scope::BUILD)?;
    cmd::step("build");
    let mut c = cargo();
    c.arg("build");
    if release {
        c.arg("--release");
    }
    cmd::run("build", &mut c)
}

fn test(test_threads: usize, vm: bool, bench: bool, harness_args: &[String]) -> anyhow::Result<()> {
    require_root("test")?;
    setup::ensure(setup::Scope::ALL)?;
    cmd::step("build");
    cmd::run("build", cargo().arg("build"))?;
    cmd::step("clippy");
    cmd::run(
        "clippy",
        cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )?;
    cmd::step("rustfmt");
    cmd::run("rustfmt", cargo().args(["fmt", "--all", "--check"]))?;
    cmd::step("test: unit tests");
    let threads = test_threads.to_string();
    // shifter-ebpf only builds for the BPF target (shifter/build.rs builds it and the smoke and
    // packet tests run it through the kernel), so it is excluded from the host test build.
    let workspace = ["--workspace", "--exclude", "shifter-ebpf"];
    let mut c = cargo();
    c.arg("test")
        .args(workspace)
        .args(["--lib", "--bins", "--"]);
    c.args(["--test-threads", &threads]).args(harness_args);
    cmd::run("unit tests", &mut c)?;
    cmd::step("test: doc tests");
    let mut c = cargo();
    c.arg("test")
        .args(workspace)
        .args(["--doc", "--"])
        .args(harness_args);
    cmd::run("doc tests", &mut c)?;
    cmd::step("test: integration tests, one area at a time");
    integration_tests(None, test_threads, harness_args, &[])?;
    fleet_tests_on_etcd_3_5(test_threads)?;
    // After the tests, so that one run reports both.
    cmd::step("module circles");
    modcycles::run(workspace_root(), &LAYERED_CRATES)?;
    // The suites with their own commands run through cargo: `cargo test` may have rebuilt
    // (replaced) this very binary, so its current path can be gone.
    let xtask = |args: &[&str]| {
        let mut c = cargo();
        c.args(["run", "--quiet", "--package", "xtask", "--"])
            .args(args);
        c
    };
    if bench {
        cmd::step("bench --quick");
        cmd::run("bench --quick", &mut xtask(&["bench", "--quick"]))?;
    }
    if vm {
        cmd::step("vm-test (Debian 6.1)");
        cmd::run("vm-test", &mut xtask(&["vm-test"]))?;
        cmd::step("vm-test --systemd (the .deb under systemd, Debian 12)");
        cmd::run("vm-test --systemd", &mut xtask(&["vm-test", "--systemd"]))?;
        // The newest kernel too (tcx, and what 7.x refuses that 6.1 allows); the whole table
        // (`vm-test --all`, about 68 min of guests) does not fit in CI's 90 minutes.
        cmd::step("vm-test (Debian's newest kernel, 7.x)");
        cmd::run(
            "vm-test --kernel debian-7",
            &mut xtask(&["vm-test", "--kernel", "debian-7"]),
        )?;
    }
    eprintln!("\nall checks passed");
    Ok(())
}

/// Production runs etcd 3.5+ and the machine's Debian 12 has 3.4: the fleet tests run again
/// on Debian 13's 3.5, so nothing depends on what one of them lacks.
fn fleet_tests_on_etcd_3_5(test_threads: usize) -> anyhow::Result<()> {
    cmd::step("fleet tests on etcd 3.5 (Debian 13's etcd-server)");
    let etcd = vm::etcd_3_5()?;
    let env = [("SHIFTER_TEST_ETCD", etcd.as_os_str())];
    integration_tests(Some(&FLEET_AREAS), test_threads, &[], &env)
}

/// Builds the integration tests and runs them one area at a time (xtask/src/areas.rs): every
/// area with a test that `harness_args` selects, or only the `wanted` ones.
fn integration_tests(
    wanted: Option<&[&str]>,
    test_threads: usize,
    harness_args: &[String],
    env: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<()> {
    let exe = areas::build(workspace_root())?;
    let mut listed = areas::list(&exe, harness_args)?;
    if let Some(wanted) = wanted {
        listed.retain(|a| wanted.contains(&a.name.as_str()));
        if listed.len() != wanted.len() {
            bail!("the integration tests lack one of the areas {wanted:?}");
        }
    }
    if listed.is_empty() {
        bail!("no integration test matches {harness_args:?}");
    }
    let dir = workspace_root().join("tests");
    let run = areas::Run {
        exe: &exe,
        dir: &dir,
        test_threads,
        harness_args,
        env,
    };
    areas::run(&run, &listed)
}

/// The areas of the integration tests that talk to etcd.
const FLEET_AREAS: [&str; 2] = ["fleet", "fleet_store"];

fn demo(fleet: bool, args: &[String]) -> anyhow::Result<()> {
    require_root("demo")?;
    setup::ensure(setup::Scope::RUN)?;
    // The demo runs the real `shifter` binary, which it finds next to itself.
    cmd::step("build shifter");
    cmd::run(
        "build shifter",
        cargo().args(["build", "--release", "-p", "shifter", "--bin", "shifter"]),
    )?;
    cmd::step("demo");
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "-p",
        "shifter-tests",
        "--bin",
        if fleet {
            "shifter-fleet-demo"
        } else {
            "shifter-demo"
        },
        "--",
    ]);
    c.args(args);
    cmd::run("demo", &mut c)
}

/// Puts cargo's bin directory on `PATH` for every command we start: `cargo install` puts
/// bpf-linker there, and a fresh shell (or sudo) may not have it on `PATH`.
fn add_cargo_bin_to_path() {
    let Some(bin) = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .map(|h| h.join("bin"))
    else {
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<_> = std::env::split_paths(&path).collect();
    if dirs.contains(&bin) {
        return;
    }
    dirs.insert(0, bin);
    if let Ok(joined) = std::env::join_paths(dirs) {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

fn main() -> ExitCode {
    add_cargo_bin_to_path();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Build { release } => build(release),
        Cmd::Test {
            test_threads,
            no_vm,
            no_bench,
            harness_args,
        } => test(test_threads, !no_vm, !no_bench, &harness_args),
        Cmd::Demo { fleet, args } => demo(fleet, &args),
        Cmd::VmTest(args) => vm::run(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Deb(args) => deb::run(&args),
        Cmd::Modcycles => modcycles::run(workspace_root(), &LAYERED_CRATES),
        Cmd::FleetTestEtcd35 { test_threads } => {
            require_root("fleet-test-etcd35").and_then(|()| fleet_tests_on_etcd_3_5(test_threads))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
