//! The real daemon under the `scale` load: its resident memory with 64 services and a full
//! flow table, and the time a weight change takes from the operator to the map, through the
//! CLI (a `shifter set-weight` process) and through the control API alone (one HTTP request on
//! the Unix socket, as `curl --unix-socket` sends it).
//!
//! The daemon runs in the host network namespace with no interface attached and its services
//! on rewrite dispatch (what fills a flow table): nothing is steered, only its maps, services
//! and control plane exist. `shifter detach` removes them.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use shifter_common::{MAP_SERVICE_CONFIG, ServiceConfig};

use crate::env::{self, TempDir};

/// Services configured in the daemon (the "64 services").
pub const SERVICES: u16 = 64;
/// How long the daemon may take to serve after start (it loads the programs and creates a
/// table of `capacity` entries).
const START_LIMIT: Duration = Duration::from_mins(1);

/// The shifter binary: `SHIFTER_BIN`, else the one next to this benchmark binary (both are
/// built by `cargo xtask bench`).
pub fn shifter_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SHIFTER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locate the benchmark binary")?;
    let bin = exe.with_file_name("shifter");
    if !bin.exists() {
        bail!(
            "no shifter binary at {} (run through `cargo xtask bench`, or set SHIFTER_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The port numbers of service `i`: (service, blue, green).
pub fn ports(i: u16) -> (u16, u16, u16) {
    (10_000 + i, 20_000 + 2 * i, 20_001 + 2 * i)
}

fn config_text(dir: &Path, pin_dir: &Path, capacity: u32) -> String {
    let mut s = format!(
        "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\nbpffs_dir = \"{}\"\n\
         flow_table_size = {capacity}\n",
        dir.join("shifter.sock").display(),
        dir.join("state").display(),
        pin_dir.display()
    );
    for i in 0..SERVICES {
        let (port, blue, green) = ports(i);
        let _ = write!(
            s,
            "\n[[services]]\nname = \"s{i}\"\nport = {port}\nblue_port = {blue}\n\
             green_port = {green}\nweight = 50\ndispatch = \"rewrite\"\n"
        );
    }
    s
}

/// A running daemon; on drop it is detached (programs, maps and pins removed) and stopped.
pub struct Daemon {
    bin: PathBuf,
    child: Child,
    pub pin_dir: PathBuf,
    pub socket: PathBuf,
    dir: TempDir,
}

impl Daemon {
    /// Starts `shifter daemon` with 64 services and a flow table of `capacity` entries and
    /// waits until its control socket answers.
    pub fn start(capacity: u32) -> anyhow::Result<Self> {
        let bin = shifter_bin()?;
        let dir = TempDir::new("daemon")?;
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(env::unique("daemon"));
        let config = dir.0.join("shifter.toml");
        std::fs::write(&config, config_text(&dir.0, &pin_dir, capacity))
            .context("write the daemon configuration")?;
        let log = std::fs::File::create(dir.0.join("daemon.log"))?;
        let child = Command::new(&bin)
            .args(["daemon", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {} daemon", bin.display()))?;
        let mut d = Self {
            bin,
            child,
            pin_dir,
            socket: dir.0.join("shifter.sock"),
            dir,
        };
        let t = Instant::now();
        while api_request(&d.socket, "GET", "/v1/status", "").is_err() {
            if let Some(status) = d.child.try_wait()? {
                bail!("the daemon exited ({status}):\n{}", d.log_tail());
            }
            if t.elapsed() > START_LIMIT {
                bail!(
                    "the daemon did not serve within {START_LIMIT:?}:\n{}",
                    d.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.0.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// `VmRSS` and `VmHWM` (peak) of the daemon process, in bytes.
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .with_context(|| format!("{path} has no {name}"))?;
            Ok(line.trim().trim_end_matches("kB").trim().parse::<u64>()? * 1024)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Runs the CLI against this daemon; fails with its stderr.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .with_context(|| format!("run shifter {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "shifter {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The weight in the kernel's configuration word of `slot`, read from the pinned map.
    pub fn map_weight(&self, slot: u32) -> anyhow::Result<u16> {
        let m = aya::maps::MapData::from_pin(self.pin_dir.join(MAP_SERVICE_CONFIG))
            .context("open the pinned configuration array")?;
        let arr: aya::maps::Array<_, u64> = aya::maps::Array::try_from(aya::maps::Map::Array(m))?;
        let word = arr.get(&slot, 0)?;
        ServiceConfig::unpack(word)
            .map(|c| c.weight)
            .with_context(|| format!("slot {slot} holds no service"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Removes the pins and maps; the daemon stops after replying.
        let _ = self.cli(&["detach"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// One HTTP/1.1 request on the control socket (a fresh connection, as the CLI and curl make);
/// returns the body of a 2xx reply.
pub fn api_request(socket: &Path, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: shifter\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let status = reply.split(' ').nth(1).unwrap_or("");
    if !status.starts_with('2') {
        bail!(
            "{method} {path}: {}",
            reply.lines().next().unwrap_or("no reply")
        );
    }
    Ok(reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}
