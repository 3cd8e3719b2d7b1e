//! The walk under a backup, an export and a migration: a volume's tree visited depth-first in
//! sorted-name order, through directory descriptors at every depth.
//!
//! The tree belongs to containers, which may rename, swap and symlink anything in it while it
//! is walked. So, as runc's `pathrs` and libpathrs do, nothing below the root is ever reached
//! by a path:
//!
//! - the root is opened once, by the path the daemon made (`O_DIRECTORY | O_NOFOLLOW`);
//! - every entry is named by one component relative to its parent's descriptor: `fstatat`
//!   with `AT_SYMLINK_NOFOLLOW`, `readlinkat`, `openat` with `O_NOFOLLOW` for files, and for
//!   directories `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, so the kernel refuses a symlink or a mount
//!   point swapped in; a directory is listed through its own descriptor (`getdents` on a
//!   `dup`), never by path;
//! - at most [`KEPT_FDS`] directory descriptors are held besides the root's (the deepest
//!   ones). When the walk climbs back to a directory whose descriptor was let go, it re-opens
//!   it from the root one component at a time, the same way, and checks that each level is
//!   still the (device, inode) it was when entered. A level that was moved, removed or
//!   replaced (by another directory, a symlink, anything) is not followed: the entries of it
//!   not yet archived are skipped and a note says so.
//!
//! Limits (errors naming the path, so a hostile tree cannot make the walk run away): entries
//! at most [`MAX_DEPTH`] levels deep, relative paths at most [`MAX_PATH`] bytes. Re-opening
//! costs at most `depth` opens every [`KEPT_FDS`] levels climbed: about `depth² / (2 ×
//! KEPT_FDS)` opens for a tree of that depth (131,072 for 4,096 levels), none for trees up
//! to [`KEPT_FDS`] deep.
//!
//! Needs `openat2(2)` (Linux 5.6).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// What a walk fails with; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// The root is not a directory that can be walked.
    #[error("{path}: {reason}")]
    Root { path: PathBuf, reason: String },
    /// Listing or opening a directory failed.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An entry is deeper than the walk takes ([`MAX_DEPTH`]).
    #[error("{path}: deeper than {limit} levels")]
    TooDeep { path: PathBuf, limit: usize },
    /// An entry's relative path is longer than the walk takes ([`MAX_PATH`]).
    #[error("{path}: a path of {len} bytes, longer than {limit}")]
    PathTooLong { path: PathBuf, len: usize, limit: usize },
}

/// The deepest entry a walk takes: a path of more components is an error naming it.
pub const MAX_DEPTH: usize = 4096;
/// The longest relative path (in bytes) a walk takes; the same bound as a restore's.
pub const MAX_PATH: usize = 64 << 10;
/// Directory descriptors a walk keeps open besides the root's (the deepest levels).
pub const KEPT_FDS: usize = 64;

/// The bounds of one walk (the constants above, smaller in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    pub kept_fds: usize,
    pub max_depth: usize,
    pub max_path: usize,
}

impl Default for WalkLimits {
    fn default() -> Self {
        Self { kept_fds: KEPT_FDS, max_depth: MAX_DEPTH, max_path: MAX_PATH }
    }
}

/// What a walk's note says of a volume written while it is walked.
pub const CRASH_CONSISTENT: &str = "the volume was written during the walk: the archive is crash-consistent at \
                                           best (each entry as it was when read, nothing from outside the volume)";

/// Opens the root of a walk: `open(2)` with `O_DIRECTORY | O_NOFOLLOW`, and its `fstat`.
///
/// # Errors
/// [`WalkError::Root`] when `root` is a symlink or not a directory, [`WalkError::Read`]
/// for any other failure.
pub fn open_root(root: &Path) -> Result<(OwnedFd, FileStat), WalkError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::open(root, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOTDIR) => return Err(WalkError::Root { path: root.into(), reason: "not a directory".into() }),
        Err(Errno::ELOOP) => {
            return Err(WalkError::Root { path: root.into(), reason: "a symlink, not a directory".into() });
        }
        Err(e) => return Err(WalkError::Read { path: root.into(), source: e.into() }),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| WalkError::Read { path: root.into(), source: e.into() })?;
    Ok((fd, st))
}

