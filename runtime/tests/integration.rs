//! Real-kernel tests of the runtime layer. They need root (CAP_SYS_ADMIN); outside CI they
//! print a SKIP line and pass when not root, in CI (`CI=true`) they fail instead.

use std::path::Path;

mod container_sandbox;

use voltool_runtime::mount::{MountFlags, MountRequest, Mounter, UnmountOutcome, unmount};
use voltool_runtime::{LinuxMounter, mountinfo, ns};

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: CI must run the runtime tests as root");
    println!("SKIP {test}: needs root (CAP_SYS_ADMIN) for real mounts");
    false
}

fn host_sees(target: &Path) -> bool {
    // The test process's leader thread stays in the host namespace.
    mountinfo::read(Path::new("/proc/self/mountinfo")).expect("mountinfo").iter().any(|m| m.mount_point == target)
}

#[test]
fn tmpfs_mount_size_and_unmount() {
    if !root_or_skip("tmpfs_mount_size_and_unmount") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("t");
    std::fs::create_dir(&target).expect("mkdir");
    let m = LinuxMounter;
    // Everything in a private namespace so a failing test leaves nothing behind on the host.
    ns::in_new_mount_ns(|| {
        let req = MountRequest::filesystem(
            "tmpfs",
            "voltool-test",
            &target,
            MountFlags::MS_NOSUID,
            "size=1048576,mode=0750".into(),
        );
        m.mount(&req).expect("mount tmpfs");
        let entry = m.mount_table().expect("table").into_iter().find(|e| e.mount_point == target).expect("mounted");
        assert_eq!(entry.fs_type, "tmpfs");
        let st = nix::sys::statvfs::statvfs(&target).expect("statvfs");
        assert_eq!(st.blocks() * st.fragment_size(), 1024 * 1024);
        let big = vec![7u8; 2 * 1024 * 1024];
        let err = std::fs::write(target.join("f"), &big).expect_err("2 MiB into 1 MiB tmpfs");
        assert_eq!(err.raw_os_error(), Some(libc_enospc()));
        assert_eq!(unmount(&m, &target).expect("unmount"), UnmountOutcome::Unmounted);
        assert!(!m.is_mounted(&target).expect("table"));
        assert_eq!(unmount(&m, &target).expect("second unmount"), UnmountOutcome::NotMounted);
    })
    .expect("namespace");
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

#[test]
fn bind_mount_shows_same_bytes_and_busy_unmount_detaches() {
    if !root_or_skip("bind_mount_shows_same_bytes_and_busy_unmount_detaches") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::create_dir(&dst).expect("mkdir");
    std::fs::write(src.join("hello"), b"bytes").expect("write");
    let m = LinuxMounter;
    ns::in_new_mount_ns(|| {
        m.mount(&MountRequest::bind(&src, &dst)).expect("bind");
        assert_eq!(std::fs::read(dst.join("hello")).expect("read through bind"), b"bytes");
        // Hold the mount busy with an open directory: plain umount gives EBUSY, the helper
        // falls back to a lazy detach.
        let _busy = std::fs::File::open(&dst).expect("open dir");
        let _cwd_holder = std::fs::File::open(dst.join("hello")).expect("open file");
        assert_eq!(unmount(&m, &dst).expect("unmount"), UnmountOutcome::Detached);
        assert!(!m.is_mounted(&dst).expect("table"));
    })
    .expect("namespace");
}

#[test]
fn mount_in_new_namespace_does_not_leak_and_setns_enters_it() {
    if !root_or_skip("mount_in_new_namespace_does_not_leak_and_setns_enters_it") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("private");
    std::fs::create_dir(&target).expect("mkdir");
    let (tx_ready, rx_ready) = std::sync::mpsc::channel();
    let (tx_done, rx_done) = std::sync::mpsc::channel::<()>();
    let t2 = target.clone();
    // A holder thread lives in the new namespace with a tmpfs mounted, until told to finish.
    let holder = std::thread::spawn(move || {
        ns::in_new_mount_ns(move || {
            LinuxMounter
                .mount(&MountRequest::filesystem("tmpfs", "voltool-ns-test", &t2, MountFlags::empty(), String::new()))
                .expect("mount in ns");
            std::fs::write(t2.join("marker"), b"inside").expect("write marker");
            tx_ready.send(nix::unistd::gettid()).expect("send tid");
            rx_done.recv().ok();
        })
        .expect("new ns");
    });
    let tid = rx_ready.recv().expect("holder ready");
    assert!(!host_sees(&target), "mount leaked into the host namespace");
    assert!(!target.join("marker").exists(), "file written in the namespace visible on the host");
    // setns into the holder's namespace from a different thread sees the mount.
    let ns_file = format!("/proc/{}/task/{}/ns/mnt", std::process::id(), tid);
    let seen = ns::in_mount_ns(Path::new(&ns_file), || {
        (LinuxMounter.is_mounted(&target).expect("table"), std::fs::read(target.join("marker")).ok())
    })
    .expect("setns");
    assert_eq!(seen, (true, Some(b"inside".to_vec())));
    tx_done.send(()).expect("finish");
    holder.join().expect("holder");
    assert!(!host_sees(&target));
}

#[test]
fn propagation_change_is_visible_in_mountinfo() {
    if !root_or_skip("propagation_change_is_visible_in_mountinfo") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("p");
    std::fs::create_dir(&target).expect("mkdir");
    let m = LinuxMounter;
    ns::in_new_mount_ns(|| {
        m.mount(&MountRequest::filesystem("tmpfs", "p", &target, MountFlags::empty(), String::new())).expect("mount");
        m.set_propagation(&target, voltool_runtime::Propagation::Shared, false).expect("make shared");
        let e = m.mount_table().expect("t").into_iter().find(|e| e.mount_point == target).expect("entry");
        assert!(e.is_shared(), "{e:?}");
        m.set_propagation(&target, voltool_runtime::Propagation::Private, false).expect("make private");
        let e = m.mount_table().expect("t").into_iter().find(|e| e.mount_point == target).expect("entry");
        assert!(!e.is_shared(), "{e:?}");
    })
    .expect("namespace");
}

#[test]
fn loop_image_enforces_size_grows_and_autoclears() {
    use voltool_runtime::loopdev::{LinuxLoopDevices, LoopDevices};
    if !root_or_skip("loop_image_enforces_size_grows_and_autoclears") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("image");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    std::fs::File::create(&image).expect("create").set_len(32 << 20).expect("sparse");
    let mk =
        std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image).status().expect("mkfs.ext4");
    assert!(mk.success());
    let loops = LinuxLoopDevices::new();
    let device = ns::in_new_mount_ns(|| {
        let att = loops.attach(&image).expect("attach");
        let device = att.device.clone();
        let req =
            MountRequest::filesystem("ext4", &device.display().to_string(), &mnt, MountFlags::empty(), String::new());
        LinuxMounter.mount(&req).expect("mount loop device");
        drop(att); // the mount now holds the device; autoclear frees it on unmount
        assert_eq!(loops.holders(&image).expect("holders"), vec![device.clone()], "the mounted image is held");
        let chunk = vec![0xA5u8; 1 << 20];
        let mut written = 0u64;
        let full = loop {
            match std::fs::OpenOptions::new().append(true).create(true).open(mnt.join("fill")).and_then(|mut f| {
                std::io::Write::write_all(&mut f, &chunk)?;
                f.sync_all()
            }) {
                Ok(()) => written += 1 << 20,
                Err(e) => break e,
            }
            assert!(written < 64 << 20, "wrote past the 32 MiB image");
        };
        assert_eq!(full.raw_os_error(), Some(libc_enospc()), "{full}");
        assert!(written >= 24 << 20, "only {written} bytes fit in a 32 MiB image");
        // Grow the backing file; the loop device sees it only after LOOP_SET_CAPACITY.
        let sectors = || -> u64 {
            let name = device.file_name().expect("name").to_string_lossy().into_owned();
            std::fs::read_to_string(Path::new("/sys/block").join(name).join("size"))
                .expect("size")
                .trim()
                .parse()
                .expect("n")
        };
        assert_eq!(sectors(), (32 << 20) / 512);
        std::fs::OpenOptions::new().write(true).open(&image).expect("open").set_len(64 << 20).expect("grow");
        loops.refresh_capacity(&device).expect("LOOP_SET_CAPACITY");
        assert_eq!(sectors(), (64 << 20) / 512, "device grew while mounted");
        assert_eq!(unmount(&LinuxMounter, &mnt).expect("unmount"), UnmountOutcome::Unmounted);
        device
    })
    .expect("namespace");
    // Autoclear: the device has no backing file once the mount is gone.
    let name = device.file_name().expect("name").to_string_lossy().into_owned();
    let backing = Path::new("/sys/block").join(&name).join("loop/backing_file");
    let t0 = std::time::Instant::now();
    while backing.exists() && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!backing.exists(), "{} still attached", device.display());
    assert!(loops.holders(&image).expect("holders").is_empty(), "nothing holds the image once unmounted");
}

