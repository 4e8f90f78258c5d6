//! The `shifter` binary, built inside the tests crate so integration tests can run it as a
//! real process (`CARGO_BIN_EXE_shifter-t`): same code as shifter/src/main.rs.

fn main() -> std::process::ExitCode {
    shifter::cli::main()
}
