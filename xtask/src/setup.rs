//! `cargo xtask setup`: find out what this machine lacks to build and test shifter, and install it.
//!
//! The work is split in three parts so the decision can be unit-tested without touching the machine:
//! [`Facts::probe`] looks at the machine, [`plan`] (pure) turns facts into actions and unresolved needs,
//! and [`apply`] prints and runs the actions.
//!
//! Two ways exist to build the eBPF crate (see TOOLCHAIN.md and `shifter/build.rs`):
//! - Debian: the rustup toolchain `debian-bpf` links Debian's rustc 1.96, whose package
//!   `libstd-rust-web-dev-bpf` ships a prebuilt `core` for the BPF targets; bpf-linker is built
//!   against Debian's LLVM 22.
//! - nightly: rustup nightly with the `rust-src` component (`-Z build-std=core`).
//!
//! `SHIFTER_BPF_TOOLCHAIN` names another toolchain and overrides both.
//!
//! Over 700 lines, about 300 of them its unit tests: one plan of what is missing, and each install
//! step beside the check that decides it.

use crate::cmd;
use anyhow::bail;
use std::path::Path;
use std::process::Command;

/// The rustup toolchain name `shifter/build.rs` looks for first.
pub const DEBIAN_TOOLCHAIN: &str = "debian-bpf";
/// Debian packages for the Debian route: rustc with the prebuilt BPF `core`, and what bpf-linker
/// needs to build against LLVM 22.
pub const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// Debian packages the privileged tests and the demo use, with the command each one provides.
pub const RUNTIME_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("ethtool", "ethtool"),
    // `promtool check metrics` validates /metrics in tests/tests/metrics.rs; the same package's
    // `prometheus` server backs the query gates of tests/tests/analysis.rs.
    ("prometheus", "promtool"),
    // The fleet tests start a 3-member etcd on loopback (tests/tests/fleet_*.rs).
    ("etcd-server", "etcd"),
    ("etcd-client", "etcdctl"),
];
pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
pub const BPFFS: &str = "/sys/fs/bpf";

/// What a command needs from the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// bpffs mounted and the network tools the tests use.
    pub runtime: bool,
    /// clippy and rustfmt.
    pub lint: bool,
}

impl Scope {
    pub const BUILD: Self = Self {
        runtime: false,
        lint: false,
    };
    pub const RUN: Self = Self {
        runtime: true,
        lint: false,
    };
    pub const ALL: Self = Self {
        runtime: true,
        lint: true,
    };
}

/// What was observed on the machine. Every field is a plain observation, so tests can build any
/// machine by hand.
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent yes/no observations of the machine, not a state machine"
)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// `/etc/os-release` says `ID=debian`.
    pub debian: bool,
    pub root: bool,
    pub rustup: bool,
    /// Packages of [`BUILD_PACKAGES`] and [`RUNTIME_PACKAGES`] that dpkg does not list as installed
    /// (only looked at on Debian).
    pub missing_packages: Vec<String>,
    /// Commands of [`RUNTIME_PACKAGES`] not found on `PATH` (looked at everywhere).
    pub missing_tools: Vec<String>,
    pub bpf_linker: bool,
    /// The rustup toolchain `debian-bpf` exists and runs.
    pub debian_toolchain: bool,
    /// rustup nightly exists and has `rust-src`.
    pub nightly_rust_src: bool,
    /// `SHIFTER_BPF_TOOLCHAIN` and whether that toolchain runs.
    pub override_toolchain: Option<(String, bool)>,
    pub bpffs_mounted: bool,
    /// A cgroup v2 hierarchy is mounted somewhere (the `sock_ops` program attaches to its root).
    pub cgroup2_mounted: bool,
    pub clippy: bool,
    pub rustfmt: bool,
}

/// How the eBPF crate will be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Debian,
    Nightly,
    Override(String),
    /// Neither route is available and this machine cannot be set up automatically.
    None,
}

/// One command that fixes one missing thing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// What is missing, in words.
    pub what: String,
    /// Environment assignments, then program and arguments.
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub needs_root: bool,
}