#[test]
fn fuse_mount_shows_in_mountinfo_and_unmounts() {
    if !root_or_skip("fuse_mount_shows_in_mountinfo_and_unmounts") {
        return;
    }
    if !Path::new(voltool_runtime::fuse::FUSE_DEVICE).exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have /dev/fuse");
        println!("SKIP fuse_mount_shows_in_mountinfo_and_unmounts: no /dev/fuse");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("f");
    std::fs::create_dir(&target).expect("mkdir");
    let m = LinuxMounter;
    ns::in_new_mount_ns(|| {
        let fd = voltool_runtime::fuse::mount_fuse(&m, &target, "voltool-fuse-test", true).expect("mount fuse");
        let e = m.mount_table().expect("table").into_iter().find(|e| e.mount_point == target).expect("mounted");
        assert_eq!((e.fs_type.as_str(), e.source.as_str()), ("fuse", "voltool-fuse-test"));
        assert!(e.options.contains("nosuid") && e.options.contains("nodev"), "{e:?}");
        assert!(e.super_options.contains("default_permissions") && e.super_options.contains("allow_other"), "{e:?}");
        // Nobody serves the descriptor: unmounting needs no answer from a server.
        assert_eq!(unmount(&m, &target).expect("unmount"), UnmountOutcome::Unmounted);
        assert!(!m.is_mounted(&target).expect("table"));
        drop(fd);
    })
    .expect("namespace");
    assert!(!host_sees(&target));
}

