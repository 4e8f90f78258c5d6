//! The demo of the real daemon (`cargo xtask demo`): a client and a server namespace joined by
//! veth, blue and green TCP echo servers in the server namespace, a generated configuration,
//! and the `shifter daemon` binary started as a child process inside the server namespace.
//! Weights are changed through the CLI (`shifter set-weight`), 1000 new connections are sent
//! from the client namespace at each weight, and the observed split is printed with the
//! daemon's `status` and `events`. Then the daemon is stopped with SIGTERM (the data plane
//! keeps forwarding), `shifter detach` removes the programs and pins, and everything else is
//! removed too: also on Ctrl-C (SIGINT) and on panic (Drop guards).
//!
//! Exits non-zero when a connection fails or a split misses its weight by more than 5 points.
//! Needs root. The `shifter` binary is taken from the directory of this executable
//! (`cargo build --release -p shifter`, which `cargo xtask demo` runs first).

use std::{
    fs::File,
    net::{IpAddr, SocketAddr},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Output, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use shifter::DataPlane;
use shifter_tests::{
    daemon::{TempDir, answers},
    netns::{
        BLUE_ID, BLUE_PORT, EchoServer, GREEN_ID, GREEN_PORT, NetnsPair, SERVER_IF, SERVER_V4,
        SERVER_V6, SERVICE_PORT, error_chain, run_in, unique_name,
    },
    traffic,
};

const CONNECTIONS: usize = 1000;
/// Connections per batch; Ctrl-C is noticed between batches.
const BATCH: usize = 100;
const WEIGHTS_PERCENT: [u16; 6] = [0, 10, 25, 50, 90, 100];
/// With 1000 connections the binomial spread at 50 % is 1.6 points; 5 points is over 3 sigma.
const MAX_MISS_POINTS: f64 = 5.0;
/// Connections sent after the daemon stopped, to show the data plane still forwards.
const AFTER_STOP: usize = 200;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C sets a flag; the demo checks it between steps and cleans up through the same Drop
/// guards as a normal run.
fn install_sigint_handler() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Why the demo stopped early.
enum Stop {
    Interrupted,
    Failed(String),
}

type Step<T> = Result<T, Stop>;

fn check_interrupt() -> Step<()> {
    if interrupted() {
        Err(Stop::Interrupted)
    } else {
        Ok(())
    }
}

/// The `shifter` binary: next to this executable (`cargo build --release -p shifter`), or the
/// tests crate's copy `shifter-t` when that is what was built.
fn shifter_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = exe.parent().ok_or("the demo executable has no directory")?;
    for name in ["shifter", "shifter-t"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "no shifter binary in {}: run `cargo build --release -p shifter` first (cargo xtask demo does)",
        dir.display()
    ))
}

/// Everything the demo creates. `Drop` stops the daemon and detaches; the fields then drop
/// in order: servers, namespaces, temporary directory.
struct Demo {
    bin: PathBuf,
    pin_dir: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    daemon: Option<Child>,
    servers: Vec<EchoServer>,
    pair: NetnsPair,
    dir: TempDir,
}

