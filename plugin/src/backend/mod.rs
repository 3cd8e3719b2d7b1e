//! Storage backends: where a volume's bytes live and how they get to its mountpoint.
//!
//! [`AnyBackend`] dispatches with a `match` (the youki libcgroups shape), so adding a
//! backend forces every operation to decide what it means for it:
//! - `Local`: a directory in the state dir, bind-mounted;
//! - `Image`: a sparse image file of exactly `size` bytes with ext4/xfs inside, attached to a
//!   loop device (autoclear) and mounted — the hard limit where project quotas are missing;
//! - `Tmpfs`: a tmpfs with `size=`.

pub mod cifs;
pub mod nfs;
pub mod tools;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use voltool_runtime::loopdev::LoopDevices;
use voltool_runtime::mount::{self, MountFlags, MountRequest, Mounter};
use voltool_runtime::quota::ProjectQuota;

use crate::error::{Error, Result};
use crate::options::{Backing, FsType, Owner, QuotaSupport, VolumeSpec, VolumeType};
use tools::FsTools;

/// The host facilities backends work through; fakes in tests.
#[derive(Clone)]
pub struct Host {
    pub mounter: Arc<dyn Mounter>,
    pub loops: Arc<dyn LoopDevices>,
    pub tools: Arc<dyn FsTools>,
    pub projects: Arc<dyn ProjectQuota>,
    pub quota: QuotaSupport,
    /// Mount NFS through the userspace client over FUSE (no kernel NFS client here).
    pub nfs_userspace: bool,
    /// Live userspace NFS sessions by mountpoint.
    pub fuse: Arc<FuseSessions>,
}

/// The FUSE sessions serving userspace NFS mounts. A session ends when its mountpoint is
/// unmounted; one whose daemon died leaves a dead mount that must be replaced.
#[derive(Debug, Default)]
pub struct FuseSessions {
    live: std::sync::Mutex<std::collections::HashMap<PathBuf, voltool_nfsfuse::Mounted>>,
}

impl FuseSessions {
    fn insert(&self, mp: &Path, m: voltool_nfsfuse::Mounted) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(mp.to_path_buf(), m);
    }

    /// Whether a live session serves `mp`.
    pub fn serves(&self, mp: &Path) -> bool {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(mp).is_some_and(|m| !m.is_finished())
    }

    /// Forgets the session of `mp` after its unmount; its threads finish in the background
    /// (within one NFS call timeout even if the server hangs).
    fn finish(&self, mp: &Path) {
        let m = self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(mp);
        if let Some(m) = m {
            let _ = std::thread::Builder::new().name("voltool-nfs-join".into()).spawn(move || {
                if let Err(e) = m.join() {
                    tracing::warn!(error = %e, "userspace nfs session ended with an error");
                }
            });
        }
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("quota", &self.quota).finish_non_exhaustive()
    }
}

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
    /// The image file of an image-backed volume.
    pub fn image(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("image")
    }
    /// Where a new image is mounted once to set its root's owner and mode.
    fn init_dir(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("init")
    }
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.mount_root.join(name)
    }
    pub fn orphans_dir(&self) -> PathBuf {
        self.state_dir.join("orphans")
    }
    /// Where `on-remove=retain` keeps removed volumes.
    pub fn retained_dir(&self) -> PathBuf {
        self.state_dir.join("retained")
    }
}

