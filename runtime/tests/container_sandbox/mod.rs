//! The restore-test container against a hostile command: it runs as root of its own user
//! namespace with no capabilities, and every way out that root would have is closed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use voltool_runtime::container::{Confinement, ContainerOutcome, ContainerSpec, IdRange, Limits, run, shift_owners};
use voltool_runtime::{LinuxMounter, MountRequest, Mounter, ns};

use super::root_or_skip;

/// A rootfs of its own: the host's `/usr` bound read-only in (merged-/usr symlinks beside
/// it), and an `etc` holding host-root-owned canary files, so the test never depends on, nor
/// risks, the host's real `/etc`.
struct Rootfs {
    dir: tempfile::TempDir,
}

/// What the host sees of one file: path, content, mode, uid, gid, mtime (s, ns).
type Seen = (PathBuf, Vec<u8>, u32, u32, u32, i64, i64);

impl Rootfs {
    fn new() -> Rootfs {
        let dir = tempfile::tempdir().expect("rootfs");
        let r = dir.path();
        std::fs::create_dir(r.join("usr")).expect("mkdir usr");
        for (link, to) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
            std::os::unix::fs::symlink(to, r.join(link)).expect("symlink");
        }
        std::fs::create_dir(r.join("etc")).expect("mkdir etc");
        std::fs::write(r.join("etc/canary"), "host canary\n").expect("canary");
        std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        std::fs::write(r.join("etc/group"), "root:x:0:\n").expect("group");
        Rootfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// (content, mode, uid, gid, mtime) of every file in `etc`, and of `etc` itself.
    fn snapshot(&self) -> Vec<Seen> {
        let mut out = Vec::new();
        let etc = self.path().join("etc");
        let mut entries: Vec<_> = std::fs::read_dir(&etc).expect("ls").map(|e| e.expect("entry").path()).collect();
        entries.push(etc);
        entries.sort();
        for p in entries {
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let content = if m.is_file() { std::fs::read(&p).expect("read") } else { Vec::new() };
            out.push((p, content, m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec()));
        }
        out
    }
}

/// Runs `command` over `data` in `rootfs`, in a private mount namespace of the test's own
/// (the `/usr` bind lives there, and goes with it). `watch` sees the host side meanwhile.
fn run_in(rootfs: &Rootfs, data: &Path, command: &str, conf: Confinement, timeout: Duration) -> ContainerOutcome {
    let (root, data, command) = (rootfs.path().to_path_buf(), data.to_path_buf(), command.to_string());
    ns::in_new_mount_ns(move || {
        let usr = root.join("usr");
        LinuxMounter.mount(&MountRequest::bind(Path::new("/usr"), &usr)).expect("bind /usr into the test rootfs");
        let work = tempfile::tempdir().expect("work");
        shift_owners(&data, &conf.ids).expect("shift owners");
        let spec = ContainerSpec {
            rootfs: Some(root),
            data,
            command,
            timeout,
            workdir: work.path().to_path_buf(),
            confinement: conf,
        };
        run(&spec).expect("container")
    })
    .expect("namespace")
}

/// Every process on the host whose real uid is `uid`: (pid, its /proc status).
fn processes_of(uid: u32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else { continue };
        let real = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().next());
        if real == Some(&*uid.to_string()) {
            out.push((pid, status));
        }
    }
    out
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(name)).map_or("", str::trim)
}

/// Each attempt prints `BROKE-...` only if it worked.
const ATTACKS: &str = r#"
mount -o remount,rw /etc 2>/dev/null && echo BROKE-remount-etc
mount -o remount,bind,rw /etc 2>/dev/null && echo BROKE-remount-bind-etc
mount -o remount,bind,rw /usr 2>/dev/null && echo BROKE-remount-bind-usr
mount -o remount,bind,suid,dev /data 2>/dev/null && echo BROKE-remount-data-suid
echo x >> /etc/canary 2>/dev/null && echo BROKE-write-etc
chown 0:0 /etc/canary 2>/dev/null && echo BROKE-chown-etc
chmod 777 /etc/canary 2>/dev/null && echo BROKE-chmod-etc
echo 17 > /proc/sys/vm/swappiness 2>/dev/null && echo BROKE-sysctl
echo 1000000 > /proc/sys/fs/file-max 2>/dev/null && echo BROKE-sysctl-file-max
mknod /data/null c 1 3 2>/dev/null && echo BROKE-mknod-data
mknod /tmp/null c 1 3 2>/dev/null && echo BROKE-mknod-tmp
mknod /dev/mem2 c 1 1 2>/dev/null && echo BROKE-mknod-dev
umount -l /etc 2>/dev/null && echo BROKE-umount-etc
python3 - <<'PY'
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def errno(r):
    return 0 if r == 0 else ctypes.get_errno()