fn check(
    data: &std::path::Path,
    command: &str,
    timeout: std::time::Duration,
) -> voltool_runtime::container::ContainerOutcome {
    let work = tempfile::tempdir().expect("work");
    let confinement = voltool_runtime::container::Confinement::default();
    // The check runs as root of its own user namespace: the data becomes its own.
    voltool_runtime::container::shift_owners(data, &confinement.ids).expect("shift owners");
    voltool_runtime::container::run(&voltool_runtime::container::ContainerSpec {
        rootfs: None,
        data: data.to_path_buf(),
        command: command.into(),
        timeout,
        workdir: work.path().to_path_buf(),
        confinement,
    })
    .expect("container")
}

#[test]
fn check_container_isolates_and_reports_the_exit_status() {
    if !root_or_skip("check_container_isolates_and_reports_the_exit_status") {
        return;
    }
    let data = tempfile::tempdir().expect("data");
    std::fs::write(data.path().join("hello.txt"), "restored\n").expect("write");
    let t = std::time::Duration::from_secs(20);
    // The data is at /data, read-write; the command is PID 1; its own hostname.
    let o = check(data.path(), "cat /data/hello.txt && echo pid=$$ && hostname && echo made > /data/new", t);
    assert_eq!(o.status, 0, "{}", o.output);
    assert!(
        o.output.contains("restored") && o.output.contains("pid=1") && o.output.contains("voltool-check"),
        "{}",
        o.output
    );
    assert_eq!(std::fs::read_to_string(data.path().join("new")).expect("written"), "made\n");
    // No network: only a loopback interface, and it is down; nothing reachable.
    let o = check(data.path(), "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '", t);
    assert_eq!(o.output.trim(), "lo", "{}", o.output);
    // The root is read-only, the host's private directories are not there, other processes neither.
    let o =
        check(data.path(), "touch /usr/x 2>&1; touch /etc/x 2>&1; ls /root /home 2>&1; ls /proc | grep -c '^[0-9]'", t);
    assert!(o.output.matches("Read-only file system").count() >= 2, "{}", o.output);
    assert!(o.output.contains("No such file"), "{}", o.output);
    assert!(
        o.output.trim().ends_with('2') || o.output.trim().ends_with('3'),
        "only the shell and its children: {}",
        o.output
    );
    // A descriptor the daemon holds open without close-on-exec does not reach the command:
    // it sees stdio and the directory `ls` itself opens, nothing else.
    let leaked = nix::fcntl::open(
        data.path().join("hello.txt").as_path(),
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open without O_CLOEXEC");
    let o = check(data.path(), "ls /proc/self/fd | tr '\\n' ' '", t);
    assert_eq!(o.output.trim(), "0 1 2 3", "descriptors in the check: {}", o.output);
    drop(leaked);
    // The status decides; a timeout kills everything.
    assert_eq!(check(data.path(), "exit 7", t).status, 7);
    let o = check(data.path(), "sleep 60", std::time::Duration::from_millis(500));
    assert!(o.timed_out && o.status == 128 + 9, "{o:?}");
    // Nothing leaked into the host's mount table.
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!table.contains(&*data.path().to_string_lossy()), "{table}");
}

