//! Archiving one entry of the walk: looking at it and opening what is read through a
//! descriptor ([`Found`]), its tar header and pax records (extended attributes among them),
//! and a regular file's contents, streamed into the pipeline's block and hashed there.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use nix::sys::stat::SFlag;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};
use xattr::FileExt;

use super::Walk;
use crate::error::BackupError;
use crate::header::{Stat, fill_header};
use crate::manifest::{Entry, EntryKind};
use crate::{prefetch, walk};

/// The most extended attributes archived per entry, and their names and values together in
/// bytes: past either, the rest of the entry's xattrs are skipped with a note (a restore
/// refuses entries with more, and a pax header is held in memory whole).
const MAX_XATTRS: usize = 256;
const MAX_XATTR_BYTES: usize = 256 << 10;

/// Files at least this large are read with `POSIX_FADV_SEQUENTIAL`.
const ADVISE_FROM: u64 = 1 << 20;

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

impl Walk<'_> {
    /// Notes an entry that changed under the walk and was skipped.
    fn changed(&mut self, rel: &[u8], what: &str) -> Found {
        self.changed += 1;
        self.note(format!("{}: {what} while being archived, skipped", String::from_utf8_lossy(rel)));
        Found::Skip
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
    pub(super) fn entry(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
    ) -> Result<Option<super::Descend>, BackupError> {
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
        let start = self.builder.get_ref().position();
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
        // An incremental lists every directory (see `crate::incremental`).
        let mut names = None;
        if kind == EntryKind::Dir
            && let Some(prev) = self.opts.previous.clone()
        {
            let listing = match &opened {
                Some(dir) => Some(
                    crate::incremental::list_dir(std::os::fd::AsFd::as_fd(dir), rel, &prev)
                        .map_err(|e| self.read_err(rel, e.into()))?,
                ),
                None => None,
            };
            let dumpdir = listing.as_ref().map_or_else(|| vec![0], |l| l.dumpdir.clone());
            pax.push(("GNU.dumpdir".to_owned(), dumpdir));
            if let Some(l) = listing {
                let (listed, unchanged) = super::children(l.children, rel);
                self.unchanged.extend(unchanged);
                names = Some(listed);
            }
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
                descend = dir.map(|d| super::Descend { dir: OwnedFd::from(d), dev: st.dev, ino: st.ino, names });
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
            ino: st.ino,
            ctime: st.ctime,
            ctime_nsec: st.ctime_nsec,
            level: self.summary.level,
            // Tar offsets for now: frame ranges once the archive is written (EntryList::locate).
            frame_at: start,
            frame_len: self.builder.get_ref().position(),
            frame_skip: 0,
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
        let lookahead = self.lookahead;
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
                match read_noting_waits(&mut file, &mut spare[..want], lookahead) {
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

/// `file.read(buf)`, except that until the read-ahead is wanted the read is first tried
/// without waiting for the disk (`preadv2(RWF_NOWAIT)`), and the reads that would have waited
/// are counted ([`prefetch::Progress::note_read`]), which wakes the read-ahead once they are
/// frequent. A filesystem that cannot tell (`EOPNOTSUPP`) wakes it at once.
fn read_noting_waits(file: &mut File, buf: &mut [u8], lookahead: &prefetch::Progress) -> io::Result<usize> {
    use rustix::io::{Errno, ReadWriteFlags, preadv2};
    if !lookahead.wanted.load(Ordering::Relaxed) {
        // u64::MAX: at (and advancing) the file's own offset, as read(2).
        match preadv2(&*file, &mut [io::IoSliceMut::new(buf)], u64::MAX, ReadWriteFlags::NOWAIT) {
            Ok(n) => {
                lookahead.note_read(false);
                return Ok(n);
            }
            Err(Errno::AGAIN) => lookahead.note_read(true),
            Err(Errno::INTR) => {}
            Err(_) => lookahead.wanted.store(true, Ordering::Relaxed),
        }
    }
    file.read(buf)
}