# A user namespace of its own (no id map needed: the caps hold until exec) and a mount ns.
r = libc.unshare(0x10000000 | 0x00020000)
print("NESTED-UNSHARE", errno(r))
print("NESTED-TMPFS", errno(libc.mount(b"t", b"/tmp", b"tmpfs", 0, None)))
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 1, 2, 4, 32, 4096
for path, flags in [(b"/etc", 0), (b"/usr", 0), (b"/", 0), (b"/data", 0), (b"/data", MS_NOSUID), (b"/data", MS_NODEV)]:
    e = errno(libc.mount(None, path, None, MS_REMOUNT | MS_BIND | flags, None))
    print("REMOUNT", path.decode(), flags, "BROKE" if e == 0 else "refused", e)
for path in [b"/etc", b"/usr", b"/data", b"/proc"]:
    e = errno(libc.umount2(path, 2))
    print("UMOUNT", path.decode(), "BROKE" if e == 0 else "refused", e)
PY
echo written > /data/by-check && echo data-writable
grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status
cat /proc/self/uid_map
id -u
"#;

#[test]
fn regression_restore_test_check_command_had_host_root_privileges() {
    let name = "regression_restore_test_check_command_had_host_root_privileges";
    if !root_or_skip(name) {
        return;
    }
    let rootfs = Rootfs::new();
    let before = rootfs.snapshot();
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness").expect("swappiness");
    let file_max = std::fs::read_to_string("/proc/sys/fs/file-max").expect("file-max");
    let data = tempfile::tempdir().expect("data");
    std::fs::write(data.path().join("restored"), "x").expect("write");
    let conf = Confinement::default();
    let uid = conf.ids.host_uid;
    // The host's view of the command while it runs.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.extend(processes_of(uid));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let cmd = format!("{ATTACKS}\nsleep 1");
    let o = run_in(&rootfs, data.path(), &cmd, conf, Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().expect("watcher");
    assert_eq!(o.status, 0, "{}", o.output);
    assert!(!o.output.contains("BROKE"), "an attack worked: {}", o.output);
    // No user namespace of its own (ENOSPC: user.max_user_namespaces is 0 there).
    if has_python(name) {
        assert!(o.output.contains(&format!("NESTED-UNSHARE {}", libc_enospc())), "{}", o.output);
    }
    assert!(o.output.contains("data-writable"), "{}", o.output);
    assert!(o.output.contains("CapEff:\t0000000000000000"), "{}", o.output);
    assert!(o.output.contains("CapPrm:\t0000000000000000"), "{}", o.output);
    assert!(o.output.contains("CapBnd:\t0000000000000000"), "{}", o.output);
    assert!(o.output.contains("NoNewPrivs:\t1"), "{}", o.output);
    let map: Vec<String> = o.output.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert!(map.iter().any(|l| l == "0 2147483648 65536"), "{}", o.output);
    assert!(o.output.lines().any(|l| l.trim() == "0"), "root inside: {}", o.output);
    // From the host: the command's processes run as the mapped uid, with nothing.
    assert!(!seen.is_empty(), "never saw the check's processes from the host");
    for (pid, st) in &seen {
        assert_eq!(field(st, "CapEff:"), "0000000000000000", "pid {pid}: {st}");
        assert_eq!(field(st, "CapPrm:"), "0000000000000000", "pid {pid}: {st}");
        assert_eq!(field(st, "NoNewPrivs:"), "1", "pid {pid}: {st}");
    }
    // The host is unchanged.
    assert_eq!(rootfs.snapshot(), before);
    assert_eq!(std::fs::read_to_string("/proc/sys/vm/swappiness").expect("swappiness"), swappiness);
    assert_eq!(std::fs::read_to_string("/proc/sys/fs/file-max").expect("file-max"), file_max);
    // What the check wrote belongs to the mapped range.
    let m = std::fs::metadata(data.path().join("by-check")).expect("written");
    assert_eq!((m.uid(), m.gid()), (uid, conf_gid()));
    println!("{name}: limits: {}", o.limits);
}

fn has_python(name: &str) -> bool {
    if Path::new("/usr/bin/python3").exists() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{name}: CI needs python3 for the nested-namespace probe");
    println!("{name}: no python3, nested-namespace probe not run");
    false
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

/// With nested user namespaces allowed, root of one has every capability over its own mount
/// namespace (it mounts a tmpfs), and still cannot make a read-only bind writable, clear
/// `nosuid`/`nodev` on `/data` or unmount a bind: the kernel locked them.
#[test]
fn read_only_binds_stay_locked_for_root_of_a_nested_user_namespace() {
    let name = "read_only_binds_stay_locked_for_root_of_a_nested_user_namespace";
    if !root_or_skip(name) || !has_python(name) {
        return;
    }
    let rootfs = Rootfs::new();
    let before = rootfs.snapshot();
    let data = tempfile::tempdir().expect("data");
    let ids = IdRange { host_uid: (1 << 31) + 65536, host_gid: (1 << 31) + 65536, count: 65536 };
    let conf = Confinement { ids, nested_user_namespaces: true, ..Confinement::default() };
    let probe = ATTACKS.split_once("python3 - <<'PY'").expect("probe").1.split_once("PY\n").expect("end").0;
    let o = run_in(
        &rootfs,
        data.path(),
        &format!("python3 - <<'PY'{probe}PY\necho x >> /etc/canary"),
        conf,
        Duration::from_secs(30),
    );
    assert!(o.output.contains("NESTED-UNSHARE 0") && o.output.contains("NESTED-TMPFS 0"), "{}", o.output);
    assert_eq!(o.output.matches("refused").count(), 10, "{}", o.output);
    assert!(!o.output.contains("BROKE"), "{}", o.output);
    assert_eq!(rootfs.snapshot(), before);
    println!("{name}: {}", o.output);
}

fn conf_gid() -> u32 {
    Confinement::default().ids.host_gid
}

#[test]
fn fork_bomb_and_memory_hog_in_a_check_are_bounded() {
    let name = "fork_bomb_and_memory_hog_in_a_check_are_bounded";
    if !root_or_skip(name) {
        return;
    }
    let rootfs = Rootfs::new();
    let data = tempfile::tempdir().expect("data");
    // An id range of its own: the other tests' checks may run meanwhile.
    let ids = IdRange { host_uid: (1 << 31) + 2 * 65536, host_gid: (1 << 31) + 2 * 65536, count: 65536 };
    let conf = Confinement { ids, pids_max: 32, memory_max: 128 << 20, ..Confinement::default() };
    let (uid, pids_max) = (conf.ids.host_uid, conf.pids_max as usize);
    // Count the check's processes from the host; a safety net kills them all (by pid, they
    // are this test's) if the limit failed, so a broken limit cannot take the machine down.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let procs = processes_of(uid);
                peak.fetch_max(procs.len(), Ordering::Relaxed);
                if procs.len() > 4 * pids_max {
                    for (pid, _) in procs {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let hog = "dd if=/dev/zero of=/dev/null bs=300M count=1 2>/dev/null && echo BROKE-memory; echo hog-done";
    let o = run_in(&rootfs, data.path(), hog, conf.clone(), Duration::from_secs(20));
    assert!(!o.output.contains("BROKE") && o.output.contains("hog-done"), "{}", o.output);
    // Each process forks two more and becomes a sleep (exec: no fork): the tree grows until
    // the limit refuses forks (the shell that gets the refusal exits), then stays there. PID 1
    // starts it with its one fork and waits (as a sleep) for the deadline.
    let bomb = "b() { b & b & exec sleep 30; }; b 2>/dev/null & exec sleep 30";
    let t0 = std::time::Instant::now();
    let o = run_in(&rootfs, data.path(), bomb, conf, Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    assert!(o.timed_out, "{o:?}");
    assert!(t0.elapsed() < Duration::from_secs(15), "killed at the deadline: {:?}", t0.elapsed());
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= pids_max, "peak {peak} processes of the check's uid, limit {pids_max}; {}", o.limits);
    assert!(peak > 4, "the bomb never forked: {peak}");
    // All gone with PID 1.
    std::thread::sleep(Duration::from_millis(200));
    assert!(processes_of(uid).is_empty(), "left behind: {:?}", processes_of(uid));
    match &o.limits {
        Limits::Cgroup { path, .. } => assert!(!path.exists(), "cgroup {} not removed", path.display()),
        Limits::Rlimits { reason, .. } => println!("{name}: rlimits ({reason}); peak {peak} processes"),
    }
    match &o.limits {
        Limits::Cgroup { .. } => println!("{name}: cgroup; peak {peak} processes"),
        Limits::Rlimits { .. } => {}
    }
}
