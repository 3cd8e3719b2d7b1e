//! The [`Mounter`] seam: mount(2), umount2(2), propagation changes and the mount table.
//!
//! [`LinuxMounter`] makes one syscall per method. [`RecordingMounter`] records every call,
//! keeps an in-memory mount table so callers see consistent state, and can inject an errno
//! into the next call of a given kind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
pub use nix::mount::{MntFlags, MsFlags as MountFlags};

use crate::error::{Error, Result};
use crate::mountinfo::{self, MountInfo};

/// Arguments of one mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    /// Device, directory (bind) or filesystem-specific source such as `tmpfs`.
    pub source: String,
    pub target: PathBuf,
    /// `None` for bind and remount calls.
    pub fstype: Option<String>,
    pub flags: MountFlags,
    /// Filesystem-specific data (e.g. `size=16777216,mode=755` for tmpfs).
    pub data: Option<String>,
}

impl MountRequest {
    /// A recursive-less bind mount of `source` onto `target`.
    pub fn bind(source: &Path, target: &Path) -> Self {
        Self {
            source: source.display().to_string(),
            target: target.to_path_buf(),
            fstype: None,
            flags: MountFlags::MS_BIND,
            data: None,
        }
    }

    /// A mount of filesystem `fstype` from `source` with `data` options.
    pub fn filesystem(fstype: &str, source: &str, target: &Path, flags: MountFlags, data: String) -> Self {
        Self {
            source: source.to_string(),
            target: target.to_path_buf(),
            fstype: Some(fstype.to_string()),
            flags,
            data: (!data.is_empty()).then_some(data),
        }
    }
}

/// Mount propagation types, see mount_namespaces(7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Shared,
    Private,
    Slave,
}

/// What [`unmount`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmountOutcome {
    /// A plain umount2(target, 0) succeeded.
    Unmounted,
    /// The mount was busy and was detached lazily (`MNT_DETACH`).
    Detached,
    /// Nothing was mounted there.
    NotMounted,
}

/// The narrow seam for everything mount-related. Implementations must be cheap to call
/// concurrently; callers serialise work per target themselves.
pub trait Mounter: Send + Sync {
    /// mount(2).
    ///
    /// # Errors
    /// [`Error::Mount`] with the kernel's errno.
    fn mount(&self, req: &MountRequest) -> Result<()>;

    /// umount2(2) with `flags`.
    ///
    /// # Errors
    /// [`Error::Unmount`]; `EINVAL` means `target` is not a mount point.
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()>;

    /// Changes the propagation type of the mount at `target`, recursively if `recursive`.
    ///
    /// # Errors
    /// [`Error::Propagation`].
    fn set_propagation(&self, target: &Path, propagation: Propagation, recursive: bool) -> Result<()>;

    /// The mount table of the namespace this mounter works in.
    ///
    /// # Errors
    /// [`Error::MountTable`].
    fn mount_table(&self) -> Result<Vec<MountInfo>>;

    /// Whether something is mounted exactly at `target`.
    ///
    /// # Errors
    /// As [`Mounter::mount_table`].
    fn is_mounted(&self, target: &Path) -> Result<bool> {
        Ok(self.mount_table()?.iter().any(|m| m.mount_point == target))
    }

    /// Whether `target` is the root of a mount, asked of the path itself instead of the whole
    /// mount table: what [`Mounter::is_mounted`] answers for a mountpoint no symlink leads
    /// to, without taking the kernel's namespace lock that every mount and unmount holds.
    ///
    /// Resolving `target` enters the filesystem mounted there, so a network filesystem may
    /// revalidate its root with the server (and hang with it): use [`Mounter::is_mounted`]
    /// for NFS and CIFS mountpoints. The default asks the mount table.
    ///
    /// # Errors
    /// As [`Mounter::mount_table`].
    fn is_mount_root(&self, target: &Path) -> Result<bool> {
        self.is_mounted(target)
    }
}

/// Unmounts `target`, detaching lazily when the mount is busy (`EBUSY`), and treating
/// "not a mount point" (`EINVAL`) and a missing path (`ENOENT`) as already unmounted.
///
/// # Errors
/// Any other errno from umount2(2).
pub fn unmount(m: &dyn Mounter, target: &Path) -> Result<UnmountOutcome> {
    // A mount is often busy for a moment only: another thread's fork holds a copy of an open
    // descriptor until its exec. Retry briefly before falling back to a lazy detach.
    for pause_ms in BUSY_RETRY_MS {
        match m.umount2(target, MntFlags::empty()) {
            Err(e) if e.errno() == Some(Errno::EBUSY) => std::thread::sleep(Duration::from_millis(pause_ms)),
            other => return finish_unmount(m, target, other),
        }
    }
    let last = m.umount2(target, MntFlags::empty());
    finish_unmount(m, target, last)
}

