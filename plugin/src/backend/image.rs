//! Image-backed volumes: a sparse file of exactly `size` bytes holding an ext4 or xfs
//! filesystem, attached to a loop device (autoclear) and mounted — the hard limit where the
//! state dir has no project quotas. Grown online when mounted (resize2fs, xfs_growfs),
//! offline otherwise, once every loop device has let go of the image.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use voltool_runtime::mount::{self, MountFlags, MountRequest};

use super::{Host, Layout, apply_owner, mount_err, refuse_shrink, unmount_err};
use crate::error::{Error, Result};
use crate::options::{FsType, VolumeSpec};

/// How long an offline grow waits for the image's filesystem to be released everywhere.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

/// Creates the sparse image, makes its filesystem and gives its root the volume's owner and
/// mode (mounted once at the volume's init dir).
pub(super) fn provision(host: &Host, layout: &Layout, name: &str, fs: FsType, spec: &VolumeSpec) -> Result<()> {
    let image = layout.image(name);
    let size = spec.size.unwrap_or_default();
    // Sparse: the limit is reserved in the filesystem's geometry, not on disk.
    let f = std::fs::File::create_new(&image).map_err(Error::io(name, "create image", &image))?;
    f.set_len(size).map_err(Error::io(name, "size image", &image))?;
    drop(f);
    host.tools.mkfs(fs, &image).map_err(|source| Error::Tool { volume: name.into(), source })?;
    // Mount once to give the root its owner and mode.
    with_image_aside(host, layout, name, fs, |init| {
        let lost = init.join("lost+found");
        if lost.is_dir() {
            std::fs::remove_dir(&lost).map_err(Error::io(name, "remove", &lost))?;
        }
        let mode = spec.owner.mode.unwrap_or(0o755);
        std::fs::set_permissions(init, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io(name, "chmod", init))?;
        apply_owner(name, init, &spec.owner)
    })
}

/// Mounts the image at the volume's init dir, runs `f` on it, unmounts it and removes the
/// dir again (`f`'s error first, then the unmount's).
fn with_image_aside(
    host: &Host,
    layout: &Layout,
    name: &str,
    fs: FsType,
    f: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let init = layout.init_dir(name);
    std::fs::create_dir_all(&init).map_err(Error::io(name, "create", &init))?;
    mount(host, name, fs, &layout.image(name), &init)?;
    let done = f(&init);
    let un = mount::unmount(host.mounter.as_ref(), &init).map_err(unmount_err(name));
    done.and(un.map(drop))?;
    std::fs::remove_dir(&init).map_err(Error::io(name, "remove", &init))
}

/// Attaches `image` to a loop device and mounts it at `target`; the device frees itself
/// (autoclear) when the mount goes away, or at once if the mount fails.
pub(super) fn mount(host: &Host, name: &str, fs: FsType, image: &Path, target: &Path) -> Result<()> {
    let att = host.loops.attach(image).map_err(mount_err(name))?;
    // discard: blocks freed inside the volume are punched out of the sparse image, so the
    // host's disk and the unmounted usage figure follow what the volume really holds.
    let req = MountRequest::filesystem(
        fs.name(),
        &att.device.display().to_string(),
        target,
        MountFlags::empty(),
        "discard".into(),
    );
    host.mounter.mount(&req).map_err(mount_err(name))
}

/// Grows the image from `old` to `new_size` bytes and its filesystem with it: online through
/// the loop device when mounted, else offline (ext4) or mounted aside (xfs only grows
/// mounted).
pub(super) fn grow(host: &Host, layout: &Layout, name: &str, fs: FsType, old: u64, new_size: u64) -> Result<()> {
    refuse_shrink(name, old, new_size)?;
    let image = layout.image(name);
    let mp = layout.mountpoint(name);
    let table = host.mounter.mount_table().map_err(mount_err(name))?;
    let mounted_dev = table.iter().rev().find(|m| m.mount_point == mp).map(|m| PathBuf::from(&m.source));
    let f = std::fs::OpenOptions::new().write(true).open(&image).map_err(Error::io(name, "open image", &image))?;
    f.set_len(new_size).map_err(Error::io(name, "grow image", &image))?;
    drop(f);
    let tool = |source| Error::Tool { volume: name.into(), source };
    match (mounted_dev, fs) {
        (Some(dev), _) => {
            host.loops.refresh_capacity(&dev).map_err(mount_err(name))?;
            host.tools.grow_online(fs, &dev, &mp).map_err(tool)
        }
        (None, FsType::Ext4) => {
            wait_released(host, name, &image, RELEASE_WAIT)?;
            host.tools.grow_offline_ext4(&image).map_err(tool)
        }
        (None, FsType::Xfs) => {
            wait_released(host, name, &image, RELEASE_WAIT)?;
            with_image_aside(host, layout, name, fs, |init| {
                host.tools.grow_online(fs, Path::new(""), init).map_err(tool)
            })
        }
    }
}

/// Waits (at most `wait`) until no loop device holds `image`: unmounted from the host, the
/// filesystem can still be live in the mount namespace of a container that is exiting, and
/// checking or growing it meanwhile would race with the kernel's last write of its superblock
/// (resize2fs then asks for another e2fsck; xfs refuses the second mount as a duplicate UUID).
pub(super) fn wait_released(host: &Host, name: &str, image: &Path, wait: Duration) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        let held = host.loops.holders(image).map_err(mount_err(name))?;
        if held.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= wait {
            let devices: Vec<String> = held.iter().map(|d| d.display().to_string()).collect();
            return Err(Error::Resize {
                volume: name.into(),
                reason: format!(
                    "its filesystem is still in use through {} although nothing on this host mounts it (a container that used it may still be exiting); try again",
                    devices.join(", ")
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
