//! Volumes: `GET /v1/volumes[/{name}]`, `POST /v1/volumes`, `POST /v1/volumes/{name}/resize`,
//! `/mount`, `/unmount`, `DELETE /v1/volumes/{name}`, and the daemon's `GET /v1/version`.
//!
//! A volume is shown in Docker's `docker volume inspect` shape ([`VolumeInspect`]); its
//! `Status` is measured only when one volume is asked for ([`Status::Detail`]), a listing
//! carries the summary ([`Status::Summary`]: no usage is measured for a whole list).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backups::BackupStatus;

/// A volume in Docker's `docker volume inspect` shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeInspect {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    #[serde(rename = "Status")]
    pub status: Status,
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "Scope")]
    pub scope: String,
    /// What the user passed at create (never a secret's value).
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
    /// Things the user should know about the create they just made (not Docker's shape;
    /// only in the reply to a create).
    #[serde(rename = "Warnings", default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A volume's `Status`: measured for one volume, a summary in listings. Untagged: the two
/// are told apart by their fields (only the detail has `backing`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Status {
    Detail(Box<StatusDetail>),
    Summary(StatusSummary),
}

impl Status {
    /// `local`, `tmpfs`, `nfs` or `cifs`.
    pub fn kind(&self) -> &str {
        match self {
            Status::Detail(d) => &d.kind,
            Status::Summary(s) => &s.kind,
        }
    }

    /// The size limit in binary units (`16 MiB`) or `none`.
    pub fn size_limit(&self) -> &str {
        match self {
            Status::Detail(d) => &d.size_limit,
            Status::Summary(s) => &s.size_limit,
        }
    }

    /// How many mount IDs hold the volume.
    pub fn mount_count(&self) -> u64 {
        match self {
            Status::Detail(d) => d.mount_count,
            Status::Summary(s) => s.mount_count,
        }
    }
}

/// The live status of one volume (`voltool volume inspect`). Fields in alphabetical order
/// (see the crate docs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusDetail {
    /// `directory`, `image (ext4)`, `image (xfs)`, `tmpfs`, `nfs (kernel client)`, ...
    pub backing: String,
    /// What the filesystem can hold (below the limit by its metadata); mounted tmpfs and
    /// image-backed volumes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// The newest finished backup (complete or failed) and its verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    pub mount_count: u64,
    pub mounted: bool,
    /// The size limit in binary units (`16 MiB`) or `none`.
    pub size_limit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit_bytes: Option<u64>,
    /// `local`, `tmpfs`, `nfs` or `cifs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Allocated bytes; absent when they could not be measured quickly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
}

/// A volume's status in listings: nothing measured. Fields in alphabetical order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusSummary {
    pub mount_count: u64,
    pub mounted: bool,
    /// The size limit in binary units (`16 MiB`) or `none`.
    pub size_limit: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// The last backup of a volume, as its status shows it. Fields in alphabetical order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastBackup {
    /// The consistency steps it took (`none`, `stop`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// How long the volume's containers were held for it, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: BackupStatus,
    /// When it finished (when it started, for a run that never finished).
    pub time: String,
    /// `ok`, `failed` or `not verified`.
    pub verified: String,
}

/// Body of `POST /v1/volumes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateVolume {
    pub name: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Body of `POST /v1/volumes/{name}/resize`: the new limit (`128m`, `20G`, `1.5GiB`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResizeVolume {
    pub size: String,
}

/// Body of `POST /v1/volumes/{name}/mount` and `/unmount`: the mount ID that holds the
/// volume (counted like a container's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountId {
    pub id: String,
}

/// Answer to `POST /v1/volumes/{name}/mount` (Docker's spelling).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mounted {
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
}

/// Answer to `POST /v1/volumes/{name}/unmount`: the volume's name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Unmounted {
    pub unmounted: String,
}

/// Answer to a `DELETE` of a volume or a secret: its name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Removed {
    pub removed: String,
}

/// Answer to `GET /v1/version`: the daemon's identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: String,
    pub state_dir: String,
    pub mount_root: String,
    pub driver: String,
}
