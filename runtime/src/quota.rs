//! Project quotas: a directory tree tagged with a project ID (inherited by everything created
//! below it) and a hard block limit for that project — the kernel then answers writes past
//! the limit with `EDQUOT`. Works on xfs and on ext4 with the `project` feature, mounted with
//! `prjquota`.
//!
//! - Tagging: `FS_IOC_FSGETXATTR` / `FS_IOC_FSSETXATTR` (ioctl_xfs_fsgetxattr(2)) set
//!   `fsx_projid` and `FS_XFLAG_PROJINHERIT` on the directory.
//! - Limits and usage: quotactl_fd(2) (Linux 5.14+) with `Q_SETQUOTA`/`Q_GETQUOTA` on
//!   `PRJQUOTA`, addressed by an open fd on the filesystem, so no block device path is needed
//!   (a managed plugin may not see it).

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;

use crate::error::{Error, Result};

const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const PRJQUOTA: u32 = 2;
const QIF_BLIMITS: u32 = 1;

/// `struct fsxattr` from linux/fs.h.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    fsx_xflags: u32,
    fsx_extsize: u32,
    fsx_nextents: u32,
    fsx_projid: u32,
    fsx_cowextsize: u32,
    fsx_pad: [u8; 8],
}

/// `struct if_dqblk` from linux/quota.h.
#[repr(C)]
#[derive(Default)]
struct IfDqblk {
    dqb_bhardlimit: u64,
    dqb_bsoftlimit: u64,
    dqb_curspace: u64,
    dqb_ihardlimit: u64,
    dqb_isoftlimit: u64,
    dqb_curinodes: u64,
    dqb_btime: u64,
    dqb_itime: u64,
    dqb_valid: u32,
}

nix::ioctl_read!(fs_ioc_fsgetxattr, b'X', 31, FsXattr);
nix::ioctl_write_ptr!(fs_ioc_fssetxattr, b'X', 32, FsXattr);

const fn qcmd(cmd: u32, kind: u32) -> u32 {
    (cmd << 8) | (kind & 0xff)
}

/// Usage and limit of one project, in bytes (limit 0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectUsage {
    pub used: u64,
    pub limit: u64,
}

/// The project-quota seam.
pub trait ProjectQuota: Send + Sync {
    /// Tags `dir` with project `id`, inherited by new files and directories below it.
    ///
    /// # Errors
    /// [`Error::Quota`]; `EOPNOTSUPP`/`ENOTTY` when the filesystem has no project IDs.
    fn assign(&self, dir: &Path, id: u32) -> Result<()>;

    /// Sets project `id`'s hard limit to `bytes` (rounded up to KiB; 0 removes the limit) on
    /// the filesystem holding `path`.
    ///
    /// # Errors
    /// [`Error::Quota`]; `ESRCH` when project quotas are not enabled on that mount.
    fn set_limit(&self, path: &Path, id: u32, bytes: u64) -> Result<()>;

    /// Project `id`'s usage and limit on the filesystem holding `path`.
    ///
    /// # Errors
    /// [`Error::Quota`].
    fn usage(&self, path: &Path, id: u32) -> Result<ProjectUsage>;
}

