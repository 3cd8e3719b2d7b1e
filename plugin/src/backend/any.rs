//! [`AnyBackend`]: one `match` per operation over the backends (the youki libcgroups shape),
//! so adding a backend forces every operation to decide what it means for it. The work
//! itself is in the backend's own file.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use voltool_runtime::mount::{self, MountRequest};

use super::{Host, Layout, cifs, image, local, mount_err, nfs, sync_dirs, tmpfs, unmount_err};
use crate::error::{Error, Result};
use crate::options::{Backing, FsType, VolumeSpec, VolumeType};

/// Dispatch over the storage backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyBackend {
    /// A directory under the state dir, bind-mounted at the mountpoint.
    Local,
    /// A loop-mounted image file with a filesystem of exactly the size limit.
    Image(FsType),
    /// A directory under the state dir limited by a project quota, bind-mounted.
    Project,
    /// A tmpfs mounted at the mountpoint; contents live only while mounted.
    Tmpfs,
    /// A directory on an NFS export, mounted by the kernel's NFS client.
    Nfs,
    /// A directory on an SMB share, mounted by the kernel's CIFS client.
    Cifs,
}

impl AnyBackend {
    pub fn for_spec(spec: &VolumeSpec) -> Self {
        match (spec.kind, spec.backing) {
            (VolumeType::Local, Some(Backing::Image)) => AnyBackend::Image(spec.fs.unwrap_or_default()),
            (VolumeType::Local, Some(Backing::Project)) => AnyBackend::Project,
            (VolumeType::Local, Some(Backing::Dir) | None) => AnyBackend::Local,
            (VolumeType::Tmpfs, _) => AnyBackend::Tmpfs,
            (VolumeType::Nfs, _) => AnyBackend::Nfs,
            (VolumeType::Cifs, _) => AnyBackend::Cifs,
        }
    }

    /// Creates the volume's persistent storage.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path, [`Error::Tool`] when mkfs fails, mount errors while
    /// initialising an image.
    pub fn provision(&self, host: &Host, layout: &Layout, name: &str, spec: &VolumeSpec) -> Result<()> {
        let vdir = layout.volume_dir(name);
        std::fs::create_dir_all(&vdir).map_err(Error::io(name, "create", &vdir))?;
        match self {
            AnyBackend::Local => local::provision_dir(host, layout, name, spec)?,
            AnyBackend::Project => local::provision_project(host, layout, name, spec)?,
            AnyBackend::Image(fs) => image::provision(host, layout, name, *fs, spec)?,
            // The remote directory was made by the create-time check.
            AnyBackend::Tmpfs | AnyBackend::Nfs | AnyBackend::Cifs => {}
        }
        // The volume's directories exist on disk before its record says so (power cuts).
        sync_dirs(name, &[&vdir, layout.volume_dir(name).parent().unwrap_or(&vdir)])
    }

    /// Mounts the volume at its mountpoint.
    ///
    /// # Errors
    /// [`Error::Mount`] with the kernel's errno, [`Error::Io`] for the mountpoint directory.
    /// `password` is the secret of a CIFS volume, read by the caller just for this call.
    pub fn mount(
        &self,
        host: &Host,
        layout: &Layout,
        name: &str,
        spec: &VolumeSpec,
        password: Option<&str>,
    ) -> Result<()> {
        let mp = layout.mountpoint(name);
        std::fs::create_dir_all(&mp).map_err(Error::io(name, "create mountpoint", &mp))?;
        let req = match self {
            AnyBackend::Local | AnyBackend::Project => MountRequest::bind(&layout.data_dir(name), &mp),
            AnyBackend::Tmpfs => tmpfs::request(name, &mp, spec),
            AnyBackend::Image(fs) => return image::mount(host, name, *fs, &layout.image(name), &mp),
            AnyBackend::Nfs => return nfs::mount(host, name, spec, &mp),
            AnyBackend::Cifs => return cifs::mount(host, name, spec, password, &mp),
        };
        host.mounter.mount(&req).map_err(mount_err(name))
    }

    /// Unmounts the volume (lazily if busy). An image's loop device is freed by autoclear.
    ///
    /// # Errors
    /// [`Error::Unmount`].
    pub fn unmount(&self, host: &Host, layout: &Layout, name: &str) -> Result<mount::UnmountOutcome> {
        let mp = layout.mountpoint(name);
        let out = mount::unmount(host.mounter.as_ref(), &mp).map_err(unmount_err(name));
        if *self == AnyBackend::Nfs {
            host.fuse.finish(&mp);
        }
        out
    }

