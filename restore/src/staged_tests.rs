//! Staged restores against a real directory (no root needed): the swap, its failure paths,
//! recovery in each phase, and a "container" that swaps the staging directory mid-extraction.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::cell::RefCell;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

#[derive(Default)]
struct Recorded(RefCell<Vec<Phase>>);

impl Journal for Recorded {
    fn record(&self, phase: Phase) -> Result<(), JournalError> {
        self.0.borrow_mut().push(phase);
        Ok(())
    }
}

fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_bytes()).expect("append");
    }
    b.into_inner().expect("finish")
}

fn names(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).expect("read")
}

fn volume() -> (tempfile::TempDir, Dir) {
    let t = tempfile::tempdir().expect("tmp");
    std::fs::write(t.path().join("old.txt"), "old").expect("old");
    std::fs::create_dir(t.path().join("lost+found")).expect("lf");
    let d = Dir::open(t.path()).expect("open");
    (t, d)
}

#[test]
fn swap_replaces_the_entries_and_keeps_lost_and_found() {
    let (t, root) = volume();
    let j = Recorded::default();
    let input = std::io::Cursor::new(tar_of(&[("new.txt", "new"), ("lost+found/x", "from the archive")]));
    restore_staged(&root, "n1", &j, input, &mut |_| Ok(()), &ExtractOptions::default()).expect("restore");
    assert_eq!(names(t.path()), ["lost+found", "new.txt"]);
    assert_eq!(read(&t.path().join("new.txt")), "new");
    assert_eq!(*j.0.borrow(), [Phase::Extracting, Phase::SwappingOut, Phase::SwappingIn, Phase::CleaningUp]);
}

#[test]
fn a_failed_check_leaves_the_volume_as_it_was() {
    let (t, root) = volume();
    let j = Recorded::default();
    let input = std::io::Cursor::new(tar_of(&[("new.txt", "new")]));
    let e = restore_staged(
        &root,
        "n2",
        &j,
        input,
        &mut |_| Err(RestoreError::Manifest("tampered".into())),
        &ExtractOptions::default(),
    )
    .expect_err("the check refuses");
    assert!(matches!(e, RestoreError::Manifest(_)), "{e}");
    assert_eq!(names(t.path()), ["lost+found", "old.txt"]);
    assert_eq!(read(&t.path().join("old.txt")), "old");
    assert_eq!(*j.0.borrow(), [Phase::Extracting]);
}

#[test]
fn a_corrupt_archive_leaves_the_volume_as_it_was() {
    let (t, root) = volume();
    let mut bytes = tar_of(&[("a", "aaaa"), ("b", "bbbb")]);
    bytes.truncate(700);
    let r = restore_staged(
        &root,
        "n3",
        &Recorded::default(),
        std::io::Cursor::new(bytes),
        &mut |_| Ok(()),
        &ExtractOptions::default(),
    );
    assert!(r.is_err());
    assert_eq!(names(t.path()), ["lost+found", "old.txt"]);
}

/// The state a crash in the middle of moving the old entries out leaves.
fn half_swapped(t: &Path, nonce: &str) {
    let (s, o) = (t.join(format!(".voltool-restore-{nonce}")), t.join(format!(".voltool-restore-old-{nonce}")));
    std::fs::create_dir(&s).expect("staging");
    std::fs::write(s.join("new.txt"), "new").expect("new");
    std::fs::create_dir(&o).expect("old dir");
    std::fs::write(t.join("second.txt"), "second").expect("second");
    std::fs::rename(t.join("old.txt"), o.join("old.txt")).expect("move one out");
}

#[test]
fn recover_rolls_swapping_out_back_to_the_old_content() {
    let (t, root) = volume();
    half_swapped(t.path(), "n4");
    assert_eq!(recover(&root, "n4", Phase::SwappingOut).expect("recover"), Recovered::RolledBack);
    assert_eq!(names(t.path()), ["lost+found", "old.txt", "second.txt"]);
}

