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
//! ## Limitations
//! This version has `local` and `tmpfs` volumes. Size limits on local volumes, NFS and CIFS,
//! `on-remove` and the `backup-*` options are refused with a message saying so; they come in
//! later versions. tmpfs contents live only while the volume is mounted by some container,
//! like Docker's own tmpfs volumes.

pub mod backend;
pub mod backup_api;
pub mod backups;
pub mod doctor;
pub mod error;
pub mod mgmt;
pub mod options;
pub mod protocol;
pub mod secrets;
pub mod service;
pub mod store;

pub use backend::Layout;
pub use error::{Error, Result};
pub use service::VolumeService;
