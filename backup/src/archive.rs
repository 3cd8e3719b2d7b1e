//! Writing `ID.tar.zst`: walk the volume root, emit a pax tar, compress with zstd, hash it all.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::OFlag;
use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

use crate::error::BackupError;
use crate::manifest::{Entry, EntryKind};

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
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        Self { level: 3, threads: 0, xattrs: true }
    }
}

/// What was archived: the data of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Every entry in archive order.
    pub entries: Vec<Entry>,
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

/// Reads exactly `remaining` bytes of a file, hashing them. A file that shrank while being read
/// is padded with zeros (so the tar stays well-formed); the hash covers what the archive holds.
struct FileReader<'a> {
    file: &'a mut File,
    progress: &'a AtomicU64,
    remaining: u64,
    hasher: Sha256,
    padded: bool,
    error: Option<io::Error>,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(buf.len());
        let n = if self.padded {
            0
        } else {
            match self.file.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        };
        let n = if n == 0 {
            self.padded = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

struct Walk<W: Write> {
    root: PathBuf,
    root_dev: u64,
    opts: ArchiveOptions,
    builder: Builder<W>,
    /// (dev, ino) of regular files with more than one link -> first archived path.
    links: HashMap<(u64, u64), Vec<u8>>,
    summary: ArchiveSummary,
    /// File content bytes read so far, for progress reports.
    progress: Arc<AtomicU64>,
}

/// Archives the directory tree at `root` into `out` as zstd-compressed pax tar.
///
/// Entries are written in sorted-name, depth-first order; symlinks are not followed and mount
/// points are archived as empty directories without their contents. Every regular file is
/// read once, streamed, and hashed on the way. The root directory itself is not an entry.
pub fn write_archive(root: &Path, out: impl Write, opts: &ArchiveOptions) -> Result<ArchiveSummary, BackupError> {
    write_archive_with_progress(root, out, opts, Arc::default())
}

/// [`write_archive`], adding every file content byte read to `progress` as it goes (another
/// thread may watch it to show a progress bar).
pub fn write_archive_with_progress(
    root: &Path,
    out: impl Write,
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
    let mut encoder =
        zstd::stream::write::Encoder::new(HashingWriter::new(out), opts.level).map_err(BackupError::Write)?;
    encoder.include_checksum(true).map_err(BackupError::Write)?;
    if opts.threads > 1 {
        encoder.multithread(opts.threads).map_err(BackupError::Write)?;
    }
    let mut walk = Walk {
        root: root.to_path_buf(),
        root_dev: root_meta.dev(),
        opts: opts.clone(),
        builder: Builder::new(encoder),
        links: HashMap::new(),
        progress,
        summary: ArchiveSummary {
            entries: Vec::new(),
            files: 0,
            bytes_in: 0,
            archive_size: 0,
            archive_sha256: String::new(),
            notes: Vec::new(),
        },
    };
    walk.run()?;
    let encoder = walk.builder.into_inner().map_err(BackupError::Write)?;
    let hashing = encoder.finish().map_err(BackupError::Write)?;
    let (mut out, size, sha) = hashing.finish();
    out.flush().map_err(BackupError::Write)?;
    let mut summary = walk.summary;
    summary.archive_size = size;
    summary.archive_sha256 = sha;
    Ok(summary)
}

fn sorted_names(dir: &Path) -> Result<Vec<OsString>, BackupError> {
    let read = |source| BackupError::Read { path: dir.into(), source };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(read)? {
        names.push(entry.map_err(read)?.file_name());
    }
    names.sort();
    Ok(names)
}

impl<W: Write> Walk<W> {
    fn run(&mut self) -> Result<(), BackupError> {
        // Each frame: the directory's relative path ("" for the root) and its remaining names,
        // reversed so `pop` yields them in sorted order.
        let mut first = sorted_names(&self.root)?;
        first.reverse();
        let mut stack: Vec<(Vec<u8>, Vec<OsString>)> = vec![(Vec::new(), first)];
        while let Some((dir, names)) = stack.last_mut() {
            let Some(name) = names.pop() else {
                stack.pop();
                continue;
            };
            let mut rel = dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            if let Some(descend) = self.entry(&rel)? {
                stack.push((rel, descend));
            }
        }
        Ok(())
    }

    /// Archives one path; returns the sorted, reversed children when it is a directory to enter.
    fn entry(&mut self, rel: &[u8]) -> Result<Option<Vec<OsString>>, BackupError> {
        let rel_path = Path::new(std::ffi::OsStr::from_bytes(rel));
        let full = self.root.join(rel_path);
        let display = String::from_utf8_lossy(rel).into_owned();
        let meta = fs::symlink_metadata(&full).map_err(|source| BackupError::Read { path: full.clone(), source })?;
        let ft = meta.file_type();
        let mut entry = Entry {
            path: display.clone(),
            kind: EntryKind::File,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: 0,
            mtime: meta.mtime(),
            mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            sha256: None,
            target: None,
        };
        let mut header = Header::new_ustar();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut children = None;
        let mut link_target: Option<Vec<u8>> = None;
        if ft.is_dir() {
            entry.kind = EntryKind::Dir;
            header.set_entry_type(EntryType::Directory);
            if meta.dev() == self.root_dev {
                let mut names = sorted_names(&full)?;
                names.reverse();
                children = Some(names);
            } else {
                self.summary.notes.push(format!("{display}: mount point, archived as an empty directory"));
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(&full).map_err(|source| BackupError::Read { path: full.clone(), source })?;
            entry.kind = EntryKind::Symlink;
            entry.target = Some(target.to_string_lossy().into_owned());
            header.set_entry_type(EntryType::Symlink);
            link_target = Some(target.as_os_str().as_bytes().to_vec());
        } else if ft.is_fifo() {
            entry.kind = EntryKind::Fifo;
            header.set_entry_type(EntryType::Fifo);
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                    entry.kind = EntryKind::Hardlink;
                    entry.target = Some(String::from_utf8_lossy(first).into_owned());
                    header.set_entry_type(EntryType::Link);
                    link_target = Some(first.clone());
                } else {
                    self.links.insert((meta.dev(), meta.ino()), rel.to_vec());
                }
            }
        } else {
            let what = if ft.is_socket() { "socket" } else { "device node" };
            self.summary.notes.push(format!("{display}: {what} skipped"));
            return Ok(None);
        }
        if entry.kind == EntryKind::File {
            entry.size = meta.len();
            header.set_entry_type(EntryType::Regular);
        }
        self.fill_header(&mut header, &mut pax, rel, &entry, link_target.as_deref());
        if self.opts.xattrs {
            self.xattrs(&full, &display, &mut pax);
        }
        if !pax.is_empty() {
            let records = pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            self.builder.append_pax_extensions(records).map_err(BackupError::Write)?;
        }
        header.set_cksum();
        if entry.kind == EntryKind::File {
            let sha = self.append_file(&full, &meta, &header, &display)?;
            entry.sha256 = Some(sha);
            self.summary.files += 1;
            self.summary.bytes_in += entry.size;
        } else {
            self.builder.append(&header, io::empty()).map_err(BackupError::Write)?;
        }
        self.summary.entries.push(entry);
        Ok(children)
    }

    /// Sets the ustar fields, moving what does not fit into pax records.
    fn fill_header(
        &self,
        header: &mut Header,
        pax: &mut Vec<(String, Vec<u8>)>,
        rel: &[u8],
        entry: &Entry,
        link: Option<&[u8]>,
    ) {
        if header.set_path(Path::new(std::ffi::OsStr::from_bytes(rel))).is_err() {
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
        header.set_mode(entry.mode);
        header.set_uid(u64::from(entry.uid));
        header.set_gid(u64::from(entry.gid));
        if entry.uid > USTAR_MAX_ID {
            pax.push(("uid".into(), entry.uid.to_string().into_bytes()));
        }
        if entry.gid > USTAR_MAX_ID {
            pax.push(("gid".into(), entry.gid.to_string().into_bytes()));
        }
        header.set_size(entry.size);
        if entry.size > USTAR_MAX_SIZE {
            pax.push(("size".into(), entry.size.to_string().into_bytes()));
        }
        header.set_mtime(u64::try_from(entry.mtime).unwrap_or(0));
        if entry.mtime < 0 || entry.mtime_nsec != 0 || entry.mtime > USTAR_MAX_SIZE as i64 {
            pax.push(("mtime".into(), pax_time(entry.mtime, entry.mtime_nsec).into_bytes()));
        }
    }

    fn xattrs(&mut self, full: &Path, display: &str, pax: &mut Vec<(String, Vec<u8>)>) {
        let names = match xattr::list(full) {
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
            match xattr::get(full, &name) {
                Ok(Some(value)) => pax.push((format!("SCHILY.xattr.{key}"), value)),
                Ok(None) => {}
                Err(e) => self.summary.notes.push(format!("{display}: xattr {key} not readable: {e}")),
            }
        }
    }

    /// Streams one regular file into the archive and returns its sha256.
    fn append_file(
        &mut self,
        full: &Path,
        meta: &Metadata,
        header: &Header,
        display: &str,
    ) -> Result<String, BackupError> {
        let read_err = |source| BackupError::Read { path: full.into(), source };
        // O_NOFOLLOW | O_NONBLOCK: never follow a symlink or block on a fifo swapped in since the stat.
        let mut file = fs::OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
            .open(full)
            .map_err(read_err)?;
        let now = file.metadata().map_err(read_err)?;
        if !now.is_file() || now.ino() != meta.ino() || now.dev() != meta.dev() {
            return Err(BackupError::Read {
                path: full.into(),
                source: io::Error::other("replaced by another file while being archived"),
            });
        }
        let mut reader = FileReader {
            file: &mut file,
            progress: &self.progress,
            remaining: meta.len(),
            hasher: Sha256::new(),
            padded: false,
            error: None,
        };
        if let Err(e) = self.builder.append(header, &mut reader) {
            return Err(match reader.error.take() {
                Some(source) => BackupError::Read { path: full.into(), source },
                None => BackupError::Write(e),
            });
        }
        let padded = reader.padded;
        let sha = hex::encode(reader.hasher.finalize());
        let after = file.metadata().map_err(read_err)?;
        if padded {
            self.summary.notes.push(format!("{display}: shrank while being read, zero-padded to {} bytes", meta.len()));
        } else if after.len() != meta.len() || after.mtime() != meta.mtime() || after.mtime_nsec() != meta.mtime_nsec()
        {
            self.summary.notes.push(format!("{display}: changed while being read"));
        }
        Ok(sha)
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
