use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use nix::errno::Errno;
use voltool_runtime::{Mounter, RecordingMounter};

use super::*;
use crate::service::tests_support::fake_host;

fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    layout: Layout,
    mounter: Arc<RecordingMounter>,
    svc: VolumeService,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let layout = Layout { state_dir: dir.path().join("state"), mount_root: dir.path().join("mnt") };
    let mounter = Arc::new(RecordingMounter::new());
    let svc = VolumeService::open(layout.clone(), fake_host(&mounter)).expect("open");
    Fixture { _dir: dir, layout, mounter, svc }
}

#[tokio::test]
async fn create_local_makes_data_dir_with_mode_and_is_idempotent() {
    let f = fixture();
    f.svc.create("v1", opts(&[("mode", "0700")])).await.expect("create");
    let md = std::fs::metadata(f.layout.data_dir("v1")).expect("data dir");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    f.svc.create("v1", opts(&[("mode", "0700")])).await.expect("same options again");
    let e = f.svc.create("v1", opts(&[("mode", "0755")])).await.expect_err("different options");
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
}

#[tokio::test]
async fn bad_input_creates_nothing() {
    let f = fixture();
    for (name, o) in [
        ("../x", opts(&[])),
        ("a/b", opts(&[])),
        ("", opts(&[])),
        (&"n".repeat(300) as &str, opts(&[])),
        ("ok", opts(&[("foo", "1")])),
        ("ok", opts(&[("type", "tmpfs"), ("size", "12Q")])),
        ("ok", opts(&[("type", "zfs")])),
    ] {
        let e = f.svc.create(name, o).await.expect_err("must fail");
        assert!(matches!(e, Error::Option(_)), "{e}");
    }
    assert!(f.svc.list().await.expect("list").is_empty());
    let entries: Vec<_> = std::fs::read_dir(f.layout.state_dir.join("volumes")).expect("dir").collect();
    assert!(entries.is_empty(), "nothing on disk: {entries:?}");
    assert!(f.mounter.calls().is_empty());
}

#[tokio::test]
async fn mount_ids_refcount_one_kernel_mount() {
    let f = fixture();
    f.svc.create("v", opts(&[])).await.expect("create");
    let p1 = f.svc.mount("v", "a").await.expect("mount a");
    let p2 = f.svc.mount("v", "a").await.expect("repeat a");
    assert_eq!(p1, p2);
    assert_eq!(p1, f.layout.mountpoint("v"));
    // 20 concurrent mounts with distinct IDs: still one kernel mount.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let svc = f.svc.clone();
        tasks.push(tokio::spawn(async move { svc.mount("v", &format!("c{i}")).await }));
    }
    for t in tasks {
        t.await.expect("join").expect("mount");
    }
    assert_eq!(f.mounter.mounts().len(), 1);
    let bind = &f.mounter.mounts()[0];
    assert_eq!(bind.source, f.layout.data_dir("v").display().to_string());
    f.svc.unmount("v", "a").await.expect("unmount a");
    f.svc.unmount("v", "never-mounted").await.expect("unknown id succeeds");
    for i in 0..19 {
        f.svc.unmount("v", &format!("c{i}")).await.expect("unmount");
    }
    assert_eq!(f.mounter.unmount_count(), 0, "still held by c19");
    let v = f.svc.get("v").await.expect("get").expect("exists");
    assert_eq!((v.mounted, v.mount_count), (true, 1));
    f.svc.unmount("v", "c19").await.expect("last");
    assert_eq!(f.mounter.unmount_count(), 1);
    assert!(!f.mounter.is_mounted(&f.layout.mountpoint("v")).expect("table"));
}

#[tokio::test]
async fn failed_mount_records_no_id() {
    let f = fixture();
    f.svc.create("v", opts(&[("type", "tmpfs"), ("size", "1m")])).await.expect("create");
    f.mounter.fail_next("mount", Errno::ENOMEM);
    let e = f.svc.mount("v", "a").await.expect_err("injected");
    assert!(e.to_string().contains("volume v: mount failed"), "{e}");
    assert_eq!(f.svc.get("v").await.expect("get").expect("v").mount_count, 0);
    f.svc.mount("v", "a").await.expect("works next time");
}

