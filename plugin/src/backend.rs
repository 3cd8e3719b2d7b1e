//! Storage backends: where a volume's bytes live and how they get to its mountpoint.
//!
//! [`AnyBackend`] dispatches by [`VolumeType`] with a `match` (the youki libcgroups shape),
//! so adding a type forces every operation to decide what it means for it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use voltool_runtime::mount::{self, MountFlags, MountRequest, Mounter};

use crate::error::{Error, Result};
use crate::options::{Owner, VolumeSpec, VolumeType};

/// Where things live on disk.
#[derive(Debug, Clone)]
pub struct Layout {
    pub state_dir: PathBuf,
    /// Parent of every volume's mountpoint. In managed-plugin mode this is the plugin's
    /// `propagatedMount`, so mounts made here reach dockerd and the containers.
    pub mount_root: PathBuf,
}

impl Layout {
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("voltool.db")
    }
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join("volumes").join(name)
    }
    /// The directory holding a local volume's data.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("data")
    }
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.mount_root.join(name)
    }
    pub fn orphans_dir(&self) -> PathBuf {
        self.state_dir.join("orphans")
    }
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

/// Dispatch over the volume types.
#[derive(Debug, Clone, Copy)]
pub enum AnyBackend {
    /// A directory under the state dir, bind-mounted at the mountpoint.
    Local,
    /// A tmpfs mounted at the mountpoint; contents live only while mounted.
    Tmpfs,
}

impl AnyBackend {
    pub fn for_spec(spec: &VolumeSpec) -> Self {
        match spec.kind {
            VolumeType::Local => AnyBackend::Local,
            VolumeType::Tmpfs => AnyBackend::Tmpfs,
        }
    }

    /// Creates the volume's persistent storage.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path.
    pub fn provision(&self, layout: &Layout, name: &str, spec: &VolumeSpec) -> Result<()> {
        let vdir = layout.volume_dir(name);
        std::fs::create_dir_all(&vdir).map_err(Error::io(name, "create", &vdir))?;
        match self {
            AnyBackend::Local => {
                let data = layout.data_dir(name);
                std::fs::create_dir(&data).map_err(Error::io(name, "create", &data))?;
                std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))
                    .map_err(Error::io(name, "chmod", &data))?;
                apply_owner(name, &data, &spec.owner)
            }
            AnyBackend::Tmpfs => Ok(()),
        }
    }

    /// Mounts the volume at its mountpoint.
    ///
    /// # Errors
    /// [`Error::Mount`] with the kernel's errno, [`Error::Io`] for the mountpoint directory.
    pub fn mount(&self, m: &dyn Mounter, layout: &Layout, name: &str, spec: &VolumeSpec) -> Result<()> {
        let mp = layout.mountpoint(name);
        std::fs::create_dir_all(&mp).map_err(Error::io(name, "create mountpoint", &mp))?;
        let req = match self {
            AnyBackend::Local => MountRequest::bind(&layout.data_dir(name), &mp),
            AnyBackend::Tmpfs => tmpfs_request(name, &mp, spec),
        };
        m.mount(&req).map_err(|source| Error::Mount { volume: name.into(), source })
    }

    /// Unmounts the volume (lazily if busy).
    ///
    /// # Errors
    /// [`Error::Unmount`].
    pub fn unmount(&self, m: &dyn Mounter, layout: &Layout, name: &str) -> Result<mount::UnmountOutcome> {
        mount::unmount(m, &layout.mountpoint(name)).map_err(|source| Error::Unmount { volume: name.into(), source })
    }

    /// Deletes the volume's storage and mountpoint directory. The caller has made sure
    /// nothing is mounted.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn destroy(&self, layout: &Layout, name: &str) -> Result<()> {
        let vdir = layout.volume_dir(name);
        // remove_dir_all does not follow symlinks inside the tree.
        match std::fs::remove_dir_all(&vdir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(name, "remove", &vdir)(e)),
            _ => {}
        }
        let mp = layout.mountpoint(name);
        match std::fs::remove_dir(&mp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(name, "remove mountpoint", &mp)(e)),
            _ => Ok(()),
        }
    }

    /// Bytes used, if they can be found within `budget`.
    pub fn used_bytes(&self, layout: &Layout, name: &str, mounted: bool, budget: Duration) -> Option<u64> {
        match self {
            AnyBackend::Local => dir_usage(&layout.data_dir(name), budget),
            AnyBackend::Tmpfs if mounted => {
                let st = nix::sys::statvfs::statvfs(&layout.mountpoint(name)).ok()?;
                Some((st.blocks() - st.blocks_free()) * st.fragment_size())
            }
            AnyBackend::Tmpfs => Some(0),
        }
    }
}

fn tmpfs_request(name: &str, mp: &Path, spec: &VolumeSpec) -> MountRequest {
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

/// Allocated bytes under `root` (not following symlinks, not crossing mounts), or `None`
/// when the walk takes longer than `budget`: Status must answer fast, even for huge trees.
fn dir_usage(root: &Path, budget: Duration) -> Option<u64> {
    let start = Instant::now();
    let dev = std::fs::symlink_metadata(root).ok()?.dev();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if start.elapsed() > budget {
                return None;
            }
            let Ok(md) = e.path().symlink_metadata() else { continue };
            total += md.blocks() * 512;
            if md.is_dir() && md.dev() == dev {
                stack.push(e.path());
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::TmpfsExtra;

    #[test]
    fn tmpfs_request_carries_size_owner_and_safe_flags() {
        let spec = VolumeSpec {
            kind: VolumeType::Tmpfs,
            size: Some(16 << 20),
            owner: Owner { uid: Some(1000), gid: Some(1001), mode: Some(0o1777) },
            tmpfs: TmpfsExtra { noexec: true, ..Default::default() },
        };
        let r = tmpfs_request("t1", Path::new("/m/t1"), &spec);
        assert_eq!(r.fstype.as_deref(), Some("tmpfs"));
        assert_eq!(r.data.as_deref(), Some("size=16777216,mode=1777,uid=1000,gid=1001"));
        assert_eq!(r.flags, MountFlags::MS_NOSUID | MountFlags::MS_NODEV | MountFlags::MS_NOEXEC);
    }

    #[test]
    fn usage_counts_allocated_bytes() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        std::fs::write(d.path().join("sub/f"), vec![1u8; 100_000]).expect("write");
        let used = dir_usage(d.path(), Duration::from_secs(5)).expect("usage");
        assert!(used >= 100_000, "{used}");
    }
}
