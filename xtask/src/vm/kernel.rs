//! Kernels for the VM tests: the table of named kernels, fetching Debian kernel packages, and
//! the modules the tests need (with their dependencies, read from each module's `.modinfo`).
//!
//! Over 700 lines, about 130 of them its unit tests: the kernel table and the fetching of its
//! packages (split packages, other suites through a private apt configuration), the module order
//! and the release checks belong together.

use anyhow::{Context as _, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::elf;

/// A Debian archive suite that is not in the machine's own apt sources. Its package lists
/// and downloads live in a private apt configuration under `<target>/vm/apt/<suite>/`; the
/// machine's `/etc/apt` is never changed.
#[derive(Clone, Copy, Debug)]
pub struct Suite {
    /// e.g. `bullseye-security`.
    pub name: &'static str,
    /// The archive, e.g. `http://deb.debian.org/debian-security`.
    pub uri: &'static str,
}

pub const DEBIAN: &str = "http://deb.debian.org/debian";
const DEBIAN_SECURITY: &str = "http://deb.debian.org/debian-security";

/// Where a named kernel comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// The newest Debian package called `<prefix><abi><suffix>` that apt knows, e.g.
    /// `linux-image-6.1.0-56-amd64` for prefix `linux-image-6.1.0-` and suffix `-amd64`, or
    /// `linux-image-7.3.4+deb13-amd64` for `linux-image-7.` and `-amd64`, where `<abi>`
    /// contains no `-`. From the machine's own apt sources (`suite: None`) or from a private
    /// apt configuration for that suite. Downloaded with `apt-get download` (with the
    /// `linux-binary-*`/`linux-modules-*`/`linux-base-*` packages a split image package
    /// depends on) and unpacked with `dpkg-deb`.
    DebianPackage {
        suite: Option<Suite>,
        prefix: &'static str,
        suffix: &'static str,
    },
    /// A kernel image and its `lib/modules/<release>` directory (or `None` when everything the
    /// tests need is built in).
    #[allow(
        dead_code,
        reason = "for table entries of locally built kernels; none is listed yet"
    )]
    Files {
        bzimage: &'static str,
        modules: Option<&'static str>,
    },
}

/// A kernel `--kernel NAME` can select.
#[derive(Clone, Copy, Debug)]
pub struct Named {
    pub name: &'static str,
    pub source: Source,
    /// qemu `-cpu` model for this kernel under TCG.
    pub cpu: &'static str,
    /// qemu `-accel`: `tcg` or [`TCG_SINGLE`].
    pub accel: &'static str,
    /// Added to the guest's kernel command line.
    pub append: &'static str,
    pub what: &'static str,
}

/// A Debian kernel package: `suite` `None` means the machine's own apt sources.
const fn deb(
    name: &'static str,
    suite: Option<(&'static str, &'static str)>,
    prefix: &'static str,
    (cpu, accel): (&'static str, &'static str),
    append: &'static str,
    what: &'static str,
) -> Named {
    let suite = match suite {
        Some((name, uri)) => Some(Suite { name, uri }),
        None => None,
    };
    Named {
        name,
        source: Source::DebianPackage {
            suite,
            prefix,
            suffix: "-amd64",
        },
        cpu,
        accel,
        append,
        what,
    }
}

/// qemu 7.2 TCG with `-cpu max`: 6.12 and later die of a double fault at `cmpxchg16b` early in
/// boot; without cx16 (and without the mitigations' alternatives) they boot.
const NO_CX16: &str = "Nehalem,-cx16";

/// qemu 7.2's multi-threaded TCG let a vCPU run a stale `int3` of a finished kernel text patch
/// (debian-6.12: `Oops: int3` in `tcp_connect`, most likely a static key that a cgroup `sock_ops`
/// attach or detach flipped, then a panic), and a debian-6.1 guest locked up on both vCPUs in
/// `rollout_e2e` (soft lockups for 25 minutes, "timer wakeup didn't happen"; the area alone
/// passed right after). One host thread for all vCPUs keeps cross-modified code coherent, so
/// every kernel runs with it.
pub const TCG_SINGLE: &str = "tcg,thread=single";

