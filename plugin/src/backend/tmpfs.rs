//! tmpfs volumes: a tmpfs mounted at the mountpoint with `size=`, owner and mode; contents
//! live only while some container mounts it, like Docker's own tmpfs volumes.

use std::path::Path;

use voltool_runtime::mount::{MountFlags, MountRequest};

use crate::options::VolumeSpec;

/// The mount(2) request for a tmpfs volume.
pub(super) fn request(name: &str, mp: &Path, spec: &VolumeSpec) -> MountRequest {
    let mut data = Vec::new();
    if let Some(size) = spec.size {
        data.push(format!("size={size}"));
    }
    if let Some(n) = spec.tmpfs.nr_inodes {
        data.push(format!("nr_inodes={n}"));
    }
    data.push(format!("mode={:o}", spec.owner.mode.unwrap_or(0o755)));
    if let Some(uid) = spec.owner.uid {
        data.push(format!("uid={uid}"));
    }
    if let Some(gid) = spec.owner.gid {
        data.push(format!("gid={gid}"));
    }
    // Safe defaults, as for Docker's --tmpfs: no setuid binaries or device nodes take effect
    // on a scratch volume unless asked for with o=suid / o=dev.
    let mut flags = MountFlags::empty();
    for (on, flag) in [
        (!spec.tmpfs.suid, MountFlags::MS_NOSUID),
        (!spec.tmpfs.dev, MountFlags::MS_NODEV),
        (spec.tmpfs.noexec, MountFlags::MS_NOEXEC),
        (spec.tmpfs.noatime, MountFlags::MS_NOATIME),
        (spec.tmpfs.ro, MountFlags::MS_RDONLY),
    ] {
        if on {
            flags |= flag;
        }
    }
    MountRequest::filesystem("tmpfs", &format!("voltool-{name}"), mp, flags, data.join(","))
}