/// fsync of directories, so the entries created, renamed or removed in them survive a power
/// cut.
pub(crate) fn sync_dirs(volume: &str, dirs: &[&std::path::Path]) -> Result<()> {
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
        self.provision_storage(host, layout, name, spec)?;
        // The volume's directories exist on disk before its record says so (power cuts).
        sync_dirs(name, &[&vdir, layout.volume_dir(name).parent().unwrap_or(&vdir)])
    }

    fn provision_storage(&self, host: &Host, layout: &Layout, name: &str, spec: &VolumeSpec) -> Result<()> {
        match self {
            AnyBackend::Local => {
                let data = layout.data_dir(name);
                std::fs::create_dir(&data).map_err(Error::io(name, "create", &data))?;
                std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))
                    .map_err(Error::io(name, "chmod", &data))?;
                apply_owner(name, &data, &spec.owner)
            }
            AnyBackend::Project => {
                let data = layout.data_dir(name);
                std::fs::create_dir(&data).map_err(Error::io(name, "create", &data))?;
                std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))
                    .map_err(Error::io(name, "chmod", &data))?;
                apply_owner(name, &data, &spec.owner)?;
                let (id, size) = project_of(name, spec)?;
                let q = |source| Error::Mount { volume: name.into(), source };
                host.projects.assign(&data, id).map_err(q)?;
                host.projects.set_limit(&data, id, size).map_err(q)
            }
            AnyBackend::Image(fs) => {
                let image = layout.image(name);
                let size = spec.size.unwrap_or_default();
                // Sparse: the limit is reserved in the filesystem's geometry, not on disk.
                let f = std::fs::File::create_new(&image).map_err(Error::io(name, "create image", &image))?;
                f.set_len(size).map_err(Error::io(name, "size image", &image))?;
                drop(f);
                host.tools.mkfs(*fs, &image).map_err(|source| Error::Tool { volume: name.into(), source })?;
                // Mount once to give the root its owner and mode.
                let init = layout.init_dir(name);
                std::fs::create_dir_all(&init).map_err(Error::io(name, "create", &init))?;
                mount_image(host, name, *fs, &image, &init)?;
                let lost = init.join("lost+found");
                let set = (|| {
                    if lost.is_dir() {
                        std::fs::remove_dir(&lost).map_err(Error::io(name, "remove", &lost))?;
                    }
                    let mode = spec.owner.mode.unwrap_or(0o755);
                    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(mode))
                        .map_err(Error::io(name, "chmod", &init))?;
                    apply_owner(name, &init, &spec.owner)
                })();
                let un = mount::unmount(host.mounter.as_ref(), &init)
                    .map_err(|source| Error::Unmount { volume: name.into(), source });
                set.and(un.map(drop))?;
                std::fs::remove_dir(&init).map_err(Error::io(name, "remove", &init))
            }
            // The remote directory was made by the create-time check.
            AnyBackend::Tmpfs | AnyBackend::Nfs | AnyBackend::Cifs => Ok(()),
        }
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
            AnyBackend::Tmpfs => tmpfs_request(name, &mp, spec),
            AnyBackend::Image(fs) => return mount_image(host, name, *fs, &layout.image(name), &mp),
            AnyBackend::Nfs => return mount_nfs(host, name, spec, &mp),
            AnyBackend::Cifs => return mount_cifs(host, name, spec, password, &mp),
        };
        host.mounter.mount(&req).map_err(|source| Error::Mount { volume: name.into(), source })
    }

    /// Unmounts the volume (lazily if busy). An image's loop device is freed by autoclear.
    ///
    /// # Errors
    /// [`Error::Unmount`].
    pub fn unmount(&self, host: &Host, layout: &Layout, name: &str) -> Result<mount::UnmountOutcome> {
        let mp = layout.mountpoint(name);
        let out =
            mount::unmount(host.mounter.as_ref(), &mp).map_err(|source| Error::Unmount { volume: name.into(), source });
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
        let old = spec.size.unwrap_or_default();
        let refuse = |reason: String| Err(Error::Resize { volume: name.into(), reason });
        let fs = match self {
            AnyBackend::Image(fs) => *fs,
            AnyBackend::Project => {
                if new_size <= old {
                    return refuse(format!(
                        "shrinking is not supported (current limit {}, asked {})",
                        crate::options::format_size(old),
                        crate::options::format_size(new_size)
                    ));
                }
                // A project quota grows in place, mounted or not.
                let (id, _) = project_of(name, spec)?;
                let data = layout.data_dir(name);
                return host
                    .projects
                    .set_limit(&data, id, new_size)
                    .map_err(|source| Error::Mount { volume: name.into(), source });
            }
            AnyBackend::Local => return refuse("it has no size limit (create it with -o size=...)".into()),
            AnyBackend::Tmpfs => return refuse("tmpfs volumes take their size at mount; recreate it".into()),
            AnyBackend::Nfs | AnyBackend::Cifs => {
                return refuse("network volumes have no size limit in this version".into());
            }
        };
        if new_size <= old {
            return refuse(format!(
                "shrinking is not supported (current limit {}, asked {})",
                crate::options::format_size(old),
                crate::options::format_size(new_size)
            ));
        }
        let image = layout.image(name);
        let mp = layout.mountpoint(name);
        let table = host.mounter.mount_table().map_err(|source| Error::Mount { volume: name.into(), source })?;
        let mounted_dev = table.iter().rev().find(|m| m.mount_point == mp).map(|m| PathBuf::from(&m.source));
        let f = std::fs::OpenOptions::new().write(true).open(&image).map_err(Error::io(name, "open image", &image))?;
        f.set_len(new_size).map_err(Error::io(name, "grow image", &image))?;
        drop(f);
        let tool = |source| Error::Tool { volume: name.into(), source };
        match mounted_dev {
            Some(dev) => {
                host.loops.refresh_capacity(&dev).map_err(|source| Error::Mount { volume: name.into(), source })?;
                host.tools.grow_online(fs, &dev, &mp).map_err(tool)
            }
            None => match fs {
                FsType::Ext4 => {
                    wait_released(host, name, &image, RELEASE_WAIT)?;
                    host.tools.grow_offline_ext4(&image).map_err(tool)
                }
                FsType::Xfs => {
                    wait_released(host, name, &image, RELEASE_WAIT)?;
                    // xfs only grows mounted: mount it aside, grow, unmount.
                    let init = layout.init_dir(name);
                    std::fs::create_dir_all(&init).map_err(Error::io(name, "create", &init))?;
                    mount_image(host, name, fs, &image, &init)?;
                    let grown = host.tools.grow_online(fs, Path::new(""), &init).map_err(tool);
                    let un = mount::unmount(host.mounter.as_ref(), &init)
                        .map_err(|source| Error::Unmount { volume: name.into(), source });
                    grown.and(un.map(drop))?;
                    std::fs::remove_dir(&init).map_err(Error::io(name, "remove", &init))
                }
            },
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
        let mp = layout.mountpoint(name);
        match std::fs::remove_dir(&mp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(name, "remove mountpoint", &mp)(e)),
            _ => Ok(dest),
        }
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
        let mp = layout.mountpoint(name);
        match std::fs::remove_dir(&mp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(name, "remove mountpoint", &mp)(e)),
            _ => Ok(()),
        }
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
            AnyBackend::Project => {
                let (id, _) = project_of(name, spec).ok()?;
                host.projects.usage(&layout.data_dir(name), id).ok().map(|u| u.used)
            }
            AnyBackend::Local => dir_usage(&layout.data_dir(name), budget),
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