/// The snapshot primitive end to end on the real kernel: an ext4 image on an xfs filesystem
/// (which shares blocks), mounted through a loop device; freeze, reflink, thaw; the copy mounts
/// read-only (`noload`) and holds exactly what was written before the freeze, while the live
/// filesystem goes on.
#[test]
fn freeze_reflink_thaw_gives_a_clean_point_in_time_copy() {
    use voltool_runtime::loopdev::{LinuxLoopDevices, LoopDevices};
    use voltool_runtime::snapshot::{LinuxSnapshots, SnapshotOps};
    if !root_or_skip("freeze_reflink_thaw_gives_a_clean_point_in_time_copy") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (xfs_img, state, live, copy) =
        (dir.path().join("xfs.img"), dir.path().join("state"), dir.path().join("live"), dir.path().join("copy"));
    for d in [&state, &live, &copy] {
        std::fs::create_dir(d).expect("mkdir");
    }
    std::fs::File::create(&xfs_img).expect("create").set_len(320 << 20).expect("sparse");
    let mk = std::process::Command::new("mkfs.xfs").args(["-q", "-m", "reflink=1"]).arg(&xfs_img).status();
    assert!(mk.expect("mkfs.xfs").success());
    let loops = LinuxLoopDevices::new();
    ns::in_new_mount_ns(|| {
        let mount = |image: &Path, fs: &str, at: &Path, flags: MountFlags, data: &str| {
            let att = loops.attach(image).expect("attach");
            let req = MountRequest::filesystem(fs, &att.device.display().to_string(), at, flags, data.into());
            LinuxMounter.mount(&req).expect("mount");
        };
        mount(&xfs_img, "xfs", &state, MountFlags::empty(), "");
        let image = state.join("image");
        std::fs::File::create(&image).expect("create").set_len(32 << 20).expect("sparse");
        let mk = std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image).status();
        assert!(mk.expect("mkfs.ext4").success());
        mount(&image, "ext4", &live, MountFlags::empty(), "");
        std::fs::write(live.join("before"), b"in the copy").expect("write");
        let snap = LinuxSnapshots;
        snap.freeze(&live).expect("freeze");
        let cloned = snap.reflink(&image, &state.join("copy.img"));
        snap.thaw(&live).expect("thaw");
        cloned.expect("reflink on xfs");
        snap.thaw(&live).expect("a second thaw is a no-op");
        std::fs::write(live.join("after"), b"not in the copy").expect("the live volume takes writes again");
        let ro = MountFlags::MS_RDONLY | MountFlags::MS_NODEV | MountFlags::MS_NOSUID | MountFlags::MS_NOEXEC;
        mount(&state.join("copy.img"), "ext4", &copy, ro, "noload");
        assert_eq!(std::fs::read(copy.join("before")).expect("read"), b"in the copy");
        assert!(!copy.join("after").exists(), "written after the freeze");
        assert!(std::fs::write(copy.join("x"), b"x").is_err(), "the copy is read-only");
        for m in [&copy, &live, &state] {
            unmount(&LinuxMounter, m).expect("unmount");
        }
    })
    .expect("namespace");
}

