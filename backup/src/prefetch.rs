//! Read-ahead for the archiver: a thread that walks the volume in the archiver's own order a
//! little ahead of it and asks the kernel to start reading what comes next.
//!
//! Why: on a cold page cache, archiving many small files is bound by one synchronous disk
//! read after another (the directory, the inode, the data block of every file), as for
//! `tar`. This thread lists the directories and stats the entries before the archiver gets
//! there (warming the dentry and inode caches), and opens each upcoming regular file and
//! calls `posix_fadvise(POSIX_FADV_WILLNEED)` on its first bytes, which queues the reads
//! without waiting for them (posix_fadvise(2)): the disk sees many requests at once and the
//! archiver finds the data in the page cache.
//!
//! It is only a hint: it never reads file contents into this process, so memory stays
//! constant, and every error is ignored (the archiver reports its own). It stays at most
//! [`WINDOW_ENTRIES`] entries and [`WINDOW_BYTES`] of advised data ahead of the archiver, so it
//! does not flush the page cache of a large volume, and stops as soon as the archiver is done.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{OFlag, PosixFadviseAdvice, posix_fadvise};
use nix::sys::stat::SFlag;

use crate::archive::{MAX_OPEN_DEPTH, list_dir, open_at, stat_at};

/// How far ahead of the archiver the read-ahead may be, in entries and in advised bytes.
pub(crate) const WINDOW_ENTRIES: u64 = 2048;
pub(crate) const WINDOW_BYTES: u64 = 32 << 20;
/// The most of one file advised ahead (the kernel's own read-ahead takes over while the
/// archiver reads a large file sequentially).
const FILE_BYTES: u64 = 4 << 20;
/// How long the read-ahead sleeps when it is far enough ahead.
const PAUSE: Duration = Duration::from_micros(500);

/// What the archiver and the read-ahead share.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Entries the archiver has finished (same numbering as the read-ahead's walk).
    pub done: AtomicU64,
    /// Set when the archiver finished or failed.
    pub stop: AtomicBool,
}

/// Sets [`Progress::stop`] when dropped, so the read-ahead ends even if the archiver
/// unwinds (a scoped thread waiting for it would otherwise never be joined).
pub(crate) struct StopOnDrop<'a>(pub &'a Progress);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Walks `root` like the archiver (sorted names, depth-first, not into other devices) and
/// advises the kernel to read upcoming files, until the walk ends or `shared.stop` is set.
pub(crate) fn run(root: &Path, root_dev: u64, shared: &Progress) {
    let Ok(root_dir) = open_at(nix::fcntl::AT_FDCWD, root, OFlag::O_DIRECTORY) else { return };
    let Ok(mut names) = list_dir(root) else { return };
    names.reverse();
    let mut stack: Vec<(File, PathBuf, Vec<OsString>)> = vec![(root_dir, root.to_path_buf(), names)];
    // (entry number, advised bytes) of what is ahead of the archiver.
    let mut ahead: VecDeque<(u64, u64)> = VecDeque::new();
    let mut ahead_bytes = 0u64;
    let mut seen = 0u64;
    loop {
        let depth = stack.len();
        let Some((dir, path, names)) = stack.last_mut() else { break };
        let Some(name) = names.pop() else {
            stack.pop();
            continue;
        };
        seen += 1;
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let done = shared.done.load(Ordering::Relaxed);
            while ahead.front().is_some_and(|&(n, _)| n <= done) {
                if let Some((_, b)) = ahead.pop_front() {
                    ahead_bytes -= b;
                }
            }
            if seen <= done + WINDOW_ENTRIES && ahead_bytes < WINDOW_BYTES {
                break;
            }
            std::thread::park_timeout(PAUSE);
        }
        let Ok(st) = stat_at(dir.as_fd(), name.as_bytes()) else { continue };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        // Past the archiver's descriptor depth, stop descending rather than hold more descriptors.
        if kind == SFlag::S_IFDIR && st.st_dev == root_dev && depth < MAX_OPEN_DEPTH {
            let Ok(sub) = open_at(dir.as_fd(), Path::new(&name), OFlag::O_DIRECTORY) else { continue };
            let sub_path = path.join(&name);
            let Ok(mut names) = list_dir(&sub_path) else { continue };
            names.reverse();
            stack.push((sub, sub_path, names));
        } else if kind == SFlag::S_IFREG && st.st_size > 0 {
            let Ok(file) = open_at(dir.as_fd(), Path::new(&name), OFlag::O_NONBLOCK) else { continue };
            let len = u64::try_from(st.st_size).unwrap_or(0).min(FILE_BYTES);
            let _ = posix_fadvise(&file, 0, i64::try_from(len).unwrap_or(0), PosixFadviseAdvice::POSIX_FADV_WILLNEED);
            ahead.push_back((seen, len));
            ahead_bytes += len;
        }
    }
}
