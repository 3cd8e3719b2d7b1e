//! Backups end to end without Docker: the daemon on temporary state, the CLI against it,
//! backups to a directory (and, in `s3` tests below, to real S3 servers: s3s-fs and moto),
//! restored with stock `zstd -d | tar -x` and compared file by file.

mod common;
#[path = "../backup/tests/s3_servers/mod.rs"]
mod s3_servers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use s3_servers::{Variant, s3_matrix};
use serde_json::Value;

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().expect("sh");
    assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Fills `root` with what a backup must carry: nested dirs, modes incl. setuid/sticky,
/// owners, symlinks (also dangling), hard links, an empty file and dir, a fifo, odd names,
/// nanosecond mtimes, a 3 MiB incompressible file and an xattr.
fn populate(root: &Path) {
    sh(&format!(
        r#"set -e; cd '{r}'
        mkdir -p a/b/c empty 'sp ace' deep/1/2/3/4/5/6/7/8/9
        printf 'hello\n' > a/b/c/hello.txt
        head -c 3145728 /dev/urandom > a/random.bin
        seq 1 200000 > a/b/numbers.txt
        : > empty.file
        printf x > 'sp ace/ünï cödé.txt'
        printf deep > deep/1/2/3/4/5/6/7/8/9/$(printf 'n%.0s' $(seq 1 120))
        ln -s b/c/hello.txt a/link-rel
        ln -s /nonexistent/target dangling
        ln a/b/c/hello.txt hard1
        ln a/b/c/hello.txt a/hard2
        mkfifo pipe
        chmod 4755 a/random.bin; chmod 1777 empty; chmod 0600 a/b/numbers.txt; chmod 0751 a/b
        chown 1234:5678 a/b/numbers.txt; chown -h 42:43 a/link-rel; chown 7:8 a/b
        touch -d '2001-02-03 04:05:06.123456789' a/b/c/hello.txt
        touch -h -d '2002-02-02 02:02:02' a/link-rel
        touch -d '1999-12-31 23:59:59.5' a/b/c empty
        "#,
        r = root.display()
    ));
    // xattrs where the filesystem has them (tmpfs and ext4 do for user.*).
    let _ =
        Command::new("setfattr").args(["-n", "user.voltool", "-v", "kept"]).arg(root.join("a/b/numbers.txt")).output();
}

/// Extracts `archive` with stock zstd + GNU tar (as root: owners and modes kept) into `dest`.
fn gnu_extract(archive: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("mkdir");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -d < '{}' | tar -x --xattrs -C '{}'", archive.display(), dest.display()))
        .output()
        .expect("zstd | tar");
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "stock zstd | tar must restore without errors or warnings: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn run_backup(d: &Daemon, vol: &str, extra: &[&str]) -> Value {
    let mut args = vec!["backup", "run", vol, "--json"];
    args.extend_from_slice(extra);
    json(&d.cli(&args))
}

fn needs_root(test: &str) -> bool {
    root_or_skip(test, "mounts, chown")
}