    /// Whether the mount at the volume's mountpoint can serve I/O. A userspace NFS mount
    /// whose session is gone (the daemon restarted) is dead and must be replaced.
    pub fn is_alive(&self, host: &Host, layout: &Layout, name: &str) -> bool {
        match self {
            AnyBackend::Nfs if host.nfs_userspace => host.fuse.serves(&layout.mountpoint(name)),
            _ => true,
        }
    }

    /// Grows the volume's limit to `new_size` bytes, online when mounted.
    ///
    /// # Errors
    /// [`Error::Resize`] for a backend that cannot grow or a smaller size; tool, loop and I/O
    /// errors otherwise.
    pub fn grow(&self, host: &Host, layout: &Layout, name: &str, spec: &VolumeSpec, new_size: u64) -> Result<()> {
        let refuse = |reason: &str| Err(Error::Resize { volume: name.into(), reason: reason.into() });
        match self {
            AnyBackend::Image(fs) => image::grow(host, layout, name, *fs, spec.size.unwrap_or_default(), new_size),
            AnyBackend::Project => local::grow_project(host, layout, name, spec, new_size),
            AnyBackend::Local => refuse("it has no size limit (create it with -o size=...)"),
            AnyBackend::Tmpfs => refuse("tmpfs volumes take their size at mount; recreate it"),
            AnyBackend::Nfs | AnyBackend::Cifs => refuse("network volumes have no size limit in this version"),
        }
    }

    /// Moves the volume's storage to `<state dir>/retained/NAME-STAMP` (on-remove=retain) and
    /// returns where it went. The caller has made sure nothing is mounted.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn retain(&self, layout: &Layout, name: &str, stamp: &str) -> Result<PathBuf> {
        let dest = layout.retained_dir().join(format!("{name}-{stamp}"));
        std::fs::create_dir_all(layout.retained_dir()).map_err(Error::io(name, "create", layout.retained_dir()))?;
        let vdir = layout.volume_dir(name);
        std::fs::rename(&vdir, &dest).map_err(Error::io(name, "move to retained", &vdir))?;
        sync_dirs(name, &[&layout.retained_dir(), vdir.parent().unwrap_or(&vdir)])?;
        remove_mountpoint(layout, name).map(|()| dest)
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
            Err(_) => {}
            Ok(()) => sync_dirs(name, &[vdir.parent().unwrap_or(&vdir)])?,
        }
        remove_mountpoint(layout, name)
    }

    /// What the mounted filesystem can hold, for backends with a filesystem of their own.
    pub fn capacity_bytes(&self, layout: &Layout, name: &str, mounted: bool) -> Option<u64> {
        match self {
            AnyBackend::Tmpfs | AnyBackend::Image(_) if mounted => {
                let st = nix::sys::statvfs::statvfs(&layout.mountpoint(name)).ok()?;
                Some(st.blocks() * st.fragment_size())
            }
            _ => None,
        }
    }

    /// A short name for Status.
    pub fn describe(&self) -> String {
        match self {
            AnyBackend::Local => "directory".into(),
            AnyBackend::Image(fs) => format!("image ({})", fs.name()),
            AnyBackend::Project => "project quota".into(),
            AnyBackend::Tmpfs => "tmpfs".into(),
            AnyBackend::Nfs => "nfs".into(),
            AnyBackend::Cifs => "cifs (kernel client)".into(),
        }
    }

    /// Bytes used, if they can be found within `budget`.
    pub fn used_bytes(
        &self,
        host: &Host,
        layout: &Layout,
        name: &str,
        spec: &VolumeSpec,
        mounted: bool,
        budget: Duration,
    ) -> Option<u64> {
        match self {
            // The kernel keeps the count: no walk needed.
            AnyBackend::Project => local::project_usage(host, layout, name, spec),
            AnyBackend::Local => local::dir_usage(&layout.data_dir(name), budget),
            AnyBackend::Tmpfs | AnyBackend::Image(_) if mounted => {
                let st = nix::sys::statvfs::statvfs(&layout.mountpoint(name)).ok()?;
                Some((st.blocks() - st.blocks_free()) * st.fragment_size())
            }
            // Unmounted image: what the sparse file occupies (filesystem metadata included).
            AnyBackend::Image(_) => std::fs::metadata(layout.image(name)).ok().map(|m| m.blocks() * 512),
            AnyBackend::Tmpfs => Some(0),
            // The share's usage is the server's business; walking it could take forever.
            AnyBackend::Nfs | AnyBackend::Cifs => None,
        }
    }
}

/// Removes the (empty) mountpoint directory of a volume whose storage is gone or moved.
fn remove_mountpoint(layout: &Layout, name: &str) -> Result<()> {
    let mp = layout.mountpoint(name);
    match std::fs::remove_dir(&mp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(name, "remove mountpoint", &mp)(e)),
        _ => Ok(()),
    }
}
