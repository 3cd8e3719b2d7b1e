//! The backup catalog and the scheduler's state, in the same database as the volumes.
//!
//! A backup row is inserted as `running` before the first byte is written and becomes
//! `complete` only after all three objects are committed; a row still `running` when the
//! daemon starts belongs to a run that was killed, and is turned into `failed` by the backup
//! engine (and back into `complete` if its three objects turn out whole and verify). A prune
//! marks a row `deleting` before it deletes the objects and removes the row after them.

use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupStatus {
    Running,
    Complete,
    Failed,
    /// Chosen by a prune, its objects being deleted: never restorable again, finished at
    /// start (see `backups::prune`).
    Deleting,
}

impl BackupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Deleting => "deleting",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "complete" => Self::Complete,
            "deleting" => Self::Deleting,
            _ => Self::Failed,
        }
    }
}

/// One backup in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRow {
    pub id: String,
    pub volume: String,
    pub target_ref: String,
    pub target_url: String,
    pub trigger: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub status: BackupStatus,
    pub reason: Option<String>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub files: Option<u64>,
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
    /// How long containers were stopped, paused or frozen, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// How the point-in-time copy was taken (`reflink`, `none`: read live while held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// What a person should know about the run's consistency (no snapshot possible, so the
    /// containers were held throughout; containers that were writing during a `none` run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_note: Option<String>,
    /// The previous link of an incremental chain (`None`: a full backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The link's place in its chain: 0 for a full backup, n for the n-th incremental.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub level: u32,
    /// The objects are age-encrypted (`ID.tar.zst.age`, `ID.manifest.json.age`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// Who put it in the catalog: `own` (a run of this daemon), `synced` (found on the target
    /// by `backup sync`: retention never deletes it) or `adopted` (`backup sync --adopt`).
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

impl BackupRow {
    /// A run that is starting: `running`, nothing measured yet.
    pub fn running(
        id: &str,
        volume: &str,
        target_ref: &str,
        target_url: &str,
        trigger: &str,
        started_at: &str,
    ) -> Self {
        Self {
            id: id.into(),
            volume: volume.into(),
            target_ref: target_ref.into(),
            target_url: target_url.into(),
            trigger: trigger.into(),
            started_at: started_at.into(),
            finished_at: None,
            duration_ms: None,
            status: BackupStatus::Running,
            reason: None,
            bytes_in: None,
            bytes_out: None,
            files: None,
            sha256: None,
            upload_token: None,
            cleanup_pending: false,
            verify_status: None,
            verify_at: None,
            verify_reason: None,
            test_status: None,
            test_at: None,
            test_reason: None,
            consistency: None,
            downtime_ms: None,
            snapshot: None,
            consistency_note: None,
            parent: None,
            level: 0,
            encrypted: false,
            origin: own(),
            vanished_at: None,
        }
    }
}

/// The scheduler's memory of one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub key: String,
    pub expr: String,
    pub anchor: String,
    pub last_slot: Option<String>,
}

const COLUMNS: &str = "id, volume, target_ref, target_url, trigger, started_at, finished_at, duration_ms, status, \
     reason, bytes_in, bytes_out, files, sha256, upload_token, cleanup_pending, verify_status, verify_at, verify_reason, consistency, downtime_ms, snapshot, consistency_note, parent, level, encrypted, origin, vanished_at, test_status, test_at, test_reason";

fn row(r: &Row<'_>) -> rusqlite::Result<BackupRow> {
    let u = |i: usize| -> rusqlite::Result<Option<u64>> { Ok(r.get::<_, Option<i64>>(i)?.map(|v| v.max(0) as u64)) };
    Ok(BackupRow {
        id: r.get(0)?,
        volume: r.get(1)?,
        target_ref: r.get(2)?,
        target_url: r.get(3)?,
        trigger: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        duration_ms: u(7)?,
        status: BackupStatus::parse(&r.get::<_, String>(8)?),
        reason: r.get(9)?,
        bytes_in: u(10)?,
        bytes_out: u(11)?,
        files: u(12)?,
        sha256: r.get(13)?,
        upload_token: r.get(14)?,
        cleanup_pending: r.get::<_, i64>(15)? != 0,
        verify_status: r.get(16)?,
        verify_at: r.get(17)?,
        verify_reason: r.get(18)?,
        consistency: r.get(19)?,
        downtime_ms: u(20)?,
        snapshot: r.get(21)?,
        consistency_note: r.get(22)?,
        parent: r.get(23)?,
        level: u32::try_from(r.get::<_, i64>(24)?).unwrap_or(0),
        encrypted: r.get::<_, i64>(25)? != 0,
        origin: r.get(26)?,
        vanished_at: r.get(27)?,
        test_status: r.get(28)?,
        test_at: r.get(29)?,
        test_reason: r.get(30)?,
    })
}