/// Polls `f` every 200 ms until it returns `Some`, or panics with `what` after `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn list(d: &Daemon, vol: &str) -> Vec<Value> {
    json(&d.cli(&["backup", "ls", vol, "--json"])).as_array().cloned().unwrap_or_default()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn backup_to_disk_restores_with_stock_tar_exactly_and_verifies() {
    if !needs_root("backup_to_disk_restores_with_stock_tar_exactly_and_verifies") {
        return;
    }
    let d = Daemon::start();
    assert!(d.cli(&["volume", "create", "data"]).status.success());
    let root = mount(&d, "data");
    populate(&root);
    let target = d.dir.path().join("backups");
    let b = run_backup(&d, "data", &["--target", target.to_str().expect("utf8"), "--verify"]);
    let id = b["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("data-"), "{id}");
    assert!(!d.log().contains("no read-only view"), "as root the archiver reads through a read-only view");
    // ... which only the archiving thread saw: the volume stays writable for everyone else.
    std::fs::write(root.join("after-backup"), "still writable").expect("volume writable after a backup");
    std::fs::remove_file(root.join("after-backup")).expect("rm");
    assert_eq!(b["status"], "complete");
    assert_eq!(b["verify_status"], "ok");
    assert_eq!(
        files_in(&target),
        [format!("{id}.manifest.json"), format!("{id}.tar.zst"), format!("{id}.tar.zst.sha256")]
    );
    // The text output ends with the ID, for scripts.
    let o = d.cli(&["backup", "run", "data", "--target", target.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().last().is_some_and(|l| l.starts_with("data-")), "{}", stdout(&o));

    // sha256sum -c, and the manifest names every entry with its sha256.
    sh(&format!("cd '{}' && sha256sum -c --status '{id}.tar.zst.sha256'", target.display()));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(target.join(format!("{id}.manifest.json"))).expect("manifest"))
            .expect("manifest json");
    assert_eq!(manifest["volume"], "data");
    let hello = manifest["entries"].as_array().expect("entries").iter().find(|e| e["path"] == "a/b/c/hello.txt");
    assert_eq!(
        hello.and_then(|e| e["sha256"].as_str()),
        Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
    );

    let restored = d.dir.path().join("restored");
    gnu_extract(&target.join(format!("{id}.tar.zst")), &restored);
    // The fifo is archived; the comparison covers it as "other".
    assert_same_tree(&root, &restored);
    let x = Command::new("getfattr")
        .args(["--only-values", "-n", "user.voltool"])
        .arg(restored.join("a/b/numbers.txt"))
        .output();
    if let Ok(x) = x
        && x.status.success()
    {
        assert_eq!(x.stdout, b"kept", "xattr restored by tar --xattrs");
    }
    unmount(&d, "data");

    // The volume's Status shows the last backup and its verification.
    let v = json(&d.cli(&["volume", "inspect", "data", "--json"]));
    let last = &v[0]["Status"]["last_backup"];
    assert_eq!(last["status"], "complete", "{v}");
    let show = json(&d.cli(&["backup", "show", &id, "--json"]));
    assert_eq!(show["verify_status"], "ok");
    assert!(show["files"].as_u64().expect("files") >= 6, "{show}");
}

#[test]
fn flipped_byte_fails_verify_naming_the_backup_and_the_file() {
    let d = Daemon::start();
    assert!(d.cli(&["volume", "create", "flip"]).status.success());
    let root = mount(&d, "flip");
    std::fs::write(root.join("aaa-first.txt"), "first file\n").expect("write");
    // Incompressible, so a byte in the middle of the archive lands in this file's data.
    sh(&format!("head -c 4194304 /dev/urandom > '{}'", root.join("middle.bin").display()));
    std::fs::write(root.join("zzz-last.txt"), "last file\n").expect("write");
    unmount(&d, "flip");
    let target = d.dir.path().join("b");
    let b = run_backup(&d, "flip", &["--target", target.to_str().expect("utf8")]);
    let id = b["id"].as_str().expect("id").to_string();
    let ok = d.cli(&["backup", "verify", &id]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("ok"), "{}", stdout(&ok));

    let archive = target.join(format!("{id}.tar.zst"));
    let mut bytes = std::fs::read(&archive).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&archive, &bytes).expect("write");
    let bad = d.cli(&["backup", "verify", &id]);
    assert!(!bad.status.success(), "a flipped byte must fail verify");
    let msg = stderr(&bad);
    assert!(msg.contains(&id), "names the backup: {msg}");
    assert!(msg.contains("middle.bin"), "names the first bad file: {msg}");
    let row = json(&d.cli(&["backup", "show", &id, "--json"]));
    assert_eq!(row["verify_status"], "failed", "{row}");
    assert!(row["verify_reason"].as_str().is_some_and(|r| r.contains("middle.bin")), "{row}");
    let o = d.cli(&["backup", "ls", "flip"]);
    assert!(stdout(&o).contains("failed"), "ls shows the failed verification: {}", stdout(&o));
    // --json verify says the same, machine-readably.
    let j = d.cli(&["backup", "verify", &id, "--json"]);
    assert!(!j.status.success());
    let v: Value = serde_json::from_slice(&j.stdout).expect("json");
    assert_eq!(v["ok"], false);
}