impl Action {
    fn new(what: impl Into<String>, argv: &[&str], needs_root: bool) -> Self {
        Self {
            what: what.into(),
            env: Vec::new(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            needs_root,
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// Something missing that this tool cannot install here, with what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub what: String,
    pub how: Vec<String>,
}

/// The outcome of [`plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub route: Route,
    /// To run in this order.
    pub actions: Vec<Action>,
    pub unresolved: Vec<Unresolved>,
}

impl Plan {
    pub fn is_complete(&self) -> bool {
        self.actions.is_empty() && self.unresolved.is_empty()
    }
}

/// Decides the build route and what must be installed. Pure: depends on `facts` and `scope` only.
#[must_use]
pub fn plan(facts: &Facts, scope: Scope) -> Plan {
    let route = choose_route(facts);
    let mut plan = Plan {
        route,
        actions: Vec::new(),
        unresolved: Vec::new(),
    };
    if !facts.rustup {
        plan.unresolved.push(Unresolved {
            what: "rustup (the eBPF crate is built through a rustup toolchain)".into(),
            how: vec!["see https://rustup.rs".into()],
        });
    }
    plan_packages(facts, scope, &mut plan);
    plan_toolchain(facts, &mut plan);
    if scope.runtime && !facts.bpffs_mounted {
        plan.actions.push(Action::new(
            format!("bpffs at {BPFFS}"),
            &["mount", "-t", "bpf", "bpf", BPFFS],
            true,
        ));
    }
    if scope.runtime && !facts.cgroup2_mounted {
        // Not mounted by us: where and whether to mount it is the host's business (systemd
        // mounts it at /sys/fs/cgroup on every current distribution).
        plan.unresolved.push(Unresolved {
            what: "a cgroup v2 mount (shifter's sock_ops program attaches to the cgroup v2 root)"
                .into(),
            how: vec![
                "boot with the unified cgroup hierarchy (systemd's default), or: \
                 mount -t cgroup2 none /sys/fs/cgroup"
                    .into(),
            ],
        });
    }
    if scope.lint {
        let components: Vec<&str> = [("clippy", facts.clippy), ("rustfmt", facts.rustfmt)]
            .into_iter()
            .filter(|(_, present)| !present)
            .map(|(name, _)| name)
            .collect();
        if !components.is_empty() {
            let mut argv = vec!["rustup", "component", "add"];
            argv.extend(&components);
            plan.actions.push(Action::new(
                format!("rustup components {}", components.join(" ")),
                &argv,
                false,
            ));
        }
    }
    plan
}

fn choose_route(facts: &Facts) -> Route {
    if let Some((name, _)) = &facts.override_toolchain {
        Route::Override(name.clone())
    } else if facts.debian_toolchain || (facts.debian && facts.root) {
        Route::Debian
    } else if facts.nightly_rust_src {
        Route::Nightly
    } else if facts.debian {
        // Not root: show the Debian commands, to run with sudo.
        Route::Debian
    } else {
        Route::None
    }
}

/// Debian packages (one `apt-get update` + `apt-get install` for all), or the missing tools
/// elsewhere.
fn plan_packages(facts: &Facts, scope: Scope, plan: &mut Plan) {
    let wanted: Vec<&str> = facts
        .missing_packages
        .iter()
        .map(String::as_str)
        .filter(|p| {
            let build = BUILD_PACKAGES.contains(p) && plan.route == Route::Debian;
            let runtime = scope.runtime && RUNTIME_PACKAGES.iter().any(|(pkg, _)| pkg == p);
            build || runtime
        })
        .collect();
    if facts.debian && !wanted.is_empty() {
        plan.actions.push(Action::new(
            "package lists (before installing packages)",
            &["apt-get", "update"],
            true,
        ));
        let mut argv = vec!["apt-get", "install", "-y"];
        argv.extend(&wanted);
        let mut install = Action::new(format!("Debian packages {}", wanted.join(" ")), &argv, true);
        install
            .env
            .push(("DEBIAN_FRONTEND".into(), "noninteractive".into()));
        plan.actions.push(install);
    }
    if !facts.debian && scope.runtime {
        for (pkg, tool) in RUNTIME_PACKAGES {
            if facts.missing_tools.iter().any(|t| t == tool) {
                plan.unresolved.push(Unresolved {
                    what: format!("the command `{tool}`"),
                    how: vec![format!(
                        "install it with your package manager (Debian package: {pkg})"
                    )],
                });
            }
        }
    }
}

/// The toolchain and bpf-linker of the chosen route.
fn plan_toolchain(facts: &Facts, plan: &mut Plan) {
    match &plan.route {
        Route::Debian => {
            if !facts.debian_toolchain {
                plan.actions.push(Action::new(
                    format!("rustup toolchain {DEBIAN_TOOLCHAIN} (Debian rustc with BPF core)"),
                    &["rustup", "toolchain", "link", DEBIAN_TOOLCHAIN, "/usr"],
                    false,
                ));
            }
            if !facts.bpf_linker {
                let mut install = Action::new(
                    format!("bpf-linker {BPF_LINKER_VERSION} built against LLVM 22"),
                    &[
                        "cargo",
                        "install",
                        "bpf-linker",
                        "--locked",
                        "--version",
                        BPF_LINKER_VERSION,
                        "--no-default-features",
                        "--features",
                        "llvm-22",
                    ],
                    false,
                );
                install.env.push(("LLVM_PREFIX".into(), LLVM_PREFIX.into()));
                plan.actions.push(install);
            }
        }
        Route::Nightly | Route::Override(_) => {
            if let Some((name, false)) = &facts.override_toolchain {
                plan.unresolved.push(Unresolved {
                    what: format!("the toolchain SHIFTER_BPF_TOOLCHAIN={name} does not run"),
                    how: vec![format!(
                        "rustup toolchain install {name}, or unset SHIFTER_BPF_TOOLCHAIN"
                    )],
                });
            }
            if !facts.bpf_linker {
                // Outside Debian the LLVM to build against is the user's call: say it, don't guess.
                plan.unresolved.push(Unresolved {
                    what: "bpf-linker".into(),
                    how: vec!["cargo install bpf-linker --locked".into()],
                });
            }
        }
        Route::None => plan.unresolved.push(Unresolved {
            what: format!(
                "a toolchain that builds for bpfel-unknown-none: neither the rustup toolchain \
                 `{DEBIAN_TOOLCHAIN}` nor rustup nightly with rust-src"
            ),
            how: vec![
                "rustup toolchain install nightly --component rust-src".into(),
                if facts.bpf_linker {
                    "(bpf-linker is already installed)".into()
                } else {
                    "cargo install bpf-linker --locked".into()
                },
                format!(
                    "or on Debian as root: cargo xtask setup (uses {})",
                    BUILD_PACKAGES.join(" ")
                ),
            ],
        }),
    }
}

/// `/etc/os-release` names Debian itself (not a derivative: the package names are Debian's).
#[must_use]
pub fn is_debian(os_release: &str) -> bool {
    os_release.lines().any(|l| {
        l.strip_prefix("ID=")
            .is_some_and(|v| v.trim().trim_matches('"') == "debian")
    })
}

/// `/proc/mounts` has a bpf filesystem mounted at `mountpoint`.
#[must_use]
pub fn bpf_mounted_at(mounts: &str, mountpoint: &str) -> bool {
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, fstype) = (f.next(), f.next(), f.next());
        dir == Some(mountpoint) && fstype == Some("bpf")
    })
}

