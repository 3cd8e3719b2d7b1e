//! Restore, import and export end to end: the daemon, the CLI, real archives (voltool's,
//! GNU tar's, and hostile ones built byte by byte).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "command failed: {}", stderr(o));
    stdout(o)
}

fn raw(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) {
    voltool_restore::extract::append_raw_entry(b, name, kind, data, link);
}

fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().expect("finish")
}

fn zst(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("zstd")
}

fn sha(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().expect("sha256sum");
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

#[test]
fn hostile_archives_are_refused_and_the_volume_is_unchanged() {
    if !root_or_skip("hostile_archives_are_refused_and_the_volume_is_unchanged", "image-backed volume") {
        return;
    }
    let d = Daemon::start();
    ok(&d.cli(&["volume", "create", "target", "-o", "size=16m"]));
    let root = PathBuf::from(ok(&d.cli(&["volume", "mount", "target", "--id", "t"])));
    std::fs::create_dir_all(root.join("keep/dir")).expect("mkdir");
    std::fs::write(root.join("keep/dir/file.txt"), "precious\n").expect("write");
    std::os::unix::fs::symlink("dir/file.txt", root.join("keep/link")).expect("symlink");
    let before = tree(&root);
    let passwd = sha(Path::new("/etc/passwd"));
    let state_before: Vec<String> = std::fs::read_dir(d.state())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();

    let big = vec![0x5Au8; 20 << 20];
    let many = tar_of(|b| {
        for i in 0..100_000 {
            raw(b, format!("f{i:06}").as_bytes(), tar::EntryType::Regular, b"", b"");
        }
    });
    let good = tar_of(|b| raw(b, b"fine.txt", tar::EntryType::Regular, &vec![1u8; 100_000], b""));
    let mut corrupt = zst(&good);
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xFF;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot", tar_of(|b| raw(b, b"../../etc/x", tar::EntryType::Regular, b"evil", b"")), "'..'"),
        ("absolute", tar_of(|b| raw(b, b"/etc/x", tar::EntryType::Regular, b"evil", b"")), "absolute path"),
        (
            "symlink",
            tar_of(|b| {
                raw(b, b"a", tar::EntryType::Symlink, b"", b"/etc");
                raw(b, b"a/passwd", tar::EntryType::Regular, b"root::0:0::/:/bin/sh\n", b"");
            }),
            "through the symlink",
        ),
        ("hardlink", tar_of(|b| raw(b, b"pw", tar::EntryType::Link, b"", b"/etc/passwd")), "hard link"),
        ("device", tar_of(|b| raw(b, b"sda", tar::EntryType::Block, b"", b"")), "device node"),
        ("too-big", zst(&tar_of(|b| raw(b, b"big.bin", tar::EntryType::Regular, &big, b""))), "size limit"),
        ("truncated", zst(&good)[..40].to_vec(), "reading the archive"),
        ("corrupt", corrupt, "reading the archive"),
        ("100k-files", zst(&many), "No space left"),
    ];
    for (name, bytes, want) in cases {
        let file = d.dir.path().join(format!("{name}.archive"));
        std::fs::write(&file, &bytes).expect("write archive");
        let o = d.cli(&["restore", "target", "--from", file.to_str().expect("utf8"), "--force"]);
        assert!(!o.status.success(), "{name}: must be refused");
        let msg = stderr(&o);
        assert!(msg.contains(want), "{name}: want {want:?} in: {msg}");
        assert!(msg.contains("volume target"), "{name}: names the volume: {msg}");
        assert_eq!(tree(&root), before, "{name}: the volume is unchanged");
        assert!(!Path::new("/etc/x").exists(), "{name}: nothing written outside");
        assert_eq!(sha(Path::new("/etc/passwd")), passwd, "{name}: /etc/passwd untouched");
    }
    let state_after: Vec<String> = std::fs::read_dir(d.state())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(state_before.len(), state_after.len(), "nothing new next to the volumes: {state_after:?}");
    // And a good archive then restores fine.
    let file = d.dir.path().join("good.tar");
    std::fs::write(&file, &good).expect("write");
    ok(&d.cli(&["restore", "target", "--from", file.to_str().expect("utf8"), "--force"]));
    assert_eq!(std::fs::read(root.join("fine.txt")).expect("restored").len(), 100_000);
    assert!(!root.join("keep").exists(), "a forced restore replaces the old contents");
    ok(&d.cli(&["volume", "unmount", "target", "--id", "t"]));
}

