//! Directory handles for working inside a tree that someone else writes to at the same time.
//!
//! A volume's data is controlled by the containers that use it: any of its names may be
//! swapped for a symlink, a directory may be renamed away and another put in its place, at any
//! moment — also while the daemon restores into it, backs it up or cleans up after a failure.
//! A path that was checked and is then used again is a race such a writer wins (the long line
//! of runc's symlink CVEs). So nothing here takes a path below the directory it starts from:
//!
//! - a [`Dir`] is an open directory descriptor; every operation names one entry *in* it
//!   (a single path component: `/` and `..` are refused before the kernel sees them), with
//!   the `*at(2)` calls and `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`, so a symlink planted under the
//!   name is acted on as a link, never followed;
//! - going down opens the next directory with `openat2(2)` and `RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`: the kernel itself refuses a
//!   symlink, a mount point or anything outside; what comes back is the directory that was
//!   there at that instant, and stays that directory whatever is renamed afterwards;
//! - [`Dir::remove_tree`] removes a tree depth-first by descriptors the same way, and a walk
//!   deeper than [`KEPT_FDS`] levels re-opens from the nearest kept ancestor descriptor,
//!   checking each level's device and inode, never from a path.
//!
//! Only the starting directory is opened by path ([`Dir::open`]), and only paths the daemon
//! made itself (a mount point under its state directory) are given there.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

mod remove;

#[cfg(test)]
mod tests;

/// How many directory descriptors [`Dir::remove_tree`] keeps open on its way down; deeper
/// levels are re-opened from the nearest kept one.
pub const KEPT_FDS: usize = 64;

/// The resolve flags for every step down: no symlinks (not even magic links), nothing above
/// the directory, no other mount.
fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A single path component: not empty, no `/`, not `.` or `..`, no NUL.
///
/// # Errors
/// `EINVAL` for anything else.
pub fn check_name(name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a single file name")));
    }
    Ok(())
}

