//! `cargo xtask vm-test`: the privileged integration tests inside a qemu VM on another kernel.
//!
//! 1. Build the integration-test binary of `shifter-tests` and the `shifter` binary; list its
//!    tests by area (xtask/src/areas.rs).
//! 2. Get the kernel (a named one from [`kernel::KERNELS`], e.g. Debian's 6.1 package, or
//!    `--kernel PATH --modules DIR`).
//! 3. Write an initramfs: busybox (static), iproute2's `ip` with its shared libraries, the
//!    binaries with theirs, the modules the tests need (dependencies first) and an `/init`
//!    script that mounts proc/sys/bpffs, loads the modules, runs each test area with
//!    `--test-threads=1`, prints `SHIFTER-VM-RESULT: <rc>` and powers off.
//! 4. Boot it under `qemu-system-x86_64 -accel tcg` (KVM hangs on our machines), stream the
//!    console, and fail on a missing or non-zero result, a kernel panic or the time limit.
//!    qemu runs in its own process group with a parent-death signal and is killed by a guard on
//!    every way out (error, panic, Ctrl-C).
//!
//! See docs/vm-tests.md.
//!
//! Over 700 lines, about 90 of them its unit tests: the guest image, its init script and the report
//! of one run; kernels, qemu, the image format and the systemd guest are its submodules.

mod cpio;
mod elf;
mod kernel;
mod qemu;
mod systemd;

use anyhow::{Context as _, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cpio::{Entry, Tree};

use crate::{areas, built};

/// Arguments of `cargo xtask vm-test`.
#[derive(clap::Args, Debug)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "command-line switches, each independent"
)]
pub struct VmArgs {
    /// A kernel name from the table in xtask/src/vm/kernel.rs or the path to a bzImage (then
    /// pass its modules with --modules). Default: `debian-6.1`; with --systemd, the Debian 12
    /// guest's own kernel (6.1, cloud flavour).
    #[arg(long)]
    pub kernel: Option<String>,
    /// The `lib/modules/<release>` directory that goes with `--kernel PATH`.
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// Time limit for the whole guest run, in minutes (boot, module loading, all tests).
    #[arg(long, default_value_t = 40)]
    pub timeout_minutes: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory_mib: u32,
    /// Guest CPUs (TCG runs one host thread per guest CPU).
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Build the test binary with the release profile (slower to build, faster in the guest).
    #[arg(long)]
    pub release: bool,
    /// Only these test areas (the modules of tests/tests/main.rs, e.g. `packets`); default: all.
    #[arg(long = "test", value_name = "NAME")]
    pub tests: Vec<String>,
    /// List the known kernels and exit.
    #[arg(long)]
    pub list_kernels: bool,
    /// Run the suite on every kernel of the table, one after the other (the test binary
    /// is built once), and print a summary table; fails if any kernel failed.
    #[arg(long, conflicts_with_all = ["kernel", "modules"])]
    pub all: bool,
    /// Run the systemd scenarios instead: the .deb installed and driven by systemd in a Debian
    /// 12 guest with systemd as PID 1, on the guest's own kernel or the one --kernel names
    /// (needs root).
    #[arg(long, conflicts_with_all = ["tests", "all"])]
    pub systemd: bool,
    /// Arguments for the test harness of every area, e.g. a test name filter.
    #[arg(last = true)]
    pub harness_args: Vec<String>,
}

/// Prefix of the guest's result line; the host looks for it on the console.
const RESULT_MARKER: &str = "SHIFTER-VM-RESULT: ";
/// Prefix of a per-area line: `SHIFTER-VM-TEST: <area> rc=<rc> seconds=<s>`.
const TEST_MARKER: &str = "SHIFTER-VM-TEST: ";