#[test]
fn backup_id_restores_into_a_new_volume_and_refuses_a_full_one_without_force() {
    let d = Daemon::start();
    ok(&d.cli(&["volume", "create", "orig", "-o", "mode=0750"]));
    let root = PathBuf::from(ok(&d.cli(&["volume", "mount", "orig", "--id", "t"])));
    std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
    std::fs::write(root.join("a/b/c.txt"), "data\n").expect("write");
    std::fs::write(root.join("top.bin"), vec![9u8; 300_000]).expect("write");
    std::os::unix::fs::symlink("a/b/c.txt", root.join("link")).expect("symlink");
    let id = ok(&d.cli(&["backup", "run", "orig"])).lines().last().expect("id").to_string();
    // Into a new volume: created with the backup's options, checked against the manifest.
    let o = ok(&d.cli(&["restore", "copy", "--from", &id, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&o).expect("json");
    assert_eq!(v["created"], true);
    assert_eq!(v["verified_against_manifest"], true);
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&d.cli(&["volume", "inspect", "copy", "--json"]))).expect("json");
    assert_eq!(inspect[0]["Options"]["mode"], "0750", "options from the manifest: {inspect}");
    let copy = PathBuf::from(ok(&d.cli(&["volume", "mount", "copy", "--id", "t"])));
    assert_same_tree(&root, &copy);
    // A volume with data: refused without --force, and left alone.
    std::fs::write(copy.join("extra"), "x").expect("write");
    // In use (the test's mount ID stands for a container): refused.
    let o = d.cli(&["restore", "copy", "--from", &id]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    // The same from a 24 MiB local file, which the CLI uploads: the daemon refuses before
    // reading it, and the CLI still reports why and fails (it used to lose the reply to a
    // broken pipe and exit 0 in silence).
    let tmp = tempfile::tempdir().expect("tmp");
    let big = make_archive(tmp.path(), "inuse", 1, 24);
    for _ in 0..3 {
        let o = d.cli(&["restore", "copy", "--from", big.to_str().expect("utf8")]);
        assert!(!o.status.success(), "a refused upload must fail: {}", stderr(&o));
        assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    }
    assert!(copy.join("extra").exists(), "the refused restores left the volume alone");
    // Not in use but not empty: refused too, and left alone.
    ok(&d.cli(&["volume", "unmount", "copy", "--id", "t"]));
    let o = d.cli(&["restore", "copy", "--from", &id]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    let copy = PathBuf::from(ok(&d.cli(&["volume", "mount", "copy", "--id", "t"])));
    assert!(copy.join("extra").exists());
    // --force swaps it in, even while mounted.
    ok(&d.cli(&["restore", "copy", "--from", &id, "--force"]));
    assert!(!copy.join("extra").exists());
    assert_same_tree(&root, &copy);
    // An archive URL works the same (file://).
    let url = format!("file://{}/{id}.tar.zst", d.state().join("backups").display());
    ok(&d.cli(&["restore", "fromurl", "--from", &url]));
    // Unknown sources say what is accepted.
    let o = d.cli(&["restore", "x", "--from", "no-such-backup"]);
    assert!(stderr(&o).contains("neither a backup ID"), "{}", stderr(&o));
    for v in ["orig", "copy"] {
        ok(&d.cli(&["volume", "unmount", v, "--id", "t"]));
    }
}

#[test]
fn a_backup_whose_archive_and_manifest_were_rewritten_together_is_refused() {
    let d = Daemon::start();
    ok(&d.cli(&["volume", "create", "orig"]));
    let root = PathBuf::from(ok(&d.cli(&["volume", "mount", "orig", "--id", "t"])));
    std::fs::write(root.join("a.txt"), "original\n").expect("write");
    ok(&d.cli(&["volume", "unmount", "orig", "--id", "t"]));
    let id = ok(&d.cli(&["backup", "run", "orig"])).lines().last().expect("id").to_string();
    // Someone with write access to the target changes a file's bytes and makes the manifest
    // agree with the new archive: archive and manifest are consistent with each other.
    let dir = d.state().join("backups");
    let archive = dir.join(format!("{id}.tar.zst"));
    let mut tar = zstd::decode_all(&std::fs::read(&archive).expect("read")[..]).expect("decode");
    let at = tar.windows(8).position(|w| w == b"original").expect("the file's bytes");
    tar[at..at + 8].copy_from_slice(b"tampered");
    std::fs::write(&archive, zst(&tar)).expect("write");
    let manifest = dir.join(format!("{id}.manifest.json"));
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).expect("read")).expect("json");
    m["archive_sha256"] = sha(&archive).into();
    m["archive_size"] = std::fs::metadata(&archive).expect("stat").len().into();
    std::fs::write(&manifest, serde_json::to_vec(&m).expect("json")).expect("write");
    // The catalog recorded the archive's sha256 when the backup was made: refused, nothing
    // created.
    let o = d.cli(&["restore", "copy", "--from", &id]);
    assert!(!o.status.success(), "a rewritten backup restored: {}", stdout(&o));
    assert!(stderr(&o).contains("catalog"), "{}", stderr(&o));
    assert!(!stdout(&d.cli(&["volume", "ls", "-q"])).lines().any(|l| l == "copy"), "the volume it made is gone");
}

