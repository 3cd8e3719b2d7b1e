//! End-to-end tests of NFS volumes over FUSE against a real NFSv3 server (nfs-ganesha from
//! deploy/test-env/nfs/start-ganesha.sh: NFS port 18049, MOUNT port 18048 on 127.0.0.1).
//! They need root (mount(2), /dev/fuse) and the server: the one test.sh started
//! (`VOLTOOL_TEST_NFS_EXPORT`), else a ganesha already listening on 18049 whose export dir
//! can be found, else one started here in /tmp/voltool-nfsfuse-test. Outside CI a missing
//! requirement prints a SKIP line; with `CI=true` it fails.
//!
//! Every mount is made in a private mount namespace, so nothing leaks onto the host.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use voltool_nfsfuse::{NfsConfig, serve};
use voltool_runtime::mount::{MntFlags, Mounter, UnmountOutcome, unmount};
use voltool_runtime::{LinuxMounter, ns};

const NFS_PORT: u16 = 18049;
const MOUNT_PORT: u16 = 18048;

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn skip(test: &str, reason: &str) {
    assert!(!ci(), "{test}: {reason} (CI must provide it)");
    println!("SKIP {test}: {reason}");
}

/// The test NFS server: its export directory (local path) and pid file.
#[derive(Debug, Clone)]
struct Server {
    export: PathBuf,
    pid_file: PathBuf,
}

impl Server {
    fn pid(&self) -> nix::unistd::Pid {
        let text = std::fs::read_to_string(&self.pid_file).expect("ganesha pid file");
        nix::unistd::Pid::from_raw(text.trim().parse().expect("pid"))
    }
}

fn listening() -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], NFS_PORT).into(), Duration::from_secs(1)).is_ok()
}

/// A running ganesha's directory, from its command line (`-f DIR/ganesha.conf`).
fn running_ganesha_dir() -> Option<PathBuf> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if !args.first().is_some_and(|a| a.ends_with("ganesha.nfsd")) {
            continue;
        }
        let conf = args.iter().position(|a| a == "-f").and_then(|i| args.get(i + 1))?;
        let dir = Path::new(conf).parent()?.to_path_buf();
        if dir.join("export").is_dir() && dir.join("ganesha.pid").is_file() {
            return Some(dir);
        }
    }
    None
}

