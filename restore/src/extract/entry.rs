//! One handler per kind of tar entry. Each makes its entry in its parent directory's
//! descriptor (see `tree`), by name, never through a path.

use std::ffi::OsStr;
use std::io::{self, BufRead};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use voltool_backup::tarparse::{Header, TarReader};
use voltool_runtime::fsat::{Dir, Kind as FsKind};

use super::Written;
use super::run::{Extraction, PendingDir, owner, refused, safe_path, write_err};
use crate::error::RestoreError;
use crate::pipeline::{CopyError, FileMeta};

/// The last component of `rel`, and its parent (empty for the root).
fn split(rel: &Path) -> (&Path, &OsStr) {
    (rel.parent().unwrap_or(Path::new("")), rel.file_name().unwrap_or_default())
}

impl Extraction<'_> {
    pub(super) fn directory(&mut self, header: &Header, rel: PathBuf, name: String) -> Result<(), RestoreError> {
        let mode = header.mode.unwrap_or(0o755) & 0o7777;
        let (parent_rel, leaf) = split(&rel);
        let parent = self.tree.dir(parent_rel, &name)?;
        match parent.mkdir(leaf, 0o700) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => match parent.stat_entry(leaf) {
                Ok(st) if st.kind == FsKind::Dir => {}
                // The archive's own symlink, or one a container planted in the staging directory.
                Ok(st) if st.kind == FsKind::Symlink => {
                    return Err(refused(
                        &name,
                        "a directory entry where a symlink is (it could point outside the volume)",
                    ));
                }
                Ok(_) => return Err(refused(&name, "a directory entry where the archive already put a file")),
                Err(e) => return Err(write_err(&rel, e)),
            },
            Err(e) => return Err(write_err(&rel, e)),
        }
        let dir = self.tree.dir(&rel, &name)?;
        // Writable by this extraction until the end sets the archive's mode.
        dir.chmod(0o700).map_err(|e| write_err(&rel, e))?;
        if let Some((uid, gid)) = owner(header, self.opts) {
            dir.chown(uid, gid).map_err(|e| write_err(&rel, e))?;
        }
        self.dirs.push(PendingDir { rel, mode, mtime: header.mtime });
        self.report.written.insert(name, Written::Dir { mode });
        Ok(())
    }

    pub(super) fn file<R: BufRead>(
        &mut self,
        tar: &mut TarReader<R>,
        header: Header,
        rel: &Path,
        name: String,
    ) -> Result<(), RestoreError> {
        let mode = header.mode.unwrap_or(0o644) & 0o7777;
        let size = header.size;
        let (parent_rel, leaf) = split(rel);
        let parent = self.tree.dir(parent_rel, &name)?;
        // O_CREAT|O_EXCL|O_NOFOLLOW: fails on anything already there, symlinks included, so an
        // earlier entry of the same name is looked at (and replaced, tar semantics) only then,
        // instead of an lstat before every file.
        let out = match parent.create_file(leaf, mode & 0o777) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                remove_non_dir(parent, leaf, &name)?;
                parent.create_file(leaf, mode & 0o777).map_err(|e| write_err(rel, e))?
            }
            Err(e) => return Err(write_err(rel, e)),
        };
        // The file thread writes the bytes, then sets owner, mode, xattrs and times through the
        // descriptor (no path lookups: nothing can be swapped in under the name) and closes it;
        // owner and mode only where creating did not already give the right ones.
        let meta = FileMeta {
            owner: self.creation.owner(&header, self.opts),
            mode: self.creation.chmod_needed(mode).then_some(mode),
            xattrs: header.xattrs,
            mtime: header.mtime,
        };
        let copied = self.writer.copy(&mut tar.contents(), out, rel.to_path_buf(), meta).map_err(|e| match e {
            CopyError::Read(e) => RestoreError::Read(format!("entry {name:?}: {e}")),
            CopyError::Write(e) => write_err(rel, e),
        })?;
        if copied != size {
            return Err(RestoreError::Read(format!("entry {name:?}: the archive ends inside the file")));
        }
        if self.writer.failed() {
            // `run` replaces this with the file thread's own error, naming the file.
            return Err(RestoreError::Write(format!("{}: the file writer stopped", rel.display())));
        }
        self.report.files += 1;
        self.report.bytes += size;
        if self.opts.hash_files {
            self.hashed.push(name.clone());
        }
        self.report.written.insert(name, Written::File { size, sha256: String::new(), mode });
        Ok(())
    }

    pub(super) fn symlink(&mut self, header: &Header, rel: &Path, name: String) -> Result<(), RestoreError> {
        if header.link.is_empty() {
            return Err(refused(&name, "a symlink without a target"));
        }
        let target = String::from_utf8_lossy(&header.link).into_owned();
        let (parent_rel, leaf) = split(rel);
        let parent = self.tree.dir(parent_rel, &name)?;
        remove_non_dir(parent, leaf, &name)?;
        parent.symlink(OsStr::from_bytes(&header.link), leaf).map_err(|e| write_err(rel, e))?;
        if let Some((uid, gid)) = owner(header, self.opts) {
            parent.lchown(leaf, uid, gid).map_err(|e| write_err(rel, e))?;
        }
        if let Some((s, ns)) = header.mtime {
            let _ = parent.set_entry_times(leaf, s, ns);
        }
        self.report.written.insert(name, Written::Symlink { target });
        Ok(())
    }

    pub(super) fn hard_link(&mut self, header: &Header, rel: &Path, name: String) -> Result<(), RestoreError> {
        let shown = String::from_utf8_lossy(&header.link).into_owned();
        let target = match safe_path(&header.link, self.opts.strip_components) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(refused(&name, "a hard link to nothing")),
            Err(_) => return Err(refused(&name, &format!("a hard link to {shown:?}, outside the volume"))),
        };
        let tname = target.to_string_lossy().into_owned();
        // Only to a regular file this archive wrote, and that is still one (a later entry of
        // the same name may have replaced it).
        if !matches!(self.report.written.get(&tname), Some(Written::File { .. })) {
            return Err(refused(
                &name,
                &format!("a hard link to {tname:?}, which is not a file extracted earlier from this archive"),
            ));
        }
        let (tparent_rel, tleaf) = split(&target);
        let from = self.tree.dir(tparent_rel, &name)?.try_clone().map_err(|e| write_err(tparent_rel, e))?;
        // The target must still be the regular file the archive made: linkat(2) never follows
        // a symlink, but a link to a fifo or device someone swapped in is refused too.
        match from.stat_entry(tleaf) {
            Ok(st) if st.kind == FsKind::File => {}
            _ => return Err(refused(&name, &format!("a hard link to {tname:?}, which is no longer a file"))),
        }
        let (parent_rel, leaf) = split(rel);
        let parent = self.tree.dir(parent_rel, &name)?;
        remove_non_dir(parent, leaf, &name)?;
        parent.hard_link(&from, tleaf, leaf).map_err(|e| write_err(rel, e))?;
        self.report.written.insert(name, Written::Hardlink { target: tname });
        Ok(())
    }

    pub(super) fn fifo(&mut self, header: &Header, rel: &Path, name: String) -> Result<(), RestoreError> {
        let mode = header.mode.unwrap_or(0o644) & 0o7777;
        let (parent_rel, leaf) = split(rel);
        let parent = self.tree.dir(parent_rel, &name)?;
        remove_non_dir(parent, leaf, &name)?;
        parent.mkfifo(leaf, mode).map_err(|e| write_err(rel, e))?;
        if let Some((uid, gid)) = owner(header, self.opts) {
            parent.lchown(leaf, uid, gid).map_err(|e| write_err(rel, e))?;
        }
        // As GNU tar does: a fifo keeps its time as a file does.
        if let Some((s, ns)) = header.mtime {
            parent.set_entry_times(leaf, s, ns).map_err(|e| write_err(rel, e))?;
        }
        self.report.written.insert(name, Written::Fifo);
        Ok(())
    }

    pub(super) fn device(
        &mut self,
        header: &Header,
        rel: &Path,
        name: String,
        block: bool,
    ) -> Result<(), RestoreError> {
        if !self.opts.allow_devices {
            return Err(refused(&name, "a device node (restore with --allow-devices to create it)"));
        }
        let mode = header.mode.unwrap_or(0o600) & 0o7777;
        let (parent_rel, leaf) = split(rel);
        let parent = self.tree.dir(parent_rel, &name)?;
        remove_non_dir(parent, leaf, &name)?;
        parent
            .mknod(leaf, block, mode, u64::from(header.dev_major), u64::from(header.dev_minor))
            .map_err(|e| write_err(rel, e))?;
        if let Some((uid, gid)) = owner(header, self.opts) {
            parent.lchown(leaf, uid, gid).map_err(|e| write_err(rel, e))?;
        }
        self.report.written.insert(name, Written::Device);
        Ok(())
    }
}

/// Tar semantics: a later entry replaces an earlier one of the same name (but never a
/// directory with its contents). A symlink there is removed as a link.
fn remove_non_dir(parent: &Dir, leaf: &OsStr, name: &str) -> Result<(), RestoreError> {
    match parent.stat_entry(leaf) {
        Ok(st) if st.kind == FsKind::Dir => {
            Err(refused(name, "a non-directory where the archive already put a directory"))
        }
        Ok(_) => match parent.unlink(leaf) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(write_err(Path::new(name), e)),
            _ => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(write_err(Path::new(name), e)),
    }
}
