//! What a point-in-time copy of a volume needs from the kernel: freezing a filesystem
//! (`FIFREEZE`/`FITHAW`, ioctl_fs(2): writes block, everything dirty is on disk and the journal
//! is clean), reflinking a file (`FICLONE`, ioctl_ficlone(2): a copy that shares the
//! original's blocks, made in constant time on xfs and btrfs), and btrfs subvolumes with their
//! read-only snapshots ([`btrfs`]).

#![allow(unsafe_code)]

mod btrfs;
mod tree;

pub use tree::TreeCopy;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;

use crate::error::{Error, Result};

// linux/fs.h: FIFREEZE _IOWR('X', 119, int), FITHAW _IOWR('X', 120, int), FICLONE _IOW(0x94, 9, int).
nix::ioctl_readwrite_bad!(fifreeze, nix::request_code_readwrite!(b'X', 119, std::mem::size_of::<i32>()), i32);
nix::ioctl_readwrite_bad!(fithaw, nix::request_code_readwrite!(b'X', 120, std::mem::size_of::<i32>()), i32);
nix::ioctl_write_int!(ficlone, 0x94, 9);

/// The snapshot seam.
pub trait SnapshotOps: Send + Sync {
    /// Freezes the filesystem mounted at `mountpoint` (needs `CAP_SYS_ADMIN`).
    ///
    /// # Errors
    /// [`Error::Snapshot`]; `EBUSY` when it is frozen already, `EOPNOTSUPP` when the
    /// filesystem cannot freeze.
    fn freeze(&self, mountpoint: &Path) -> Result<()>;

    /// Thaws it. `EINVAL` (not frozen) counts as done.
    ///
    /// # Errors
    /// [`Error::Snapshot`].
    fn thaw(&self, mountpoint: &Path) -> Result<()>;

    /// Creates `dst` (mode 0600, must not exist) as a reflink copy of `src`.
    ///
    /// # Errors
    /// [`Error::Snapshot`]; `EOPNOTSUPP`/`EXDEV`/`EINVAL` when the filesystem cannot share
    /// blocks between them. `dst` is removed again on failure.
    fn reflink(&self, src: &Path, dst: &Path) -> Result<()>;

    /// Makes `dst` (which must not exist) a copy of the tree at `src` with every regular file
    /// reflinked (see `tree.rs`): the snapshot of a directory volume on xfs.
    ///
    /// # Errors
    /// [`Error::Snapshot`] (`EOPNOTSUPP`, `EXDEV`, `EINVAL` when files cannot share blocks
    /// there), [`Error::Walk`].
    fn reflink_tree(&self, src: &Path, dst: &Path) -> Result<TreeCopy>;

    /// Whether `path` is the root directory of a btrfs subvolume.
    fn is_subvolume(&self, path: &Path) -> bool;

    /// Creates the directory `parent/name` as a btrfs subvolume (mode 0755, root's).
    ///
    /// # Errors
    /// [`Error::Snapshot`]; `EOPNOTSUPP` when `parent` is not on btrfs.
    fn create_subvolume(&self, parent: &Path, name: &str) -> Result<()>;

    /// Creates `parent/name` as a read-only snapshot of the subvolume `src`.
    ///
    /// # Errors
    /// [`Error::Snapshot`].
    fn snapshot_subvolume(&self, src: &Path, parent: &Path, name: &str) -> Result<()>;

    /// Deletes the subvolume or snapshot `parent/name` and everything in it (gone already:
    /// done).
    ///
    /// # Errors
    /// [`Error::Snapshot`].
    fn delete_subvolume(&self, parent: &Path, name: &str) -> Result<()>;
}