/// `/proc/mounts` has a cgroup v2 hierarchy mounted anywhere.
#[must_use]
pub fn cgroup2_mounted(mounts: &str) -> bool {
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
}

/// `rustup toolchain list` output contains the toolchain `name`, either as is (a linked toolchain)
/// or as `name-<host>` (an installed channel).
#[must_use]
pub fn toolchain_listed(list: &str, name: &str, host: &str) -> bool {
    let full = format!("{name}-{host}");
    list.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|t| t == name || t == full)
    })
}

fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

fn toolchain_sysroot(name: &str) -> Option<String> {
    cmd::probe("rustup", &["run", name, "rustc", "--print", "sysroot"]).map(|s| s.trim().to_owned())
}

fn package_installed(pkg: &str) -> bool {
    cmd::probe("dpkg-query", &["-W", "-f=${db:Status-Abbrev}", pkg])
        .is_some_and(|s| s.starts_with("ii"))
}

fn bpf_linker_installed() -> bool {
    if cmd::on_path("bpf-linker") {
        return true;
    }
    // A fresh shell may not have ~/.cargo/bin on PATH yet; cargo puts binaries there.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    cargo_home.is_some_and(|h| h.join("bin/bpf-linker").is_file())
}

impl Facts {
    /// Looks at this machine. Runs only read-only probes.
    #[must_use]
    pub fn probe() -> Self {
        let debian = std::fs::read_to_string("/etc/os-release").is_ok_and(|s| is_debian(&s));
        let mounts = std::fs::read_to_string("/proc/mounts").ok();
        let rustup_list = cmd::probe("rustup", &["toolchain", "list"]);
        let rustup = rustup_list.is_some();
        let host = host_triple();
        let listed = |name: &str| {
            rustup_list
                .as_deref()
                .is_some_and(|l| toolchain_listed(l, name, &host))
        };
        let debian_toolchain =
            listed(DEBIAN_TOOLCHAIN) && toolchain_sysroot(DEBIAN_TOOLCHAIN).is_some();
        let nightly_rust_src = listed("nightly")
            && toolchain_sysroot("nightly").is_some_and(|root| {
                Path::new(&root)
                    .join("lib/rustlib/src/rust/library/core")
                    .is_dir()
            });
        let override_toolchain = std::env::var("SHIFTER_BPF_TOOLCHAIN")
            .ok()
            .filter(|s| !s.is_empty())
            .map(|name| {
                let works = toolchain_sysroot(&name).is_some();
                (name, works)
            });
        let missing_packages = if debian {
            BUILD_PACKAGES
                .iter()
                .copied()
                .chain(RUNTIME_PACKAGES.iter().map(|(p, _)| *p))
                .filter(|p| !package_installed(p))
                .map(str::to_owned)
                .collect()
        } else {
            Vec::new()
        };
        let missing_tools = RUNTIME_PACKAGES
            .iter()
            .filter(|(_, tool)| !cmd::on_path(tool) && !Path::new("/usr/sbin").join(tool).is_file())
            .map(|(_, tool)| (*tool).to_owned())
            .collect();
        Self {
            debian,
            root: cmd::is_root(),
            rustup,
            missing_packages,
            missing_tools,
            bpf_linker: bpf_linker_installed(),
            debian_toolchain,
            nightly_rust_src,
            override_toolchain,
            bpffs_mounted: mounts.as_deref().is_some_and(|m| bpf_mounted_at(m, BPFFS)),
            cgroup2_mounted: mounts.as_deref().is_some_and(cgroup2_mounted),
            clippy: cmd::probe("cargo", &["clippy", "--version"]).is_some(),
            rustfmt: cmd::probe("cargo", &["fmt", "--version"]).is_some(),
        }
    }
}

