//! Recovery on the engine, without root: a directory target in a tempdir, the recording
//! mounter, a fake clock. What a daemon stop left behind — runs cut in flight, a prune cut
//! between its delete steps — is settled by the next start and its cleanup pass.

use std::collections::BTreeSet;

use voltool_plugin::store::BackupStatus;

use crate::backups::test_support::{Fixture, at, manual, settled};
use crate::backups::{BackupSettings, plain_names as names};

const INTERRUPTED: &str = "interrupted: the daemon stopped during the backup";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_rows_at_open_are_kept_when_whole_and_verified_else_their_objects_go_and_they_fail() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("v", &[]).await;
    let b = f.open().await;
    // A run that had committed its three objects when the daemon died, before its row said so.
    let whole = b.start(manual("v")).await.expect("run");
    let done = settled(&b).await;
    assert_eq!(done[0].status, BackupStatus::Complete, "{:?}", done[0].reason);
    let sha = done[0].sha256.clone();
    f.svc.store().finish_backup(&f.running_row(&whole, "v")).expect("back to running");
    // A run cut while it wrote its archive.
    let partial = "v-20260101T030000Z-00000a";
    f.svc.store().insert_backup(&f.running_row(partial, "v")).expect("row");
    std::fs::write(f.target_dir().join(&names(partial)[0]), b"(zstd frames...)").expect("archive");
    // A run whose three objects are there but are not a backup (a torn write).
    let torn = "v-20260101T030000Z-00000b";
    f.svc.store().insert_backup(&f.running_row(torn, "v")).expect("row");
    for n in names(torn) {
        std::fs::write(f.target_dir().join(n), b"torn").expect("object");
    }
    drop(b);

    // The daemon starts again an hour later. At start only the catalog changes: each row is
    // failed (interrupted) with its cleanup pending, and no object is touched yet.
    f.clock.set(at(4, 0));
    let b = f.open().await;
    for id in [whole.as_str(), partial, torn] {
        let r = f.row(id).expect("row");
        assert_eq!((r.status, r.cleanup_pending), (BackupStatus::Failed, true), "{id}");
        assert_eq!(r.reason.as_deref(), Some(INTERRUPTED), "{id}");
        assert_eq!(r.finished_at.as_deref(), Some("2026-01-01T04:00:00Z"), "{id}: dated by the engine's clock");
    }
    assert_eq!(f.objects(&whole), [true; 3]);
    assert_eq!(f.objects(partial), [true, false, false]);
    assert_eq!(f.objects(torn), [true; 3]);

    // The cleanup pass (the scheduler's first tick starts it).
    b.recover(false).await.expect("cleanup pass");
    let r = f.row(&whole).expect("row");
    assert_eq!((r.status, r.cleanup_pending), (BackupStatus::Complete, false), "whole and verified: kept");
    assert_eq!(r.reason, None);
    assert_eq!(r.sha256, sha, "the archive's sha256 as read back");
    assert_eq!(r.verify_status.as_deref(), Some("ok"));
    assert_eq!(r.verify_at.as_deref(), Some("2026-01-01T04:00:00Z"));
    assert_eq!(f.objects(&whole), [true; 3]);
    for id in [partial, torn] {
        let r = f.row(id).expect("row");
        assert_eq!((r.status, r.cleanup_pending), (BackupStatus::Failed, false), "{id}: failed, cleaned");
        assert_eq!(r.reason.as_deref(), Some(INTERRUPTED), "{id}");
        assert_eq!(f.objects(id), [false; 3], "{id}: its objects are removed");
    }

    // Another pass has nothing left to do.
    b.recover(false).await.expect("cleanup pass");
    assert_eq!(f.row(&whole).map(|r| r.status), Some(BackupStatus::Complete));
    assert!(f.svc.store().backups_needing_cleanup().expect("store").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_deleted_backup_is_left_alone_by_the_next_prune_and_finished_by_the_cleanup_pass() {
    let f = Fixture::new(BackupSettings::default(), at(1, 0));
    f.volume("v", &[]).await;
    let b = f.open().await;
    let mut ids = Vec::new();
    for h in 1..=3 {
        f.clock.set(at(h, 0));
        ids.push(b.start(manual("v")).await.expect("run"));
        settled(&b).await;
    }
    // A prune of the oldest was cut after its checksum object went.
    assert!(f.svc.store().mark_backup_deleting(&ids[0]).expect("mark"));
    std::fs::remove_file(f.target_dir().join(&names(&ids[0])[2])).expect("unlink the checksum");

    // A dry run decides the same and deletes nothing.
    let dry = b.prune(Some("v"), Some("last=1"), true, None).await.expect("dry run");
    let decided: Vec<(&str, bool)> = dry.iter().map(|i| (i.id.as_str(), i.keep)).collect();
    assert_eq!(decided, [(ids[2].as_str(), true), (ids[1].as_str(), false)], "the deleting one is no candidate");
    assert_eq!(f.objects(&ids[1]), [true; 3]);

    // The next prune keeps the newest: the half-deleted one neither counts nor is chosen again.
    let items = b.prune(Some("v"), Some("last=1"), false, None).await.expect("prune");
    let decided: Vec<(&str, bool)> = items.iter().map(|i| (i.id.as_str(), i.keep)).collect();
    assert_eq!(decided, [(ids[2].as_str(), true), (ids[1].as_str(), false)]);
    assert!(items.iter().all(|i| i.error.is_none()), "{items:?}");
    assert!(f.row(&ids[1]).is_none(), "deleted");
    assert_eq!(f.objects(&ids[1]), [false; 3]);
    assert_eq!(f.row(&ids[0]).map(|r| r.status), Some(BackupStatus::Deleting), "left to recovery");
    assert_eq!(f.objects(&ids[0]), [true, true, false]);

    // The cleanup pass finishes it: objects, then the row.
    b.recover(false).await.expect("cleanup pass");
    assert!(f.row(&ids[0]).is_none());
    let on_target: BTreeSet<String> = std::fs::read_dir(f.target_dir())
        .expect("target dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_target, names(&ids[2]).into_iter().collect(), "only the kept backup is left");
    let rows = settled(&b).await;
    assert_eq!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [ids[2].as_str()]);
}

/// A test-only age key pair (made with `age-keygen` for this test; it protects nothing).
const TEST_KEY: &str = "AGE-SECRET-KEY-10LC4FHNYG36FWC35C7V4YKM7S0V2Y5P262DCP20N603E39AU2DHSAAMNK2";
const TEST_PUB: &str = "age1g8z4vlmdzcwf5qm2njnka6v6jcdyqcs8tgqqpkwud4s92erke9aqfycqrl";

/// Whether each of an encrypted backup's objects (`.age` names) is in the target directory.
fn sealed_objects(f: &Fixture, id: &str) -> [bool; 3] {
    let n = voltool_backup::ObjectNames::new(id, true);
    [n.archive, n.manifest, n.checksum].map(|n| f.target_dir().join(n).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_encrypted_runs_are_found_by_their_age_names_and_kept_only_with_an_identity() {
    let settings = BackupSettings { identities: vec!["k".into()], ..BackupSettings::default() };
    let f = Fixture::new(settings, at(3, 0));
    f.svc.secrets().add("k", TEST_KEY.as_bytes()).expect("identity secret");
    f.volume("v", &[("backup-encrypt", TEST_PUB)]).await;
    let b = f.open().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(b.start(manual("v")).await.expect("run"));
        let done = settled(&b).await;
        assert!(done.iter().all(|r| r.status == BackupStatus::Complete && r.encrypted), "{done:?}");
    }
    for id in &ids {
        assert_eq!(sealed_objects(&f, id), [true; 3], "{id}");
        assert_eq!(f.objects(id), [false; 3], "{id}: no plain names");
        // Cut after its checksum object, before the catalog said so.
        let mut row = f.running_row(id, "v");
        row.encrypted = true;
        f.svc.store().finish_backup(&row).expect("back to running");
    }
    // A run cut while it wrote its encrypted archive: the row says encrypted from the start.
    let partial = "v-20260101T030000Z-00000c";
    let mut row = f.running_row(partial, "v");
    row.encrypted = true;
    f.svc.store().insert_backup(&row).expect("row");
    assert!(f.row(partial).expect("row").encrypted, "recorded at insert");
    std::fs::write(f.target_dir().join(format!("{partial}.tar.zst.age")), b"age-encryption.org/v1\n...")
        .expect("archive");
    drop(b);

    let b = f.open().await;
    // With the identity both are read back and kept; the partial run's object is removed.
    b.recover(false).await.expect("cleanup pass");
    for id in &ids {
        let kept = f.row(id).expect("row");
        assert_eq!((kept.status, kept.verify_status.as_deref()), (BackupStatus::Complete, Some("ok")), "{id}");
    }
    assert_eq!(sealed_objects(&f, partial), [false; 3]);
    // Without it, an interrupted encrypted run cannot be checked: removed like any failed run.
    drop(b);
    f.svc.secrets().remove("k").expect("remove the identity");
    let mut row = f.running_row(&ids[1], "v");
    row.encrypted = true;
    f.svc.store().finish_backup(&row).expect("back to running");
    let b = f.open().await;
    b.recover(false).await.expect("cleanup pass");
    let gone = f.row(&ids[1]).expect("row");
    assert_eq!((gone.status, gone.cleanup_pending), (BackupStatus::Failed, false), "{gone:?}");
    assert_eq!(sealed_objects(&f, &ids[1]), [false; 3]);
    assert_eq!(sealed_objects(&f, &ids[0]), [true; 3]);
}
