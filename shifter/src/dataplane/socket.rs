//! Socket dispatch: the sk_lookup program on the network namespace, the sock_ops program that
//! remembers backend listeners at `listen()`, and the registration of listeners that were
//! there before us. Registration copies each such socket out of a process that holds it
//! (`pidfd_getfd`, CAP_SYS_PTRACE), which takes every member of a reuseport group; what that
//! cannot take goes through the in-kernel program (`BPF_PROG_TEST_RUN` of
//! `shifter_register_listener` on a SYN addressed to the listener: no extra privilege, one
//! member per address), where the kernel accepts it: newer kernels (7.3 here) refuse sockmap
//! updates from TC programs.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, MapError, SkStorage, SockHash},
    programs::{
        SchedClassifier, SkLookup, SockOps,
        links::{FdLink, PinnedLink},
    },
};
use shifter_common::{
    Dispatch, LISTENER_MEMBERS, MAP_LISTENERS, MAP_NETNS, MAP_SOCKET_TAGS, NETNS_COOKIE,
    NETNS_DECISIONS, PROG_REGISTER_LISTENER, PROG_SK_LOOKUP, PROG_SOCK_LISTEN, PROG_TAG_LISTENER,
    SOCKET_TAG_LISTENER, listener_key, listener_port,
};
use tracing::{info, warn};

use super::{
    attach::{self, BoxError},
    error::{Error, Result},
    listeners::{self, Listener},
    load::{DataPlane, pin_fd, program, typed_map},
};
use crate::paths::{SK_LOOKUP_PIN, SOCK_LISTEN_PIN};

/// How socket dispatch remembers the backend listeners that were there before its programs
/// (those that listen later are remembered by sock_ops at `listen()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenerRegistration {
    /// Copy each socket from a process that holds it (`pidfd_getfd`, CAP_SYS_PTRACE): every
    /// member of a reuseport group; then the in-kernel program for what that could not take.
    #[default]
    Duplicate,
    /// The in-kernel program only: no extra privilege, one member per address, and only
    /// where the kernel lets a TC program update a sockmap.
    InKernel,
}

/// Socket dispatch on this kernel: the links this process holds, or why it cannot be used.
pub(crate) struct SocketDispatch {
    /// `Some(reason)` when the kernel refused the programs (or has no namespace cookie):
    /// socket-dispatched services then run as rewrite.
    pub(crate) unavailable: Option<String>,
    /// `Some(reason)` when the kernel refused the in-kernel registration program.
    pub(crate) in_kernel_registration_refused: Option<String>,
    /// `Some(reason)` when the kernel refused the in-kernel tagging program.
    tag_program_refused: Option<String>,
    registration: ListenerRegistration,
    /// Listeners (inodes) neither way could register: warned about once, not retried while
    /// they listen.
    unregistrable: BTreeSet<u64>,
    /// Why the last registration left listeners unregistered (`None`: it did not).
    problem: Option<String>,
    /// sk_lookup leaves decisions for sock_ops (listener tags are not cloned here).
    decisions: bool,
    sk_lookup: Option<PinnedLink>,
    listen: Option<PinnedLink>,
}

impl SocketDispatch {
    /// Loads the three programs; the outcome decides whether socket dispatch is available.
    /// Never fails the data plane: rewrite dispatch does not need any of this.
    pub(crate) fn load(ebpf: &mut Ebpf, registration: ListenerRegistration) -> Self {
        let unavailable = match crate::sys::netns_cookie() {
            Err(e) => Some(format!(
                "the kernel does not report a network namespace's cookie (SO_NETNS_COOKIE, \
                 Linux 5.14+): {e}"
            )),
            Ok(_) => load_dispatch_programs(ebpf).err(),
        };
        let mut in_kernel_registration_refused = None;
        let mut tag_program_refused = None;
        match &unavailable {
            None => {
                info!("socket dispatch available");
                in_kernel_registration_refused =
                    load_test_run_program(ebpf, PROG_REGISTER_LISTENER).err();
                tag_program_refused = load_test_run_program(ebpf, PROG_TAG_LISTENER).err();
                if let Some(reason) = &in_kernel_registration_refused {
                    info!(
                        "socket dispatch: this kernel refuses the in-kernel listener \
                         registration ({reason}); listeners that predate shifter are copied \
                         from their process (pidfd_getfd, CAP_SYS_PTRACE)"
                    );
                }
            }
            Some(reason) => {
                warn!("socket dispatch unavailable, TCP services use rewrite: {reason}")
            }
        }
        Self {
            unavailable,
            in_kernel_registration_refused,
            tag_program_refused,
            registration,
            unregistrable: BTreeSet::new(),
            problem: None,
            decisions: false,
            sk_lookup: None,
            listen: None,
        }
    }

