//! The converted bodies are byte for byte what the daemon sent before `voltool-api`: the
//! volume status through `serde_json::Value` (sorted keys), the rest serialised directly.

use std::path::PathBuf;

use serde_json::json;
use voltool_plugin::options::{VolumeSpec, VolumeType};
use voltool_plugin::service::{LastBackup, VolumeStatus, VolumeView};
use voltool_plugin::store::{BackupRow, BackupStatus};
use voltool_runtime::probe::KernelReport;

use super::*;

fn view(status: Option<VolumeStatus>) -> VolumeView {
    VolumeView {
        name: "db".into(),
        mountpoint: PathBuf::from("/mnt/db"),
        created_at: "2026-01-01T00:00:00Z".into(),
        options: [("size".to_string(), "16m".to_string())].into(),
        spec: VolumeSpec { kind: VolumeType::Tmpfs, size: Some(16 << 20), ..VolumeSpec::default() },
        status,
        mounted: true,
        mount_count: 2,
    }
}

fn measured(last_backup: Option<LastBackup>) -> VolumeStatus {
    VolumeStatus {
        kind: VolumeType::Local,
        size_limit: "none".into(),
        size_limit_bytes: None,
        used_bytes: Some(4096),
        capacity_bytes: None,
        backing: "directory".into(),
        mounted: false,
        mount_count: 0,
        last_backup,
    }
}

#[test]
fn a_listed_volume_shows_the_summary_the_json_macro_made() {
    let v = volume_inspect(view(None), "voltool");
    let old = json!({ "type": VolumeType::Tmpfs, "size_limit": "16 MiB", "mounted": true, "mount_count": 2 });
    assert_eq!(serde_json::to_string(&v.status).expect("json"), old.to_string());
    assert_eq!((v.name.as_str(), v.driver.as_str(), v.mountpoint.as_str()), ("db", "voltool", "/mnt/db"));
    assert_eq!(v.scope, "local");
    assert_eq!(v.options["size"], "16m");
}

#[test]
fn an_inspected_volume_shows_its_measured_status_unchanged() {
    let last = LastBackup {
        id: "db-1".into(),
        status: BackupStatus::Failed,
        time: "t1".into(),
        verified: "not verified".into(),
        reason: Some("disk full".into()),
        consistency: Some("hooks,stop".into()),
        downtime_ms: Some(1234),
    };
    for s in [measured(None), measured(Some(last))] {
        let old = serde_json::to_value(&s).expect("json").to_string();
        let v = volume_inspect(view(Some(s)), "voltool");
        assert!(matches!(v.status, voltool_api::Status::Detail(_)));
        assert_eq!(serde_json::to_string(&v.status).expect("json"), old);
    }
}

fn row() -> BackupRow {
    let mut r = BackupRow::running("db-1", "db", "default", "file:///b", "manual", "t0");
    r.upload_token = Some("up".into());
    r
}

#[test]
fn a_backup_view_is_the_catalog_row_and_progress_unchanged() {
    let progress = Some(voltool_api::ProgressView { phase: "archiving".into(), done_bytes: 5, total_bytes: None });
    for (mut row, progress) in [(row(), progress), (row(), None)] {
        for status in [BackupStatus::Running, BackupStatus::Complete, BackupStatus::Failed, BackupStatus::Deleting] {
            row.status = status;
            let daemon = crate::backups::BackupView { row: row.clone(), progress: progress.clone() };
            let old = serde_json::to_string(&daemon).expect("json");
            let api = voltool_api::BackupView::from(daemon);
            assert_eq!(serde_json::to_string(&api).expect("json"), old);
        }
    }
    let mut done = row();
    (done.upload_token, done.cleanup_pending, done.duration_ms) = (None, true, Some(9));
    assert_eq!(
        serde_json::to_value(backup_record(done.clone())).expect("json"),
        serde_json::to_value(&done).expect("json")
    );
}

#[test]
fn the_doctor_report_and_secrets_are_shown_unchanged() {
    let k = KernelReport {
        filesystems: vec!["ext4".into(), "tmpfs".into()],
        kernel_nfs: true,
        kernel_cifs: false,
        kernel_quota: true,
        loop_devices: true,
        fuse: false,
        state_dir_fs: Some("ext4".into()),
        state_dir_project_quota: false,
        state_dir_reflink: true,
    };
    let report = voltool_plugin::doctor::assess(k);
    let old = serde_json::to_string(&report).expect("json");
    assert_eq!(serde_json::to_string(&doctor_view(report)).expect("json"), old);
    let s =
        voltool_plugin::secrets::SecretInfo { name: "pw".into(), updated_at: "t".into(), servers: vec!["nas".into()] };
    let old = serde_json::to_string(&s).expect("json");
    assert_eq!(serde_json::to_string(&secret_info(s)).expect("json"), old);
}

/// The daemon's restore options hold the API's flags themselves (one definition), plus
/// whether the restore is a restore test's scratch.
#[test]
fn the_api_restore_flags_are_the_daemons_options() {
    let flags =
        voltool_api::RestoreFlags { force: true, allow_devices: false, strip_components: 2, preserve_privileges: true };
    let converted = crate::restores::RestoreOptions::from(flags.clone());
    assert_eq!(converted.flags, flags);
    assert!(!converted.scratch);
}
