//! `backup sync` and the listing of a target, on directory targets in a tempdir: host A's
//! engine writes backups (full and incremental), host B's (a fresh state) finds them; hostile
//! and half objects on the target are reported, never fatal; vanished rows are refused by
//! restores and left alone by retention.

use std::path::Path;

use voltool_api::{FoundState, SyncBackups};
use voltool_backup::sha256sum_line;

use super::*;
use crate::backups::on_target::volume_of_id;
use crate::backups::test_support::{Fixture, at, manual, settled};
use crate::backups::{BackupSettings, RunRequest};

/// Host A with volume `db` backed up full, then twice incrementally, and `web` once: the IDs
/// in that order, oldest first.
async fn host_a() -> (Fixture, Backups, Vec<String>) {
    let a = Fixture::new(BackupSettings::default(), at(1, 0));
    a.volume("db", &[]).await;
    a.volume("web", &[]).await;
    let b = a.open().await;
    let mut ids = Vec::new();
    for (vol, incremental) in [("db", false), ("db", true), ("db", true), ("web", false)] {
        let mp = a.svc.layout().mountpoint(vol);
        std::fs::write(mp.join(format!("file-{}.txt", ids.len())), b"more").expect("write");
        let id = b.start(RunRequest { incremental: Some(incremental), ..manual(vol) }).await.expect("start");
        settled(&b).await;
        assert_eq!(a.row(&id).map(|r| r.status), Some(BackupStatus::Complete), "{id}");
        ids.push(id);
        a.clock.advance(chrono::Duration::minutes(5));
    }
    (a, b, ids)
}

/// Host B: a fresh state dir.
async fn host_b() -> (Fixture, Backups) {
    let f = Fixture::new(BackupSettings::default(), at(2, 0));
    let b = f.open().await;
    (f, b)
}

fn sync_req(target: &Path, adopt: bool) -> SyncBackups {
    SyncBackups { target: Some(target.display().to_string()), adopt }
}

