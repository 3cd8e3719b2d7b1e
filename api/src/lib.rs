//! # voltool-api
//!
//! ## Overview
//! The request and response bodies of the management API (the daemon's unix socket,
//! `/run/voltool/voltool.sock` by default), as the daemon serialises them and the `voltool`
//! CLI deserialises them. One definition per body, so the two cannot drift apart:
//! [`volumes`] (Docker's `volume inspect` shape, create/resize/mount), [`secrets`],
//! [`doctor`], [`backups`] (catalog entries with live progress, verify, prune, schedules),
//! [`targets`] (what a target holds, `backup sync`) and [`restores`] (restore, import,
//! restore test; a migration's receive answers a [`RestoreOutcome`] too).
//!
//! ## Design
//! Plain data: `Serialize + Deserialize`, no I/O and no dependency on the daemon's crates
//! (this crate is a leaf: serde only). Where the daemon's own type is plain data it *is* the
//! type here (re-exported); where the daemon keeps more (a catalog row's internals, the
//! volume service's view), it converts at the HTTP edge (`voltool_daemon::views`). Field
//! names are the wire names, and field order is the order on the wire: where the daemon used
//! to send a body through `serde_json::Value` (whose maps sort their keys), the fields here
//! are declared in alphabetical order so the bytes stay the same.
//!
//! ## Limitations
//! The API is versioned by its path (`/v1/`); these types describe v1 only. Streams
//! (export, import, a migration's frames) are raw bytes, not types: only their query strings
//! and their JSON answers are here.

use serde::{Deserialize, Serialize};

pub mod backups;
pub mod doctor;
pub mod restores;
pub mod secrets;
pub mod status;
pub mod targets;
pub mod volumes;

pub use backups::{
    BackupRecord, BackupStarted, BackupStatus, BackupView, ProgressView, PruneBackups, PruneItem, RunBackup,
    ScheduleView, VerifyBackup, VerifyOutcome,
};
pub use doctor::{DoctorReport, Finding, KernelReport};
pub use restores::{RestoreFlags, RestoreOutcome, RestoreRequest, RestoreTestOutcome, RestoreTestRequest};
pub use secrets::{AddSecret, SecretAdded, SecretInfo};
pub use targets::{CatalogMark, FoundState, Skipped, SyncBackups, SyncReport, TargetBackup, TargetListing, TargetSync};
pub use volumes::{
    CreateVolume, LastBackup, MountId, Mounted, Removed, ResizeVolume, Status, StatusDetail, StatusSummary, Unmounted,
    VersionInfo, VolumeInspect,
};

/// The body of every error response: `{"error": "..."}`. The message names the volume,
/// backup or path and never carries a secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests;
