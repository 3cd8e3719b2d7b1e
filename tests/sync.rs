//! The target as the source of truth, end to end without Docker (SPEC §8): host A backs
//! volumes up (a full backup and two incrementals of one, two full backups of another) to a
//! directory target and, when the test S3 server is there, to a bucket; host B, a daemon on
//! an empty state dir with the same config file, runs `backup sync` and `backup ls --target`
//! and restores every backup by its ID to exactly the tree it was taken of. B's retention
//! leaves what it found alone until `--adopt`; objects deleted from a target make the backup
//! vanished at the next sync, and its restore fails saying so.
//!
//! S3: the s3s-fs server `deploy/test-env/test.sh` starts (VOLTOOL_TEST_S3_ENDPOINT, _BUCKET,
//! _DATA and the AWS credentials in the environment, which the daemons inherit); without it
//! only directory targets are used (CI requires it). One more place, `sealed`, holds
//! age-encrypted backups (its `encrypt-to`): both hosts hold the identity as a secret.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use voltool_api::{BackupView, FoundState, SyncReport, TargetListing};

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().expect("sh");
    assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
}

fn ok(o: std::process::Output) -> std::process::Output {
    assert!(o.status.success(), "command failed: {}\n{}", stderr(&o), stdout(&o));
    o
}

fn parse<T: serde::de::DeserializeOwned>(o: &std::process::Output) -> T {
    assert!(o.status.success(), "command failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not the expected json ({e}): {}", stdout(o)))
}

/// The test S3 server's bucket under a prefix of this run (`tag` in it): the target URL and
/// the directory s3s-fs keeps its objects in; or `None` (after saying so) outside CI.
fn s3_url(test: &str, tag: &str) -> Option<(String, PathBuf)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("VOLTOOL_TEST_S3_ENDPOINT"), var("VOLTOOL_TEST_S3_BUCKET"), var("VOLTOOL_TEST_S3_DATA")) {
        (Some(endpoint), Some(bucket), Some(data)) => {
            let prefix = format!("sync-{}-{tag}", std::process::id());
            let url = format!("s3://{bucket}/{prefix}?endpoint={endpoint}&path_style=true");
            // s3s-fs keeps an object as the file DATA/BUCKET/KEY.
            Some((url, PathBuf::from(data).join(bucket).join(&prefix)))
        }
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: CI must provide the S3 server (test.sh)");
            println!("SKIP {test} on S3: no test S3 server (run deploy/test-env/test.sh, or set VOLTOOL_TEST_S3_*)");
            None
        }
    }
}

/// A target both hosts know by name, and where its objects are as files (to delete some).
struct Place {
    name: &'static str,
    objects: PathBuf,
}

/// The config file both hosts use: the places, the one named `sealed` encrypted to `KEY`'s
/// public key, and `[backup] identities` naming the secret that holds `KEY`.
fn config(places: &[(&'static str, String)]) -> String {
    let mut out = format!("[backup]\nidentities = [\"{SECRET}\"]\n\n");
    for (name, url) in places {
        out.push_str(&format!("[targets.{name}]\nurl = \"{url}\"\n"));
        if *name == "sealed" {
            out.push_str(&format!("encrypt-to = [\"{}\"]\n", key().1));
        }
        out.push('\n');
    }
    out
}

/// The secret both hosts keep the identity in.
const SECRET: &str = "dr-key";

/// The age key of the encrypted place: (identity file, public key), the same for the whole run.
fn key() -> &'static (String, String) {
    static KEY: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        use age::secrecy::ExposeSecret;
        let k = age::x25519::Identity::generate();
        (format!("{}\n", k.to_string().expose_secret()), k.to_public().to_string())
    })
}

