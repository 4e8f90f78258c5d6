//! The `shifter` binary: the daemon and the CLI (see `shifter --help`).

fn main() -> std::process::ExitCode {
    shifter::cli::main()
}
