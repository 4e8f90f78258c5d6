//! Running packets through the loaded programs with BPF_PROG_TEST_RUN.

use std::{
    ops::{Deref, DerefMut},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp};
use shifter::{DataPlane, LoadOptions};
use shifter_common::{PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP_INGRESS};

/// TC_ACT_UNSPEC as the u32 TEST_RUN reports.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;
/// XDP_PASS.
pub const XDP_PASS: u32 = 2;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique bpffs pin directory for one test: `/sys/fs/bpf/shifter-t-<test>-<pid>-<n>`.
pub fn unique_pin_dir(test: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!(
        "/sys/fs/bpf/shifter-t-{test}-{}-{n}",
        std::process::id()
    ))
}

/// Fails with a clear message when the test cannot run here.
pub fn require_root() {
    // SAFETY: plain syscall without arguments.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads eBPF programs and needs root (CAP_BPF, CAP_NET_ADMIN); run it as root"
    );
    assert!(
        std::path::Path::new("/sys/fs/bpf").is_dir(),
        "bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)"
    );
}

/// A data plane loaded into its own pin directory; on drop it detaches everything it
/// attached and removes its pins, also when the test panics.
pub struct TestDataPlane {
    dp: Option<DataPlane>,
}

impl TestDataPlane {
    pub fn load(test: &str) -> Self {
        require_root();
        let dir = unique_pin_dir(test);
        let dp = DataPlane::load(&LoadOptions::new(&dir))
            .unwrap_or_else(|e| panic!("loading the data plane into {}: {e:?}", dir.display()));
        Self { dp: Some(dp) }
    }

    /// Loads a second, independent copy of the programs that adopts this one's pinned maps
    /// (for running packets from another thread). Dropping it removes nothing.
    pub fn adopt(&self) -> DataPlane {
        let dir = self.pin_dir().to_owned();
        DataPlane::load(&LoadOptions::new(&dir))
            .unwrap_or_else(|e| panic!("adopting the data plane in {}: {e:?}", dir.display()))
    }
}

impl Deref for TestDataPlane {
    type Target = DataPlane;
    fn deref(&self) -> &DataPlane {
        self.dp.as_ref().expect("data plane present until drop")
    }
}

impl DerefMut for TestDataPlane {
    fn deref_mut(&mut self) -> &mut DataPlane {
        self.dp.as_mut().expect("data plane present until drop")
    }
}

impl Drop for TestDataPlane {
    fn drop(&mut self) {
        if let Some(mut dp) = self.dp.take() {
            let dir = dp.pin_dir().to_owned();
            if let Err(e) = dp.detach_all() {
                eprintln!("cleanup: detaching {}: {e:?}", dir.display());
            }
            if let Err(e) = dp.remove_pins() {
                eprintln!("cleanup: removing pins {}: {e:?}", dir.display());
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

/// Which program a packet goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    TcIngress,
    TcEgress,
    XdpIngress,
}

impl Prog {
    /// The return value the program gives for every packet.
    pub const fn expected_retval(self) -> u32 {
        match self {
            Self::TcIngress | Self::TcEgress => TC_ACT_UNSPEC,
            Self::XdpIngress => XDP_PASS,
        }
    }
}

/// The result of one TEST_RUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub retval: u32,
    pub data: Vec<u8>,
}

/// Runs `input` through `prog` once. `Err` is the kernel refusing the run (for example a
/// frame shorter than an Ethernet header).
pub fn try_run(dp: &mut DataPlane, prog: Prog, input: &[u8]) -> Result<Output, ProgramError> {
    let mut out = vec![0u8; input.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(input),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    };
    let r = match prog {
        Prog::TcIngress | Prog::TcEgress => {
            let name = if prog == Prog::TcIngress {
                PROG_TC_INGRESS
            } else {
                PROG_TC_EGRESS
            };
            let p: &mut SchedClassifier = dp
                .program_mut(name)
                .unwrap_or_else(|| panic!("program {name} missing"))
                .try_into()
                .unwrap_or_else(|e| panic!("program {name} is not a classifier: {e}"));
            p.test_run(opts)?
        }
        Prog::XdpIngress => {
            let p: &mut Xdp = dp
                .program_mut(PROG_XDP_INGRESS)
                .unwrap_or_else(|| panic!("program {PROG_XDP_INGRESS} missing"))
                .try_into()
                .unwrap_or_else(|e| panic!("program {PROG_XDP_INGRESS} is not XDP: {e}"));
            p.test_run(opts)?
        }
    };
    out.truncate(r.data_size_out as usize);
    Ok(Output {
        retval: r.return_value,
        data: out,
    })
}

/// Runs `input` through `prog`, asserting the run works and returns the program's usual
/// verdict; returns the output bytes.
pub fn run(dp: &mut DataPlane, prog: Prog, input: &[u8]) -> Vec<u8> {
    let out = try_run(dp, prog, input)
        .unwrap_or_else(|e| panic!("TEST_RUN of {prog:?} with {} bytes: {e:?}", input.len()));
    assert_eq!(
        out.retval,
        prog.expected_retval(),
        "{prog:?} returned {:#x}",
        out.retval
    );
    out.data
}
