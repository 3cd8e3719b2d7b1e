//! `voltool doctor`: what the host offers and what voltool does with it, in words.

use serde::{Deserialize, Serialize};
use voltool_runtime::probe::KernelReport;

/// One line of the doctor's report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    pub feature: String,
    /// Whether the host offers what the feature needs.
    pub available: bool,
    /// What is there, and what voltool will do (or do instead).
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoctorReport {
    pub kernel: KernelReport,
    pub findings: Vec<Finding>,
}

fn finding(feature: &str, available: bool, detail: String) -> Finding {
    Finding { feature: feature.into(), available, detail }
}

/// Turns a kernel probe into findings. Pure, so it is table-tested.
pub fn assess(k: KernelReport) -> DoctorReport {
    let has = |fs: &str| k.filesystems.iter().any(|f| f == fs);
    let yes = |b: bool| if b { "yes" } else { "no" };
    let state_fs = k.state_dir_fs.clone().unwrap_or_else(|| "unknown".into());
    let findings = vec![
        finding(
            "local volumes",
            true,
            format!("directories in the state dir (on {state_fs}), bind-mounted at the mountpoint"),
        ),
        finding(
            "tmpfs volumes",
            has("tmpfs"),
            if has("tmpfs") {
                "kernel tmpfs with a hard size= limit".into()
            } else {
                "the kernel has no tmpfs: type=tmpfs volumes cannot be created".into()
            },
        ),
        finding(
            "size limits on local volumes",
            k.state_dir_project_quota || k.loop_devices,
            format!(
                "project quotas on the state dir: {} (kernel quota support: {}); loop devices: {}. size= on local volumes uses {}",
                yes(k.state_dir_project_quota),
                yes(k.kernel_quota),
                yes(k.loop_devices),
                match (k.state_dir_project_quota, k.loop_devices) {
                    (true, _) => "project quotas (fs= or quota=image still gives an image)",
                    (false, true) =>
                        "loop-mounted image files (ext4; xfs with fs=xfs); mount the state dir with prjquota for project quotas",
                    (false, false) =>
                        "nothing: without project quotas or loop devices size= on local volumes is refused",
                },
            ),
        ),
        finding(
            "nfs volumes",
            k.kernel_nfs || k.fuse,
            format!(
                "kernel NFS client: {}; FUSE: {}. nfs volumes mount through {}",
                yes(k.kernel_nfs),
                yes(k.fuse),
                if k.kernel_nfs {
                    "the kernel client"
                } else if k.fuse {
                    "a userspace NFS client over FUSE"
                } else {
                    "nothing: neither is available"
                },
            ),
        ),
        finding(
            "cifs volumes",
            k.kernel_cifs,
            if k.kernel_cifs {
                "kernel CIFS client: yes. cifs volumes mount through it; shares are checked with a userspace SMB client at create".into()
            } else {
                "kernel CIFS client: no. cifs volumes can be created (the share is checked at create) but not mounted on this host".into()
            },
        ),
        finding(
            "snapshots for consistent backups",
            (k.state_dir_reflink && k.loop_devices) || state_fs == "btrfs",
            format!(
                "reflinks on the state dir ({state_fs}): {}; loop devices: {}. {}",
                yes(k.state_dir_reflink),
                yes(k.loop_devices),
                match (state_fs == "btrfs", k.state_dir_reflink && k.loop_devices) {
                    (true, _) =>
                        "directory volumes are btrfs subvolumes with read-only snapshots and image-backed volumes \
                                  are reflinked: backup-consistency=stop|pause|hooks|freeze holds their containers for \
                                  milliseconds",
                    (false, true) =>
                        "image-backed volumes are snapshotted (freeze, reflink, thaw): backup-consistency=\
                                      stop|pause|hooks|freeze holds their containers for milliseconds; directory volumes \
                                      have no snapshot here and hold them for the whole backup",
                    (false, false) =>
                        "no snapshots: backup-consistency=stop|pause holds the containers for the whole \
                                       backup (a state dir on btrfs, or xfs with reflink=1, gives snapshots)",
                },
            ),
        ),
    ];
    DoctorReport { kernel: k, findings }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare() -> KernelReport {
        KernelReport {
            filesystems: vec!["tmpfs".into(), "ext4".into()],
            kernel_nfs: false,
            kernel_cifs: false,
            kernel_quota: false,
            loop_devices: true,
            fuse: true,
            state_dir_fs: Some("ext4".into()),
            state_dir_project_quota: false,
            state_dir_reflink: false,
        }
    }

    #[test]
    fn fallbacks_are_named() {
        let r = assess(bare());
        let get = |f: &str| r.findings.iter().find(|x| x.feature == f).expect(f).clone();
        assert!(get("size limits on local volumes").detail.contains("loop-mounted image files"));
        assert!(get("nfs volumes").detail.contains("userspace NFS client over FUSE"));
        assert!(!get("cifs volumes").available);
        let mut k = bare();
        k.state_dir_project_quota = true;
        k.kernel_nfs = true;
        let r = assess(k);
        assert!(r.findings.iter().any(|f| f.detail.contains("project quotas on the state dir: yes")));
        assert!(r.findings.iter().any(|f| f.detail.contains("the kernel client")));
    }

    #[test]
    fn snapshots_are_said_to_be_there_or_not() {
        let snapshots = |k: KernelReport| {
            assess(k).findings.into_iter().find(|f| f.feature == "snapshots for consistent backups").expect("finding")
        };
        let none = snapshots(bare());
        assert!(!none.available && none.detail.contains("no snapshots"), "{}", none.detail);
        let mut xfs = bare();
        (xfs.state_dir_fs, xfs.state_dir_reflink) = (Some("xfs".into()), true);
        let xfs = snapshots(xfs);
        assert!(xfs.available && xfs.detail.contains("image-backed volumes are snapshotted"), "{}", xfs.detail);
        let mut btrfs = bare();
        (btrfs.state_dir_fs, btrfs.state_dir_reflink) = (Some("btrfs".into()), true);
        let btrfs = snapshots(btrfs);
        assert!(btrfs.available && btrfs.detail.contains("btrfs subvolumes"), "{}", btrfs.detail);
    }
}