fn i(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl Store {
    /// Records a run that is starting.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] (also when the ID exists).
    pub fn insert_backup(&self, b: &BackupRow) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO backups (id, volume, target_ref, target_url, trigger, started_at, status, encrypted)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    b.id,
                    b.volume,
                    b.target_ref,
                    b.target_url,
                    b.trigger,
                    b.started_at,
                    b.status.as_str(),
                    // Known from the start: an interrupted run's objects are found by it.
                    i64::from(b.encrypted)
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Remembers the upload token of a running backup (so a killed run's upload can be aborted).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn set_backup_token(&self, id: &str, token: Option<&str>) -> Result<(), StoreError> {
        self.conn()
            .execute("UPDATE backups SET upload_token = ?2 WHERE id = ?1", params![id, token])
            .map_err(self.err())?;
        Ok(())
    }

    /// Writes the final state of a run (complete or failed) and its numbers.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn finish_backup(&self, b: &BackupRow) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE backups SET finished_at = ?2, duration_ms = ?3, status = ?4, reason = ?5, bytes_in = ?6,
                    bytes_out = ?7, files = ?8, sha256 = ?9, upload_token = ?10, cleanup_pending = ?11,
                    consistency = ?12, downtime_ms = ?13, snapshot = ?14, consistency_note = ?15, parent = ?16,
                    level = ?17, encrypted = ?18
                 WHERE id = ?1",
                params![
                    b.id,
                    b.finished_at,
                    i(b.duration_ms),
                    b.status.as_str(),
                    b.reason,
                    i(b.bytes_in),
                    i(b.bytes_out),
                    i(b.files),
                    b.sha256,
                    b.upload_token,
                    i64::from(b.cleanup_pending),
                    b.consistency,
                    i(b.downtime_ms),
                    b.snapshot,
                    b.consistency_note,
                    b.parent,
                    i64::from(b.level),
                    i64::from(b.encrypted),
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records a verification result.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn set_backup_verified(&self, id: &str, ok: bool, at: &str, reason: Option<&str>) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE backups SET verify_status = ?2, verify_at = ?3, verify_reason = ?4 WHERE id = ?1",
                params![id, if ok { "ok" } else { "failed" }, at, reason],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records a restore test's result; it is the backup's verification too (a restore
    /// checks every file's hash).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn set_backup_tested(&self, id: &str, ok: bool, at: &str, reason: Option<&str>) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE backups SET verify_status = ?2, verify_at = ?3, verify_reason = ?4, \
                 test_status = ?2, test_at = ?3, test_reason = ?4 WHERE id = ?1",
                params![id, if ok { "ok" } else { "failed" }, at, reason],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// One backup.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn get_backup(&self, id: &str) -> Result<Option<BackupRow>, StoreError> {
        self.reader()?
            .query_row(&format!("SELECT {COLUMNS} FROM backups WHERE id = ?1"), [id], row)
            .optional()
            .map_err(self.err())
    }

    /// Backups, newest first, of one volume or of all.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn list_backups(&self, volume: Option<&str>) -> Result<Vec<BackupRow>, StoreError> {
        let conn = self.reader()?;
        let sql = format!(
            "SELECT {COLUMNS} FROM backups WHERE (?1 IS NULL OR volume = ?1) ORDER BY started_at DESC, rowid DESC"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(self.err())?;
        let rows = stmt.query_map([volume], row).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Runs that need work from the engine: still `running` (at start: killed), failed with
    /// their objects not yet removed, or `deleting` (a prune that has not finished).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn backups_needing_cleanup(&self) -> Result<Vec<BackupRow>, StoreError> {
        let conn = self.reader()?;
        let sql =
            format!("SELECT {COLUMNS} FROM backups WHERE status IN ('running', 'deleting') OR cleanup_pending != 0");
        let mut stmt = conn.prepare_cached(&sql).map_err(self.err())?;
        let rows = stmt.query_map([], row).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Marks a complete backup `deleting` before a prune deletes its objects (committed, and
    /// with `synchronous=FULL` on disk, before the first object goes). Returns false when the
    /// row is not `complete` (gone, or changed meanwhile): then nothing may be deleted.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn mark_backup_deleting(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("UPDATE backups SET status = 'deleting' WHERE id = ?1 AND status = 'complete'", [id])
            .map_err(self.err())?;
        Ok(n == 1)
    }

    /// Removes a backup from the catalog (after its objects were deleted).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn delete_backup(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute("DELETE FROM backups WHERE id = ?1", [id]).map_err(self.err())?;
        Ok(n == 1)
    }

    /// The newest complete backup of a volume.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn last_backup(&self, volume: &str) -> Result<Option<BackupRow>, StoreError> {
        self.reader()?
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM backups WHERE volume = ?1 AND status != 'running'
                     ORDER BY started_at DESC, rowid DESC LIMIT 1"
                ),
                [volume],
                row,
            )
            .optional()
            .map_err(self.err())
    }

    /// The state of one schedule.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn get_schedule(&self, key: &str) -> Result<Option<ScheduleState>, StoreError> {
        self.reader()?
            .query_row("SELECT key, expr, anchor, last_slot FROM schedules WHERE key = ?1", [key], |r| {
                Ok(ScheduleState { key: r.get(0)?, expr: r.get(1)?, anchor: r.get(2)?, last_slot: r.get(3)? })
            })
            .optional()
            .map_err(self.err())
    }

    /// Inserts or replaces the state of one schedule.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn put_schedule(&self, s: &ScheduleState) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO schedules (key, expr, anchor, last_slot) VALUES (?1, ?2, ?3, ?4)",
                params![s.key, s.expr, s.anchor, s.last_slot],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Marks a restore into `volume` as in flight (`true`) or done (`false`).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn set_restoring(&self, volume: &str, restoring: bool, at: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        if restoring {
            conn.execute("INSERT OR REPLACE INTO restores (volume, started_at) VALUES (?1, ?2)", params![volume, at])
        } else {
            conn.execute("DELETE FROM restores WHERE volume = ?1", [volume])
        }
        .map_err(self.err())?;
        Ok(())
    }

    /// Volumes with a restore that was in flight when the daemon stopped.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn restoring(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached("SELECT volume FROM restores ORDER BY volume").map_err(self.err())?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Forgets schedules whose key is not in `keep` (volumes removed, schedules dropped).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn retain_schedules(&self, keep: &[String]) -> Result<(), StoreError> {
        let conn = self.conn();
        let keys: Vec<String> = {
            let mut stmt = conn.prepare_cached("SELECT key FROM schedules").map_err(self.err())?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(self.err())?;
            rows.collect::<Result<_, _>>().map_err(self.err())?
        };
        for k in keys.iter().filter(|k| !keep.contains(k)) {
            conn.execute("DELETE FROM schedules WHERE key = ?1", [k]).map_err(self.err())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(id: &str, volume: &str, at: &str) -> BackupRow {
        BackupRow::running(id, volume, "/b", "file:///b", "manual", at)
    }

    #[test]
    fn backup_lifecycle_survives_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("state.db");
        {
            let s = Store::open(&p).expect("open");
            s.insert_backup(&running("v-1", "v", "2026-01-01T00:00:00Z")).expect("insert");
            s.insert_backup(&running("v-2", "v", "2026-01-02T00:00:00Z")).expect("insert");
            s.insert_backup(&running("w-1", "w", "2026-01-01T00:00:00Z")).expect("insert");
            s.set_backup_token("v-2", Some("upload-1")).expect("token");
            let mut done = running("v-1", "v", "2026-01-01T00:00:00Z");
            done.status = BackupStatus::Complete;
            done.bytes_in = Some(10);
            done.sha256 = Some("ab".into());
            s.finish_backup(&done).expect("finish");
            s.set_backup_verified("v-1", true, "2026-01-01T01:00:00Z", None).expect("verify");
        }
        let s = Store::open(&p).expect("reopen");
        let v = s.list_backups(Some("v")).expect("ls");
        assert_eq!(v.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["v-2", "v-1"]);
        assert_eq!(v[1].status, BackupStatus::Complete);
        assert_eq!(v[1].verify_status.as_deref(), Some("ok"));
        assert_eq!(s.list_backups(None).expect("all").len(), 3);
        let pending = s.backups_needing_cleanup().expect("pending");
        assert_eq!(pending.len(), 2);
        assert_eq!(
            pending.iter().find(|b| b.id == "v-2").and_then(|b| b.upload_token.clone()).as_deref(),
            Some("upload-1")
        );
        assert_eq!(s.last_backup("v").expect("last").map(|b| b.id), Some("v-1".into()));
        assert!(s.delete_backup("v-1").expect("del"));
        assert_eq!(s.get_backup("v-1").expect("get"), None);
    }

    #[test]
    fn a_deleting_mark_survives_reopen_and_only_takes_complete_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("state.db");
        {
            let s = Store::open(&p).expect("open");
            let sync: i64 = s.conn().query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("pragma");
            assert_eq!(sync, 2, "synchronous=FULL");
            s.insert_backup(&running("v-1", "v", "2026-01-01T00:00:00Z")).expect("insert");
            assert!(!s.mark_backup_deleting("v-1").expect("mark"), "a running row is not deleted");
            let mut done = running("v-1", "v", "2026-01-01T00:00:00Z");
            done.status = BackupStatus::Complete;
            s.finish_backup(&done).expect("finish");
            assert!(s.mark_backup_deleting("v-1").expect("mark"));
            assert!(!s.mark_backup_deleting("gone").expect("mark"));
        }
        let s = Store::open(&p).expect("reopen");
        let b = s.get_backup("v-1").expect("get").expect("row");
        assert_eq!(b.status, BackupStatus::Deleting);
        let pending = s.backups_needing_cleanup().expect("pending");
        assert_eq!(pending.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["v-1"]);
    }

    #[test]
    fn schedules_are_kept_and_pruned() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::open(&dir.path().join("state.db")).expect("open");
        let st = ScheduleState { key: "volume:a".into(), expr: "@daily".into(), anchor: "t".into(), last_slot: None };
        s.put_schedule(&st).expect("put");
        s.put_schedule(&ScheduleState { key: "volume:b".into(), ..st.clone() }).expect("put");
        s.retain_schedules(&["volume:a".into()]).expect("retain");
        assert_eq!(s.get_schedule("volume:a").expect("get"), Some(st));
        assert_eq!(s.get_schedule("volume:b").expect("get"), None);
    }
}
