//! Writing `ID.tar.zst`: walk the volume root, emit a pax tar, compress with zstd, hash it all.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, PosixFadviseAdvice, posix_fadvise};
use nix::sys::stat::{FileStat, Mode, SFlag};
use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};
use xattr::FileExt;

use crate::error::BackupError;
use crate::manifest::{Entry, EntryKind, EntryList};
use crate::pipeline::{self, BlockWriter};
use crate::prefetch;

/// The largest value the ustar octal fields hold without an extension (size: 8 GiB - 1).
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;
/// The largest uid/gid a ustar header holds in octal.
const USTAR_MAX_ID: u32 = 0o7_777_777;

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

/// A directory being walked: its relative path ("" for the root), an open descriptor (none
/// past [`MAX_OPEN_DEPTH`]) and its remaining names, reversed so `pop` yields them in order.
struct Frame {
    rel: Vec<u8>,
    dir: Option<File>,
    names: Vec<OsString>,
}

/// Directories deeper than this are worked on by full path instead of through a descriptor,
/// so a very deep tree cannot exhaust the process's descriptors.
pub(crate) const MAX_OPEN_DEPTH: usize = 64;

/// The `lstat` fields the archiver uses.
struct Stat {
    kind: SFlag,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
    dev: u64,
    ino: u64,
    nlink: u64,
}

impl From<FileStat> for Stat {
    fn from(st: FileStat) -> Self {
        Self {
            kind: SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime,
            mtime_nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
            dev: st.st_dev,
            ino: st.st_ino,
            nlink: st.st_nlink,
        }
    }
}

