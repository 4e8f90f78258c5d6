//! The `shifter` command line: one module per verb. Every verb but `daemon`,
//! `check-config`, `completions` and `man` talks to the daemon through the control API.

mod blue_green;
mod check_config;
mod completions;
mod daemon;
mod detach;
mod events;
mod fleet;
mod flows;
mod history;
mod man;
mod offline;
mod promote;
mod rollback;
mod rollout;
mod set_weight;
mod status;
mod table;
mod wait;
pub mod watch;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    api::client::{Client, ClientError},
    paths,
};

/// Exit code for a bad configuration or bad arguments (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit code when the daemon is not running (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code of a daemon the kernel refused a privilege at start-up (EX_NOPERM): a missing
/// capability or a syscall the unit filters out. The unit does not restart on it.
pub const EXIT_NOPERM: u8 = 77;

#[derive(Parser)]
#[command(
    name = "shifter",
    version,
    about = "Shift new connections between a blue and a green backend port, in the kernel",
    long_about = "shifter steers each new connection to a service port to the blue or the green \
                  version of the service, by weight, with eBPF. `shifter daemon` owns the data plane; \
                  the other commands talk to it over its control socket."
)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "SHIFTER_SOCKET", default_value = paths::SOCKET, value_name = "PATH")]
    socket: PathBuf,
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    Daemon(daemon::Args),
    Status(status::Args),
    SetWeight(set_weight::Args),
    Rollout(rollout::Args),
    Promote(promote::Args),
    Rollback(rollback::Args),
    BlueGreen(blue_green::Args),
    Flows(flows::Args),
    Fleet(fleet::Args),
    Events(events::Args),
    History(history::Args),
    CheckConfig(check_config::Args),
    Detach(detach::Args),
    Completions(completions::Args),
    Man(man::Args),
    Watch(watch::Args),
}

/// What a verb ends with.
pub(crate) enum Failure {
    /// One line for stderr and an exit code.
    Message(String, u8),
}

pub(crate) type VerbResult = Result<(), Failure>;

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match e {
            ClientError::NotRunning(_) => EXIT_UNAVAILABLE,
            _ => 1,
        };
        Self::Message(e.to_string(), code)
    }
}

pub(crate) fn fail(msg: impl Into<String>) -> Failure {
    Failure::Message(msg.into(), 1)
}

/// A current-thread runtime for the client verbs.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.socket);
    let res = match cli.command {
        Verb::Daemon(a) => daemon::run(a),
        Verb::Status(a) => status::run(&client, a),
        Verb::SetWeight(a) => set_weight::run(&client, a),
        Verb::Rollout(a) => rollout::run(&client, a),
        Verb::Promote(a) => promote::run(&client, a),
        Verb::Rollback(a) => rollback::run(&client, a),
        Verb::BlueGreen(a) => blue_green::run(&client, a),
        Verb::Flows(a) => flows::run(&client, a),
        Verb::Fleet(a) => fleet::run(a),
        Verb::Events(a) => events::run(&client, a),
        Verb::History(a) => history::run(&client, a),
        Verb::CheckConfig(a) => check_config::run(a),
        Verb::Detach(a) => detach::run(&client, a),
        Verb::Completions(a) => completions::run(a),
        Verb::Man(a) => man::run(a),
        Verb::Watch(a) => watch::run(&client, a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Message(msg, code)) => {
            for line in msg.lines() {
                eprintln!("shifter: {line}");
            }
            ExitCode::from(code)
        }
    }
}

/// Prints JSON (pretty) to stdout.
pub(crate) fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}
