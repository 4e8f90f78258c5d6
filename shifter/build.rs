//! Builds the kernel programs (shifter-ebpf) and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`.

#[path = "ebpf_build.rs"]
mod ebpf_build;

fn main() -> anyhow::Result<()> {
    ebpf_build::build(&[])
}
