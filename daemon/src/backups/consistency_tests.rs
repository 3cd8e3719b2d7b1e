//! The consistency steps on the engine, without root or dockerd: the recording Docker engine,
//! the recording mounter and snapshots, a directory target in a tempdir.

use std::collections::BTreeMap;

use voltool_docker::{Container, EngineCall, ExecOutcome, RunState, VolumeMount};
use voltool_plugin::store::{BackupRow, BackupStatus, Hold, HoldKind};

use crate::backups::test_support::{Fixture, at, manual, settled};
use crate::backups::{BackupSettings, Backups, RunRequest};

fn container(id: &str, volume: Option<&str>, labels: &[(&str, &str)]) -> Container {
    Container {
        id: id.into(),
        name: format!("{id}-name"),
        state: RunState::Running,
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        volumes: volume.map(|v| VolumeMount { name: v.into(), driver: "voltool".into() }).into_iter().collect(),
        finished_at: None,
    }
}

fn with(volume: &str, mode: &str) -> RunRequest {
    RunRequest { consistency: Some(mode.into()), ..manual(volume) }
}

async fn run(b: &Backups, req: RunRequest) -> BackupRow {
    let id = b.start(req).await.expect("start");
    settled(b).await.into_iter().find(|r| r.id == id).expect("row")
}

fn holds(f: &Fixture) -> Vec<Hold> {
    f.svc.store().holds().expect("holds")
}