    /// Unpins both links: the programs leave the namespace and the cgroup.
    pub(crate) fn detach(&mut self) {
        for link in [self.sk_lookup.take(), self.listen.take()]
            .into_iter()
            .flatten()
        {
            let _ = link.unpin();
        }
    }
}

/// One line for a refused program: the error's first line (what failed) and, from the
/// verifier log after it, the lines before its statistics ("processed N insns ..."), which
/// say why.
fn load_failure(name: &str, error: &str) -> String {
    let lines: Vec<&str> = error.lines().filter(|l| !l.trim().is_empty()).collect();
    let first = lines.first().copied().unwrap_or_default();
    let stats = lines
        .iter()
        .position(|l| l.starts_with("processed ") || l.starts_with("verification time "))
        .unwrap_or(lines.len());
    let why = &lines[stats.saturating_sub(2).max(1).min(stats)..stats];
    if why.is_empty() {
        format!("{name}: {first}")
    } else {
        format!("{name}: {first} ... {}", why.join(" | "))
    }
}

fn refusal(name: &str, e: &(dyn std::error::Error + 'static)) -> String {
    load_failure(name, &crate::util::error_chain(e))
}

fn load_dispatch_programs(ebpf: &mut Ebpf) -> std::result::Result<(), String> {
    let sk_lookup: &mut SkLookup =
        program(ebpf, PROG_SK_LOOKUP).map_err(|e| refusal(PROG_SK_LOOKUP, &e))?;
    sk_lookup.load().map_err(|e| refusal(PROG_SK_LOOKUP, &e))?;
    let listen: &mut SockOps =
        program(ebpf, PROG_SOCK_LISTEN).map_err(|e| refusal(PROG_SOCK_LISTEN, &e))?;
    listen.load().map_err(|e| refusal(PROG_SOCK_LISTEN, &e))
}

/// A TC program only ever run by `BPF_PROG_TEST_RUN` (registration, tagging).
fn load_test_run_program(ebpf: &mut Ebpf, name: &'static str) -> std::result::Result<(), String> {
    let prog: &mut SchedClassifier = program(ebpf, name).map_err(|e| refusal(name, &e))?;
    prog.load().map_err(|e| refusal(name, &e))
}

impl DataPlane {
    /// Why socket dispatch cannot be used on this kernel (`None`: it can).
    pub fn socket_dispatch_unavailable(&self) -> Option<&str> {
        self.socket.unavailable.as_deref()
    }

    /// Why the last registration of listeners left some unregistered (`None`: it did not,
    /// or none was needed).
    pub fn listener_registration_problem(&self) -> Option<&str> {
        self.socket.problem.as_deref()
    }

    /// Why this kernel refuses the in-kernel listener registration (`None`: it accepts it,
    /// or socket dispatch is unavailable altogether).
    pub fn in_kernel_registration_refused(&self) -> Option<&str> {
        self.socket.in_kernel_registration_refused.as_deref()
    }

    /// The dispatch a service asking for `wanted` gets here: socket falls back to rewrite
    /// where the kernel refused the programs.
    pub(crate) fn effective_dispatch(&self, wanted: Dispatch) -> Dispatch {
        match (wanted, &self.socket.unavailable) {
            (Dispatch::Socket, Some(reason)) => {
                warn!("socket dispatch requested but unavailable ({reason}): using rewrite");
                Dispatch::Rewrite
            }
            _ => wanted,
        }
    }

    /// Attaches the sk_lookup program to the calling thread's network namespace and the
    /// listener sock_ops to the cgroup v2 root, adopting pinned links (their programs are
    /// swapped for this process's copies, maps kept).
    pub(crate) fn ensure_socket_dispatch(&mut self) -> Result<()> {
        if self.socket.sk_lookup.is_some() {
            return Ok(());
        }
        if let Some(reason) = &self.socket.unavailable {
            return Err(Error::Attach {
                iface: "netns".into(),
                hook: "sk_lookup".into(),
                program: PROG_SK_LOOKUP,
                source: reason.clone().into(),
            });
        }
        // The namespace is the calling thread's, as for the sk_lookup link below.
        let cookie = crate::sys::netns_cookie().map_err(|e| Error::Attach {
            iface: "netns".into(),
            hook: "sk_lookup".into(),
            program: PROG_SOCK_LISTEN,
            source: e.into(),
        })?;
        self.set_netns_word(NETNS_COOKIE, cookie)?;
        let listen = self.attach_cgroup_sock_ops(PROG_SOCK_LISTEN, SOCK_LISTEN_PIN)?;
        self.socket.listen = Some(listen);
        self.choose_connection_accounting()?;
        let pin = self.pin_dir().join(SK_LOOKUP_PIN);
        let attach_err = |source: BoxError| Error::Attach {
            iface: "netns".into(),
            hook: "sk_lookup".into(),
            program: PROG_SK_LOOKUP,
            source,
        };
        let prog: &mut SkLookup = program(&mut self.ebpf, PROG_SK_LOOKUP)?;
        let link = match PinnedLink::from_pin(&pin) {
            Ok(pinned) => {
                let tag = prog.info().map_err(|e| attach_err(e.into()))?.tag();
                let adoption = attach::adoption_of(&pin, tag).map_err(attach_err)?;
                let link = crate::sys::obj_get(&pin).map_err(|e| attach_err(e.into()))?;
                let prog_fd = prog.fd().map_err(|e| attach_err(e.into()))?;
                crate::sys::link_update(link.as_fd(), prog_fd.as_fd())
                    .map_err(|e| attach_err(e.into()))?;
                info!("sk_lookup: {adoption}");
                pinned
            }
            Err(_) => {
                let netns = std::fs::File::open("/proc/thread-self/ns/net")
                    .map_err(|e| attach_err(e.into()))?;
                let id = prog.attach(&netns).map_err(|e| attach_err(e.into()))?;
                let link: FdLink = prog.take_link(id).map_err(|e| attach_err(e.into()))?.into();
                info!("sk_lookup: attached new");
                pin_fd(link, &pin)?
            }
        };
        self.socket.sk_lookup = Some(link);
        Ok(())
    }

    /// Probes whether this kernel clones a listener's socket storage onto the connections it
    /// accepts (what sock_ops counts connections by): a loopback listener of our own is
    /// tagged, connected to and accepted, and the accepted socket's tag read back. Where it
    /// is not cloned (7.3 here), sk_lookup leaves a decision per connection for sock_ops
    /// instead (`NETNS_DECISIONS`; an LRU insert per connection).
    fn choose_connection_accounting(&mut self) -> Result<()> {
        let cloned = match self.tag_cloning_probe() {
            Ok(cloned) => cloned,
            Err(e) => {
                warn!("socket dispatch: probing tag cloning failed ({e}); using decisions");
                false
            }
        };
        if !cloned {
            info!(
                "socket dispatch: this kernel does not clone socket storage onto accepted \
                 connections; sk_lookup leaves a decision per connection for sock_ops"
            );
        }
        self.use_socket_decisions(!cloned)
    }

    /// Makes sk_lookup leave (or stop leaving) a decision per connection for sock_ops, as
    /// it does on kernels that do not clone listener tags onto accepted connections; the
    /// probe at attach decides it, tests force it.
    pub fn use_socket_decisions(&mut self, on: bool) -> Result<()> {
        self.socket.decisions = on;
        self.set_netns_word(NETNS_DECISIONS, u64::from(on))
    }

    fn tag_cloning_probe(&mut self) -> std::result::Result<bool, String> {
        use std::net::{TcpListener, TcpStream};
        const PROBE: u32 = SOCKET_TAG_LISTENER | 0x5eed;
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| format!("loopback listener: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let mut tags: SkStorage<&mut MapData, u32> = self
            .ebpf
            .map_mut(MAP_SOCKET_TAGS)
            .ok_or_else(|| format!("no map {MAP_SOCKET_TAGS}"))?
            .try_into()
            .map_err(|e: MapError| e.to_string())?;
        if tags.insert(&listener, PROBE, 0).is_err() {
            // Userspace may not write socket storage here: the tagging program can.
            let prog: &mut SchedClassifier =
                program(&mut self.ebpf, PROG_TAG_LISTENER).map_err(|e| e.to_string())?;
            let fd = prog.fd().map_err(|e| e.to_string())?;
            let frame = syn_frame(addr.ip(), addr.port(), 1);
            if !matches!(crate::sys::prog_test_run(fd.as_fd(), &frame), Ok(1)) {
                return Err("cannot tag the probe listener".into());
            }
        }
        let _client = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let (accepted, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let tags: SkStorage<&mut MapData, u32> = self
            .ebpf
            .map_mut(MAP_SOCKET_TAGS)
            .ok_or_else(|| format!("no map {MAP_SOCKET_TAGS}"))?
            .try_into()
            .map_err(|e: MapError| e.to_string())?;
        Ok(tags
            .get(&accepted, 0)
            .is_ok_and(|tag| tag & SOCKET_TAG_LISTENER != 0))
    }

    /// Whether sk_lookup leaves a decision per connection for sock_ops (this kernel does not
    /// clone listener tags onto accepted connections).
    pub fn socket_decisions_used(&self) -> bool {
        self.socket.decisions
    }

    /// Takes over the socket dispatch an earlier process left (its pinned sk_lookup link) or
    /// that a socket-dispatched service in the maps needs: this process's programs are
    /// swapped into the links, and listeners without a place are registered. A service
    /// adopted unchanged is never set again, so a restart needs this call.
    pub fn adopt_socket_dispatch(&mut self) -> Result<()> {
        let pinned = self.pin_dir().join(SK_LOOKUP_PIN).exists();
        let needed = self
            .services()?
            .values()
            .any(|s| s.config.dispatch == Dispatch::Socket);
        if !(pinned || needed) || self.socket.unavailable.is_some() {
            return Ok(());
        }
        self.ensure_socket_dispatch()?;
        self.register_listeners()?;
        Ok(())
    }

    /// Remembered listeners per backend port.
    pub fn listener_counts(&mut self) -> Result<BTreeMap<u16, u32>> {
        count_listeners(self.listeners_map()?.keys())
    }

    /// Registers the listeners of the backends of socket-dispatched services that have none
    /// remembered (they listened before the programs were attached, or the one remembered
    /// member of a reuseport group closed while its siblings listen on). Returns how many
    /// were registered.
    pub fn register_listeners(&mut self) -> Result<u32> {
        if self.socket.unavailable.is_some() {
            return Ok(0);
        }
        let mut ports: Vec<u16> = self
            .services()?
            .values()
            .filter(|s| s.config.dispatch == Dispatch::Socket)
            .flat_map(|s| [s.config.blue_port, s.config.green_port])
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let counts = self.listener_counts()?;
        ports.retain(|p| !counts.contains_key(p));
        if ports.is_empty() {
            return Ok(0);
        }
        let found = listeners::tcp_listeners(&ports);
        let unregistrable = &mut self.socket.unregistrable;
        unregistrable.retain(|inode| found.iter().any(|l| l.inode == *inode));
        let mut pending: Vec<Listener> = found
            .into_iter()
            .filter(|l| !unregistrable.contains(&l.inode))
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        let mut registered = 0;
        let mut copy_refused = None;
        let mut noted = None;
        if self.socket.registration == ListenerRegistration::Duplicate {
            let inodes = pending.iter().map(|l| l.inode).collect();
            let copies = listeners::duplicate_sockets(&inodes);
            let mut problems = Vec::new();
            let done = self.remember_copies(&pending, &copies.taken, &mut problems)?;
            registered += done.len() as u32;
            pending.retain(|l| !done.contains(&l.inode));
            if !problems.is_empty() {
                noted = Some(problems.join("; "));
            }
            if let Some(e) = copies.refused {
                problems.push(format!("pidfd_getfd: {e}"));
            }
            copy_refused = Some(if problems.is_empty() {
                "no process of this host holds it".to_owned()
            } else {
                problems.join("; ")
            });
        }
        if pending.is_empty() {
            self.socket.problem = noted;
            return Ok(registered);
        }
        let in_kernel = match self.socket.in_kernel_registration_refused.clone() {
            Some(reason) => Err(format!("in-kernel registration refused: {reason}")),
            None => Ok(self.register_in_kernel(&pending)?),
        };
        match in_kernel {
            Ok(n) => {
                registered += n;
                self.socket.problem = noted;
            }
            Err(reason) => {
                let why = copy_refused.map_or(reason.clone(), |c| format!("{c}; {reason}"));
                self.socket.problem = Some(format!(
                    "{} listener(s) not registered: {why}",
                    pending.len()
                ));
                for l in pending {
                    warn!(
                        "socket dispatch: cannot register the listener on {}:{} ({why}); it \
                         gets no connection until it listens again",
                        l.addr, l.port
                    );
                    self.socket.unregistrable.insert(l.inode);
                }
            }
        }
        Ok(registered)
    }

    /// Tags each copied listening socket and remembers it in the first free place of its
    /// port. Tagged before it is in the map, so every connection it accepts is counted.
    /// Returns the inodes remembered; says why for the others in `problems`.
    fn remember_copies(
        &mut self,
        listeners: &[Listener],
        copies: &BTreeMap<u64, OwnedFd>,
        problems: &mut Vec<String>,
    ) -> Result<BTreeSet<u64>> {
        let mut tags: SkStorage<&mut MapData, u32> = typed_map(&mut self.ebpf, MAP_SOCKET_TAGS)?;
        let mut copied = Vec::new();
        let mut untagged = Vec::new();
        let mut tag_error = None;
        for l in listeners {
            let Some(fd) = copies.get(&l.inode) else {
                continue;
            };
            if let Err(e) = tags.insert(fd, SOCKET_TAG_LISTENER | u32::from(l.port), 0) {
                tag_error.get_or_insert_with(|| crate::util::error_chain(&e));
                untagged.push(*l);
            }
            copied.push((l, fd));
        }
        // Some kernels (7.3) refuse socket storage written from userspace (ENOMEM): the
        // tagging program does it from the kernel side. Before the listener is in the map.
        if let Some(e) = tag_error
            && let Err(why) = self.tag_in_kernel(&untagged)
            && !self.socket.decisions
        {
            problems.push(format!(
                "connections of {} listener(s) are served but not counted (open, closed, \
                     resets): tagging from userspace failed ({e}), in the kernel: {why}",
                untagged.len()
            ));
        }
        let mut map = self.listeners_map()?;
        let mut registered = BTreeSet::new();
        for (l, fd) in copied {
            match remember_socket(&mut map, l.port, fd) {
                Ok(true) => {
                    registered.insert(l.inode);
                    info!(
                        "socket dispatch: registered the listener on {}:{}",
                        l.addr, l.port
                    );
                }
                Ok(false) => problems.push(format!(
                    "no free place for {}:{} (all {} of its port taken)",
                    l.addr, l.port, LISTENER_MEMBERS
                )),
                Err(e) => problems.push(format!(
                    "the map refused the copy of {}:{}: {}",
                    l.addr,
                    l.port,
                    crate::util::error_chain(&e)
                )),
            }
        }
        Ok(registered)
    }

    /// Tags `listeners` with the tagging program, run on SYNs from several source ports per
    /// address so that each member of a reuseport group is chosen at least once (the kernel
    /// picks the member by a hash of the tuple).
    fn tag_in_kernel(&mut self, listeners: &[Listener]) -> std::result::Result<(), String> {
        if let Some(reason) = &self.socket.tag_program_refused {
            return Err(format!("program refused: {reason}"));
        }
        let prog: &mut SchedClassifier =
            program(&mut self.ebpf, PROG_TAG_LISTENER).map_err(|e| e.to_string())?;
        let fd = prog.fd().map_err(|e| e.to_string())?;
        let mut addrs: BTreeMap<(IpAddr, u16), u16> = BTreeMap::new();
        for l in listeners {
            *addrs.entry((l.addr, l.port)).or_default() += 1;
        }
        for ((addr, port), members) in addrs {
            let mut tagged = 0;
            for source_port in 1..=16 * members {
                match crate::sys::prog_test_run(fd.as_fd(), &syn_frame(addr, port, source_port)) {
                    Ok(1) => tagged += 1,
                    Ok(2) => {
                        return Err(format!(
                            "the kernel could not store the tag of {addr}:{port}"
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("bpf_prog_test_run: {e}")),
                }
            }
            if tagged == 0 {
                return Err(format!("no listener found on {addr}:{port}"));
            }
        }
        Ok(())
    }

    /// The in-kernel registration, once per listening address among `listeners`.
    fn register_in_kernel(&mut self, listeners: &[Listener]) -> Result<u32> {
        let mut addrs: Vec<(IpAddr, u16)> = listeners.iter().map(|l| (l.addr, l.port)).collect();
        addrs.dedup();
        let prog: &mut SchedClassifier = program(&mut self.ebpf, PROG_REGISTER_LISTENER)?;
        let fd = prog.fd().map_err(|e| Error::Program {
            name: PROG_REGISTER_LISTENER,
            source: Box::new(e),
        })?;
        let mut registered = 0;
        for (addr, port) in addrs {
            match crate::sys::prog_test_run(fd.as_fd(), &syn_frame(addr, port, 1)) {
                Ok(1) => {
                    registered += 1;
                    info!(
                        "socket dispatch: registered the listener on {addr}:{port} in the kernel"
                    );
                }
                Ok(2) => warn!(
                    "socket dispatch: no free place for the listener on {addr}:{port} \
                     (counted as listener_record_failed)"
                ),
                Ok(_) => {} // gone meanwhile, or another namespace's
                Err(io_error) => {
                    return Err(Error::Program {
                        name: PROG_REGISTER_LISTENER,
                        source: Box::new(aya::programs::ProgramError::SyscallError(
                            aya::sys::SyscallError {
                                call: "bpf_prog_test_run",
                                io_error,
                            },
                        )),
                    });
                }
            }
        }
        Ok(registered)
    }

    fn listeners_map(&mut self) -> Result<SockHash<&mut MapData, u32>> {
        typed_map(&mut self.ebpf, MAP_LISTENERS)
    }

    /// One word of `SHIFTER_NETNS` (`NETNS_COOKIE`, `NETNS_DECISIONS`).
    fn set_netns_word(&mut self, index: u32, value: u64) -> Result<()> {
        let mut netns: Array<&mut MapData, u64> = typed_map(&mut self.ebpf, MAP_NETNS)?;
        netns
            .set(index, value, 0)
            .map_err(super::error::map_err(MAP_NETNS))
    }
}

/// Listeners per backend port from the keys of `SHIFTER_LSN`.
pub(crate) fn count_listeners(
    keys: impl Iterator<Item = std::result::Result<u32, MapError>>,
) -> Result<BTreeMap<u16, u32>> {
    let mut counts = BTreeMap::new();
    for key in keys {
        let key = key.map_err(super::error::map_err(MAP_LISTENERS))?;
        *counts.entry(listener_port(key)).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Puts `socket` into the first free place of `port`; `false` when every place is taken.
fn remember_socket(
    map: &mut SockHash<&mut MapData, u32>,
    port: u16,
    socket: &OwnedFd,
) -> std::result::Result<bool, MapError> {
    const BPF_NOEXIST: u64 = 1;
    for member in 0..LISTENER_MEMBERS {
        match map.insert(listener_key(port, member), socket.as_raw_fd(), BPF_NOEXIST) {
            Ok(()) => return Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// An Ethernet frame with a TCP SYN from the listener's own address (`source_port`) to
/// (`addr`, `port`), padded to the length the registration and tagging programs read. Only
/// addresses and ports matter to them.
fn syn_frame(addr: IpAddr, port: u16, source_port: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    match addr {
        IpAddr::V4(a) => {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&40u16.to_be_bytes());
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&a.octets());
            ip[16..20].copy_from_slice(&a.octets());
            f.extend_from_slice(&ip);
        }
        IpAddr::V6(a) => {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&20u16.to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&a.octets());
            ip[24..40].copy_from_slice(&a.octets());
            f.extend_from_slice(&ip);
        }
    }
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&source_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    f.extend_from_slice(&tcp);
    f.resize(14 + 40 + 20, 0);
    f
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn registration_frames_carry_the_listener_tuple() {
        let f = syn_frame(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 8081, 1);
        assert_eq!(f.len(), 74);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&f[30..34], &[198, 18, 0, 2]); // destination
        assert_eq!(&f[36..38], &8081u16.to_be_bytes());
        let f = syn_frame(IpAddr::V6(Ipv6Addr::LOCALHOST), 8082, 1);
        assert_eq!(f.len(), 74);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14 + 39], 1); // ::1 as destination
        assert_eq!(&f[56..58], &8082u16.to_be_bytes());
    }

    #[test]
    fn a_refused_program_is_reported_with_the_verifier_lines_that_say_why() {
        let log = "load failed: Permission denied. Verifier output: 0: R1=ctx() R10=fp0\n\
                   12: (85) call bpf_map_update_elem#2\n\
                   cannot update sockmap in this context\n\
                   processed 13 insns (limit 1000000)\n";
        assert_eq!(
            load_failure("p", log),
            "p: load failed: Permission denied. Verifier output: 0: R1=ctx() R10=fp0 ... \
             12: (85) call bpf_map_update_elem#2 | cannot update sockmap in this context"
        );
        assert_eq!(load_failure("p", "no such program"), "p: no such program");
        // Nothing between the first line and the statistics: the first line alone.
        assert_eq!(
            load_failure("p", "failed: 0: R1=ctx()\nverification time 9693 usec\n"),
            "p: failed: 0: R1=ctx()"
        );
    }
}