#[tokio::test]
async fn vanished_mount_is_remounted_and_stale_ids_dropped() {
    let f = fixture();
    f.svc.create("v", opts(&[])).await.expect("create");
    f.svc.mount("v", "old").await.expect("mount");
    f.mounter.vanish(&f.layout.mountpoint("v"));
    f.svc.mount("v", "new").await.expect("remount");
    assert_eq!(f.mounter.mounts().len(), 2);
    let v = f.svc.get("v").await.expect("get").expect("v");
    assert_eq!(v.mount_count, 1, "the stale ID is gone");
    f.svc.unmount("v", "new").await.expect("unmount");
    assert!(!f.mounter.is_mounted(&f.layout.mountpoint("v")).expect("table"));
}

#[tokio::test]
async fn failed_remount_of_a_vanished_mount_drops_stale_ids_and_records_none() {
    let f = fixture();
    f.svc.create("v", opts(&[])).await.expect("create");
    f.svc.mount("v", "old").await.expect("mount");
    f.mounter.vanish(&f.layout.mountpoint("v"));
    f.mounter.fail_next("mount", Errno::ENOMEM);
    f.svc.mount("v", "new").await.expect_err("injected");
    assert_eq!(f.svc.mount_count("v").await.expect("count"), 0, "stale ID dropped, new one never recorded");
    f.svc.mount("v", "new").await.expect("works next time");
    assert_eq!(f.svc.mount_count("v").await.expect("count"), 1);
    assert!(f.mounter.is_mounted(&f.layout.mountpoint("v")).expect("table"));
}

#[tokio::test]
async fn a_failed_unmount_keeps_the_mount_seen_and_the_next_mount_reuses_it() {
    let f = fixture();
    f.svc.create("v", opts(&[])).await.expect("create");
    f.svc.mount("v", "a").await.expect("mount");
    f.mounter.fail_next("umount2", Errno::EPERM);
    f.svc.unmount("v", "a").await.expect_err("injected");
    let mp = f.layout.mountpoint("v");
    assert!(f.mounter.is_mounted(&mp).expect("table"), "still mounted");
    assert!(f.svc.get("v").await.expect("get").expect("v").mounted, "and seen so");
    f.svc.mount("v", "b").await.expect("mount");
    assert_eq!(f.mounter.mounts().len(), 1, "the live mount is used, not stacked on");
    f.svc.unmount("v", "b").await.expect("unmount");
    assert!(!f.mounter.is_mounted(&mp).expect("table"));
}

#[tokio::test]
async fn reopen_reconciles_with_kernel_table() {
    let f = fixture();
    f.svc.create("gone", opts(&[])).await.expect("create");
    f.svc.create("kept", opts(&[])).await.expect("create");
    f.svc.create("orphan", opts(&[])).await.expect("create");
    f.svc.mount("gone", "g").await.expect("m");
    f.svc.mount("kept", "k").await.expect("m");
    f.mounter.vanish(&f.layout.mountpoint("gone"));
    // A mount nobody holds (e.g. the daemon died between mount and recording the ID).
    voltool_runtime::mount::Mounter::mount(
        f.mounter.as_ref(),
        &voltool_runtime::MountRequest::bind(&f.layout.data_dir("orphan"), &f.layout.mountpoint("orphan")),
    )
    .expect("orphan mount");
    let svc2 = VolumeService::open(f.layout.clone(), fake_host(&f.mounter)).expect("reopen");
    let gone = svc2.get("gone").await.expect("get").expect("v");
    assert_eq!((gone.mounted, gone.mount_count), (false, 0));
    let kept = svc2.get("kept").await.expect("get").expect("v");
    assert_eq!((kept.mounted, kept.mount_count), (true, 1));
    assert!(!f.mounter.is_mounted(&f.layout.mountpoint("orphan")).expect("t"));
}

#[tokio::test]
async fn remove_refuses_in_use_and_deletes_data() {
    let f = fixture();
    f.svc.create("v", opts(&[])).await.expect("create");
    std::fs::write(f.layout.data_dir("v").join("file"), b"x").expect("write");
    f.svc.mount("v", "a").await.expect("mount");
    let e = f.svc.remove("v", false).await.expect_err("in use");
    assert!(matches!(e, Error::InUse { mounts: 1, .. }), "{e}");
    assert!(f.layout.data_dir("v").join("file").exists());
    f.svc.unmount("v", "a").await.expect("unmount");
    f.svc.remove("v", false).await.expect("remove");
    assert!(!f.layout.volume_dir("v").exists());
    assert!(f.svc.get("v").await.expect("get").is_none());
    assert!(matches!(f.svc.remove("v", false).await, Err(Error::NotFound { .. })));
}

