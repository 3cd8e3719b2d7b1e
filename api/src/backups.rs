//! Backups: `GET /v1/backups[?volume=V]`, `POST /v1/backups` (answers `202` [`BackupStarted`]),
//! `GET /v1/backups/{id}` (poll it to follow a run), `POST /v1/backups/{id}/verify`,
//! `POST /v1/backups/prune`, `GET /v1/schedules`.

use serde::{Deserialize, Serialize};

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupStatus {
    Running,
    Complete,
    Failed,
    /// Chosen by a prune, its objects being deleted: never restorable again.
    Deleting,
}

impl BackupStatus {
    /// The wire name: `running`, `complete`, `failed`, `deleting`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Deleting => "deleting",
        }
    }
}

impl std::fmt::Display for BackupStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backup in the catalog. Absent measurements are `null` (a run in flight, a failed run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: String,
    pub volume: String,
    /// The target as the run named it (a config name or a URL).
    pub target_ref: String,
    /// The target's URL, credentials left out.
    pub target_url: String,
    /// `manual`, `schedule`, `archive` (a removed `on-remove=archive` volume), ...
    pub trigger: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub status: BackupStatus,
    /// Why it failed.
    pub reason: Option<String>,
    /// Bytes read from the volume.
    pub bytes_in: Option<u64>,
    /// Bytes stored (the compressed archive).
    pub bytes_out: Option<u64>,
    pub files: Option<u64>,
    /// The archive's sha256.
    pub sha256: Option<String>,
    /// The S3 multipart upload id of a run in flight (or of a failed run not cleaned up yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_token: Option<String>,
    /// A failed run whose objects could not be removed yet (retried by the scheduler).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleanup_pending: bool,
    /// `ok` or `failed`; `None` when never verified.
    pub verify_status: Option<String>,
    pub verify_at: Option<String>,
    pub verify_reason: Option<String>,
    /// The last restore test: `ok` or `failed`; `None` when never tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_reason: Option<String>,
    /// The consistency steps the run took (`none`, `stop`, `hooks,stop`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// How long the volume's containers were stopped, paused or frozen, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// How the point-in-time copy was taken: `reflink`, or `none` (read live while held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// What a person should know about the run's consistency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_note: Option<String>,
    /// The previous link of an incremental chain (`None`: a full backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// 0 for a full backup, n for the n-th incremental of its chain.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub level: u32,
    /// Its objects are age-encrypted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// `own` (a run of this daemon), `synced` (found on the target by `backup sync`; retention
    /// leaves it alone) or `adopted` (`backup sync --adopt`).
    #[serde(default = "own", skip_serializing_if = "is_own")]
    pub origin: String,
    /// When `backup sync` found its objects gone from the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vanished_at: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn own() -> String {
    "own".into()
}

fn is_own(s: &String) -> bool {
    s == "own"
}

/// Progress of a run or a verification in flight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProgressView {
    /// `queued`, `archiving`, `verifying`, `pruning`.
    pub phase: String,
    pub done_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
}

/// A catalog entry with its live progress (`GET /v1/backups/{id}` and the listing): the
/// record's fields, and `progress` while work on it is in flight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupView {
    #[serde(flatten)]
    pub record: BackupRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
}

impl BackupView {
    /// Whether the run and its verification are over: no progress, not `running`.
    pub fn is_finished(&self) -> bool {
        self.progress.is_none() && self.record.status != BackupStatus::Running
    }
}

/// Body of `POST /v1/backups`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunBackup {
    pub volume: String,
    /// Target name (config file) or URL; `None`: the volume's `backup-target`, else the
    /// daemon's default target.
    #[serde(default)]
    pub target: Option<String>,
    /// Read the stored backup back and check every file before the run counts as done.
    #[serde(default)]
    pub verify: bool,
    /// `backup-consistency` for this run (`none`, `stop`, `hooks,stop`, ...); `None`: the
    /// volume's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// An incremental link of the volume's chain (a full backup when there is none to follow,
    /// or `backup-full` says a new chain starts); `false`: the volume's `backup-mode`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// An incremental also reads every file whose metadata is unchanged and compares its
    /// sha256 with the chain's (content changed behind unchanged times is archived).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rehash: bool,
}

/// Answer to `POST /v1/backups`: the ID of the run that started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupStarted {
    pub id: String,
}

/// Body of `POST /v1/backups/{id}/verify`: no options (`{}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyBackup {}

/// The outcome of `POST /v1/backups/{id}/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyOutcome {
    pub id: String,
    pub ok: bool,
    /// The first problem found, naming the file or the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_bytes: Option<u64>,
}

/// Body of `POST /v1/backups/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PruneBackups {
    /// Only this volume's backups; `None`: every volume with a `backup-keep` option.
    #[serde(default)]
    pub volume: Option<String>,
    /// The policy (`last=3,daily=7`); `None`: each volume's `backup-keep`.
    #[serde(default)]
    pub keep: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// One decision of a prune (the answer to `POST /v1/backups/prune` is a list of them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PruneItem {
    pub id: String,
    pub volume: String,
    pub target: String,
    pub keep: bool,
    /// The policy rules that keep it (`last`, `daily`, ...).
    pub reasons: Vec<String>,
    /// Set when deleting it failed (the backup stays in the catalog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One schedule as `GET /v1/schedules` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScheduleView {
    pub volume: String,
    pub cron: String,
    /// `volume option` or `config schedule NAME`.
    pub source: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
    pub verify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<String>,
    /// The ID of the backup of this volume in flight, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
}
