//! Point-in-time copies of a volume, for a backup to read while the volume's containers run
//! again (the consistent-backup window is the copy, not the backup).
//!
//! - `Image` volumes on a state dir that shares blocks (xfs, btrfs): the filesystem inside is
//!   frozen (`FIFREEZE`: everything dirty on disk, the journal clean, writers wait), the image
//!   is reflinked (`FICLONE`, constant time), thawed — a few milliseconds — and the copy is
//!   attached to a loop device and mounted read-only (ext4 `noload`, xfs `nouuid,norecovery`:
//!   the copy is clean, and xfs would refuse a second filesystem with the same UUID).
//! - Everything else: no snapshot ([`SnapshotError::Unsupported`] says why), and the caller
//!   keeps its containers held for the whole backup.
//!
//! A copy lives in `<state>/snapshots/TAG/` (the file `image` and the mountpoint `root`) and is
//! removed by
//! [`AnyBackend::drop_snapshot`], or at the next start when the daemon died first.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use voltool_runtime::mount::{self, MountFlags, MountRequest};

use super::{AnyBackend, Host, Layout, mount_err};
use crate::error::{Error, Result};
use crate::options::FsType;

/// A mounted point-in-time copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Where the copy is mounted (read-only).
    pub root: PathBuf,
    /// How it was made, for the catalog: `reflink`.
    pub kind: &'static str,
    /// The copy's image file.
    image: PathBuf,
}

/// Where snapshots live: `<state>/snapshots`.
pub fn snapshots_dir(layout: &Layout) -> PathBuf {
    layout.state_dir.join("snapshots")
}

fn unsupported(name: &str, reason: &str) -> Error {
    Error::Unsupported { volume: name.into(), reason: reason.into() }
}

impl AnyBackend {
    /// Takes a point-in-time copy of the (mounted) volume, named by `tag`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] saying why no snapshot is possible for this volume or state dir
    /// (the caller falls back to holding its containers); mount, loop and I/O errors.
    pub fn snapshot(&self, host: &Host, layout: &Layout, name: &str, tag: &str) -> Result<Snapshot> {
        let fs = match self {
            AnyBackend::Image(fs) => *fs,
            AnyBackend::Local | AnyBackend::Project => {
                return Err(unsupported(name, "directory volumes have no snapshot yet (only image-backed volumes)"));
            }
            AnyBackend::Tmpfs | AnyBackend::Nfs | AnyBackend::Cifs => {
                return Err(unsupported(name, "tmpfs and network volumes cannot be snapshotted"));
            }
        };
        let live = layout.mountpoint(name);
        // Never freeze what is under an unmounted mountpoint: that is the host's filesystem.
        if !host.mounter.is_mounted(&live).map_err(mount_err(name))? {
            return Err(unsupported(name, "it is not mounted (a snapshot is taken of a mounted volume)"));
        }
        let all = snapshots_dir(layout);
        std::fs::create_dir_all(&all).map_err(Error::io(name, "create", &all))?;
        let dir = all.join(tag);
        std::fs::create_dir(&dir).map_err(Error::io(name, "create", &dir))?;
        let (image, root) = (dir.join("image"), dir.join("root"));
        host.snapshots.freeze(&live).map_err(mount_err(name))?;
        let cloned = host.snapshots.reflink(&layout.image(name), &image);
        // Thawed whatever the clone did: a frozen volume blocks every writer in it.
        host.snapshots.thaw(&live).map_err(mount_err(name))?;
        if let Err(e) = cloned {
            let _ = std::fs::remove_dir(&dir);
            return Err(match e.errno() {
                Some(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY) => {
                    unsupported(name, "the state dir's filesystem cannot share blocks (reflinks need xfs or btrfs)")
                }
                _ => mount_err(name)(e),
            });
        }
        let mounted = mount_copy(host, name, fs, &image, &root);
        if let Err(e) = mounted {
            let _ = release(host, name, &root, &image);
            return Err(e);
        }
        Ok(Snapshot { root, kind: "reflink", image })
    }

    /// Unmounts and deletes a snapshot.
    ///
    /// # Errors
    /// [`Error::Unmount`], [`Error::Io`].
    pub fn drop_snapshot(host: &Host, name: &str, snap: &Snapshot) -> Result<()> {
        release(host, name, &snap.root, &snap.image)
    }

    /// Removes every snapshot left by a daemon that died while a backup read one.
    pub fn drop_stale_snapshots(host: &Host, layout: &Layout) {
        let Ok(entries) = std::fs::read_dir(snapshots_dir(layout)) else { return };
        for dir in entries.flatten().map(|e| e.path()) {
            if let Err(err) = release(host, "-", &dir.join("root"), &dir.join("image")) {
                tracing::warn!(snapshot = %dir.display(), error = %err, "could not remove a stale snapshot");
            } else {
                tracing::info!(snapshot = %dir.display(), "removed a snapshot left by a daemon that stopped during a backup");
            }
        }
    }
}

/// Attaches the copy and mounts it read-only at `root`.
fn mount_copy(host: &Host, name: &str, fs: FsType, image: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir(root).map_err(Error::io(name, "create", root))?;
    let att = host.loops.attach(image).map_err(mount_err(name))?;
    let data = match fs {
        FsType::Ext4 => "noload",
        FsType::Xfs => "nouuid,norecovery",
    };
    let req = MountRequest::filesystem(
        fs.name(),
        &att.device.display().to_string(),
        root,
        MountFlags::MS_RDONLY | MountFlags::MS_NODEV | MountFlags::MS_NOSUID | MountFlags::MS_NOEXEC,
        data.into(),
    );
    host.mounter.mount(&req).map_err(mount_err(name))
}

fn release(host: &Host, name: &str, root: &Path, image: &Path) -> Result<()> {
    if host.mounter.is_mounted(root).unwrap_or(false) {
        mount::unmount(host.mounter.as_ref(), root).map_err(super::unmount_err(name))?;
    }
    match std::fs::remove_dir(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(name, "remove", root)(e)),
    }
    match std::fs::remove_file(image) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(name, "remove", image)(e)),
    }
    let Some(dir) = root.parent() else { return Ok(()) };
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(name, "remove", dir)(e)),
    }
}