/// An open directory; see the module docs.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl From<Dir> for OwnedFd {
    fn from(d: Dir) -> OwnedFd {
        d.fd
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The kind of an entry as `lstat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// What `fstatat(AT_SYMLINK_NOFOLLOW)` says of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub size: u64,
}

impl From<FileStat> for Stat {
    fn from(st: FileStat) -> Self {
        let fmt = st.st_mode & libc::S_IFMT;
        let kind = match fmt {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        #[allow(clippy::unnecessary_cast)]
        Stat { kind, dev: st.st_dev as u64, ino: st.st_ino as u64, mode: st.st_mode & 0o7777, size: st.st_size as u64 }
    }
}

impl Dir {
    /// Opens the directory at `path` (`O_DIRECTORY | O_NOFOLLOW`). Only for paths the caller
    /// made itself: the path is walked by the kernel like any other.
    ///
    /// # Errors
    /// The `open(2)` error (`ELOOP` when `path` is a symlink, `ENOTDIR` when not a directory).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(io_err)?;
        Ok(Dir { fd })
    }

    /// Opens the directory `name` in this one: `openat2(2)` with `RESOLVE_BENEATH |
    /// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`.
    ///
    /// # Errors
    /// `ELOOP` for a symlink, `ENOTDIR` for anything but a directory, `EXDEV` for a mount
    /// point, `ENOENT`; `EINVAL` for a name that is not a single component.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        check_name(name)?;
        let how = OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY)
            .resolve(beneath());
        match nix::fcntl::openat2(&self.fd, name, how) {
            Ok(fd) => Ok(Dir { fd }),
            // With O_DIRECTORY the kernel says ENOTDIR for a symlink too: tell them apart, so
            // callers (and messages) know a link was refused.
            Err(nix::errno::Errno::ENOTDIR) if self.stat_entry(name).is_ok_and(|st| st.kind == Kind::Symlink) => {
                Err(io::Error::from_raw_os_error(libc::ELOOP))
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// A second descriptor of this directory (for a thread of its own).
    ///
    /// # Errors
    /// The `openat(2)` error.
    pub fn try_clone(&self) -> io::Result<Dir> {
        let fd =
            nix::fcntl::openat(&self.fd, ".", OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(io_err)?;
        Ok(Dir { fd })
    }

    /// Makes the directory `name` (mode `mode` less the umask).
    ///
    /// # Errors
    /// The `mkdirat(2)` error (`EEXIST` when anything is there, a symlink included).
    pub fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        check_name(name)?;
        nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)).map_err(io_err)
    }

    /// Creates the new regular file `name` for writing: `O_CREAT | O_EXCL | O_NOFOLLOW`, so
    /// nothing already there (a symlink included) is opened or followed.
    ///
    /// # Errors
    /// The `openat(2)` error (`EEXIST`).
    pub fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        check_name(name)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        nix::fcntl::openat(&self.fd, name, flags, Mode::from_bits_truncate(mode)).map(File::from).map_err(io_err)
    }

    /// Opens the regular file `name` for reading, never through a symlink; `O_NONBLOCK` so a
    /// fifo planted under the name does not block (it is refused: not a regular file).
    ///
    /// # Errors
    /// The `openat(2)` error; `EINVAL` when the entry is not a regular file.
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        check_name(name)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let f = File::from(nix::fcntl::openat(&self.fd, name, flags, Mode::empty()).map_err(io_err)?);
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a regular file")));
        }
        Ok(f)
    }

    /// Makes the symlink `name` pointing at `target` (the target is stored, never resolved).
    ///
    /// # Errors
    /// The `symlinkat(2)` error.
    pub fn symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        nix::unistd::symlinkat(target, &self.fd, name).map_err(io_err)
    }

    /// Makes `name` a hard link of `from_name` in `from` (`linkat(2)` without
    /// `AT_SYMLINK_FOLLOW`: a symlink there is linked as itself, never followed).
    ///
    /// # Errors
    /// The `linkat(2)` error.
    pub fn hard_link(&self, from: &Dir, from_name: &OsStr, name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        check_name(from_name)?;
        nix::unistd::linkat(&from.fd, from_name, &self.fd, name, AtFlags::empty()).map_err(io_err)
    }

    /// Makes the fifo `name`.
    ///
    /// # Errors
    /// The `mknodat(2)` error.
    pub fn mkfifo(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        check_name(name)?;
        nix::sys::stat::mknodat(&self.fd, name, SFlag::S_IFIFO, Mode::from_bits_truncate(mode), 0).map_err(io_err)
    }

    /// Makes the device node `name` (`block`: a block device, else a character device).
    ///
    /// # Errors
    /// The `mknodat(2)` error.
    pub fn mknod(&self, name: &OsStr, block: bool, mode: u32, major: u64, minor: u64) -> io::Result<()> {
        check_name(name)?;
        let kind = if block { SFlag::S_IFBLK } else { SFlag::S_IFCHR };
        let dev = nix::sys::stat::makedev(major, minor);
        nix::sys::stat::mknodat(&self.fd, name, kind, Mode::from_bits_truncate(mode), dev).map_err(io_err)
    }

    /// `lstat` of the entry `name`.
    ///
    /// # Errors
    /// The `fstatat(2)` error (`ENOENT`).
    pub fn stat_entry(&self, name: &OsStr) -> io::Result<Stat> {
        check_name(name)?;
        nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map(Stat::from).map_err(io_err)
    }

    /// `fstat` of this directory.
    ///
    /// # Errors
    /// The `fstat(2)` error.
    pub fn stat(&self) -> io::Result<Stat> {
        nix::sys::stat::fstat(&self.fd).map(Stat::from).map_err(io_err)
    }

    /// Removes the non-directory `name` (a symlink is removed as itself).
    ///
    /// # Errors
    /// The `unlinkat(2)` error (`EISDIR` for a directory).
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir).map_err(io_err)
    }

    /// Removes the empty directory `name`.
    ///
    /// # Errors
    /// The `unlinkat(2)` error (`ENOTEMPTY`, `ENOTDIR`).
    pub fn rmdir(&self, name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir).map_err(io_err)
    }

    /// Renames the entry `name` here to `to_name` in `to` (the entry itself moves, symlink or
    /// not; nothing is followed). `no_replace`: fail with `EEXIST` rather than replace what is
    /// at the new name (`RENAME_NOREPLACE`).
    ///
    /// # Errors
    /// The `renameat2(2)` error.
    pub fn rename(&self, name: &OsStr, to: &Dir, to_name: &OsStr, no_replace: bool) -> io::Result<()> {
        check_name(name)?;
        check_name(to_name)?;
        let flags = if no_replace { RenameFlags::RENAME_NOREPLACE } else { RenameFlags::empty() };
        nix::fcntl::renameat2(&self.fd, name, &to.fd, to_name, flags).map_err(io_err)
    }

    /// Swaps the entries `name` here and `to_name` in `to` atomically (`RENAME_EXCHANGE`): both
    /// must exist; either may be a directory.
    ///
    /// # Errors
    /// The `renameat2(2)` error.
    pub fn exchange(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        check_name(to_name)?;
        nix::fcntl::renameat2(&self.fd, name, &to.fd, to_name, RenameFlags::RENAME_EXCHANGE).map_err(io_err)
    }

    /// Sets the owner of the entry `name` without following a symlink there.
    ///
    /// # Errors
    /// The `fchownat(2)` error.
    pub fn lchown(&self, name: &OsStr, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        check_name(name)?;
        nix::unistd::fchownat(
            &self.fd,
            name,
            uid.map(Uid::from_raw),
            gid.map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io_err)
    }

    /// Sets the access and modification times of the entry `name` without following a
    /// symlink there.
    ///
    /// # Errors
    /// The `utimensat(2)` error.
    pub fn set_entry_times(&self, name: &OsStr, sec: i64, nsec: u32) -> io::Result<()> {
        check_name(name)?;
        let t = TimeSpec::new(sec, i64::from(nsec));
        nix::sys::stat::utimensat(&self.fd, name, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(io_err)
    }

    /// Sets this directory's mode (`fchmod(2)` on the descriptor).
    ///
    /// # Errors
    /// The `fchmod(2)` error.
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        nix::sys::stat::fchmod(&self.fd, Mode::from_bits_truncate(mode)).map_err(io_err)
    }

    /// Sets this directory's owner (`fchown(2)` on the descriptor).
    ///
    /// # Errors
    /// The `fchown(2)` error.
    pub fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        nix::unistd::fchown(&self.fd, uid.map(Uid::from_raw), gid.map(Gid::from_raw)).map_err(io_err)
    }

    /// Sets this directory's access and modification times (`futimens(2)`).
    ///
    /// # Errors
    /// The `futimens(2)` error.
    pub fn set_times(&self, sec: i64, nsec: u32) -> io::Result<()> {
        let t = TimeSpec::new(sec, i64::from(nsec));
        nix::sys::stat::futimens(&self.fd, &t, &t).map_err(io_err)
    }

    /// `fsync(2)` of the directory: its entries (creates, renames, removals) are on disk.
    ///
    /// # Errors
    /// The `fsync(2)` error.
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(&self.fd).map_err(io_err)
    }

    /// `syncfs(2)` of the filesystem this directory is on.
    ///
    /// # Errors
    /// The `syncfs(2)` error (a writeback error since this descriptor was opened).
    pub fn syncfs(&self) -> io::Result<()> {
        nix::unistd::syncfs(&self.fd).map_err(io_err)
    }

    /// The names in this directory (not `.` and `..`), read through a second descriptor.
    ///
    /// # Errors
    /// The `openat(2)`/`getdents(2)` error.
    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        let fd =
            nix::fcntl::openat(&self.fd, ".", OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY, Mode::empty())
                .map_err(io_err)?;
        let mut d = nix::dir::Dir::from_fd(fd).map_err(io_err)?;
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e.map_err(io_err)?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(OsStr::from_bytes(n).to_owned());
            }
        }
        Ok(out)
    }

    /// The raw descriptor (for logs and tests).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