#[test]
fn bad_runs_are_refused_clearly() {
    let d = Daemon::start();
    assert!(d.cli(&["volume", "create", "v"]).status.success());
    for (args, want) in [
        (vec!["backup", "run", "nope"], "volume nope not found"),
        (vec!["backup", "run", "v", "--target", "gs://b/x"], "unsupported scheme"),
        (vec!["backup", "run", "v", "--target", "offsite"], "\"offsite\" is not defined in the config file"),
        (vec!["backup", "run", "v", "--target", "relative/dir"], "not defined"),
        (vec!["backup", "verify", "v-20260101T000000Z-abcdef"], "backup v-20260101T000000Z-abcdef not found"),
        (vec!["backup", "prune", "--keep", "daily=0"], "daily"),
    ] {
        let o = d.cli(&args);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let o = d.cli(&["volume", "create", "w", "-o", "backup-schedule=61 * * * *"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("backup-schedule"), "{}", stderr(&o));
    assert!(list(&d, "v").is_empty(), "no backup rows from refused runs");
}

#[test]
fn scheduled_backups_run_verify_and_keep_the_retention() {
    let d = Daemon::start();
    let o = d.cli(&[
        "volume",
        "create",
        "sched",
        "-o",
        "backup-schedule=*/2 * * * * *",
        "-o",
        "backup-verify=true",
        "-o",
        "backup-keep=last=2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = mount(&d, "sched");
    std::fs::write(root.join("file.txt"), "scheduled\n").expect("write");
    unmount(&d, "sched");
    // schedule ls shows it with a next run.
    let s = json(&d.cli(&["backup", "schedule", "ls", "--json"]));
    let entry = s.as_array().and_then(|a| a.iter().find(|e| e["volume"] == "sched").cloned()).expect("listed");
    assert_eq!(entry["cron"], "*/2 * * * * *");
    assert!(entry["next_run"].as_str().is_some(), "{entry}");
    let text = stdout(&d.cli(&["backup", "schedule", "ls"]));
    assert!(text.contains("sched") && text.contains("NEXT RUN"), "{text}");

    // Several runs happen; each is complete and verified; retention keeps the last 2.
    let first = wait_for(Duration::from_secs(60), "a complete, verified scheduled backup", || {
        list(&d, "sched").into_iter().find(|b| b["status"] == "complete" && b["verify_status"] == "ok")
    });
    assert_eq!(first["trigger"], "schedule");
    let seen = wait_for(Duration::from_secs(90), "retention to delete the oldest", || {
        let ids: Vec<String> = list(&d, "sched").iter().filter_map(|b| b["id"].as_str().map(str::to_owned)).collect();
        (!ids.contains(&first["id"].as_str().unwrap_or_default().to_string())).then_some(ids)
    });
    std::thread::sleep(Duration::from_millis(300));
    let all = list(&d, "sched");
    let complete: Vec<&Value> = all.iter().filter(|b| b["status"] == "complete").collect();
    assert!(complete.len() <= 3, "last=2 (+1 possibly just written): {all:?}");
    assert!(!seen.is_empty());
    assert!(all.iter().all(|b| b["status"] != "failed"), "no failed runs: {all:?}");
    // The deleted backup's objects are gone from disk; the kept ones are whole.
    let dir = d.state().join("backups");
    let files = files_in(&dir);
    let first_id = first["id"].as_str().expect("id");
    assert!(!files.iter().any(|f| f.starts_with(first_id)), "{files:?}");
    for b in &complete {
        let id = b["id"].as_str().expect("id");
        for suffix in [".tar.zst", ".manifest.json", ".tar.zst.sha256"] {
            assert!(files.contains(&format!("{id}{suffix}")), "{id}{suffix} in {files:?}");
        }
    }
    let v = json(&d.cli(&["volume", "inspect", "sched", "--json"]));
    assert_eq!(v[0]["Status"]["last_backup"]["verified"], "ok", "{v}");
}

/// The IDs a prune answer does not keep.
fn not_kept(items: &Value) -> Vec<String> {
    let all = items.as_array().expect("array");
    all.iter().filter(|i| i["keep"] == false).map(|i| i["id"].as_str().expect("id").to_string()).collect()
}

#[test]
fn prune_dry_run_lists_exactly_what_prune_deletes() {
    let d = Daemon::start();
    assert!(d.cli(&["volume", "create", "p"]).status.success());
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(run_backup(&d, "p", &[])["id"].as_str().expect("id").to_string());
    }
    let dry = json(&d.cli(&["backup", "prune", "p", "--keep", "last=2", "--dry-run", "--json"]));
    let would = not_kept(&dry);
    assert_eq!(would.len(), 3, "{dry}");
    assert_eq!(list(&d, "p").len(), 5, "a dry run deletes nothing");
    let text = stdout(&d.cli(&["backup", "prune", "p", "--keep", "last=2", "--dry-run"]));
    assert_eq!(text.matches("would delete").count(), 3, "{text}");
    let real = json(&d.cli(&["backup", "prune", "p", "--keep", "last=2", "--json"]));
    let deleted = not_kept(&real);
    assert_eq!(would, deleted);
    let left: Vec<String> = list(&d, "p").iter().map(|b| b["id"].as_str().expect("id").to_string()).collect();
    assert_eq!(left.len(), 2);
    for id in &deleted {
        assert!(!left.contains(id));
        assert!(!d.state().join("backups").join(format!("{id}.tar.zst")).exists());
    }
    // The two newest are the ones kept.
    let mut newest = ids.clone();
    newest.sort();
    assert!(left.iter().all(|id| newest[3..].contains(id)), "{left:?} vs {ids:?}");
}

/// A 500 MiB volume: half incompressible, half text.
fn big_volume(d: &Daemon, vol: &str) {
    assert!(d.cli(&["volume", "create", vol]).status.success());
    let root = mount(d, vol);
    sh(&format!(
        "head -c 262144000 /dev/urandom > '{r}/random.bin' && yes 'voltool backup test line with some text' | head -c 262144000 > '{r}/text.txt'",
        r = root.display()
    ));
    unmount(d, vol);
}

/// Starts a backup without waiting and returns its ID.
fn start_backup(d: &Daemon, vol: &str, target: &str) -> String {
    let o = d.cli(&["backup", "run", vol, "--target", target, "--detach"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).lines().last().expect("id").to_string()
}

/// `GET /v1/backups/ID?wait_ms=N` answers when the run ends, not before (unless N passed):
/// how the CLI follows a run without polling.
#[test]
fn following_a_run_with_wait_ms_answers_at_its_end() {
    let d = Daemon::start();
    big_volume(&d, "followed");
    let target = d.dir.path().join("followed-target");
    let id = start_backup(&d, "followed", target.to_str().expect("utf8"));
    let t0 = Instant::now();
    loop {
        let asked = Instant::now();
        let (status, body) = d.api_get(&format!("/v1/backups/{id}?wait_ms=3000"));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        if v["status"] != "running" && v.get("progress").is_none() {
            assert_eq!(v["status"], "complete", "{v}");
            break;
        }
        // Still running: the daemon held the request the whole wait.
        assert!(asked.elapsed() >= Duration::from_millis(2900), "answered after {:?}: {v}", asked.elapsed());
        assert!(t0.elapsed() < Duration::from_secs(300), "backup {id} did not finish");
    }
    // A finished run is answered at once whatever the wait.
    let asked = Instant::now();
    let (status, _) = d.api_get(&format!("/v1/backups/{id}?wait_ms=3000"));
    assert_eq!(status, 200);
    assert!(asked.elapsed() < Duration::from_secs(1), "{:?}", asked.elapsed());
}

/// Kills the daemon with SIGKILL when the run `id` has read `fraction` of its bytes.
fn kill_at(d: &mut Daemon, id: &str, fraction: f64) -> bool {
    let t0 = Instant::now();
    loop {
        let b = json(&d.cli(&["backup", "show", id, "--json"]));
        if b["status"] != "running" {
            return false;
        }
        let done = b["progress"]["done_bytes"].as_u64().unwrap_or(0) as f64;
        let total = b["progress"]["total_bytes"].as_u64().unwrap_or(524_288_000) as f64;
        if done >= fraction * total {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "backup {id} did not progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
    true
}

/// xorshift: random kill points without a dependency.
fn next_fraction(seed: &mut u64) -> f64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    0.02 + (*seed % 1000) as f64 / 1000.0 * 0.93
}

#[test]
fn kill_9_mid_backup_leaves_nothing_that_looks_complete() {
    let mut d = Daemon::start();
    big_volume(&d, "big");
    let target = d.dir.path().join("killed");
    let t = target.to_str().expect("utf8").to_string();
    let mut seed = u64::from(std::process::id()) | 1;
    let mut killed = Vec::new();
    for _ in 0..10 {
        let id = start_backup(&d, "big", &t);
        let f = next_fraction(&mut seed);
        assert!(kill_at(&mut d, &id, f), "backup {id} finished before the kill at {f:.2}");
        println!("killed {id} at {:.0}%", f * 100.0);
        killed.push(id);
        d.restart();
    }
    // After the restart: every killed run is failed (interrupted), none complete, and their
    // partial objects are removed (at once for a directory target).
    let rows = list(&d, "big");
    for id in &killed {
        let row = rows.iter().find(|b| b["id"] == id.as_str()).unwrap_or_else(|| panic!("{id} listed"));
        assert_eq!(row["status"], "failed", "{row}");
        assert!(row["reason"].as_str().is_some_and(|r| r.contains("interrupted")), "{row}");
    }
    let files = wait_for(Duration::from_secs(30), "partial objects to be removed", || {
        let f = files_in(&target);
        f.iter().all(|n| !n.ends_with(".partial") && !killed.iter().any(|id| n.starts_with(id.as_str()))).then_some(f)
    });
    assert!(files.is_empty(), "{files:?}");
    // The volume is not left mounted by the killed runs, and the next backup works.
    let v = json(&d.cli(&["volume", "inspect", "big", "--json"]));
    assert_eq!(v[0]["Status"]["mount_count"], 0, "{v}");
    let b = run_backup(&d, "big", &["--target", &t, "--verify"]);
    assert_eq!(b["status"], "complete");
    assert_eq!(b["verify_status"], "ok");
    let id = b["id"].as_str().expect("id");
    assert_eq!(
        files_in(&target),
        [format!("{id}.manifest.json"), format!("{id}.tar.zst"), format!("{id}.tar.zst.sha256")]
    );
}

#[test]
fn full_target_fails_cleanly_and_the_next_scheduled_run_works() {
    if !needs_root("full_target_fails_cleanly_and_the_next_scheduled_run_works") {
        return;
    }
    let d = Daemon::start();
    let target = d.dir.path().join("small");
    std::fs::create_dir_all(&target).expect("mkdir");
    sh(&format!("mount -t tmpfs -o size=8m tmpfs '{}'", target.display()));
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        }
    }
    let _u = Umount(target.clone());
    let opt = format!("backup-target={}", target.display());
    let o = d.cli(&["volume", "create", "full", "-o", "backup-schedule=*/2 * * * * *", "-o", &opt]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = mount(&d, "full");
    sh(&format!("head -c 20971520 /dev/urandom > '{}/big.bin'", root.display()));
    let failed = wait_for(Duration::from_secs(60), "a failed scheduled backup", || {
        list(&d, "full").into_iter().find(|b| b["status"] == "failed")
    });
    let reason = failed["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(reason.contains("no space left"), "clear reason: {failed}");
    assert!(reason.contains(&target.display().to_string().to_lowercase()), "names the target: {failed}");
    // Nothing partial remains in the target (hidden temporary files included).
    let left = files_in(&target);
    assert!(
        left.iter().all(|f| !f.starts_with(failed["id"].as_str().unwrap_or("?")) && !f.ends_with(".partial")),
        "{left:?}"
    );
    // Make it fit; the next scheduled run completes.
    std::fs::remove_file(root.join("big.bin")).expect("rm");
    std::fs::write(root.join("small.txt"), "fits\n").expect("write");
    unmount(&d, "full");
    let ok = wait_for(Duration::from_secs(60), "a complete scheduled backup after the failure", || {
        list(&d, "full").into_iter().find(|b| b["status"] == "complete")
    });
    let id = ok["id"].as_str().expect("id");
    assert!(target.join(format!("{id}.tar.zst")).exists());
    assert!(!files_in(&target).iter().any(|f| f.ends_with(".partial")));
}

// ---------------------------------------------------------------------------------------
// S3: the backup, verify and cleanup tests run against every test server (s3s-fs and moto, see
// backup/tests/s3_servers), each with and without `checksums=when-required`, each in a bucket
// of its own that is removed afterwards; what they check on the server they ask through a
// client of their own (s3s-fs: also its files). The tests after them need s3s-fs itself: its
// signature checks (credentials) or a private s3s-fs that can be stopped and started.

/// The s3s-fs server test.sh starts (deploy/test-env/s3/start-s3.sh), which checks request
/// signatures and stores objects as plain files under VOLTOOL_TEST_S3_DATA/BUCKET/KEY.
struct S3 {
    endpoint: String,
    bucket: String,
    data: PathBuf,
}

fn s3(test: &str) -> Option<S3> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("VOLTOOL_TEST_S3_ENDPOINT"), var("VOLTOOL_TEST_S3_BUCKET"), var("VOLTOOL_TEST_S3_DATA")) {
        (Some(endpoint), Some(bucket), Some(data)) => Some(S3 { endpoint, bucket, data: data.into() }),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: CI must provide the S3 server (test.sh)");
            println!("SKIP {test}: no test S3 server (run deploy/test-env/test.sh, or set VOLTOOL_TEST_S3_*)");
            None
        }
    }
}

impl S3 {
    /// A target URL under a prefix unique to this test run.
    fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}?endpoint={}&path_style=true", self.bucket, self.endpoint)
    }

    fn prefix(test: &str) -> String {
        format!("t{}-{test}", std::process::id())
    }

    fn objects(&self, prefix: &str) -> Vec<String> {
        files_in(&self.data.join(&self.bucket).join(prefix)).into_iter().filter(|f| !f.starts_with(".")).collect()
    }
}

