//! The wire shapes the daemon sent before these types existed, pinned byte for byte.

use serde_json::json;

use super::*;

fn summary() -> Status {
    Status::Summary(StatusSummary { mount_count: 1, mounted: true, size_limit: "16 MiB".into(), kind: "tmpfs".into() })
}

fn detail() -> StatusDetail {
    StatusDetail {
        backing: "tmpfs".into(),
        capacity_bytes: Some(4096),
        last_backup: Some(LastBackup {
            id: "v-1".into(),
            reason: None,
            status: BackupStatus::Complete,
            time: "2026-01-01T00:00:00Z".into(),
            verified: "ok".into(),
            consistency: None,
            downtime_ms: None,
        }),
        mount_count: 0,
        mounted: false,
        size_limit: "none".into(),
        size_limit_bytes: None,
        kind: "local".into(),
        used_bytes: Some(12),
    }
}

#[test]
fn status_keys_stay_in_the_order_serde_json_value_gave_them() {
    // The daemon used to build these through `serde_json::Value`, whose maps sort keys.
    assert_eq!(
        serde_json::to_string(&summary()).expect("json"),
        r#"{"mount_count":1,"mounted":true,"size_limit":"16 MiB","type":"tmpfs"}"#
    );
    assert_eq!(
        serde_json::to_string(&Status::Detail(Box::new(detail()))).expect("json"),
        r#"{"backing":"tmpfs","capacity_bytes":4096,"last_backup":{"id":"v-1","status":"complete","time":"2026-01-01T00:00:00Z","verified":"ok"},"mount_count":0,"mounted":false,"size_limit":"none","type":"local","used_bytes":12}"#
    );
}

#[test]
fn status_variants_are_told_apart_by_their_fields() {
    for s in [summary(), Status::Detail(Box::new(detail()))] {
        let back: Status = serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("parse");
        assert_eq!(back, s);
    }
    assert_eq!(summary().kind(), "tmpfs");
    assert_eq!(Status::Detail(Box::new(detail())).size_limit(), "none");
    assert_eq!(summary().mount_count(), 1);
}

#[test]
fn a_backup_view_is_the_record_flat_with_progress_beside_it() {
    let v: BackupView = serde_json::from_value(json!({
        "id": "v-20260101T000000Z-abcdef", "volume": "v", "target_ref": "default",
        "target_url": "file:///b", "trigger": "manual", "started_at": "t0", "finished_at": null,
        "duration_ms": null, "status": "running", "reason": null, "bytes_in": null,
        "bytes_out": null, "files": null, "sha256": null, "verify_status": null,
        "verify_at": null, "verify_reason": null,
        "progress": {"phase": "archiving", "done_bytes": 10}
    }))
    .expect("parse");
    assert_eq!(v.record.status, BackupStatus::Running);
    assert!(!v.is_finished());
    let out = serde_json::to_value(&v).expect("json");
    assert_eq!(out["progress"], json!({"phase": "archiving", "done_bytes": 10}));
    assert_eq!(out["finished_at"], serde_json::Value::Null, "absent measurements are null, not missing");
    assert!(out.get("upload_token").is_none() && out.get("cleanup_pending").is_none());
    let done = BackupView { progress: None, record: BackupRecord { status: BackupStatus::Complete, ..v.record } };
    assert!(done.is_finished());
    assert!(serde_json::to_value(&done).expect("json").get("progress").is_none());
}

#[test]
fn requests_keep_their_shapes() {
    let r = RestoreRequest {
        from: "x".into(),
        flags: RestoreFlags { force: true, ..RestoreFlags::default() },
        paths: vec![],
        to: None,
    };
    assert_eq!(
        serde_json::to_value(&r).expect("json"),
        json!({"from": "x", "force": true, "allow_devices": false, "strip_components": 0, "preserve_privileges": false})
    );
    let run = RunBackup {
        volume: "v".into(),
        target: None,
        verify: false,
        consistency: None,
        incremental: false,
        rehash: false,
    };
    assert_eq!(serde_json::to_value(&run).expect("json"), json!({"volume": "v", "target": null, "verify": false}));
    assert_eq!(serde_json::to_string(&VerifyBackup {}).expect("json"), "{}");
    assert!(serde_json::from_str::<RunBackup>(r#"{"volume":"v","nope":1}"#).is_err(), "unknown fields refused");
    let misspelt = r#"{"from":"x","forse":true}"#;
    assert!(serde_json::from_str::<RestoreRequest>(misspelt).is_err(), "also beside the flattened flags");
}

#[test]
fn a_secret_value_never_shows_in_debug() {
    let s = AddSecret { name: "pw".into(), value: "s3cret".into(), servers: None };
    let d = format!("{s:?}");
    assert!(d.contains("pw") && !d.contains("s3cret"), "{d}");
    assert_eq!(serde_json::to_value(&s).expect("json"), json!({"name": "pw", "value": "s3cret"}));
}

#[test]
fn an_older_daemons_restore_outcome_still_parses() {
    let o: RestoreOutcome = serde_json::from_value(json!({
        "volume": "v", "compression": "zstd", "entries": 3, "files": 2, "bytes": 10,
        "verified_against_manifest": true, "created": false
    }))
    .expect("parse");
    assert_eq!(o.verification, "");
}
