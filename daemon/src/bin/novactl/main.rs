//! novactl: the NovaCron command-line client. It speaks novacrond's HTTP API through
//! `novacrond::client` and holds no behaviour of its own.

mod addresses;
mod agent;
mod cli;
mod commands;
mod console;
mod disks;
mod exit;
mod live_resources;
mod migrate;
mod networks;
mod nic_tune;
mod output;
mod pinning;
mod progress;
mod remote;
mod snapshots;
mod templates;
mod volumes;

/// README.md's command lines, which the tests parse as written.
#[cfg(test)]
#[path = "../../../tests/common/readme.rs"]
mod readme;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

fn main() -> ExitCode {
    // Clap prints usage errors and --help itself, exiting 2 and 0.
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "novactl",
            &mut std::io::stdout(),
        );
        return ExitCode::from(exit::OK);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("novactl: cannot start the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) if e.is_broken_pipe() => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("novactl: {e}");
            e.into_exit_code()
        }
    }
}
