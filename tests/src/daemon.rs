//! Helpers for the daemon tests: a namespace test bed with blue/green echo servers, a config
//! file, the daemon run in-process (`shifter::daemon::run_with`) or as a real process inside
//! the server namespace, the CLI and curl run as any uid, and readers of what the kernel
//! holds (pinned maps, the programs at the TC hooks: tcx or legacy clsact) that do not ask
//! the daemon.
//!
//! Everything is removed on drop, also on panic: daemon processes are killed, attachments
//! detached inside the namespace, pins and the temporary directory removed.
//!
//! Over 700 lines: the daemon test bed (config, in-process and real-process daemons, credentials,
//! the API client) that six areas share.

use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    io::Write as _,
    net::IpAddr,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, HashMap, Map, MapData},
    programs::{ProgramError, SchedClassifier, TcAttachType},
};
use shifter::{DataPlane, ServiceConfig};
use shifter_common::{FlowKey, FlowValue};

use crate::netns::{
    self, BLUE_ID, BLUE_PORT, EchoServer, GREEN_ID, GREEN_PORT, NetnsPair, SERVER_IF, SERVER_V4,
    SERVER_V6, error_chain, require_root, unique_name,
};

/// The shifter binary under test (same code as `shifter`; see tests/src/bin/shifter-t.rs),
/// next to the `deps` directory that holds the test executable.
pub fn shifter_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("shifter-t"))
        .expect("test executable lives in <target>/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: cargo builds it with the tests crate's integration tests",
        bin.display()
    );
    bin
}

/// Group allowed to change things in the test configs (`users` on Debian; numeric, so it
/// need not exist by name).
pub const TEST_GROUP: u32 = 100;
/// The unprivileged uid/gid used for clients outside the group.
pub const NOBODY: u32 = 65534;

/// Credentials for a child process.
#[derive(Clone, Debug)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Creds {
    pub fn nobody() -> Self {
        Self {
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![],
        }
    }
    /// nobody with the test group as primary group.
    pub fn member_primary() -> Self {
        Self {
            uid: NOBODY,
            gid: TEST_GROUP,
            groups: vec![],
        }
    }
    /// nobody with the test group as a supplementary group.
    pub fn member_supplementary() -> Self {
        Self {
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![TEST_GROUP],
        }
    }
}

