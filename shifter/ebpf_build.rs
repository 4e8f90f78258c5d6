//! Builds `shifter-ebpf` with aya-build, choosing the toolchain by probing. Shared by
//! shifter/build.rs (the programs) and tests/build.rs (a variant build for upgrade tests)
//! through `#[path]`, so both pick the toolchain the same way.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};
use std::process::Command;

/// The Debian rustc with a prebuilt `core` for the BPF targets, linked into rustup by
/// `cargo xtask setup` (see TOOLCHAIN.md).
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

/// Builds `shifter-ebpf` with `features` into OUT_DIR.
pub fn build(features: &[&str]) -> anyhow::Result<()> {
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
        // A prebuilt core is used: only aya-ebpf needs unstable features, and a global
        // RUSTC_BOOTSTRAP=1 would make aya-build ask for build-std.
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf") };
    }
    let package = Package {
        name: "shifter-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../shifter-ebpf"),
        features,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain)).with_context(|| {
        format!("building the eBPF programs (features {features:?}) with toolchain {toolchain}")
    })
}
