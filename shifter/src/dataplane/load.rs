//! Load, attach, pin, adopt and detach the data plane.

use std::{
    collections::BTreeMap,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{
        CgroupAttachMode, SchedClassifier, SockOps, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use shifter_common::{
    DEFAULT_FLOW_CAPACITY, FlowKey, FlowValue, GLOBAL_COARSE_CLOCK, MAP_COUNTERS, MAP_FLOWS,
    MAP_PORT_BITMAP, MAP_SERVICE_CONFIG, MAP_SERVICES, MAP_SOCKETS, MAP_USER_REMOVED,
    PROG_SOCK_OPS, PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP_INGRESS, ServiceKey,
};
use tracing::{info, warn};

use super::{
    attach::{self, Adoption, Hook, TcAttachment, TcMode},
    cfgword::ConfigWords,
    error::{Error, Result, map_err},
    socket::{ListenerRegistration, SocketDispatch},
};
use crate::{EBPF_OBJECT, paths::SOCK_OPS_PIN};

/// How to load the data plane.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// bpffs directory for maps and links, e.g. `/sys/fs/bpf/shifter`. Maps already pinned
    /// there are adopted (flows and counters survive), the rest are created and pinned.
    pub pin_dir: PathBuf,
    /// Flow-table capacity in entries.
    pub flow_capacity: u32,
    /// The eBPF object to load: this build's programs (`EBPF_OBJECT`) unless a test loads
    /// another build over the same pins.
    pub object: &'static [u8],
    /// How socket dispatch registers the listeners that predate its programs.
    pub listener_registration: ListenerRegistration,
}

impl LoadOptions {
    pub fn new(pin_dir: impl Into<PathBuf>) -> Self {
        Self {
            pin_dir: pin_dir.into(),
            flow_capacity: DEFAULT_FLOW_CAPACITY,
            object: EBPF_OBJECT,
            listener_registration: ListenerRegistration::default(),
        }
    }
}

enum Ingress {
    Tc(TcAttachment),
    /// Held so the XDP link lives exactly as long as the attachment.
    Xdp(#[expect(dead_code, reason = "owned for its lifetime, never read")] XdpLink),
}

struct Attachment {
    hook: Hook,
    tc_mode: TcMode,
    ingress_adoption: Adoption,
    egress_adoption: Adoption,
    ingress: Option<Ingress>,
    egress: Option<TcAttachment>,
}

/// What `attach` did, for the caller's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachInfo {
    pub hook: Hook,
    /// How the TC program(s) were attached (egress always; ingress too for `Hook::Tc`).
    pub tc_mode: TcMode,
    /// What the ingress attachment found in place (pinned links of an earlier run).
    pub ingress: Adoption,
    /// What the egress attachment found in place.
    pub egress: Adoption,
}

impl AttachInfo {
    /// Both hooks in one word (see `Adoption::combine`).
    pub fn adoption(&self) -> Adoption {
        Adoption::combine(&[self.ingress, self.egress])
    }
}

/// The loaded data plane: programs, maps and the attachments this process holds.
///
/// Dropping it leaves every attachment in place (pinned links stay pinned, legacy filters
/// stay in the kernel), as a stopping daemon must. `detach` and `detach_all` remove them.
pub struct DataPlane {
    pub(crate) ebpf: Ebpf,
    pin_dir: PathBuf,
    attachments: BTreeMap<String, Attachment>,
    /// The sock_ops link on the cgroup v2 root, attached with the first interface.
    sock_ops: Option<PinnedLink>,
    /// The mapped configuration words, for atomic updates. `None` only for a configuration
    /// map pinned by an older build that was not created mmapable.
    config_words: Option<ConfigWords>,
    /// Socket dispatch: whether the kernel took its programs, and its links.
    pub(crate) socket: SocketDispatch,
}

/// True when `dir` lives on a bpffs mount (pins anywhere else fail or vanish).
fn on_bpffs(dir: &Path) -> bool {
    const BPF_FS_MAGIC: u32 = 0xcafe_4a11;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as u32 == BPF_FS_MAGIC
}

/// The error of creating the pin directory, with the likely cause when no ancestor of it is
/// on bpffs: `ip netns exec` remounts /sys for the namespace, which hides /sys/fs/bpf (and
/// cgroup2) from the daemon, and the bare "No such file or directory" names neither.
fn explain_pin_dir_error(
    dir: &Path,
    e: std::io::Error,
) -> Box<dyn std::error::Error + Send + Sync> {
    if dir.ancestors().skip(1).any(on_bpffs) {
        return e.into();
    }
    format!(
        "{e}: no bpffs is mounted above it in this mount namespace (`ip netns exec` remounts \
         /sys, hiding /sys/fs/bpf and cgroup2: start the daemon in the host's mount namespace \
         and attach it to the namespace's interfaces with `nsenter --net=/run/netns/NAME`, or \
         mount bpffs first: `mount -t bpf bpf /sys/fs/bpf`)"
    )
    .into()
}

/// Whether the kernel has `bpf_ktime_get_coarse_ns` (Linux 5.11). Read from the kernel's
/// version: the helper is not one distributions backport, and asking the verifier would
/// mean loading every program twice on the kernels that lack it.
fn has_coarse_clock() -> bool {
    let coarse = aya::util::KernelVersion::current()
        .map_or(true, |v| v >= aya::util::KernelVersion::new(5, 11, 0));
    if !coarse {
        info!("kernel before 5.11: the programs read bpf_ktime_get_ns (no coarse clock)");
    }
    coarse
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` on unified hosts).
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_, path, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(path))
    })
}

impl DataPlane {
    /// Loads the programs and creates or adopts the pinned maps.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let created = !opts.pin_dir.exists();
        std::fs::create_dir_all(&opts.pin_dir).map_err(|e| Error::Pin {
            path: opts.pin_dir.clone(),
            source: explain_pin_dir_error(&opts.pin_dir, e),
        })?;
        if !on_bpffs(&opts.pin_dir) {
            if created {
                let _ = std::fs::remove_dir_all(&opts.pin_dir);
            }
            return Err(Error::Pin {
                path: opts.pin_dir.clone(),
                source: "not on a bpffs mount (mount -t bpf bpf /sys/fs/bpf)".into(),
            });
        }
        // Maps newer than the pinned ones (an upgrade) start empty: fill them from the
        // adopted services.
        let fresh = |name: &str| !opts.pin_dir.join(name).exists();
        let fresh_rewrite_ports = fresh(shifter_common::MAP_REWRITE_PORTS);
        let fresh_tcp_service_ports = fresh(shifter_common::MAP_TCP_SERVICE_PORTS);
        let loaded = Self::load_into(opts).and_then(|mut dp| {
            if fresh_rewrite_ports {
                dp.seed_rewrite_ports()?;
            }
            if fresh_tcp_service_ports {
                dp.seed_tcp_service_ports()?;
            }
            Ok(dp)
        });
        if loaded.is_err() && created {
            // Leave no empty pin directory behind; maps pinned before the failure go too.
            let _ = std::fs::remove_dir_all(&opts.pin_dir);
        }
        loaded
    }

    fn load_into(opts: &LoadOptions) -> Result<Self> {
        let load_err = |source| Error::Load {
            pin_dir: opts.pin_dir.clone(),
            source: Box::new(source),
        };
        let coarse_clock = u8::from(has_coarse_clock());
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_COARSE_CLOCK, &coarse_clock, true)
            .default_map_pin_directory(&opts.pin_dir)
            .map_max_entries(MAP_FLOWS, opts.flow_capacity)
            .map_max_entries(MAP_SOCKETS, opts.flow_capacity)
            .map_max_entries(shifter_common::MAP_SOCKET_DECISIONS, opts.flow_capacity)
            .map_max_entries(shifter_common::MAP_SOCKET_CONNECTIONS, opts.flow_capacity)
            .load(opts.object)
            .map_err(load_err)?;
        let socket = SocketDispatch::load(&mut ebpf, opts.listener_registration);
        for name in [PROG_TC_INGRESS, PROG_TC_EGRESS] {
            let prog: &mut SchedClassifier = program(&mut ebpf, name)?;
            prog.load().map_err(|source| Error::Program {
                name,
                source: Box::new(source),
            })?;
        }
        // The XDP program is loaded on first use (`xdp_program`).
        let sock_ops: &mut SockOps = program(&mut ebpf, PROG_SOCK_OPS)?;
        sock_ops.load().map_err(|source| Error::Program {
            name: PROG_SOCK_OPS,
            source: Box::new(source),
        })?;
        let config_words = match ConfigWords::open(&opts.pin_dir) {
            Ok(words) => Some(words),
            Err(e) => {
                warn!(
                    "{}: cannot map the configuration words ({e}); falling back to map \
                     updates, which are not guaranteed atomic. Detach and reload to recreate \
                     the maps.",
                    opts.pin_dir.display()
                );
                None
            }
        };
        Ok(Self {
            ebpf,
            pin_dir: opts.pin_dir.clone(),
            attachments: BTreeMap::new(),
            sock_ops: None,
            config_words,
            socket,
        })
    }

    /// Replaces the configuration word of `slot` so that a packet sees the old or the new
    /// configuration, never a mix (one atomic store into the mapped array).
    pub(crate) fn write_config_word(&mut self, slot: u32, word: u64) -> Result<()> {
        if let Some(words) = &self.config_words {
            words.store(slot, word);
            return Ok(());
        }
        self.config_map()?
            .set(slot, word, 0)
            .map_err(map_err(MAP_SERVICE_CONFIG))
    }

    /// The configuration word of `slot` (0: no service).
    pub(crate) fn read_config_word(&mut self, slot: u32) -> Result<u64> {
        if let Some(words) = &self.config_words {
            return Ok(words.load(slot));
        }
        self.config_map()?
            .get(&slot, 0)
            .map_err(map_err(MAP_SERVICE_CONFIG))
    }

    /// Attaches the sock_ops program to the cgroup v2 root (adopting a pinned link), so
    /// shifted connections are remembered per socket for egress.
    fn ensure_sock_ops(&mut self) -> Result<()> {
        if self.sock_ops.is_none() {
            self.sock_ops = Some(self.attach_cgroup_sock_ops(PROG_SOCK_OPS, SOCK_OPS_PIN)?);
        }
        Ok(())
    }

    /// Attaches the sock_ops program `name` to the cgroup v2 root with a link pinned at
    /// `pin_name`, or adopts the pinned link: our program is swapped in with a link update
    /// (cgroup links support it), the same build or not, so one copy of it stays loaded.
    pub(crate) fn attach_cgroup_sock_ops(
        &mut self,
        name: &'static str,
        pin_name: &str,
    ) -> Result<PinnedLink> {
        let pin = self.pin_dir.join(pin_name);
        let attach_err = |source: attach::BoxError| Error::Attach {
            iface: "cgroup2".into(),
            hook: "sock_ops".into(),
            program: name,
            source,
        };
        let prog: &mut SockOps = program(&mut self.ebpf, name)?;
        match PinnedLink::from_pin(&pin) {
            Ok(pinned) => {
                let tag = prog.info().map_err(|e| attach_err(e.into()))?.tag();
                let adoption = attach::adoption_of(&pin, tag).map_err(attach_err)?;
                let link = crate::sys::obj_get(&pin).map_err(|e| attach_err(e.into()))?;
                let prog_fd = prog.fd().map_err(|e| attach_err(e.into()))?;
                crate::sys::link_update(link.as_fd(), prog_fd.as_fd())
                    .map_err(|e| attach_err(e.into()))?;
                info!("{name}: {adoption}");
                Ok(pinned)
            }
            Err(_) => {
                let root = cgroup2_root()
                    .ok_or_else(|| attach_err("no cgroup2 mount in /proc/mounts".into()))?;
                let cgroup = std::fs::File::open(&root).map_err(|e| attach_err(e.into()))?;
                let id = prog
                    // aya passes the mode as bpf_link_create flags, which the kernel
                    // requires to be 0 for cgroup links (EINVAL otherwise); a link never
                    // excludes other programs anyway.
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .map_err(|e| attach_err(e.into()))?;
                let link: FdLink = prog
                    .take_link(id)
                    .map_err(|e| attach_err(e.into()))?
                    .try_into()
                    .map_err(|e: aya::programs::links::LinkError| attach_err(e.into()))?;
                pin_fd(link, &pin)
            }
        }
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    fn link_pin(&self, iface: &str, what: &str) -> PathBuf {
        self.pin_dir.join(format!("link-{iface}-{what}"))
    }

    /// Attaches ingress (per `hook`) and TC egress to `iface`, pinning the links. Links
    /// already pinned for this interface are adopted: their program is replaced atomically,
    /// so no second copy is attached.
    pub fn attach(&mut self, iface: &str, hook: Hook) -> Result<AttachInfo> {
        if self.attachments.contains_key(iface) {
            self.detach(iface)?;
        }
        self.ensure_sock_ops()?;
        let attach_err = |program: &'static str| {
            let iface = iface.to_owned();
            move |source| Error::Attach {
                iface,
                hook: hook.to_string(),
                program,
                source,
            }
        };
        let egress_pin = self.link_pin(iface, "egress");
        let ingress_pin = self.link_pin(iface, "ingress");
        let xdp_pin = self.link_pin(iface, "xdp");

        let prog: &mut SchedClassifier = program(&mut self.ebpf, PROG_TC_EGRESS)?;
        let (egress, tc_mode, egress_adoption) =
            attach::attach_tc(prog, iface, TcAttachType::Egress, &egress_pin)
                .map_err(attach_err(PROG_TC_EGRESS))?;
        let mut entry = Attachment {
            hook,
            tc_mode,
            ingress_adoption: Adoption::Fresh,
            egress_adoption,
            ingress: None,
            egress: Some(pin_tc(egress, &egress_pin)?),
        };
        let ingress = match hook {
            Hook::Tc => {
                let prog: &mut SchedClassifier = program(&mut self.ebpf, PROG_TC_INGRESS)?;
                attach::attach_tc(prog, iface, TcAttachType::Ingress, &ingress_pin)
                    .map_err(attach_err(PROG_TC_INGRESS))
                    .and_then(|(link, _, adoption)| {
                        Ok((Ingress::Tc(pin_tc(link, &ingress_pin)?), adoption))
                    })
            }
            Hook::Xdp | Hook::XdpGeneric => {
                let mode = if hook == Hook::Xdp {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                };
                let prog = self.xdp_program()?;
                attach::attach_xdp(prog, iface, mode, &xdp_pin)
                    .map_err(attach_err(PROG_XDP_INGRESS))
                    .and_then(|(link, adoption)| {
                        Ok((Ingress::Xdp(pin_xdp(link, &xdp_pin)?), adoption))
                    })
            }
        };
        match ingress {
            Ok((ingress, adoption)) => {
                entry.ingress = Some(ingress);
                entry.ingress_adoption = adoption;
            }
            Err(e) => {
                // Leave nothing half attached.
                remove_attachment(iface, entry, &self.pin_dir);
                return Err(e);
            }
        }
        let info = AttachInfo {
            hook,
            tc_mode,
            ingress: entry.ingress_adoption,
            egress: entry.egress_adoption,
        };
        info!(
            "{iface}: ingress={hook} ({}) egress=tc via {tc_mode} ({})",
            info.ingress, info.egress
        );
        self.attachments.insert(iface.to_owned(), entry);
        Ok(info)
    }

    /// Removes the programs from `iface` and their pins.
    pub fn detach(&mut self, iface: &str) -> Result<()> {
        let entry = self
            .attachments
            .remove(iface)
            .ok_or_else(|| Error::NotAttached {
                iface: iface.to_owned(),
            })?;
        remove_attachment(iface, entry, &self.pin_dir);
        info!("{iface}: detached");
        Ok(())
    }

    /// Detaches every interface this process attached.
    pub fn detach_all(&mut self) -> Result<()> {
        let ifaces: Vec<String> = self.attachments.keys().cloned().collect();
        for iface in ifaces {
            self.detach(&iface)?;
        }
        if let Some(link) = self.sock_ops.take() {
            // Unpinning drops the last reference: the program leaves the cgroup.
            let _ = link.unpin();
        }
        self.socket.detach();
        Ok(())
    }

    /// Removes what an earlier process left attached to `iface` under `pin_dir`: pinned
    /// tcx/XDP links (unpinning the last reference detaches them) and our legacy filters.
    /// Returns true when something was removed.
    pub fn detach_leftover(pin_dir: &Path, iface: &str) -> Result<bool> {
        let mut removed = false;
        for what in ["ingress", "egress", "xdp"] {
            let path = pin_dir.join(format!("link-{iface}-{what}"));
            match std::fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::Pin {
                        path,
                        source: e.into(),
                    });
                }
            }
        }
        for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
            if attach::detach_legacy(iface, attach_type).is_ok() {
                removed = true;
            }
        }
        Ok(removed)
    }

    /// Interfaces this process holds attachments for, with their hook and TC mode.
    pub fn attachments(&self) -> Vec<(String, AttachInfo)> {
        self.attachments
            .iter()
            .map(|(k, a)| {
                (
                    k.clone(),
                    AttachInfo {
                        hook: a.hook,
                        tc_mode: a.tc_mode,
                        ingress: a.ingress_adoption,
                        egress: a.egress_adoption,
                    },
                )
            })
            .collect()
    }

    /// Removes the pinned maps and the pin directory (after `detach_all`): the flow table and
    /// counters are gone for good.
    pub fn remove_pins(self) -> Result<()> {
        let dir = self.pin_dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| Error::Pin {
            path: dir,
            source: e.into(),
        })
    }

    /// The loaded program, for BPF_PROG_TEST_RUN in tests and benchmarks.
    pub fn program_mut(&mut self, name: &str) -> Option<&mut aya::programs::Program> {
        if name == PROG_XDP_INGRESS
            && let Err(e) = self.xdp_program()
        {
            warn!("{name}: {e}");
        }
        self.ebpf.program_mut(name)
    }

    /// The XDP program, loaded on first use: most hosts attach at TC only, and an XDP program
    /// loaded but attached nowhere is a stray copy in `bpftool prog show` for as long as the
    /// daemon runs.
    fn xdp_program(&mut self) -> Result<&mut Xdp> {
        let prog: &mut Xdp = program(&mut self.ebpf, PROG_XDP_INGRESS)?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| Error::Program {
                name: PROG_XDP_INGRESS,
                source: Box::new(source),
            })?;
        }
        Ok(prog)
    }

    pub(crate) fn services_map(&mut self) -> Result<HashMap<&mut MapData, ServiceKey, u32>> {
        typed_map(&mut self.ebpf, MAP_SERVICES)
    }
    pub(crate) fn config_map(&mut self) -> Result<Array<&mut MapData, u64>> {
        typed_map(&mut self.ebpf, MAP_SERVICE_CONFIG)
    }
    pub(crate) fn port_map(&mut self) -> Result<Array<&mut MapData, u64>> {
        typed_map(&mut self.ebpf, MAP_PORT_BITMAP)
    }
    pub(crate) fn rewrite_ports_map(&mut self) -> Result<Array<&mut MapData, u64>> {
        typed_map(&mut self.ebpf, shifter_common::MAP_REWRITE_PORTS)
    }
    pub(crate) fn tcp_service_ports_map(&mut self) -> Result<Array<&mut MapData, u32>> {
        typed_map(&mut self.ebpf, shifter_common::MAP_TCP_SERVICE_PORTS)
    }
    pub(crate) fn flows_map(&mut self) -> Result<HashMap<&mut MapData, FlowKey, FlowValue>> {
        typed_map(&mut self.ebpf, MAP_FLOWS)
    }
    pub(crate) fn user_removed_map(&mut self) -> Result<Array<&mut MapData, u64>> {
        typed_map(&mut self.ebpf, MAP_USER_REMOVED)
    }
    pub(crate) fn counters_map(
        &mut self,
    ) -> Result<PerCpuArray<&mut MapData, shifter_common::BackendCounters>> {
        typed_map(&mut self.ebpf, MAP_COUNTERS)
    }
    /// `SHIFTER_SKIP`, read by `dataplane::skips`.
    pub(crate) fn skips_map(&mut self) -> Result<PerCpuArray<&mut MapData, u64>> {
        typed_map(&mut self.ebpf, shifter_common::MAP_SKIPS)
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        // Keep the data plane running without us: legacy filters would be removed when
        // their link handle drops, so forget those handles. Pinned links stay pinned.
        for (_, a) in std::mem::take(&mut self.attachments) {
            for tc in [
                a.egress,
                a.ingress.and_then(|i| match i {
                    Ingress::Tc(t) => Some(t),
                    Ingress::Xdp(_) => None,
                }),
            ]
            .into_iter()
            .flatten()
            {
                if let TcAttachment::Legacy(link) = tc {
                    std::mem::forget(link);
                }
            }
        }
    }
}

fn remove_attachment(iface: &str, entry: Attachment, pin_dir: &Path) {
    // Dropping a tcx/XDP link after unpinning releases it; dropping a legacy link removes
    // the filter.
    for what in ["ingress", "egress", "xdp"] {
        let _ = std::fs::remove_file(pin_dir.join(format!("link-{iface}-{what}")));
    }
    drop(entry);
}

fn pin_tc(link: TcAttachment, path: &Path) -> Result<TcAttachment> {
    match link {
        TcAttachment::Tcx(link) => {
            let fd: FdLink = link
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| Error::Pin {
                    path: path.to_owned(),
                    source: e.into(),
                })?;
            let pinned = pin_fd(fd, path)?;
            let fd = FdLink::from(pinned);
            Ok(TcAttachment::Tcx(fd.try_into().map_err(
                |e: aya::programs::links::LinkError| Error::Pin {
                    path: path.to_owned(),
                    source: e.into(),
                },
            )?))
        }
        legacy @ TcAttachment::Legacy(_) => Ok(legacy),
    }
}

fn pin_xdp(link: XdpLink, path: &Path) -> Result<XdpLink> {
    let pin_err = |e: aya::programs::links::LinkError| Error::Pin {
        path: path.to_owned(),
        source: e.into(),
    };
    let fd: FdLink = link.try_into().map_err(pin_err)?;
    let pinned = pin_fd(fd, path)?;
    XdpLink::try_from(FdLink::from(pinned)).map_err(pin_err)
}

pub(crate) fn pin_fd(fd: FdLink, path: &Path) -> Result<PinnedLink> {
    if path.exists() {
        // Adopted link: already pinned at this path.
        return PinnedLink::from_pin(path).map_err(|e| Error::Pin {
            path: path.to_owned(),
            source: e.into(),
        });
    }
    fd.pin(path).map_err(|e| Error::Pin {
        path: path.to_owned(),
        source: e.into(),
    })
}

pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram { name })?
        .try_into()
        .map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })
}

pub(super) fn typed_map<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    ebpf.map_mut(name)
        .ok_or(Error::MissingMap { name })?
        .try_into()
        .map_err(map_err(name))
}