/// Opens the directory `name` in `parent`: `openat2(2)` with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV` and `O_NOFOLLOW`.
///
/// Errors: `ELOOP` for a symlink, `ENOTDIR` for anything but a directory, `EXDEV` for a mount
/// point (a bind mount of the same filesystem included), `ENOENT`.
pub fn open_dir_at(parent: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    let how =
        OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    nix::fcntl::openat2(parent, name, how)
}

/// Opens the entry `name` in `parent` to read it as a regular file: `openat(2)` with
/// `O_NOFOLLOW` (a symlink swapped in fails with `ELOOP`), `O_NONBLOCK` (a fifo swapped in does
/// not block) and `O_NOCTTY`. The caller checks with `fstat` what it got.
pub fn open_file_at(parent: BorrowedFd<'_>, name: &OsStr) -> nix::Result<std::fs::File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    nix::fcntl::openat(parent, name, flags, Mode::empty()).map(std::fs::File::from)
}

/// `fstatat(parent, name, AT_SYMLINK_NOFOLLOW)` (fstatat(2)): an lstat of one entry.
pub fn stat_at(parent: BorrowedFd<'_>, name: &OsStr) -> nix::Result<FileStat> {
    nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// The names in the open directory `dir` (not `.` and `..`), sorted bytewise, read through a
/// `dup` of its descriptor (getdents(2)): no path is looked up.
pub fn list(dir: BorrowedFd<'_>) -> nix::Result<Vec<OsString>> {
    let mut stream = nix::dir::Dir::from_fd(nix::unistd::dup(dir)?)?;
    let mut names = Vec::new();
    for entry in stream.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// `root` joined with a relative path of the walk, for messages; a path longer than 1 KiB is
/// shown as its beginning and end.
pub fn shown(root: &Path, rel: &[u8]) -> PathBuf {
    const KEEP: usize = 512;
    if rel.len() <= 2 * KEEP {
        return root.join(OsStr::from_bytes(rel));
    }
    let mut short = rel[..KEEP].to_vec();
    short.extend_from_slice(b"...");
    short.extend_from_slice(&rel[rel.len() - KEEP..]);
    root.join(OsStr::from_bytes(&short))
}

/// One directory on the way down: its name in its parent, its identity when entered, its
/// descriptor while kept, and its names still to visit (reversed, so `pop` gives them in order).
struct Level {
    name: OsString,
    /// Length of [`TreeWalk::path`] while this level is the deepest.
    path_len: usize,
    dev: u64,
    ino: u64,
    dir: Option<OwnedFd>,
    pending: Vec<OsString>,
}

/// The next entry of a walk: its parent's descriptor, its name there, its path relative to
/// the root.
pub struct Item<'a> {
    pub parent: BorrowedFd<'a>,
    pub name: &'a OsStr,
    pub rel: &'a [u8],
}

/// A depth-first walk holding a bounded stack of directory descriptors; see the module docs.
/// The caller stats and opens each [`Item`] itself and hands the directories it wants entered
/// to [`TreeWalk::enter`].
pub struct TreeWalk {
    root: PathBuf,
    limits: WalkLimits,
    /// `[0]` is the root, whose descriptor is always held.
    levels: Vec<Level>,
    /// `levels[lo..]` hold descriptors; `levels[1..lo]` were let go.
    lo: usize,
    /// The relative path of the deepest level.
    path: Vec<u8>,
    /// The current entry's path and name.
    cur: Vec<u8>,
    cur_name: OsString,
}

impl TreeWalk {
    /// Starts a walk of the directory `dir` (opened by [`open_root`], `st` its `fstat`); `root`
    /// names it in messages.
    ///
    /// # Errors
    /// [`WalkError::Read`] when the root cannot be listed.
    pub fn new(root: &Path, dir: OwnedFd, st: &FileStat, limits: WalkLimits) -> Result<Self, WalkError> {
        let pending = list(dir.as_fd()).map_err(|e| WalkError::Read { path: root.into(), source: e.into() })?;
        Ok(Self::new_listed(root, dir, st, limits, pending))
    }

    /// [`Self::new`] with the root's names already listed (by [`list`], sorted): a caller that
    /// looked at them before the walk visits the same names.
    pub fn new_listed(
        root: &Path,
        dir: OwnedFd,
        st: &FileStat,
        limits: WalkLimits,
        mut pending: Vec<OsString>,
    ) -> Self {
        pending.reverse();
        let top = Level { name: OsString::new(), path_len: 0, dev: st.st_dev, ino: st.st_ino, dir: Some(dir), pending };
        Self {
            root: root.into(),
            limits,
            levels: vec![top],
            lo: 1,
            path: Vec::new(),
            cur: Vec::new(),
            cur_name: OsString::new(),
        }
    }

    /// The next entry, or `None` at the end. Adds a note to `notes` for every directory whose
    /// remaining entries were skipped because it was moved or replaced.
    ///
    /// # Errors
    /// [`WalkError::TooDeep`], [`WalkError::PathTooLong`]; [`WalkError::Read`] when a
    /// directory cannot be re-opened for another reason than being moved or replaced.
    pub fn next(&mut self, notes: &mut Vec<String>) -> Result<Option<Item<'_>>, WalkError> {
        loop {
            let Some(top) = self.levels.len().checked_sub(1) else { return Ok(None) };
            if self.levels[top].pending.is_empty() {
                self.levels.pop();
                if let Some(up) = self.levels.last() {
                    self.path.truncate(up.path_len);
                }
                self.lo = self.lo.min(self.levels.len()).max(1);
                continue;
            }
            if self.levels[top].dir.is_none() && !self.reopen(top, notes)? {
                continue;
            }
            let name = self.levels[top].pending.pop().unwrap_or_default();
            self.cur.clear();
            self.cur.extend_from_slice(&self.path);
            if !self.cur.is_empty() {
                self.cur.push(b'/');
            }
            self.cur.extend_from_slice(name.as_bytes());
            let depth = top + 1;
            if depth > self.limits.max_depth {
                let path = shown(&self.root, &self.cur);
                return Err(WalkError::TooDeep { path, limit: self.limits.max_depth });
            }
            if self.cur.len() > self.limits.max_path {
                let path = shown(&self.root, &self.cur);
                return Err(WalkError::PathTooLong { path, len: self.cur.len(), limit: self.limits.max_path });
            }
            self.cur_name = name;
            let Some(parent) = self.levels[top].dir.as_ref() else { unreachable!("the deepest level is open") };
            return Ok(Some(Item { parent: parent.as_fd(), name: &self.cur_name, rel: &self.cur }));
        }
    }

    /// Enters the directory the last [`Self::next`] returned: `dir` is its descriptor (from
    /// [`open_dir_at`]), `dev`/`ino` its `fstat`. Its names come after it, before its
    /// parent's next name.
    ///
    /// # Errors
    /// [`WalkError::Read`] when it cannot be listed (nothing is entered then).
    pub fn enter(&mut self, dir: OwnedFd, dev: u64, ino: u64) -> Result<(), WalkError> {
        let pending = list(dir.as_fd()).map_err(|e| WalkError::Read { path: self.shown(), source: e.into() })?;
        self.enter_listed(dir, dev, ino, pending);
        Ok(())
    }

    /// [`Self::enter`] with the directory's names already listed (by [`list`], sorted).
    pub fn enter_listed(&mut self, dir: OwnedFd, dev: u64, ino: u64, mut pending: Vec<OsString>) {
        pending.reverse();
        self.path.clear();
        self.path.extend_from_slice(&self.cur);
        let name = std::mem::take(&mut self.cur_name);
        self.levels.push(Level { name, path_len: self.path.len(), dev, ino, dir: Some(dir), pending });
        self.trim();
    }

    /// The current entry's path, for messages.
    pub fn shown(&self) -> PathBuf {
        shown(&self.root, &self.cur)
    }

    /// Lets go of the shallowest descriptors past [`WalkLimits::kept_fds`].
    fn trim(&mut self) {
        while self.levels.len().saturating_sub(self.lo) > self.limits.kept_fds {
            self.levels[self.lo].dir = None;
            self.lo += 1;
        }
    }

    /// Re-opens levels `1..=top` from the root, one component at a time, each checked against
    /// the (device, inode) it had when entered. `false` when one of them is no longer there:
    /// it and the levels below it are dropped, with a note.
    fn reopen(&mut self, top: usize, notes: &mut Vec<String>) -> Result<bool, WalkError> {
        for j in 1..=top {
            if self.levels[j].dir.is_some() {
                continue;
            }
            let Some(parent) = self.levels[j - 1].dir.as_ref() else { unreachable!("opened on the way down") };
            let opened = open_dir_at(parent.as_fd(), &self.levels[j].name)
                .and_then(|fd| nix::sys::stat::fstat(&fd).map(|st| (fd, st)));
            let rel = &self.path[..self.levels[j].path_len];
            match opened {
                Ok((fd, st)) if (st.st_dev, st.st_ino) == (self.levels[j].dev, self.levels[j].ino) => {
                    self.levels[j].dir = Some(fd);
                }
                Ok(_) | Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) => {
                    notes.push(format!(
                        "{}: moved or replaced while being archived, the rest of it skipped; {CRASH_CONSISTENT}",
                        String::from_utf8_lossy(rel)
                    ));
                    self.path.truncate(self.levels[j - 1].path_len);
                    self.levels.truncate(j);
                    self.lo = 1;
                    self.trim();
                    return Ok(false);
                }
                Err(e) => return Err(WalkError::Read { path: shown(&self.root, rel), source: e.into() }),
            }
        }
        self.lo = 1;
        self.trim();
        Ok(true)
    }

    /// Descriptors held now besides the root's (for tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.levels[1..].iter().filter(|l| l.dir.is_some()).count()
    }
}

