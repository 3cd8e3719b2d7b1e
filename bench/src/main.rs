//! `voltool-bench`: benchmarks for the voltool daemon.
//!
//! `plugin-latency` measures what dockerd waits for when it starts and stops a container
//! with a voltool volume: one `VolumeDriver.Mount` + `VolumeDriver.Unmount` pair over the
//! plugin unix socket. It runs two servers side by side, each in its own process:
//!
//! * the real daemon (`voltool serve`), where Mount bind-mounts a local volume and Unmount
//!   umounts it, with SQLite bookkeeping and `spawn_blocking` hops on each call;
//! * "the floor" (`voltool-bench floor-server`): a trivial [`VolumeDriver`] whose every call
//!   returns at once, served through the *same* `voltool_plugin::protocol::router`.
//!
//! Because the floor shares the router, the HTTP/1.1 parsing, JSON (de)serialisation, axum
//! dispatch and the unix-socket round trip are identical for both; the difference between
//! the two is what the daemon's own work (syscalls, store, locking) costs per call.
//!
//! [`VolumeDriver`]: voltool_plugin::protocol::VolumeDriver

mod floor;
mod http;
mod plugin_latency;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "voltool-bench", about = "Benchmarks for the voltool daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a trivial VolumeDriver (every call returns at once) through the real protocol
    /// router on SOCKET: the floor `plugin-latency` compares against.
    FloorServer {
        /// Unix socket to listen on (replaced if it exists).
        socket: PathBuf,
    },
    /// Mount+Unmount latency over the plugin socket: `voltool serve` vs the floor server.
    PluginLatency(plugin_latency::Args),
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::FloorServer { socket } => floor::serve(&socket).await,
        Command::PluginLatency(args) => plugin_latency::run(args).await,
    }
}
