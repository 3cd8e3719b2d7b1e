//! One file per subcommand.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command, NotifyCommand};
use crate::client::Api;

mod backup;
mod backup_target;
mod doctor;
mod migrate;
mod restore;
mod secret;
mod serve;
mod status;
mod volume;

/// Dispatches a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let api = Api::new(cli.api_socket.clone());
    match cli.command {
        Command::Serve(args) => serve::run(args, cli.api_socket, cli.log_format).await,
        Command::Volume(cmd) => volume::run(&api, cmd).await,
        Command::Doctor(args) => doctor::run(&api, args).await,
        Command::Status { json } => status::status(&api, json).await,
        Command::Notify(NotifyCommand::Test { name, json }) => status::notify_test(&api, name, json).await,
        Command::Secret(cmd) => secret::run(&api, cmd).await,
        Command::Backup(cmd) => backup::run(&api, cmd).await,
        Command::Restore(args) => restore::restore(&api, args).await,
        Command::Migrate(args) => migrate::migrate(&api, args).await,
        Command::Receive { name } => migrate::receive(&api, &name).await,
        Command::Export { volume, output } => restore::export(&api, &volume, output.as_deref()).await,
        Command::Import { volume, input, opts } => restore::import(&api, &volume, input.as_deref(), &opts, false).await,
    }
}