/// `openat(dir, path, O_RDONLY|O_NOFOLLOW|O_CLOEXEC|extra)` (openat(2)): relative to an open
/// directory, so the kernel resolves one name instead of the whole path, and never through a
/// symlink swapped in since the stat.
pub(crate) fn open_at(dir: BorrowedFd<'_>, path: &Path, extra: OFlag) -> nix::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | extra;
    nix::fcntl::openat(dir, path, flags, Mode::empty()).map(File::from)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)` (fstatat(2)): an lstat relative to an open directory.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<FileStat> {
    nix::sys::stat::fstatat(dir, OsStr::from_bytes(name), AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// The names in a directory (without `.` and `..`), sorted bytewise. By path: nix's
/// directory stream is not among the features this workspace builds, and one path lookup per
/// directory costs little next to one per entry.
pub(crate) fn list_dir(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name());
    }
    names.sort();
    Ok(names)
}

/// Where extended attributes are read from: an open file or directory, or a path (symlinks,
/// fifos, mount points: never opened).
enum XattrSource<'a> {
    Fd(&'a File),
    Path(&'a Path),
}

struct Walk<'p> {
    root: PathBuf,
    root_dev: u64,
    opts: ArchiveOptions,
    builder: Builder<BlockWriter>,
    /// (dev, ino) of regular files with more than one link -> first archived path.
    links: HashMap<(u64, u64), Vec<u8>>,
    summary: ArchiveSummary,
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
///
/// Errors: [`BackupError::Options`] for a bad level, [`BackupError::Root`] when `root` is not
/// a directory, [`BackupError::Read`] naming the path that could not be read,
/// [`BackupError::Write`] when `out` (or zstd) fails.
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
    if !(1..=22).contains(&opts.level) {
        return Err(BackupError::Options(format!("zstd level {} is not in 1..=22", opts.level)));
    }
    let root_meta = fs::symlink_metadata(root).map_err(|source| BackupError::Read { path: root.into(), source })?;
    if !root_meta.is_dir() {
        return Err(BackupError::Root { path: root.into(), reason: "not a directory".into() });
    }
    let root_dir = open_at(AT_FDCWD, root, OFlag::O_DIRECTORY)
        .map_err(|e| BackupError::Read { path: root.into(), source: e.into() })?;
    let (blocks, compressor) = pipeline::pipeline();
    let lookahead = &prefetch::Progress::default();
    let (level, threads) = (opts.level, opts.threads);
    std::thread::scope(|s| {
        let compressing = std::thread::Builder::new()
            .name("voltool-zstd".into())
            .spawn_scoped(s, || compressor.run(out, level, threads))
            .map_err(BackupError::Write)?;
        let root_dev = root_meta.dev();
        // Read-ahead is only a hint: without the thread the archive is the same, just slower.
        let reading_ahead = std::thread::Builder::new()
            .name("voltool-readahead".into())
            .spawn_scoped(s, move || prefetch::run(root, root_dev, lookahead))
            .ok();
        let stop_reading_ahead = prefetch::StopOnDrop(lookahead);
        let mut walk = Walk {
            root: root.to_path_buf(),
            root_dev,
            opts: opts.clone(),
            builder: Builder::new(blocks),
            links: HashMap::new(),
            progress,
            lookahead,
            summary: ArchiveSummary {
                entries: EntryList::new(),
                files: 0,
                bytes_in: 0,
                archive_size: 0,
                archive_sha256: String::new(),
                notes: Vec::new(),
            },
        };
        let walked = walk.run(root_dir);
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
    fn run(&mut self, root_dir: File) -> Result<(), BackupError> {
        let mut names = list_dir(&self.root).map_err(|source| BackupError::Read { path: self.root.clone(), source })?;
        names.reverse();
        let mut stack = vec![Frame { rel: Vec::new(), dir: Some(root_dir), names }];
        let mut done = 0u64;
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.pop() else {
                stack.pop();
                continue;
            };
            let mut rel = frame.rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let depth = stack.len();
            let parent = stack.last().and_then(|f| f.dir.as_ref());
            let descend = self.entry(parent, name.as_bytes(), &rel, depth)?;
            done += 1;
            self.lookahead.done.store(done, Ordering::Relaxed);
            if let Some((dir, names)) = descend {
                stack.push(Frame { rel, dir, names });
            }
        }
        Ok(())
    }

    /// The descriptor and path to reach `name` by: relative to its open parent directory, or
    /// the full path where the parent is not held open.
    fn at<'a>(&self, parent: Option<&'a File>, name: &'a [u8], rel: &[u8]) -> (BorrowedFd<'a>, Cow<'a, Path>) {
        match parent {
            Some(dir) => (dir.as_fd(), Cow::Borrowed(Path::new(OsStr::from_bytes(name)))),
            None => (AT_FDCWD, Cow::Owned(self.full(rel))),
        }
    }

    fn full(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    fn read_err(&self, rel: &[u8], source: io::Error) -> BackupError {
        BackupError::Read { path: self.full(rel), source }
    }

    /// Archives one path; returns the open directory (if held) and its sorted, reversed
    /// children when it is a directory to enter.
    #[allow(clippy::type_complexity)]
    fn entry(
        &mut self,
        parent: Option<&File>,
        name: &[u8],
        rel: &[u8],
        depth: usize,
    ) -> Result<Option<(Option<File>, Vec<OsString>)>, BackupError> {
        let (fd, path) = self.at(parent, name, rel);
        let meta: Stat = nix::sys::stat::fstatat(fd, path.as_ref(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| self.read_err(rel, e.into()))?
            .into();
        let display = String::from_utf8_lossy(rel);
        let mut kind = EntryKind::File;
        let mut header = Header::new_ustar();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut children = None;
        let mut link_target: Option<Vec<u8>> = None;
        let mut opened: Option<File> = None;
        if meta.kind == SFlag::S_IFDIR {
            kind = EntryKind::Dir;
            header.set_entry_type(EntryType::Directory);
            if meta.dev == self.root_dev {
                let dir = open_at(fd, &path, OFlag::O_DIRECTORY).map_err(|e| self.read_err(rel, e.into()))?;
                let mut names = list_dir(&self.full(rel)).map_err(|e| self.read_err(rel, e))?;
                names.reverse();
                opened = Some(dir);
                children = Some(names);
            } else {
                self.summary.notes.push(format!("{display}: mount point, archived as an empty directory"));
            }
        } else if meta.kind == SFlag::S_IFLNK {
            let target = nix::fcntl::readlinkat(fd, path.as_ref()).map_err(|e| self.read_err(rel, e.into()))?;
            kind = EntryKind::Symlink;
            header.set_entry_type(EntryType::Symlink);
            link_target = Some(target.as_bytes().to_vec());
        } else if meta.kind == SFlag::S_IFIFO {
            kind = EntryKind::Fifo;
            header.set_entry_type(EntryType::Fifo);
        } else if meta.kind == SFlag::S_IFREG {
            if meta.nlink > 1 {
                if let Some(first) = self.links.get(&(meta.dev, meta.ino)) {
                    kind = EntryKind::Hardlink;
                    header.set_entry_type(EntryType::Link);
                    link_target = Some(first.clone());
                } else {
                    self.links.insert((meta.dev, meta.ino), rel.to_vec());
                }
            }
            if kind == EntryKind::File {
                opened = Some(self.open_file(fd, &path, &meta, rel)?);
            }
        } else {
            let what = if meta.kind == SFlag::S_IFSOCK { "socket" } else { "device node" };
            self.summary.notes.push(format!("{display}: {what} skipped"));
            return Ok(None);
        }
        let size = if kind == EntryKind::File { meta.size } else { 0 };
        if kind == EntryKind::File {
            header.set_entry_type(EntryType::Regular);
        }
        fill_header(&mut header, &mut pax, rel, &meta, size, link_target.as_deref());
        if self.opts.xattrs {
            let full;
            let source = match &opened {
                Some(f) => XattrSource::Fd(f),
                None => {
                    full = self.full(rel);
                    XattrSource::Path(&full)
                }
            };
            self.xattrs(source, &display, &mut pax);
        }
        if !pax.is_empty() {
            let records = pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            self.builder.append_pax_extensions(records).map_err(BackupError::Write)?;
        }
        header.set_cksum();
        let mut sha256 = None;
        if kind == EntryKind::File {
            let file = opened.take().unwrap_or_else(|| unreachable!("regular files are opened above"));
            sha256 = self.append_file(file, &meta, &header, rel, &display)?;
            self.summary.files += 1;
            self.summary.bytes_in += size;
        } else {
            self.builder.append(&header, io::empty()).map_err(BackupError::Write)?;
        }
        self.summary.entries.push(&Entry {
            path: display.into_owned(),
            kind,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            size,
            mtime: meta.mtime,
            mtime_nsec: meta.mtime_nsec,
            sha256: sha256.map(hex::encode),
            target: link_target.as_deref().map(|t| String::from_utf8_lossy(t).into_owned()),
        });
        Ok(children.map(|names| (opened.filter(|_| depth < MAX_OPEN_DEPTH), names)))
    }

    /// Opens a regular file to archive and checks it is still the inode that was stat'ed.
    fn open_file(&self, fd: BorrowedFd<'_>, path: &Path, meta: &Stat, rel: &[u8]) -> Result<File, BackupError> {
        // O_NONBLOCK: never block on a fifo swapped in since the stat (O_NOFOLLOW is always set).
        let file = open_at(fd, path, OFlag::O_NONBLOCK).map_err(|e| self.read_err(rel, e.into()))?;
        let now = file.metadata().map_err(|e| self.read_err(rel, e))?;
        if !now.is_file() || now.ino() != meta.ino || now.dev() != meta.dev {
            return Err(self.read_err(rel, io::Error::other("replaced by another file while being archived")));
        }
        Ok(file)
    }

    fn xattrs(&mut self, source: XattrSource<'_>, display: &str, pax: &mut Vec<(String, Vec<u8>)>) {
        let names = match &source {
            XattrSource::Fd(f) => f.list_xattr(),
            XattrSource::Path(p) => xattr::list(p),
        };
        let names = match names {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::Unsupported || e.raw_os_error() == Some(nix::libc::ENOTSUP) => {
                return;
            }
            Err(e) => {
                self.summary.notes.push(format!("{display}: extended attributes not readable: {e}"));
                return;
            }
        };
        let mut names: Vec<OsString> = names.collect();
        names.sort();
        for name in names {
            let Some(key) = name.to_str() else {
                self.summary.notes.push(format!("{display}: xattr with a non-UTF-8 name skipped"));
                continue;
            };
            let value = match &source {
                XattrSource::Fd(f) => f.get_xattr(&name),
                XattrSource::Path(p) => xattr::get(p, &name),
            };
            match value {
                Ok(Some(value)) => pax.push((format!("SCHILY.xattr.{key}"), value)),
                Ok(None) => {}
                Err(e) => self.summary.notes.push(format!("{display}: xattr {key} not readable: {e}")),
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
                    Err(source) => {
                        return Err(BackupError::Read { path: self.root.join(OsStr::from_bytes(rel)), source });
                    }
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
            self.summary.notes.push(format!("{display}: shrank while being read, zero-padded to {} bytes", meta.size));
        } else if after.len() != meta.size
            || after.mtime() != meta.mtime
            || u32::try_from(after.mtime_nsec()).unwrap_or(0) != meta.mtime_nsec
        {
            self.summary.notes.push(format!("{display}: changed while being read"));
        }
        Ok(hash.then(|| hasher.finalize().into()))
    }
}

/// Files at least this large are read with `POSIX_FADV_SEQUENTIAL`.
const ADVISE_FROM: u64 = 1 << 20;

/// Sets the ustar fields, moving what does not fit into pax records.
fn fill_header(
    header: &mut Header,
    pax: &mut Vec<(String, Vec<u8>)>,
    rel: &[u8],
    meta: &Stat,
    size: u64,
    link: Option<&[u8]>,
) {
    if header.set_path(Path::new(OsStr::from_bytes(rel))).is_err() {
        pax.push(("path".into(), rel.to_vec()));
        put_truncated(&mut header.as_old_mut().name, rel);
    }
    if let Some(link) = link {
        if link.len() <= 100 && !link.contains(&0) {
            put_truncated(&mut header.as_old_mut().linkname, link);
        } else {
            pax.push(("linkpath".into(), link.to_vec()));
            put_truncated(&mut header.as_old_mut().linkname, link);
        }
    }
    header.set_mode(meta.mode);
    header.set_uid(u64::from(meta.uid));
    header.set_gid(u64::from(meta.gid));
    if meta.uid > USTAR_MAX_ID {
        pax.push(("uid".into(), meta.uid.to_string().into_bytes()));
    }
    if meta.gid > USTAR_MAX_ID {
        pax.push(("gid".into(), meta.gid.to_string().into_bytes()));
    }
    header.set_size(size);
    if size > USTAR_MAX_SIZE {
        pax.push(("size".into(), size.to_string().into_bytes()));
    }
    header.set_mtime(u64::try_from(meta.mtime).unwrap_or(0));
    if meta.mtime < 0 || meta.mtime_nsec != 0 || meta.mtime > USTAR_MAX_SIZE as i64 {
        pax.push(("mtime".into(), pax_time(meta.mtime, meta.mtime_nsec).into_bytes()));
    }
}

/// Copies as much of `src` as fits (leaving room for a NUL) into a header field.
fn put_truncated(dst: &mut [u8], src: &[u8]) {
    dst.fill(0);
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// A pax time value: seconds with an optional 9-digit fraction, correct for negative times.
pub(crate) fn pax_time(sec: i64, nsec: u32) -> String {
    if nsec == 0 {
        sec.to_string()
    } else if sec < 0 {
        // sec + nsec/1e9 lies in (sec, sec + 1): e.g. -2 s + 0.25 s = -1.75.
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(5, 0), "5");
        assert_eq!(pax_time(5, 1), "5.000000001");
        assert_eq!(pax_time(-2, 250_000_000), "-1.750000000");
        assert_eq!(pax_time(-1, 0), "-1");
    }

    #[test]
    fn hashing_writer_counts_and_hashes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").expect("write");
        let (inner, n, sha) = w.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(n, 3);
        assert_eq!(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    /// Regression: a walk that failed left the pipeline open and the archiver waited for the
    /// compressor forever. Paths past PATH_MAX below the depth where directories are held
    /// open fail deterministically (even as root).
    #[test]
    fn failed_walk_returns_the_error_instead_of_hanging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = "x".repeat(200);
        let mut cur = open_at(AT_FDCWD, dir.path(), OFlag::O_DIRECTORY).expect("open");
        for _ in 0..MAX_OPEN_DEPTH + 6 {
            nix::sys::stat::mkdirat(cur.as_fd(), name.as_str(), Mode::from_bits_truncate(0o755)).expect("mkdirat");
            cur = open_at(cur.as_fd(), Path::new(&name), OFlag::O_DIRECTORY).expect("open");
        }
        let root = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let opts = ArchiveOptions { threads: 2, ..Default::default() };
            let _ = tx.send(write_archive(&root, io::sink(), &opts));
        });
        let result = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("write_archive hung");
        match result {
            Err(BackupError::Read { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(nix::libc::ENAMETOOLONG), "{source}")
            }
            other => panic!("expected a read error, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_level_and_non_dir_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = ArchiveOptions { level: 0, ..Default::default() };
        assert!(matches!(write_archive(dir.path(), io::sink(), &opts), Err(BackupError::Options(_))));
        let f = dir.path().join("f");
        fs::write(&f, b"x").expect("write");
        assert!(matches!(write_archive(&f, io::sink(), &ArchiveOptions::default()), Err(BackupError::Root { .. })));
    }
}