s3_matrix!(s3_scheduled_backup_is_complete_verified_and_restores_with_stock_tar);
fn s3_scheduled_backup_is_complete_verified_and_restores_with_stock_tar(v: &Variant) {
    let bucket = v.bucket();
    let d = Daemon::start();
    let prefix = "sched";
    let target = format!("backup-target={}", bucket.url(prefix));
    let o = d.cli(&[
        "volume",
        "create",
        "s3sched",
        "-o",
        "backup-schedule=*/2 * * * * *",
        "-o",
        &target,
        "-o",
        "backup-verify=true",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = mount(&d, "s3sched");
    if is_root() {
        populate(&root);
    } else {
        std::fs::write(root.join("f.txt"), "s3\n").expect("write");
    }
    // Only a run that started after the data was written holds all of it.
    let after = String::from_utf8_lossy(
        &Command::new("date").args(["-u", "-d", "2 seconds", "+%Y-%m-%dT%H:%M:%SZ"]).output().expect("date").stdout,
    )
    .trim()
    .to_string();
    let b = wait_for(Duration::from_secs(60), "a complete, verified scheduled S3 backup of the data", || {
        list(&d, "s3sched").into_iter().find(|b| {
            b["status"] == "complete"
                && b["verify_status"] == "ok"
                && b["started_at"].as_str().is_some_and(|t| t >= after.as_str())
        })
    });
    let id = b["id"].as_str().expect("id");
    assert_eq!(b["target_url"], format!("s3://{}/{prefix}", bucket.name));
    let stored = bucket.objects(prefix);
    for suffix in [".tar.zst", ".manifest.json", ".tar.zst.sha256"] {
        assert!(stored.contains(&format!("{id}{suffix}")), "{id}{suffix} stored: {stored:?}");
    }
    let restored = d.dir.path().join("restored");
    gnu_extract(&bucket.download(&format!("{prefix}/{id}.tar.zst"), d.dir.path()), &restored);
    assert_same_tree(&root, &restored);
    unmount(&d, "s3sched");
    assert!(b["upload_token"].is_null(), "a complete backup has no open upload: {b}");
}

s3_matrix!(s3_flipped_byte_fails_verify_naming_the_file);
fn s3_flipped_byte_fails_verify_naming_the_file(v: &Variant) {
    let bucket = v.bucket();
    let d = Daemon::start();
    assert!(d.cli(&["volume", "create", "s3flip"]).status.success());
    let root = mount(&d, "s3flip");
    std::fs::write(root.join("aaa.txt"), "first\n").expect("write");
    sh(&format!("head -c 4194304 /dev/urandom > '{}'", root.join("middle.bin").display()));
    unmount(&d, "s3flip");
    let prefix = "flip";
    let b = run_backup(&d, "s3flip", &["--target", &bucket.url(prefix), "--verify"]);
    assert_eq!(b["verify_status"], "ok");
    let id = b["id"].as_str().expect("id");
    bucket.corrupt(&format!("{prefix}/{id}.tar.zst"));
    let bad = d.cli(&["backup", "verify", id]);
    assert!(!bad.status.success());
    let msg = stderr(&bad);
    assert!(msg.contains(id) && msg.contains("middle.bin"), "{msg}");
}

s3_matrix!(s3_kill_9_mid_backup_leaves_no_complete_backup_and_no_open_upload);
fn s3_kill_9_mid_backup_leaves_no_complete_backup_and_no_open_upload(v: &Variant) {
    let bucket = v.bucket();
    let mut d = Daemon::start();
    big_volume(&d, "s3big");
    let prefix = "kill";
    let url = bucket.url(prefix);
    let key = |id: &str| format!("{prefix}/{id}.tar.zst");
    let mut seed = u64::from(std::process::id()) | 3;
    let mut killed = Vec::new();
    for _ in 0..10 {
        let id = start_backup(&d, "s3big", &url);
        let f = next_fraction(&mut seed);
        let token = wait_for(Duration::from_secs(30), "the upload id in the catalog", || {
            json(&d.cli(&["backup", "show", &id, "--json"]))["upload_token"].as_str().map(str::to_owned)
        });
        assert!(kill_at(&mut d, &id, f), "backup {id} finished before the kill at {f:.2}");
        let open = bucket.open_uploads(&key(&id), Some(&token));
        assert!(!open.is_empty(), "the upload {token} was open when the daemon died");
        println!("killed {id} at {:.0}% (upload {token})", f * 100.0);
        killed.push((id, token));
        d.restart();
    }
    wait_for(Duration::from_secs(60), "every killed run failed and cleaned up", || {
        let rows = list(&d, "s3big");
        killed
            .iter()
            .all(|(id, _)| {
                rows.iter().any(|b| b["id"] == id.as_str() && b["status"] == "failed" && b["cleanup_pending"].is_null())
            })
            .then_some(())
    });
    for (id, token) in &killed {
        let open = bucket.open_uploads(&key(id), Some(token));
        assert!(open.is_empty(), "upload {token} of {id} aborted: {open:?}");
    }
    let objects = bucket.objects(prefix);
    assert!(objects.is_empty(), "nothing of the killed runs is stored: {objects:?}");
    let b = run_backup(&d, "s3big", &["--target", &url, "--verify"]);
    assert_eq!(b["verify_status"], "ok", "the next backup works: {b}");
}

s3_matrix!(s3_with_max_parts_10_uploads_300_mib_and_verifies);
fn s3_with_max_parts_10_uploads_300_mib_and_verifies(v: &Variant) {
    let bucket = v.bucket();
    let d = Daemon::start();
    assert!(d.cli(&["volume", "create", "s3parts"]).status.success());
    let root = mount(&d, "s3parts");
    sh(&format!("head -c 314572800 /dev/urandom > '{}/random.bin'", root.display()));
    unmount(&d, "s3parts");
    let prefix = "parts";
    let url = format!("{}&max_parts=10", bucket.url(prefix));
    let b = run_backup(&d, "s3parts", &["--target", &url, "--verify"]);
    assert_eq!(b["status"], "complete", "{b}");
    assert_eq!(b["verify_status"], "ok", "{b}");
    assert!(b["bytes_out"].as_u64() > Some(314_572_800), "{b}");
    let id = b["id"].as_str().expect("id");
    let size = bucket.size(&format!("{prefix}/{id}.tar.zst"));
    assert_eq!(Some(size), b["bytes_out"].as_u64());
}

#[test]
fn s3_wrong_credentials_fail_clearly_without_the_secret() {
    let Some(s3) = s3("s3_wrong_credentials_fail_clearly_without_the_secret") else { return };
    let secret = "Wr0ngS3cretKeyThatMustNeverBePrinted";
    let d = Daemon::start_with("", &[("AWS_SECRET_ACCESS_KEY", secret)]);
    assert!(d.cli(&["volume", "create", "s3creds"]).status.success());
    let prefix = S3::prefix("creds");
    let o = d.cli(&["backup", "run", "s3creds", "--target", &s3.url(&prefix)]);
    assert!(!o.status.success(), "wrong credentials must fail");
    let msg = stderr(&o);
    let lower = msg.to_lowercase();
    assert!(lower.contains("access denied") || lower.contains("credentials") || lower.contains("signature"), "{msg}");
    assert!(msg.contains(&format!("s3://{}/{prefix}", s3.bucket)), "names the target: {msg}");
    assert!(!msg.contains(secret) && !d.log().contains(secret), "the secret never shows");
    let row = &list(&d, "s3creds")[0];
    assert_eq!(row["status"], "failed");
    assert!(s3.objects(&prefix).is_empty());
}

/// The two failures found before any request is sent, through the real SDK: no credentials
/// anywhere in the AWS chain, and an endpoint host name that does not resolve (without
/// `path_style` the bucket is part of it). Both are told in plain words, and neither is retried
/// for minutes. Needs no S3 server.
#[test]
fn s3_missing_credentials_and_unresolvable_host_are_explained() {
    let home = tempfile::tempdir().expect("tmp");
    let nowhere = home.path().join("none");
    let nowhere = nowhere.to_str().expect("utf-8");
    let env = [
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_SESSION_TOKEN", ""),
        ("AWS_PROFILE", ""),
        ("AWS_CONFIG_FILE", nowhere),
        ("AWS_SHARED_CREDENTIALS_FILE", nowhere),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("HOME", home.path().to_str().expect("utf-8")),
    ];
    let d = Daemon::start_with("", &env);
    assert!(d.cli(&["volume", "create", "s3nocreds"]).status.success());
    let t0 = Instant::now();
    let o =
        d.cli(&["backup", "run", "s3nocreds", "--target", "s3://bkt/p?endpoint=http://127.0.0.1:9&path_style=true"]);
    assert!(!o.status.success(), "a backup without credentials must fail");
    let msg = stderr(&o);
    println!("after {:?}: {msg}", t0.elapsed());
    assert!(msg.contains("no usable AWS credentials"), "{msg}");
    assert!(msg.contains("AWS_ACCESS_KEY_ID"), "says what to give: {msg}");
    assert!(t0.elapsed() < Duration::from_secs(60), "not retried for minutes: {:?}", t0.elapsed());
    assert_eq!(list(&d, "s3nocreds")[0]["status"], "failed");

    let d = Daemon::start_with("", &[("AWS_ACCESS_KEY_ID", "AKIDTEST"), ("AWS_SECRET_ACCESS_KEY", "notused")]);
    assert!(d.cli(&["volume", "create", "s3dns"]).status.success());
    let t0 = Instant::now();
    let o = d.cli(&["backup", "run", "s3dns", "--target", "s3://bkt/p?endpoint=http://voltool-test.invalid:9000"]);
    assert!(!o.status.success(), "an unresolvable endpoint must fail");
    let msg = stderr(&o);
    println!("after {:?}: {msg}", t0.elapsed());
    assert!(msg.contains("does not resolve"), "{msg}");
    assert!(msg.contains("set path_style=true"), "{msg}");
    assert!(!msg.contains("notused") && !d.log().contains("notused"), "the secret never shows");
}

/// With `backup-consistency=stop` and no Docker engine at the configured socket, the backup
/// fails saying so and writes nothing; a plain backup of the same volume still works.
#[test]
fn consistent_backup_without_an_engine_fails_with_the_reason_and_a_plain_one_works() {
    let d = Daemon::start_with("docker-socket = \"/nonexistent/voltool-test/docker.sock\"\n", &[]);
    assert!(d.cli(&["volume", "create", "cons", "-o", "backup-consistency=stop"]).status.success());
    let o = d.cli(&["backup", "run", "cons"]);
    assert!(!o.status.success(), "no engine: the consistent backup fails");
    let msg = stderr(&o);
    assert!(msg.contains("backup-consistency=stop needs the docker engine"), "{msg}");
    assert!(msg.contains("/nonexistent/voltool-test/docker.sock"), "names the socket: {msg}");
    let target = d.state().join("backups");
    assert!(files_in(&target).iter().all(|f| !f.ends_with(".tar.zst")), "no archive: {:?}", files_in(&target));
    let o = d.cli(&["backup", "run", "cons", "--consistency", "none"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.cli(&["volume", "create", "bad", "-o", "backup-consistency=stop,pause"]);
    assert!(!o.status.success() && stderr(&o).contains("stop and pause exclude each other"), "{}", stderr(&o));
}

/// A private s3s-fs (its own port and data dir) the test can stop and start.
struct PrivateS3 {
    child: Option<std::process::Child>,
    data: PathBuf,
    port: u16,
}

impl PrivateS3 {
    fn start(data: &Path, port: u16) -> Self {
        std::fs::create_dir_all(data.join("bkt")).expect("bucket dir");
        let mut s = PrivateS3 { child: None, data: data.to_path_buf(), port };
        s.restart();
        s
    }

    fn restart(&mut self) {
        let bin = std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs")).ok().filter(|p| p.exists());
        let key = std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID from start-s3.sh");
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY from start-s3.sh");
        let child = Command::new(bin.unwrap_or_else(|| PathBuf::from("s3s-fs")))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                &key,
                "--secret-key",
                &secret,
            ])
            .arg(&self.data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3s-fs");
        self.child = Some(child);
        wait_for(Duration::from_secs(10), "the private s3s-fs to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn s3_server_stopped_mid_upload_fails_cleanly_and_the_next_run_works() {
    let Some(_) = s3("s3_server_stopped_mid_upload_fails_cleanly_and_the_next_run_works") else { return };
    let d = Daemon::start();
    let mut server = PrivateS3::start(&d.dir.path().join("s3data"), 18017);
    let url = format!("s3://bkt/p?endpoint=http://127.0.0.1:{}&path_style=true", server.port);
    big_volume(&d, "s3stop");
    let id = start_backup(&d, "s3stop", &url);
    wait_for(Duration::from_secs(60), "the upload to be under way", || {
        let b = json(&d.cli(&["backup", "show", &id, "--json"]));
        (b["progress"]["done_bytes"].as_u64().unwrap_or(0) > 60 << 20).then_some(())
    });
    server.stop();
    let t0 = Instant::now();
    let failed = wait_for(Duration::from_secs(120), "the backup to fail", || {
        let b = json(&d.cli(&["backup", "show", &id, "--json"]));
        (b["status"] == "failed").then_some(b)
    });
    println!("failed after {:?}: {}", t0.elapsed(), failed["reason"]);
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("s3://bkt/p"), "names the target: {reason}");
    assert!(reason.to_lowercase().contains("connect") || reason.contains("127.0.0.1"), "clear reason: {reason}");
    server.restart();
    // The pending cleanup runs once the server is back: no object, no open upload.
    wait_for(Duration::from_secs(60), "the cleanup after the server came back", || {
        let b = json(&d.cli(&["backup", "show", &id, "--json"]));
        b["cleanup_pending"].is_null().then_some(())
    });
    let leftovers: Vec<String> = files_in(&server.data).into_iter().filter(|f| f.starts_with(".upload")).collect();
    assert!(leftovers.is_empty(), "no open upload: {leftovers:?}");
    assert!(files_in(&server.data.join("bkt/p")).is_empty(), "no object");
    let b = run_backup(&d, "s3stop", &["--target", &url, "--verify"]);
    assert_eq!(b["verify_status"], "ok", "{b}");
}

#[test]
fn on_remove_archive_backs_up_before_removing_and_keeps_the_volume_if_it_cannot() {
    let d = Daemon::start();
    assert!(d.cli(&["volume", "create", "arch", "-o", "on-remove=archive"]).status.success());
    let root = mount(&d, "arch");
    std::fs::write(root.join("last-words.txt"), "keep me\n").expect("write");
    unmount(&d, "arch");
    let o = d.cli(&["volume", "rm", "arch"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b = list(&d, "arch");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["trigger"], "archive");
    assert_eq!(b[0]["status"], "complete");
    assert_eq!(b[0]["verify_status"], "ok");
    let ls = stdout(&d.cli(&["volume", "ls", "-q"]));
    assert!(!ls.lines().any(|l| l == "arch"), "removed: {ls}");
    // The archive restores with stock tools.
    let id = b[0]["id"].as_str().expect("id");
    let out = d.dir.path().join("back");
    gnu_extract(&d.state().join("backups").join(format!("{id}.tar.zst")), &out);
    assert_eq!(std::fs::read_to_string(out.join("last-words.txt")).expect("restored"), "keep me\n");
    // A backup that cannot be written: the volume is not removed.
    let o = d.cli(&["volume", "create", "stuck", "-o", "on-remove=archive", "-o", "backup-target=/dev/null/nowhere"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.cli(&["volume", "rm", "stuck"]);
    assert!(!o.status.success(), "must not remove what it could not archive");
    assert!(stderr(&o).contains("not removed") && stderr(&o).contains("on-remove=archive"), "{}", stderr(&o));
    assert!(stdout(&d.cli(&["volume", "ls", "-q"])).lines().any(|l| l == "stuck"));
}

#[test]
fn a_run_verifies_its_backup_within_its_own_slot() {
    // `backup run --verify` on VOLUMES at once, bounded by `timeout` (a deadlock fails).
    let run_all = |d: &Daemon, volumes: &[&str]| {
        let kids: Vec<std::process::Child> = volumes
            .iter()
            .map(|v| {
                Command::new("timeout")
                    .args(["60", bin(), "backup", "run", v, "--verify", "--json"])
                    .env("VOLTOOL_API_SOCKET", d.dir.path().join("api.sock"))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for k in kids {
            let o = k.wait_with_output().expect("wait");
            assert!(o.status.success(), "a run with --verify must finish: {}", String::from_utf8_lossy(&o.stderr));
        }
    };
    // With one slot, a run that waited for a second slot to verify would wait forever.
    let d = Daemon::start_with("[backup]\nconcurrency = 1\n", &[]);
    assert!(d.cli(&["volume", "create", "one"]).status.success());
    run_all(&d, &["one"]);
    // Two runs verifying at once with two slots.
    let d = Daemon::start_with("[backup]\nconcurrency = 2\n", &[]);
    for v in ["x", "y"] {
        assert!(d.cli(&["volume", "create", v]).status.success());
    }
    run_all(&d, &["x", "y"]);
}

/// SPEC §8: one small file of a large backup on S3 costs only the frames that hold it. Against
/// s3s-fs through a relay that counts what the server sends back; the times of the read and of
/// a full restore are printed (the benchmark's to hold, not a test's).
#[test]
fn s3_backup_cat_of_a_1_kib_file_of_a_1_gib_backup_fetches_at_most_4_mib() {
    s3_servers::run(
        s3_servers::Kind::S3sFs,
        false,
        "s3_backup_cat_of_a_1_kib_file_of_a_1_gib_backup_fetches_at_most_4_mib",
        cat_from_s3,
    );
}

fn cat_from_s3(v: &Variant) {
    if !needs_root("s3_backup_cat_of_a_1_kib_file_of_a_1_gib_backup_fetches_at_most_4_mib") {
        return;
    }
    let bucket = v.bucket();
    let relay = s3_servers::Recorder::start(&v.server.endpoint);
    let url = bucket.url("cat").replace(&v.server.endpoint, &relay.endpoint);
    let d = Daemon::start();
    assert!(d.cli(&["volume", "create", "catvol"]).status.success());
    let root = mount(&d, "catvol");
    sh(&format!(
        "set -e; cd '{r}'; head -c 536870912 /dev/urandom > a.bin; mkdir m; head -c 1024 /dev/urandom > m/small.bin; head -c 536870912 /dev/urandom > z.bin",
        r = root.display()
    ));
    let b = run_backup(&d, "catvol", &["--target", &url]);
    let id = b["id"].as_str().expect("id").to_owned();
    assert!(b["bytes_out"].as_u64().expect("bytes") >= 1 << 30, "a 1 GiB backup: {b}");
    let t0 = Instant::now();
    let o = d.cli(&["restore", "catback", "--from", &id]);
    let full = t0.elapsed();
    assert!(o.status.success(), "{}", stderr(&o));
    let before = relay.received.load(std::sync::atomic::Ordering::SeqCst);
    let t0 = Instant::now();
    let o = d.cli(&["backup", "cat", &id, "m/small.bin"]);
    let one = t0.elapsed();
    let fetched = relay.received.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, std::fs::read(root.join("m/small.bin")).expect("source"));
    println!(
        "backup cat of 1 KiB: {fetched} bytes from the server in {one:?}; full restore of the 1 GiB backup: {full:?} ({:.2}%)",
        100.0 * one.as_secs_f64() / full.as_secs_f64()
    );
    assert!(fetched <= 4 << 20, "backup cat fetched {fetched} bytes from the server");
    unmount(&d, "catvol");
}
