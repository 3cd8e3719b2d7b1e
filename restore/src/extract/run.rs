//! One extraction: the state it carries from entry to entry, the loop that reads entries and
//! hands each to its handler (see `entry`), and what is done once the archive ends.

use std::ffi::OsStr;
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use voltool_backup::tarparse::{Header, Kind, TarReader};
use voltool_runtime::fsat::Dir;

use super::tree::Tree;
use super::{ExtractOptions, ExtractReport, Mtime, Written};
use crate::error::RestoreError;
use crate::pipeline::{FileWriter, WriteBehind};

/// A directory whose mode and times are set once everything in it is written.
pub(super) struct PendingDir {
    pub(super) rel: PathBuf,
    pub(super) mode: u32,
    pub(super) mtime: Option<Mtime>,
}

/// What one extraction carries from entry to entry.
pub(crate) struct Extraction<'o> {
    pub(super) opts: &'o ExtractOptions,
    pub(super) tree: Tree,
    pub(super) report: ExtractReport,
    pub(super) writer: FileWriter,
    pub(super) dirs: Vec<PendingDir>,
    /// The names of the files handed to the file thread, in the order it numbers them.
    pub(super) hashed: Vec<String>,
    pub(super) creation: Creation,
    /// Opened before anything is written: its sync reports any writeback error since.
    durable: Option<Dir>,
    /// Bytes and inodes taken so far (see [`super::Space`]).
    pub(super) used_bytes: u64,
    pub(super) used_inodes: u64,
}

impl<'o> Extraction<'o> {
    /// Prepares an extraction into `dest`.
    ///
    /// # Errors
    /// [`RestoreError::Write`] when `dest` cannot be read, [`RestoreError::Thread`].
    pub(crate) fn start(dest: Dir, opts: &'o ExtractOptions) -> Result<Self, RestoreError> {
        let werr = |e: std::io::Error| RestoreError::Write(format!("the staging directory: {e}"));
        let durable = opts.durable.then(|| dest.try_clone()).transpose().map_err(werr)?;
        let behind = match &durable {
            Some(d) => {
                Some(WriteBehind::start(std::fs::File::from(std::os::fd::OwnedFd::from(d.try_clone().map_err(werr)?)))?)
            }
            None => None,
        };
        let creation = Creation::new(&dest);
        Ok(Extraction {
            opts,
            tree: Tree::new(dest),
            report: ExtractReport::default(),
            writer: FileWriter::start(opts.hash_files, behind)?,
            dirs: Vec::new(),
            hashed: Vec::new(),
            creation,
            durable,
            used_bytes: 0,
            used_inodes: 0,
        })
    }

    /// Reads every entry of `input` and makes it; then sets the directories' modes and times
    /// and, when durable, syncs the filesystem.
    ///
    /// # Errors
    /// See [`super::extract`].
    pub(crate) fn run(self, input: impl BufRead) -> Result<ExtractReport, RestoreError> {
        self.pass(input, &|_, _| true, None)?.finish()
    }

    /// Reads every entry of `input` and makes those `keep` takes (by path and whether it is a
    /// directory); the others are skipped. Several passes make one tree (an incremental chain,
    /// link by link); [`Self::finish`] ends it.
    ///
    /// # Errors
    /// See [`super::extract`].
    pub(crate) fn pass(
        mut self,
        input: impl BufRead,
        keep: &super::Keep<'_>,
        take: Option<u64>,
    ) -> Result<Self, RestoreError> {
        let mut tar = TarReader::new(input);
        let mut made = 0u64;
        loop {
            if take.is_some_and(|t| made >= t) {
                // A range of an archive: what follows its last entry is cut; nothing to drain.
                return Ok(self);
            }
            let header =
                tar.next_entry().map_err(|e| RestoreError::Read(format!("after {} entries: {e}", tar.count())))?;
            let Some(header) = header else { break };
            let Some(rel) = safe_path(&header.path, self.opts.strip_components)? else { continue };
            if !keep(&rel.to_string_lossy(), header.kind == Some(Kind::Directory)) {
                continue;
            }
            made += 1;
            if let Err(e) = self.entry(&mut tar, header, rel) {
                // A failed file thread's own error names the file it could not write.
                if self.writer.failed() {
                    return Err(self.writer.finish().err().unwrap_or(e));
                }
                return Err(e);
            }
        }
        // The end of the tar archive is not the end of the stream: read it to its end, so a
        // damaged or truncated compressed frame after the archive's last block still fails
        // (and the whole archive is read, for its digest). What follows the end blocks is
        // ignored, as GNU tar does.
        let mut rest = tar.into_inner();
        loop {
            let n = rest.fill_buf().map_err(|e| RestoreError::Read(format!("after the last entry: {e}")))?.len();
            if n == 0 {
                break;
            }
            rest.consume(n);
        }
        Ok(self)
    }

    /// One entry: the space it takes is checked, then it goes to its kind's handler.
    fn entry<R: BufRead>(
        &mut self,
        tar: &mut TarReader<R>,
        mut header: Header,
        rel: PathBuf,
    ) -> Result<(), RestoreError> {
        let name = rel.to_string_lossy().into_owned();
        self.report.entries += 1;
        let kind = header.kind.unwrap_or(Kind::Other(0));
        if !self.opts.preserve_privileges {
            // Foreign archive: no setuid/setgid files, no security labels or capabilities.
            header.mode = header.mode.map(|m| m & !0o6000);
            header.xattrs.retain(|(k, _)| !(k.starts_with("security.") || k.starts_with("trusted.")));
        }
        let size = if matches!(kind, Kind::Regular | Kind::Continuous) { header.size } else { 0 };
        self.take_space(&name, size)?;
        match kind {
            Kind::Directory => self.directory(&header, rel, name),
            Kind::Regular | Kind::Continuous => self.file(tar, header, &rel, name),
            Kind::GnuSparse => Err(refused(&name, "GNU sparse entries are not supported; archive with --sparse off")),
            Kind::Symlink => self.symlink(&header, &rel, name),
            Kind::Link => self.hard_link(&header, &rel, name),
            Kind::Fifo => self.fifo(&header, &rel, name),
            Kind::Char | Kind::Block => self.device(&header, &rel, name, kind == Kind::Block),
            Kind::Other(flag) => {
                Err(refused(&name, &format!("an entry of type {:?}, which restore does not create", char::from(flag))))
            }
        }
    }