const MAX: (&str, &str) = ("max", TCG_SINGLE);
const NEW: (&str, &str) = (NO_CX16, TCG_SINGLE);

/// The kernels `cargo xtask vm-test --kernel NAME` knows (and `--all` runs, in this order).
/// Adding a kernel is one line here.
#[rustfmt::skip]
pub const KERNELS: &[Named] = &[
    deb("debian-5.10", Some(("bullseye-security", DEBIAN_SECURITY)), "linux-image-5.10.0-", MAX, "", "Debian 11 (bullseye) 5.10 LTS: no tcx, legacy clsact attach"),
    deb("debian-6.1", None, "linux-image-6.1.0-", MAX, "", "Debian 12 (bookworm) 6.1 LTS: no tcx, legacy clsact attach"),
    deb("debian-6.12", Some(("bookworm-backports", DEBIAN)), "linux-image-6.12.", NEW, "mitigations=off", "Debian 12 backports / Debian 13 6.12 LTS: tcx"),
    deb("debian-7", Some(("trixie-backports", DEBIAN)), "linux-image-7.", NEW, "mitigations=off", "Debian 13 backports, the newest 7.x: tcx"),
];

/// The kernel used when `--kernel` is not given.
pub const DEFAULT_KERNEL: &str = "debian-6.1";

/// Modules the tests need: (name, required). Optional ones are loaded when the kernel has
/// them; a required one that is neither a module nor built in fails the run before booting.
pub const MODULES: &[(&str, bool)] = &[
    ("veth", true),
    ("sch_ingress", true), // clsact lives here
    ("cls_bpf", true),
    ("act_bpf", false),
    ("8021q", false), // VLAN interfaces
    ("dummy", false),
];

/// Modules an initramfs loads to mount a Debian root file system on a virtio disk (the
/// systemd guest on a kernel other than its own). ext4 checksums its metadata with crc32c,
/// which older kernels provide as a module the `depends=` list does not name.
pub const ROOT_DISK_MODULES: &[(&str, bool)] = &[
    ("virtio_pci", false),
    ("virtio_blk", true),
    ("crc32c_generic", false),
    ("crc32c_intel", false),
    ("ext4", true),
];

/// A kernel ready to boot.
#[derive(Debug)]
pub struct Kernel {
    /// What to call it in messages.
    pub label: String,
    pub bzimage: PathBuf,
    /// `lib/modules/<release>`, if the kernel has modules.
    pub modules: Option<PathBuf>,
    /// `uname -r` of the kernel.
    pub release: String,
    /// qemu `-cpu` model.
    pub cpu: &'static str,
    /// qemu `-accel`.
    pub accel: &'static str,
    /// Added to the kernel command line.
    pub append: &'static str,
}

/// Resolves `--kernel` (a name from [`KERNELS`] or a path to a bzImage) and `--modules`.
pub fn resolve(kernel: &str, modules: Option<&Path>, cache: &Path) -> anyhow::Result<Kernel> {
    if let Some(named) = KERNELS.iter().find(|k| k.name == kernel) {
        if modules.is_some() {
            bail!("--modules goes with --kernel PATH, not with the named kernel {kernel}");
        }
        let k = match named.source {
            Source::DebianPackage {
                suite,
                prefix,
                suffix,
            } => debian_package(named.name, suite, prefix, suffix, cache),
            Source::Files { bzimage, modules } => {
                files(named.name, Path::new(bzimage), modules.map(Path::new))
            }
        }?;
        return Ok(Kernel {
            cpu: named.cpu,
            accel: named.accel,
            append: named.append,
            ..k
        });
    }
    let path = Path::new(kernel);
    if !path.is_file() {
        let names: Vec<_> = KERNELS.iter().map(|k| k.name).collect();
        bail!(
            "--kernel {kernel}: neither a known kernel name ({}) nor a kernel image file",
            names.join(", ")
        );
    }
    files(kernel, path, modules)
}

