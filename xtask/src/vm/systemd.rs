//! `cargo xtask vm-test --systemd`: the Debian package under a real systemd.
//!
//! 1. A Debian root filesystem with systemd as PID 1, built by `mmdebstrap` from Debian's
//!    packages and cached as a tarball keyed by its package list (`<target>/vm/systemd/`).
//! 2. Per run: the tarball unpacked, the `.deb` of `cargo xtask deb` (built from this build's
//!    `shifter`), the integration-test binary and a unit that runs its `systemd` area
//!    (`tests/tests/systemd.rs`) at boot copied in; `mkfs.ext4 -d` makes the disk image (no
//!    loop device, no mount).
//! 3. qemu (TCG) boots the image's own kernel; the scenario unit prints the test output and
//!    `SHIFTER-VM-RESULT: <rc>` on the serial console, then powers off.
//!
//! With `--kernel NAME` another kernel of the table boots the same image: its modules are
//! copied into the root (`depmod` run for them, so udev and modprobe find them) and a small
//! busybox initramfs loads the disk and ext4 modules, mounts `/dev/vda` and hands over to
//! systemd (`switch_root`). Debian's own initramfs is built for the image's kernel only.
//!
//! Needs root on the host (mmdebstrap's root mode, and file owners kept in the image).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    VmArgs, areas,
    cpio::Entry,
    kernel::{self, Kernel},
    qemu,
};

const SUITE: &str = "bookworm";
const MIRRORS: [&str; 2] = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
/// What the guest has besides the minimal base: systemd as init, the kernel (the cloud
/// flavour has BPF, cgroup BPF and BTF built in), the tools the scenarios call (bpftool counts
/// the loaded programs), and nginx as the real blue and green backends.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "linux-image-cloud-amd64",
    "iproute2",
    "procps",
    "nginx-light",
    "bpftool",
];
/// Run inside the new root by mmdebstrap: no root password, `/dev/vda` as `/`, and no getty on
/// the serial console (its hangups would cut the test output short).
const HOOKS: &[&str] = &[
    r#"chroot "$1" passwd -d root"#,
    r#"echo "/dev/vda / ext4 defaults 0 1" >"$1/etc/fstab""#,
    r#"ln -sf /dev/null "$1/etc/systemd/system/serial-getty@ttyS0.service""#,
];

/// The unit that runs the scenarios once the system is up, then powers off.
const SCENARIO_UNIT: &str = "[Unit]
Description=shifter systemd scenarios (cargo xtask vm-test --systemd)
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh /root/run-scenarios.sh
ExecStopPost=/usr/bin/systemctl poweroff --no-block
[Install]
WantedBy=multi-user.target
";

/// The command line: the root disk, the console on the serial port, quiet so the test output
/// stays readable.
const APPEND: &str =
    "root=/dev/vda rw console=ttyS0 panic=-1 quiet systemd.show_status=0 mitigations=off";