fn apply_creds(cmd: &mut Command, creds: Option<Creds>) {
    if let Some(c) = creds {
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let groups: Vec<libc::gid_t> = c.groups.clone();
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setresgid(c.gid, c.gid, c.gid) != 0
                    || libc::setresuid(c.uid, c.uid, c.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// A temporary directory readable by everyone (unprivileged clients reach the socket).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(unique_name("shifter-t", name));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Namespaces, echo servers (blue, green, both families) and the files of one daemon.
/// Fields drop in order after `Drop::drop` detached and unpinned: servers, then the
/// namespaces, then the directory.
pub struct DaemonBed {
    pub name: String,
    pub pin_dir: PathBuf,
    pub socket: PathBuf,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub servers: Vec<EchoServer>,
    pub pair: NetnsPair,
    pub dir: TempDir,
}

impl DaemonBed {
    pub fn new(name: &str) -> Self {
        require_root();
        assert!(
            Path::new("/sys/fs/bpf").exists(),
            "bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)"
        );
        let dir = TempDir::new(name);
        let pair = NetnsPair::new(name);
        let addrs = [IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)];
        let ns = pair.server.name.clone();
        let servers = vec![
            EchoServer::tcp(&ns, &addrs, BLUE_PORT, BLUE_ID),
            EchoServer::tcp(&ns, &addrs, GREEN_PORT, GREEN_ID),
        ];
        let bed = Self {
            name: name.to_owned(),
            pin_dir: PathBuf::from(unique_name("/sys/fs/bpf/shifter-t", name)),
            socket: dir.0.join("shifter.sock"),
            config_path: dir.0.join("shifter.toml"),
            state_dir: dir.0.join("state"),
            servers,
            pair,
            dir,
        };
        bed.write_config(&web_service(0.0));
        bed
    }

    pub fn server_ns(&self) -> &str {
        &self.pair.server.name
    }
    pub fn client_ns(&self) -> &str {
        &self.pair.client.name
    }

    /// The daemon section and the server interface, followed by `services` (TOML).
    pub fn config_text(&self, services: &str) -> String {
        format!(
            "[daemon]\nsocket = \"{}\"\nsocket_group = {TEST_GROUP}\nsocket_mode = \"0666\"\n\
             state_dir = \"{}\"\nbpffs_dir = \"{}\"\nflow_table_size = 4096\n\n\
             [[interfaces]]\nname = \"{SERVER_IF}\"\nhook = \"tc\"\n\n{services}",
            self.socket.display(),
            self.state_dir.display(),
            self.pin_dir.display()
        )
    }

    pub fn write_config(&self, services: &str) {
        std::fs::write(&self.config_path, self.config_text(services)).expect("write config");
    }

    pub fn config(&self) -> shifter::config::Config {
        shifter::config::Config::load(&self.config_path)
            .unwrap_or_else(|e| panic!("test config is invalid: {}", e.problems().join("; ")))
    }

    /// Runs the CLI (as root, or with `creds`) against this bed's socket.
    pub fn cli(&self, args: &[&str], creds: Option<Creds>) -> Output {
        let mut cmd = Command::new(shifter_bin());
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.env_remove("SHIFTER_SOCKET");
        apply_creds(&mut cmd, creds);
        cmd.output()
            .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", shifter_bin().display()))
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args, None);
        assert!(
            out.status.success(),
            "shifter {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `shifter status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["status", "--json"])).expect("status --json is JSON")
    }

    /// One HTTP request with curl (as root or `creds`): (status code, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        creds: Option<Creds>,
    ) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(&self.socket)
        .args(["-X", method]);
        if body.is_some() {
            cmd.args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        cmd.arg(format!("http://shifter{path}"));
        apply_creds(&mut cmd, creds);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("curl is needed for the daemon tests (apt-get install curl)");
        {
            let mut stdin = child.stdin.take().expect("stdin");
            if let Some(b) = body {
                let _ = stdin.write_all(b);
            }
        }
        let out = child.wait_with_output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {method} {path}: no status ({}): {text}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, body.to_owned())
    }

    /// The service configurations in the pinned `SHIFTER_CFG` map (slot -> config), read
    /// from bpffs without asking the daemon.
    pub fn pinned_configs(&self) -> BTreeMap<u32, ServiceConfig> {
        let path = self.pin_dir.join(shifter_common::MAP_SERVICE_CONFIG);
        let md = MapData::from_pin(&path).unwrap_or_else(|e| {
            let listing: Vec<_> = std::fs::read_dir(&self.pin_dir)
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            panic!(
                "open pinned {}: {} (dir holds {listing:?})",
                path.display(),
                error_chain(&e)
            )
        });
        let arr: Array<MapData, u64> =
            Array::try_from(Map::Array(md)).expect("SHIFTER_CFG is an array of u64");
        let mut out = BTreeMap::new();
        for slot in 0..shifter_common::MAX_SERVICES {
            let w = arr.get(&slot, 0).expect("read SHIFTER_CFG");
            if let Some(cfg) = ServiceConfig::unpack(w) {
                out.insert(slot, cfg);
            }
        }
        out
    }

    /// The programs attached at ingress and egress of the server interface, asked from the
    /// kernel: tcx programs (when the kernel has tcx) and legacy cls_bpf filters (`tc -j filter
    /// show`), each with its kernel id and tag. Works on tcx kernels (>= 6.6) and on legacy
    /// clsact ones (6.1: the tcx query fails with EINVAL).
    pub fn programs(&self) -> HookPrograms {
        netns::run_in(self.server_ns(), || hook_programs(SERVER_IF))
    }
    /// The keys of the pinned flow table, read from bpffs without asking the daemon.
    pub fn pinned_flow_keys(&self) -> HashSet<FlowKey> {
        let path = self.pin_dir.join(shifter_common::MAP_FLOWS);
        let md = MapData::from_pin(&path)
            .unwrap_or_else(|e| panic!("open pinned {}: {}", path.display(), error_chain(&e)));
        let map: HashMap<MapData, FlowKey, FlowValue> =
            HashMap::try_from(Map::HashMap(md)).expect("the flow table is a hash map");
        map.keys()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("reading {}: {}", path.display(), error_chain(&e)))
    }
}

