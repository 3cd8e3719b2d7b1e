//! # voltool-plugin
//!
//! ## Overview
//! Everything about volumes: the Docker VolumeDriver protocol ([`protocol`]), the management
//! API for the CLI ([`mgmt`]), option parsing ([`options`]), the volume service with Mount-ID
//! reference counting ([`service`]), the storage backends ([`backend`]) and the SQLite state
//! ([`store`]).
//!
//! ## Design
//! handler → service → store/backends (the bottlerocket apiserver shape). The service owns
//! all state; the two HTTP front ends are thin. All syscalls go through an
//! `Arc<dyn voltool_runtime::Mounter>` passed to [`VolumeService::open`], so every test in
//! this crate runs without root against the recording fake. Work on one volume is
//! serialised; different volumes never wait on each other.
//!
//! The backup engine ([`backups`]: runs, catalog, verify, retention, scheduler) and its API
//! routes ([`backup_api`]) live here too, on top of the service and the store; the archive
//! format and the targets are in `voltool-backup`.
//!
//! ## Limitations
//! NFS/CIFS `size=` and `on-remove=delete` for network volumes and `on-remove=archive` are
//! refused with a message saying so. tmpfs contents live only
//! while the volume is mounted by some container, like Docker's own tmpfs volumes.

pub mod access;
pub mod backend;
pub mod backup_api;
pub mod backups;
pub mod doctor;
pub mod error;
pub mod mgmt;
pub mod options;
pub mod protocol;
pub mod restore_api;
pub mod restores;
pub mod secrets;
pub mod service;
pub mod store;

pub use backend::Layout;
pub use error::{Error, Result};
pub use service::VolumeService;