fn open_dir(path: &Path, op: &'static str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::O_DIRECTORY | libc_flags::O_NOFOLLOW | libc_flags::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::Snapshot { op, path: path.into(), errno: io_errno(&e) })
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

mod libc_flags {
    pub const O_DIRECTORY: i32 = nix::fcntl::OFlag::O_DIRECTORY.bits();
    pub const O_NOFOLLOW: i32 = nix::fcntl::OFlag::O_NOFOLLOW.bits();
    pub const O_CLOEXEC: i32 = nix::fcntl::OFlag::O_CLOEXEC.bits();
}

/// The real kernel calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSnapshots;

impl SnapshotOps for LinuxSnapshots {
    fn freeze(&self, mountpoint: &Path) -> Result<()> {
        let dir = open_dir(mountpoint, "freeze")?;
        let mut arg = 0i32;
        // SAFETY: FIFREEZE takes an int it does not read; `dir` is an open fd for the call.
        unsafe { fifreeze(dir.as_raw_fd(), &raw mut arg) }.map(drop).map_err(|errno| Error::Snapshot {
            op: "freeze",
            path: mountpoint.into(),
            errno,
        })
    }

    fn thaw(&self, mountpoint: &Path) -> Result<()> {
        let dir = open_dir(mountpoint, "thaw")?;
        let mut arg = 0i32;
        // SAFETY: as for FIFREEZE.
        match unsafe { fithaw(dir.as_raw_fd(), &raw mut arg) } {
            Ok(_) | Err(Errno::EINVAL) => Ok(()),
            Err(errno) => Err(Error::Snapshot { op: "thaw", path: mountpoint.into(), errno }),
        }
    }

    fn reflink(&self, src: &Path, dst: &Path) -> Result<()> {
        let from = OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_CLOEXEC)
            .open(src)
            .map_err(|e| Error::Snapshot { op: "reflink from", path: src.into(), errno: io_errno(&e) })?;
        let to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_CLOEXEC)
            .open(dst)
            .map_err(|e| Error::Snapshot { op: "reflink to", path: dst.into(), errno: io_errno(&e) })?;
        // SAFETY: FICLONE takes the source fd as its argument; both fds are open for the call.
        let done = unsafe { ficlone(to.as_raw_fd(), from.as_raw_fd() as nix::sys::ioctl::ioctl_param_type) };
        match done {
            Ok(_) => to.sync_all().map_err(|e| Error::Snapshot { op: "sync", path: dst.into(), errno: io_errno(&e) }),
            Err(errno) => {
                drop(to);
                let _ = std::fs::remove_file(dst);
                Err(Error::Snapshot { op: "reflink", path: dst.into(), errno })
            }
        }
    }

    fn reflink_tree(&self, src: &Path, dst: &Path) -> Result<TreeCopy> {
        tree::reflink_tree(src, dst)
    }

    fn is_subvolume(&self, path: &Path) -> bool {
        btrfs::is_subvolume(path)
    }

    fn create_subvolume(&self, parent: &Path, name: &str) -> Result<()> {
        btrfs::create(parent, name)
    }

    fn snapshot_subvolume(&self, src: &Path, parent: &Path, name: &str) -> Result<()> {
        btrfs::snapshot(src, parent, name)
    }

    fn delete_subvolume(&self, parent: &Path, name: &str) -> Result<()> {
        btrfs::delete(parent, name)
    }
}

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotCall {
    Freeze(PathBuf),
    Thaw(PathBuf),
    Reflink { src: PathBuf, dst: PathBuf },
    ReflinkTree { src: PathBuf, dst: PathBuf },
    CreateSubvolume(PathBuf),
    SnapshotSubvolume { src: PathBuf, dst: PathBuf },
    DeleteSubvolume(PathBuf),
}

/// Records calls; reflinks copy the file (or fail with `fail_reflink`), freezes do nothing;
/// subvolumes are plain directories it remembers (a snapshot is an empty one).
#[derive(Debug, Default)]
pub struct RecordingSnapshots {
    calls: Mutex<Vec<SnapshotCall>>,
    fail_reflink: Mutex<Option<Errno>>,
    subvolumes: Mutex<std::collections::BTreeSet<PathBuf>>,
}

impl RecordingSnapshots {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn calls(&self) -> Vec<SnapshotCall> {
        self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Every reflink from now on fails with `errno` (a filesystem without reflinks).
    pub fn fail_reflink(&self, errno: Errno) {
        *self.fail_reflink.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(errno);
    }

