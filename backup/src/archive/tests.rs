use std::ffi::OsStr;

use super::*;
use crate::manifest::EntryKind;
use crate::pipeline::HashingWriter;

#[test]
fn hashing_writer_counts_and_hashes() {
    let mut w = HashingWriter::new(Vec::new());
    w.write_all(b"abc").expect("write");
    let (inner, n, sha) = w.finish();
    assert_eq!(inner, b"abc");
    assert_eq!(n, 3);
    assert_eq!(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn rejects_bad_level_and_non_dir_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ArchiveOptions { level: 0, ..Default::default() };
    assert!(matches!(write_archive(dir.path(), io::sink(), &opts), Err(BackupError::Options(_))));
    let f = dir.path().join("f");
    std::fs::write(&f, b"x").expect("write");
    assert!(matches!(write_archive(&f, io::sink(), &ArchiveOptions::default()), Err(BackupError::Root { .. })));
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &link).expect("symlink");
    assert!(matches!(write_archive(&link, io::sink(), &ArchiveOptions::default()), Err(BackupError::Root { .. })));
}

/// Regression: a walk that failed left the pipeline open and the archiver waited for the
/// compressor forever. A path longer than the walk takes fails deterministically (even as
/// root; the tree is made by descriptors, its paths are far past PATH_MAX).
#[test]
fn failed_walk_returns_the_error_instead_of_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "x".repeat(230);
    let mut cur = walk::open_root(dir.path()).expect("open").0;
    for _ in 0..(walk::MAX_PATH / (name.len() + 1) + 2) {
        nix::sys::stat::mkdirat(&cur, name.as_str(), Mode::from_bits_truncate(0o755)).expect("mkdirat");
        cur = walk::open_dir_at(std::os::fd::AsFd::as_fd(&cur), OsStr::new(&name)).expect("open");
    }
    let root = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let opts = ArchiveOptions { threads: 2, ..Default::default() };
        let _ = tx.send(write_archive(&root, io::sink(), &opts));
    });
    let result = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("write_archive hung");
    match result {
        Err(BackupError::PathTooLong { limit, .. }) => assert_eq!(limit, walk::MAX_PATH),
        other => panic!("expected a path-too-long error, got {other:?}"),
    }
}

/// The tar stream inside a `.tar.zst`.
fn tar_of(archive: &[u8]) -> Vec<u8> {
    zstd::decode_all(archive).expect("zstd")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Issue 12's attack, made deterministic: a 30-level tree archived holding 4 descriptors;
/// deep in it, level 3 (its descriptor let go) is swapped for a symlink to an outside
/// directory with the same names and a mode-600 canary. The archive never holds the canary;
/// it holds what came before the swap, the levels above, and a note.
#[test]
fn level_swapped_for_a_symlink_mid_backup_never_archives_the_outside() {
    let t = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let canary = b"canary-5f1d0c2e-outside-the-volume";
    let root = t.path().join("vol");
    let mut p = root.clone();
    let mut o = outside.path().to_path_buf();
    for i in 0..30 {
        p.push(format!("d{i:02}"));
        o.push(format!("d{i:02}"));
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::create_dir_all(&o).expect("mkdir");
        std::fs::write(p.join("in.txt"), format!("inside {i}")).expect("write");
        std::fs::write(o.join("in.txt"), canary).expect("write");
        std::fs::set_permissions(o.join("in.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    }
    let level3 = root.join("d00/d01/d02/d03");
    let target = outside.path().join("d00/d01/d02/d03");
    let mut swapped = false;
    let mut out = Vec::new();
    let limits = WalkLimits { kept_fds: 4, ..WalkLimits::default() };
    let summary =
        write_archive_walking(&root, &mut out, &ArchiveOptions::default(), Arc::default(), limits, &mut |rel| {
            if !swapped && rel.iter().filter(|&&b| b == b'/').count() == 20 {
                std::fs::rename(&level3, root.join("moved")).expect("rename");
                std::os::unix::fs::symlink(&target, &level3).expect("symlink");
                swapped = true;
            }
        })
        .expect("archive");
    assert!(swapped);
    let tar = tar_of(&out);
    assert!(!contains(&tar, canary), "the outside canary is in the archive");
    assert!(contains(&tar, b"inside 28"), "entries below the swap, still held open, are archived");
    assert!(contains(&tar, b"inside 1\0"), "the levels above the swap are archived");
    let notes = summary.notes.join("\n");
    assert!(notes.contains("d00/d01/d02/d03: moved or replaced") && notes.contains("crash-consistent"), "{notes}");
}

/// An entry swapped between its listing and its look (file → symlink to the outside canary,
/// directory → symlink to the outside): archived as the symlink it now is, never followed.
#[test]
fn entries_swapped_for_symlinks_before_their_look_are_archived_as_symlinks() {
    let t = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let canary = b"canary-77a0-outside";
    std::fs::write(outside.path().join("secret"), canary).expect("write");
    let root = t.path().join("vol");
    std::fs::create_dir_all(root.join("a/sub")).expect("mkdir");
    std::fs::write(root.join("a/file"), b"inside").expect("write");
    let mut out = Vec::new();
    let summary = write_archive_walking(
        &root,
        &mut out,
        &ArchiveOptions::default(),
        Arc::default(),
        WalkLimits::default(),
        &mut |rel| {
            if rel == b"a" {
                std::fs::remove_file(root.join("a/file")).expect("rm");
                std::os::unix::fs::symlink(outside.path().join("secret"), root.join("a/file")).expect("symlink");
                std::fs::remove_dir(root.join("a/sub")).expect("rmdir");
                std::os::unix::fs::symlink(outside.path(), root.join("a/sub")).expect("symlink");
            }
        },
    )
    .expect("archive");
    assert!(!contains(&tar_of(&out), canary));
    let kinds: Vec<(String, EntryKind)> = summary.entries.iter().map(|e| (e.path.clone(), e.kind)).collect();
    assert!(kinds.contains(&("a/file".into(), EntryKind::Symlink)), "{kinds:?}");
    assert!(kinds.contains(&("a/sub".into(), EntryKind::Symlink)), "{kinds:?}");
}
