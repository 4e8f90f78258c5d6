//! Attaching the programs to an interface: tcx where the kernel has it, legacy clsact
//! otherwise (chosen by trying, not by kernel version), and XDP.

use std::{fmt, io, os::fd::AsFd as _, path::Path};

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, LinkError, PinnedLink},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
    xdp::XdpLink,
};
use tracing::info;

/// Which ingress hook an interface uses. Egress is always TC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// TC ingress + TC egress (the default; best on virtual devices).
    Tc,
    /// Native XDP ingress + TC egress (pays off on physical NICs).
    Xdp,
    /// Generic (skb) XDP ingress + TC egress.
    XdpGeneric,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tc => "tc",
            Self::Xdp => "xdp",
            Self::XdpGeneric => "xdp-generic",
        })
    }
}

impl std::str::FromStr for Hook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tc" => Ok(Self::Tc),
            "xdp" => Ok(Self::Xdp),
            "xdp-generic" => Ok(Self::XdpGeneric),
            other => Err(format!(
                "unknown hook {other:?} (expected tc, xdp or xdp-generic)"
            )),
        }
    }
}

/// How a TC program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcMode {
    /// bpf_link based multi-program attachment (kernel >= 6.6).
    Tcx,
    /// clsact qdisc + cls_bpf filter in direct-action mode.
    Legacy,
}

impl fmt::Display for TcMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcx => "tcx",
            Self::Legacy => "legacy clsact",
        })
    }
}

/// What attaching found in place, per hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// Nothing of ours was attached: a new attachment.
    Fresh,
    /// A pinned link already ran this very build (same program tag). This process's copy
    /// was swapped in atomically all the same, so the kernel keeps one copy of each program
    /// (the old copy goes with its last reference) instead of one per restart.
    SameBuild,
    /// An existing link (or legacy filter) ran another build, or a build we cannot compare
    /// (legacy filters): its program was replaced atomically in place.
    Replaced,
}

impl Adoption {
    /// One word for several hooks: the same when all agree, `Replaced` when any was,
    /// `Fresh` otherwise.
    pub fn combine(all: &[Self]) -> Self {
        match all {
            [first, rest @ ..] if rest.iter().all(|a| a == first) => *first,
            _ if all.contains(&Self::Replaced) => Self::Replaced,
            _ => Self::Fresh,
        }
    }
}

impl fmt::Display for Adoption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fresh => "attached new",
            Self::SameBuild => "adopted, same build",
            Self::Replaced => "upgraded programs, maps kept",
        })
    }
}

/// What adopting the link pinned at `pin` with a program of tag `tag` is: the same build
/// when the program it runs now has that tag, another build otherwise.
pub(crate) fn adoption_of(pin: &Path, tag: u64) -> Result<Adoption, BoxError> {
    let link = crate::sys::obj_get(pin)?;
    let same = u64::from_be_bytes(crate::sys::link_prog_tag(link.as_fd())?) == tag;
    Ok(if same {
        Adoption::SameBuild
    } else {
        Adoption::Replaced
    })
}

/// Fixed priority and handle of our legacy cls_bpf filters, so a restart finds and
/// replaces them instead of adding a second copy.
pub const LEGACY_PRIORITY: u16 = 0x5348; // "SH"
pub const LEGACY_HANDLE: u32 = 1;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TC attachment we own.
pub(crate) enum TcAttachment {
    /// A tcx link, pinned at the path when pinning is wanted.
    Tcx(SchedClassifierLink),
    /// A cls_bpf filter; it lives in the kernel until removed.
    Legacy(SchedClassifierLink),
}

fn is_not_found(e: &LinkError) -> bool {
    matches!(e, LinkError::SyscallError(s) if s.io_error.kind() == io::ErrorKind::NotFound)
}

