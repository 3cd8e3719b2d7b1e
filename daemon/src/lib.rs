//! # voltool-daemon
//!
//! ## Overview
//! What pulls voltool's crates together into one daemon: the backup engine ([`backups`]:
//! runs, catalog, verify, retention, scheduler), restores, export/import and the migration
//! receiver ([`restores`]), the management API's routes ([`routes`]) and who may call them
//! ([`access`]), what volume options from Docker may name ([`policy`]), the config file
//! ([`config`]), and [`Daemon`], which opens all of it from one [`DaemonConfig`] and serves
//! the Docker plugin API and the management API.
//!
//! ## Design
//! The dependency arrows point one way: `voltool-runtime` ← `voltool-plugin` (volumes),
//! `voltool-runtime` ← `voltool-backup` ← `voltool-restore` ← `voltool-migrate` (archives,
//! restores, the stream), and all of them ← this crate ← the `voltool` binary. The daemon
//! owns the volume service and the engine, so the things that need both are methods here:
//! Docker's `Remove` of an `on-remove=archive` volume backs it up first
//! ([`Daemon::remove_volume`]); the engine holds the restores (restore tests after scheduled
//! backups) and the restores hold the catalog ([`backups::Catalog`]), not the engine — no
//! late binding. Handlers return `Result<_, ApiError>`; the status of every error kind is
//! decided in one exhaustive `match` ([`error::status_of`]). Response bodies are the
//! `voltool-api` crate's types, which the CLI deserialises ([`views`] converts the volume
//! service's and the catalog's own types into them).
//!
//! This crate never prints and reads no environment variables: the binary parses the command
//! line and sets up logging.
//!
//! ## Limitations
//! One daemon per state directory (a lock file); the Docker plugin socket and the management
//! socket are unix sockets only.

pub mod access;
pub mod backups;
pub mod config;
mod daemon;
pub mod error;
mod grammar;
pub mod http;
pub mod observe;
pub mod policy;
pub mod restores;
pub mod routes;
mod status;
pub mod status_page;
pub mod views;

pub use config::{ConfigFile, DaemonConfig, LogFormat};
pub use daemon::{Daemon, OpenError};
pub use error::{ApiError, Error, Result};