fn find_or_start_server() -> Result<Server, String> {
    if let Ok(p) = std::env::var("VOLTOOL_TEST_NFS_EXPORT") {
        let export = PathBuf::from(&p);
        let dir = export.parent().ok_or("VOLTOOL_TEST_NFS_EXPORT has no parent")?.to_path_buf();
        if !export.is_dir() || !listening() {
            return Err(format!("VOLTOOL_TEST_NFS_EXPORT={p} but no server answers on port {NFS_PORT}"));
        }
        // The test script names the pid file when the export is not under the server's dir.
        let pid_file =
            std::env::var("VOLTOOL_TEST_NFS_PIDFILE").map(PathBuf::from).unwrap_or_else(|_| dir.join("ganesha.pid"));
        return Ok(Server { export, pid_file });
    }
    if listening() {
        let dir = running_ganesha_dir()
            .ok_or("something listens on port 18049 but it is not a ganesha started by start-ganesha.sh")?;
        return Ok(Server { export: dir.join("export"), pid_file: dir.join("ganesha.pid") });
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/test-env/nfs/start-ganesha.sh");
    let dir = PathBuf::from("/tmp/voltool-nfsfuse-test");
    let out = Command::new("bash")
        .arg(&script)
        .env("NFS_DIR", &dir)
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("start-ganesha.sh failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let export = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(Server { export, pid_file: dir.join("ganesha.pid") })
}

/// The server for `test`, or `None` after a SKIP line (not root, no server).
fn server(test: &str) -> Option<Server> {
    if !nix::unistd::geteuid().is_root() {
        skip(test, "needs root (mount(2), /dev/fuse)");
        return None;
    }
    if !Path::new("/dev/fuse").exists() {
        skip(test, "no /dev/fuse");
        return None;
    }
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(find_or_start_server) {
        Ok(s) => Some(s.clone()),
        Err(e) => {
            skip(test, &format!("no NFS server: {e}"));
            None
        }
    }
}

/// Tests in this binary share one server and one of them stops it: run them one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Lazily detaches the mount if the test body panics, so the session can end.
struct DetachOnDrop(PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        let _ = LinuxMounter.umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// Removes the volume directory on the server side when dropped, even after a failure.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn our_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("nfsfuse") || c.starts_with("fuser"))
        .collect()
}

/// Mounts a fresh volume directory `sub` of the export over FUSE in a private mount
/// namespace, runs `f(mountpoint, server-side dir)`, unmounts, and checks the session ended
/// without leaving threads behind.
fn with_volume(srv: &Server, sub: &str, call_timeout: Duration, f: impl FnOnce(&Path, &Path) + Send) {
    let server_dir = srv.export.join(sub);
    let _ = std::fs::remove_dir_all(&server_dir);
    std::fs::create_dir_all(&server_dir).expect("volume dir on the server");
    let _cleanup = RemoveOnDrop(server_dir.clone());
    std::fs::set_permissions(&server_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let target = tmp.path().join("vol");
    std::fs::create_dir(&target).expect("mountpoint");
    let mut cfg = NfsConfig::new("127.0.0.1".parse().expect("ip"), srv.export.display().to_string());
    cfg.subdir = sub.into();
    cfg.nfs_port = Some(NFS_PORT);
    cfg.mount_port = Some(MOUNT_PORT);
    cfg.call_timeout = call_timeout;
    ns::in_new_mount_ns(|| {
        let fd = voltool_runtime::fuse::mount_fuse(&LinuxMounter, &target, &cfg.source(), true).expect("mount fuse");
        let guard = DetachOnDrop(target.clone());
        let entry = LinuxMounter.mount_table().expect("table").into_iter().find(|m| m.mount_point == target);
        assert_eq!(entry.map(|m| (m.fs_type, m.source)), Some(("fuse".to_string(), cfg.source())));
        let mounted = serve(cfg.clone(), fd).expect("serve");
        f(&target, &server_dir);
        assert_eq!(unmount(&LinuxMounter, &target).expect("unmount"), UnmountOutcome::Unmounted);
        std::mem::forget(guard);
        let t0 = Instant::now();
        mounted.join().expect("session ends cleanly after the unmount");
        assert!(t0.elapsed() < Duration::from_secs(5), "join took {:?}", t0.elapsed());
        assert_eq!(our_threads(), Vec::<String>::new(), "threads left after join");
    })
    .expect("namespace");
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn files_dirs_links_and_attributes_through_fuse() {
    let test = "files_dirs_links_and_attributes_through_fuse";
    let Some(srv) = server(test) else { return };
    let _serial = serial();
    let sub = format!("nfsfuse-it-{}", std::process::id());
    with_volume(&srv, &sub, Duration::from_secs(10), |vol, on_server| {
        // A 5 MiB file: written and read back through the mount, identical on the server.
        let big = pattern(5 * 1024 * 1024 + 123);
        let t0 = Instant::now();
        std::fs::write(vol.join("big"), &big).expect("write 5 MiB");
        let (t1, back) = (Instant::now(), std::fs::read(vol.join("big")).expect("read back"));
        let blksize = std::fs::metadata(vol.join("big")).expect("stat").blksize();
        println!("5 MiB: write {:?}, read {:?}, st_blksize {blksize}", t1 - t0, t1.elapsed());
        assert!(back == big, "read back differs");
        assert!(std::fs::read(on_server.join("big")).expect("server copy") == big, "server copy differs");
        assert_eq!(std::fs::metadata(vol.join("big")).expect("stat").len(), big.len() as u64);
        // Positioned reads across chunk boundaries.
        let mut f = std::fs::File::open(vol.join("big")).expect("open");
        let mut buf = vec![0u8; 300_000];
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(1_000_000)).expect("seek");
        f.read_exact(&mut buf).expect("read at offset");
        assert!(buf[..] == big[1_000_000..1_300_000]);
        drop(f);

        // 2,000 entries: every name listed once, as on the server.
        std::fs::create_dir(vol.join("many")).expect("mkdir");
        for i in 0..2000 {
            std::fs::File::create(vol.join(format!("many/entry-{i:04}"))).expect("create");
        }
        let mut listed: Vec<String> = std::fs::read_dir(vol.join("many"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        listed.sort();
        let want: Vec<String> = (0..2000).map(|i| format!("entry-{i:04}")).collect();
        assert_eq!(listed, want);
        assert_eq!(std::fs::read_dir(on_server.join("many")).expect("server readdir").count(), 2000);
        let kinds: Vec<_> =
            std::fs::read_dir(vol).expect("readdir").map(|e| e.expect("e").file_type().expect("type")).collect();
        assert!(kinds.iter().any(|k| k.is_dir()) && kinds.iter().any(|k| k.is_file()), "d_type is reported");

        // rename, within a directory and into another.
        std::fs::write(vol.join("a"), b"contents of a").expect("write a");
        std::fs::rename(vol.join("a"), vol.join("b")).expect("rename");
        assert!(!on_server.join("a").exists());
        assert_eq!(std::fs::read(on_server.join("b")).expect("b on server"), b"contents of a");
        std::fs::rename(vol.join("b"), vol.join("many/b")).expect("rename into dir");
        assert_eq!(std::fs::read(vol.join("many/b")).expect("moved"), b"contents of a");
        std::fs::rename(vol.join("many/b"), vol.join("b")).expect("rename back");

        // symlink / readlink.
        std::os::unix::fs::symlink("some/where/else", vol.join("link")).expect("symlink");
        assert_eq!(std::fs::read_link(vol.join("link")).expect("readlink"), Path::new("some/where/else"));
        assert_eq!(std::fs::read_link(on_server.join("link")).expect("server"), Path::new("some/where/else"));
        assert!(std::fs::symlink_metadata(vol.join("link")).expect("lstat").file_type().is_symlink());
        std::os::unix::fs::symlink("b", vol.join("link-to-b")).expect("symlink");
        assert_eq!(std::fs::read(vol.join("link-to-b")).expect("follow"), b"contents of a");

        // hard link: one inode, two names.
        std::fs::hard_link(vol.join("b"), vol.join("b2")).expect("link");
        let (m1, m2) = (std::fs::metadata(vol.join("b")).expect("b"), std::fs::metadata(vol.join("b2")).expect("b2"));
        assert_eq!((m1.ino(), m1.nlink()), (m2.ino(), 2));
        assert_eq!(std::fs::metadata(on_server.join("b2")).expect("server").nlink(), 2);

        // chmod / chown / truncate / utimes: exactly what the server stores and reports.
        let p = vol.join("b");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        std::os::unix::fs::chown(&p, Some(1234), Some(5678)).expect("chown");
        let f = std::fs::OpenOptions::new().write(true).open(&p).expect("open rw");
        f.set_len(5).expect("truncate");
        let when = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
        f.set_modified(when).expect("set mtime");
        drop(f);
        let s = std::fs::metadata(on_server.join("b")).expect("server stat");
        assert_eq!((s.mode() & 0o7777, s.uid(), s.gid(), s.len()), (0o640, 1234, 5678, 5));
        assert_eq!((s.mtime(), s.mtime_nsec()), (1_600_000_000, 123_456_789));
        let m = std::fs::metadata(&p).expect("stat through mount");
        assert_eq!((m.mode(), m.uid(), m.gid(), m.len()), (s.mode(), s.uid(), s.gid(), 5));
        assert_eq!((m.mtime(), m.mtime_nsec()), (s.mtime(), s.mtime_nsec()));
        assert_eq!(std::fs::read(&p).expect("truncated"), b"conte");

        // A file created by another user belongs to that user; directories too.
        let out = Command::new("sh")
            .args(["-c", "echo hi > owned && mkdir owned-dir"])
            .current_dir(vol)
            .uid(1000)
            .gid(1001)
            .output()
            .expect("run sh as 1000");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for name in ["owned", "owned-dir"] {
            let s = std::fs::metadata(on_server.join(name)).expect("server stat");
            assert_eq!((s.uid(), s.gid()), (1000, 1001), "{name}");
        }
        // default_permissions: the kernel enforces mode bits for other users.
        std::fs::set_permissions(vol.join("owned"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let denied = Command::new("cat").arg("owned").current_dir(vol).uid(2000).gid(2000).output().expect("cat");
        assert!(!denied.status.success(), "mode 0600 of uid 1000 must deny uid 2000");

        // mknod: a FIFO.
        nix::unistd::mkfifo(&vol.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &std::fs::symlink_metadata(on_server.join("fifo")).expect("server").file_type()
        ));

        // Exclusive create of an existing name fails with EEXIST.
        let e = std::fs::OpenOptions::new().write(true).create_new(true).open(vol.join("b2")).expect_err("exists");
        assert_eq!(errno(&e), nix::errno::Errno::EEXIST as i32);

        // unlink while open: the open file keeps working, the hidden name goes at close.
        std::fs::write(vol.join("tmpfile"), b"still readable").expect("write");
        let mut open = std::fs::File::open(vol.join("tmpfile")).expect("open");
        std::fs::remove_file(vol.join("tmpfile")).expect("unlink open file");
        assert!(!vol.join("tmpfile").exists());
        let mut s = String::new();
        open.read_to_string(&mut s).expect("read after unlink");
        assert_eq!(s, "still readable");
        drop(open);
        let deadline = Instant::now() + Duration::from_secs(3);
        while std::fs::read_dir(on_server)
            .expect("ls")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".nfsfuse"))
        {
            assert!(Instant::now() < deadline, "hidden file not removed after the last close");
            std::thread::sleep(Duration::from_millis(50));
        }

        // unlink / rmdir, ENOTEMPTY, and removing a 2,000-entry directory while listing it.
        std::fs::remove_file(vol.join("b2")).expect("unlink");
        assert!(!on_server.join("b2").exists());
        let e = std::fs::remove_dir(vol.join("many")).expect_err("not empty");
        assert_eq!(errno(&e), nix::errno::Errno::ENOTEMPTY as i32);
        std::fs::remove_dir_all(vol.join("many")).expect("rm -r");
        assert!(!on_server.join("many").exists());
        let e = std::fs::metadata(vol.join("many")).expect_err("gone");
        assert_eq!(errno(&e), nix::errno::Errno::ENOENT as i32);

        // statfs: the server's filesystem numbers.
        let (mine, theirs) =
            (nix::sys::statvfs::statvfs(vol).expect("statvfs"), nix::sys::statvfs::statvfs(on_server).expect("server"));
        let total = |s: &nix::sys::statvfs::Statvfs| s.blocks() as f64 * s.fragment_size() as f64;
        assert!(total(&mine) > 0.0 && (total(&mine) - total(&theirs)).abs() / total(&theirs) < 0.02);

        // Changes made on the server side are seen through the mount.
        std::fs::write(on_server.join("from-server"), b"hello from the server").expect("server write");
        assert_eq!(std::fs::read(vol.join("from-server")).expect("read"), b"hello from the server");
        // Rewritten in place (same size: ganesha caches the attributes of files changed
        // behind its back for up to a minute, so a size change would not show at once).
        std::fs::write(on_server.join("from-server"), b"HELLO FROM THE SERVER").expect("server rewrite");
        std::thread::sleep(Duration::from_millis(1200)); // attribute TTL
        assert_eq!(std::fs::read(vol.join("from-server")).expect("reread"), b"HELLO FROM THE SERVER");
        std::fs::create_dir(on_server.join("server-dir")).expect("server mkdir");
        assert!(std::fs::metadata(vol.join("server-dir")).expect("stat").is_dir());

        // Appends land at the end.
        let mut app = std::fs::OpenOptions::new().append(true).open(vol.join("from-server")).expect("append");
        app.write_all(b"!").expect("append write");
        drop(app);
        assert_eq!(std::fs::read(on_server.join("from-server")).expect("server"), b"HELLO FROM THE SERVER!");
    });
}

/// Sends SIGCONT to the stopped server when dropped, whatever happens in between.
struct ContinueOnDrop(nix::unistd::Pid);

impl Drop for ContinueOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

#[test]
fn hung_server_gives_eio_within_the_timeout_and_the_mount_recovers() {
    let test = "hung_server_gives_eio_within_the_timeout_and_the_mount_recovers";
    let Some(srv) = server(test) else { return };
    let _serial = serial();
    let sub = format!("nfsfuse-hung-{}", std::process::id());
    let call_timeout = Duration::from_secs(2);
    with_volume(&srv, &sub, call_timeout, |vol, _| {
        std::fs::write(vol.join("f"), b"data").expect("write");
        std::fs::write(vol.join("g"), b"data").expect("write");
        // Let the kernel's attribute and name cache (1 s) expire while the server is up, so
        // the server stays stopped as briefly as possible.
        std::thread::sleep(Duration::from_millis(1100));
        let stopped = {
            nix::sys::signal::kill(srv.pid(), nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP ganesha");
            ContinueOnDrop(srv.pid())
        };
        let t0 = Instant::now();
        let r = std::fs::metadata(vol.join("f"));
        let took = t0.elapsed();
        // Other operations fail at once while the server is known to be down.
        let t1 = Instant::now();
        let r2 = std::fs::metadata(vol.join("g"));
        let took2 = t1.elapsed();
        drop(stopped);
        println!("stopped server: stat failed after {took:?}, the next one after {took2:?}");
        let e = r.expect_err("stat on a stopped server");
        assert_eq!(errno(&e), nix::errno::Errno::EIO as i32, "{e}");
        assert!(took < call_timeout + Duration::from_secs(2), "stat took {took:?}");
        assert_eq!(errno(&r2.expect_err("still down")), nix::errno::Errno::EIO as i32);
        assert!(took2 < Duration::from_secs(1), "second stat took {took2:?}");
        // Resumed: the mount works again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match std::fs::read(vol.join("f")) {
                Ok(d) => {
                    assert_eq!(d, b"data");
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "mount did not recover: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::write(vol.join("h"), b"after").expect("write after recovery");
    });
}

#[test]
fn missing_subdir_and_wrong_export_fail_in_serve_with_the_reason() {
    let test = "missing_subdir_and_wrong_export_fail_in_serve_with_the_reason";
    let Some(srv) = server(test) else { return };
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = tmp.path().join("vol");
    std::fs::create_dir(&target).expect("mountpoint");
    let mut cfg = NfsConfig::new("127.0.0.1".parse().expect("ip"), srv.export.display().to_string());
    cfg.nfs_port = Some(NFS_PORT);
    cfg.mount_port = Some(MOUNT_PORT);
    cfg.subdir = "no/such/dir".into();
    let mut wrong_export = cfg.clone();
    wrong_export.export = "/no/such/export".into();
    wrong_export.subdir = String::new();
    ns::in_new_mount_ns(|| {
        for (c, needle) in [(cfg, "no/such/dir in export"), (wrong_export, "cannot mount export /no/such/export")] {
            let fd = voltool_runtime::fuse::mount_fuse(&LinuxMounter, &target, &c.source(), true).expect("mount");
            let t0 = Instant::now();
            let e = serve(c, fd).expect_err("must fail").to_string();
            assert!(e.contains(needle) && e.contains("127.0.0.1"), "{e}");
            assert!(t0.elapsed() < Duration::from_secs(10));
            // The dead FUSE mount is the caller's to remove.
            assert_eq!(unmount(&LinuxMounter, &target).expect("unmount"), UnmountOutcome::Unmounted);
        }
    })
    .expect("namespace");
}
