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
//! It starts only once the archiver finds a file whose first bytes are not in the page cache
//! ([`Progress::wanted`]): on a warm cache it would only spend CPU the compressor needs (on a
//! 2-CPU host, ~10% of a backup's CPU time: opening and advising every file again).
//!
//! It is only a hint: it never reads file contents into this process, so memory stays
//! constant, and every error is ignored (the archiver reports its own). It stays at most
//! [`WINDOW_ENTRIES`] entries and [`WINDOW_BYTES`] of advised data ahead of the archiver, so it
//! does not flush the page cache of a large volume, and stops as soon as the archiver is done.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use nix::sys::stat::{FileStat, SFlag};

use crate::walk::{self, TreeWalk, WalkLimits};

/// How far ahead of the archiver the read-ahead may be, in entries and in advised bytes.
pub(crate) const WINDOW_ENTRIES: u64 = 2048;
pub(crate) const WINDOW_BYTES: u64 = 32 << 20;
/// The most of one file advised ahead (the kernel's own read-ahead takes over while the
/// archiver reads a large file sequentially).
const FILE_BYTES: u64 = 4 << 20;
/// How long the read-ahead sleeps when it is far enough ahead.
const PAUSE: Duration = Duration::from_micros(500);
/// How long it sleeps between looks at [`Progress::wanted`] before it is wanted.
const DORMANT: Duration = Duration::from_millis(2);

/// What the archiver and the read-ahead share.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Entries the archiver has finished (same numbering as the read-ahead's walk).
    pub done: AtomicU64,
    /// Set when the archiver finished or failed.
    pub stop: AtomicBool,
    /// Set by the archiver once its reads often wait for the disk: read-ahead pays from then on.
    pub wanted: AtomicBool,
    /// How often the archiver's reads found their data missing, decaying
    /// ([`Progress::note_read`]); written by the archiver only.
    misses: AtomicU32,
}

/// [`Progress::misses`] of a run of reads that all miss: each miss adds `MISS`, each read
/// takes 1/64 off, so the score settles at `64 * MISS` times the rate of misses.
const MISS: u32 = 64;
/// The score that wakes the read-ahead: about a quarter of the recent reads missing (some 20
/// misses in a row on a cold cache). A warm cache has a few spurious misses (`RWF_NOWAIT`
/// also gives up on a page being read ahead): ~0.5% measured on 20k files read twice.
const WAKE: u32 = 16 * MISS;

impl Progress {
    /// Counts one read by the archiver that found (`missed`) or did not find its data
    /// missing from the page cache, and wakes the read-ahead when misses are frequent.
    pub(crate) fn note_read(&self, missed: bool) {
        let s = self.misses.load(Ordering::Relaxed);
        let s = s - s / 64 + if missed { MISS } else { 0 };
        self.misses.store(s, Ordering::Relaxed);
        if s >= WAKE {
            self.wanted.store(true, Ordering::Relaxed);
        }
    }
}

/// Sets [`Progress::stop`] when dropped, so the read-ahead ends even if the archiver
/// unwinds (a scoped thread waiting for it would otherwise never be joined).
pub(crate) struct StopOnDrop<'a>(pub &'a Progress);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Directory descriptors the read-ahead keeps besides the root's (it re-opens the others as
/// the archiver does, see [`crate::walk`]).
const KEPT_FDS: usize = 16;

/// Walks the tree of `dir` (the root `root`, `st` its `fstat`) like the archiver (sorted
/// names, depth-first, through descriptors, not into other mounts) and advises the kernel to
/// read upcoming files, until the walk ends or `shared.stop` is set.
pub(crate) fn run(root: &Path, dir: OwnedFd, st: &FileStat, shared: &Progress) {
    while !shared.wanted.load(Ordering::Relaxed) {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::park_timeout(DORMANT);
    }
    let limits = WalkLimits { kept_fds: KEPT_FDS, ..WalkLimits::default() };
    let root_dev = st.st_dev;
    let Ok(mut tree) = TreeWalk::new(root, dir, st, limits) else { return };
    let mut notes = Vec::new();
    // (entry number, advised bytes) of what is ahead of the archiver.
    let mut ahead: VecDeque<(u64, u64)> = VecDeque::new();
    let mut ahead_bytes = 0u64;
    let mut seen = 0u64;
    loop {
        let Ok(Some(item)) = tree.next(&mut notes) else { return };
        notes.clear();
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
        let Ok(st) = walk::stat_at(item.parent, item.name) else { continue };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        // Behind the archiver (it woke up late): only follow the walk to where it is.
        let behind = seen <= shared.done.load(Ordering::Relaxed);
        if kind == SFlag::S_IFDIR && st.st_dev == root_dev {
            let Ok(sub) = walk::open_dir_at(item.parent, item.name) else { continue };
            let Ok(now) = nix::sys::stat::fstat(&sub) else { continue };
            // A directory that cannot be listed is not entered (the archiver reports it).
            let _ = tree.enter(sub, now.st_dev, now.st_ino);
        } else if kind == SFlag::S_IFREG && st.st_size > 0 && !behind {
            let Ok(file) = walk::open_file_at(item.parent, item.name) else { continue };
            let len = u64::try_from(st.st_size).unwrap_or(0).min(FILE_BYTES);
            let _ = posix_fadvise(&file, 0, i64::try_from(len).unwrap_or(0), PosixFadviseAdvice::POSIX_FADV_WILLNEED);
            ahead.push_back((seen, len));
            ahead_bytes += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_cache_wakes_the_read_ahead_within_twenty_reads_and_a_warm_one_never() {
        let cold = Progress::default();
        let woke = (1..=100).find(|_| {
            cold.note_read(true);
            cold.wanted.load(Ordering::Relaxed)
        });
        assert!(woke.is_some_and(|n| n <= 20), "{woke:?}");

        // A warm cache: 1 spurious miss in 50 reads, a whole run of them long.
        let warm = Progress::default();
        for i in 0..100_000 {
            warm.note_read(i % 50 == 0);
        }
        assert!(!warm.wanted.load(Ordering::Relaxed));

        // Warm, then a cold part: woken soon after it starts.
        let mixed = Progress::default();
        for i in 0..10_000 {
            mixed.note_read(i % 50 == 0);
        }
        let woke = (1..=100).find(|_| {
            mixed.note_read(true);
            mixed.wanted.load(Ordering::Relaxed)
        });
        assert!(woke.is_some_and(|n| n <= 20), "{woke:?}");
    }
}