async fn sync_one(b: &Backups, target: &Path, adopt: bool) -> voltool_api::TargetSync {
    let mut report = b.sync(sync_req(target, adopt)).await.expect("sync");
    assert_eq!(report.targets.len(), 1);
    report.targets.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_host_finds_every_backup_with_its_chain_once() {
    let (a, _ea, ids) = host_a().await;
    let (fb, b) = host_b().await;
    let target = a.target_dir();
    let r = sync_one(&b, &target, false).await;
    assert_eq!(r.error, None);
    assert_eq!(r.added, ids);
    assert_eq!((r.known, r.vanished.len(), r.unreadable.len(), r.incomplete.len()), (0, 0, 0, 0), "{r:?}");
    for (i, id) in ids.iter().enumerate() {
        let (mine, theirs) = (fb.row(id).expect("added"), a.row(id).expect("written"));
        assert_eq!(mine.status, BackupStatus::Complete);
        assert_eq!(mine.origin, "synced");
        assert_eq!(mine.trigger, "sync");
        assert_eq!(mine.target_url, theirs.target_url);
        assert_eq!(
            (&mine.volume, &mine.started_at, &mine.sha256),
            (&theirs.volume, &theirs.started_at, &theirs.sha256)
        );
        assert_eq!((mine.bytes_out, mine.files), (theirs.bytes_out, theirs.files));
        let want_parent = match i {
            1 | 2 => Some(ids[i - 1].clone()),
            _ => None,
        };
        assert_eq!((mine.level, &mine.parent), ([0, 1, 2, 0][i], &want_parent), "{id}");
    }
    let chain = b.catalog().chain(&ids[2]).await.expect("chain").expect("an incremental");
    assert_eq!(chain.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids[..3]);
    let again = sync_one(&b, &target, false).await;
    assert_eq!((again.added.len(), again.known), (0, 4), "{again:?}");
    // A's own sync knows them all: they are its own.
    let own = sync_one(&_ea, &target, true).await;
    assert_eq!((own.added.len(), own.adopted.len(), own.known), (0, 0, 4), "{own:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_half_objects_are_reported_and_never_added() {
    let (a, _ea, ids) = host_a().await;
    let dir = a.target_dir();
    let put = |name: &str, data: &[u8]| std::fs::write(dir.join(name), data).expect("write");
    // Garbage, a manifest of another backup, a manifest without its checksum, an encrypted
    // backup, a name that is no backup ID, a checksum that does not match.
    put("junk-20260101T000000Z-aaaaaa.manifest.json", b"\x00\xffnot json");
    let theirs = std::fs::read(dir.join(format!("{}.manifest.json", ids[3]))).expect("manifest");
    put("web-20260101T000000Z-bbbbbb.manifest.json", &theirs);
    put("web-20260101T000000Z-bbbbbb.tar.zst", b"x");
    put("web-20260101T000000Z-bbbbbb.tar.zst.sha256", b"x");
    std::fs::remove_file(dir.join(format!("{}.tar.zst.sha256", ids[3]))).expect("rm");
    put("sec-20260101T000000Z-cccccc.manifest.json.age", b"age-encryption.org/v1");
    put("not an id.manifest.json", b"{}");
    // Not even an object name: not listed at all.
    put("esc\u{1b}[2J-20260101T000000Z-dddddd.manifest.json", b"{}");
    put(&format!("{}.tar.zst.sha256", ids[0]), sha256sum_line(&ids[0], &"00".repeat(32)).as_bytes());
    let (fb, b) = host_b().await;
    let r = sync_one(&b, &dir, false).await;
    assert_eq!(r.error, None);
    assert_eq!(r.added, [ids[1].clone(), ids[2].clone()], "{r:?}");
    assert_eq!(r.encrypted, ["sec-20260101T000000Z-cccccc"]);
    let problem = |list: &[voltool_api::Skipped], id: &str| {
        list.iter().find(|s| s.id == id).map(|s| s.problem.clone()).unwrap_or_else(|| panic!("{id} in {list:?}"))
    };
    assert!(problem(&r.incomplete, &ids[3]).contains("checksum object"), "{r:?}");
    assert!(
        problem(&r.unreadable, "junk-20260101T000000Z-aaaaaa").contains("junk-20260101T000000Z-aaaaaa.manifest.json")
    );
    assert!(
        problem(&r.unreadable, "web-20260101T000000Z-bbbbbb").contains(&format!("describes backup \"{}\"", ids[3]))
    );
    assert!(problem(&r.unreadable, "not an id").contains("is not a backup's manifest"));
    assert!(problem(&r.unreadable, &ids[0]).contains("does not match the archive sha256"), "{r:?}");
    assert_eq!(r.unreadable.len(), 4, "{r:?}");
    assert!(fb.row(&ids[0]).is_none() && fb.row(&ids[3]).is_none());
    // The chain whose full backup was not added cannot be restored, and says which link.
    let e = b.catalog().chain(&ids[2]).await.expect_err("broken chain").to_string();
    assert!(e.contains(&ids[0]) && e.contains("not in the catalog"), "{e}");
    // The listing shows all of it, with the catalog's entries.
    let l = b.target_listing(Some(&dir.display().to_string())).await.expect("listing");
    let state = |id: &str| l.backups.iter().find(|x| x.id == id).map(|x| (x.state, x.catalog.is_some()));
    assert_eq!(state(&ids[1]), Some((FoundState::Complete, true)));
    assert_eq!(state(&ids[3]), Some((FoundState::Incomplete, false)));
    assert_eq!(state("sec-20260101T000000Z-cccccc"), Some((FoundState::Encrypted, false)));
    assert_eq!(state("junk-20260101T000000Z-aaaaaa"), Some((FoundState::Unreadable, false)));
    assert_eq!(l.backups.len(), 8);
    let inc = l.backups.iter().find(|x| x.id == ids[3]).expect("web");
    assert_eq!((inc.volume.as_deref(), inc.level, inc.files.is_some()), (Some("web"), 0, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_objects_mark_rows_vanished_until_they_come_back() {
    let (a, ea, ids) = host_a().await;
    let dir = a.target_dir();
    let (_fb, b) = host_b().await;
    sync_one(&b, &dir, false).await;
    let archive = dir.join(format!("{}.tar.zst", ids[3]));
    let kept = std::fs::read(&archive).expect("archive");
    std::fs::remove_file(&archive).expect("rm");
    for host in [&ea, &b] {
        let r = sync_one(host, &dir, false).await;
        assert_eq!(r.vanished, [ids[3].clone()], "{r:?}");
        let e = host.catalog().locate(&ids[3]).await.expect_err("vanished").to_string();
        assert!(e.contains("gone from") && e.contains("cannot be restored"), "{e}");
        assert_eq!(sync_one(host, &dir, false).await.vanished.len(), 0, "marked once");
    }
    std::fs::write(&archive, kept).expect("put back");
    let r = sync_one(&b, &dir, false).await;
    assert_eq!(r.returned, [ids[3].clone()], "{r:?}");
    assert!(b.catalog().locate(&ids[3]).await.expect("locate").is_some());
    // A vanished link breaks the restore of the chain after it.
    std::fs::remove_file(dir.join(format!("{}.manifest.json", ids[1]))).expect("rm");
    sync_one(&b, &dir, false).await;
    let e = b.catalog().chain(&ids[2]).await.expect_err("broken").to_string();
    assert!(e.contains(&ids[1]) && e.contains("gone from its target"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_leaves_synced_rows_alone_until_they_are_adopted() {
    let (a, _ea, ids) = host_a().await;
    let dir = a.target_dir();
    let (fb, b) = host_b().await;
    sync_one(&b, &dir, false).await;
    let items = b.prune(Some("db"), Some("last=1"), false, None).await.expect("prune");
    assert!(items.is_empty(), "synced rows are not this host's: {items:?}");
    let r = sync_one(&b, &dir, true).await;
    assert_eq!((r.adopted.len(), r.added.len(), r.known), (4, 0, 4), "{r:?}");
    assert!(ids.iter().all(|id| fb.row(id).is_some_and(|r| r.origin == "adopted")));
    // Adopted: the last one and the links it needs are kept, nothing else here.
    let items = b.prune(Some("db"), Some("last=1"), true, None).await.expect("prune");
    assert_eq!(items.iter().filter(|i| i.keep).count(), 3, "{items:?}");
    // A vanished row keeps nothing: `web`'s only backup gone, the policy has nothing to keep.
    std::fs::remove_file(dir.join(format!("{}.tar.zst", ids[3]))).expect("rm");
    sync_one(&b, &dir, false).await;
    assert!(b.prune(Some("web"), Some("last=1"), true, None).await.expect("prune").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_never_follows_a_backup_another_host_may_prune() {
    let (a, _ea, ids) = host_a().await;
    let dir = a.target_dir();
    let (fb, b) = host_b().await;
    fb.volume("db", &[]).await;
    sync_one(&b, &dir, false).await;
    let there = RunRequest { target: Some(dir.display().to_string()), incremental: Some(true), ..manual("db") };
    let id = b.start(there.clone()).await.expect("start");
    settled(&b).await;
    let row = fb.row(&id).expect("row");
    assert_eq!((row.status, row.level, row.parent), (BackupStatus::Complete, 0, None), "A's chain is A's");
    // Adopted, A's backups are B's to keep: B's next incremental follows its own full one,
    // the newest; and after that one is gone from the catalog, A's last link.
    sync_one(&b, &dir, true).await;
    fb.clock.advance(chrono::Duration::minutes(5));
    let next = b.start(there.clone()).await.expect("start");
    settled(&b).await;
    assert_eq!(fb.row(&next).and_then(|r| r.parent), Some(id.clone()));
    for own in [&next, &id] {
        assert!(fb.svc.store().delete_backup(own).expect("forget"));
    }
    fb.clock.advance(chrono::Duration::minutes(5));
    let after = b.start(there).await.expect("start");
    settled(&b).await;
    assert_eq!(fb.row(&after).map(|r| (r.level, r.parent)), Some((3, Some(ids[2].clone()))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_without_a_target_goes_through_every_configured_one() {
    let (a, _ea, ids) = host_a().await;
    let mut settings = BackupSettings::default();
    let other = tempfile::tempdir().expect("tmp");
    for (name, url) in [("theirs", a.target_dir().display().to_string()), ("empty", other.path().display().to_string())]
    {
        settings.targets.insert(name.into(), voltool_backup::TargetConfig { url, ..Default::default() });
    }
    let fb = Fixture::new(settings, at(2, 0));
    let b = fb.open().await;
    let report = b.sync(SyncBackups::default()).await.expect("sync");
    assert_eq!(report.targets.len(), 3, "empty, theirs, the default target: {report:?}");
    assert!(report.ok());
    let theirs = report.targets.iter().find(|t| !t.added.is_empty()).expect("the target with the backups");
    assert_eq!(theirs.added, ids);
    assert_eq!(fb.row(&ids[0]).map(|r| r.target_ref).as_deref(), Some("theirs"));
    assert!(b.catalog().locate(&ids[0]).await.expect("locate").is_some(), "resolves through the config name");
    // A target that does not resolve is reported, not fatal.
    let r = b.sync(SyncBackups { target: Some("nowhere".into()), adopt: false }).await.expect("sync");
    assert!(!r.ok());
    assert!(r.targets[0].error.as_deref().is_some_and(|e| e.contains("\"nowhere\" is not defined")), "{r:?}");
    let e = b.target_listing(Some("nowhere")).await.expect_err("undefined");
    assert!(matches!(e, Error::BadRequest(_)), "{e:?}");
}

#[test]
fn backup_ids_and_object_names() {
    assert_eq!(volume_of_id("db-20261201T023000Z-3f9a1c"), Some("db"));
    assert_eq!(volume_of_id("my-vol.2-20261201T023000Z-3f9a1c"), Some("my-vol.2"));
    for bad in [
        "",
        "-20261201T023000Z-3f9a1c",
        "db-20261201T023000Z-3F9A1C",
        "db-20261201X023000Z-3f9a1c",
        "db_20261201T023000Z-3f9a1c",
        "../x-20261201T023000Z-3f9a1c",
        "db-2026120åT023000Z-3f9a1c",
        "db-20261201T023000Z-3f9a1",
    ] {
        assert_eq!(volume_of_id(bad), None, "{bad}");
    }
    use crate::backups::on_target::BackupObjects;
    let plain = BackupObjects::from_manifest_name("db-1.manifest.json").expect("manifest");
    assert_eq!(plain.names(), ["db-1.tar.zst", "db-1.manifest.json", "db-1.tar.zst.sha256"]);
    let age = BackupObjects::from_manifest_name("db-1.manifest.json.age").expect("manifest");
    assert!(age.encrypted);
    assert_eq!(age.names(), ["db-1.tar.zst.age", "db-1.manifest.json.age", "db-1.tar.zst.age.sha256"]);
    for other in ["db-1.tar.zst", ".manifest.json", "db-1.manifest.json.sha256", "db-1.manifest.jso"] {
        assert_eq!(BackupObjects::from_manifest_name(other), None, "{other}");
    }
}
