//! Directory-backed volumes: a directory in the state dir, bind-mounted at the mountpoint —
//! without a size limit (`Local`) or limited by a project quota on the state dir's
//! filesystem (`Project`: the kernel counts usage, and grows the limit in place).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::{Host, Layout, apply_owner, mount_err, refuse_shrink};
use crate::error::{Error, Result};
use crate::options::VolumeSpec;

/// Creates the volume's data directory with mode 0755 and the volume's owner; on a btrfs
/// state dir as a subvolume, so a backup can snapshot it.
pub(super) fn provision_dir(host: &Host, layout: &Layout, name: &str, spec: &VolumeSpec) -> Result<()> {
    let data = layout.data_dir(name);
    if host.subvolumes {
        host.snapshots.create_subvolume(&layout.volume_dir(name), "data").map_err(mount_err(name))?;
    } else {
        std::fs::create_dir(&data).map_err(Error::io(name, "create", &data))?;
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).map_err(Error::io(name, "chmod", &data))?;
    apply_owner(name, &data, &spec.owner)
}

/// Creates the data directory and puts it in the volume's project with its limit.
pub(super) fn provision_project(host: &Host, layout: &Layout, name: &str, spec: &VolumeSpec) -> Result<()> {
    provision_dir(host, layout, name, spec)?;
    let data = layout.data_dir(name);
    let (id, size) = project_of(name, spec)?;
    host.projects.assign(&data, id).map_err(mount_err(name))?;
    host.projects.set_limit(&data, id, size).map_err(mount_err(name))
}

/// Raises the project's limit to `new_size`: in place, mounted or not.
pub(super) fn grow_project(host: &Host, layout: &Layout, name: &str, spec: &VolumeSpec, new_size: u64) -> Result<()> {
    refuse_shrink(name, spec.size.unwrap_or_default(), new_size)?;
    let (id, _) = project_of(name, spec)?;
    host.projects.set_limit(&layout.data_dir(name), id, new_size).map_err(mount_err(name))
}

/// Bytes the project holds, as the kernel counts them (no walk).
pub(super) fn project_usage(host: &Host, layout: &Layout, name: &str, spec: &VolumeSpec) -> Option<u64> {
    let (id, _) = project_of(name, spec).ok()?;
    host.projects.usage(&layout.data_dir(name), id).ok().map(|u| u.used)
}

/// The project ID and limit of a project-quota volume.
fn project_of(name: &str, spec: &VolumeSpec) -> Result<(u32, u64)> {
    match (spec.project_id, spec.size) {
        (Some(id), Some(size)) => Ok((id, size)),
        _ => Err(Error::Internal(format!("volume {name}: project-quota volume without project id or size"))),
    }
}

/// Allocated bytes under `root` (not following symlinks, not crossing mounts), or `None`
/// when the walk takes longer than `budget`: Status must answer fast, even for huge trees.
/// Walked through descriptors like a backup ([`voltool_runtime::walk`]): a container swapping a
/// directory for a symlink cannot make it count (or list) anything outside the volume.
pub(super) fn dir_usage(root: &Path, budget: Duration) -> Option<u64> {
    voltool_runtime::walk::disk_usage(root, budget)
}