pub fn run(args: &VmArgs) -> anyhow::Result<()> {
    if args.list_kernels {
        for k in kernel::KERNELS {
            println!("{:<14} {}", k.name, k.what);
        }
        return Ok(());
    }
    let started = Instant::now();
    let root = workspace_root();
    let target = target_dir(&root);
    if args.systemd {
        return systemd::run(args, &root, &target);
    }
    ensure_tools()?;
    let cache = target.join("vm");

    crate::cmd::step("vm-test: build");
    let built = build(&root, args.release)?;
    let listed = areas::list(&built.integration, &args.harness_args)?;
    let (tests, excluded) = select_tests(listed, &args.tests)?;
    for (name, why) in &excluded {
        eprintln!("vm-test: not run in the guest: {name}: {why}");
    }
    if tests.is_empty() {
        bail!(
            "no test of {} matches the selection",
            built.integration.display()
        );
    }
    let data = test_data(&root)?;
    let suite = Suite {
        cache: &cache,
        data: &data,
        integration: &built.integration,
        areas: &tests,
        bins: &built.bins,
        excluded: &excluded,
    };
    if !args.all {
        let name = args.kernel.as_deref().unwrap_or(kernel::DEFAULT_KERNEL);
        return suite.run(args, name, started).map(|_| ());
    }
    let mut rows = Vec::new();
    for k in kernel::KERNELS {
        crate::cmd::step(&format!("vm-test --all: {}", k.name));
        let t = Instant::now();
        let row = match suite.run(args, k.name, t) {
            Ok(row) => row,
            Err(e) => {
                eprintln!("vm-test --all: {}: {e:#}", k.name);
                e.downcast::<Row>().unwrap_or_else(|e| Row {
                    kernel: k.name.to_owned(),
                    expected: "?".to_owned(),
                    error: Some(format!("{e:#}")),
                    ..Row::default()
                })
            }
        };
        rows.push(row);
        if qemu::interrupted() {
            eprintln!("vm-test --all: interrupted; not booting the remaining kernels");
            break;
        }
    }
    let table = summary_table(&rows);
    eprintln!(
        "\n==> vm-test --all: {} kernels in {:.0} s\n{table}",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.kernel.as_str())
        .collect();
    if !bad.is_empty() {
        bail!("vm-test --all: failed on {}", bad.join(", "));
    }
    Ok(())
}

/// What every kernel's run shares: the build and the files that go into the image.
struct Suite<'a> {
    cache: &'a Path,
    data: &'a [PathBuf],
    integration: &'a Path,
    areas: &'a [areas::Area],
    bins: &'a [(String, PathBuf)],
    excluded: &'a [(&'static str, &'static str)],
}

impl Suite<'_> {
    /// Boots one kernel with the suite. On failure the error carries the [`Row`] (when the
    /// guest ran) for the `--all` summary.
    fn run(&self, args: &VmArgs, name: &str, started: Instant) -> anyhow::Result<Row> {
        crate::cmd::step("vm-test: kernel");
        let kernel = kernel::resolve(name, args.modules.as_deref(), self.cache)?;
        eprintln!(
            "kernel {}: {} (release {}, qemu -cpu {} -accel {})",
            kernel.label,
            kernel.bzimage.display(),
            kernel.release,
            kernel.cpu,
            kernel.accel
        );
        let modules = kernel::modules_to_load(&kernel, kernel::MODULES)?;

        crate::cmd::step("vm-test: initramfs");
        let work = self.cache.join(sanitize(name));
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let expect_mode = if kernel::expects_tcx(&kernel.release) {
            "tcx"
        } else {
            "legacy"
        };
        let image = Image {
            work: &work,
            data: self.data,
            kernel: &kernel,
            modules: &modules,
            integration: self.integration,
            areas: self.areas,
            bins: self.bins,
            harness_args: &args.harness_args,
            expect_mode,
        };
        let initrd = work.join("initramfs.cpio");
        let size = image.write(&initrd)?;
        eprintln!(
            "{}: {} MiB; {} test areas, {} modules, expecting tc mode {expect_mode}",
            initrd.display(),
            size >> 20,
            self.areas.len(),
            modules.len()
        );

        crate::cmd::step("vm-test: boot (qemu, TCG)");
        let timeout = Duration::from_secs(args.timeout_minutes.saturating_mul(60));
        let mut append = "console=ttyS0 panic=-1 oops=panic loglevel=4 rdinit=/init".to_owned();
        if !kernel.append.is_empty() {
            append = format!("{append} {}", kernel.append);
        }
        let outcome = qemu::boot(&qemu::Boot {
            bzimage: &kernel.bzimage,
            initrd: &initrd,
            disk: None,
            append: &append,
            cpu: kernel.cpu,
            accel: kernel.accel,
            memory_mib: args.memory_mib,
            cpus: args.cpus,
            timeout,
        })?;
        let mut row = Row::from_outcome(&kernel.label, expect_mode, &outcome);
        if let Err(e) = report(&kernel, &outcome, self.excluded, started.elapsed()) {
            row.error = Some(format!("{e:#}"));
            return Err(anyhow::Error::new(row).context(e));
        }
        Ok(row)
    }
}