#[test]
fn export_then_import_round_trips_and_export_is_a_stock_tar_zst() {
    let d = Daemon::start();
    ok(&d.cli(&["volume", "create", "ex"]));
    let root = PathBuf::from(ok(&d.cli(&["volume", "mount", "ex", "--id", "t"])));
    std::fs::create_dir_all(root.join("dir")).expect("mkdir");
    std::fs::write(root.join("dir/file"), vec![3u8; 2 << 20]).expect("write");
    let out = d.dir.path().join("ex.tar.zst");
    ok(&d.cli(&["export", "ex", "-o", out.to_str().expect("utf8")]));
    // Stock zstd | tar reads it.
    let list =
        Command::new("sh").arg("-c").arg(format!("zstd -d < '{}' | tar -t", out.display())).output().expect("tar");
    assert!(list.status.success());
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().collect::<Vec<_>>(), ["dir", "dir/file"]);
    // Import from stdin.
    let o = Command::new(bin())
        .args(["import", "im"])
        .env("VOLTOOL_API_SOCKET", d.dir.path().join("api.sock"))
        .stdin(std::fs::File::open(&out).expect("open"))
        .output()
        .expect("import");
    ok(&o);
    let im = PathBuf::from(ok(&d.cli(&["volume", "mount", "im", "--id", "t"])));
    assert_same_tree(&root, &im);
    // Export to a pipe (stdout) gives the same bytes' content.
    let piped = Command::new(bin())
        .args(["export", "ex"])
        .env("VOLTOOL_API_SOCKET", d.dir.path().join("api.sock"))
        .output()
        .expect("export");
    assert!(piped.status.success());
    assert_eq!(
        zstd::decode_all(&piped.stdout[..]).expect("zstd").len(),
        zstd::decode_all(&std::fs::read(&out).expect("read")[..]).expect("zstd").len()
    );
    for v in ["ex", "im"] {
        ok(&d.cli(&["volume", "unmount", v, "--id", "t"]));
    }
}