pub fn run(args: &VmArgs, root: &Path, target: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_tools()?;
    let work = target.join("vm").join("systemd");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // Resolved first: a kernel that cannot be fetched fails before minutes of building.
    let other_kernel = args
        .kernel
        .as_deref()
        .map(|name| other_kernel(name, args, target))
        .transpose()?;

    crate::cmd::step("vm-test --systemd: build");
    let built = super::build(root, args.release)?;
    let scenarios = scenario_area(&built.integration, &args.harness_args)?;
    let shifter = executable(&built.bins, "shifter")?;
    let version = env!("CARGO_PKG_VERSION");
    let deb = crate::deb::build(root, &shifter, &work.join("deb"), version)?;
    // The upgrade scenario's version N+1: another build of the programs, same maps.
    let variant = crate::deb::build_binary(target, true, args.release)?;
    let next = crate::deb::build(
        root,
        &variant,
        &work.join("deb"),
        &format!("{version}+next1"),
    )?;
    lintian(&[&deb, &next])?;

    crate::cmd::step("vm-test --systemd: root filesystem");
    let tarball = rootfs(&work)?;
    let tree = work.join("root");
    unpack(&tarball, &tree)?;
    install_into(
        &tree,
        &deb,
        &next,
        &built.integration,
        &scenarios,
        &args.harness_args,
    )?;
    let boot = match &other_kernel {
        None => BootKernel {
            bzimage: only_file(&tree.join("boot"), "vmlinuz-")?,
            initrd: only_file(&tree.join("boot"), "initrd.img-")?,
            cpu: "max",
            accel: kernel::TCG_SINGLE,
            append: APPEND.to_owned(),
        },
        Some(k) => {
            install_modules(&tree, k)?;
            let initrd = work.join("initramfs-root.cpio");
            root_initramfs(k, &initrd)?;
            BootKernel {
                bzimage: k.bzimage.clone(),
                initrd,
                cpu: k.cpu,
                accel: k.accel,
                append: with_words(APPEND, k.append),
            }
        }
    };
    let image = work.join("disk.img");
    crate::cmd::run(
        "vm-test --systemd: disk image",
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&image)
            .arg("3G"),
    )?;

    crate::cmd::step("vm-test --systemd: boot (qemu, TCG)");
    let outcome = qemu::boot(&qemu::Boot {
        bzimage: &boot.bzimage,
        initrd: &boot.initrd,
        disk: Some(&image),
        append: &boot.append,
        cpu: boot.cpu,
        accel: boot.accel,
        memory_mib: args.memory_mib,
        cpus: args.cpus,
        timeout: Duration::from_secs(args.timeout_minutes.saturating_mul(60)),
    })?;
    let _ = std::fs::remove_file(&image);
    eprintln!(
        "vm-test --systemd: kernel {}, guest {:.0} s, whole run {:.0} s",
        boot.bzimage.display(),
        outcome.guest_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    match outcome.result {
        Some(0) => Ok(()),
        Some(rc) => bail!("systemd scenarios failed in the guest (rc={rc}); see the output above"),
        None if outcome.timed_out => bail!(
            "the systemd guest gave no result within {} minutes",
            args.timeout_minutes
        ),
        None => bail!(
            "the systemd guest stopped without a result (qemu: {}); last lines:\n{}",
            outcome.qemu_status,
            Vec::from(outcome.tail).join("\n")
        ),
    }
}

/// What qemu boots: the image's own kernel and initramfs, or another kernel of the table.
struct BootKernel {
    bzimage: PathBuf,
    initrd: PathBuf,
    cpu: &'static str,
    accel: &'static str,
    append: String,
}

/// `line` with the words of `extra` it lacks appended (both kernel command lines).
fn with_words(line: &str, extra: &str) -> String {
    let mut out = line.to_owned();
    for w in extra.split_whitespace() {
        if !line.split_whitespace().any(|have| have == w) {
            out.push(' ');
            out.push_str(w);
        }
    }
    out
}