/// One kernel's line in the `--all` summary.
#[derive(Debug, Default)]
struct Row {
    kernel: String,
    expected: String,
    /// The TC mode the guest reported (`attach_mode`), if it ran.
    seen: Option<String>,
    passed: Vec<String>,
    failed: Vec<String>,
    guest: Duration,
    error: Option<String>,
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.kernel,
            self.error.as_deref().unwrap_or("ok")
        )
    }
}

impl std::error::Error for Row {}

impl Row {
    fn from_outcome(kernel: &str, expected: &str, o: &qemu::Outcome) -> Row {
        let mut row = Row {
            kernel: kernel.to_owned(),
            expected: expected.to_owned(),
            guest: o.guest_time,
            ..Row::default()
        };
        for l in &o.lines {
            let l = l.trim();
            if let Some(t) = l.strip_prefix(TEST_MARKER) {
                let mut w = t.split_whitespace();
                let name = w.next().unwrap_or("?").to_owned();
                if w.next() == Some("rc=0") {
                    row.passed.push(name);
                } else {
                    row.failed.push(name);
                }
            } else if let Some(m) = l.find("SHIFTER-TC-MODE: ").map(|i| &l[i + 17..]) {
                row.seen = m.split_whitespace().next().map(str::to_owned);
            }
        }
        row
    }

    fn ok(&self) -> bool {
        self.error.is_none() && self.failed.is_empty()
    }
}

fn summary_table(rows: &[Row]) -> String {
    let mut t = format!(
        "{:<48} {:<15} {:>6} {:>6} {:>7}  {}\n",
        "kernel", "tc exp/seen", "passed", "failed", "guest s", "failed areas / error"
    );
    for r in rows {
        let mode = format!("{}/{}", r.expected, r.seen.as_deref().unwrap_or("-"));
        let why = match &r.error {
            Some(e) if r.failed.is_empty() => e.lines().next().unwrap_or("").to_owned(),
            _ => r.failed.join(" "),
        };
        let _ = writeln!(
            t,
            "{:<48} {:<15} {:>6} {:>6} {:>7.0}  {}",
            r.kernel,
            mode,
            r.passed.len(),
            r.failed.len(),
            r.guest.as_secs_f64(),
            why
        );
    }
    t
}

/// Test areas that cannot run in the guest, with the reason printed on every run. They are
/// left out of the default selection, and naming one with `--test` is an error.
const NOT_IN_VM: &[(&str, &str)] = &[
    (
        "https_health",
        "TLS handshakes under TCG miss the test's 100 ms check timeout; what it tests is \
         userspace only (rustls), covered by the host run (`cargo xtask test`)",
    ),
    (
        "webhooks",
        "times the engine's latency with and without a dead receiver, which TCG's slowness \
         drowns; userspace only, covered by the host run (`cargo xtask test`)",
    ),
    (
        "rollout_wait",
        "drives the CLI on a pseudo-terminal with script(1) (util-linux), which the guest lacks; \
         what it tests is userspace only, covered by the host run (`cargo xtask test`)",
    ),
    (
        "analysis",
        "needs a Prometheus server (Debian's /usr/bin/prometheus) in the guest; what it tests \
         is userspace only, covered by the host run (`cargo xtask test`)",
    ),
    (
        "deb_package",
        "needs dpkg and an installed Debian system (the guest is a busybox initramfs); \
         covered by the host run (`cargo xtask test`)",
    ),
    (
        "systemd",
        "its scenarios need systemd as PID 1 (all #[ignore]d here); they run under \
         `cargo xtask vm-test --systemd`",
    ),
    (
        "fleet",
        "needs etcd and etcdctl (Debian's etcd-server, etcd-client), which the busybox guest \
         does not have; covered by the host run (`cargo xtask test`)",
    ),
    (
        "fleet_store",
        "needs etcd and etcdctl, which the busybox guest does not have; covered by the host \
         run (`cargo xtask test`)",
    ),
];