#[test]
fn restore_test_runs_the_check_isolated_and_removes_the_scratch_volume() {
    if !root_or_skip("restore_test_runs_the_check_isolated_and_removes_the_scratch_volume", "namespaces") {
        return;
    }
    let d = Daemon::start();
    ok(&d.cli(&["volume", "create", "rt"]));
    let root = PathBuf::from(ok(&d.cli(&["volume", "mount", "rt", "--id", "t"])));
    std::fs::write(root.join("PG_VERSION"), "16\n").expect("write");
    ok(&d.cli(&["volume", "unmount", "rt", "--id", "t"]));
    let id = ok(&d.cli(&["backup", "run", "rt"])).lines().last().expect("id").to_string();
    // A check that passes: the data is there, at /data; there is no network but loopback.
    let check =
        "test \"$(cat /data/PG_VERSION)\" = 16 && test \"$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')\" = lo";
    let o = d.cli(&["backup", "verify", &id, "--restore-test", "--check-cmd", check]);
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("restore test ok"), "{}", stdout(&o));
    // The check cannot reach the network (a listener on the host's loopback is right there)
    // nor write outside /data (its /tmp is private).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let marker = format!("voltool-check-escape-{}", std::process::id());
    let escape = format!(
        "busybox true || exit 99; if busybox nc -w 2 127.0.0.1 {port} </dev/null; then exit 98; fi; \
         touch /usr/{marker} /etc/{marker} / 2>/dev/null && echo WROTE-ROOT; echo x > /tmp/{marker}; \
         echo x > /data/{marker} && echo data-ok"
    );
    let o = d.cli(&["backup", "verify", &id, "--restore-test", "--check-cmd", &escape]);
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));
    listener.set_nonblocking(true).expect("nonblocking");
    assert!(listener.accept().is_err(), "the check reached the host's loopback");
    for p in [format!("/usr/{marker}"), format!("/etc/{marker}"), format!("/tmp/{marker}")] {
        assert!(!Path::new(&p).exists(), "{p} written on the host");
    }
    // A check that fails decides: exit 1, the reason and output shown, recorded in the catalog.
    let o = d.cli(&["backup", "verify", &id, "--restore-test", "--check-cmd", "echo wrong version >&2; exit 3"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exited 3") && stderr(&o).contains("wrong version"), "{}", stderr(&o));
    let row: serde_json::Value = serde_json::from_str(&ok(&d.cli(&["backup", "show", &id, "--json"]))).expect("json");
    assert_eq!(row["verify_status"], "failed", "{row}");
    assert_eq!(row["test_status"], "failed", "{row}");
    assert!(row["test_reason"].as_str().is_some_and(|r| r.contains("exited 3")), "{row}");
    // `voltool status` shows the restore test apart from the verification.
    let st: serde_json::Value = serde_json::from_str(&ok(&d.cli(&["status", "--json"]))).expect("json");
    let rt = st["volumes"].as_array().and_then(|v| v.iter().find(|v| v["name"] == "rt")).expect("rt in status");
    assert_eq!(rt["last_restore_test"]["ok"], false, "{st}");
    assert_eq!(rt["last_restore_test"]["backup"], id.as_str(), "{st}");
    // The scratch volumes are gone.
    let ls = ok(&d.cli(&["volume", "ls", "-q"]));
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["rt"], "{ls}");
    // Scheduled: backup-verify=restore runs the restore test after each backup.
    ok(&d.cli(&["volume", "create", "rs", "-o", "backup-schedule=*/2 * * * * *", "-o", "backup-verify=restore"]));
    let t0 = std::time::Instant::now();
    while !d.log().contains("restore test passed") {
        assert!(t0.elapsed() < std::time::Duration::from_secs(60), "no scheduled restore test: {}", d.log());
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// A `.tar.zst` of `files` top-level files of 4 KiB and one `big_mib` MiB random file.
fn make_archive(dir: &Path, name: &str, files: usize, big_mib: usize) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..files {
        std::fs::write(src.join(format!("{name}-{i:05}")), vec![(i % 251) as u8; 4096]).expect("write");
    }
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {}M /dev/urandom > '{}/{name}-big'", big_mib, src.display()))
        .status()
        .expect("head");
    assert!(o.success());
    let out = dir.join(format!("{name}.tar.zst"));
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("tar -c -C '{}' . | zstd -q -1 -T0 > '{}'", src.display(), out.display()))
        .status()
        .expect("tar");
    assert!(st.success());
    std::fs::remove_dir_all(&src).expect("rm");
    out
}

