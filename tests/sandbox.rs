//! The restore test's check command is hostile: through the CLI and the daemon, every way a
//! root shell would have to the host fails, and the verdict is recorded.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "command failed: {}\n{}", stderr(o), stdout(o));
    stdout(o)
}

/// The check's uid on the host (`Confinement::default()`): root of its user namespace.
const CHECK_UID: u32 = 1 << 31;

/// What the host sees of a path: content (files), mode, owner, mtime.
fn seen(p: &Path) -> (Vec<u8>, u32, u32, u32, i64, i64) {
    let m = std::fs::symlink_metadata(p).expect("lstat");
    let content = if m.is_file() { std::fs::read(p).expect("read") } else { Vec::new() };
    (content, m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec())
}

/// Each attempt prints `BROKE-...` and makes the check fail only if it worked.
const CHECK: &str = r#"
set -u
fail() { echo "BROKE-$1"; bad=1; }
bad=0
mount -o remount,rw /etc 2>/dev/null && fail remount-etc
mount -o remount,bind,rw /etc 2>/dev/null && fail remount-bind-etc
mount -o remount,bind,rw /usr 2>/dev/null && fail remount-bind-usr
mount -o remount,bind,suid,dev /data 2>/dev/null && fail remount-data-suid
(echo x >> /etc/passwd) 2>/dev/null && fail write-etc
touch /etc/voltool-sandbox-canary 2>/dev/null && fail create-etc
chown 1000:1000 /etc/passwd 2>/dev/null && fail chown-etc-passwd
chown 1000 /usr/bin/env 2>/dev/null && fail chown-usr-bin-env
chmod 4777 /usr/bin/env 2>/dev/null && fail chmod-usr-bin-env
(echo 17 > /proc/sys/vm/swappiness) 2>/dev/null && fail sysctl-swappiness
(echo 1000000 > /proc/sys/fs/file-max) 2>/dev/null && fail sysctl-file-max
mknod /data/mem c 1 1 2>/dev/null && fail mknod-data
mknod /tmp/mem c 1 1 2>/dev/null && fail mknod-tmp
umount -l /etc 2>/dev/null && fail umount-etc
# A fork bomb that dies out by itself (each process forks two and sleeps 2 s), held by the
# process limit meanwhile; PID 1 waits with a builtin (no fork needed).
b() { b & b & exec sleep 2; }
b 2>/dev/null &
wait
# The restored data, as it was in the backup, owners included; root-owned data readable and writable.
test "$(cat /data/PG_VERSION)" = 16 || fail data-unreadable
test "$(stat -c %u:%g /data/PG_VERSION)" = 0:0 || fail data-owner-root
test "$(stat -c %u:%g /data/app/owned)" = 1000:1000 || fail data-owner-1000
echo ok > /data/written || fail data-unwritable
# No capability: not even root inside passes the permission bits of another owner.
(echo x > /data/app/owned) 2>/dev/null && fail dac-override
grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
sleep 1
echo "bad=$bad"
exit $bad
"#;

#[test]
fn regression_restore_test_remount_wrote_into_host_etc() {
    let name = "regression_restore_test_remount_wrote_into_host_etc";
    if !root_or_skip(name, "namespaces") {
        return;
    }
    let d = Daemon::start();
    ok(&d.cli(&["volume", "create", "sb"]));
    let root = PathBuf::from(ok(&d.cli(&["volume", "mount", "sb", "--id", "t"])));
    std::fs::write(root.join("PG_VERSION"), "16\n").expect("write");
    std::fs::set_permissions(root.join("PG_VERSION"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::create_dir(root.join("app")).expect("mkdir");
    std::fs::write(root.join("app/owned"), "mine\n").expect("write");
    std::os::unix::fs::chown(root.join("app"), Some(1000), Some(1000)).expect("chown");
    std::os::unix::fs::chown(root.join("app/owned"), Some(1000), Some(1000)).expect("chown");
    ok(&d.cli(&["volume", "unmount", "sb", "--id", "t"]));
    let id = ok(&d.cli(&["backup", "run", "sb"])).lines().last().expect("id").to_string();

    let canaries: Vec<PathBuf> = ["/etc", "/etc/passwd", "/usr/bin", "/usr/bin/env", "/proc/sys/vm/swappiness"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let file_max = std::fs::read_to_string("/proc/sys/fs/file-max").expect("file-max");
    let before: Vec<_> = canaries.iter().map(|p| seen(p)).collect();

    // The host's view of the check while it runs; a safety net kills (by pid: they are this
    // test's) the check's processes should the process limit fail.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let procs = check_processes();
                peak.fetch_max(procs.len(), Ordering::Relaxed);
                if procs.len() > 2000 {
                    for (pid, _) in &procs {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
                    }
                }
                statuses.extend(procs.into_iter().take(4));
                std::thread::sleep(Duration::from_millis(20));
            }
            statuses
        })
    };
    let o = d.cli(&["backup", "verify", &id, "--restore-test", "--check-cmd", CHECK, "--json"]);
    stop.store(true, Ordering::Relaxed);
    let statuses = watcher.join().expect("watcher");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let output = v["restore_test"]["output"].as_str().unwrap_or_default().to_string();
    assert!(o.status.success(), "{v:#}\n{}", stderr(&o));
    assert!(!output.contains("BROKE") && output.contains("bad=0"), "{output}");
    assert!(output.contains("CapEff:\t0000000000000000") && output.contains("NoNewPrivs:\t1"), "{output}");

    // From the host: the check's processes hold no capability.
    assert!(!statuses.is_empty(), "never saw the check's processes from the host");
    for (pid, st) in &statuses {
        for (field, want) in [("CapEff:", "0000000000000000"), ("CapPrm:", "0000000000000000"), ("NoNewPrivs:", "1")] {
            let got = st.lines().find_map(|l| l.strip_prefix(field)).map_or("", str::trim);
            assert_eq!(got, want, "pid {pid} {field}: {st}");
        }
    }
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 512, "peak {peak} processes, limit 512");

    // The host is unchanged, and the verdict is in the catalog.
    let after: Vec<_> = canaries.iter().map(|p| seen(p)).collect();
    assert_eq!(before, after);
    assert_eq!(std::fs::read_to_string("/proc/sys/fs/file-max").expect("file-max"), file_max);
    assert!(!Path::new("/etc/voltool-sandbox-canary").exists());
    let row: serde_json::Value = serde_json::from_str(&ok(&d.cli(&["backup", "show", &id, "--json"]))).expect("json");
    assert_eq!(row["verify_status"], "ok", "{row}");
    assert!(d.log().contains("restore test ran") && d.log().contains("limits="), "{}", d.log());
    // Nothing of the check is left: processes, scratch volume.
    std::thread::sleep(Duration::from_millis(300));
    assert!(check_processes().is_empty(), "left behind: {:?}", check_processes());
    assert_eq!(ok(&d.cli(&["volume", "ls", "-q"])), "sb");
    println!("{name}: peak {peak} check processes");
}

/// Every process on the host running as the check's uid: (pid, its /proc status).
fn check_processes() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else { continue };
        let real = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().next());
        if real == Some(&*CHECK_UID.to_string()) {
            out.push((pid, status));
        }
    }
    out
}
