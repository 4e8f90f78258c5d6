//! Raw `bpf(2)` calls the benchmarks need beyond aya (a no-op program of a given type, a
//! BPF_PROG_TEST_RUN that reports the kernel's duration for any program fd) and readers of
//! the `/proc` figures (CPU time, memory).

use std::{
    fs,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use anyhow::{Context as _, bail};

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;
pub const BPF_PROG_TYPE_SK_LOOKUP: u32 = 30;
/// `BPF_SK_LOOKUP`, the expected attach type an sk_lookup program is loaded with.
pub const BPF_SK_LOOKUP: u32 = 36;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix of the stated size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// One eBPF instruction, encoded.
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64
        | ((dst as u64 | (src as u64) << 4) << 8)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

/// Loads a program from raw instructions; the verifier's log is in the error.
pub fn load_insns(prog_type: u32, insns: &[u64], name: &str) -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let mut pname = [0u8; 16];
    for (d, s) in pname.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: pname,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel returned a new fd that we own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            bail!(
                "BPF_PROG_LOAD {name}: {e}: {}",
                String::from_utf8_lossy(&log[..end])
            )
        }
    }
}

/// Loads the smallest program of `prog_type`: `r0 = ret; exit`. This is the "no-op program
/// of the same type" baseline: the kernel's cost of running any program at that hook.
pub fn load_noop(prog_type: u32, ret: i32) -> anyhow::Result<OwnedFd> {
    load_noop_for(prog_type, ret, 0)
}

/// `load_noop` with the expected attach type some program types need (sk_lookup).
pub fn load_noop_for(prog_type: u32, ret: i32, attach_type: u32) -> anyhow::Result<OwnedFd> {
    // struct bpf_insn { u8 code; u8 dst:4, src:4; s16 off; s32 imm }, little endian.
    let mov_r0 = 0xb7u64 | (u64::from(ret as u32) << 32); // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
    let exit = 0x95u64; // BPF_JMP | BPF_EXIT
    let insns = [mov_r0, exit];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"bench_noop");
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: attach_type,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr).context("BPF_PROG_LOAD of the no-op program")?;
    // SAFETY: the kernel returned a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Result of one BPF_PROG_TEST_RUN.
pub struct RunOut {
    pub retval: u32,
    /// Average duration of one run in ns, as measured by the kernel around its loop.
    pub duration_ns: u32,
}

/// BPF_PROG_TEST_RUN on `prog_fd` with `data` repeated `repeat` times. The kernel runs the
/// program on one packet buffer: writes made by one repetition are seen by the next.
pub fn test_run(
    prog_fd: RawFd,
    data: &[u8],
    out: Option<&mut [u8]>,
    repeat: u32,
) -> anyhow::Result<RunOut> {
    let (out_ptr, out_len) = match out {
        Some(o) => (o.as_mut_ptr() as u64, o.len() as u32),
        None => (0, 0),
    };
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: data.len() as u32,
        data_size_out: out_len,
        data_in: data.as_ptr() as u64,
        data_out: out_ptr,
        repeat,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    Ok(RunOut {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}

/// BPF_PROG_TEST_RUN on `prog_fd` with a context and no packet (sk_lookup), once.
pub fn test_run_ctx(prog_fd: RawFd, ctx: &[u8]) -> anyhow::Result<RunOut> {
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        ctx_size_in: ctx.len() as u32,
        ctx_in: ctx.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN (context)")?;
    Ok(RunOut {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}

/// Field `name:` of `/proc/self/fdinfo/<fd>` (e.g. `memlock`, `max_entries`).
pub fn fdinfo_field(fd: RawFd, name: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/self/fdinfo/{fd}");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix(name).and_then(|r| r.strip_prefix(':')) {
            return v
                .trim()
                .parse()
                .with_context(|| format!("{path}: {name}: {v}"));
        }
    }
    bail!("{path} has no {name} field")
}

/// `VmRSS` of this process in bytes.
pub fn self_rss_bytes() -> anyhow::Result<u64> {
    let text = fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("/proc/self/status has no VmRSS")
}

/// CPU time of this process (all threads, also finished ones): user + system.
pub fn self_cpu() -> Duration {
    // SAFETY: plain out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Run time (ns) of every thread of every process in process group `pgid`, from
/// `/proc/<pid>/task/<tid>/schedstat` (precise, unlike the tick-based `stat`).
pub fn group_cpu(pgid: i32) -> Duration {
    let mut total = 0u64;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let pgrp: Option<i32> = rest.split_whitespace().nth(2).and_then(|s| s.parse().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("schedstat"))
                && let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            {
                total += ns;
            }
        }
    }
    Duration::from_nanos(total)
}

/// Time all CPUs spent in hard and soft interrupts (from `/proc/stat`, USER_HZ ticks).
pub fn irq_time() -> Duration {
    let Ok(text) = fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    // SAFETY: no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Some(cpu) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    // cpu user nice system idle iowait irq softirq steal ...
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let ticks = f.get(5).copied().unwrap_or(0) + f.get(6).copied().unwrap_or(0);
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}
