//! `voltool`: the daemon (`voltool serve`) and its thin command-line client.
//!
//! Every subcommand but `serve` talks to the daemon's management API over a unix socket;
//! the daemon owns all volumes. Errors print their whole chain (`{:#}`); a closed stdout
//! (`voltool volume ls | head -1`) is not an error.

mod cli;
mod client;
mod commands;
mod human;
mod output;
mod table;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voltool: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voltool: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