fn describe(route: &Route) -> String {
    match route {
        Route::Debian => format!("Debian rustc via the rustup toolchain `{DEBIAN_TOOLCHAIN}`"),
        Route::Nightly => "rustup nightly with rust-src".into(),
        Route::Override(name) => format!("SHIFTER_BPF_TOOLCHAIN={name}"),
        Route::None => "none available".into(),
    }
}

/// Runs the plan, or explains exactly what is missing when it cannot be run here.
pub fn apply(plan: &Plan, root: bool) -> anyhow::Result<()> {
    let blocked_by_root = !root && plan.actions.iter().any(|a| a.needs_root);
    if !plan.unresolved.is_empty() || blocked_by_root {
        eprintln!("eBPF build route: {}", describe(&plan.route));
        eprintln!("This machine is missing:");
        for u in &plan.unresolved {
            eprintln!("  - {}", u.what);
            for how in &u.how {
                eprintln!("      {how}");
            }
        }
        for a in &plan.actions {
            eprintln!("  - {}", a.what);
            let sudo = if a.needs_root && !root { "sudo " } else { "" };
            eprintln!("      {sudo}{}", cmd::render(&a.command()));
        }
        if blocked_by_root {
            eprintln!("Run `cargo xtask setup` as root, or the commands above, then try again.");
        }
        bail!(
            "setup: {} missing item(s) cannot be installed automatically here",
            plan.unresolved.len() + plan.actions.len()
        );
    }
    eprintln!("eBPF build route: {}", describe(&plan.route));
    for a in &plan.actions {
        cmd::step(&format!("setup: {}", a.what));
        cmd::run(&format!("setup: {}", a.what), &mut a.command())?;
    }
    Ok(())
}

