//! `GET /v1/status`: the whole host at a glance — what `voltool status` prints and the status
//! page (`GET /` on `--http`) draws.

use serde::{Deserialize, Serialize};

/// The host's summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusView {
    pub host: String,
    pub version: String,
    /// When this summary was made (RFC 3339, UTC).
    pub generated_at: String,
    /// When the volumes were last measured (the watcher's pass), if they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<String>,
    pub volumes: Vec<VolumeRow>,
    /// The last events, failures first, newest first within each.
    pub events: Vec<EventView>,
}

/// One volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRow {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub mounted: bool,
    /// Mount IDs holding it (containers).
    pub mounts: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Network volumes: whether the server answered the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_up: Option<bool>,
    /// The next scheduled backup (RFC 3339), if any schedule names the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupPoint>,
    /// The newest verification (a restore test is one), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify: Option<CheckPoint>,
    /// The newest restore test, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore_test: Option<CheckPoint>,
    /// The last backups, oldest first (at most [`HISTORY`]).
    pub history: Vec<BackupPoint>,
}

/// How many backups per volume the history holds.
pub const HISTORY: usize = 20;

/// One backup in a volume's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupPoint {
    pub id: String,
    /// When it started (RFC 3339).
    pub at: String,
    /// `complete`, `failed` or `running`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A verification's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckPoint {
    pub backup: String,
    pub at: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An event (SPEC section 9's kinds: `backup-failed`, `mount-failed`, ...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventView {
    pub kind: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Body of `POST /v1/notify/test`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NotifyTest {
    /// One notifier by name; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What `POST /v1/notify/test` did, per notifier, in configuration order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotifyTestOutcome {
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
