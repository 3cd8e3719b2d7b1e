//! The typed result of option parsing: what a volume is ([`VolumeSpec`] and its parts), as the
//! backends read it and the store keeps it (serde, so a field added later needs a default).

use serde::{Deserialize, Serialize};

use super::backup::BackupPolicy;
use super::cifs::CifsTarget;
use super::nfs::NfsTarget;

/// The kind of storage behind a volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    #[default]
    Local,
    Tmpfs,
    Nfs,
    Cifs,
}

impl std::fmt::Display for VolumeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VolumeType::Local => "local",
            VolumeType::Tmpfs => "tmpfs",
            VolumeType::Nfs => "nfs",
            VolumeType::Cifs => "cifs",
        })
    }
}

/// Owner and mode of a volume's root directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

/// Mount flags a tmpfs volume may ask for through the local-driver `o=` option.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsExtra {
    pub nr_inodes: Option<u64>,
    pub noexec: bool,
    /// `o=exec`/`o=suid`/`o=dev` lift voltool's safe defaults (nosuid, nodev).
    pub suid: bool,
    pub dev: bool,
    pub noatime: bool,
    pub ro: bool,
}

/// How a size limit is enforced (`quota=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaMode {
    /// Project quota where the state dir's filesystem supports it, else an image file.
    #[default]
    Auto,
    Project,
    Image,
    None,
}

/// Filesystem inside an image-backed volume (`fs=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    #[default]
    Ext4,
    Xfs,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// Smallest image mkfs accepts for this filesystem.
    pub fn min_size(self) -> u64 {
        match self {
            FsType::Ext4 => 4 << 20,
            // mkfs.xfs (xfsprogs >= 5.19) refuses filesystems under 300 MiB.
            FsType::Xfs => 300 << 20,
        }
    }
}

/// Where a local volume's bytes live; decided once at create and stored, so a later change
/// of the host (say, quotas enabled) never moves an existing volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backing {
    /// A plain directory, no size limit.
    Dir,
    /// A loop-mounted image file holding a filesystem of exactly `size` bytes.
    Image,
    /// A directory on the state dir's filesystem limited by a project quota.
    Project,
}

/// A validated volume specification: everything the backends need, nothing stringly typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub kind: VolumeType,
    /// Hard size limit in bytes.
    pub size: Option<u64>,
    pub owner: Owner,
    #[serde(default)]
    pub tmpfs: TmpfsExtra,
    #[serde(default)]
    pub quota: QuotaMode,
    /// `Some` when the user asked for a filesystem (image-backed volumes).
    #[serde(default)]
    pub fs: Option<FsType>,
    /// Resolved at create for local volumes (see [`super::resolve_backing`]).
    #[serde(default)]
    pub backing: Option<Backing>,
    /// The project ID of a `Backing::Project` volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<u32>,
    #[serde(default)]
    pub on_remove: OnRemove,
    /// NFS volumes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsTarget>,
    /// CIFS volumes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cifs: Option<CifsTarget>,
    /// `backup-*` options.
    #[serde(default, skip_serializing_if = "BackupPolicy::is_empty")]
    pub backup: BackupPolicy,
}

/// What happens to a volume's data when it is removed (`on-remove=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRemove {
    /// Delete the data (the default for local and tmpfs volumes).
    #[default]
    Delete,
    /// Keep the data, moved to `<state dir>/retained/NAME-TIMESTAMP`.
    Retain,
    /// Back the volume up (and verify it) first; remove only if that succeeded. Then like
    /// `delete` (local, tmpfs) or `retain` (network volumes: the remote data stays).
    Archive,
}

/// What the host offers for enforcing local size limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaSupport {
    /// The state dir's filesystem is mounted with project quotas.
    pub project: bool,
    /// `/dev/loop-control` exists.
    pub loop_devices: bool,
}