#[test]
fn recover_rolls_swapping_in_forward_to_the_new_content() {
    let (t, root) = volume();
    half_swapped(t.path(), "n5");
    std::fs::rename(t.path().join("second.txt"), t.path().join(".voltool-restore-old-n5/second.txt")).expect("out");
    assert_eq!(recover(&root, "n5", Phase::SwappingIn).expect("recover"), Recovered::RolledForward);
    assert_eq!(names(t.path()), ["lost+found", "new.txt"]);
}

#[test]
fn recover_removes_a_symlink_planted_as_the_staging_directory_without_following_it() {
    let (t, root) = volume();
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("canary"), "canary").expect("canary");
    std::os::unix::fs::symlink(outside.path(), t.path().join(".voltool-restore-n6")).expect("plant");
    recover(&root, "n6", Phase::SwappingIn).expect("recover");
    assert_eq!(names(t.path()), ["lost+found", "old.txt"]);
    assert_eq!(names(outside.path()), ["canary"]);
}

#[test]
fn leftovers_of_an_older_voltool_are_finished_by_their_marker_and_the_rest_removed() {
    let (t, root) = volume();
    half_swapped(t.path(), "7");
    std::fs::write(t.path().join(".voltool-restore-7.swap"), "1").expect("marker");
    std::fs::create_dir_all(t.path().join(".voltool-restore-8/deep/er")).expect("unmarked");
    let did = recover_leftovers(&root).expect("recover");
    assert_eq!(did.len(), 2, "{did:?}");
    assert_eq!(names(t.path()), ["lost+found", "old.txt", "second.txt"]);
}

#[test]
fn a_marker_planted_as_a_symlink_to_a_host_file_is_never_read_or_written() {
    let (t, root) = volume();
    let outside = tempfile::tempdir().expect("outside");
    let host = outside.path().join("host-file");
    std::fs::write(&host, "2").expect("host");
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o600)).expect("mode");
    half_swapped(t.path(), "9");
    std::os::unix::fs::symlink(&host, t.path().join(".voltool-restore-9.swap")).expect("plant");
    recover_leftovers(&root).expect("recover");
    // Read as no phase (not followed): rolled back, the link removed as a link.
    assert_eq!(names(t.path()), ["lost+found", "old.txt", "second.txt"]);
    assert_eq!(read(&host), "2");
    assert_eq!(std::fs::metadata(&host).expect("meta").permissions().mode() & 0o7777, 0o600);
}

/// An input that, once `after` bytes were read, does what a hostile container would: renames
/// the staging directory away and puts a symlink to a host directory under its name.
struct Attacker {
    inner: std::io::Cursor<Vec<u8>>,
    read: usize,
    after: usize,
    root: std::path::PathBuf,
    staging: String,
    target: std::path::PathBuf,
    done: bool,
}

impl Read for Attacker {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.done && self.read >= self.after {
            self.done = true;
            let s = self.root.join(&self.staging);
            std::fs::rename(&s, self.root.join("moved-away")).expect("rename staging");
            std::os::unix::fs::symlink(&self.target, &s).expect("plant");
        }
        let len = buf.len().min(512);
        let n = self.inner.read(&mut buf[..len])?;
        self.read += n;
        Ok(n)
    }
}

#[test]
fn regression_staging_swapped_for_a_symlink_mid_extraction_wrote_into_the_host_directory() {
    let (t, root) = volume();
    let host = tempfile::tempdir().expect("host");
    std::fs::create_dir(host.path().join("sub")).expect("sub");
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).expect("mode");
    let files: Vec<(String, String)> = (0..50).map(|i| (format!("d{i}/f"), "x".repeat(600))).collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let input = Attacker {
        inner: std::io::Cursor::new(tar_of(&refs)),
        read: 0,
        after: 4096,
        root: t.path().to_owned(),
        staging: ".voltool-restore-n10".into(),
        target: host.path().to_owned(),
        done: false,
    };
    restore_staged(&root, "n10", &Recorded::default(), input, &mut |_| Ok(()), &ExtractOptions::default())
        .expect("restore");
    assert_eq!(names(host.path()), ["sub"], "nothing created in the host directory");
    assert_eq!(std::fs::metadata(host.path()).expect("meta").permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::metadata(host.path().join("sub")).expect("meta").permissions().mode() & 0o7777, 0o755);
    // The volume has the new tree (plus the directory the container renamed, now empty); the
    // planted link under the reserved name is gone.
    let n = names(t.path());
    assert!(n.contains(&"d49".to_string()) && !n.contains(&"old.txt".to_string()), "{n:?}");
    assert!(!n.iter().any(|x| x.starts_with(".voltool-restore-")), "{n:?}");
}

