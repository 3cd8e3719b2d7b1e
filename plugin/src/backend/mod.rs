//! Storage backends: where a volume's bytes live and how they get to its mountpoint.
//!
//! [`AnyBackend`] dispatches with a `match` (the youki libcgroups shape), so adding a
//! backend forces every operation to decide what it means for it:
//! - `Local`: a directory in the state dir, bind-mounted; `Project`: the same, limited by a
//!   project quota ([`local`]);
//! - `Image`: a sparse image file of exactly `size` bytes with ext4/xfs inside, attached to a
//!   loop device (autoclear) and mounted — the hard limit where project quotas are missing
//!   ([`image`]);
//! - `Tmpfs`: a tmpfs with `size=` ([`tmpfs`]);
//! - `Nfs`, `Cifs`: a directory on a server, checked at create and mounted by the kernel
//!   client (NFS also by the userspace client over FUSE) ([`nfs`], [`cifs`], [`remote`]).
//!
//! Every syscall goes through the seams of [`Host`] ([`tools`] for mkfs and grow), so all of
//! this runs against the recording fakes in tests.

mod any;
pub mod cifs;
mod host;
mod image;
mod layout;
mod local;
pub mod nfs;
pub mod remote;
mod snapshot;
mod tmpfs;
pub mod tools;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub use any::AnyBackend;
pub use host::{FuseSessions, Host};
pub use layout::Layout;
pub use snapshot::{Snapshot, snapshots_dir};

use crate::error::{Error, Result};
use crate::options::{Owner, format_size};

/// fsync of directories, so the entries created, renamed or removed in them survive a power
/// cut.
pub(crate) fn sync_dirs(volume: &str, dirs: &[&Path]) -> Result<()> {
    for d in dirs {
        std::fs::File::open(d).and_then(|f| f.sync_all()).map_err(Error::io(volume, "sync directory", d))?;
    }
    Ok(())
}

/// Applies uid/gid/mode to a volume root.
fn apply_owner(volume: &str, dir: &Path, owner: &Owner) -> Result<()> {
    if owner.uid.is_some() || owner.gid.is_some() {
        std::os::unix::fs::chown(dir, owner.uid, owner.gid).map_err(Error::io(volume, "chown", dir))?;
    }
    if let Some(mode) = owner.mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io(volume, "chmod", dir))?;
    }
    Ok(())
}

/// [`Error::Mount`] of volume `name` (mount, loop device and quota calls).
fn mount_err(name: &str) -> impl FnOnce(voltool_runtime::Error) -> Error + '_ {
    move |source| Error::Mount { volume: name.into(), source }
}

/// [`Error::Unmount`] of volume `name`.
fn unmount_err(name: &str) -> impl FnOnce(voltool_runtime::Error) -> Error + '_ {
    move |source| Error::Unmount { volume: name.into(), source }
}

/// Refuses a resize to `new` bytes that does not grow the limit `old`.
fn refuse_shrink(name: &str, old: u64, new: u64) -> Result<()> {
    if new > old {
        return Ok(());
    }
    Err(Error::Resize {
        volume: name.into(),
        reason: format!("shrinking is not supported (current limit {}, asked {})", format_size(old), format_size(new)),
    })
}

#[cfg(test)]
mod tests;