/// Test areas left out of the guest run: (name, why).
type LeftOut = Vec<(&'static str, &'static str)>;

/// The test areas to run (all, or those named with `--test`), and the ones left out with
/// their reasons.
fn select_tests(
    listed: Vec<areas::Area>,
    wanted: &[String],
) -> anyhow::Result<(Vec<areas::Area>, LeftOut)> {
    for t in wanted {
        if let Some((_, why)) = NOT_IN_VM.iter().find(|(n, _)| n == t) {
            bail!("--test {t}: cannot run in the VM: {why}");
        }
        if !listed.iter().any(|a| a.name == *t) {
            let names: Vec<_> = listed.iter().map(|a| a.name.as_str()).collect();
            bail!("--test {t}: no such test area (have: {})", names.join(", "));
        }
    }
    let excluded: Vec<_> = NOT_IN_VM
        .iter()
        .filter(|(n, _)| wanted.is_empty() && listed.iter().any(|a| a.name == *n))
        .copied()
        .collect();
    let tests = listed
        .into_iter()
        .filter(|a| {
            if wanted.is_empty() {
                !NOT_IN_VM.iter().any(|(x, _)| *x == a.name)
            } else {
                wanted.contains(&a.name)
            }
        })
        .collect();
    Ok((tests, excluded))
}

fn report(
    kernel: &kernel::Kernel,
    o: &qemu::Outcome,
    excluded: &[(&str, &str)],
    total: Duration,
) -> anyhow::Result<()> {
    let mut summary = format!("\n==> vm-test summary: kernel {}\n", kernel.label);
    let mut last_result = "";
    for l in &o.lines {
        if let Some(r) = l.trim().strip_prefix("test result: ") {
            last_result = r;
        } else if let Some(t) = l.trim().strip_prefix(TEST_MARKER) {
            let _ = writeln!(summary, "  {t}: {last_result}");
            last_result = "";
        }
    }
    for (name, why) in excluded {
        let _ = writeln!(summary, "  {name}: not run in the VM: {why}");
    }
    for l in o.lines.iter().filter(|l| l.contains("SHIFTER-TC-MODE")) {
        let _ = writeln!(summary, "  {}", l.trim());
    }
    let _ = writeln!(
        summary,
        "  guest ran {:.0} s; vm-test took {:.0} s in all",
        o.guest_time.as_secs_f64(),
        total.as_secs_f64()
    );
    eprint!("{summary}");
    let fail = |why: String| -> anyhow::Result<()> {
        eprintln!("\n==> guest console (last {} lines)", o.tail.len());
        for l in &o.tail {
            eprintln!("{l}");
        }
        bail!("vm-test on {} failed: {why}", kernel.label)
    };
    if o.timed_out {
        return fail(format!(
            "no result within the time limit ({} s): the guest hung or the tests are too slow \
             (raise --timeout-minutes)",
            o.guest_time.as_secs()
        ));
    }
    if let Some(panic) = o.lines.iter().find(|l| l.contains("Kernel panic")) {
        return fail(format!("the guest kernel panicked: {}", panic.trim()));
    }
    match o.result {
        Some(0) => {
            eprintln!("vm-test on {}: all tests passed", kernel.label);
            Ok(())
        }
        Some(rc) => fail(format!("a test area failed (guest result {rc})")),
        None => fail(format!(
            "the guest stopped without a result line (qemu exit {})",
            o.qemu_status
        )),
    }
}

/// Commands vm-test needs besides the build tools; installed on Debian as root.
const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("busybox-static", "busybox"),
];
const BUSYBOX: &str = "/bin/busybox";

pub(crate) fn busybox_is_static() -> bool {
    std::fs::read(BUSYBOX).is_ok_and(|d| elf::is_dynamic(&d) == Some(false))
}

