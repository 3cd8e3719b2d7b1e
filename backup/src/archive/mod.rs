//! Writing `ID.tar.zst`: walk the volume root, emit a pax tar, compress with zstd, hash it all.
//!
//! The walk is [`crate::walk`]'s: every entry is reached through its parent's descriptor,
//! never by path. Each entry is `lstat`ed, then opened where it is read (directories and
//! regular files), and archived as what the opened descriptor says it is: an entry swapped
//! for something else between the two (a symlink, a fifo, a device) is skipped with a note,
//! never followed. Extended attributes are read from the opened descriptor
//! (`flistxattr`/`fgetxattr`), so only directories and regular files carry them: symlinks and
//! fifos are never opened (a symlink cannot be without `O_PATH`, whose descriptors the xattr
//! calls refuse) and are archived without theirs.

//!
//! Layout: this file runs the walk and the pipeline and keeps the summary; `entry` archives one
//! entry (opening it, its header, xattrs and contents).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tar::Builder;

use crate::error::BackupError;
pub(crate) use crate::header::pax_time;
use crate::incremental::Previous;
use crate::manifest::{Entry, EntryList, ParentRef};
use crate::pipeline::{self, BlockWriter};
use crate::prefetch;
use crate::walk::{self, CRASH_CONSISTENT, TreeWalk, WalkLimits};

mod entry;

#[cfg(test)]
mod tests;

/// The most notes a summary keeps (a tree rewritten while it is archived could make one per
/// entry); past it they are counted.
const MAX_NOTES: usize = 1000;
/// How to compress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// zstd level, 1..=22 (default 3).
    pub level: i32,
    /// zstd worker threads; 0 or 1 compresses on the calling thread.
    pub threads: u32,
    /// Store extended attributes as pax `SCHILY.xattr.*` records (default true).
    pub xattrs: bool,
    /// Record every regular file's sha256 in the summary (default true; a backup's manifest
    /// needs them). Without, files have no digest: for a stream checked as a whole against
    /// its `archive_sha256` (a migration), hashing every file too would be work nobody uses.
    pub hash_files: bool,
    /// Make an incremental archive against this previous link (see [`crate::incremental`]);
    /// `None`: a full one.
    pub previous: Option<Arc<Previous>>,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        Self { level: 3, threads: 0, xattrs: true, hash_files: true, previous: None }
    }
}

/// What was archived: the data of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Every entry in archive order, compactly ([`EntryList::iter`] decodes them).
    pub entries: EntryList,
    /// Regular files (not counting hard links) and their content bytes.
    pub files: u64,
    pub bytes_in: u64,
    /// Size and lowercase hex sha256 of the compressed stream written to `out`.
    pub archive_size: u64,
    pub archive_sha256: String,
    /// Things skipped or noticed (devices, sockets, mount points, files changing while read).
    pub notes: Vec<String>,
    /// 0 for a full archive; the chain level of an incremental, and the link it follows.
    pub level: u32,
    pub parent: Option<ParentRef>,
    /// Entries an incremental found unchanged (listed in the manifest, not in the archive).
    pub unchanged: u64,
}

impl ArchiveSummary {
    /// Nothing archived yet, for a full archive or an incremental against `previous`.
    fn empty(previous: Option<&Previous>) -> Self {
        Self {
            entries: EntryList::new(),
            files: 0,
            bytes_in: 0,
            archive_size: 0,
            archive_sha256: String::new(),
            notes: Vec::new(),
            level: previous.map_or(0, Previous::level),
            parent: previous.map(|p| p.parent().clone()),
            unchanged: 0,
        }
    }
}

/// The walk's state: where it is, what it wrote, what it noticed.
struct Walk<'p> {
    root: PathBuf,
    root_dev: u64,
    opts: ArchiveOptions,
    builder: Builder<BlockWriter>,
    /// (dev, ino) of regular files with more than one link -> first archived path.
    links: HashMap<(u64, u64), Vec<u8>>,
    summary: ArchiveSummary,
    /// Entries found changed (skipped or read while written), and notes not kept.
    changed: u64,
    notes_dropped: u64,
    /// File content bytes read so far, for progress reports.
    progress: Arc<AtomicU64>,
    /// Entries done, for the read-ahead.
    lookahead: &'p prefetch::Progress,
    /// An incremental's children found unchanged when their directory was listed, by path:
    /// recorded from the previous manifest when the walk reaches them.
    unchanged: HashMap<Vec<u8>, Entry>,
}

