//! btrfs subvolumes (ioctl_btrfs(2)-style, linux/btrfs.h): a volume's data directory made a
//! subvolume, so a read-only snapshot of it is one ioctl (`BTRFS_IOC_SNAP_CREATE_V2`), atomic
//! and in constant time.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;

use super::open_dir;
use crate::error::{Error, Result};

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
/// `BTRFS_PATH_NAME_MAX`.
const PATH_NAME_MAX: usize = 4087;
/// `BTRFS_SUBVOL_NAME_MAX`.
const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_SUBVOL_RDONLY`.
const SUBVOL_RDONLY: u64 = 1 << 1;
/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
const SUBVOL_ROOT_INO: u64 = 256;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` (the `size`/`qgroup_inherit` union as its `unused[4]`).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

nix::ioctl_write_ptr!(subvol_create, BTRFS_IOCTL_MAGIC, 14, VolArgs);
nix::ioctl_write_ptr!(snap_destroy, BTRFS_IOCTL_MAGIC, 15, VolArgs);
nix::ioctl_write_ptr!(snap_create_v2, BTRFS_IOCTL_MAGIC, 23, VolArgsV2);

/// Copies a single path component into an ioctl's name field.
fn name_field<const N: usize>(name: &str, op: &'static str, parent: &Path) -> Result<[u8; N]> {
    if name.is_empty() || name.len() >= N || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(Error::Snapshot { op, path: parent.join(name), errno: Errno::EINVAL });
    }
    let mut f = [0u8; N];
    f[..name.len()].copy_from_slice(name.as_bytes());
    Ok(f)
}

fn is_btrfs(dir: &File) -> bool {
    nix::sys::statfs::fstatfs(dir.as_fd()).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// Whether `path` (not followed if a symlink) is the root of a btrfs subvolume.
pub(super) fn is_subvolume(path: &Path) -> bool {
    match open_dir(path, "inspect") {
        Ok(dir) => is_btrfs(&dir) && dir.metadata().is_ok_and(|m| m.ino() == SUBVOL_ROOT_INO),
        Err(_) => false,
    }
}

/// Creates the subvolume `parent/name`.
pub(super) fn create(parent: &Path, name: &str) -> Result<()> {
    let dir = open_dir(parent, "create a subvolume in")?;
    if !is_btrfs(&dir) {
        return Err(Error::Snapshot { op: "create a subvolume in", path: parent.into(), errno: Errno::EOPNOTSUPP });
    }
    let args = VolArgs { fd: 0, name: name_field(name, "create subvolume", parent)? };
    // SAFETY: `args` is a valid, fully initialised btrfs_ioctl_vol_args; `dir` is open.
    unsafe { subvol_create(dir.as_raw_fd(), &raw const args) }.map(drop).map_err(|errno| Error::Snapshot {
        op: "create subvolume",
        path: parent.join(name),
        errno,
    })
}

/// Creates `parent/name` as a read-only snapshot of the subvolume `src`.
pub(super) fn snapshot(src: &Path, parent: &Path, name: &str) -> Result<()> {
    let from = open_dir(src, "snapshot")?;
    let dir = open_dir(parent, "snapshot into")?;
    let args = VolArgsV2 {
        fd: i64::from(from.as_raw_fd()),
        transid: 0,
        flags: SUBVOL_RDONLY,
        unused: [0; 4],
        name: name_field(name, "snapshot", parent)?,
    };
    // SAFETY: `args` is a valid, fully initialised btrfs_ioctl_vol_args_v2 naming an open fd.
    unsafe { snap_create_v2(dir.as_raw_fd(), &raw const args) }.map(drop).map_err(|errno| Error::Snapshot {
        op: "snapshot",
        path: parent.join(name),
        errno,
    })
}

/// Deletes the subvolume (or snapshot) `parent/name` with its contents.
pub(super) fn delete(parent: &Path, name: &str) -> Result<()> {
    let dir = open_dir(parent, "delete a subvolume in")?;
    let args = VolArgs { fd: 0, name: name_field(name, "delete subvolume", parent)? };
    // SAFETY: as for `create`.
    match unsafe { snap_destroy(dir.as_raw_fd(), &raw const args) } {
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(errno) => Err(Error::Snapshot { op: "delete subvolume", path: parent.join(name), errno }),
    }
}