/// btrfs subvolumes on the real kernel: a subvolume made, a read-only snapshot of it holds what
/// was there at that instant and refuses writes, and both are deleted with their contents.
#[test]
fn btrfs_subvolume_snapshots_are_read_only_points_in_time() {
    use voltool_runtime::loopdev::{LinuxLoopDevices, LoopDevices};
    use voltool_runtime::snapshot::{LinuxSnapshots, SnapshotOps};
    if !root_or_skip("btrfs_subvolume_snapshots_are_read_only_points_in_time") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (img, state) = (dir.path().join("btrfs.img"), dir.path().join("state"));
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::File::create(&img).expect("create").set_len(256 << 20).expect("sparse");
    let mk = std::process::Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&img).status();
    assert!(mk.expect("mkfs.btrfs").success());
    let loops = LinuxLoopDevices::new();
    ns::in_new_mount_ns(|| {
        let att = loops.attach(&img).expect("attach");
        let req = MountRequest::filesystem(
            "btrfs",
            &att.device.display().to_string(),
            &state,
            MountFlags::empty(),
            String::new(),
        );
        LinuxMounter.mount(&req).expect("mount btrfs");
        let snap = LinuxSnapshots;
        assert!(!snap.is_subvolume(&state.join("nothing")));
        snap.create_subvolume(&state, "data").expect("create subvolume");
        let data = state.join("data");
        assert!(snap.is_subvolume(&data));
        std::fs::create_dir(data.join("d")).expect("mkdir");
        std::fs::write(data.join("d/before"), b"in the snapshot").expect("write");
        std::fs::create_dir(state.join("snaps")).expect("mkdir");
        snap.snapshot_subvolume(&data, &state.join("snaps"), "root").expect("snapshot");
        std::fs::write(data.join("d/after"), b"not in it").expect("the live subvolume takes writes");
        let root = state.join("snaps/root");
        assert!(snap.is_subvolume(&root));
        assert_eq!(std::fs::read(root.join("d/before")).expect("read"), b"in the snapshot");
        assert!(!root.join("d/after").exists());
        let e = std::fs::write(root.join("x"), b"x").expect_err("read-only");
        assert_eq!(e.raw_os_error(), Some(nix::errno::Errno::EROFS as i32), "{e}");
        assert!(snap.snapshot_subvolume(&data, &state.join("snaps"), "../escape").is_err(), "one path component only");
        snap.delete_subvolume(&state.join("snaps"), "root").expect("delete the snapshot");
        assert!(!root.exists());
        snap.delete_subvolume(&state.join("snaps"), "root").expect("deleting what is gone is done");
        snap.delete_subvolume(&state, "data").expect("delete the subvolume with its contents");
        assert!(!data.exists());
        assert!(snap.create_subvolume(&dir.path().join("state"), "a/b").is_err());
        unmount(&LinuxMounter, &state).expect("unmount");
    })
    .expect("namespace");
}

