//! What the engine answers with: plain data the management API serialises as it is (the CLI
//! reads the same shapes). No behaviour lives here, so these can move to the `voltool-api`
//! crate as they are.

use serde::{Deserialize, Serialize};
use voltool_plugin::store::BackupRow;

/// Progress as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProgressView {
    /// `queued`, `archiving`, `verifying`, `pruning`.
    pub phase: &'static str,
    pub done_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
}

/// A catalog entry with its live progress, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupView {
    #[serde(flatten)]
    pub row: BackupRow,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
}

/// The outcome of `backup verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyOutcome {
    pub id: String,
    pub ok: bool,
    /// The first problem found, naming the file or the archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_bytes: Option<u64>,
}

/// One decision of a prune.
#[derive(Debug, Clone, Serialize)]
pub struct PruneItem {
    pub id: String,
    pub volume: String,
    pub target: String,
    pub keep: bool,
    pub reasons: Vec<String>,
    /// Set when deleting it failed (the backup stays in the catalog).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One schedule as `backup schedule ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub volume: String,
    pub cron: String,
    /// `volume option` or `config schedule NAME`.
    pub source: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
    pub verify: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<String>,
    /// The ID of the backup of this volume in flight, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
}
