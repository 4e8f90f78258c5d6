//! The Debian package: `xtask deb` builds it (from the tests' own build of the binary),
//! `dpkg -i` installs it, the files and the `shifter` group are checked, the INSTALLED binary
//! runs the daemon outside systemd on a config derived from the INSTALLED conffile (pointed at
//! a temporary socket, state and pin directory and a test namespace interface), answers
//! `shifter status` and steers traffic, stops on SIGTERM, and `dpkg --purge` removes it all.
//! Needs root and dpkg; refuses to run when a `shifter` package is already installed.
//!
//! The xtask binary is the one `cargo build` (first step of `cargo xtask test`) leaves next
//! to the test executables.

use std::{
    fs::File,
    net::SocketAddr,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use shifter_tests::{
    daemon::{DaemonBed, TempDir, answers, shifter_bin},
    netns::{self, SERVER_IF, SERVER_V4, SERVICE_PORT, require_root},
    traffic,
};

const INSTALLED: &str = "/usr/bin/shifter";
const CONFFILE: &str = "/etc/shifter/shifter.toml";

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "shifter"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
}

fn group_gid(name: &str) -> Option<u32> {
    let out = Command::new("getent").args(["group", name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)?
        .trim()
        .parse()
        .ok()
}

/// Purges the package and removes the group (if this test created it), also on panic.
struct Installed {
    group_existed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "shifter"])
            .stdout(Stdio::null())
            .status();
        if !self.group_existed {
            let _ = Command::new("groupdel").arg("shifter").status();
        }
    }
}

/// The installed daemon in the bed's server namespace (setns only, like the other tests);
/// killed on drop.
struct Daemon(Child);

impl Daemon {
    fn spawn(bed: &DaemonBed, log: &Path) -> Self {
        let ns = File::open(format!("/var/run/netns/{}", bed.server_ns())).expect("open netns");
        let fd = ns.as_raw_fd();
        let mut cmd = Command::new(INSTALLED);
        cmd.args(["daemon", "--config"])
            .arg(&bed.config_path)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(File::create(log).expect("daemon log"));
        // SAFETY: setns is async-signal-safe; `ns` stays open until after spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn the installed daemon");
        drop(ns);
        Self(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the installed config should contain {from:?} once:\n{text}"
    );
    text.replacen(from, to, 1)
}

#[test]
fn deb_installs_runs_and_purges() {
    require_root();
    for tool in ["dpkg", "dpkg-deb", "dpkg-query", "groupdel"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is needed for the package test (Debian's dpkg and passwd)"
        );
    }
    assert!(
        !installed(),
        "a shifter package is already installed here; this test installs and purges its own \
         and will not touch it (dpkg --purge shifter first)"
    );
    let bin = shifter_bin();
    let xtask = bin.with_file_name("xtask");
    assert!(
        xtask.exists(),
        "{} is missing: `cargo build` (the first step of `cargo xtask test`) builds it",
        xtask.display()
    );

    // Build.
    let dir = TempDir::new("deb");
    let out = run(Command::new(&xtask)
        .args(["deb", "--binary"])
        .arg(&bin)
        .arg("--out")
        .arg(&dir.0));
    let deb = PathBuf::from(out.lines().last().unwrap_or("").trim());
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "xtask deb printed no .deb path: {out}"
    );
    let fields = run(Command::new("dpkg-deb").args(["-f"]).arg(&deb));
    assert!(fields.contains("Package: shifter"), "{fields}");
    assert!(fields.contains("Depends: libc6 (>= 2."), "{fields}");