/// How TC programs are attached on this kernel, as the kernel answers a tcx query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcPath {
    /// tcx links (kernel >= 6.6).
    Tcx,
    /// clsact qdisc + cls_bpf filters (the kernel rejects the tcx attach type).
    Legacy,
}

impl std::fmt::Display for TcPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcx => "tcx",
            Self::Legacy => "legacy clsact",
        })
    }
}

/// One program attached at a TC hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedProgram {
    /// `ingress` or `egress`.
    pub hook: &'static str,
    pub via: TcPath,
    /// The kernel's program name (truncated to 15 characters).
    pub name: String,
    /// Changes whenever another program is attached (a link update, a replaced filter).
    pub id: u32,
    /// Changes with the build of the program.
    pub tag: u64,
}

/// What the kernel has at the TC hooks of one interface.
#[derive(Debug, PartialEq, Eq)]
pub struct HookPrograms {
    /// tcx when the kernel answered the tcx query, legacy when it rejected it.
    pub mode: TcPath,
    /// tcx programs and legacy bpf filters, ingress first.
    pub programs: Vec<AttachedProgram>,
    /// Filters that are not eBPF programs (never ours), as tc prints them.
    pub other_filters: Vec<String>,
}

/// Program name prefix per hook (names are truncated to 15 characters).
fn our_prefix(hook: &str) -> &'static str {
    if hook == "ingress" {
        "shifter_tc_ingr"
    } else {
        "shifter_tc_egre"
    }
}

impl HookPrograms {
    /// Exactly one shifter program per hook, attached the way this kernel attaches (tcx or
    /// legacy clsact), and nothing else at the hooks.
    pub fn assert_exactly_one(&self) {
        let ok = self.other_filters.is_empty()
            && ["ingress", "egress"].iter().all(|hook| {
                let at: Vec<_> = self.programs.iter().filter(|p| p.hook == *hook).collect();
                at.len() == 1 && at[0].via == self.mode && at[0].name.starts_with(our_prefix(hook))
            });
        assert!(
            ok,
            "want exactly one shifter program per hook attached via {}, the kernel has {self:?}",
            self.mode
        );
    }

    /// The one program per hook (ingress, egress), asserting there is exactly one.
    pub fn one_per_hook(&self) -> [AttachedProgram; 2] {
        self.assert_exactly_one();
        ["ingress", "egress"].map(|hook| {
            self.programs
                .iter()
                .find(|p| p.hook == hook)
                .cloned()
                .expect("asserted above")
        })
    }
}

