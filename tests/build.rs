//! Builds a second copy of the kernel programs, `shifter-ebpf` with the `build-variant`
//! feature (other instructions in a path nothing takes, same maps), for the upgrade tests:
//! `shifter_tests::VARIANT_OBJECT`. Same toolchain choice as shifter/build.rs.

#[path = "../shifter/ebpf_build.rs"]
mod ebpf_build;

fn main() -> anyhow::Result<()> {
    ebpf_build::build(&["build-variant"])
}