fn files(label: &str, bzimage: &Path, modules: Option<&Path>) -> anyhow::Result<Kernel> {
    if !bzimage.is_file() {
        bail!("kernel image {} does not exist", bzimage.display());
    }
    let release = match modules {
        Some(dir) => {
            if !dir.join("kernel").is_dir() && !dir.join("modules.builtin").is_file() {
                bail!(
                    "--modules {}: expected a lib/modules/<release> directory (with kernel/ or \
                     modules.builtin)",
                    dir.display()
                );
            }
            dir.file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .with_context(|| format!("--modules {}: no release in the name", dir.display()))?
        }
        None => bzimage_release(bzimage)?,
    };
    Ok(Kernel {
        label: label.to_owned(),
        bzimage: bzimage.to_owned(),
        modules: modules.map(Path::to_owned),
        release,
        cpu: "max",
        accel: TCG_SINGLE,
        append: "",
    })
}

/// The kernel release string stored in an x86 bzImage's setup header.
pub fn bzimage_release(path: &Path) -> anyhow::Result<String> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_bzimage_release(&data).with_context(|| {
        format!(
            "{} is not an x86 bzImage with a version string",
            path.display()
        )
    })
}

fn parse_bzimage_release(data: &[u8]) -> Option<String> {
    // Setup header: "HdrS" at 0x202, kernel_version (offset from 0x200) at 0x20e.
    if data.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let off = usize::from(u16::from_le_bytes([*data.get(0x20e)?, *data.get(0x20f)?])) + 0x200;
    let s = data.get(off..)?;
    let end = s.iter().position(|&b| b == 0 || b == b' ')?;
    std::str::from_utf8(&s[..end]).ok().map(str::to_owned)
}

/// The ABI part of `name` if it is `<prefix><abi><suffix>` with an `<abi>` free of `-`.
fn abi_of<'a>(name: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    let abi = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!abi.is_empty() && !abi.contains('-')).then_some(abi)
}

/// Orders ABI strings like "9" < "56" < "56+1": by their numeric runs, then as text.
fn abi_key(abi: &str) -> (Vec<u64>, String) {
    let nums = abi
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect();
    (nums, abi.to_owned())
}

/// The newest package name of the pattern among `names`.
fn newest_package<'a>(
    names: impl IntoIterator<Item = &'a str>,
    prefix: &str,
    suffix: &str,
) -> Option<&'a str> {
    names
        .into_iter()
        .filter_map(|n| abi_of(n, prefix, suffix).map(|abi| (abi_key(abi), n)))
        .max()
        .map(|(_, n)| n)
}

/// How to call apt: the machine's own configuration, or a private one for one suite.
struct Apt {
    /// `-o` options that point apt at the private directories (empty: the machine's own).
    opts: Vec<String>,
    /// What to tell the user about where the packages come from.
    what: String,
}

impl Apt {
    fn system() -> Self {
        Apt {
            opts: Vec::new(),
            what: "the machine's apt sources".to_owned(),
        }
    }

