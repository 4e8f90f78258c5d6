//! The kernel programs live in `main.rs` (built for `bpfel-unknown-none` by `shifter/build.rs`).
//! This library target only exists so the userspace crate can depend on this crate and be
//! rebuilt when it changes.
#![no_std]