#[tokio::test]
async fn orphaned_directory_is_moved_aside_not_reused() {
    let f = fixture();
    std::fs::create_dir_all(f.layout.data_dir("v")).expect("mkdir");
    std::fs::write(f.layout.data_dir("v").join("precious"), b"keep").expect("write");
    f.svc.create("v", opts(&[])).await.expect("create");
    assert!(!f.layout.data_dir("v").join("precious").exists());
    let moved: Vec<_> = std::fs::read_dir(f.layout.orphans_dir()).expect("orphans").flatten().collect();
    assert_eq!(moved.len(), 1);
    assert!(moved[0].path().join("data/precious").exists());
}

#[tokio::test]
async fn status_of_tmpfs_reports_limit() {
    let f = fixture();
    f.svc.create("t", opts(&[("type", "tmpfs"), ("size", "16m")])).await.expect("create");
    let st = f.svc.get("t").await.expect("get").expect("t").status.expect("status");
    assert_eq!(st.size_limit, "16 MiB");
    assert_eq!(st.size_limit_bytes, Some(16 << 20));
    assert!(!st.mounted);
    assert!(f.svc.get("missing").await.expect("get").is_none());
    let _ = Path::new("/");
}

#[tokio::test]
async fn on_remove_retain_keeps_the_data() {
    let f = fixture();
    f.svc.create("keep", opts(&[("on-remove", "retain")])).await.expect("create");
    std::fs::write(f.layout.data_dir("keep").join("precious"), b"x").expect("write");
    f.svc.remove("keep", false).await.expect("remove");
    assert!(f.svc.get("keep").await.expect("get").is_none());
    let kept: Vec<_> = std::fs::read_dir(f.layout.retained_dir()).expect("retained").flatten().collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].file_name().to_string_lossy().starts_with("keep-"));
    assert_eq!(std::fs::read(kept[0].path().join("data/precious")).expect("kept"), b"x");
    // The name is free again and starts empty.
    f.svc.create("keep", opts(&[])).await.expect("recreate");
    assert!(!f.layout.data_dir("keep").join("precious").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_mount_times_out_without_blocking_other_volumes() {
    let f = fixture();
    let svc = f.svc.clone().with_deadline(std::time::Duration::from_secs(2));
    svc.create("slow", opts(&[])).await.expect("create");
    svc.create("fast", opts(&[])).await.expect("create");
    f.mounter.delay_next_mount(&f.layout.mountpoint("slow"), std::time::Duration::from_secs(6));
    let slow = {
        let svc = svc.clone();
        tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            (svc.mount("slow", "a").await, t0.elapsed())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // Meanwhile another volume mounts and unmounts at full speed.
    for i in 0..20 {
        let t0 = std::time::Instant::now();
        svc.mount("fast", &format!("f{i}")).await.expect("fast mount");
        svc.unmount("fast", &format!("f{i}")).await.expect("fast unmount");
        // Blocked behind the slow volume it would wait for its 2 s deadline at least; a mount
        // and unmount here cost two synced state writes (synchronous=FULL), which on a loaded
        // machine took up to 319 ms.
        assert!(t0.elapsed() < std::time::Duration::from_secs(1), "fast volume waited {:?}", t0.elapsed());
    }
    let (r, took) = slow.await.expect("join");
    let e = r.expect_err("deadline");
    assert!(matches!(e, Error::Timeout { op: "mount", .. }), "{e}");
    assert!(e.to_string().contains("is its server answering"), "{e}");
    assert!(took < std::time::Duration::from_secs(4), "gave up after {took:?}");
    // When the hung mount finally completes, nobody holds it: it is released again.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let v = svc.get("slow").await.expect("get").expect("slow");
    assert_eq!((v.mounted, v.mount_count), (false, 0), "late mount was undone");
    // And the volume works normally afterwards.
    svc.mount("slow", "b").await.expect("mount after the server recovered");
    assert_eq!(svc.get("slow").await.expect("get").expect("slow").mount_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_repeated_mount_leaves_the_id_it_did_not_add() {
    use std::time::Duration;
    let f = fixture();
    f.svc.create("v", opts(&[])).await.expect("create");
    f.svc.mount("v", "x").await.expect("mount");
    // Something slow holds v's lock; a repeat of Mount x gives up waiting for it.
    let slow = {
        let svc = f.svc.clone();
        tokio::spawn(async move {
            let hold = |_: &Inner| {
                std::thread::sleep(Duration::from_millis(500));
                Ok(())
            };
            svc.locks.run(&svc.inner, "v", None, hold, None).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = f.svc.clone().with_deadline(Duration::from_millis(100)).mount("v", "x").await;
    assert!(matches!(e, Err(Error::Timeout { op: "mount", .. })), "{e:?}");
    slow.await.expect("join").expect("slow");
    // The late repeat runs and is undone; the ID the first Mount added stays, and so does
    // the mount under its container.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = f.svc.get("v").await.expect("get").expect("v");
    assert_eq!((v.mounted, v.mount_count), (true, 1), "the undo of a repeat released the container's mount");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_whose_caller_gave_up_waiting_for_the_lock_still_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let f = fixture();
    let (svc, ran) = (f.svc.clone(), Arc::new(AtomicBool::new(false)));
    // Something slow holds volume v's lock (a hung mount).
    let slow = {
        let svc = svc.clone();
        tokio::spawn(async move {
            let hold = |_: &Inner| {
                std::thread::sleep(Duration::from_millis(800));
                Ok(())
            };
            svc.locks.run(&svc.inner, "v", None, hold, None).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // An Unmount of v gives up waiting for it...
    let r2 = ran.clone();
    let release = move |_: &Inner| {
        r2.store(true, Ordering::SeqCst);
        Ok(())
    };
    let e = svc.locks.run(&svc.inner, "v", Some(("unmount", Duration::from_millis(100))), release, None).await;
    assert!(matches!(e, Err(Error::Timeout { op: "unmount", .. })), "{e:?}");
    assert!(!ran.load(Ordering::SeqCst), "never under another operation's lock");
    // ...but still runs once the lock is free: Docker will not send that Unmount again.
    slow.await.expect("join").expect("slow");
    let start = std::time::Instant::now();
    while !ran.load(Ordering::SeqCst) {
        assert!(start.elapsed() < Duration::from_secs(5), "the abandoned work never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the lock map is empty again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(svc.locks.busy(), 0);
}

#[tokio::test]
async fn project_quota_volumes_get_distinct_ids_limits_and_grow_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let layout = Layout { state_dir: dir.path().join("state"), mount_root: dir.path().join("mnt") };
    let mounter = Arc::new(RecordingMounter::new());
    let projects = Arc::new(voltool_runtime::quota::RecordingProjectQuota::new());
    let mut host = fake_host(&mounter);
    host.projects = projects.clone();
    host.quota.project = true;
    let svc = VolumeService::open(layout.clone(), host).expect("open");
    svc.create("p1", opts(&[("size", "10m")])).await.expect("p1");
    svc.create("p2", opts(&[("size", "20m"), ("quota", "project")])).await.expect("p2");
    let (id1, id2) = (projects.project_of(&layout.data_dir("p1")), projects.project_of(&layout.data_dir("p2")));
    assert_eq!((id1, id2), (Some(100_000), Some(100_001)), "tagged with distinct project IDs");
    assert_eq!(projects.limit_of(100_000), Some(10 << 20));
    let st = svc.get("p1").await.expect("get").expect("p1").status.expect("status");
    assert_eq!(st.backing, "project quota");
    svc.mount("p1", "a").await.expect("mount");
    assert_eq!(mounter.mounts()[0].source, layout.data_dir("p1").display().to_string(), "bind of the data dir");
    svc.resize("p1", "30m").await.expect("grow while mounted");
    assert_eq!(projects.limit_of(100_000), Some(30 << 20));
    assert!(matches!(svc.resize("p1", "5m").await, Err(Error::Resize { .. })));
    // An image is still chosen when a filesystem is asked for.
    svc.create("img", opts(&[("size", "64m"), ("fs", "ext4")])).await.expect("img");
    assert_eq!(svc.get("img").await.expect("get").expect("img").status.expect("st").backing, "image (ext4)");
}