impl Demo {
    fn new(bin: PathBuf) -> Self {
        let dir = TempDir::new("demo");
        let pair = NetnsPair::new("demo");
        let addrs = [IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)];
        let ns = pair.server.name.clone();
        let servers = vec![
            EchoServer::tcp(&ns, &addrs, BLUE_PORT, BLUE_ID),
            EchoServer::tcp(&ns, &addrs, GREEN_PORT, GREEN_ID),
        ];
        Self {
            bin,
            pin_dir: PathBuf::from(unique_name("/sys/fs/bpf/shifter", "demo")),
            socket: dir.0.join("shifter.sock"),
            config: dir.0.join("shifter.toml"),
            log: dir.0.join("daemon.log"),
            daemon: None,
            servers,
            pair,
            dir,
        }
    }

    fn server_ns(&self) -> &str {
        &self.pair.server.name
    }
    fn client_ns(&self) -> &str {
        &self.pair.client.name
    }

    fn config_text(&self) -> String {
        format!(
            "# Generated by shifter-demo.\n\
             [daemon]\n\
             socket = \"{socket}\"\n\
             state_dir = \"{state}\"\n\
             bpffs_dir = \"{pins}\"\n\
             flow_table_size = 16384\n\n\
             [[interfaces]]\n\
             name = \"{SERVER_IF}\"\n\
             hook = \"tc\"\n\n\
             [[services]]\n\
             name = \"web\"\n\
             protocol = \"tcp\"\n\
             port = {SERVICE_PORT}\n\
             blue_port = {BLUE_PORT}\n\
             green_port = {GREEN_PORT}\n\
             weight = 0\n\
             affinity = \"connection\"\n",
            socket = self.socket.display(),
            state = self.dir.0.join("state").display(),
            pins = self.pin_dir.display(),
        )
    }

    /// A command that runs inside the server namespace: setns(2) only, so the mounts
    /// (bpffs under /sys/fs/bpf) stay the host's, unlike `ip netns exec`.
    fn in_server_ns(&self, cmd: &mut Command) -> Step<File> {
        let path = format!("/var/run/netns/{}", self.server_ns());
        let ns = File::open(&path).map_err(|e| Stop::Failed(format!("open {path}: {e}")))?;
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the caller keeps `ns` open until after spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(ns)
    }

    fn write_config(&self) -> Step<()> {
        std::fs::write(&self.config, self.config_text())
            .map_err(|e| Stop::Failed(format!("writing {}: {e}", self.config.display())))
    }

    fn start_daemon(&mut self) -> Step<()> {
        let log = File::create(&self.log)
            .map_err(|e| Stop::Failed(format!("creating {}: {e}", self.log.display())))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("daemon")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: Ctrl-C reaches the demo, which stops the daemon itself.
            .process_group(0);
        let ns = self.in_server_ns(&mut cmd)?;
        println!(
            "$ nsenter --net=/var/run/netns/{} {} daemon --config {} 2>{} &",
            self.server_ns(),
            self.bin.display(),
            self.config.display(),
            self.log.display()
        );
        let child = cmd
            .spawn()
            .map_err(|e| Stop::Failed(format!("starting {}: {e}", self.bin.display())))?;
        drop(ns);
        let pid = child.id();
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            check_interrupt()?;
            if answers(&self.socket) {
                break;
            }
            if let Some(st) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.daemon = None;
                return Err(Stop::Failed(format!(
                    "the daemon exited during start-up ({st}); its log:\n{}",
                    self.log_text()
                )));
            }
            if Instant::now() > deadline {
                return Err(Stop::Failed(format!(
                    "the daemon did not answer on {} within 30 s; its log:\n{}",
                    self.socket.display(),
                    self.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "daemon running (pid {pid}), control socket {}\n",
            self.socket.display()
        );
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cli_output(&self, args: &[&str], server_ns: bool) -> Step<Output> {
        let prefix = if server_ns {
            format!("nsenter --net=/var/run/netns/{} ", self.server_ns())
        } else {
            String::new()
        };
        println!(
            "$ {prefix}shifter --socket {} {}",
            self.socket.display(),
            args.join(" ")
        );
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.env_remove("SHIFTER_SOCKET").stdin(Stdio::null());
        let ns = if server_ns {
            Some(self.in_server_ns(&mut cmd)?)
        } else {
            None
        };
        let out = cmd
            .output()
            .map_err(|e| Stop::Failed(format!("running {}: {e}", self.bin.display())))?;
        drop(ns);
        Ok(out)
    }

    /// Runs the CLI, prints what it printed, and fails the demo when it fails.
    fn cli(&self, args: &[&str]) -> Step<String> {
        self.cli_in(args, false)
    }

    fn cli_in(&self, args: &[&str], server_ns: bool) -> Step<String> {
        check_interrupt()?;
        let out = self.cli_output(args, server_ns)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Printed in the order the CLI usually writes them: a notice first, then the answer.
        eprint!("{stderr}");
        print!("{stdout}");
        if !out.status.success() {
            return Err(Stop::Failed(format!(
                "`shifter {}` failed ({})",
                args.join(" "),
                out.status
            )));
        }
        Ok(stdout)
    }

    /// `count` new connections from the client namespace to the service, in batches.
    fn connections(&self, count: usize) -> Step<traffic::Report> {
        let target = SocketAddr::new(SERVER_V4.into(), SERVICE_PORT);
        let mut all = traffic::Report::default();
        let mut left = count;
        while left > 0 {
            check_interrupt()?;
            let n = left.min(BATCH);
            let r = run_in(self.client_ns(), || {
                traffic::tcp_short(target, n, Duration::from_secs(3), Duration::from_secs(30))
            });
            all.outcomes.extend(r.outcomes);
            left -= n;
        }
        Ok(all)
    }

    /// SIGTERM to the daemon and a bounded wait; returns its exit status.
    fn stop_daemon(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.daemon.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("the daemon did not stop within 15 s after SIGTERM; killing it");
        let _ = child.kill();
        child.wait().ok()
    }

    /// Program names attached through tcx at the server veth's ingress and egress.
    fn attached_programs(&self) -> Vec<String> {
        run_in(self.server_ns(), || {
            [TcAttachType::Ingress, TcAttachType::Egress]
                .into_iter()
                .flat_map(|t| {
                    SchedClassifier::query_tcx(SERVER_IF, t)
                        .map(|(_, progs)| {
                            progs
                                .iter()
                                .map(|p| p.name_as_str().unwrap_or("?").to_owned())
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            eprintln!("cleanup: stopping the daemon");
            self.stop_daemon();
        }
        // Whatever `shifter detach` did not remove (an early stop, a panic).
        let pin_dir = self.pin_dir.clone();
        let left = run_in(self.server_ns(), || {
            DataPlane::detach_leftover(&pin_dir, SERVER_IF)
        });
        match left {
            Ok(true) => eprintln!("cleanup: detached the programs from {SERVER_IF}"),
            Ok(false) => {}
            Err(e) => eprintln!("cleanup: detaching: {}", error_chain(&e)),
        }
        if self.pin_dir.exists() {
            eprintln!("cleanup: removing {}", self.pin_dir.display());
            if let Err(e) = std::fs::remove_dir_all(&self.pin_dir) {
                eprintln!("cleanup: removing {}: {e}", self.pin_dir.display());
            }
        }
        for s in self.servers.drain(..) {
            s.stop();
        }
    }
}

struct Row {
    percent: u16,
    blue: usize,
    green: usize,
    share: f64,
    failures: usize,
}

impl Row {
    fn miss(&self) -> bool {
        (self.share - f64::from(self.percent)).abs() > MAX_MISS_POINTS
    }
    fn ok(&self) -> bool {
        self.failures == 0 && !self.miss()
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:>7} | {:>5} | {:>5} | {:>8} | {:>7} | {:>8}",
        "weight", "blue", "green", "green %", "off by", "failures"
    );
    println!(
        "{:-<8}+{:-<7}+{:-<7}+{:-<10}+{:-<9}+{:-<9}",
        "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "{:>6}% | {:>5} | {:>5} | {:>7.1}% | {:>7.1} | {:>8}{}",
            r.percent,
            r.blue,
            r.green,
            r.share,
            (r.share - f64::from(r.percent)).abs(),
            r.failures,
            if r.miss() {
                "  <- off by more than 5 points"
            } else if r.failures > 0 {
                "  <- failed connections"
            } else {
                ""
            }
        );
    }
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn run(demo: &mut Demo) -> Step<bool> {
    println!(
        "namespaces {} (client, {}) and {} (server, {SERVER_V4}); blue :{BLUE_PORT} and green :{GREEN_PORT} echo servers",
        demo.client_ns(),
        shifter_tests::netns::CLIENT_V4,
        demo.server_ns()
    );
    println!(
        "pins under {}, files under {}",
        demo.pin_dir.display(),
        demo.dir.0.display()
    );

    section("configuration");
    demo.write_config()?;
    println!("# {}", demo.config.display());
    print!("{}", demo.config_text());
    demo.cli(&["check-config", demo.config.to_str().unwrap_or("?")])?;

    section("the daemon");
    demo.start_daemon()?;
    demo.cli(&["status"])?;

    section(&format!(
        "{CONNECTIONS} new connections to tcp/{SERVICE_PORT} at each weight, set through the CLI"
    ));
    let mut rows = Vec::new();
    for percent in WEIGHTS_PERCENT {
        demo.cli(&["set-weight", "web", &percent.to_string()])?;
        let report = demo.connections(CONNECTIONS)?;
        if !report.failures().is_empty() {
            eprintln!("  {}", report.failure_summary());
        }
        let row = Row {
            percent,
            blue: report.count(BLUE_ID),
            green: report.count(GREEN_ID),
            share: report.green_percent(),
            failures: report.failures().len(),
        };
        println!(
            "  -> blue {}, green {}: {:.1}% green{}",
            row.blue,
            row.green,
            row.share,
            if row.failures > 0 {
                format!(", {} failed", row.failures)
            } else {
                String::new()
            }
        );
        rows.push(row);
    }

    section("what the daemon reports");
    demo.cli(&["status"])?;
    println!();
    demo.cli(&["status", "web"])?;
    println!();
    demo.cli(&["events"])?;
    println!("\nthe daemon's log lines for the weight changes:");
    for line in demo.log_text().lines().filter(|l| l.contains(": weight ")) {
        println!("  {line}");
    }

    section("observed split");
    print_table(&rows);
    let mut ok = rows.iter().all(Row::ok);

    section("SIGTERM: the daemon stops, the data plane keeps forwarding");
    check_interrupt()?;
    let st = demo.stop_daemon();
    println!(
        "daemon exited: {}",
        st.map_or_else(|| "unknown".to_owned(), |s| s.to_string())
    );
    if st.and_then(|s| s.code()) != Some(0) {
        eprintln!(
            "the daemon should exit 0 on SIGTERM; its log:\n{}",
            demo.log_text()
        );
        ok = false;
    }
    let after = demo.connections(AFTER_STOP)?;
    let last = *WEIGHTS_PERCENT.last().expect("weights");
    println!(
        "{AFTER_STOP} connections without the daemon: blue {}, green {}, failed {} (weight stays {last}%)",
        after.count(BLUE_ID),
        after.count(GREEN_ID),
        after.failures().len()
    );
    let after_share = after.green_percent();
    if !after.failures().is_empty() || (after_share - f64::from(last)).abs() > MAX_MISS_POINTS {
        eprintln!("  traffic without the daemon: {}", after.failure_summary());
        ok = false;
    }

    section("shifter detach");
    let config = demo.config.to_str().unwrap_or("?").to_owned();
    demo.cli_in(&["detach", "--config", &config], true)?;
    // The kernel frees an unpinned link after an RCU grace period: allow it a moment.
    let gone_by = Instant::now() + Duration::from_secs(3);
    let mut progs = demo.attached_programs();
    while !progs.is_empty() && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(50));
        progs = demo.attached_programs();
    }
    let pins_left = demo.pin_dir.exists();
    println!(
        "programs on {SERVER_IF} now: {}; pin directory {}",
        if progs.is_empty() {
            "none".to_owned()
        } else {
            progs.join(", ")
        },
        if pins_left { "still there" } else { "removed" }
    );
    if !progs.is_empty() || pins_left {
        eprintln!("shifter detach left programs or pins behind");
        ok = false;
    }
    Ok(ok)
}

fn main() -> ExitCode {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("shifter-demo needs root: it creates network namespaces and loads BPF programs");
        return ExitCode::from(1);
    }
    if !Path::new("/sys/fs/bpf").is_dir() {
        eprintln!("bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)");
        return ExitCode::from(1);
    }
    let bin = match shifter_bin() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    install_sigint_handler();
    let started = Instant::now();
    let mut demo = Demo::new(bin);
    let res = run(&mut demo);
    drop(demo);
    println!("\ncleaned up; {:.1} s", started.elapsed().as_secs_f64());
    match res {
        Ok(true) => {
            println!("demo passed");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("demo FAILED: see above");
            ExitCode::from(1)
        }
        Err(Stop::Interrupted) => {
            eprintln!("interrupted (Ctrl-C); everything removed");
            ExitCode::from(130)
        }
        Err(Stop::Failed(msg)) => {
            eprintln!("demo FAILED: {msg}");
            ExitCode::from(1)
        }
    }
}
