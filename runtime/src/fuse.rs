//! FUSE mounts: open `/dev/fuse` and mount it, through the [`Mounter`] seam so the mount is
//! recorded by the fake in tests. The returned descriptor is what a FUSE server (e.g.
//! `voltool-nfsfuse`) reads the kernel's requests from; closing it without unmounting
//! leaves a dead mount (`ENOTCONN`) that must still be unmounted.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::mount::{MountFlags, MountRequest, Mounter};

/// The FUSE device.
pub const FUSE_DEVICE: &str = "/dev/fuse";

/// The mount(2) request for a FUSE mount served through descriptor `fd`: `nosuid,nodev`,
/// a directory root, owned by the calling user, with `default_permissions` (the kernel
/// checks mode bits) and, if `allow_other`, open to every user.
pub fn fuse_request(fd: i32, target: &Path, fsname: &str, allow_other: bool) -> MountRequest {
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    let other = if allow_other { ",allow_other" } else { "" };
    MountRequest::filesystem(
        "fuse",
        fsname,
        target,
        MountFlags::MS_NOSUID | MountFlags::MS_NODEV,
        format!("fd={fd},rootmode=40000,user_id={uid},group_id={gid},default_permissions{other}"),
    )
}

/// Opens `/dev/fuse` (`O_RDWR|O_CLOEXEC`) and mounts it on `target` with `mounter`; returns
/// the descriptor to serve the filesystem from. `fsname` is the mount source shown in the
/// mount table (it must not contain secrets).
///
/// # Errors
/// [`Error::Mount`] when `/dev/fuse` cannot be opened (the source names it) or mount(2)
/// fails (needs `CAP_SYS_ADMIN`).
pub fn mount_fuse(mounter: &dyn Mounter, target: &Path, fsname: &str, allow_other: bool) -> Result<OwnedFd> {
    let fd = open(FUSE_DEVICE, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).map_err(|errno| Error::Mount {
        source_desc: format!("{fsname} (open {FUSE_DEVICE})"),
        target: target.to_path_buf(),
        fstype: "fuse".into(),
        errno,
    })?;
    mounter.mount(&fuse_request(fd.as_raw_fd(), target, fsname, allow_other))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::RecordingMounter;

    #[test]
    fn request_carries_fd_rootmode_owner_and_permissions() {
        let r = fuse_request(7, Path::new("/m/v"), "10.0.0.1:/export/v", true);
        assert_eq!((r.fstype.as_deref(), r.source.as_str()), (Some("fuse"), "10.0.0.1:/export/v"));
        assert_eq!(r.flags, MountFlags::MS_NOSUID | MountFlags::MS_NODEV);
        let data = r.data.expect("data");
        assert!(data.starts_with("fd=7,rootmode=40000,user_id="), "{data}");
        assert!(data.ends_with(",default_permissions,allow_other"), "{data}");
        let r = fuse_request(7, Path::new("/m/v"), "x", false);
        assert!(!r.data.expect("data").contains("allow_other"));
    }

    #[test]
    fn mount_goes_through_the_mounter() {
        let m = RecordingMounter::new();
        let fd = match mount_fuse(&m, Path::new("/m/v"), "srv:/e", true) {
            Ok(fd) => fd,
            // Not root, or no FUSE in this kernel: nothing to record.
            Err(e) if e.errno().is_some() && m.mounts().is_empty() => {
                println!("SKIP mount_goes_through_the_mounter: cannot open {FUSE_DEVICE}: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let mounts = m.mounts();
        assert_eq!(mounts.len(), 1);
        let want = format!("fd={},", fd.as_raw_fd());
        assert!(mounts[0].data.as_deref().is_some_and(|d| d.starts_with(&want)), "{mounts:?}");
        assert!(m.is_mounted(Path::new("/m/v")).expect("table"));
    }
}