/// Archives the directory tree at `root` into `out` as zstd-compressed pax tar.
///
/// Entries are written in sorted-name, depth-first order; symlinks are not followed and mount
/// points are archived as empty directories without their contents. Every regular file is
/// read once, streamed, and hashed on the way. The root directory itself is not an entry.
/// Entries moved or replaced while the walk runs are skipped with a note (see [`crate::walk`]).
///
/// Errors: [`BackupError::Options`] for a bad level, [`BackupError::Root`] when `root` is not
/// a directory, [`BackupError::Read`] naming the path that could not be read,
/// [`BackupError::TooDeep`] / [`BackupError::PathTooLong`] for an entry past the walk's
/// limits, [`BackupError::Write`] when `out` (or zstd) fails.
pub fn write_archive<W: Write + Send>(
    root: &Path,
    out: W,
    opts: &ArchiveOptions,
) -> Result<ArchiveSummary, BackupError> {
    write_archive_with_progress(root, out, opts, Arc::default())
}

/// [`write_archive`], adding every file content byte read to `progress` as it goes (another
/// thread may watch it to show a progress bar).
///
/// Three threads of its own besides zstd's workers, all ended before it returns: this one
/// walks and reads, one compresses, hashes and writes ([`crate::pipeline`]), one reads ahead
/// ([`crate::prefetch`]).
pub fn write_archive_with_progress<W: Write + Send>(
    root: &Path,
    out: W,
    opts: &ArchiveOptions,
    progress: Arc<AtomicU64>,
) -> Result<ArchiveSummary, BackupError> {
    write_archive_walking(root, out, opts, progress, WalkLimits::default(), &mut |_| {})
}

/// [`write_archive_with_progress`] with the walk's limits, calling `before` with each entry's
/// relative path before it is looked at (tests change the tree there).
pub(crate) fn write_archive_walking<W: Write + Send>(
    root: &Path,
    out: W,
    opts: &ArchiveOptions,
    progress: Arc<AtomicU64>,
    limits: WalkLimits,
    before: &mut dyn FnMut(&[u8]),
) -> Result<ArchiveSummary, BackupError> {
    if !(1..=22).contains(&opts.level) {
        return Err(BackupError::Options(format!("zstd level {} is not in 1..=22", opts.level)));
    }
    let (root_dir, root_st) = walk::open_root(root)?;
    let root_listing = match &opts.previous {
        Some(prev) => Some(
            crate::incremental::list_dir(root_dir.as_fd(), b"", prev)
                .map_err(|e| BackupError::Read { path: root.into(), source: e.into() })?,
        ),
        None => None,
    };
    // The read-ahead's own descriptor of the root: its own directory stream offset.
    let ahead_dir =
        nix::fcntl::openat(&root_dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| BackupError::Read { path: root.into(), source: e.into() })?;
    let (tree, root_dumpdir, unchanged) = match root_listing {
        Some(l) => {
            let (names, unchanged) = children(l.children, b"");
            (TreeWalk::new_listed(root, root_dir, &root_st, limits, names), Some(l.dumpdir), unchanged)
        }
        None => (TreeWalk::new(root, root_dir, &root_st, limits)?, None, HashMap::new()),
    };
    let (blocks, compressor) = pipeline::pipeline();
    let lookahead = &prefetch::Progress::default();
    let (level, threads) = (opts.level, opts.threads);
    std::thread::scope(|s| {
        let compressing = std::thread::Builder::new()
            .name("voltool-zstd".into())
            .spawn_scoped(s, || compressor.run(out, level, threads))
            .map_err(BackupError::Write)?;
        // Read-ahead is only a hint: without the thread the archive is the same, just slower.
        // Not for an incremental: it would open every file, and only the few that changed are
        // read.
        let reading_ahead = match opts.previous {
            None => std::thread::Builder::new()
                .name("voltool-readahead".into())
                .spawn_scoped(s, move || prefetch::run(root, ahead_dir, &root_st, lookahead))
                .ok(),
            Some(_) => None,
        };
        let stop_reading_ahead = prefetch::StopOnDrop(lookahead);
        let mut walk = Walk {
            root: root.to_path_buf(),
            root_dev: root_st.st_dev,
            opts: opts.clone(),
            builder: Builder::new(blocks),
            links: HashMap::new(),
            progress,
            lookahead,
            changed: 0,
            notes_dropped: 0,
            unchanged,
            summary: ArchiveSummary::empty(opts.previous.as_deref()),
        };
        let walked = match root_dumpdir {
            Some(d) => walk.root_entry(&root_st.into(), d).and_then(|()| walk.run(tree, before)),
            None => walk.run(tree, before),
        };
        // The walker's end of the pipeline goes away here whatever happened, so that the
        // compressor sees the end of the stream (joining it first would wait forever).
        let builder = walk.builder;
        let walked = match walked {
            Ok(()) => builder.into_inner().and_then(BlockWriter::finish).map_err(BackupError::Write),
            Err(e) => {
                drop(builder);
                Err(e)
            }
        };
        drop(stop_reading_ahead);
        if let Some(t) = reading_ahead {
            let _ = t.join();
        }
        let compressed =
            compressing.join().map_err(|_| BackupError::Write(io::Error::other("the compressor panicked")));
        match (walked, compressed) {
            (Ok(()), Ok(Ok((_out, size, sha, frames)))) => {
                let mut summary = walk.summary;
                summary.archive_size = size;
                summary.archive_sha256 = sha;
                let level = summary.level;
                summary.entries.locate(frames, crate::frames::FRAME as u64, level);
                Ok(summary)
            }
            // The compressor's error is the cause when the walker only saw it stop.
            (Err(BackupError::Write(_)) | Ok(()), Ok(Err(e))) => Err(BackupError::Write(e)),
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        }
    })
}