    /// Counts an entry of `size` content bytes against the volume's limit and the room on the
    /// filesystem, before anything of it is written.
    fn take_space(&mut self, name: &str, size: u64) -> Result<(), RestoreError> {
        if let Some(max) = self.opts.max_bytes
            && self.report.bytes.saturating_add(size) > max
        {
            return Err(RestoreError::TooLarge { entry: name.to_owned(), limit: max });
        }
        if let Some(space) = self.opts.space {
            // Whole blocks, and one more for the inode's own metadata and its directory entry.
            let blocks = size.div_ceil(4096).saturating_add(1);
            let bytes = self.used_bytes.saturating_add(blocks.saturating_mul(4096));
            let inodes = self.used_inodes + 1;
            if bytes > space.bytes || inodes > space.inodes {
                return Err(RestoreError::NoSpace { entry: name.to_owned(), bytes: space.bytes, inodes: space.inodes });
            }
            self.used_bytes = bytes;
            self.used_inodes = inodes;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<ExtractReport, RestoreError> {
        // Every file's sha256, from the hashing thread. A name written twice (tar semantics:
        // the later entry wins) gets the later file's digest last; a name whose later entry is
        // no longer a file keeps what that entry wrote.
        let digests = self.writer.finish()?;
        for (name, digest) in self.hashed.iter().zip(digests) {
            if let Some(Written::File { sha256, .. }) = self.report.written.get_mut(name) {
                *sha256 = hex::encode(digest);
            }
        }
        // Directory modes and times last, deepest first, each through its descriptor.
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.rel.components().count()));
        for d in dirs {
            let shown = d.rel.to_string_lossy().into_owned();
            let dir = self.tree.dir(&d.rel, &shown)?;
            dir.chmod(d.mode).map_err(|e| write_err(&d.rel, e))?;
            if let Some((s, ns)) = d.mtime {
                dir.set_times(s, ns).map_err(|e| write_err(&d.rel, e))?;
            }
        }
        if let Some(dir) = self.durable {
            dir.syncfs().map_err(|e| RestoreError::Write(format!("writing the restored data to disk: {e}")))?;
        }
        Ok(self.report)
    }
}

pub(super) fn refused(entry: &str, why: &str) -> RestoreError {
    RestoreError::Refused { entry: entry.to_owned(), reason: why.to_owned() }
}

pub(super) fn write_err(p: &Path, e: std::io::Error) -> RestoreError {
    RestoreError::Write(format!("{}: {e}", p.display()))
}

/// Validates an entry path: relative, no `..`, no NUL. `None` for the root itself (`./`) and
/// entries removed by `strip`.
pub(super) fn safe_path(raw: &[u8], strip: usize) -> Result<Option<PathBuf>, RestoreError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    if raw.contains(&0) {
        return Err(refused(&shown, "a name with a NUL byte"));
    }
    let p = Path::new(OsStr::from_bytes(raw));
    if p.is_absolute() {
        return Err(refused(&shown, "an absolute path (restore writes only inside the volume)"));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(refused(&shown, "a path with '..' (it would leave the volume)")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(&shown, "an absolute path (restore writes only inside the volume)"));
            }
        }
    }
    if parts.len() <= strip {
        return Ok(None);
    }
    Ok(Some(parts[strip..].iter().collect()))
}

/// What a new file needs after it is created with its permission bits, given how files are
/// created here: `(owner to set, whether the mode must be set again)`.
///
/// A file is created owned by the restoring process, with its mode's permission bits less the
/// umask; only what differs is set again afterwards (most archives restored by root hold files
/// of root, with modes the umask does not touch: two system calls fewer per file).
pub(super) struct Creation {
    uid: u32,
    gid: u32,
    /// `false` when the creating group is not known (a setgid staging directory).
    gid_known: bool,
    umask: Option<u32>,
}

impl Creation {
    fn new(dest: &Dir) -> Self {
        let setgid = dest.stat().map_or(true, |m| m.mode & 0o2000 != 0);
        let umask = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Umask:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        });
        Self { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw(), gid_known: !setgid, umask }
    }

    pub(super) fn owner(&self, h: &Header, opts: &ExtractOptions) -> Option<(Option<u32>, Option<u32>)> {
        let (uid, gid) = owner(h, opts)?;
        let uid = uid.filter(|&u| u != self.uid);
        let gid = gid.filter(|&g| !self.gid_known || g != self.gid);
        (uid.is_some() || gid.is_some()).then_some((uid, gid))
    }

    pub(super) fn chmod_needed(&self, mode: u32) -> bool {
        mode & 0o7000 != 0 || self.umask.is_none_or(|u| mode & u != 0)
    }
}

/// The owner to give an entry: the archive's when restoring owners, else none.
pub(super) fn owner(h: &Header, opts: &ExtractOptions) -> Option<(Option<u32>, Option<u32>)> {
    opts.same_owner.then(|| (h.uid.and_then(|u| u32::try_from(u).ok()), h.gid.and_then(|g| u32::try_from(g).ok())))
}