/// Waits (at most 5 s) until the background release at start has released every hold.
async fn released(f: &Fixture) {
    for _ in 0..100 {
        if holds(f).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("holds left after 5 s: {:?}", holds(f));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_holds_the_volumes_containers_and_its_labelled_companions_then_starts_them_in_reverse() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("db", &[]).await;
    let app = ("com.docker.compose.project", "shop");
    f.docker.add(container("web", None, &[app, ("voltool.backup.stop", "true")]));
    f.docker.add(container("pg", Some("db"), &[app]));
    f.docker.add(container("blog", Some("other"), &[]));
    f.docker.add(container("cache", None, &[app]));
    let b = f.open().await;
    let r = run(&b, with("db", "stop")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    assert_eq!(
        f.docker.calls(),
        [
            EngineCall::Stop("web".into()),
            EngineCall::Stop("pg".into()),
            EngineCall::Start("pg".into()),
            EngineCall::Start("web".into())
        ]
    );
    for id in ["web", "pg", "blog", "cache"] {
        assert_eq!(f.docker.state_of(id), Some(RunState::Running), "{id}");
    }
    assert_eq!(r.consistency.as_deref(), Some("stop"));
    assert_eq!(r.snapshot.as_deref(), Some("none"), "a directory volume has no snapshot");
    assert!(r.downtime_ms.is_some());
    let note = r.consistency_note.unwrap_or_default();
    assert!(note.contains("no snapshot") && note.contains("held for the whole backup"), "{note}");
    assert!(holds(&f).is_empty(), "every hold released and forgotten");
}

/// A container that cannot be started again (dockerd refuses) leaves a complete backup whose
/// record says so, and its hold stays in the store for the next start to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_cannot_start_again_is_named_in_the_backups_record() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("db", &[]).await;
    f.docker.add(container("pg", Some("db"), &[]));
    f.docker.refuse_start("pg");
    let b = f.open().await;
    let r = run(&b, with("db", "stop")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    let note = r.consistency_note.unwrap_or_default();
    assert!(note.contains("could not release pg-name") && note.contains("error while mounting volume"), "{note}");
    assert_eq!(f.docker.state_of("pg"), Some(RunState::Other));
    assert_eq!(holds(&f).len(), 1, "the hold is kept for the next start: {:?}", holds(&f));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_snapshot_the_containers_run_again_before_the_archive_is_written() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("img", &[("size", "64m")]).await;
    f.docker.add(container("pg", Some("img"), &[]));
    let b = f.open().await;
    let r = run(&b, with("img", "stop")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    assert_eq!(r.snapshot.as_deref(), Some("reflink"));
    assert_eq!(r.consistency_note, None);
    assert_eq!(f.docker.calls(), [EngineCall::Stop("pg".into()), EngineCall::Start("pg".into())]);
    assert_eq!(f.docker.state_of("pg"), Some(RunState::Running));
    let left: Vec<_> = std::fs::read_dir(f.svc.layout().state_dir.join("snapshots")).expect("dir").collect();
    assert!(left.is_empty(), "the snapshot is removed after the backup: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_volume_on_btrfs_is_a_subvolume_and_gets_a_snapshot() {
    let f = Fixture::on_host(BackupSettings::default(), at(3, 0), |h| h.subvolumes = true);
    f.volume("dir", &[]).await;
    f.docker.add(container("pg", Some("dir"), &[]));
    let b = f.open().await;
    let r = run(&b, with("dir", "stop")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    assert_eq!(r.snapshot.as_deref(), Some("btrfs"));
    assert_eq!(r.consistency_note, None);
    assert_eq!(f.docker.calls(), [EngineCall::Stop("pg".into()), EngineCall::Start("pg".into())]);
    let left: Vec<_> = std::fs::read_dir(f.svc.layout().state_dir.join("snapshots")).expect("dir").collect();
    assert!(left.is_empty(), "the snapshot subvolume is deleted after the backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_volume_on_a_state_dir_with_reflinks_gets_a_tree_copy() {
    let f = Fixture::on_host(BackupSettings::default(), at(3, 0), |h| h.reflinks = true);
    f.volume("dir", &[]).await;
    f.docker.add(container("pg", Some("dir"), &[]));
    let b = f.open().await;
    let r = run(&b, with("dir", "pause")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    assert_eq!(r.snapshot.as_deref(), Some("reflink-tree"));
    assert_eq!(f.docker.calls(), [EngineCall::Pause("pg".into()), EngineCall::Unpause("pg".into())]);
    let left: Vec<_> = std::fs::read_dir(f.svc.layout().state_dir.join("snapshots")).expect("dir").collect();
    assert!(left.is_empty(), "the copy is removed after the backup: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_snapshots_an_image_volume_without_touching_containers_and_refuses_a_directory() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("img", &[("size", "64m")]).await;
    f.volume("dir", &[]).await;
    f.docker.add(container("pg", Some("img"), &[]));
    let b = f.open().await;
    let r = run(&b, with("img", "freeze")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    assert_eq!((r.consistency.as_deref(), r.snapshot.as_deref()), (Some("freeze"), Some("reflink")));
    assert!(r.downtime_ms.is_some(), "the freeze's time is the downtime");
    assert!(f.docker.calls().is_empty(), "freeze alone stops nothing");
    let r = run(&b, with("dir", "freeze")).await;
    assert_eq!(r.status, BackupStatus::Failed);
    let reason = r.reason.unwrap_or_default();
    assert!(reason.contains("only image-backed volumes"), "{reason}");
    assert_eq!(f.objects(&r.id), [false; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_pauses_and_unpauses_only_the_running_users() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("v", &[]).await;
    f.docker.add(container("a", Some("v"), &[]));
    f.docker.add(Container { state: RunState::Paused, ..container("already-paused", Some("v"), &[]) });
    let b = f.open().await;
    let r = run(&b, with("v", "pause")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    assert_eq!(f.docker.calls(), [EngineCall::Pause("a".into()), EngineCall::Unpause("a".into())]);
    assert_eq!(f.docker.state_of("already-paused"), Some(RunState::Paused), "not ours to unpause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_tasks_are_held_by_scaling_their_service_to_zero_and_back() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("v", &[]).await;
    let task = ("com.docker.swarm.service.id", "svc1");
    f.docker.add_service("svc1", "web", 2);
    f.docker.add(container("t1", Some("v"), &[task]));
    f.docker.add(container("t2", Some("v"), &[task]));
    let b = f.open().await;
    let r = run(&b, with("v", "stop")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    assert_eq!(
        f.docker.calls(),
        [
            EngineCall::Scale { service: "svc1".into(), replicas: 0 },
            EngineCall::Scale { service: "svc1".into(), replicas: 2 }
        ],
        "the service once, never its tasks"
    );
    assert_eq!(f.docker.replicas_of("svc1"), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_hook_fails_the_backup_with_its_output_and_the_post_hooks_still_run() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("v", &[]).await;
    let hooks = [("voltool.backup.pre", "pg_dump > /data/dump.sql"), ("voltool.backup.post", "rm /data/dump.sql")];
    f.docker.add(container("pg", Some("v"), &hooks));
    f.docker.on_exec(
        "pg_dump > /data/dump.sql",
        ExecOutcome { exit_code: Some(2), output: "pg_dump: connection refused".into() },
    );
    let b = f.open().await;
    let r = run(&b, with("v", "hooks,stop")).await;
    assert_eq!(r.status, BackupStatus::Failed);
    let reason = r.reason.unwrap_or_default();
    assert!(reason.contains("pre-hook of container pg-name") && reason.contains("exited with 2"), "{reason}");
    assert!(reason.contains("pg_dump: connection refused"), "the hook's output: {reason}");
    assert_eq!(
        f.docker.calls(),
        [
            EngineCall::Exec { container: "pg".into(), cmd: "pg_dump > /data/dump.sql".into() },
            EngineCall::Exec { container: "pg".into(), cmd: "rm /data/dump.sql".into() }
        ],
        "no stop after a failed pre-hook; the post-hook ran"
    );
    assert_eq!(f.docker.state_of("pg"), Some(RunState::Running));
    assert_eq!(f.objects(&r.id), [false; 3], "no archive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_around_the_hold_and_a_passing_pre_hook_lets_the_backup_through() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("v", &[]).await;
    let hooks = [("voltool.backup.pre", "dump"), ("voltool.backup.post", "cleanup")];
    f.docker.add(container("pg", Some("v"), &hooks));
    let b = f.open().await;
    let r = run(&b, with("v", "hooks,stop")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    let exec = |cmd: &str| EngineCall::Exec { container: "pg".into(), cmd: cmd.into() };
    assert_eq!(
        f.docker.calls(),
        [exec("dump"), EngineCall::Stop("pg".into()), EngineCall::Start("pg".into()), exec("cleanup")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_fails_a_consistent_backup_but_not_a_plain_one() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("v", &[]).await;
    f.docker.set_unreachable(true);
    let b = f.open().await;
    let r = run(&b, with("v", "stop")).await;
    assert_eq!(r.status, BackupStatus::Failed);
    let reason = r.reason.unwrap_or_default();
    assert!(reason.contains("backup-consistency=stop needs the docker engine"), "{reason}");
    assert_eq!(f.objects(&r.id), [false; 3], "no archive");
    let r = run(&b, manual("v")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    assert_eq!(r.consistency.as_deref(), Some("none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_backup_of_a_volume_in_use_says_it_is_crash_consistent_at_best() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("v", &[]).await;
    f.docker.add(container("pg", Some("v"), &[]));
    let b = f.open().await;
    let r = run(&b, manual("v")).await;
    assert_eq!(r.status, BackupStatus::Complete, "{:?}", r.reason);
    let note = r.consistency_note.unwrap_or_default();
    assert!(note.contains("crash-consistent at best") && note.contains("pg-name"), "{note}");
    assert!(f.docker.calls().is_empty(), "nothing stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_left_by_a_killed_daemon_are_released_at_start_unless_someone_else_took_over() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("v", &[]).await;
    for id in ["ours", "restarted-by-user", "gone"] {
        f.docker.add(container(id, Some("v"), &[]));
    }
    f.docker.add(container("paused", Some("v"), &[]));
    f.docker.add_service("svc1", "web", 0);
    // What the killed daemon had done: stopped three containers (one a user then started and
    // stopped again, one since removed), paused one, scaled a service from 3 to 0.
    f.docker.set_state("ours", RunState::Other);
    let ours_marker = f.docker.finished_at_of("ours");
    f.docker.set_state("restarted-by-user", RunState::Other);
    let old_marker = f.docker.finished_at_of("restarted-by-user");
    f.docker.set_state("restarted-by-user", RunState::Running);
    f.docker.set_state("restarted-by-user", RunState::Other);
    f.docker.set_state("paused", RunState::Paused);
    f.docker.remove("gone");
    let hold = |seq, kind, target: &str, replicas, marker: Option<String>| Hold {
        backup: "v-20260101T030000Z-00000a".into(),
        seq,
        kind,
        target: target.into(),
        name: target.into(),
        replicas,
        marker,
    };
    f.svc
        .store()
        .put_holds(&[
            hold(0, HoldKind::Scaled, "svc1", Some(3), None),
            hold(1, HoldKind::Stopped, "ours", None, ours_marker),
            hold(2, HoldKind::Stopped, "restarted-by-user", None, old_marker),
            hold(3, HoldKind::Stopped, "gone", None, None),
            hold(4, HoldKind::Paused, "paused", None, None),
        ])
        .expect("holds");
    let _b = f.open().await;
    released(&f).await;
    assert_eq!(f.docker.state_of("ours"), Some(RunState::Running));
    assert_eq!(f.docker.state_of("restarted-by-user"), Some(RunState::Other), "the user's to start");
    assert_eq!(f.docker.state_of("paused"), Some(RunState::Running));
    assert_eq!(f.docker.replicas_of("svc1"), Some(3));
    assert!(holds(&f).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_wait_for_the_engine_when_it_is_not_up_yet_at_start() {
    let f = Fixture::new(BackupSettings::default(), at(3, 0));
    f.volume("v", &[]).await;
    f.docker.add(container("c", Some("v"), &[]));
    f.docker.set_state("c", RunState::Other);
    let m = f.docker.finished_at_of("c");
    let h = Hold {
        backup: "b".into(),
        seq: 0,
        kind: HoldKind::Stopped,
        target: "c".into(),
        name: "c".into(),
        replicas: None,
        marker: m,
    };
    f.svc.store().put_holds(&[h]).expect("hold");
    f.docker.set_unreachable(true);
    let _b = f.open().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(holds(&f).len(), 1, "kept while the engine does not answer");
    f.docker.set_unreachable(false);
    released(&f).await;
    assert_eq!(f.docker.state_of("c"), Some(RunState::Running));
}