#[test]
fn kill_9_mid_restore_leaves_the_old_or_the_new_content_never_a_mix() {
    let mut d = Daemon::start();
    let a = make_archive(d.dir.path(), "a", 1500, 60);
    let b = make_archive(d.dir.path(), "b", 2500, 90);
    ok(&d.cli(&["volume", "create", "kr"]));
    let restore = |d: &Daemon, from: &Path| {
        Command::new(bin())
            .args(["restore", "kr", "--force", "--from", from.to_str().expect("utf8")])
            .env("VOLTOOL_API_SOCKET", d.dir.path().join("api.sock"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("restore")
    };
    let snapshot = |d: &Daemon| {
        let root = PathBuf::from(ok(&d.cli(&["volume", "mount", "kr", "--id", "t"])));
        let t = tree(&root);
        let hidden: Vec<String> = std::fs::read_dir(&root)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".voltool-restore"))
            .collect();
        ok(&d.cli(&["volume", "unmount", "kr", "--id", "t"]));
        assert!(hidden.is_empty(), "restore leftovers: {hidden:?}");
        t
    };
    let t0 = std::time::Instant::now();
    assert!(restore(&d, &a).wait().expect("wait").success());
    let full = t0.elapsed();
    let tree_a = snapshot(&d);
    assert!(restore(&d, &b).wait().expect("wait").success());
    let tree_b = snapshot(&d);
    assert_ne!(tree_a.len(), tree_b.len());
    let mut current_is_a = false;
    let mut seed = u64::from(std::process::id()) | 5;
    let (mut saw_old, mut saw_new) = (0, 0);
    for round in 0..10 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = full.mul_f64(0.05 + (seed % 1000) as f64 / 1000.0 * 1.0);
        let mut child = restore(&d, if current_is_a { &b } else { &a });
        std::thread::sleep(at);
        let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
        let _ = child.wait();
        d.restart();
        let now = snapshot(&d);
        let is_a = now == tree_a;
        let is_b = now == tree_b;
        assert!(
            is_a || is_b,
            "round {round} (kill at {at:?}): the volume is a mix of old and new ({} entries)",
            now.len()
        );
        if is_a == current_is_a {
            saw_old += 1;
        } else {
            saw_new += 1;
        }
        current_is_a = is_a;
    }
    println!(
        "kill -9 mid-restore: {saw_old} rounds kept the old content, {saw_new} had the new one (restore takes {full:?})"
    );
}

/// Sectors written to the block device mounted at `mountpoint` (from /proc/self/mountinfo and
/// /sys/block/DEV/stat).
fn sectors_written(mountpoint: &Path) -> u64 {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mp = mountpoint.to_str().expect("utf8");
    let dev = info
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(mp))
        .filter_map(|l| l.split(" - ").nth(1)?.split(' ').nth(1))
        .next_back()
        .unwrap_or_else(|| panic!("no mount at {mp}"));
    let name = dev.strip_prefix("/dev/").unwrap_or_else(|| panic!("{mp} is not on a block device: {dev}"));
    let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).expect("stat");
    stat.split_whitespace().nth(6).expect("field 7").parse().expect("number")
}

#[test]
fn a_restore_is_on_disk_when_it_returns() {
    if !root_or_skip("a_restore_is_on_disk_when_it_returns", "image-backed volume") {
        return;
    }
    // The restored tree replaces the volume's data by renames: written only later by the
    // kernel (after 30 s, or 10% of RAM dirty), a power cut in between would leave empty files
    // where the old data was. An image-backed volume's own block device shows what reached it.
    let d = Daemon::start();
    ok(&d.cli(&["volume", "create", "dur", "-o", "size=160m"]));
    let root = PathBuf::from(ok(&d.cli(&["volume", "mount", "dur", "--id", "t"])));
    std::fs::write(root.join("old"), "old data\n").expect("write");
    // More than the write-behind step (64 MiB), so the extraction's syncs run too.
    let archive = make_archive(d.dir.path(), "dur", 200, 80);
    let before = sectors_written(&root);
    ok(&d.cli(&["restore", "dur", "--from", archive.to_str().expect("utf8"), "--force"]));
    let written = (sectors_written(&root) - before) * 512;
    assert!(written >= 80 << 20, "only {written} bytes reached the volume's device when the restore returned");
    assert!(!root.join("old").exists() && root.join("dur-big").exists());
    ok(&d.cli(&["volume", "unmount", "dur", "--id", "t"]));
}