impl Walk<'_> {
    fn run(&mut self, mut tree: TreeWalk, before: &mut dyn FnMut(&[u8])) -> Result<(), BackupError> {
        let mut notes = Vec::new();
        let mut done = 0u64;
        loop {
            let item = tree.next(&mut notes)?;
            for n in notes.drain(..) {
                self.note(n);
            }
            let Some(item) = item else { break };
            before(item.rel);
            let descend = match self.unchanged.remove(item.rel) {
                Some(e) => {
                    self.summary.entries.push(&e);
                    self.summary.unchanged += 1;
                    None
                }
                None => self.entry(item.parent, item.name, item.rel)?,
            };
            done += 1;
            self.lookahead.done.store(done, Ordering::Relaxed);
            match descend {
                Some(Descend { dir, dev, ino, names: Some(names) }) => tree.enter_listed(dir, dev, ino, names),
                Some(Descend { dir, dev, ino, names: None }) => tree.enter(dir, dev, ino)?,
                None => {}
            }
        }
        if self.changed > 0 {
            let n = self.changed;
            self.note(format!("{n} entries changed while being archived; {CRASH_CONSISTENT}"));
        }
        if self.notes_dropped > 0 {
            let n = self.notes_dropped;
            self.summary.notes.push(format!("{n} more notes not kept"));
        }
        Ok(())
    }

    fn note(&mut self, note: String) {
        if self.summary.notes.len() < MAX_NOTES {
            self.summary.notes.push(note);
        } else {
            self.notes_dropped += 1;
        }
    }

    fn read_err(&self, rel: &[u8], source: io::Error) -> BackupError {
        BackupError::Read { path: walk::shown(&self.root, rel), source }
    }

    /// An incremental's first entry: the root itself as `./`, with its listing.
    fn root_entry(&mut self, st: &crate::header::Stat, dumpdir: Vec<u8>) -> Result<(), BackupError> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        let mut pax = vec![("GNU.dumpdir".to_owned(), dumpdir)];
        crate::header::fill_header(&mut header, &mut pax, b".", st, 0, None);
        header.as_old_mut().name[..3].copy_from_slice(b"./\0");
        let records = pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        self.builder.append_pax_extensions(records).map_err(BackupError::Write)?;
        header.set_cksum();
        self.builder.append(&header, io::empty()).map_err(BackupError::Write)
    }
}

/// A directory the walk enters next: its descriptor and identity, and its names when an
/// incremental listed them already.
pub(super) struct Descend {
    pub(super) dir: OwnedFd,
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) names: Option<Vec<OsString>>,
}

/// The names of an incremental's listing of the directory `rel`, and its unchanged children
/// by path.
pub(super) fn children(listed: Vec<(OsString, Option<Entry>)>, rel: &[u8]) -> (Vec<OsString>, HashMap<Vec<u8>, Entry>) {
    let mut unchanged = HashMap::new();
    let names = listed
        .into_iter()
        .map(|(name, e)| {
            if let Some(e) = e {
                let mut path = rel.to_vec();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name.as_bytes());
                unchanged.insert(path, e);
            }
            name
        })
        .collect();
    (names, unchanged)
}
