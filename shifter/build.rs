//! Builds the kernel programs (shifter-ebpf) and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`.
//!
//! `SHIFTER_EBPF_VARIANT=1` builds the `build-variant` programs instead (other instructions
//! in a path nothing takes, same maps): only for packages that test an upgrade to another
//! build (`cargo xtask deb --ebpf-variant`).

#[path = "ebpf_build.rs"]
mod ebpf_build;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SHIFTER_EBPF_VARIANT");
    if std::env::var_os("SHIFTER_EBPF_VARIANT").is_some_and(|v| v == "1") {
        ebpf_build::build(&["build-variant"])
    } else {
        ebpf_build::build(&[])
    }
}