/// Checks the machine for `scope` and installs what is missing. Quiet when nothing is.
pub fn ensure(scope: Scope) -> anyhow::Result<()> {
    let facts = Facts::probe();
    let plan = plan(&facts, scope);
    if plan.is_complete() {
        return Ok(());
    }
    cmd::step("setup: something is missing");
    apply(&plan, facts.root)?;
    // Verify: an action that "succeeded" but left the thing missing must not pass silently.
    let after = self::plan(&Facts::probe(), scope);
    if !after.is_complete() {
        let left: Vec<_> = after
            .actions
            .iter()
            .map(|a| a.what.clone())
            .chain(after.unresolved.iter().map(|u| u.what.clone()))
            .collect();
        bail!("setup ran but these are still missing: {}", left.join("; "));
    }
    Ok(())
}

/// `cargo xtask setup`: everything, and a report of the state.
pub fn run() -> anyhow::Result<()> {
    let facts = Facts::probe();
    let plan = plan(&facts, Scope::ALL);
    if plan.is_complete() {
        eprintln!(
            "setup: nothing missing (eBPF build route: {})",
            describe(&plan.route)
        );
        return Ok(());
    }
    ensure(Scope::ALL)?;
    eprintln!("setup: done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_packages() -> Vec<String> {
        BUILD_PACKAGES
            .iter()
            .copied()
            .chain(RUNTIME_PACKAGES.iter().map(|(p, _)| *p))
            .map(str::to_owned)
            .collect()
    }

    /// A fresh Debian 12 machine as CI has it: rustup stable with clippy and rustfmt, nothing else.
    fn fresh_debian_root() -> Facts {
        Facts {
            debian: true,
            root: true,
            rustup: true,
            missing_packages: all_packages(),
            missing_tools: vec!["ethtool".into()],
            cgroup2_mounted: true,
            clippy: true,
            rustfmt: true,
            ..Facts::default()
        }
    }

    /// This project's dev machine after setup.
    fn ready_debian() -> Facts {
        Facts {
            debian: true,
            root: true,
            rustup: true,
            bpf_linker: true,
            debian_toolchain: true,
            bpffs_mounted: true,
            cgroup2_mounted: true,
            clippy: true,
            rustfmt: true,
            ..Facts::default()
        }
    }

    fn argvs(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .map(|a| cmd::render(&a.command()))
            .collect()
    }

    #[test]
    fn fresh_debian_root_installs_everything_in_order() {
        let plan = plan(&fresh_debian_root(), Scope::ALL);
        assert_eq!(plan.route, Route::Debian);
        assert!(plan.unresolved.is_empty(), "{plan:?}");
        assert_eq!(
            argvs(&plan),
            [
                "apt-get update",
                "DEBIAN_FRONTEND=noninteractive apt-get install -y rustc-web cargo-web \
                 libstd-rust-web-dev-bpf llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev \
                 iproute2 ethtool prometheus etcd-server etcd-client",
                "rustup toolchain link debian-bpf /usr",
                "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --locked --version 0.13.0 \
                 --no-default-features --features llvm-22",
                "mount -t bpf bpf /sys/fs/bpf",
            ]
        );
    }

    #[test]
    fn ready_machine_needs_nothing() {
        for scope in [Scope::BUILD, Scope::RUN, Scope::ALL] {
            let plan = plan(&ready_debian(), scope);
            assert!(plan.is_complete(), "{scope:?}: {plan:?}");
            assert_eq!(plan.route, Route::Debian);
        }
    }

    #[test]
    fn apt_update_only_when_something_is_installed() {
        let mut facts = ready_debian();
        facts.bpffs_mounted = false;
        let p = plan(&facts, Scope::ALL);
        assert_eq!(argvs(&p), ["mount -t bpf bpf /sys/fs/bpf"]);

        facts.missing_packages = vec!["ethtool".into()];
        let p = plan(&facts, Scope::ALL);
        assert_eq!(
            argvs(&p),
            [
                "apt-get update",
                "DEBIAN_FRONTEND=noninteractive apt-get install -y ethtool",
                "mount -t bpf bpf /sys/fs/bpf",
            ]
        );
    }

    #[test]
    fn build_scope_ignores_runtime_needs() {
        let mut facts = ready_debian();
        facts.bpffs_mounted = false;
        facts.missing_packages = vec!["iproute2".into()];
        facts.clippy = false;
        assert!(plan(&facts, Scope::BUILD).is_complete());
        let run = plan(&facts, Scope::RUN);
        assert_eq!(
            argvs(&run),
            [
                "apt-get update",
                "DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2",
                "mount -t bpf bpf /sys/fs/bpf",
            ]
        );
        let all = plan(&facts, Scope::ALL);
        assert_eq!(
            all.actions.last().unwrap().argv,
            ["rustup", "component", "add", "clippy"]
        );
    }

    #[test]
    fn only_missing_pieces_are_installed() {
        let mut facts = ready_debian();
        facts.bpf_linker = false;
        assert_eq!(
            argvs(&plan(&facts, Scope::BUILD)),
            [
                "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --locked --version 0.13.0 \
              --no-default-features --features llvm-22"
            ]
        );
        let mut facts = ready_debian();
        facts.debian_toolchain = false;
        assert_eq!(
            argvs(&plan(&facts, Scope::BUILD)),
            ["rustup toolchain link debian-bpf /usr"]
        );
    }

    #[test]
    fn debian_non_root_cannot_apply_but_lists_commands() {
        let mut facts = fresh_debian_root();
        facts.root = false;
        let plan = plan(&facts, Scope::ALL);
        assert_eq!(plan.route, Route::Debian);
        assert!(plan.actions.iter().any(|a| a.needs_root));
        assert!(apply(&plan, false).is_err());
    }

    #[test]
    fn non_root_user_level_actions_still_run() {
        // Linking the toolchain needs no root: a non-root user with the packages can do it.
        let mut facts = ready_debian();
        facts.root = false;
        facts.debian_toolchain = false;
        let plan = plan(&facts, Scope::BUILD);
        assert!(plan.actions.iter().all(|a| !a.needs_root));
        assert!(plan.unresolved.is_empty());
    }

    #[test]
    fn nightly_route_when_not_debian_root() {
        let facts = Facts {
            debian: false,
            rustup: true,
            nightly_rust_src: true,
            bpf_linker: true,
            bpffs_mounted: true,
            cgroup2_mounted: true,
            clippy: true,
            rustfmt: true,
            ..Facts::default()
        };
        let p = plan(&facts, Scope::ALL);
        assert_eq!(p.route, Route::Nightly);
        assert!(p.is_complete(), "{p:?}");

        let p = plan(
            &Facts {
                bpf_linker: false,
                ..facts.clone()
            },
            Scope::BUILD,
        );
        assert!(p.actions.is_empty());
        assert_eq!(p.unresolved.len(), 1);
        assert_eq!(p.unresolved[0].what, "bpf-linker");

        // On Debian without root, nightly is preferred over asking for sudo.
        let p = plan(
            &Facts {
                debian: true,
                ..facts
            },
            Scope::BUILD,
        );
        assert_eq!(p.route, Route::Nightly);
        assert!(p.is_complete());
    }

    #[test]
    fn debian_root_prefers_debian_route_over_nightly() {
        let mut facts = fresh_debian_root();
        facts.nightly_rust_src = true;
        assert_eq!(plan(&facts, Scope::BUILD).route, Route::Debian);
    }

    #[test]
    fn unknown_os_without_toolchain_is_unresolved() {
        let facts = Facts {
            rustup: true,
            missing_tools: vec!["ethtool".into()],
            ..Facts::default()
        };
        let p = plan(&facts, Scope::ALL);
        assert_eq!(p.route, Route::None);
        let whats: Vec<_> = p.unresolved.iter().map(|u| u.what.as_str()).collect();
        assert!(whats.iter().any(|w| w.contains("ethtool")), "{whats:?}");
        assert!(
            whats.iter().any(|w| w.contains("bpfel-unknown-none")),
            "{whats:?}"
        );
        // No apt on a non-Debian machine.
        assert!(p.actions.iter().all(|a| a.argv[0] != "apt-get"));
        assert!(apply(&p, true).is_err());
    }

    #[test]
    fn override_toolchain_must_run() {
        let mut facts = ready_debian();
        facts.override_toolchain = Some(("my-bpf".into(), false));
        let p = plan(&facts, Scope::BUILD);
        assert_eq!(p.route, Route::Override("my-bpf".into()));
        assert_eq!(p.unresolved.len(), 1);
        facts.override_toolchain = Some(("my-bpf".into(), true));
        assert!(plan(&facts, Scope::BUILD).is_complete());
    }

    #[test]
    fn missing_rustup_is_reported() {
        let mut facts = ready_debian();
        facts.rustup = false;
        let p = plan(&facts, Scope::BUILD);
        assert!(p.unresolved.iter().any(|u| u.what.starts_with("rustup")));
    }

    #[test]
    fn parses_os_release() {
        assert!(is_debian(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n"
        ));
        assert!(is_debian("ID=\"debian\"\n"));
        assert!(!is_debian("ID=ubuntu\nID_LIKE=debian\n"));
        assert!(!is_debian(""));
    }

    #[test]
    fn parses_proc_mounts() {
        let mounts = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n";
        assert!(bpf_mounted_at(mounts, "/sys/fs/bpf"));
        assert!(!bpf_mounted_at("sysfs /sys sysfs rw 0 0\n", "/sys/fs/bpf"));
        assert!(!bpf_mounted_at(
            "none /sys/fs/bpf tmpfs rw 0 0\n",
            "/sys/fs/bpf"
        ));
        assert!(!bpf_mounted_at(
            "bpf /sys/fs/bpf/x bpf rw 0 0\n",
            "/sys/fs/bpf"
        ));
    }

    #[test]
    fn missing_cgroup2_is_reported_not_mounted() {
        let mut facts = ready_debian();
        facts.cgroup2_mounted = false;
        assert!(plan(&facts, Scope::BUILD).is_complete());
        let p = plan(&facts, Scope::RUN);
        assert!(p.actions.is_empty(), "{p:?}");
        assert_eq!(p.unresolved.len(), 1);
        assert!(p.unresolved[0].what.contains("cgroup v2"));
    }

    #[test]
    fn parses_cgroup2_mount() {
        assert!(cgroup2_mounted(
            "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n"
        ));
        assert!(!cgroup2_mounted(
            "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\ntmpfs /sys/fs/cgroup tmpfs ro 0 0\n"
        ));
    }

    #[test]
    fn parses_toolchain_list() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-x86_64-unknown-linux-gnu\ndebian-bpf\n";
        let host = "x86_64-unknown-linux-gnu";
        assert!(toolchain_listed(list, "debian-bpf", host));
        assert!(toolchain_listed(list, "nightly", host));
        assert!(!toolchain_listed(list, "debian", host));
        assert!(!toolchain_listed(list, "beta", host));
        assert!(!toolchain_listed(
            list,
            "nightly",
            "aarch64-unknown-linux-gnu"
        ));
    }
}