/// Asks the kernel (in the current network namespace) what is attached at the TC hooks of
/// `iface`. The mode is probed: a tcx query that fails with EINVAL or EOPNOTSUPP means the
/// kernel has no tcx; any other error fails the test.
pub fn hook_programs(iface: &str) -> HookPrograms {
    let mut programs = Vec::new();
    let mut mode = TcPath::Tcx;
    for (hook, t) in [
        ("ingress", TcAttachType::Ingress),
        ("egress", TcAttachType::Egress),
    ] {
        match SchedClassifier::query_tcx(iface, t) {
            Ok((_, progs)) => programs.extend(progs.iter().map(|p| AttachedProgram {
                hook,
                via: TcPath::Tcx,
                name: p.name_as_str().unwrap_or("?").to_owned(),
                id: p.id(),
                tag: p.tag(),
            })),
            Err(ProgramError::SyscallError(e))
                if matches!(
                    e.io_error.raw_os_error(),
                    Some(libc::EINVAL | libc::EOPNOTSUPP)
                ) =>
            {
                mode = TcPath::Legacy;
            }
            Err(e) => panic!("tcx query of {iface} {hook}: {}", error_chain(&e)),
        }
    }
    let mut other_filters = Vec::new();
    for hook in ["ingress", "egress"] {
        let out = Command::new("tc")
            .args(["-j", "filter", "show", "dev", iface, hook])
            .output()
            .unwrap_or_else(|e| {
                panic!("tc (iproute2) is needed to list the legacy TC filters: {e}")
            });
        assert!(
            out.status.success(),
            "tc -j filter show dev {iface} {hook} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let (progs, others) = parse_tc_filters(hook, &String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|e| panic!("tc -j filter show dev {iface} {hook}: {e}"));
        programs.extend(progs);
        other_filters.extend(others);
    }
    programs.sort_by_key(|p| p.hook != "ingress");
    // `cargo xtask vm-test` says which path the guest kernel must take.
    if let Ok(expected) = std::env::var("SHIFTER_EXPECT_TC_MODE") {
        let probed = match mode {
            TcPath::Tcx => "tcx",
            TcPath::Legacy => "legacy",
        };
        assert_eq!(
            probed, expected,
            "the kernel's answer to a tcx query says {mode}, SHIFTER_EXPECT_TC_MODE says {expected}"
        );
    }
    HookPrograms {
        mode,
        programs,
        other_filters,
    }
}

/// The filters in `tc -j filter show` output: eBPF programs (kind `bpf` with a `prog`), and
/// a description of every other filter. tc lists each filter twice, once as a bare
/// priority/chain entry without `options` (skipped) and once with its options.
pub fn parse_tc_filters(
    hook: &'static str,
    json: &str,
) -> Result<(Vec<AttachedProgram>, Vec<String>), String> {
    let json = json.trim();
    if json.is_empty() {
        return Ok((vec![], vec![]));
    }
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON ({e}): {json}"))?;
    let entries = v
        .as_array()
        .ok_or_else(|| format!("not a JSON array: {json}"))?;
    let mut progs = Vec::new();
    let mut others = Vec::new();
    for f in entries {
        let Some(options) = f.get("options") else {
            continue;
        };
        match (f["kind"].as_str(), options.get("prog")) {
            (Some("bpf"), Some(p)) => {
                let id = p["id"]
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| format!("bpf filter without a program id: {f}"))?;
                let tag = p["tag"]
                    .as_str()
                    .and_then(|t| u64::from_str_radix(t, 16).ok())
                    .ok_or_else(|| format!("bpf filter without a program tag: {f}"))?;
                progs.push(AttachedProgram {
                    hook,
                    via: TcPath::Legacy,
                    name: p["name"].as_str().unwrap_or("?").to_owned(),
                    id,
                    tag,
                });
            }
            _ => others.push(f.to_string()),
        }
    }
    Ok((progs, others))
}

