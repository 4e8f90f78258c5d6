//! What the benchmarks create on the machine, each removed by `Drop` (also on panic and
//! error paths): network namespaces, veth pairs, pinned data planes, child processes.
//! Names carry `shb`, the pid and a counter.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use shifter::{DataPlane, Hook, LoadOptions};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `shb-<what>-<pid>-<n>`, short enough for interface and namespace names.
pub fn unique(what: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("shb-{what}-{}-{n}", std::process::id())
}

pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks need root (BPF programs, network namespaces, bpffs pins)");
    }
    if !Path::new("/sys/fs/bpf").exists() {
        bail!("bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)");
    }
    Ok(())
}

/// Runs `ip <args>`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("run `ip {}` (is iproute2 installed?)", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Moves the calling thread into namespace `ns`.
pub fn enter(ns: &str) -> anyhow::Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let f = File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: valid namespace fd; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns into {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` in a new thread inside namespace `ns`.
pub fn run_in<T: Send, F: FnOnce() -> anyhow::Result<T> + Send>(
    ns: &str,
    f: F,
) -> anyhow::Result<T> {
    thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Sets a sysctl of namespace `ns` (`/proc/sys` paths of `net.*` follow the thread's netns).
pub fn sysctl_in(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    run_in(ns, || {
        std::fs::write(&path, value).with_context(|| format!("sysctl {key}={value} in {ns}"))
    })
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(what: &str) -> anyhow::Result<Self> {
        let name = unique(what);
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub const CLIENT_IF: &str = "shb-c";
pub const SERVER_IF: &str = "shb-s";

/// A client and a server namespace joined by a veth pair (198.18.0.1/24 and 198.18.0.2/24),
/// tuned for many short connections (wide port range, TIME_WAIT reuse).
pub struct Pair {
    pub client: Netns,
    pub server: Netns,
}

impl Pair {
    pub fn new(what: &str) -> anyhow::Result<Self> {
        let pair = Self {
            client: Netns::new(&format!("{what}c"))?,
            server: Netns::new(&format!("{what}s"))?,
        };
        let (c, s) = (pair.client.name.as_str(), pair.server.name.as_str());
        ip(&[
            "-n", c, "link", "add", CLIENT_IF, "type", "veth", "peer", "name", SERVER_IF, "netns",
            s,
        ])?;
        for (ns, dev, addr) in [
            (c, CLIENT_IF, "198.18.0.1/24"),
            (s, SERVER_IF, "198.18.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            sysctl_in(ns, "net.ipv4.ip_local_port_range", "1024 65000")?;
            sysctl_in(ns, "net.ipv4.tcp_tw_reuse", "1")?;
            sysctl_in(ns, "net.core.somaxconn", "8192")?;
            sysctl_in(ns, "net.ipv4.tcp_max_syn_backlog", "8192")?;
        }
        pair.wait_carrier()?;
        Ok(pair)
    }

    fn wait_carrier(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for (ns, dev) in [
            (&self.client.name, CLIENT_IF),
            (&self.server.name, SERVER_IF),
        ] {
            loop {
                let out = Command::new("ip")
                    .args(["-n", ns, "link", "show", dev])
                    .output()?;
                if String::from_utf8_lossy(&out.stdout).contains("LOWER_UP") {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{dev} in {ns} has no carrier after 5 s");
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

/// A data plane loaded with pins under a unique bpffs directory. On drop it is detached
/// (from inside `ns`, where it was attached) and its pins are removed.
pub struct Plane {
    dp: Option<DataPlane>,
    pub pin_dir: PathBuf,
    attached_in: Option<String>,
}

impl Plane {
    pub fn load(what: &str, flow_capacity: Option<u32>) -> anyhow::Result<Self> {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", unique(what)));
        let mut opts = LoadOptions::new(&pin_dir);
        if let Some(c) = flow_capacity {
            opts.flow_capacity = c;
        }
        match DataPlane::load(&opts) {
            Ok(dp) => Ok(Self {
                dp: Some(dp),
                pin_dir,
                attached_in: None,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&pin_dir);
                Err(anyhow::Error::new(e).context("load the data plane"))
            }
        }
    }

    pub fn dp(&mut self) -> &mut DataPlane {
        self.dp.as_mut().expect("present until drop")
    }

    /// Attaches to `iface` in namespace `ns`.
    pub fn attach(&mut self, ns: &str, iface: &str, hook: Hook) -> anyhow::Result<()> {
        let dp = self.dp.as_mut().expect("present until drop");
        self.attached_in = Some(ns.to_owned());
        run_in(ns, || {
            dp.attach(iface, hook)
                .map(|_| ())
                .with_context(|| format!("attach {hook} to {iface} in {ns}"))
        })
    }

    /// Detaches everything (from inside the namespace it was attached in).
    pub fn detach(&mut self) -> anyhow::Result<()> {
        if let Some(ns) = self.attached_in.take() {
            let dp = self.dp.as_mut().expect("present until drop");
            run_in(&ns, || dp.detach_all().context("detach"))?;
        }
        Ok(())
    }

    /// Raw fd of program `name` (valid while `self` lives).
    pub fn prog_fd(&mut self, name: &str) -> anyhow::Result<i32> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let prog = self
            .dp()
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?;
        Ok(prog.fd()?.as_fd().as_raw_fd())
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("warning: {e:#}");
        }
        if let Some(dp) = self.dp.take() {
            let _ = dp.remove_pins();
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// A child process in its own process group; on drop the group gets SIGTERM, then SIGKILL
/// after a grace period, and the child is reaped.
pub struct Proc {
    child: Child,
    pub name: String,
    log: PathBuf,
}

impl Proc {
    /// Starts `program args` inside namespace `ns` (through `ip netns exec`), output to
    /// `log`.
    pub fn spawn_in(ns: &str, program: &str, args: &[&str], log: &Path) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {program}"))?;
        Ok(Self {
            child,
            name: program.to_owned(),
            log: log.to_owned(),
        })
    }

    /// Process group id (= the child's pid).
    pub fn pgid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Fails when the process has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited: {status}; its output:\n{}",
                self.name,
                tail.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = self.pgid();
        // SAFETY: signalling the process group we created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    // SAFETY: as above.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        // Workers of the group that outlived the leader.
        // SAFETY: as above; ESRCH when the group is gone.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(unique(what));
        std::fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs the Debian packages the comparison scenarios need when missing (as root, with
/// apt-get). Fails with what to install elsewhere.
pub fn ensure_packages(pkgs: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "the comparison scenarios need {} (not a Debian system: install them yourself)",
            missing.join(" ")
        );
    }
    eprintln!(
        "bench: installing Debian packages for the comparison scenarios: {}",
        missing.join(" ")
    );
    let install = |update: bool| -> anyhow::Result<bool> {
        if update {
            Command::new("apt-get")
                .args(["update", "-q"])
                .status()
                .context("apt-get update")?;
        }
        Ok(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("apt-get install")?
            .success())
    };
    if !install(false)? && !install(true)? {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}