    fn record(&self, c: SnapshotCall) {
        self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(c);
    }
}

impl SnapshotOps for RecordingSnapshots {
    fn freeze(&self, mountpoint: &Path) -> Result<()> {
        self.record(SnapshotCall::Freeze(mountpoint.into()));
        Ok(())
    }

    fn thaw(&self, mountpoint: &Path) -> Result<()> {
        self.record(SnapshotCall::Thaw(mountpoint.into()));
        Ok(())
    }

    fn reflink(&self, src: &Path, dst: &Path) -> Result<()> {
        self.record(SnapshotCall::Reflink { src: src.into(), dst: dst.into() });
        if let Some(errno) = *self.fail_reflink.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            return Err(Error::Snapshot { op: "reflink", path: dst.into(), errno });
        }
        std::fs::copy(src, dst).map(drop).map_err(|e| Error::Snapshot {
            op: "reflink",
            path: dst.into(),
            errno: io_errno(&e),
        })
    }

    fn reflink_tree(&self, src: &Path, dst: &Path) -> Result<TreeCopy> {
        self.record(SnapshotCall::ReflinkTree { src: src.into(), dst: dst.into() });
        if let Some(errno) = *self.fail_reflink.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            return Err(Error::Snapshot { op: "reflink", path: dst.into(), errno });
        }
        std::fs::create_dir(dst).map_err(|e| Error::Snapshot {
            op: "create",
            path: dst.into(),
            errno: io_errno(&e),
        })?;
        Ok(TreeCopy::default())
    }

    fn is_subvolume(&self, path: &Path) -> bool {
        self.subvolumes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(path)
    }

    fn create_subvolume(&self, parent: &Path, name: &str) -> Result<()> {
        let p = parent.join(name);
        self.record(SnapshotCall::CreateSubvolume(p.clone()));
        std::fs::create_dir(&p).map_err(|e| Error::Snapshot {
            op: "create subvolume",
            path: p.clone(),
            errno: io_errno(&e),
        })?;
        self.subvolumes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(p);
        Ok(())
    }

    fn snapshot_subvolume(&self, src: &Path, parent: &Path, name: &str) -> Result<()> {
        let p = parent.join(name);
        self.record(SnapshotCall::SnapshotSubvolume { src: src.into(), dst: p.clone() });
        std::fs::create_dir(&p).map_err(|e| Error::Snapshot {
            op: "snapshot",
            path: p.clone(),
            errno: io_errno(&e),
        })?;
        self.subvolumes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(p);
        Ok(())
    }

    fn delete_subvolume(&self, parent: &Path, name: &str) -> Result<()> {
        let p = parent.join(name);
        self.record(SnapshotCall::DeleteSubvolume(p.clone()));
        self.subvolumes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&p);
        match std::fs::remove_dir_all(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Snapshot { op: "delete subvolume", path: p, errno: io_errno(&e) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI runs the runtime tests as root");
        println!("SKIP snapshot tests: not root");
        false
    }

    /// On the filesystem of the temp dir: a reflink either works and gives the same bytes, or
    /// fails with an errno that says the filesystem cannot (never a half copy left behind).
    #[test]
    fn reflink_copies_or_says_the_filesystem_cannot() {
        let dir = tempfile::tempdir().expect("tmp");
        let (src, dst) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&src, b"point in time").expect("write");
        match LinuxSnapshots.reflink(&src, &dst) {
            Ok(()) => assert_eq!(std::fs::read(&dst).expect("read"), b"point in time"),
            Err(e) => {
                assert!(matches!(e.errno(), Some(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL)), "{e}");
                assert!(!dst.exists(), "no half copy");
            }
        }
        assert!(LinuxSnapshots.reflink(&src, &dst).is_err() || !dst.exists(), "dst must not exist");
    }

    #[test]
    fn thawing_what_is_not_frozen_is_done() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tmp");
        LinuxSnapshots.thaw(dir.path()).expect("thaw of a filesystem that is not frozen");
    }
}