/// Whether a `fstatat` result is a directory.
pub fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Bytes allocated under `root` (its entries', not following symlinks, not into other mounts),
/// walked like a backup, or `None` when that takes longer than `budget` or the tree is past
/// the walk's limits: a volume's status must answer fast, even for huge trees.
pub fn disk_usage(root: &Path, budget: Duration) -> Option<u64> {
    let start = Instant::now();
    let (fd, st) = open_root(root).ok()?;
    let root_dev = st.st_dev;
    let limits = WalkLimits { kept_fds: 16, ..WalkLimits::default() };
    let mut walk = TreeWalk::new(root, fd, &st, limits).ok()?;
    let mut notes = Vec::new();
    let mut total = 0u64;
    loop {
        if start.elapsed() > budget {
            return None;
        }
        let item = walk.next(&mut notes).ok()?;
        notes.clear();
        let Some(item) = item else { break };
        let Ok(st) = stat_at(item.parent, item.name) else { continue };
        total += u64::try_from(st.st_blocks).unwrap_or(0) * 512;
        if !is_dir(&st) || st.st_dev != root_dev {
            continue;
        }
        let Ok(fd) = open_dir_at(item.parent, item.name) else { continue };
        let Ok(now) = nix::sys::stat::fstat(&fd) else { continue };
        // A directory that cannot be listed is counted without its contents.
        let _ = walk.enter(fd, now.st_dev, now.st_ino);
    }
    Some(total)
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
