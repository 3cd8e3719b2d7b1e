//! What this host's kernel offers voltool, read from /proc and /dev without side effects.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mountinfo;

/// Kernel facilities voltool can use, as seen from the calling process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelReport {
    /// Filesystem types registered in /proc/filesystems.
    pub filesystems: Vec<String>,
    /// A kernel NFS client is registered or its module is installed.
    pub kernel_nfs: bool,
    /// A kernel CIFS client is registered or its module is installed.
    pub kernel_cifs: bool,
    /// The kernel was built with quota support (`/proc/sys/fs/quota` exists).
    pub kernel_quota: bool,
    /// `/dev/loop-control` is present.
    pub loop_devices: bool,
    /// `/dev/fuse` is present.
    pub fuse: bool,
    /// The filesystem the state dir lives on.
    pub state_dir_fs: Option<String>,
    /// The state dir's mount has project quotas enabled (`prjquota`/`pquota`).
    pub state_dir_project_quota: bool,
    /// Files in the state dir can share blocks (`FICLONE` works there: xfs with reflink,
    /// btrfs): image-backed volumes get snapshots for consistent backups.
    #[serde(default)]
    pub state_dir_reflink: bool,
}

fn module_installed(release: &str, rel: &str) -> bool {
    Path::new("/lib/modules").join(release).join("kernel").join(rel).exists()
}

/// Probes the running kernel; `state_dir` is where volumes would live.
pub fn kernel_report(state_dir: &Path) -> KernelReport {
    let filesystems: Vec<String> = std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let has = |fs: &str| filesystems.iter().any(|f| f == fs);
    let table = mountinfo::read(Path::new("/proc/self/mountinfo")).unwrap_or_default();
    let state_dir: PathBuf = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let mount = mountinfo::containing(&table, &state_dir);
    KernelReport {
        kernel_nfs: has("nfs") || has("nfs4") || module_installed(&release, "fs/nfs"),
        kernel_cifs: has("cifs")
            || has("smb3")
            || module_installed(&release, "fs/smb/client")
            || module_installed(&release, "fs/cifs"),
        kernel_quota: Path::new("/proc/sys/fs/quota").exists(),
        loop_devices: Path::new("/dev/loop-control").exists(),
        fuse: Path::new("/dev/fuse").exists(),
        state_dir_fs: mount.map(|m| m.fs_type.clone()),
        state_dir_project_quota: mount.is_some_and(|m| m.has_option("prjquota") || m.has_option("pquota")),
        state_dir_reflink: reflinks_in(&state_dir),
        filesystems,
    }
}

/// Whether a reflink works in `dir`: two probe files, cloned and removed again.
fn reflinks_in(dir: &Path) -> bool {
    use crate::snapshot::{LinuxSnapshots, SnapshotOps};
    let a = dir.join(format!(".voltool-reflink-probe-{}", std::process::id()));
    let b = dir.join(format!(".voltool-reflink-probe-{}.copy", std::process::id()));
    let _ = std::fs::remove_file(&b);
    let ok = std::fs::write(&a, b"probe").is_ok() && LinuxSnapshots.reflink(&a, &b).is_ok();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_sees_proc_filesystems() {
        let r = kernel_report(Path::new("/"));
        assert!(r.filesystems.iter().any(|f| f == "tmpfs" || f == "proc"), "{r:?}");
        assert!(r.state_dir_fs.is_some());
    }
}
