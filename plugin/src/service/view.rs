//! What the outside world sees of a volume: [`VolumeView`] (record + mount state) and its
//! live [`VolumeStatus`] (Docker's `Status`, `voltool volume inspect`), measured within
//! [`USAGE_BUDGET`] so Get and inspect answer fast even for huge trees.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::inner::Inner;
use crate::backend::AnyBackend;
use crate::error::Result;
use crate::options::{VolumeSpec, VolumeType, format_size};
use crate::store::VolumeRecord;

/// How long Status may spend measuring a local volume's usage.
const USAGE_BUDGET: Duration = Duration::from_millis(300);

/// Live state of a volume, as Docker's `Status` and `voltool volume inspect` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VolumeStatus {
    #[serde(rename = "type")]
    pub kind: VolumeType,
    /// Human size limit (`16 MiB`) or `none`.
    pub size_limit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_limit_bytes: Option<u64>,
    /// Allocated bytes; absent when they could not be measured quickly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// What the filesystem can hold (below the limit by its metadata); mounted tmpfs and
    /// image-backed volumes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// `directory`, `image (ext4)`, `image (xfs)` or `tmpfs`.
    pub backing: String,
    pub mounted: bool,
    pub mount_count: usize,
    /// The newest finished backup (complete or failed) and its verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
}

/// The last backup of a volume, as its Status shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LastBackup {
    pub id: String,
    pub status: crate::store::BackupStatus,
    pub time: String,
    /// `ok`, `failed` or `not verified`.
    pub verified: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The consistency steps it took (`none`, `stop`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// How long the volume's containers were held for it, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
}

/// A volume as the outside world sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeView {
    pub name: String,
    pub mountpoint: PathBuf,
    pub created_at: String,
    /// The options the user passed (never secrets).
    pub options: BTreeMap<String, String>,
    pub spec: VolumeSpec,
    /// Only filled in by [`VolumeService::get`], which measures usage.
    pub status: Option<VolumeStatus>,
    pub mounted: bool,
    pub mount_count: usize,
}

impl Inner {
    pub(super) fn view(&self, rec: VolumeRecord) -> Result<VolumeView> {
        let mount_count = self.store.mount_ids(&rec.name)?.len();
        let mounted = self.is_mounted(&rec.name, &rec.spec)?;
        Ok(VolumeView {
            mountpoint: self.layout.mountpoint(&rec.name),
            name: rec.name,
            created_at: rec.created_at,
            options: rec.options,
            spec: rec.spec,
            status: None,
            mounted,
            mount_count,
        })
    }

    /// The live status of volume `v` (usage measured within [`USAGE_BUDGET`]).
    pub(super) fn status(&self, v: &VolumeView) -> VolumeStatus {
        let n = v.name.as_str();
        let backend = AnyBackend::for_spec(&v.spec);
        VolumeStatus {
            kind: v.spec.kind,
            size_limit: v.spec.size.map_or_else(|| "none".to_string(), format_size),
            size_limit_bytes: v.spec.size,
            used_bytes: backend.used_bytes(&self.host, &self.layout, n, &v.spec, v.mounted, USAGE_BUDGET),
            capacity_bytes: backend.capacity_bytes(&self.layout, n, v.mounted),
            backing: match backend {
                AnyBackend::Nfs if self.host.nfs_userspace => "nfs (userspace client over FUSE)".into(),
                AnyBackend::Nfs => "nfs (kernel client)".into(),
                _ => backend.describe(),
            },
            mounted: v.mounted,
            mount_count: v.mount_count,
            last_backup: self.store.last_backup(n).ok().flatten().map(|b| LastBackup {
                id: b.id,
                status: b.status,
                time: b.finished_at.unwrap_or(b.started_at),
                verified: b.verify_status.unwrap_or_else(|| "not verified".into()),
                reason: b.reason,
                consistency: b.consistency,
                downtime_ms: b.downtime_ms,
            }),
        }
    }
}