    // Install.
    let guard = Installed {
        group_existed: group_gid("shifter").is_some(),
    };
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(installed(), "dpkg lists the package as installed");
    for f in [
        INSTALLED,
        CONFFILE,
        "/lib/systemd/system/shifter.service",
        "/usr/lib/sysusers.d/shifter.conf",
        "/usr/share/bash-completion/completions/shifter",
        "/usr/share/zsh/vendor-completions/_shifter",
        "/usr/share/fish/vendor_completions.d/shifter.fish",
        "/usr/share/man/man1/shifter.1.gz",
        "/usr/share/doc/shifter/copyright",
    ] {
        assert!(Path::new(f).is_file(), "{f} is not installed");
    }
    assert_eq!(
        std::fs::metadata(INSTALLED).expect("binary").mode() & 0o777,
        0o755
    );
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shifter.toml"),
    )
    .expect("examples/shifter.toml");
    let conf = std::fs::read_to_string(CONFFILE).expect("installed config");
    assert_eq!(conf, example, "the conffile is the example configuration");
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "shifter"]));
    assert!(
        conffiles.contains(CONFFILE),
        "{CONFFILE} is a conffile: {conffiles}"
    );
    let gid = group_gid("shifter").expect("the package created the shifter group");
    let version = run(Command::new(INSTALLED).arg("--version"));
    assert!(version.starts_with("shifter "), "{version}");
    run(Command::new(INSTALLED).args(["check-config", CONFFILE]));
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/shifter")
        .expect("bash completion");
    assert!(
        bash.contains("set-weight"),
        "bash completion knows the verbs"
    );

    // Run the installed daemon on the installed config, pointed at the test bed.
    let bed = DaemonBed::new("deb");
    let mut cfg = conf.clone();
    for (from, to) in [
        (
            "socket = \"/run/shifter/shifter.sock\"",
            format!("socket = \"{}\"", bed.socket.display()),
        ),
        (
            "# socket_group = \"shifter\"",
            "socket_group = \"shifter\"".to_owned(),
        ),
        (
            "state_dir = \"/var/lib/shifter\"",
            format!("state_dir = \"{}\"", bed.state_dir.display()),
        ),
        (
            "bpffs_dir = \"/sys/fs/bpf/shifter\"",
            format!("bpffs_dir = \"{}\"", bed.pin_dir.display()),
        ),
        (
            "flow_table_size = 262144",
            "flow_table_size = 4096".to_owned(),
        ),
        ("name = \"eth0\"", format!("name = \"{SERVER_IF}\"")),
    ] {
        cfg = edit(&cfg, from, &to);
    }
    std::fs::write(&bed.config_path, &cfg).expect("write the test config");
    let log = dir.0.join("daemon.log");
    let mut daemon = Daemon::spawn(&bed, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(&bed.socket) {
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            matches!(daemon.0.try_wait(), Ok(None)),
            "the installed daemon exited; its log:\n{}",
            log_text()
        );
        assert!(
            Instant::now() < deadline,
            "the installed daemon did not answer within 30 s; its log:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::metadata(&bed.socket).expect("socket").gid(),
        gid,
        "the control socket belongs to the package's group"
    );
    let cli = |args: &[&str]| {
        run(Command::new(INSTALLED)
            .arg("--socket")
            .arg(&bed.socket)
            .args(args))
    };
    let status = cli(&["status"]);
    assert!(
        status.contains("web") && status.contains("dns"),
        "status lists the example's services:\n{status}"
    );
    let target = SocketAddr::new(SERVER_V4.into(), SERVICE_PORT);
    let r = netns::run_in(bed.client_ns(), || {
        traffic::tcp_short(target, 10, Duration::from_secs(3), Duration::from_secs(30))
    });
    assert!(r.failures().is_empty(), "{}", r.failure_summary());
    let json: serde_json::Value =
        serde_json::from_str(&cli(&["status", "web", "--json"])).expect("status JSON");
    let new = json["blue"]["new_flows"].as_u64().unwrap_or(0)
        + json["green"]["new_flows"].as_u64().unwrap_or(0);
    assert_eq!(
        new, 10,
        "the installed daemon steered the 10 connections: {json}"
    );

    // Stop (SIGTERM: exit 0), then purge.
    // SAFETY: plain kill(2) on our child.
    assert_eq!(
        unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(st) = daemon.0.try_wait().expect("try_wait") {
            break st.code();
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    drop(daemon);
    drop(bed);

    run(Command::new("dpkg").args(["--purge", "shifter"]));
    assert!(!installed(), "purged");
    for f in [INSTALLED, CONFFILE, "/lib/systemd/system/shifter.service"] {
        assert!(!Path::new(f).exists(), "{f} is left after the purge");
    }
    let group_existed = guard.group_existed;
    drop(guard);
    if !group_existed {
        assert_eq!(
            group_gid("shifter"),
            None,
            "the group this test made is removed again"
        );
    }
}