impl Drop for DaemonBed {
    fn drop(&mut self) {
        let pin_dir = self.pin_dir.clone();
        let res = netns::run_in(self.server_ns(), || {
            DataPlane::detach_leftover(&pin_dir, SERVER_IF)
        });
        if let Err(e) = res {
            eprintln!(
                "cleanup: detaching in {}: {}",
                self.server_ns(),
                error_chain(&e)
            );
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// The standard test service `web` (tcp 80 -> 8081 blue / 8082 green) at `percent`.
pub fn web_service(percent: f64) -> String {
    format!(
        "[[services]]\nname = \"web\"\nport = {}\nblue_port = {BLUE_PORT}\ngreen_port = {GREEN_PORT}\nweight = {percent}\n",
        netns::SERVICE_PORT
    )
}

/// `web_service` with `dispatch = "rewrite"`: for tests of what only the rewrite path has
/// (the flow table, packet counters, refusals seen as RSTs).
pub fn web_service_rewrite(percent: f64) -> String {
    format!("{}dispatch = \"rewrite\"\n", web_service(percent))
}

/// Whether the daemon answers `GET /v1/status` with 200 on `socket` (the socket is bound
/// before the data plane is loaded; requests wait until it serves).
pub fn answers(socket: &Path) -> bool {
    use std::io::Read as _;
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v1/status HTTP/1.0\r\nHost: t\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// Waits (bounded) until the daemon answers on `socket`; `alive` says whether it is still
/// starting (false: it ended, stop waiting).
fn wait_socket(socket: &Path, mut alive: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + crate::patient(Duration::from_secs(30));
    while Instant::now() < deadline {
        if answers(socket) {
            return true;
        }
        if !alive() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The daemon run in-process (`run_with`) on a thread inside the server namespace.
pub struct InProcess {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub reload: tokio::sync::mpsc::Sender<()>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl InProcess {
    pub fn start(bed: &DaemonBed) -> Self {
        let config = bed.config();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        let config_path = bed.config_path.clone();
        let thread = netns::spawn_in(bed.server_ns(), move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let opts = shifter::daemon::Options {
                config_path: Some(config_path),
                reload: Some(reload_rx),
            };
            rt.block_on(shifter::daemon::run_with(config, opts, async {
                let _ = rx.await;
            }))
            .map_err(|e| shifter::util::error_chain(&e))
        });
        let mut me = Self {
            shutdown: Some(tx),
            reload: reload_tx,
            thread: Some(thread),
        };
        let t = me.thread.as_ref().expect("thread");
        if !wait_socket(&bed.socket, || !t.is_finished()) {
            let res = me.thread.take().expect("thread").join();
            panic!("the in-process daemon did not start: {res:?}");
        }
        me
    }

    /// Stops the daemon like SIGTERM does and asserts it returned Ok.
    pub fn stop(mut self) {
        let res = self.finish();
        assert!(res.is_ok(), "daemon run() returned {res:?}");
    }

    fn finish(&mut self) -> Result<(), String> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("daemon thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The daemon as a real process (`shifter-t daemon --config ...`) inside the server
/// namespace (setns only: the bpffs mount stays the host's). Killed on drop.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    /// Starts the daemon and waits until it serves.
    pub fn start(bed: &DaemonBed) -> Self {
        let p = Self::spawn(bed);
        let mut p = p;
        let ok = wait_socket(&bed.socket, || matches!(p.child.try_wait(), Ok(None)));
        if !ok {
            let _ = p.child.kill();
            let _ = p.child.wait();
            panic!(
                "the daemon process did not start; its log:\n{}",
                p.log_text()
            );
        }
        p
    }

    /// Spawns the daemon without waiting.
    pub fn spawn(bed: &DaemonBed) -> Self {
        Self::spawn_bin(bed, &shifter_bin())
    }

    /// Starts `bin daemon` (another build of shifter) and waits until it serves.
    pub fn start_bin(bed: &DaemonBed, bin: &Path) -> Self {
        let mut p = Self::spawn_bin(bed, bin);
        let ok = wait_socket(&bed.socket, || matches!(p.child.try_wait(), Ok(None)));
        if !ok {
            let _ = p.child.kill();
            let _ = p.child.wait();
            panic!(
                "the daemon process did not start; its log:\n{}",
                p.log_text()
            );
        }
        p
    }

    /// Spawns `bin daemon` without waiting.
    pub fn spawn_bin(bed: &DaemonBed, bin: &Path) -> Self {
        let log = bed
            .dir
            .0
            .join(format!("daemon-{}.log", unique_name("run", &bed.name)));
        let logf = File::create(&log).expect("daemon log");
        let ns = File::open(format!("/var/run/netns/{}", bed.server_ns())).expect("open netns");
        let mut cmd = Command::new(bin);
        cmd.args(["daemon", "--config"])
            .arg(&bed.config_path)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(logf);
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; `ns` stays open until after spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn the daemon");
        drop(ns);
        Self { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our child.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.child.id(),
            std::io::Error::last_os_error()
        );
    }

    /// Waits (bounded) for the process to exit; returns its exit code (None: killed by a
    /// signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let limit = crate::patient(limit);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {limit:?}; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tc -j filter show dev d0 ingress` (iproute2 6.1) with shifter's legacy filter: a bare
    /// priority entry, then the filter with its program.
    const ONE_LEGACY: &str = r#"[{"protocol":"all","pref":21320,"kind":"bpf","chain":0},{"protocol":"all","pref":21320,"kind":"bpf","chain":0,"options":{"handle":"0x1","bpf_name":"shifter_tc_ingress","direct-action":true,"not_in_hw":true,"prog":{"id":3797,"name":"shifter_tc_ingr","tag":"9e5dbd7f86809e5f","jited":1}}}]"#;

    #[test]
    fn one_legacy_filter_is_one_program() {
        let (progs, others) = parse_tc_filters("ingress", ONE_LEGACY).expect("parses");
        assert_eq!(
            progs,
            [AttachedProgram {
                hook: "ingress",
                via: TcPath::Legacy,
                name: "shifter_tc_ingr".into(),
                id: 3797,
                tag: 0x9e5d_bd7f_8680_9e5f,
            }]
        );
        assert!(others.is_empty(), "{others:?}");
    }

    #[test]
    fn empty_output_and_other_filters() {
        assert_eq!(
            parse_tc_filters("egress", "").expect("empty"),
            (vec![], vec![])
        );
        assert_eq!(
            parse_tc_filters("egress", "[]\n").expect("[]"),
            (vec![], vec![])
        );
        let u32_filter = r#"[{"protocol":"ip","pref":1,"kind":"u32","chain":0},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800::800","order":2048}}]"#;
        let (progs, others) = parse_tc_filters("egress", u32_filter).expect("parses");
        assert!(progs.is_empty());
        assert_eq!(others.len(), 1, "{others:?}");
        assert!(parse_tc_filters("egress", "filter protocol all").is_err());
    }

    #[test]
    fn exactly_one_per_hook_is_mode_aware() {
        let prog = |hook, via, name: &str, id| AttachedProgram {
            hook,
            via,
            name: name.into(),
            id,
            tag: 1,
        };
        let legacy = HookPrograms {
            mode: TcPath::Legacy,
            programs: vec![
                prog("ingress", TcPath::Legacy, "shifter_tc_ingr", 1),
                prog("egress", TcPath::Legacy, "shifter_tc_egre", 2),
            ],
            other_filters: vec![],
        };
        assert_eq!(legacy.one_per_hook().map(|p| p.id), [1, 2]);
        let on_tcx_kernel = HookPrograms {
            mode: TcPath::Tcx,
            ..legacy
        };
        assert!(std::panic::catch_unwind(|| on_tcx_kernel.assert_exactly_one()).is_err());
        let twice = HookPrograms {
            mode: TcPath::Tcx,
            programs: vec![
                prog("ingress", TcPath::Tcx, "shifter_tc_ingr", 1),
                prog("ingress", TcPath::Tcx, "shifter_tc_ingr", 3),
                prog("egress", TcPath::Tcx, "shifter_tc_egre", 2),
            ],
            other_filters: vec![],
        };
        assert!(std::panic::catch_unwind(|| twice.assert_exactly_one()).is_err());
    }
}