/// Pauses between the plain unmount attempts of [`unmount`] while the mount is busy.
const BUSY_RETRY_MS: [u64; 3] = [10, 30, 60];

fn finish_unmount(m: &dyn Mounter, target: &Path, attempt: Result<()>) -> Result<UnmountOutcome> {
    match attempt {
        Ok(()) => Ok(UnmountOutcome::Unmounted),
        Err(e) => match e.errno() {
            Some(Errno::EBUSY) => {
                // umount2(2): MNT_DETACH makes the mount unavailable for new accesses and
                // lets the kernel finish the unmount when the last user goes away.
                m.umount2(target, MntFlags::MNT_DETACH)?;
                Ok(UnmountOutcome::Detached)
            }
            Some(Errno::EINVAL) | Some(Errno::ENOENT) => Ok(UnmountOutcome::NotMounted),
            _ => Err(e),
        },
    }
}

/// The real mounter: one syscall per method, in the caller's mount namespace.
#[derive(Debug, Default, Clone)]
pub struct LinuxMounter;

impl Mounter for LinuxMounter {
    fn mount(&self, req: &MountRequest) -> Result<()> {
        // mount(2): source/fstype/data are ignored by the kernel for MS_BIND and MS_REMOUNT
        // except where documented, so pass None there to keep the call minimal.
        nix::mount::mount(Some(req.source.as_str()), &req.target, req.fstype.as_deref(), req.flags, req.data.as_deref())
            .map_err(|errno| Error::Mount {
                source_desc: req.source.clone(),
                target: req.target.clone(),
                fstype: req.fstype.clone().unwrap_or_else(|| "bind".into()),
                errno,
            })
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        // umount2(2); UMOUNT_NOFOLLOW keeps a symlink planted at the target from redirecting
        // the unmount elsewhere.
        nix::mount::umount2(target, flags | MntFlags::UMOUNT_NOFOLLOW)
            .map_err(|errno| Error::Unmount { target: target.to_path_buf(), errno })
    }

    fn set_propagation(&self, target: &Path, propagation: Propagation, recursive: bool) -> Result<()> {
        // mount_namespaces(7): a propagation change is a mount(2) call with only the
        // propagation flag (plus MS_REC) set and everything else NULL.
        let mut flags = match propagation {
            Propagation::Shared => MountFlags::MS_SHARED,
            Propagation::Private => MountFlags::MS_PRIVATE,
            Propagation::Slave => MountFlags::MS_SLAVE,
        };
        if recursive {
            flags |= MountFlags::MS_REC;
        }
        nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .map_err(|errno| Error::Propagation { target: target.to_path_buf(), errno })
    }

    fn mount_table(&self) -> Result<Vec<MountInfo>> {
        // /proc/thread-self reflects the mount namespace of the calling thread, which matters
        // for namespace worker threads (see crate::ns).
        mountinfo::read(Path::new("/proc/thread-self/mountinfo"))
    }

    fn is_mounted(&self, target: &Path) -> Result<bool> {
        // Scan only the mount-point field instead of building the whole table.
        let text = mountinfo::read_text(Path::new("/proc/thread-self/mountinfo"))?;
        Ok(mountinfo::has_mount_point(&text, target))
    }

    fn is_mount_root(&self, target: &Path) -> Result<bool> {
        match mountinfo::statx_mount_root(target) {
            Ok(Some(root)) => Ok(root),
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(false),
            // A kernel before 5.8 does not report the attribute; any other failure is left to
            // the mount table to answer.
            Ok(None) | Err(_) => self.is_mounted(target),
        }
    }
}

/// One call seen by [`RecordingMounter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedCall {
    Mount(MountRequest),
    Umount2 { target: PathBuf, flags: MntFlags },
    Propagation { target: PathBuf, propagation: Propagation, recursive: bool },
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<RecordedCall>,
    table: Vec<MountInfo>,
    next_id: u32,
    inject: HashMap<&'static str, Vec<Errno>>,
    delays: HashMap<PathBuf, std::time::Duration>,
}

/// A recording fake: records each call, keeps a mount table that mount/umount2 update, and
/// fails the next call of a kind with an injected errno (see [`RecordingMounter::fail_next`]).
#[derive(Debug, Default)]
pub struct RecordingMounter {
    state: Mutex<FakeState>,
}

impl RecordingMounter {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A panicking test thread must not hide the calls from the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next call of kind `op` (`"mount"`, `"umount2"`, `"propagation"`) fail with
    /// `errno`. Several injections for one kind are used in order.
    pub fn fail_next(&self, op: &'static str, errno: Errno) {
        self.lock().inject.entry(op).or_default().push(errno);
    }

