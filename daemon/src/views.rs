//! The daemon's state as the management API shows it: conversions from the volume service's
//! and the catalog's own types into the `voltool-api` bodies, at the HTTP edge.
//!
//! Plain data the daemon makes only to answer (verify and prune outcomes, schedules, restore
//! outcomes) *is* the `voltool-api` type, re-exported where the daemon defines its work. What
//! is converted here carries more inside the daemon than on the wire (a catalog row, the
//! volume service's view with its parsed spec) or belongs to a crate that must not depend on
//! the API (the plugin, the runtime's kernel probe). Functions, not `From` impls: both sides
//! are other crates' types.

use std::collections::BTreeMap;
use std::path::Path;

use voltool_api::{
    BackupRecord, DoctorReport, Finding, KernelReport, LastBackup, SecretInfo, Status, StatusDetail, StatusSummary,
    VolumeInspect,
};
use voltool_plugin::service::{VolumeStatus, VolumeView};
use voltool_plugin::store::{BackupRow, BackupStatus};

/// The one size formatter (`16 MiB`, `1.50 GiB`): the daemon's `size_limit`, and the CLI's
/// sizes.
pub use voltool_plugin::options::format_size;

/// A volume in Docker's `volume inspect` shape; `driver` is the name Docker knows this
/// daemon by. A view with a measured status (one volume) shows it, a listing's the summary.
pub fn volume_inspect(v: VolumeView, driver: &str) -> VolumeInspect {
    let status = match v.status {
        Some(s) => Status::Detail(Box::new(status_detail(s))),
        None => Status::Summary(StatusSummary {
            mount_count: v.mount_count as u64,
            mounted: v.mounted,
            size_limit: v.spec.size.map_or_else(|| "none".to_string(), format_size),
            kind: v.spec.kind.to_string(),
        }),
    };
    VolumeInspect {
        name: v.name,
        driver: driver.to_string(),
        mountpoint: v.mountpoint.display().to_string(),
        created_at: v.created_at,
        status,
        labels: BTreeMap::new(),
        scope: "local".into(),
        options: v.options,
        warnings: Vec::new(),
    }
}

fn status_detail(s: VolumeStatus) -> StatusDetail {
    StatusDetail {
        backing: s.backing,
        capacity_bytes: s.capacity_bytes,
        last_backup: s.last_backup.map(|b| LastBackup {
            id: b.id,
            reason: b.reason,
            status: backup_status(b.status),
            time: b.time,
            verified: b.verified,
            consistency: b.consistency,
            downtime_ms: b.downtime_ms,
        }),
        mount_count: s.mount_count as u64,
        mounted: s.mounted,
        size_limit: s.size_limit,
        size_limit_bytes: s.size_limit_bytes,
        kind: s.kind.to_string(),
        used_bytes: s.used_bytes,
    }
}

pub(crate) fn backup_status(s: BackupStatus) -> voltool_api::BackupStatus {
    match s {
        BackupStatus::Running => voltool_api::BackupStatus::Running,
        BackupStatus::Complete => voltool_api::BackupStatus::Complete,
        BackupStatus::Failed => voltool_api::BackupStatus::Failed,
        BackupStatus::Deleting => voltool_api::BackupStatus::Deleting,
    }
}

/// A catalog row as the API shows it.
pub fn backup_record(r: BackupRow) -> BackupRecord {
    BackupRecord {
        id: r.id,
        volume: r.volume,
        target_ref: r.target_ref,
        target_url: r.target_url,
        trigger: r.trigger,
        started_at: r.started_at,
        finished_at: r.finished_at,
        duration_ms: r.duration_ms,
        status: backup_status(r.status),
        reason: r.reason,
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        files: r.files,
        sha256: r.sha256,
        upload_token: r.upload_token,
        cleanup_pending: r.cleanup_pending,
        verify_status: r.verify_status,
        verify_at: r.verify_at,
        verify_reason: r.verify_reason,
        test_status: r.test_status,
        test_at: r.test_at,
        test_reason: r.test_reason,
        consistency: r.consistency,
        downtime_ms: r.downtime_ms,
        snapshot: r.snapshot,
        consistency_note: r.consistency_note,
        parent: r.parent,
        level: r.level,
        encrypted: r.encrypted,
        origin: r.origin,
        vanished_at: r.vanished_at,
    }
}

impl From<crate::backups::BackupView> for voltool_api::BackupView {
    fn from(v: crate::backups::BackupView) -> Self {
        Self { record: backup_record(v.row), progress: v.progress }
    }
}

/// A restore's flags as the API takes them (a restore's body, an import's query): not a
/// scratch restore.
impl From<voltool_api::RestoreFlags> for crate::restores::RestoreOptions {
    fn from(f: voltool_api::RestoreFlags) -> Self {
        Self { flags: f, scratch: false }
    }
}

/// A secret as listings show it (never its value).
pub fn secret_info(s: voltool_plugin::secrets::SecretInfo) -> SecretInfo {
    SecretInfo { name: s.name, updated_at: s.updated_at, servers: s.servers }
}

/// What this host supports, probed from this process with volumes under `state_dir`
/// (blocking: it reads /proc and stats the state dir). The daemon answers `GET /v1/doctor`
/// with it; the CLI uses it when no daemon answers.
pub fn doctor_report(state_dir: &Path) -> DoctorReport {
    doctor_view(voltool_plugin::doctor::assess(voltool_runtime::probe::kernel_report(state_dir)))
}

fn doctor_view(r: voltool_plugin::doctor::DoctorReport) -> DoctorReport {
    let k = r.kernel;
    DoctorReport {
        kernel: KernelReport {
            filesystems: k.filesystems,
            kernel_nfs: k.kernel_nfs,
            kernel_cifs: k.kernel_cifs,
            kernel_quota: k.kernel_quota,
            loop_devices: k.loop_devices,
            fuse: k.fuse,
            state_dir_fs: k.state_dir_fs,
            state_dir_project_quota: k.state_dir_project_quota,
            state_dir_reflink: k.state_dir_reflink,
        },
        findings: r
            .findings
            .into_iter()
            .map(|f| Finding { feature: f.feature, available: f.available, detail: f.detail })
            .collect(),
    }
}

#[cfg(test)]
#[path = "views_tests.rs"]
mod tests;