/// The project ID and limit of a project-quota volume.
/// How long an offline grow waits for the image's filesystem to be released everywhere.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

/// Waits (at most `wait`) until no loop device holds `image`: unmounted from the host, the
/// filesystem can still be live in the mount namespace of a container that is exiting, and
/// checking or growing it meanwhile would race with the kernel's last write of its superblock
/// (resize2fs then asks for another e2fsck; xfs refuses the second mount as a duplicate UUID).
fn wait_released(host: &Host, name: &str, image: &Path, wait: Duration) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        let held = host.loops.holders(image).map_err(|source| Error::Mount { volume: name.into(), source })?;
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

fn project_of(name: &str, spec: &VolumeSpec) -> Result<(u32, u64)> {
    match (spec.project_id, spec.size) {
        (Some(id), Some(size)) => Ok((id, size)),
        _ => Err(Error::Internal(format!("volume {name}: project-quota volume without project id or size"))),
    }
}

/// Resolves a server name to an IP with the system resolver.
fn resolve_blocking(name: &str, host: &str) -> Result<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| Error::Unsupported { volume: name.into(), reason: format!("server {host} does not resolve") })
}

fn no_kernel_client(name: &str, what: &str, source: voltool_runtime::Error) -> Error {
    match source.errno() {
        Some(nix::errno::Errno::ENODEV) => Error::Unsupported {
            volume: name.into(),
            reason: format!("this host's kernel has no {what} client (see `voltool doctor`)"),
        },
        _ => Error::Mount { volume: name.into(), source },
    }
}