fn open_dir(path: &Path, op: &'static str) -> Result<File> {
    File::open(path).map_err(|e| Error::Quota {
        op,
        path: path.to_path_buf(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })
}

fn quotactl(fd: &File, path: &Path, op: &'static str, cmd: u32, id: u32, q: &mut IfDqblk) -> Result<()> {
    // SAFETY: quotactl_fd(2) with a valid open fd and a pointer to a live, properly sized
    // `struct if_dqblk` that the kernel reads (SETQUOTA) or fills (GETQUOTA).
    let rc = unsafe {
        libc::syscall(libc::SYS_quotactl_fd, fd.as_raw_fd(), cmd as libc::c_uint, id as libc::c_int, q as *mut IfDqblk)
    };
    if rc < 0 { Err(Error::Quota { op, path: path.to_path_buf(), errno: Errno::last() }) } else { Ok(()) }
}

/// The real implementation.
#[derive(Debug, Default, Clone)]
pub struct LinuxProjectQuota;

impl ProjectQuota for LinuxProjectQuota {
    fn assign(&self, dir: &Path, id: u32) -> Result<()> {
        let f = open_dir(dir, "open")?;
        let mut x = FsXattr::default();
        let err = |op, errno| Error::Quota { op, path: dir.to_path_buf(), errno };
        // SAFETY: FS_IOC_FSGETXATTR fills a `struct fsxattr` we own.
        unsafe { fs_ioc_fsgetxattr(f.as_raw_fd(), &mut x) }.map_err(|e| err("FS_IOC_FSGETXATTR", e))?;
        x.fsx_projid = id;
        x.fsx_xflags |= FS_XFLAG_PROJINHERIT;
        // SAFETY: FS_IOC_FSSETXATTR reads the `struct fsxattr` we just filled.
        unsafe { fs_ioc_fssetxattr(f.as_raw_fd(), &x) }.map(drop).map_err(|e| err("FS_IOC_FSSETXATTR", e))
    }

    fn set_limit(&self, path: &Path, id: u32, bytes: u64) -> Result<()> {
        let f = open_dir(path, "open")?;
        let mut q = IfDqblk { dqb_bhardlimit: bytes.div_ceil(1024), dqb_valid: QIF_BLIMITS, ..Default::default() };
        quotactl(&f, path, "quotactl_fd(Q_SETQUOTA)", qcmd(Q_SETQUOTA, PRJQUOTA), id, &mut q)
    }

    fn usage(&self, path: &Path, id: u32) -> Result<ProjectUsage> {
        let f = open_dir(path, "open")?;
        let mut q = IfDqblk::default();
        quotactl(&f, path, "quotactl_fd(Q_GETQUOTA)", qcmd(Q_GETQUOTA, PRJQUOTA), id, &mut q)?;
        Ok(ProjectUsage { used: q.dqb_curspace, limit: q.dqb_bhardlimit * 1024 })
    }
}

/// Recording fake: remembers assignments and limits; usage is whatever a test sets.
#[derive(Debug, Default)]
pub struct RecordingProjectQuota {
    state: Mutex<(HashMap<PathBuf, u32>, HashMap<u32, ProjectUsage>)>,
}

impl RecordingProjectQuota {
    pub fn new() -> Self {
        Self::default()
    }
    /// The project a directory was tagged with.
    pub fn project_of(&self, dir: &Path) -> Option<u32> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0.get(dir).copied()
    }
    /// The limit set for a project.
    pub fn limit_of(&self, id: u32) -> Option<u64> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1.get(&id).map(|u| u.limit)
    }
}

impl ProjectQuota for RecordingProjectQuota {
    fn assign(&self, dir: &Path, id: u32) -> Result<()> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0.insert(dir.to_path_buf(), id);
        Ok(())
    }
    fn set_limit(&self, _path: &Path, id: u32, bytes: u64) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.1.entry(id).or_insert(ProjectUsage { used: 0, limit: 0 }).limit = bytes.div_ceil(1024) * 1024;
        Ok(())
    }
    fn usage(&self, _path: &Path, id: u32) -> Result<ProjectUsage> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .get(&id)
            .copied()
            .unwrap_or(ProjectUsage { used: 0, limit: 0 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<IfDqblk>(), 72);
        assert_eq!(qcmd(Q_SETQUOTA, PRJQUOTA), 0x8000_0802);
    }

    #[test]
    fn without_project_quotas_the_errno_says_so() {
        // The host running the unit tests has no prjquota mount: the calls must fail with an
        // errno (not crash), naming the path.
        let d = tempfile::tempdir().expect("tmp");
        if let Err(e) = LinuxProjectQuota.set_limit(d.path(), 4242, 1 << 20) {
            assert!(e.to_string().contains(&d.path().display().to_string()), "{e}");
            assert!(e.errno().is_some());
        }
    }
}