/// A reflink copy of a tree on xfs keeps what a backup archives: kinds, owners, modes (setuid
/// too), nanosecond mtimes, xattrs, symlink targets, hard links; a mount inside is left out.
#[test]
fn reflink_tree_copies_a_tree_with_its_metadata() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use voltool_runtime::loopdev::{LinuxLoopDevices, LoopDevices};
    use voltool_runtime::snapshot::{LinuxSnapshots, SnapshotOps};
    if !root_or_skip("reflink_tree_copies_a_tree_with_its_metadata") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (img, state) = (dir.path().join("xfs.img"), dir.path().join("state"));
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::File::create(&img).expect("create").set_len(320 << 20).expect("sparse");
    let mk = std::process::Command::new("mkfs.xfs").args(["-q", "-m", "reflink=1"]).arg(&img).status();
    assert!(mk.expect("mkfs.xfs").success());
    let loops = LinuxLoopDevices::new();
    ns::in_new_mount_ns(|| {
        let att = loops.attach(&img).expect("attach");
        let req = MountRequest::filesystem(
            "xfs",
            &att.device.display().to_string(),
            &state,
            MountFlags::empty(),
            String::new(),
        );
        LinuxMounter.mount(&req).expect("mount xfs");
        let src = state.join("data");
        std::fs::create_dir_all(src.join("a/b")).expect("mkdir");
        std::fs::write(src.join("a/b/file"), vec![7u8; 1 << 20]).expect("write");
        std::fs::set_permissions(src.join("a/b/file"), std::fs::Permissions::from_mode(0o4750)).expect("chmod");
        std::os::unix::fs::chown(src.join("a/b/file"), Some(1000), Some(1001)).expect("chown");
        std::fs::set_permissions(src.join("a/b/file"), std::fs::Permissions::from_mode(0o4750)).expect("chmod again");
        std::fs::hard_link(src.join("a/b/file"), src.join("a/link")).expect("hard link");
        std::os::unix::fs::symlink("b/file", src.join("a/sym")).expect("symlink");
        nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).expect("fifo");
        let x = std::process::Command::new("setfattr")
            .args(["-n", "user.k", "-v", "v1"])
            .arg(src.join("a/b/file"))
            .status();
        let has_xattr = x.is_ok_and(|s| s.success());
        let mnt = src.join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir");
        LinuxMounter
            .mount(&MountRequest::filesystem("tmpfs", "tmpfs", &mnt, MountFlags::empty(), String::new()))
            .expect("tmpfs");
        std::fs::write(mnt.join("inside"), b"other filesystem").expect("write");
        let dst = state.join("copy");
        let copy = LinuxSnapshots.reflink_tree(&src, &dst).expect("reflink tree");
        assert_eq!(copy.files, 1, "one regular file (its hard link is a link): {copy:?}");
        let (a, b) = (
            std::fs::metadata(src.join("a/b/file")).expect("src"),
            std::fs::metadata(dst.join("a/b/file")).expect("dst"),
        );
        assert_eq!((b.uid(), b.gid(), b.mode() & 0o7777, b.len()), (1000, 1001, 0o4750, 1 << 20));
        assert_eq!((b.mtime(), b.mtime_nsec()), (a.mtime(), a.mtime_nsec()));
        assert_eq!(std::fs::read(dst.join("a/b/file")).expect("read"), vec![7u8; 1 << 20]);
        assert_eq!(std::fs::metadata(dst.join("a/link")).expect("link").ino(), b.ino(), "a hard link stays one");
        assert_eq!(std::fs::read_link(dst.join("a/sym")).expect("symlink"), Path::new("b/file"));
        assert!(std::fs::symlink_metadata(dst.join("fifo")).expect("fifo").file_type().is_fifo());
        assert!(dst.join("mnt").exists() && !dst.join("mnt/inside").exists(), "the mount's contents are left out");
        if has_xattr {
            let g = std::process::Command::new("getfattr")
                .args(["--only-values", "-n", "user.k"])
                .arg(dst.join("a/b/file"))
                .output()
                .expect("getfattr");
            assert_eq!(g.stdout, b"v1", "xattrs copied");
        }
        std::fs::write(src.join("a/b/file"), b"changed").expect("write the source");
        assert_eq!(std::fs::read(dst.join("a/b/file")).expect("read").len(), 1 << 20, "the copy is independent");
        assert!(LinuxSnapshots.reflink_tree(&src, &dst).is_err(), "the destination must not exist");
        unmount(&LinuxMounter, &mnt).expect("unmount tmpfs");
        unmount(&LinuxMounter, &state).expect("unmount");
    })
    .expect("namespace");
}