pub(crate) fn ensure_tools() -> anyhow::Result<()> {
    crate::setup::ensure(crate::setup::Scope::RUN)?;
    let missing: Vec<&str> = VM_PACKAGES
        .iter()
        .filter(|(pkg, cmd)| {
            if *pkg == "busybox-static" {
                !busybox_is_static()
            } else {
                !crate::cmd::on_path(cmd)
            }
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::cmd::is_root() || !crate::cmd::on_path("apt-get") {
        bail!(
            "vm-test needs {}: install {} (Debian: `apt-get install {}`)",
            VM_PACKAGES
                .iter()
                .map(|(_, c)| *c)
                .collect::<Vec<_>>()
                .join(" and a static "),
            missing.join(", "),
            missing.join(" ")
        );
    }
    crate::cmd::step("vm-test: installing qemu and busybox");
    let mut c = Command::new("apt-get");
    c.args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    crate::cmd::run("vm-test: install", &mut c)?;
    if !busybox_is_static() {
        bail!("{BUSYBOX} is still not a static executable after installing busybox-static");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

/// The `etcd` of Debian 13 (3.5; the machine's bookworm has 3.4), for the fleet tests'
/// second run: unpacked under `target/vm/packages/`, checked to say it is 3.5.
pub fn etcd_3_5() -> anyhow::Result<PathBuf> {
    let suite = kernel::Suite {
        name: "trixie",
        uri: kernel::DEBIAN,
    };
    let root = kernel::unpacked_package(
        suite,
        "etcd-server",
        &target_dir(&workspace_root()).join("vm"),
    )?;
    let etcd = root.join("usr/bin/etcd");
    let out = std::process::Command::new(&etcd)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", etcd.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !version.contains("etcd Version: 3.5.") {
        bail!("{} is not etcd 3.5: {version}", etcd.display());
    }
    Ok(etcd)
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The binaries the guest needs: the product and the test crate's helpers (the daemon under
/// test and the demo); the workspace build also yields xtask and the bench tool, left out.
const GUEST_BINS: &[&str] = &["shifter", "shifter-t", "shifter-demo"];

/// What the build produced: the integration binary and the guest's binaries by name.
pub(crate) struct Built {
    pub(crate) integration: PathBuf,
    pub(crate) bins: Vec<(String, PathBuf)>,
}

pub(crate) fn build(root: &Path, release: bool) -> anyhow::Result<Built> {
    // The same package selection as `cargo xtask test`'s own `cargo test`: with `-p` cargo would
    // unify features differently and link the test binary a second time.
    const WORKSPACE: [&str; 3] = ["--workspace", "--exclude", "shifter-ebpf"];
    let mut integration = None;
    let mut bins = Vec::new();
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    for argv in [
        &["test", "--no-run", "--test", areas::TARGET][..],
        &["build", "--bins"][..],
    ] {
        for artifact in built::cargo(root, &[argv, &WORKSPACE[..], profile].concat())? {
            match artifact {
                (built::Kind::Test, name, exe) if name == areas::TARGET => {
                    integration = Some(exe);
                }
                (built::Kind::Bin, name, exe) if GUEST_BINS.contains(&name.as_str()) => {
                    bins.push((name, exe));
                }
                _ => {}
            }
        }
    }
    bins.sort();
    bins.dedup();
    let integration = integration
        .with_context(|| format!("cargo built no `{}` test executable", areas::TARGET))?;
    Ok(Built { integration, bins })
}

/// Host tools copied into the guest: (command, required). iproute2's `ip` is required (busybox's
/// has no `netns`); the others are used by some tests (tc to list legacy filters, curl by the
/// daemon API tests, promtool (48 MB) by the metrics test).
const HOST_TOOLS: &[(&str, bool)] = &[
    ("ip", true),
    ("tc", false),
    ("ethtool", false),
    ("curl", false),
    ("promtool", false),
];

/// Directory in the guest for host tools; first on PATH so it wins over busybox applets.
const GUEST_TOOLS: &str = "/usr/local/sbin";
const GUEST_MODULES: &str = "/lib/shifter-modules";

struct Image<'a> {
    work: &'a Path,
    /// Files the tests read from the source tree, at their host paths.
    data: &'a [PathBuf],
    kernel: &'a kernel::Kernel,
    modules: &'a [kernel::Module],
    integration: &'a Path,
    areas: &'a [areas::Area],
    bins: &'a [(String, PathBuf)],
    harness_args: &'a [String],
    expect_mode: &'a str,
}

impl Image<'_> {
    fn write(&self, out: &Path) -> anyhow::Result<u64> {
        let mut t = base_tree()?;
        let stage = self.work.join("stage");
        let _ = std::fs::remove_dir_all(&stage);
        std::fs::create_dir_all(&stage)?;
        let mut dynamic = Vec::new();
        for &(tool, required) in HOST_TOOLS {
            match find_on_path(tool) {
                Some(p) => {
                    t.add(
                        &format!("{GUEST_TOOLS}/{tool}"),
                        Entry::File {
                            source: p.clone(),
                            mode: 0o755,
                        },
                    )?;
                    dynamic.push(p);
                }
                None if required => bail!("`{tool}` is not installed (Debian: iproute2)"),
                None => {}
            }
        }
        // Executables keep their host paths, so a test finds a binary next to its own `deps`
        // directory (or through a compile-time `CARGO_BIN_EXE_*` path) as it does on the host.
        let integration = (areas::TARGET.to_owned(), self.integration.to_path_buf());
        for (name, exe) in std::iter::once(&integration).chain(self.bins) {
            let staged = strip_into(exe, &stage.join(name))?;
            t.add(
                &exe.to_string_lossy(),
                Entry::File {
                    source: staged,
                    mode: 0o755,
                },
            )?;
            dynamic.push(exe.clone());
        }
        for f in self.data {
            t.add(
                &f.to_string_lossy(),
                Entry::File {
                    source: f.clone(),
                    mode: 0o644,
                },
            )?;
        }
        for lib in shared_libraries(&dynamic)? {
            let path = lib.to_string_lossy().into_owned();
            if !t.contains(&path) {
                let source = std::fs::canonicalize(&lib)
                    .with_context(|| format!("resolving {}", lib.display()))?;
                t.add(
                    &path,
                    Entry::File {
                        source,
                        mode: 0o755,
                    },
                )?;
            }
        }
        let mut load = String::new();
        for m in self.modules {
            let data = kernel::read_module(&m.source)?;
            let name = format!("{GUEST_MODULES}/{}.ko", m.name);
            t.add(&name, Entry::Data { data, mode: 0o644 })?;
            let _ = writeln!(load, "{name}");
        }
        t.add(
            "etc/shifter-vm/modules",
            Entry::Data {
                data: load.into_bytes(),
                mode: 0o644,
            },
        )?;
        t.add(
            "init",
            Entry::Data {
                data: self.init_script().into_bytes(),
                mode: 0o755,
            },
        )?;
        let n = t.write(out)?;
        let _ = std::fs::remove_dir_all(&stage);
        Ok(n)
    }

    fn init_script(&self) -> String {
        let exe = shell_quote(&self.integration.to_string_lossy());
        let runs: Vec<String> = self
            .areas
            .iter()
            .map(|a| format!("run_area {} {exe} {}", a.name, shell_words(&a.selection())))
            .collect();
        let mut bin_dirs: Vec<String> = self
            .bins
            .iter()
            .filter_map(|(_, exe)| exe.parent())
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        bin_dirs.sort();
        bin_dirs.dedup();
        let path: Vec<&str> = std::iter::once(GUEST_TOOLS)
            .chain(bin_dirs.iter().map(String::as_str))
            .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
            .collect();
        INIT_TEMPLATE
            .replace("@TOOLS@", GUEST_TOOLS)
            .replace("@PATH@", &path.join(":"))
            .replace("@AREAS@", &runs.join("\n"))
            .replace("@HARNESS@", &shell_words(self.harness_args))
            .replace("@EXPECT_MODE@", self.expect_mode)
            .replace("@PATIENCE@", &guest_patience().to_string())
            .replace("@RELEASE@", &self.kernel.release)
            .replace("@RESULT@", RESULT_MARKER)
            .replace("@TEST@", TEST_MARKER)
    }
}

/// The factor by which the tests' waits for events are scaled in the guest
/// (`shifter_tests::patience`): TCG on a shared 2-core machine runs several times slower than
/// the host. `SHIFTER_TEST_PATIENCE` on the host overrides it.
fn guest_patience() -> u32 {
    std::env::var("SHIFTER_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&f: &u32| f >= 1)
        .unwrap_or(3)
}

/// The fixed part of the image: directories, device nodes, busybox, a few /etc files.
fn base_tree() -> anyhow::Result<Tree> {
    let mut t = Tree::default();
    for d in ["proc", "sys", "dev", "run", "tmp", "root", "etc", "mnt"] {
        t.add(d, Entry::Dir)?;
    }
    t.add("dev/console", Entry::CharDev(5, 1))?;
    t.add("dev/null", Entry::CharDev(1, 3))?;
    t.add("var/run", Entry::Symlink("../run".into()))?;
    t.add(
        "bin/busybox",
        Entry::File {
            source: BUSYBOX.into(),
            mode: 0o755,
        },
    )?;
    t.add("bin/sh", Entry::Symlink("busybox".into()))?;
    t.add(
        "etc/hosts",
        Entry::Data {
            data: b"127.0.0.1 localhost\n::1 localhost\n".to_vec(),
            mode: 0o644,
        },
    )?;
    t.add(
        "etc/passwd",
        Entry::Data {
            data: b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
            mode: 0o644,
        },
    )?;
    t.add(
        "etc/group",
        Entry::Data {
            data: b"root:x:0:\n".to_vec(),
            mode: 0o644,
        },
    )?;

    Ok(t)
}

/// The guest's PID 1 (busybox sh). Any way out of it ends the VM: poweroff on success or
/// failure, and the kernel panics (then qemu exits: `panic=-1 -no-reboot`) if init dies.
const INIT_TEMPLATE: &str = r#"#!/bin/sh
export PATH=@PATH@
export HOME=/root RUST_BACKTRACE=1 SHIFTER_EXPECT_TC_MODE=@EXPECT_MODE@ SHIFTER_TEST_PATIENCE=@PATIENCE@
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
# No tmpfs on /tmp: the initramfs root is RAM already, and executables keep their host
# paths, which may lie under /tmp (a CI checkout there).
mkdir -p /tmp && chmod 1777 /tmp
mkdir -p /run/netns /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup || { echo "shifter-vm: cannot mount cgroup2"; echo "@RESULT@96"; poweroff -f; }
mount -t bpf bpf /sys/fs/bpf || { echo "shifter-vm: cannot mount bpffs"; echo "@RESULT@97"; poweroff -f; }
echo "shifter-vm: kernel $(uname -r) (expected @RELEASE@), $(nproc) cpus"
while read -r m; do
    [ -n "$m" ] || continue
    insmod "$m" || { echo "shifter-vm: insmod $m failed"; echo "@RESULT@98"; poweroff -f; }
done < /etc/shifter-vm/modules
echo "shifter-vm: modules loaded: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
# From here on the kernel log holds what the tests caused (the boot is on the console).
dmesg -c >/dev/null
@TOOLS@/ip link set lo up
rc=0
# run_area AREA EXE ARGS...: one area of the integration binary (xtask/src/areas.rs).
run_area() {
    t=$1
    shift
    echo "shifter-vm: === $t"
    start=$(date +%s)
    "$@" --test-threads=1 @HARNESS@ </dev/null
    r=$?
    echo "@TEST@$t rc=$r seconds=$(( $(date +%s) - start ))"
    if [ "$r" -ne 0 ]; then
        rc=1
        # The kernel's side of the failure (verifier and attach errors go to the log).
        dmesg | tail -n 40 | sed 's/^/shifter-vm: dmesg: /'
        dmesg -c >/dev/null
    fi
}
@AREAS@
leftover=$(ls /sys/fs/bpf; @TOOLS@/ip netns list)
[ -z "$leftover" ] || echo "shifter-vm: left behind after the tests: $leftover"
echo "@RESULT@$rc"
sync
poweroff -f
"#;

/// Directories of the source tree that tests read at run time (through
/// `CARGO_MANIFEST_DIR`): their files go into the image at the same paths.
const TEST_DATA_DIRS: &[&str] = &["tests/golden"];

fn test_data(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in TEST_DATA_DIRS {
        let dir = root.join(d);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for e in rd {
            let p = e
                .with_context(|| format!("reading {}", dir.display()))?
                .path();
            if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `args` quoted for sh and joined by spaces (the harness arguments on a guest's command line).
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn find_on_path(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// Copies `exe` to `dst` without debug info (`strip --strip-debug`; a plain copy when strip is
/// missing). Debug test binaries shrink about fivefold, which keeps the initramfs small.
fn strip_into(exe: &Path, dst: &Path) -> anyhow::Result<PathBuf> {
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dst)
        .arg(exe)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(exe, dst)
            .with_context(|| format!("copying {} to {}", exe.display(), dst.display()))?;
    }
    Ok(dst.to_owned())
}

/// The shared libraries (and the dynamic loader) the executables need, per `ldd`.
fn shared_libraries(exes: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for exe in exes {
        let out = Command::new("ldd")
            .arg(exe)
            .output()
            .context("running ldd (Debian: libc-bin)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // A static executable: "not a dynamic executable".
            continue;
        }
        for lib in parse_ldd(&text) {
            if !lib.exists() {
                bail!(
                    "{} needs {}, which does not exist",
                    exe.display(),
                    lib.display()
                );
            }
            libs.push(lib);
        }
        if text.contains("not found") {
            bail!("{} has unresolved libraries:\n{text}", exe.display());
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=>").map_or(l, |(_, r)| r.trim());
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007f43a4076000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f43a4042000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f43a3a1e000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f43a4078000)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn tests_that_cannot_run_in_the_vm_are_left_out_with_a_reason() {
        let built = || {
            ["deb_package", "packets", "smoke_load"]
                .map(|n| areas::Area {
                    name: n.to_owned(),
                    tests: vec![format!("{n}::t")],
                })
                .to_vec()
        };
        let (tests, excluded) = select_tests(built(), &[]).expect("all");
        let names: Vec<_> = tests.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["packets", "smoke_load"]);
        assert_eq!(excluded.len(), 1);
        assert_eq!(excluded[0].0, "deb_package");
        assert!(excluded[0].1.contains("dpkg"), "{}", excluded[0].1);

        let (tests, excluded) = select_tests(built(), &["packets".to_owned()]).expect("one");
        assert_eq!(tests.len(), 1);
        assert!(excluded.is_empty());

        let err = select_tests(built(), &["deb_package".to_owned()]).expect_err("excluded");
        assert!(err.to_string().contains("cannot run in the VM"), "{err}");
        assert!(select_tests(built(), &["nope".to_owned()]).is_err());
    }

    #[test]
    fn init_script_runs_every_test_and_reports() {
        let k = kernel::Kernel {
            label: "k".into(),
            bzimage: "/k".into(),
            modules: None,
            release: "6.1.0-56-amd64".into(),
            cpu: "max",
            accel: "tcg",
            append: "",
        };
        let areas = areas::parse_list("packets::a: test\npackets::b: test\nsmoke_load::s: test\n")
            .expect("list");
        let img = Image {
            work: Path::new("/w"),
            data: &[],
            kernel: &k,
            modules: &[],
            integration: Path::new("/t/integration-1"),
            areas: &areas,
            bins: &[],
            harness_args: &["it's".to_owned()],
            expect_mode: "legacy",
        };
        let s = img.init_script();
        // `@NAME@` left over (the script's own `"$@"` is not one).
        let placeholder = s.match_indices('@').find_map(|(i, _)| {
            let rest = &s[i + 1..];
            let word = &rest[..rest.find('@')?];
            let upper = word.chars().all(|c| c.is_ascii_uppercase() || c == '_');
            (!word.is_empty() && upper).then_some(word)
        });
        assert_eq!(placeholder, None, "unreplaced placeholder in:\n{s}");
        assert!(
            s.contains(
                "run_area packets '/t/integration-1' '--exact' 'packets::a' 'packets::b'\n\
                 run_area smoke_load '/t/integration-1' '--exact' 'smoke_load::s'\n"
            ),
            "{s}"
        );
        assert!(s.contains(r"--test-threads=1 'it'\''s'"));
        assert!(s.contains("SHIFTER_EXPECT_TC_MODE=legacy"));
        assert!(s.contains("SHIFTER_TEST_PATIENCE="));
        assert!(s.contains("echo \"SHIFTER-VM-RESULT: $rc\""));
    }
}
