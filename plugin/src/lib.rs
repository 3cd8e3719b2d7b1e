//! # voltool-plugin
//!
//! ## Overview
//! What a Docker volume plugin is: the VolumeDriver protocol ([`protocol`]: its DTOs, the
//! [`protocol::VolumeDriver`] trait and the axum router), option parsing ([`options`]), the
//! volume service with Mount-ID reference counting ([`service`]), the storage backends
//! ([`backend`]: local, image, tmpfs, nfs, cifs), the secrets of network volumes
//! ([`secrets`]) and the SQLite state ([`store`], which also holds the backup catalog's
//! tables, as plain rows).
//!
//! ## Design
//! handler → service → store/backends (the bottlerocket apiserver shape). The service owns
//! all volume state. All syscalls go through an `Arc<dyn voltool_runtime::Mounter>` (and the
//! other seams of [`backend::Host`]) passed to [`VolumeService::open`], so every test in this
//! crate runs without root against the recording fakes. Work on one volume is serialised;
//! different volumes never wait on each other.
//!
//! This crate must not know about backups, restores or migration: it depends on
//! `voltool-runtime` only. The daemon (`voltool-daemon`) builds those on top of the service,
//! checks the backup options of a volume (`backup-schedule`, `backup-keep`,
//! `backup-target`) before creating it, and backs a volume up before removing it
//! (`on-remove=archive`).
//!
//! ## Limitations
//! NFS/CIFS `size=` and `on-remove=delete` for network volumes are refused with a message
//! saying so. tmpfs contents live only while the volume is mounted by some container, like
//! Docker's own tmpfs volumes.

pub mod backend;
pub mod doctor;
pub mod error;
pub mod options;
pub mod protocol;
pub mod secrets;
pub mod service;
pub mod store;

pub use backend::Layout;
pub use error::{Error, Result};
pub use service::VolumeService;