/// A daemon with the config of `places` and the identity added as a secret.
fn host(places: &[(&'static str, String)]) -> Daemon {
    let d = Daemon::start_with(&config(places), &[]);
    ok(d.cli_stdin(&["secret", "add", SECRET], key().0.as_bytes()));
    d
}

/// What `db` looks like at first: dirs, modes, owners, a symlink, hard links, a fifo,
/// nanosecond mtimes, an empty file.
fn populate(root: &Path) {
    sh(&format!(
        r#"set -e; cd '{r}'
        mkdir -p etc/conf.d data/base/1 empty
        printf 'port = 5432\n' > etc/main.conf
        seq 1 50000 > data/base/1/table
        head -c 300000 /dev/urandom > data/base/1/blob
        : > empty.file
        ln -s ../etc/main.conf data/conf-link
        ln data/base/1/table hard-table
        mkfifo pipe
        chmod 0600 etc/main.conf; chmod 0750 data; chmod 1777 empty
        chown 999:999 data/base/1/table; chown -h 7:8 data/conf-link
        touch -d '2001-02-03 04:05:06.123456789' etc/main.conf
        "#,
        r = root.display()
    ));
}

/// Round `n` of changes: a file rewritten, one added, one deleted, one renamed, one
/// chmodded, a file replaced by a symlink.
fn change(root: &Path, n: usize) {
    sh(&format!(
        r#"set -e; cd '{r}'
        seq {n} 60000 > data/base/1/table
        mkdir -p "round{n}"; printf 'round {n}\n' > "round{n}/new.txt"
        rm -f empty.file
        for f in etc/main.conf*; do mv "$f" "etc/main.conf.{n}"; done
        chmod 0640 "etc/main.conf.{n}"
        rm -f data/base/1/blob; ln -s table data/base/1/blob
        "#,
        r = root.display()
    ));
}

/// A copy of the tree as it is now (what a restore of the backup just taken must give).
fn snapshot(root: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("mkdir");
    sh(&format!("cp -a '{}/.' '{}/'", root.display(), dest.display()));
}

/// `backup run` on host `d`; returns the run's catalog entry.
fn run(d: &Daemon, vol: &str, target: &str, incremental: bool) -> BackupView {
    let mut args = vec!["backup", "run", vol, "--target", target, "--json"];
    if incremental {
        args.push("--incremental");
    }
    parse(&d.cli(&args))
}

/// Host A's backups: ID → the snapshot of the tree it holds, per target; and A.
struct HostA {
    d: Daemon,
    /// per target name: (ID, snapshot) in the order they were taken (db full, db +1, db +2,
    /// web, web).
    backups: BTreeMap<&'static str, Vec<(String, PathBuf)>>,
}

fn host_a(places: &[(&'static str, String)], scratch: &Path) -> HostA {
    let d = host(places);
    for vol in ["db", "web"] {
        ok(d.cli(&["volume", "create", vol]));
    }
    let (db, web) = (mount(&d, "db"), mount(&d, "web"));
    populate(&db);
    std::fs::write(web.join("index.html"), b"<h1>one</h1>\n").expect("write");
    let mut backups: BTreeMap<&'static str, Vec<(String, PathBuf)>> = BTreeMap::new();
    let mut take = |vol: &str, root: &Path, step: usize, incremental: bool| {
        // Another second, so the backups of a volume are ordered by time, not by their IDs'
        // random part (an incremental follows the newest).
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let snap = scratch.join(format!("snap-{vol}-{step}"));
        snapshot(root, &snap);
        for (name, _) in places {
            let b = run(&d, vol, name, incremental);
            let r = &b.record;
            assert_eq!(r.status, voltool_api::BackupStatus::Complete, "{b:?}");
            let want_level = if vol == "db" { step as u32 } else { 0 };
            assert_eq!(r.level, want_level, "{vol} step {step} on {name}: {b:?}");
            backups.entry(name).or_default().push((r.id.clone(), snap.clone()));
        }
    };
    take("db", &db, 0, false);
    change(&db, 1);
    take("db", &db, 1, true);
    change(&db, 2);
    take("db", &db, 2, true);
    take("web", &web, 0, false);
    std::fs::write(web.join("index.html"), b"<h1>two</h1>\n").expect("write");
    take("web", &web, 1, false);
    HostA { d, backups }
}

/// Restores `id` on `d` into a new volume `into` and compares it with `want`.
fn restore_and_compare(d: &Daemon, id: &str, into: &str, want: &Path) {
    ok(d.cli(&["restore", into, "--from", id]));
    let got = mount(d, into);
    assert_same_tree(want, &got);
    ok(d.cli(&["volume", "unmount", into, "--id", "test"]));
}

/// The second column starts at the same character on every line of a table.
fn assert_aligned(table: &str) {
    let starts: Vec<usize> = table
        .lines()
        .map(|l| {
            let first_gap = l.find("   ").expect("a column gap");
            first_gap + l[first_gap..].len() - l[first_gap..].trim_start().len()
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] == w[1]), "columns not aligned ({starts:?}):\n{table}");
}

fn scenario(test: &str, places: Vec<(&'static str, String)>, objects: Vec<Place>) {
    let scratch = tempfile::tempdir().expect("tmp");
    let a = host_a(&places, scratch.path());
    let b = host(&places);

    // A fresh host finds every backup, with its chain.
    let report: SyncReport = parse(&b.cli(&["backup", "sync", "--json"]));
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.targets.len(), places.len() + 1, "the configured targets and the default one: {report:?}");
    for (name, backups) in &a.backups {
        let url = &places.iter().find(|(n, _)| n == name).expect("place").1;
        // As the daemon shows a target: file:// for a path, no query for S3.
        let shown =
            if url.starts_with('/') { format!("file://{url}") } else { url.split('?').collect::<Vec<_>>()[0].into() };
        let t = report.targets.iter().find(|t| t.target == shown).unwrap_or_else(|| panic!("{shown} in {report:?}"));
        let ids: Vec<String> = backups.iter().map(|(id, _)| id.clone()).collect();
        let mut added = t.added.clone();
        added.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(added, want, "{name}: {t:?}");
        assert!(t.unreadable.is_empty() && t.incomplete.is_empty() && t.vanished.is_empty(), "{t:?}");

        // What is on the target, with B's catalog entries.
        let listing: TargetListing = parse(&b.cli(&["backup", "ls", "--target", name, "--json"]));
        assert_eq!(listing.backups.len(), 5, "{listing:?}");
        for found in &listing.backups {
            assert_eq!(found.state, FoundState::Complete, "{found:?}");
            assert_eq!(found.catalog.as_ref().map(|c| c.origin.as_str()), Some("synced"), "{found:?}");
        }
        let chain: Vec<(u32, Option<String>)> = ids[..3]
            .iter()
            .map(|id| listing.backups.iter().find(|f| &f.id == id).map(|f| (f.level, f.parent.clone())).expect(id))
            .collect();
        assert_eq!(chain, [(0, None), (1, Some(ids[0].clone())), (2, Some(ids[1].clone()))], "{name}");
        let by_url: TargetListing = parse(&b.cli(&["backup", "ls", "--target", url, "--json"]));
        assert_eq!(by_url, listing, "the same target by its URL");
        let table = ok(b.cli(&["backup", "ls", "--target", name]));
        let text = stdout(&table);
        println!("{text}\n{}", stderr(&table));
        assert!(text.starts_with("ID ") && text.contains("+2") && text.contains("synced"), "{text}");
        assert_aligned(&text);
        assert!(
            stderr(&table).contains("5 backups on ")
                && stderr(&table).contains("5 complete (5 in this host's catalog)")
        );

        let catalog = stdout(&ok(b.cli(&["backup", "show", &ids[2]])));
        assert!(catalog.contains("origin:        synced") && catalog.contains(&format!("parent:        {}", ids[1])));
        // Every backup restores by its ID on the new host, chains included.
        for (i, (id, snap)) in backups.iter().enumerate() {
            restore_and_compare(&b, id, &format!("{name}-r{i}"), snap);
        }
    }
    let again = stdout(&ok(b.cli(&["backup", "sync"])));
    assert!(again.contains("0 added") && again.contains("5 already known"), "{again}");

    // B's retention leaves what it found alone...
    for (name, backups) in &a.backups {
        let items = stdout(&ok(b.cli(&["backup", "prune", "web", "--keep", "last=1", "--json"])));
        assert_eq!(items.trim(), "[]", "synced backups are not B's to prune");
        let ls = stdout(&ok(b.cli(&["backup", "ls", "--target", name])));
        assert!(ls.contains(&backups[3].0), "{ls}");
    }
    // ...until it adopts them: then the older web backup goes, from the target too.
    let adopted: SyncReport = parse(&b.cli(&["backup", "sync", "--adopt", "--json"]));
    assert!(adopted.targets.iter().map(|t| t.adopted.len()).sum::<usize>() == 5 * places.len(), "{adopted:?}");
    let pruned = stdout(&ok(b.cli(&["backup", "prune", "web", "--keep", "last=1", "--json"])));
    for (name, backups) in &a.backups {
        let (old, new) = (&backups[3].0, &backups[4].0);
        assert!(pruned.contains(old.as_str()) && pruned.contains(new.as_str()), "{pruned}");
        let listing: TargetListing = parse(&b.cli(&["backup", "ls", "--target", name, "--json"]));
        assert!(!listing.backups.iter().any(|f| &f.id == old), "{old} pruned from {name}");
        // A, which wrote it, finds it gone at its next sync, and cannot restore it.
        let r: SyncReport = parse(&a.d.cli(&["backup", "sync", "--target", name, "--json"]));
        assert_eq!(r.targets[0].vanished, std::slice::from_ref(old), "{r:?}");
        let o = a.d.cli(&["restore", "gone", "--from", old]);
        assert!(!o.status.success(), "a vanished backup must not restore");
        assert!(stderr(&o).contains("gone from") && stderr(&o).contains(old.as_str()), "{}", stderr(&o));
    }

    // Objects deleted on the target behind everybody's back: vanished at B's next sync, its
    // restore refused; back again, restorable again.
    for place in &objects {
        let backups = &a.backups[place.name];
        let (id, snap) = &backups[1];
        let archive = place.objects.join(format!("{id}.tar.zst"));
        let kept = std::fs::read(&archive).expect("archive");
        std::fs::remove_file(&archive).expect("rm");
        let r: SyncReport = parse(&b.cli(&["backup", "sync", "--target", place.name, "--json"]));
        assert_eq!(r.targets[0].vanished, std::slice::from_ref(id), "{r:?}");
        for gone in [id, &backups[2].0] {
            let o = b.cli(&["restore", "gone", "--from", gone]);
            assert!(!o.status.success(), "{gone}: a vanished backup (or a chain through one) must not restore");
            assert!(stderr(&o).contains("gone from"), "{}", stderr(&o));
        }
        std::fs::write(&archive, kept).expect("put back");
        let r: SyncReport = parse(&b.cli(&["backup", "sync", "--target", place.name, "--json"]));
        assert_eq!(r.targets[0].returned, std::slice::from_ref(id), "{r:?}");
        restore_and_compare(&b, id, &format!("{}-back", place.name), snap);
    }
    println!("{test}: {} targets, every backup restored on the new host", places.len());
}

#[test]
fn a_new_host_syncs_lists_and_restores_every_backup_from_a_directory_and_s3() {
    let test = "a_new_host_syncs_lists_and_restores_every_backup_from_a_directory_and_s3";
    if !root_or_skip(test, "mounts, chown") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let backups = dir.path().join("backups");
    let mut places = vec![("dir", backups.display().to_string())];
    let mut objects = vec![Place { name: "dir", objects: backups.clone() }];
    // The test's prefixes on the S3 server go when it ends, passed or not.
    let mut cleanup = RemoveDirs(Vec::new());
    if let Some((url, path)) = s3_url(test, "dr") {
        places.push(("s3", url));
        cleanup.0.push(path.clone());
        objects.push(Place { name: "s3", objects: path });
    }
    // Encrypted backups (the target's encrypt-to) to S3, or to a directory without it: found
    // by a host that holds the identity, and restored.
    let sealed = match s3_url(test, "sealed") {
        Some((url, path)) => {
            cleanup.0.push(path);
            url
        }
        None => dir.path().join("sealed").display().to_string(),
    };
    places.push(("sealed", sealed));
    scenario(test, places, objects);
}

/// Removes directories when dropped (the test's prefixes in the S3 server's data dir).
struct RemoveDirs(Vec<PathBuf>);

impl Drop for RemoveDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
