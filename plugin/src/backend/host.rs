//! The host facilities backends work through ([`Host`]: mounts, loop devices, filesystem
//! tools, project quotas), passed in explicitly so every test runs against the recording
//! fakes, and the live userspace NFS sessions ([`FuseSessions`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use voltool_runtime::loopdev::LoopDevices;
use voltool_runtime::mount::Mounter;
use voltool_runtime::quota::ProjectQuota;
use voltool_runtime::snapshot::SnapshotOps;

use super::tools::FsTools;
use crate::options::QuotaSupport;

/// The host facilities backends work through; fakes in tests.
#[derive(Clone)]
pub struct Host {
    pub mounter: Arc<dyn Mounter>,
    pub loops: Arc<dyn LoopDevices>,
    pub tools: Arc<dyn FsTools>,
    pub projects: Arc<dyn ProjectQuota>,
    /// Freeze, thaw, reflink and btrfs subvolumes, for snapshots.
    pub snapshots: Arc<dyn SnapshotOps>,
    /// The state dir is on btrfs: directory volumes are made subvolumes (snapshots in
    /// constant time).
    pub subvolumes: bool,
    /// Files in the state dir can share blocks (xfs with reflinks, btrfs): directory volumes
    /// are snapshotted by a reflink copy of their tree.
    pub reflinks: bool,
    pub quota: QuotaSupport,
    /// Mount NFS through the userspace client over FUSE (no kernel NFS client here).
    pub nfs_userspace: bool,
    /// Live userspace NFS sessions by mountpoint.
    pub fuse: Arc<FuseSessions>,
}

impl Host {
    /// A host of recording fakes (no syscalls): `mounter`'s mount table, loop devices, mkfs
    /// and quotas that only record, image-backed size limits. For tests, here and in the
    /// crates above (the daemon's engine tests).
    pub fn recording(mounter: &Arc<voltool_runtime::RecordingMounter>) -> Self {
        Host {
            mounter: mounter.clone(),
            loops: Arc::new(voltool_runtime::loopdev::RecordingLoopDevices::new()),
            tools: Arc::new(super::tools::RecordingFsTools::new()),
            projects: Arc::new(voltool_runtime::quota::RecordingProjectQuota::new()),
            snapshots: Arc::new(voltool_runtime::snapshot::RecordingSnapshots::new()),
            subvolumes: false,
            reflinks: false,
            quota: QuotaSupport { project: false, loop_devices: true },
            nfs_userspace: false,
            fuse: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("quota", &self.quota).finish_non_exhaustive()
    }
}

/// The FUSE sessions serving userspace NFS mounts. A session ends when its mountpoint is
/// unmounted; one whose daemon died leaves a dead mount that must be replaced.
#[derive(Debug, Default)]
pub struct FuseSessions {
    live: std::sync::Mutex<std::collections::HashMap<PathBuf, voltool_nfsfuse::Mounted>>,
}

impl FuseSessions {
    pub(super) fn insert(&self, mp: &Path, m: voltool_nfsfuse::Mounted) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(mp.to_path_buf(), m);
    }

    /// Whether a live session serves `mp`.
    pub fn serves(&self, mp: &Path) -> bool {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(mp).is_some_and(|m| !m.is_finished())
    }

    /// Forgets the session of `mp` after its unmount; its threads finish in the background
    /// (within one NFS call timeout even if the server hangs).
    pub(super) fn finish(&self, mp: &Path) {
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