    /// A private apt configuration for `suite` under `dir` (`<target>/vm/apt/<suite>/`): its
    /// own sources list, an empty parts directory, its own lists and cache. The lists are
    /// refreshed with `apt-get update` when they are missing or older than a day; a failed
    /// refresh keeps the old lists (offline runs work from the cache).
    fn private(suite: Suite, dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join(suite.name);
        for d in ["parts", "lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(d))
                .with_context(|| format!("creating {}", dir.join(d).display()))?;
        }
        let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
        let signed = if keyring.is_file() {
            format!("[signed-by={}] ", keyring.display())
        } else {
            String::new()
        };
        let list = format!("deb {signed}{} {} main\n", suite.uri, suite.name);
        let list_file = dir.join("sources.list");
        if std::fs::read_to_string(&list_file).ok().as_deref() != Some(list.as_str()) {
            std::fs::write(&list_file, &list)
                .with_context(|| format!("writing {}", list_file.display()))?;
            let _ = std::fs::remove_file(dir.join("updated"));
        }
        let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
        let opts = vec![
            format!("Dir::Etc::SourceList={}", list_file.display()),
            format!("Dir::Etc::SourceParts={}", path("parts")),
            format!("Dir::State::Lists={}", path("lists")),
            format!("Dir::Cache={}", path("cache")),
        ];
        let apt = Apt {
            opts,
            what: format!(
                "{} (private apt configuration in {})",
                suite.name,
                dir.display()
            ),
        };
        let stamp = dir.join("updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < Duration::from_hours(24));
        if !fresh {
            eprintln!("apt-get update for {}", apt.what);
            let mut c = apt.command("apt-get");
            c.args(["update", "-q"]);
            eprintln!("$ {}", crate::cmd::render(&c));
            match c.status() {
                Ok(st) if st.success() => std::fs::write(&stamp, suite.uri)?,
                Ok(st) => eprintln!("warning: apt-get update for {} failed ({st})", suite.name),
                Err(e) => eprintln!("warning: cannot run apt-get ({e})"),
            }
        }
        Ok(apt)
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        for o in &self.opts {
            c.arg("-o").arg(o);
        }
        c
    }

    fn pkgnames(&self, prefix: &str) -> String {
        self.command("apt-cache")
            .args(["pkgnames", prefix])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

fn debian_package(
    label: &str,
    suite: Option<Suite>,
    prefix: &str,
    suffix: &str,
    cache: &Path,
) -> anyhow::Result<Kernel> {
    let dir = cache.join("kernels");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let apt = match suite {
        Some(s) => Apt::private(s, &cache.join("apt"))?,
        None => Apt::system(),
    };
    let listed = apt.pkgnames(prefix);
    let cached: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().join(".unpacked").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let package = match newest_package(listed.lines(), prefix, suffix) {
        Some(p) => p.to_owned(),
        None => match newest_package(cached.iter().map(String::as_str), prefix, suffix) {
            Some(p) => {
                eprintln!(
                    "{} knows no {prefix}*{suffix}; using the cached {p}",
                    apt.what
                );
                p.to_owned()
            }
            None => bail!(
                "no Debian package {prefix}<abi>{suffix} is known to {} and none is cached in \
                 {}: run `apt-get update` (machine's sources) or check the network; elsewhere \
                 pass --kernel PATH --modules DIR",
                apt.what,
                dir.display()
            ),
        },
    };
    eprintln!("kernel package {package} from {}", apt.what);
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_owned();
    let root = dir.join(&package);
    if !root.join(".unpacked").is_file() {
        fetch_and_unpack(&apt, &package, &release, &root)?;
    }
    // Older packages: /boot/vmlinuz-R and /lib/modules/R. Trixie's split packages (merged
    // /usr): /usr/lib/modules/R/vmlinuz and /usr/lib/modules/R.
    let bzimage = [
        format!("boot/vmlinuz-{release}"),
        format!("usr/lib/modules/{release}/vmlinuz"),
        format!("lib/modules/{release}/vmlinuz"),
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.is_file());
    let modules = [
        format!("lib/modules/{release}"),
        format!("usr/lib/modules/{release}"),
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.join("kernel").is_dir());
    let (Some(bzimage), Some(modules)) = (bzimage, modules) else {
        bail!(
            "{package} unpacked in {} has no vmlinuz or no [usr/]lib/modules/{release}/kernel",
            root.display()
        );
    };
    Ok(Kernel {
        label: format!("{label} ({package})"),
        bzimage,
        modules: Some(modules),
        release,
        cpu: "max",
        accel: TCG_SINGLE,
        append: "",
    })
}

/// The packages of the same kernel release a (split) image package depends on: trixie's
/// `linux-image-R` is a few KB that pulls `linux-binary-R` (the vmlinuz), `linux-modules-R`
/// and `linux-base-R` (modules.builtin, config).
fn split_parts(depends: &str, package: &str, release: &str) -> Vec<String> {
    depends
        .split(',')
        .flat_map(|alts| alts.split('|'))
        .filter_map(|dep| dep.split_whitespace().next())
        .filter(|name| {
            *name != package && name.starts_with("linux-") && name.ends_with(&format!("-{release}"))
        })
        .map(str::to_owned)
        .collect()
}

fn download(apt: &Apt, packages: &[String], dir: &Path) -> anyhow::Result<()> {
    eprintln!("downloading {} (apt-get download)", packages.join(" "));
    // apt drops privileges to `_apt` when it can; a root-owned target directory only costs a
    // warning, so it is not worth a chmod here.
    let st = apt
        .command("apt-get")
        .args(["download", "-q"])
        .args(packages)
        .current_dir(dir)
        .status()
        .context("running apt-get (is this Debian? install apt or pass --kernel PATH)")?;
    if !st.success() {
        bail!(
            "`apt-get download {}` from {} failed ({st}); try `apt-get update` first",
            packages.join(" "),
            apt.what
        );
    }
    Ok(())
}

fn debs_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    v.sort();
    Ok(v)
}

/// The Debian package `package` of `suite` (a private apt configuration: the machine's
/// sources are not touched) unpacked under `cache/packages/PACKAGE-SUITE`, once: for test
/// tools newer than the machine's release (etcd 3.5 from trixie). Returns that directory.
pub fn unpacked_package(suite: Suite, package: &str, cache: &Path) -> anyhow::Result<PathBuf> {
    let root = cache
        .join("packages")
        .join(format!("{package}-{}", suite.name));
    if !root.join(".unpacked").is_file() {
        std::fs::create_dir_all(cache.join("packages"))
            .with_context(|| format!("creating {}", cache.join("packages").display()))?;
        let apt = Apt::private(suite, &cache.join("apt"))?;
        eprintln!("{package} from {}", apt.what);
        // No release: the kernel's split parts are the only dependencies fetched.
        fetch_and_unpack(&apt, package, "", &root)?;
    }
    Ok(root)
}

fn fetch_and_unpack(apt: &Apt, package: &str, release: &str, root: &Path) -> anyhow::Result<()> {
    // Not `with_extension`: package names have dots (`linux-image-7.3.4+deb13-amd64`).
    let sibling = |ext: &str| PathBuf::from(format!("{}.{ext}", root.display()));
    let dl = sibling("download");
    let _ = std::fs::remove_dir_all(&dl);
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(&dl).with_context(|| format!("creating {}", dl.display()))?;
    download(apt, &[package.to_owned()], &dl)?;
    let image = debs_in(&dl)?
        .into_iter()
        .next()
        .with_context(|| format!("apt-get download left no .deb in {}", dl.display()))?;
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&image)
        .arg("Depends")
        .output()
        .context("running dpkg-deb")?;
    let parts = split_parts(&String::from_utf8_lossy(&out.stdout), package, release);
    if !parts.is_empty() {
        download(apt, &parts, &dl)?;
    }
    let tmp = sibling("unpacking");
    let _ = std::fs::remove_dir_all(&tmp);
    for deb in debs_in(&dl)? {
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&tmp)
            .status()
            .context("running dpkg-deb")?;
        if !st.success() {
            bail!("`dpkg-deb -x {}` failed ({st})", deb.display());
        }
    }
    std::fs::write(tmp.join(".unpacked"), package)?;
    std::fs::rename(&tmp, root)
        .with_context(|| format!("moving {} to {}", tmp.display(), root.display()))?;
    let _ = std::fs::remove_dir_all(&dl);
    Ok(())
}

