//! Kernels for the VM tests: the table of named kernels, fetching Debian kernel packages, and
//! the modules the tests need (with their dependencies, read from each module's `.modinfo`).

use anyhow::{Context as _, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::elf;

/// Where a named kernel comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// The newest Debian package called `<prefix><abi><suffix>` that apt knows, e.g.
    /// `linux-image-6.1.0-56-amd64` for prefix `linux-image-6.1.0-` and suffix `-amd64`, where
    /// `<abi>` contains no `-`. Downloaded with `apt-get download` and unpacked with `dpkg-deb`.
    DebianPackage {
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
    pub what: &'static str,
}

/// The kernels `cargo xtask vm-test --kernel NAME` knows. Adding a kernel is one line here.
pub const KERNELS: &[Named] = &[Named {
    name: "debian-6.1",
    source: Source::DebianPackage {
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64",
    },
    what: "Debian 12 (bookworm) 6.1 LTS: no tcx, legacy clsact attach",
}];

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
}

/// Resolves `--kernel` (a name from [`KERNELS`] or a path to a bzImage) and `--modules`.
pub fn resolve(kernel: &str, modules: Option<&Path>, cache: &Path) -> anyhow::Result<Kernel> {
    if let Some(named) = KERNELS.iter().find(|k| k.name == kernel) {
        if modules.is_some() {
            bail!("--modules goes with --kernel PATH, not with the named kernel {kernel}");
        }
        return match named.source {
            Source::DebianPackage { prefix, suffix } => {
                debian_package(named.name, prefix, suffix, cache)
            }
            Source::Files { bzimage, modules } => {
                files(named.name, Path::new(bzimage), modules.map(Path::new))
            }
        };
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

fn debian_package(label: &str, prefix: &str, suffix: &str, cache: &Path) -> anyhow::Result<Kernel> {
    let dir = cache.join("kernels");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let listed = Command::new("apt-cache")
        .args(["pkgnames", prefix])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
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
                eprintln!("apt knows no {prefix}*{suffix}; using the cached {p}");
                p.to_owned()
            }
            None => bail!(
                "no Debian package {prefix}<abi>{suffix} is known to apt and none is cached in {}: \
                 on Debian 12 run `apt-get update`; elsewhere pass --kernel PATH --modules DIR",
                dir.display()
            ),
        },
    };
    let root = dir.join(&package);
    if !root.join(".unpacked").is_file() {
        fetch_and_unpack(&package, &root)?;
    }
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_owned();
    let bzimage = root.join("boot").join(format!("vmlinuz-{release}"));
    let modules = root.join("lib/modules").join(&release);
    if !bzimage.is_file() || !modules.is_dir() {
        bail!(
            "{package} unpacked in {} has no boot/vmlinuz-{release} or lib/modules/{release}",
            root.display()
        );
    }
    Ok(Kernel {
        label: format!("{label} ({package})"),
        bzimage,
        modules: Some(modules),
        release,
    })
}

fn fetch_and_unpack(package: &str, root: &Path) -> anyhow::Result<()> {
    let dl = root.with_extension("download");
    let _ = std::fs::remove_dir_all(&dl);
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(&dl).with_context(|| format!("creating {}", dl.display()))?;
    eprintln!("downloading {package} (apt-get download)");
    // apt drops privileges to `_apt` when it can; a root-owned target directory only costs a
    // warning, so it is not worth a chmod here.
    let st = Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(&dl)
        .status()
        .context("running apt-get (is this Debian? install apt or pass --kernel PATH)")?;
    if !st.success() {
        bail!("`apt-get download {package}` failed ({st}); try `apt-get update` first");
    }
    let deb = std::fs::read_dir(&dl)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", dl.display()))?;
    let tmp = root.with_extension("unpacking");
    let _ = std::fs::remove_dir_all(&tmp);
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tmp)
        .status()
        .context("running dpkg-deb")?;
    if !st.success() {
        bail!("`dpkg-deb -x {}` failed ({st})", deb.display());
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

/// The modules of [`MODULES`] this kernel has as modules, plus their dependencies, in an order
/// `insmod` accepts (dependencies first).
pub fn modules_to_load(kernel: &Kernel) -> anyhow::Result<Vec<Module>> {
    let Some(dir) = &kernel.modules else {
        eprintln!(
            "no modules directory for {}: assuming {} are built in",
            kernel.label,
            MODULES
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
    for &(name, required) in MODULES {
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

    #[test]
    fn release_decides_the_expected_tc_mode() {
        assert!(!expects_tcx("6.1.0-56-amd64"));
        assert!(!expects_tcx("5.15.0"));
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
