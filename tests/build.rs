//! Builds a second copy of the kernel programs, `shifter-ebpf` with the `build-variant`
//! feature (other instructions in a path nothing takes, same maps), for the upgrade tests:
//! `shifter_tests::VARIANT_OBJECT`. The toolchain choice is the one of shifter/build.rs.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};
use std::process::Command;

/// See shifter/build.rs and TOOLCHAIN.md.
const DEBIAN_TOOLCHAIN: &str = "debian-bpf";

fn toolchain_works(name: &str, check_rust_src: bool) -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["run", name, "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    if !check_rust_src {
        return true;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::path::Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .exists()
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SHIFTER_BPF_TOOLCHAIN");
    let chosen = std::env::var("SHIFTER_BPF_TOOLCHAIN").ok();
    let toolchain = match chosen.as_deref() {
        Some(name) => name.to_owned(),
        None if toolchain_works(DEBIAN_TOOLCHAIN, false) => DEBIAN_TOOLCHAIN.to_owned(),
        None if toolchain_works("nightly", true) => "nightly".to_owned(),
        None => {
            return Err(anyhow!(
                "no toolchain can build the eBPF programs: run `cargo xtask setup` \
                 (needs the rustup toolchain `{DEBIAN_TOOLCHAIN}` or nightly with rust-src, and bpf-linker)"
            ));
        }
    };
    if toolchain != "nightly" {
        // A prebuilt core is used: only aya-ebpf needs unstable features.
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf") };
    }
    let package = Package {
        name: "shifter-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../shifter-ebpf"),
        features: &["build-variant"],
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain))
        .with_context(|| format!("building the variant eBPF programs with toolchain {toolchain}"))
}