/// A module file to copy into the guest and load, in load order.
#[derive(Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// The file in the modules directory (may be compressed).
    pub source: PathBuf,
}

/// Module name as the kernel sees it: file stem with `-` as `_`.
fn module_name(file_name: &str) -> Option<String> {
    let stem = file_name
        .strip_suffix(".ko")
        .or_else(|| file_name.strip_suffix(".ko.xz"))
        .or_else(|| file_name.strip_suffix(".ko.zst"))
        .or_else(|| file_name.strip_suffix(".ko.gz"))?;
    Some(stem.replace('-', "_"))
}

/// Every module file under `dir`, by module name.
fn index_modules(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if let Some(name) = e.file_name().to_str().and_then(module_name) {
                out.insert(name, e.path());
            }
        }
    }
    Ok(out)
}

/// Names listed in `modules.builtin` (paths like `kernel/net/sched/sch_ingress.ko`).
fn builtin_modules(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next().and_then(module_name))
        .collect()
}

/// Reads a module file, decompressing `.xz`/`.zst`/`.gz` with the system tool.
pub fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tool = match ext {
        "ko" => return std::fs::read(path).with_context(|| format!("reading {}", path.display())),
        "xz" => "xz",
        "zst" => "zstd",
        "gz" => "gzip",
        _ => bail!("{}: unknown module file type", path.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} to decompress {}", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed ({})", path.display(), out.status);
    }
    Ok(out.stdout)
}

