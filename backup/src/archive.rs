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

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, PosixFadviseAdvice, posix_fadvise};
use nix::sys::stat::{Mode, SFlag};
use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};
use xattr::FileExt;

use crate::error::BackupError;
pub(crate) use crate::header::pax_time;
use crate::header::{Stat, fill_header};
use crate::manifest::{Entry, EntryKind, EntryList};
use crate::pipeline::{self, BlockWriter};
use crate::prefetch;
use crate::walk::{self, CRASH_CONSISTENT, TreeWalk, WalkLimits};

/// The most notes a summary keeps (a tree rewritten while it is archived could make one per
/// entry); past it they are counted.
const MAX_NOTES: usize = 1000;
/// The most extended attributes archived per entry, and their names and values together in
/// bytes: past either, the rest of the entry's xattrs are skipped with a note (a restore
/// refuses entries with more, and a pax header is held in memory whole).
const MAX_XATTRS: usize = 256;
const MAX_XATTR_BYTES: usize = 256 << 10;

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
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        Self { level: 3, threads: 0, xattrs: true, hash_files: true }
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
}

/// A writer that hashes and counts everything passed through to `inner`.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0 }
    }

    pub(crate) fn finish(self) -> (W, u64, String) {
        (self.inner, self.count, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What an entry is, as found when opened.
enum Found {
    /// A directory: open to be entered, or `None` for a mount point (archived empty).
    Dir {
        st: Stat,
        dir: Option<File>,
    },
    File {
        st: Stat,
        file: File,
    },
    Symlink {
        st: Stat,
        target: Vec<u8>,
    },
    Fifo {
        st: Stat,
    },
    /// Nothing to archive (a note says why).
    Skip,
}

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
    // The read-ahead's own descriptor of the root: its own directory stream offset.
    let ahead_dir =
        nix::fcntl::openat(&root_dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| BackupError::Read { path: root.into(), source: e.into() })?;
    let tree = TreeWalk::new(root, root_dir, &root_st, limits)?;
    let (blocks, compressor) = pipeline::pipeline();
    let lookahead = &prefetch::Progress::default();
    let (level, threads) = (opts.level, opts.threads);
    std::thread::scope(|s| {
        let compressing = std::thread::Builder::new()
            .name("voltool-zstd".into())
            .spawn_scoped(s, || compressor.run(out, level, threads))
            .map_err(BackupError::Write)?;
        // Read-ahead is only a hint: without the thread the archive is the same, just slower.
        let reading_ahead = std::thread::Builder::new()
            .name("voltool-readahead".into())
            .spawn_scoped(s, move || prefetch::run(root, ahead_dir, &root_st, lookahead))
            .ok();
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
            summary: ArchiveSummary {
                entries: EntryList::new(),
                files: 0,
                bytes_in: 0,
                archive_size: 0,
                archive_sha256: String::new(),
                notes: Vec::new(),
            },
        };
        let walked = walk.run(tree, before);
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
            (Ok(()), Ok(Ok((_out, size, sha)))) => {
                let mut summary = walk.summary;
                summary.archive_size = size;
                summary.archive_sha256 = sha;
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
            let descend = self.entry(item.parent, item.name, item.rel)?;
            done += 1;
            self.lookahead.done.store(done, Ordering::Relaxed);
            if let Some((dir, dev, ino)) = descend {
                tree.enter(dir, dev, ino)?;
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

    /// Notes an entry that changed under the walk and was skipped.
    fn changed(&mut self, rel: &[u8], what: &str) -> Found {
        self.changed += 1;
        self.note(format!("{}: {what} while being archived, skipped", String::from_utf8_lossy(rel)));
        Found::Skip
    }

    fn read_err(&self, rel: &[u8], source: io::Error) -> BackupError {
        BackupError::Read { path: walk::shown(&self.root, rel), source }
    }

    /// Looks at the entry `name` of `parent` and opens what is read through a descriptor.
    fn inspect(&mut self, parent: BorrowedFd<'_>, name: &OsStr, rel: &[u8]) -> Result<Found, BackupError> {
        let lst: Stat = match walk::stat_at(parent, name) {
            Ok(st) => st.into(),
            Err(Errno::ENOENT) => return Ok(self.changed(rel, "removed")),
            Err(e) => return Err(self.read_err(rel, e.into())),
        };
        let mount_point = |w: &mut Self, st: Stat| {
            w.note(format!("{}: mount point, archived as an empty directory", String::from_utf8_lossy(rel)));
            Ok(Found::Dir { st, dir: None })
        };
        match lst.kind {
            SFlag::S_IFDIR if lst.dev != self.root_dev => mount_point(self, lst),
            SFlag::S_IFDIR => match walk::open_dir_at(parent, name) {
                Ok(fd) => {
                    let dir = File::from(fd);
                    let st = nix::sys::stat::fstat(&dir).map_err(|e| self.read_err(rel, e.into()))?;
                    Ok(Found::Dir { st: st.into(), dir: Some(dir) })
                }
                Err(Errno::EXDEV) => mount_point(self, lst),
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => {
                    Ok(self.changed(rel, "directory replaced by something else"))
                }
                Err(e) => Err(self.read_err(rel, e.into())),
            },
            SFlag::S_IFLNK => match nix::fcntl::readlinkat(parent, name) {
                Ok(t) => Ok(Found::Symlink { st: lst, target: std::os::unix::ffi::OsStringExt::into_vec(t) }),
                Err(Errno::ENOENT | Errno::EINVAL) => Ok(self.changed(rel, "symlink replaced by something else")),
                Err(e) => Err(self.read_err(rel, e.into())),
            },
            SFlag::S_IFIFO => Ok(Found::Fifo { st: lst }),
            SFlag::S_IFREG => match walk::open_file_at(parent, name) {
                Ok(file) => {
                    let st: Stat = nix::sys::stat::fstat(&file).map_err(|e| self.read_err(rel, e.into()))?.into();
                    if st.kind != SFlag::S_IFREG {
                        return Ok(self.changed(rel, "file replaced by something else"));
                    }
                    Ok(Found::File { st, file })
                }
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENXIO) => {
                    Ok(self.changed(rel, "file replaced by something else"))
                }
                Err(e) => Err(self.read_err(rel, e.into())),
            },
            kind => {
                let what = if kind == SFlag::S_IFSOCK { "socket" } else { "device node" };
                self.note(format!("{}: {what} skipped", String::from_utf8_lossy(rel)));
                Ok(Found::Skip)
            }
        }
    }

    /// Archives one entry; returns the directory's descriptor and identity when it is one to
    /// enter.
    fn entry(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
    ) -> Result<Option<(OwnedFd, u64, u64)>, BackupError> {
        let (kind, st, opened, link_target) = match self.inspect(parent, name, rel)? {
            Found::Skip => return Ok(None),
            Found::Dir { st, dir } => (EntryKind::Dir, st, dir, None),
            Found::Symlink { st, target } => (EntryKind::Symlink, st, None, Some(target)),
            Found::Fifo { st } => (EntryKind::Fifo, st, None, None),
            Found::File { st, file } => match self.links.get(&(st.dev, st.ino)) {
                Some(first) if st.nlink > 1 => (EntryKind::Hardlink, st, None, Some(first.clone())),
                _ => {
                    if st.nlink > 1 {
                        self.links.insert((st.dev, st.ino), rel.to_vec());
                    }
                    (EntryKind::File, st, Some(file), None)
                }
            },
        };
        let display = String::from_utf8_lossy(rel);
        let mut header = Header::new_ustar();
        header.set_entry_type(match kind {
            EntryKind::File => EntryType::Regular,
            EntryKind::Dir => EntryType::Directory,
            EntryKind::Symlink => EntryType::Symlink,
            EntryKind::Hardlink => EntryType::Link,
            EntryKind::Fifo => EntryType::Fifo,
        });
        let size = if kind == EntryKind::File { st.size } else { 0 };
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        fill_header(&mut header, &mut pax, rel, &st, size, link_target.as_deref());
        if self.opts.xattrs
            && let Some(f) = &opened
        {
            self.xattrs(f, &display, &mut pax);
        }
        if !pax.is_empty() {
            let records = pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            self.builder.append_pax_extensions(records).map_err(BackupError::Write)?;
        }
        header.set_cksum();
        let mut sha256 = None;
        let mut descend = None;
        match (kind, opened) {
            (EntryKind::File, Some(file)) => {
                sha256 = self.append_file(file, &st, &header, rel, &display)?;
                self.summary.files += 1;
                self.summary.bytes_in += size;
            }
            (_, dir) => {
                self.builder.append(&header, io::empty()).map_err(BackupError::Write)?;
                descend = dir.map(|d| (OwnedFd::from(d), st.dev, st.ino));
            }
        }
        self.summary.entries.push(&Entry {
            path: display.into_owned(),
            kind,
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            size,
            mtime: st.mtime,
            mtime_nsec: st.mtime_nsec,
            sha256: sha256.map(hex::encode),
            target: link_target.as_deref().map(|t| String::from_utf8_lossy(t).into_owned()),
        });
        Ok(descend)
    }

    /// The extended attributes of an open file or directory (flistxattr(2), fgetxattr(2)),
    /// at most [`MAX_XATTRS`] and [`MAX_XATTR_BYTES`].
    fn xattrs(&mut self, file: &File, display: &str, pax: &mut Vec<(String, Vec<u8>)>) {
        let names = match file.list_xattr() {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::Unsupported || e.raw_os_error() == Some(nix::libc::ENOTSUP) => {
                return;
            }
            Err(e) => {
                self.note(format!("{display}: extended attributes not readable: {e}"));
                return;
            }
        };
        let mut names: Vec<OsString> = names.collect();
        names.sort();
        let (mut count, mut bytes) = (0usize, 0usize);
        for name in names {
            let Some(key) = name.to_str() else {
                self.note(format!("{display}: xattr with a non-UTF-8 name skipped"));
                continue;
            };
            match file.get_xattr(&name) {
                Ok(Some(value)) => {
                    count += 1;
                    bytes += key.len() + value.len();
                    if count > MAX_XATTRS || bytes > MAX_XATTR_BYTES {
                        self.note(format!(
                            "{display}: more than {MAX_XATTRS} extended attributes or {MAX_XATTR_BYTES} bytes of them, the rest from {key} on skipped"
                        ));
                        return;
                    }
                    pax.push((format!("SCHILY.xattr.{key}"), value));
                }
                Ok(None) => {}
                Err(e) => self.note(format!("{display}: xattr {key} not readable: {e}")),
            }
        }
    }

    /// Streams one regular file into the archive (header, exactly `meta.size` bytes, padding)
    /// and returns its sha256 (unless files are not hashed). The bytes are read straight into
    /// the pipeline's block and hashed there; a file that shrank is zero-padded and the hash
    /// covers the padding.
    fn append_file(
        &mut self,
        mut file: File,
        meta: &Stat,
        header: &Header,
        rel: &[u8],
        display: &str,
    ) -> Result<Option<[u8; 32]>, BackupError> {
        let hash = self.opts.hash_files;
        let out = self.builder.get_mut();
        out.write_all(header.as_bytes()).map_err(BackupError::Write)?;
        if meta.size >= ADVISE_FROM {
            // Large files: ask for sequential read-ahead (a larger kernel window; posix_fadvise(2)).
            let _ = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
        }
        let mut hasher = Sha256::new();
        let mut remaining = meta.size;
        let mut padded = false;
        while remaining > 0 {
            let spare = out.spare().map_err(BackupError::Write)?;
            let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(spare.len());
            let mut n = 0;
            while !padded {
                match file.read(&mut spare[..want]) {
                    Ok(0) => padded = true,
                    Ok(k) => {
                        n = k;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => return Err(self.read_err(rel, source)),
                }
            }
            if padded {
                spare[..want].fill(0);
                n = want;
            }
            if hash {
                hasher.update(&spare[..n]);
            }
            out.advance(n);
            remaining -= n as u64;
            self.progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        let tail = (meta.size % 512) as usize;
        if tail != 0 {
            out.write_all(&[0u8; 512][tail..]).map_err(BackupError::Write)?;
        }
        let after = file.metadata().map_err(|e| self.read_err(rel, e))?;
        if padded {
            self.changed += 1;
            self.note(format!("{display}: shrank while being read, zero-padded to {} bytes", meta.size));
        } else if after.len() != meta.size
            || after.mtime() != meta.mtime
            || u32::try_from(after.mtime_nsec()).unwrap_or(0) != meta.mtime_nsec
        {
            self.changed += 1;
            self.note(format!("{display}: changed while being read"));
        }
        Ok(hash.then(|| hasher.finalize().into()))
    }
}

/// Files at least this large are read with `POSIX_FADV_SEQUENTIAL`.
const ADVISE_FROM: u64 = 1 << 20;

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
