//! `GET /v1/doctor`: what the host offers and what voltool does with it, in words.

use serde::{Deserialize, Serialize};

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DoctorReport {
    pub kernel: KernelReport,
    pub findings: Vec<Finding>,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    pub feature: String,
    /// Whether the host offers what the feature needs.
    pub available: bool,
    /// What is there, and what voltool will do (or do instead).
    pub detail: String,
}

/// Kernel facilities voltool can use, as the daemon's process sees them.
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
    /// Files in the state dir can share blocks (reflinks): image-backed volumes get
    /// snapshots for consistent backups.
    #[serde(default)]
    pub state_dir_reflink: bool,
}
