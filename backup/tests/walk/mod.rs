//! The walk under hostile writers: deep trees and levels swapped for symlinks while archiving.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use voltool_backup::{ArchiveOptions, verify_archive, walk, write_archive};

use super::{archive_to, restore_with_gnu_tar, snapshot};

/// `depth` nested directories `dNNN` under `root`, a file at each level; the deepest directory.
fn nested(root: &Path, depth: usize, content: &dyn Fn(usize) -> Vec<u8>) -> PathBuf {
    let mut p = root.to_path_buf();
    for i in 0..depth {
        p.push(format!("d{i:03}"));
        fs::create_dir_all(&p).expect("mkdir");
        fs::write(p.join("f.txt"), content(i)).expect("write");
    }
    p
}

/// More than three times the descriptors the walk keeps: it climbs back through re-opened levels.
#[test]
fn tree_200_levels_deep_backs_up_and_restores_exactly() {
    const { assert!(200 > 3 * walk::KEPT_FDS) };
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    let bottom = nested(&src, 200, &|i| format!("level {i}\n").into_bytes());
    fs::write(bottom.join("bottom.bin"), super::random_bytes(70_000, 3)).expect("write");
    symlink("../f.txt", bottom.join("up")).expect("symlink");
    let archive = work.path().join("deep.tar.zst");
    let manifest = archive_to(&src, &archive, &ArchiveOptions::default());
    assert_eq!(manifest.files, 201);
    assert_eq!(manifest.entries.len(), 200 + 200 + 2);
    assert!(manifest.notes.is_empty(), "{:?}", manifest.notes);
    verify_archive(File::open(&archive).expect("open"), &manifest).expect("verify");
    let dest = work.path().join("restored");
    fs::create_dir(&dest).expect("mkdir");
    restore_with_gnu_tar(&archive, &dest, "");
    assert_eq!(snapshot(&dest), snapshot(&src));
}

/// A thread swaps levels of a 100-level tree (above and below the kept descriptors) and files
/// for symlinks into an outside mirror holding a mode-600 canary at every level, while the
/// tree is archived again and again: no archive holds the canary, every archive is made, and
/// the canary is untouched.
#[test]
fn levels_swapped_for_symlinks_by_a_racing_thread_never_archive_the_outside() {
    let work = tempfile::tempdir().expect("tempdir");
    let outside = work.path().join("outside");
    let canary = b"canary-3b9e1f-host-only".to_vec();
    nested(&outside, 100, &|_| canary.clone());
    let mut p = outside.clone();
    for i in 0..100 {
        p.push(format!("d{i:03}"));
        fs::set_permissions(p.join("f.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let probe = outside.join("d000/f.txt");
    let before = fs::metadata(&probe).expect("stat");
    let root = work.path().join("vol");
    fs::create_dir(&root).expect("mkdir");
    nested(&root, 100, &|i| format!("inside {i}\n").into_bytes());
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (root, outside, stop, swaps) = (root.clone(), outside.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            let levels = [2usize, 30, 63, 64, 65, 80, 97];
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let level = levels[k % levels.len()];
                let rel: PathBuf = (0..=level).map(|i| format!("d{i:03}")).collect();
                // Alternately the directory itself and the file in it.
                let (inside, target) = if k.is_multiple_of(2) {
                    (root.join(&rel), outside.join(&rel))
                } else {
                    (root.join(&rel).join("f.txt"), outside.join(&rel).join("f.txt"))
                };
                let aside = inside.with_extension("aside");
                if fs::rename(&inside, &aside).is_ok() {
                    symlink(&target, &inside).expect("symlink");
                    std::thread::sleep(Duration::from_micros(50 * (k as u64 % 7)));
                    fs::remove_file(&inside).expect("unlink the symlink");
                    fs::rename(&aside, &inside).expect("rename back");
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
                k += 1;
                std::thread::yield_now();
            }
        })
    };
    let mut noted = 0;
    for run in 0..30 {
        let mut out = Vec::new();
        let summary = write_archive(&root, &mut out, &ArchiveOptions { threads: 2, ..Default::default() })
            .unwrap_or_else(|e| panic!("run {run}: {e}"));
        let tar = zstd::decode_all(out.as_slice()).expect("zstd");
        assert!(!tar.windows(canary.len()).any(|w| w == canary), "run {run}: the canary is in the archive");
        noted += usize::from(!summary.notes.is_empty());
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().expect("swapper");
    let after = fs::metadata(&probe).expect("stat");
    assert_eq!(fs::read(&probe).expect("read"), canary);
    assert_eq!((after.mode(), after.mtime(), after.mtime_nsec()), (before.mode(), before.mtime(), before.mtime_nsec()));
    eprintln!("{} swaps, {noted} of 30 archives noted a change", swaps.load(Ordering::Relaxed));
    assert!(swaps.load(Ordering::Relaxed) > 30, "the swapper hardly ran");
}

/// The "used bytes" of a volume's status (`walk::disk_usage`) while a thread swaps a level of a
/// 40-level tree for a symlink to an outside mirror holding a 4 MiB file at every level: the
/// outside is never counted (a walk by path, as before, went through the symlink and counted
/// the mirror's files below it).
#[test]
fn disk_usage_never_counts_a_directory_swapped_for_a_symlink() {
    const BIG: usize = 4 << 20;
    let work = tempfile::tempdir().expect("tempdir");
    let outside = work.path().join("outside");
    let mut p = nested(&outside, 40, &|_| Vec::new());
    for _ in 0..40 {
        fs::write(p.join("big.bin"), super::random_bytes(BIG, 5)).expect("write");
        p.pop();
    }
    let root = work.path().join("vol");
    fs::create_dir(&root).expect("mkdir");
    nested(&root, 40, &|i| format!("inside {i}\n").into_bytes());
    let inside = walk::disk_usage(&root, Duration::from_secs(30)).expect("usage");
    assert!(inside < BIG as u64, "{inside}");
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (root, outside, stop, swaps) = (root.clone(), outside.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let level = [1usize, 10, 20, 30][usize::try_from(k % 4).unwrap_or(0)];
                let rel: PathBuf = (0..=level).map(|i| format!("d{i:03}")).collect();
                let (dir, aside) = (root.join(&rel), root.join(&rel).with_extension("aside"));
                if fs::rename(&dir, &aside).is_ok() {
                    symlink(outside.join(&rel), &dir).expect("symlink");
                    std::thread::sleep(Duration::from_micros(20 * (k % 5)));
                    fs::remove_file(&dir).expect("unlink the symlink");
                    fs::rename(&aside, &dir).expect("rename back");
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
                k += 1;
                std::thread::yield_now();
            }
        })
    };
    let mut runs = 0;
    while runs < 300 {
        if let Some(used) = walk::disk_usage(&root, Duration::from_secs(30)) {
            assert!(used < BIG as u64, "run {runs}: {used} bytes counted, the outside's among them");
        }
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().expect("swapper");
    eprintln!("{} swaps during {runs} walks", swaps.load(Ordering::Relaxed));
    assert!(swaps.load(Ordering::Relaxed) > 30, "the swapper hardly ran");
}
