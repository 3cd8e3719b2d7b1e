//! Restores: `POST /v1/volumes/{name}/restore` (from a catalog ID or an archive URL),
//! `POST /v1/volumes/{name}/import?FLAGS` (the body is the archive), a migration's
//! `POST /v1/volumes/{name}/receive` (all three answer a [`RestoreOutcome`]), and
//! `POST /v1/backups/{id}/restore-test`.

use serde::{Deserialize, Serialize};

/// How a restore may treat the volume: the body of a restore (inside [`RestoreRequest`]) and
/// the query string of an import (`force=&allow_devices=&strip_components=&preserve_privileges=`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreFlags {
    /// Replace a volume that has data or is used by containers.
    #[serde(default)]
    pub force: bool,
    /// Create device nodes found in the archive.
    #[serde(default)]
    pub allow_devices: bool,
    /// Drop leading path components (`tar czf x.tgz /data` archives hold `data/...`).
    #[serde(default)]
    pub strip_components: usize,
    /// Keep setuid/setgid bits and `security.*` xattrs of an archive that is not from the
    /// daemon's catalog.
    #[serde(default)]
    pub preserve_privileges: bool,
}

/// Body of `POST /v1/volumes/{name}/restore`. Unknown fields are refused (a misspelt
/// `force` must not restore without it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// A backup ID or an archive URL.
    pub from: String,
    #[serde(flatten)]
    pub flags: RestoreFlags,
    /// Restore only these paths (relative to the volume root; a directory with everything
    /// below it) of a backup ID, into the volume as it is; empty: the whole volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// With `paths`: a directory in the volume to restore them under; `None`: in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// What a restore, an import or a migration's receive did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreOutcome {
    pub volume: String,
    /// `zstd`, `gzip` or `none`.
    pub compression: String,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Whether the result was checked against a voltool manifest.
    pub verified_against_manifest: bool,
    /// What the archive was checked against: `manifest` (the backup's manifest), `catalog`
    /// (the sha256 the catalog recorded at backup time; the manifest was missing) or `none`
    /// (an archive without a manifest: unverified). Empty from a daemon older than this field.
    #[serde(default)]
    pub verification: String,
    /// Whether the volume was created by this restore.
    pub created: bool,
}

/// Body of `POST /v1/backups/{id}/restore-test`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestoreTestRequest {
    /// The check, run with `/bin/sh -c` (exit 0 = good); `None`: list `/data`.
    #[serde(default)]
    pub check_cmd: Option<String>,
}

/// The outcome of a restore test.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreTestOutcome {
    pub id: String,
    pub ok: bool,
    /// The check command's exit status (128 + N for signal N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// Its stdout and stderr (first 64 KiB).
    pub output: String,
    /// Why the test could not run or failed before the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