    /// Makes the next mount onto `target` take `delay` (a server that stopped answering);
    /// calls for other targets are not held up.
    pub fn delay_next_mount(&self, target: &Path, delay: std::time::Duration) {
        self.lock().delays.insert(target.to_path_buf(), delay);
    }

    /// All calls so far.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    /// Only the mount requests so far.
    pub fn mounts(&self) -> Vec<MountRequest> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                RecordedCall::Mount(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Number of umount2 calls so far.
    pub fn unmount_count(&self) -> usize {
        self.calls().iter().filter(|c| matches!(c, RecordedCall::Umount2 { .. })).count()
    }

    /// Simulates a mount disappearing behind the daemon's back (an admin's umount, a plugin
    /// restart that dropped the namespace).
    pub fn vanish(&self, target: &Path) {
        self.lock().table.retain(|m| m.mount_point != target);
    }

    fn injected(st: &mut FakeState, op: &'static str) -> Option<Errno> {
        let v = st.inject.get_mut(op)?;
        if v.is_empty() { None } else { Some(v.remove(0)) }
    }
}

impl Mounter for RecordingMounter {
    fn mount(&self, req: &MountRequest) -> Result<()> {
        let delay = self.lock().delays.remove(&req.target);
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let mut st = self.lock();
        st.calls.push(RecordedCall::Mount(req.clone()));
        if let Some(errno) = Self::injected(&mut st, "mount") {
            return Err(Error::Mount {
                source_desc: req.source.clone(),
                target: req.target.clone(),
                fstype: req.fstype.clone().unwrap_or_else(|| "bind".into()),
                errno,
            });
        }
        st.next_id += 1;
        let id = st.next_id + 100;
        st.table.push(MountInfo {
            mount_id: id,
            parent_id: 1,
            major_minor: "0:0".into(),
            root: if req.flags.contains(MountFlags::MS_BIND) { PathBuf::from(&req.source) } else { PathBuf::from("/") },
            mount_point: req.target.clone(),
            options: "rw".into(),
            optional: vec![],
            fs_type: req.fstype.clone().unwrap_or_else(|| "bind".into()),
            source: req.source.clone(),
            super_options: req.data.clone().unwrap_or_default(),
        });
        Ok(())
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        let mut st = self.lock();
        st.calls.push(RecordedCall::Umount2 { target: target.to_path_buf(), flags });
        if let Some(errno) = Self::injected(&mut st, "umount2") {
            return Err(Error::Unmount { target: target.to_path_buf(), errno });
        }
        match st.table.iter().rposition(|m| m.mount_point == target) {
            Some(i) => {
                st.table.remove(i);
                Ok(())
            }
            None => Err(Error::Unmount { target: target.to_path_buf(), errno: Errno::EINVAL }),
        }
    }

    fn set_propagation(&self, target: &Path, propagation: Propagation, recursive: bool) -> Result<()> {
        let mut st = self.lock();
        st.calls.push(RecordedCall::Propagation { target: target.to_path_buf(), propagation, recursive });
        if let Some(errno) = Self::injected(&mut st, "propagation") {
            return Err(Error::Propagation { target: target.to_path_buf(), errno });
        }
        Ok(())
    }

    fn mount_table(&self) -> Result<Vec<MountInfo>> {
        Ok(self.lock().table.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_tracks_mounts_and_injects_errors() {
        let m = RecordingMounter::new();
        let t = Path::new("/mnt/x");
        m.mount(&MountRequest::bind(Path::new("/src"), t)).expect("mount");
        assert!(m.is_mounted(t).expect("table"));
        // Busy for a moment (one EBUSY): the retry unmounts it for real.
        m.fail_next("umount2", Errno::EBUSY);
        assert_eq!(unmount(&m, t).expect("unmount"), UnmountOutcome::Unmounted);
        m.mount(&MountRequest::bind(Path::new("/src"), t)).expect("mount");
        // Busy through every retry: detached lazily.
        for _ in 0..=BUSY_RETRY_MS.len() {
            m.fail_next("umount2", Errno::EBUSY);
        }
        assert_eq!(unmount(&m, t).expect("unmount"), UnmountOutcome::Detached);
        assert!(!m.is_mounted(t).expect("table"));
        assert_eq!(unmount(&m, t).expect("unmount"), UnmountOutcome::NotMounted);
        m.fail_next("mount", Errno::EPERM);
        let err = m.mount(&MountRequest::bind(Path::new("/src"), t)).expect_err("injected");
        assert_eq!(err.errno(), Some(Errno::EPERM));
        assert!(err.to_string().contains("/mnt/x"), "{err}");
    }

    #[test]
    fn unmount_propagates_other_errors() {
        let m = RecordingMounter::new();
        m.fail_next("umount2", Errno::EPERM);
        let err = unmount(&m, Path::new("/x")).expect_err("EPERM must surface");
        assert_eq!(err.errno(), Some(Errno::EPERM));
    }
}