/// Mounts a CIFS volume with the kernel client; the password goes only into mount(2)'s data.
fn mount_cifs(host: &Host, name: &str, spec: &VolumeSpec, password: Option<&str>, target: &Path) -> Result<()> {
    let t =
        spec.cifs.as_ref().ok_or_else(|| Error::Internal(format!("volume {name}: cifs volume without a target")))?;
    let ip = resolve_blocking(name, &t.host)?;
    let req = cifs::kernel_request(t, ip, &spec.owner, password, target);
    host.mounter.mount(&req).map_err(|e| no_kernel_client(name, "CIFS", e))
}

/// Mounts an NFS volume: with the kernel client where there is one, else through the
/// userspace client over FUSE.
fn mount_nfs(host: &Host, name: &str, spec: &VolumeSpec, target: &Path) -> Result<()> {
    let t = spec.nfs.as_ref().ok_or_else(|| Error::Internal(format!("volume {name}: nfs volume without a target")))?;
    let ip = resolve_blocking(name, &t.addr)?;
    if !host.nfs_userspace {
        let req = nfs::kernel_request(t, ip, target);
        return host.mounter.mount(&req).map_err(|e| no_kernel_client(name, "NFS", e));
    }
    let mut cfg = voltool_nfsfuse::NfsConfig::new(ip, t.export.clone());
    cfg.subdir = t.subdir.clone().unwrap_or_default();
    cfg.nfs_port = t.port;
    cfg.mount_port = t.mount_port;
    let fd = voltool_runtime::fuse::mount_fuse(host.mounter.as_ref(), target, &cfg.source(), true)
        .map_err(|source| Error::Mount { volume: name.into(), source })?;
    match voltool_nfsfuse::serve(cfg, fd) {
        Ok(m) => {
            host.fuse.insert(target, m);
            Ok(())
        }
        Err(e) => {
            // Without its server the FUSE mount is dead: take it away again.
            let _ = mount::unmount(host.mounter.as_ref(), target);
            Err(Error::Remote { volume: name.into(), reason: e.to_string() })
        }
    }
}