/// Copies `k`'s modules into the image and indexes them there, so the guest's udev and
/// modprobe load what the scenarios need (tc, veth) as on any installed system.
fn install_modules(tree: &Path, k: &Kernel) -> anyhow::Result<()> {
    let Some(modules) = &k.modules else {
        eprintln!("vm-test --systemd: {} has no modules directory", k.label);
        return Ok(());
    };
    // bookworm is merged-/usr: /lib is a link to usr/lib.
    let dest = tree.join("usr/lib/modules");
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    crate::cmd::run(
        "vm-test --systemd: copy the kernel's modules",
        Command::new("cp").arg("-a").arg(modules).arg(&dest),
    )?;
    let depmod = ["/usr/sbin/depmod", "/sbin/depmod"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("depmod (Debian package kmod) is needed to index the kernel's modules")?;
    crate::cmd::run(
        "vm-test --systemd: depmod",
        Command::new(depmod).arg("-b").arg(tree).arg(&k.release),
    )
}

/// The initramfs for a kernel other than the image's own: busybox as `/init`, the modules
/// that mount the root disk, then `switch_root` to systemd.
fn root_initramfs(k: &Kernel, out: &Path) -> anyhow::Result<()> {
    let modules = kernel::modules_to_load(k, kernel::ROOT_DISK_MODULES)?;
    // The busybox suite's fixed part (directories, console, busybox) plus the mount point.
    let mut t = super::base_tree()?;
    t.add("newroot", Entry::Dir)?;
    let mut names = Vec::new();
    for m in &modules {
        t.add(
            &format!("modules/{}.ko", m.name),
            Entry::Data {
                data: kernel::read_module(&m.source)?,
                mode: 0o644,
            },
        )?;
        names.push(m.name.as_str());
    }
    t.add(
        "init",
        Entry::Data {
            data: ROOT_INIT
                .replace("@MODULES@", &names.join(" "))
                .into_bytes(),
            mode: 0o755,
        },
    )?;
    t.write(out)?;
    Ok(())
}

/// `/init` of [`root_initramfs`]. A failure powers off with the reason on the console
/// (the host then reports "stopped without a result" with these lines).
const ROOT_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in @MODULES@; do
    insmod "/modules/$m.ko" || echo "initramfs: insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
mount -o rw /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"#;

fn ensure_tools() -> anyhow::Result<()> {
    if !crate::cmd::is_root() {
        bail!("vm-test --systemd needs root (mmdebstrap --mode=root, owners kept in the image)");
    }
    let missing: Vec<&str> = [
        ("qemu-system-x86", "qemu-system-x86_64"),
        ("mmdebstrap", "mmdebstrap"),
        ("e2fsprogs", "mkfs.ext4"),
        ("lintian", "lintian"),
    ]
    .into_iter()
    .filter(|(_, cmd)| !crate::cmd::on_path(cmd))
    .map(|(pkg, _)| pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::cmd::run(
        "vm-test --systemd: install tools",
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// lintian on the packages: no error or warning that the package does not override.
fn lintian(debs: &[&Path]) -> anyhow::Result<()> {
    let mut c = Command::new("lintian");
    c.args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .args(debs);
    crate::cmd::run("vm-test --systemd: lintian", &mut c)
}

/// The kernel `--kernel` names instead of the image's own (fetched if need be).
fn other_kernel(name: &str, args: &VmArgs, target: &Path) -> anyhow::Result<Kernel> {
    super::ensure_tools()?; // qemu and a static busybox for the initramfs
    let k = kernel::resolve(name, args.modules.as_deref(), &target.join("vm"))?;
    eprintln!(
        "vm-test --systemd: kernel {} (release {}, qemu -cpu {} -accel {})",
        k.label, k.release, k.cpu, k.accel
    );
    Ok(k)
}

/// The integration tests' `systemd` area (its scenarios are `#[ignore]`d: they run only here),
/// narrowed by the harness arguments (e.g. a name filter).
fn scenario_area(integration: &Path, harness_args: &[String]) -> anyhow::Result<areas::Area> {
    let args: Vec<String> = std::iter::once("--ignored".to_owned())
        .chain(harness_args.iter().cloned())
        .collect();
    areas::list(integration, &args)?
        .into_iter()
        .find(|a| a.name == SCENARIO_AREA)
        .with_context(|| format!("no test of the `{SCENARIO_AREA}` area matches {harness_args:?}"))
}

const SCENARIO_AREA: &str = "systemd";

fn executable(built: &[(String, PathBuf)], name: &str) -> anyhow::Result<PathBuf> {
    built
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p.clone())
        .with_context(|| format!("the build produced no `{name}` executable"))
}

/// FNV-1a: a cache key that stays the same across Rust versions (std's hasher need not).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.bytes().chain([0])) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The cached root filesystem tarball, built when its package list changed.
fn rootfs(work: &Path) -> anyhow::Result<PathBuf> {
    let mut key_parts = vec![SUITE];
    key_parts.extend(MIRRORS);
    key_parts.extend(PACKAGES);
    key_parts.extend(HOOKS);
    let tarball = work.join(format!("rootfs-{SUITE}-{:016x}.tar", fnv1a(&key_parts)));
    if tarball.is_file() {
        eprintln!("vm-test --systemd: cached {}", tarball.display());
        return Ok(tarball);
    }
    let partial = tarball.with_extension("tar.partial");
    let mut c = Command::new("mmdebstrap");
    c.args(["--mode=root", "--variant=minbase"])
        .arg(format!("--include={}", PACKAGES.join(",")));
    for hook in HOOKS {
        c.arg(format!("--customize-hook={hook}"));
    }
    c.args(["--format=tar", SUITE]).arg(&partial).args(MIRRORS);
    let t = Instant::now();
    crate::cmd::run("vm-test --systemd: mmdebstrap", &mut c)?;
    std::fs::rename(&partial, &tarball)?;
    eprintln!(
        "vm-test --systemd: root filesystem built in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(tarball)
}

fn unpack(tarball: &Path, tree: &Path) -> anyhow::Result<()> {
    if tree.exists() {
        std::fs::remove_dir_all(tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    std::fs::create_dir_all(tree)?;
    crate::cmd::run(
        "vm-test --systemd: unpack",
        Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(tarball)
            .arg("-C")
            .arg(tree),
    )
}

/// The script the unit runs: the scenarios (with the harness arguments given after `--`, e.g.
/// `--nocapture`), their output and result on the console.
fn scenario_script(scenarios: &areas::Area, harness_args: &[String]) -> String {
    let selection = super::shell_words(&scenarios.selection());
    let extra = super::shell_words(harness_args);
    format!(
        "/root/systemd-scenarios --ignored --test-threads=1 --nocapture {selection} {extra} \
         >/dev/ttyS0 2>&1\n\
         echo \"SHIFTER-VM-RESULT: $?\" >/dev/ttyS0\n"
    )
}

/// The package, the integration binary and the unit that runs its scenarios at boot.
fn install_into(
    tree: &Path,
    deb: &Path,
    next: &Path,
    integration: &Path,
    scenarios: &areas::Area,
    harness_args: &[String],
) -> anyhow::Result<()> {
    let copy = |from: &Path, to: &str| {
        std::fs::copy(from, tree.join(to))
            .with_context(|| format!("copying {} into the image", from.display()))
    };
    copy(deb, "root/shifter.deb")?;
    copy(next, "root/shifter-next.deb")?;
    copy(integration, "root/systemd-scenarios")?;
    let units = tree.join("etc/systemd/system");
    std::fs::write(units.join("shifter-scenarios.service"), SCENARIO_UNIT)?;
    std::fs::write(
        tree.join("root/run-scenarios.sh"),
        scenario_script(scenarios, harness_args),
    )?;
    let wants = units.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    std::os::unix::fs::symlink(
        "/etc/systemd/system/shifter-scenarios.service",
        wants.join("shifter-scenarios.service"),
    )?;
    Ok(())
}

/// The one file in `dir` whose name starts with `prefix` (the image's kernel and initrd).
fn only_file(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => bail!("{}: {n} files named {prefix}*, expected one", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::{SCENARIO_AREA, areas, fnv1a, scenario_script, with_words};

    #[test]
    fn a_kernel_option_already_on_the_command_line_is_not_repeated() {
        assert_eq!(
            with_words("quiet mitigations=off", "mitigations=off"),
            "quiet mitigations=off"
        );
        assert_eq!(with_words("quiet", "a=1 quiet"), "quiet a=1");
    }

    #[test]
    fn cache_key_depends_on_every_part_and_their_order() {
        let base = fnv1a(&["bookworm", "systemd", "nginx-light"]);
        assert_eq!(base, fnv1a(&["bookworm", "systemd", "nginx-light"]));
        assert_ne!(base, fnv1a(&["bookworm", "nginx-light", "systemd"]));
        assert_ne!(base, fnv1a(&["bookworm", "systemdnginx-light"]));
    }

    #[test]
    fn the_scenario_script_passes_the_harness_arguments_quoted() {
        let area = areas::Area {
            name: SCENARIO_AREA.to_owned(),
            tests: vec!["systemd::s9_a".to_owned()],
        };
        let s = scenario_script(&area, &["it's".to_owned()]);
        assert!(
            s.starts_with(
                "/root/systemd-scenarios --ignored --test-threads=1 --nocapture \
                 '--exact' 'systemd::s9_a' 'it'\\''s' >/dev/ttyS0"
            ),
            "{s}"
        );
        assert!(s.contains("SHIFTER-VM-RESULT: $?"), "{s}");
    }
}