/// Attaches `prog` at `attach_type` on `iface`. An existing link pinned at `pin` (tcx) is
/// adopted: `prog` replaces its program atomically, whether it was the same build or not. An existing shifter filter (legacy) gets the program replaced.
pub(crate) fn attach_tc(
    prog: &mut SchedClassifier,
    iface: &str,
    attach_type: TcAttachType,
    pin: &Path,
) -> Result<(TcAttachment, TcMode, Adoption), BoxError> {
    match PinnedLink::from_pin(pin) {
        Ok(pinned) => {
            let adoption = adoption_of(pin, prog.info()?.tag())?;
            // Swap our program into the existing link (BPF_LINK_UPDATE): no packet sees no
            // program, and the maps (pinned) stay.
            let link = SchedClassifierLink::try_from(FdLink::from(pinned))?;
            let id = prog.attach_to_link(link)?;
            return Ok((
                TcAttachment::Tcx(prog.take_link(id)?),
                TcMode::Tcx,
                adoption,
            ));
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    match prog.attach_with_options(
        iface,
        attach_type,
        TcAttachOptions::TcxOrder(LinkOrder::default()),
    ) {
        Ok(id) => {
            return Ok((
                TcAttachment::Tcx(prog.take_link(id)?),
                TcMode::Tcx,
                Adoption::Fresh,
            ));
        }
        Err(e) => info!("{iface}: tcx attach unavailable ({e}); using legacy clsact"),
    }
    match tc::qdisc_add_clsact(iface) {
        Ok(()) | Err(TcError::AlreadyAttached) => {}
        // The message text is the kernel's extack ("Exclusivity flag on, cannot modify" on 6.1),
        // which need not say "exists": match the errno.
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let options = NlOptions {
        priority: LEGACY_PRIORITY,
        handle: TcHandle::from(LEGACY_HANDLE),
        classid: None,
    };
    let mut adoption = Adoption::Fresh;
    let id = match prog.attach_with_options(iface, attach_type, TcAttachOptions::Netlink(options)) {
        Ok(id) => id,
        Err(_) => {
            // Our filter is already there (an earlier run): replace its program.
            let existing = our_legacy_filter(iface, attach_type)?;
            adoption = Adoption::Replaced;
            prog.attach_to_link(existing)?
        }
    };
    Ok((
        TcAttachment::Legacy(prog.take_link(id)?),
        TcMode::Legacy,
        adoption,
    ))
}

/// Attaches the XDP program, adopting a link pinned at `pin` if any (its program replaced
/// atomically by `prog`).
pub(crate) fn attach_xdp(
    prog: &mut Xdp,
    iface: &str,
    mode: XdpMode,
    pin: &Path,
) -> Result<(XdpLink, Adoption), BoxError> {
    match PinnedLink::from_pin(pin) {
        Ok(pinned) => {
            let adoption = adoption_of(pin, prog.info()?.tag())?;
            let link = XdpLink::try_from(FdLink::from(pinned))?;
            let id = prog.attach_to_link(link)?;
            return Ok((prog.take_link(id)?, adoption));
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let id = prog.attach(iface, mode)?;
    Ok((prog.take_link(id)?, Adoption::Fresh))
}

/// Our cls_bpf filter at `attach_type` on `iface` (fixed priority and handle), as a link.
fn our_legacy_filter(
    iface: &str,
    attach_type: TcAttachType,
) -> Result<SchedClassifierLink, BoxError> {
    Ok(SchedClassifierLink::attached(
        iface,
        attach_type,
        LEGACY_PRIORITY,
        TcHandle::from(LEGACY_HANDLE),
        None,
    )?)
}

/// Removes a legacy filter of ours that no process holds a link for.
pub(crate) fn detach_legacy(iface: &str, attach_type: TcAttachType) -> Result<(), BoxError> {
    let link = our_legacy_filter(iface, attach_type)?;
    // Deletes the filter by priority and handle; fails when there is none.
    aya::programs::links::Link::detach(link)?;
    Ok(())
}