/// Attaches `image` to a loop device and mounts it at `target`; the device frees itself
/// (autoclear) when the mount goes away, or at once if the mount fails.
fn mount_image(host: &Host, name: &str, fs: FsType, image: &Path, target: &Path) -> Result<()> {
    let att = host.loops.attach(image).map_err(|source| Error::Mount { volume: name.into(), source })?;
    // discard: blocks freed inside the volume are punched out of the sparse image, so the
    // host's disk and the unmounted usage figure follow what the volume really holds.
    let req = MountRequest::filesystem(
        fs.name(),
        &att.device.display().to_string(),
        target,
        MountFlags::empty(),
        "discard".into(),
    );
    host.mounter.mount(&req).map_err(|source| Error::Mount { volume: name.into(), source })
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
/// Walked through descriptors like a backup ([`voltool_runtime::walk`]): a container swapping a
/// directory for a symlink cannot make it count (or list) anything outside the volume.
fn dir_usage(root: &Path, budget: Duration) -> Option<u64> {
    voltool_runtime::walk::disk_usage(root, budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::TmpfsExtra;
    use tools::{RecordingFsTools, ToolCall};
    use voltool_runtime::RecordingMounter;
    use voltool_runtime::loopdev::{LoopCall, RecordingLoopDevices};

    fn fake_host() -> (Host, Arc<RecordingMounter>, Arc<RecordingLoopDevices>, Arc<RecordingFsTools>) {
        let (m, l, t) = (
            Arc::new(RecordingMounter::new()),
            Arc::new(RecordingLoopDevices::new()),
            Arc::new(RecordingFsTools::new()),
        );
        let host = Host {
            mounter: m.clone(),
            loops: l.clone(),
            tools: t.clone(),
            projects: Arc::new(voltool_runtime::quota::RecordingProjectQuota::new()),
            quota: QuotaSupport { project: false, loop_devices: true },
            nfs_userspace: false,
            fuse: Arc::default(),
        };
        (host, m, l, t)
    }

    #[test]
    fn image_provision_mount_and_grow() {
        let d = tempfile::tempdir().expect("tmp");
        let layout = Layout { state_dir: d.path().join("s"), mount_root: d.path().join("m") };
        let (host, m, l, t) = fake_host();
        let spec = VolumeSpec {
            size: Some(64 << 20),
            owner: Owner { mode: Some(0o700), ..Default::default() },
            backing: Some(Backing::Image),
            ..Default::default()
        };
        let b = AnyBackend::for_spec(&spec);
        assert_eq!(b, AnyBackend::Image(FsType::Ext4));
        b.provision(&host, &layout, "v", &spec).expect("provision");
        let md = std::fs::metadata(layout.image("v")).expect("image");
        assert_eq!(md.len(), 64 << 20);
        assert!(md.blocks() * 512 < 1 << 20, "sparse");
        assert_eq!(t.calls(), vec![ToolCall::Mkfs(FsType::Ext4, layout.image("v"))]);
        assert!(!layout.init_dir("v").exists(), "init mount cleaned up");
        assert_eq!(m.mount_table().expect("t").len(), 0);
        b.mount(&host, &layout, "v", &spec, None).expect("mount");
        let mounts = m.mounts();
        assert_eq!(mounts.last().map(|r| (r.source.as_str(), r.fstype.as_deref())), Some(("/dev/loop1", Some("ext4"))));
        b.grow(&host, &layout, "v", &spec, 128 << 20).expect("grow");
        assert_eq!(std::fs::metadata(layout.image("v")).expect("image").len(), 128 << 20);
        assert!(l.calls().contains(&LoopCall::RefreshCapacity("/dev/loop1".into())));
        assert_eq!(
            t.calls().last(),
            Some(&ToolCall::GrowOnline(FsType::Ext4, "/dev/loop1".into(), layout.mountpoint("v")))
        );
        let e = b
            .grow(&host, &layout, "v", &VolumeSpec { size: Some(128 << 20), ..spec.clone() }, 100 << 20)
            .expect_err("shrink");
        assert!(e.to_string().contains("shrinking is not supported"), "{e}");
        b.unmount(&host, &layout, "v").expect("unmount");
        // Unmounted here, still held elsewhere for two looks (a container exiting): the grow
        // waits for the image to be released before checking and growing it.
        l.held_for(2);
        b.grow(&host, &layout, "v", &VolumeSpec { size: Some(128 << 20), ..spec.clone() }, 256 << 20)
            .expect("grow offline");
        assert_eq!(t.calls().last(), Some(&ToolCall::GrowOffline(layout.image("v"))));
        let looks = l.calls().iter().filter(|c| **c == LoopCall::Holders(layout.image("v"))).count();
        assert_eq!(looks, 3, "looked until released");
        // Never released: a clear error, nothing grown.
        l.held_for(u32::MAX);
        let before = t.calls().len();
        let e = wait_released(&host, "v", &layout.image("v"), Duration::from_millis(200)).expect_err("still held");
        assert!(e.to_string().contains("still in use through /dev/loop9"), "{e}");
        assert_eq!(t.calls().len(), before);
    }

    #[test]
    fn failed_mkfs_is_reported_with_the_volume() {
        let d = tempfile::tempdir().expect("tmp");
        let layout = Layout { state_dir: d.path().join("s"), mount_root: d.path().join("m") };
        let (host, _, _, t) = fake_host();
        t.fail_next("mkfs.ext4: no space");
        let spec = VolumeSpec { size: Some(64 << 20), backing: Some(Backing::Image), ..Default::default() };
        let e = AnyBackend::for_spec(&spec).provision(&host, &layout, "v", &spec).expect_err("mkfs fails");
        assert!(e.to_string().starts_with("volume v:"), "{e}");
    }

    #[test]
    fn tmpfs_request_carries_size_owner_and_safe_flags() {
        let spec = VolumeSpec {
            kind: VolumeType::Tmpfs,
            size: Some(16 << 20),
            owner: Owner { uid: Some(1000), gid: Some(1001), mode: Some(0o1777) },
            tmpfs: TmpfsExtra { noexec: true, ..Default::default() },
            ..Default::default()
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