/// The `depends=` list of a module's `.modinfo` section.
fn module_depends(ko: &[u8]) -> Option<Vec<String>> {
    let info = elf::section(ko, ".modinfo")?;
    Some(
        info.split(|&b| b == 0)
            .filter_map(|kv| kv.strip_prefix(b"depends="))
            .flat_map(|v| v.split(|&b| b == b','))
            .filter(|d| !d.is_empty())
            .map(|d| String::from_utf8_lossy(d).replace('-', "_"))
            .collect(),
    )
}

/// The modules of `wanted` (name, required; e.g. [`MODULES`]) this kernel has as modules, plus
/// their dependencies, in an order `insmod` accepts (dependencies first).
pub fn modules_to_load(kernel: &Kernel, wanted: &[(&str, bool)]) -> anyhow::Result<Vec<Module>> {
    let Some(dir) = &kernel.modules else {
        eprintln!(
            "no modules directory for {}: assuming {} are built in",
            kernel.label,
            wanted
                .iter()
                .map(|(m, _)| *m)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(Vec::new());
    };
    let index = index_modules(dir)?;
    let builtin = builtin_modules(dir);
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for &(name, required) in wanted {
        if builtin.contains(name) {
            continue;
        }
        if !index.contains_key(name) {
            if required {
                bail!(
                    "kernel {} has module {name} neither built in nor under {}",
                    kernel.label,
                    dir.display()
                );
            }
            eprintln!(
                "note: kernel {} has no module {name}; not loading it",
                kernel.label
            );
            continue;
        }
        visit(
            name,
            &index,
            &builtin,
            &mut done,
            &mut Vec::new(),
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    done: &mut BTreeSet<String>,
    path: &mut Vec<String>,
    order: &mut Vec<Module>,
) -> anyhow::Result<()> {
    if done.contains(name) || builtin.contains(name) {
        return Ok(());
    }
    if path.iter().any(|p| p == name) {
        bail!("module dependency cycle: {} -> {name}", path.join(" -> "));
    }
    let source = index
        .get(name)
        .with_context(|| format!("module {name} (needed by {}) not found", path.join(" -> ")))?;
    let data = read_module(source)?;
    let deps = module_depends(&data)
        .with_context(|| format!("{}: no .modinfo section", source.display()))?;
    path.push(name.to_owned());
    for d in &deps {
        visit(d, index, builtin, done, path, order)?;
    }
    path.pop();
    done.insert(name.to_owned());
    order.push(Module {
        name: name.to_owned(),
        source: source.clone(),
    });
    Ok(())
}

/// Whether a kernel of this release attaches TC programs with tcx (mainline 6.6 and later).
/// Used only to tell the guest what to expect; the library itself decides by trying.
pub fn expects_tcx(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (6, 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_abi_of_the_exact_pattern() {
        let names = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.1.0-56-amd64-dbg",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-50-amd64-unsigned",
            "linux-image-6.1.0-47-amd64",
        ];
        assert_eq!(
            newest_package(names, "linux-image-6.1.0-", "-amd64"),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(newest_package(names, "linux-image-6.12.", "-amd64"), None);
    }

    /// Real names from the suites the table uses (apt-cache pkgnames linux-image-, 2025).
    #[test]
    fn picks_the_newest_kernel_of_each_suite() {
        let bullseye = [
            "linux-image-5.10.0-44-amd64",
            "linux-image-5.10.0-46-amd64",
            "linux-image-5.10.0-46-cloud-amd64",
            "linux-image-5.10.0-46-rt-amd64-unsigned",
            "linux-image-5.10.0-45-amd64",
            "linux-image-6.1.0-0.deb11.52-amd64",
            "linux-image-amd64",
        ];
        assert_eq!(
            newest_package(bullseye, "linux-image-5.10.0-", "-amd64"),
            Some("linux-image-5.10.0-46-amd64")
        );
        let bookworm_backports = [
            "linux-image-6.12.90+deb12.1-amd64",
            "linux-image-6.12.95+deb12-amd64",
            "linux-image-6.12.94+deb12-amd64",
            "linux-image-6.12.95+deb12-rt-amd64-unsigned",
            "linux-image-6.12.95+deb12-cloud-amd64",
        ];
        assert_eq!(
            newest_package(bookworm_backports, "linux-image-6.12.", "-amd64"),
            Some("linux-image-6.12.95+deb12-amd64")
        );
        let trixie_backports = [
            "linux-image-7.2.11+deb13-amd64",
            "linux-image-7.3.4+deb13-amd64",
            "linux-image-7.2.12+deb13-amd64",
            "linux-image-7.3.4+deb13-rt-amd64",
            "linux-image-7.3.4+deb13-rt-amd64-dbg",
            "linux-image-7.3.4+deb13-cloud-amd64",
            "linux-image-6.16.12+deb13-amd64",
        ];
        assert_eq!(
            newest_package(trixie_backports, "linux-image-7.", "-amd64"),
            Some("linux-image-7.3.4+deb13-amd64")
        );
        assert_eq!(
            abi_of("linux-image-7.3.4+deb13-amd64", "linux-image-7.", "-amd64"),
            Some("3.4+deb13")
        );
        assert_eq!(
            abi_of("linux-image-70.1.0+deb15-amd64", "linux-image-7.", "-amd64"),
            None
        );
        assert!(abi_key("3.10+deb13") > abi_key("3.9+deb13"));
    }

    #[test]
    fn a_split_image_package_pulls_binary_modules_and_base() {
        let depends = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
            linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), linux-binary-7.3.4+deb13-amd64 \
            (= 7.3.4-1~bpo13+1), linux-modules-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)";
        let p = "linux-image-7.3.4+deb13-amd64";
        assert_eq!(
            split_parts(depends, p, "7.3.4+deb13-amd64"),
            [
                "linux-base-7.3.4+deb13-amd64",
                "linux-binary-7.3.4+deb13-amd64",
                "linux-modules-7.3.4+deb13-amd64"
            ]
        );
        // A classic package carries everything itself.
        let classic =
            "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool";
        assert!(split_parts(classic, "linux-image-5.10.0-46-amd64", "5.10.0-46-amd64").is_empty());
    }

    #[test]
    fn release_decides_the_expected_tc_mode() {
        assert!(!expects_tcx("6.1.0-56-amd64"));
        assert!(!expects_tcx("5.15.0"));
        assert!(!expects_tcx("5.10.0-46-amd64"));
        assert!(expects_tcx("6.12.95+deb12-amd64"));
        assert!(expects_tcx("7.3.4+deb13-amd64"));
        assert!(expects_tcx("6.6.0"));
        assert!(expects_tcx("6.18.44-fc-v657"));
        assert!(expects_tcx("7.0.1"));
    }

    #[test]
    fn module_names_follow_the_kernel() {
        assert_eq!(
            module_name("sch_ingress.ko").as_deref(),
            Some("sch_ingress")
        );
        assert_eq!(module_name("nf-nat.ko.xz").as_deref(), Some("nf_nat"));
        assert_eq!(module_name("README"), None);
    }

    #[test]
    fn bzimage_release_is_read_from_the_setup_header() {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        img[0x300..0x319].copy_from_slice(b"6.1.0-56-amd64 (debian-ke");
        assert_eq!(
            parse_bzimage_release(&img).as_deref(),
            Some("6.1.0-56-amd64")
        );
        assert_eq!(parse_bzimage_release(&[0u8; 0x300]), None);
    }
}
