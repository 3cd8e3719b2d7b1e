//! Point-in-time copies of a volume, for a backup to read while the volume's containers run
//! again (the consistent-backup window is the copy, not the backup).
//!
//! - `Image` volumes on a state dir that shares blocks (xfs, btrfs): the filesystem inside is
//!   frozen (`FIFREEZE`: everything dirty on disk, the journal clean, writers wait), the image
//!   is reflinked (`FICLONE`, constant time), thawed — a few milliseconds — and the copy is
//!   attached to a loop device and mounted read-only (ext4 `noload`, xfs `nouuid,norecovery`:
//!   the copy is clean, and xfs would refuse a second filesystem with the same UUID).
//! - Directory volumes on a btrfs state dir (made subvolumes at create): a read-only snapshot
//!   of the subvolume, one atomic ioctl.
//! - Other directory volumes on a state dir with reflinks (xfs): a copy of the tree with every
//!   file reflinked (`SnapshotOps::reflink_tree`; time grows with the number of entries, not
//!   with their bytes).
//! - Everything else: no snapshot ([`Error::Unsupported`] says why), and the caller keeps its
//!   containers held for the whole backup.
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
    /// How it was made, for the catalog: `reflink` (an image), `reflink-tree` or `btrfs`.
    pub kind: &'static str,
    /// How long the volume's filesystem was frozen for it (image copies).
    pub frozen: Option<std::time::Duration>,
    /// `<state>/snapshots/TAG`, which holds it.
    dir: PathBuf,
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
            AnyBackend::Local if host.snapshots.is_subvolume(&layout.data_dir(name)) => {
                return subvolume_snapshot(host, layout, name, tag);
            }
            AnyBackend::Local | AnyBackend::Project if host.reflinks => return tree_snapshot(host, layout, name, tag),
            AnyBackend::Local | AnyBackend::Project => {
                return Err(unsupported(
                    name,
                    "directory volumes have snapshots only on a state dir with reflinks (xfs reflink=1, btrfs)",
                ));
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
        let t0 = std::time::Instant::now();
        host.snapshots.freeze(&live).map_err(mount_err(name))?;
        let cloned = host.snapshots.reflink(&layout.image(name), &image);
        // Thawed whatever the clone did: a frozen volume blocks every writer in it.
        host.snapshots.thaw(&live).map_err(mount_err(name))?;
        let frozen = Some(t0.elapsed());
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
            let _ = release(host, name, &dir);
            return Err(e);
        }
        Ok(Snapshot { root, kind: "reflink", frozen, dir })
    }

    /// Unmounts and deletes a snapshot.
    ///
    /// # Errors
    /// [`Error::Unmount`], [`Error::Io`].
    pub fn drop_snapshot(host: &Host, name: &str, snap: &Snapshot) -> Result<()> {
        release(host, name, &snap.dir)
    }

    /// Removes every snapshot left by a daemon that died while a backup read one.
    pub fn drop_stale_snapshots(host: &Host, layout: &Layout) {
        let Ok(entries) = std::fs::read_dir(snapshots_dir(layout)) else { return };
        for dir in entries.flatten().map(|e| e.path()) {
            if let Err(err) = release(host, "-", &dir) {
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

/// A read-only btrfs snapshot of the volume's data subvolume at `<state>/snapshots/TAG/root`.
fn subvolume_snapshot(host: &Host, layout: &Layout, name: &str, tag: &str) -> Result<Snapshot> {
    let all = snapshots_dir(layout);
    std::fs::create_dir_all(&all).map_err(Error::io(name, "create", &all))?;
    let dir = all.join(tag);
    std::fs::create_dir(&dir).map_err(Error::io(name, "create", &dir))?;
    if let Err(e) = host.snapshots.snapshot_subvolume(&layout.data_dir(name), &dir, "root") {
        let _ = std::fs::remove_dir(&dir);
        return Err(mount_err(name)(e));
    }
    Ok(Snapshot { root: dir.join("root"), kind: "btrfs", frozen: None, dir })
}

/// A reflink copy of the volume's data tree at `<state>/snapshots/TAG/root`.
fn tree_snapshot(host: &Host, layout: &Layout, name: &str, tag: &str) -> Result<Snapshot> {
    let all = snapshots_dir(layout);
    std::fs::create_dir_all(&all).map_err(Error::io(name, "create", &all))?;
    let dir = all.join(tag);
    std::fs::create_dir(&dir).map_err(Error::io(name, "create", &dir))?;
    let root = dir.join("root");
    match host.snapshots.reflink_tree(&layout.data_dir(name), &root) {
        Ok(copy) => {
            for n in copy.notes.iter().take(20) {
                tracing::warn!(volume = name, "snapshot: {n}");
            }
            Ok(Snapshot { root, kind: "reflink-tree", frozen: None, dir })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(match e.errno() {
                Some(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY) => {
                    unsupported(name, "the state dir's filesystem cannot share blocks (reflinks need xfs or btrfs)")
                }
                Some(Errno::E2BIG) => unsupported(name, "too many directories and hard links for a tree copy"),
                _ => mount_err(name)(e),
            })
        }
    }
}

/// Removes the snapshot in `dir` (a subvolume, a tree copy, or a mounted image copy) and `dir` itself;
/// what is gone already counts as removed.
fn release(host: &Host, name: &str, dir: &Path) -> Result<()> {
    let (root, image) = (dir.join("root"), dir.join("image"));
    let gone_ok = |what: &Path, r: std::io::Result<()>| match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(name, "remove", what)(e)),
    };
    if host.snapshots.is_subvolume(&root) {
        host.snapshots.delete_subvolume(dir, "root").map_err(mount_err(name))?;
    } else {
        // Every mount stacked there (a copy mounted, and what a reader left over it).
        for _ in 0..8 {
            if !host.mounter.is_mounted(&root).unwrap_or(false) {
                break;
            }
            mount::unmount(host.mounter.as_ref(), &root).map_err(super::unmount_err(name))?;
        }
        // A tree copy is ours (never reachable by a container); remove_dir_all does not follow
        // symlinks. Never under a mount that is still there.
        if !host.mounter.is_mounted(&root).unwrap_or(true) {
            gone_ok(&root, std::fs::remove_dir_all(&root))?;
        }
    }
    gone_ok(&image, std::fs::remove_file(&image))?;
    gone_ok(dir, std::fs::remove_dir(dir))
}