#[test]
fn regression_entries_planted_while_the_old_data_was_removed_left_it_all_in_the_volume() {
    // A container adding an entry to a directory of the old data while it was being removed
    // made that directory's rmdir fail, and the first failure stopped the removal: the rest of
    // the old tree stayed in the volume (seen with a real container: 263 of 423 files kept).
    let (t, root) = volume();
    let oname = old_name("n11");
    let old_path = t.path().join(&oname);
    for k in 0..10 {
        let d = old_path.join(format!("d{k}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        for f in 0..400 {
            std::fs::write(d.join(format!("f{f}")), "old").expect("write");
        }
    }
    let old = root.open_dir(&oname).expect("open old");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let (stop, old_path) = (stop.clone(), old_path.clone());
        std::thread::spawn(move || {
            let mut planted = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // One name per directory, made whenever it is missing (as a container's
                // `ln -sT` at a fixed name does).
                for k in 0..10 {
                    let p = old_path.join(format!("d{k}/planted"));
                    if std::fs::OpenOptions::new().write(true).create_new(true).open(p).is_ok() {
                        planted += 1;
                    }
                }
            }
            planted
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    discard(&root, &oname, &old);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let planted = attacker.join().expect("attacker");
    assert!(planted > 0, "the attacker planted nothing");
    assert!(!old_path.exists(), "the old data stayed in the volume: {:?}", names(&old_path));
}

#[test]
fn restore_into_opens_the_root_and_bounds_the_extraction_by_the_reserve() {
    let (t, _) = volume();
    let input = std::io::Cursor::new(tar_of(&[("new.txt", "new")]));
    let opts = ExtractOptions::default();
    restore_into(t.path(), "n20", &Recorded::default(), input, &mut |_| Ok(()), &opts, Reserve::default())
        .expect("restore");
    assert_eq!(names(t.path()), ["lost+found", "new.txt"]);
    // A reserve larger than the filesystem leaves no room: refused, the volume unchanged.
    let input = std::io::Cursor::new(tar_of(&[("other.txt", "other")]));
    let e =
        restore_into(t.path(), "n21", &Recorded::default(), input, &mut |_| Ok(()), &opts, Reserve::Bytes(u64::MAX))
            .expect_err("no room");
    assert!(matches!(e, RestoreError::NoSpace { .. }), "{e}");
    assert_eq!(names(t.path()), ["lost+found", "new.txt"]);
    // A missing root is named.
    let gone = t.path().join("nowhere");
    let input = std::io::Cursor::new(tar_of(&[("x", "x")]));
    let e = restore_into(&gone, "n22", &Recorded::default(), input, &mut |_| Ok(()), &opts, Reserve::default())
        .expect_err("no root");
    assert!(e.to_string().contains("the volume's root"), "{e}");
}

#[test]
fn recover_root_finishes_the_interrupted_restore_and_removes_other_leftovers() {
    let (t, _) = volume();
    half_swapped(t.path(), "n23");
    std::fs::create_dir(t.path().join(".voltool-restore-stale")).expect("stale");
    let did = recover_root(t.path(), Some(("n23", Some(Phase::SwappingIn)))).expect("recover");
    assert_eq!(names(t.path()), ["lost+found", "new.txt", "second.txt"]);
    assert_eq!(did.len(), 2, "{did:?}");
    assert!(did[0].contains("n23") && did[0].contains("swapping-in"), "{did:?}");
    // No phase recorded: undone as one still extracting.
    let (t, _) = volume();
    half_swapped(t.path(), "n24");
    let did = recover_root(t.path(), Some(("n24", None))).expect("recover");
    assert!(did[0].contains("RolledBack") && did[0].contains("extracting"), "{did:?}");
    assert_eq!(names(t.path()), ["lost+found", "old.txt", "second.txt"]);
    // Nothing interrupted, nothing left: nothing to do.
    assert!(recover_root(t.path(), None).expect("recover").is_empty());
}
