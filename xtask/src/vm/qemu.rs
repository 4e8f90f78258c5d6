//! Booting the guest under qemu (TCG) and watching its console, with a time limit and a guard
//! that never leaves a qemu behind.

use anyhow::Context as _;
use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::RESULT_MARKER;

pub struct Boot<'a> {
    pub bzimage: &'a Path,
    pub initrd: &'a Path,
    /// A raw disk image for `/dev/vda` (the systemd guest's root filesystem).
    pub disk: Option<&'a Path>,
    /// The kernel command line.
    pub append: &'a str,
    /// Extra `-cpu` model (default `max`; 6.12 needs `Nehalem,-cx16` under TCG).
    pub cpu: &'a str,
    /// `-accel` value: `tcg` (one host thread per vCPU) or `tcg,thread=single`.
    pub accel: &'a str,
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
}

/// What the guest did.
pub struct Outcome {
    /// Every console line.
    pub lines: Vec<String>,
    /// The last lines, for the failure report.
    pub tail: VecDeque<String>,
    /// The number after `SHIFTER-VM-RESULT: `, if the guest got that far.
    pub result: Option<i32>,
    pub timed_out: bool,
    pub qemu_status: String,
    pub guest_time: Duration,
}

const TAIL_LINES: usize = 150;
/// How long qemu may take to exit after the result line (`poweroff -f`).
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

/// Kills qemu's whole process group unless it already exited; runs on every way out.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None))
            && let Ok(pid) = i32::try_from(self.0.id())
        {
            // SAFETY: signals the process group qemu leads (it was spawned with pgid = pid).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// The signal that asked us to stop (SIGINT, SIGTERM, SIGHUP), or 0.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
}

/// Whether a stop signal (SIGINT, SIGTERM, SIGHUP) arrived during a boot.
pub fn interrupted() -> bool {
    STOP_SIGNAL.load(Ordering::SeqCst) != 0
}

/// Turns SIGINT/SIGTERM/SIGHUP into a flag the watch loop checks, so the guard can kill qemu
/// (qemu is in its own process group and does not see a terminal's Ctrl-C).
fn catch_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

pub fn command(b: &Boot<'_>) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", b.accel, "-cpu", b.cpu])
        .args(["-m", &b.memory_mib.to_string(), "-smp", &b.cpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(b.bzimage)
        .arg("-initrd")
        .arg(b.initrd)
        .args(["-append", b.append]);
    if let Some(disk) = b.disk {
        c.arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", disk.display()));
    }
    c
}

pub fn boot(b: &Boot<'_>) -> anyhow::Result<Outcome> {
    catch_stop_signals();
    let mut c = command(b);
    eprintln!("$ {}", crate::cmd::render(&c));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it makes the kernel kill qemu if we die without
    // running the guard (SIGKILL of the xtask).
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut guard = Guard(c.spawn().context("starting qemu-system-x86_64")?);
    let stdout = guard.0.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let mut out = Outcome {
        lines: Vec::new(),
        tail: VecDeque::new(),
        result: None,
        timed_out: false,
        qemu_status: String::new(),
        guest_time: Duration::ZERO,
    };
    let mut deadline = started + b.timeout;
    let stdout = std::io::stdout();
    loop {
        let sig = STOP_SIGNAL.load(Ordering::SeqCst);
        if sig != 0 {
            drop(guard);
            anyhow::bail!("interrupted by signal {sig}; qemu killed");
        }
        let now = Instant::now();
        if now >= deadline {
            out.timed_out = out.result.is_none();
            break;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(200))) {
            Ok(line) => {
                {
                    let mut o = stdout.lock();
                    let _ = writeln!(o, "{line}");
                    let _ = o.flush();
                }
                if let Some(rc) = line
                    .trim()
                    .strip_prefix(RESULT_MARKER)
                    .and_then(|r| r.trim().parse().ok())
                {
                    out.result = Some(rc);
                    deadline = deadline.min(Instant::now() + POWEROFF_GRACE);
                }
                if out.tail.len() == TAIL_LINES {
                    out.tail.pop_front();
                }
                out.tail.push_back(line.clone());
                out.lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // qemu closed its stdout: it exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    out.guest_time = started.elapsed();
    // qemu closes its stdout as it exits; give it a moment to be reaped.
    let reap_by = Instant::now() + Duration::from_secs(5);
    out.qemu_status = loop {
        match guard.0.try_wait() {
            Ok(Some(st)) => break st.to_string(),
            Ok(None) if Instant::now() < reap_by && !out.timed_out => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => break "killed (still running at the end)".to_owned(),
            Err(e) => break format!("unknown ({e})"),
        }
    };
    drop(guard);
    Ok(out)
}
