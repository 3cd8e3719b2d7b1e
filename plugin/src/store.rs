//! SQLite state: volumes and the Mount IDs Docker holds on each.
//!
//! Schema changes are numbered migrations applied in order and recorded in
//! `PRAGMA user_version`; a database newer than this binary is refused rather than
//! misread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::options::VolumeSpec;

mod batch;
mod catalog;
mod holds;
mod journal;
mod pool;
mod synced;
pub use catalog::{BackupRow, BackupStatus, ScheduleState};
pub use holds::{Hold, HoldKind};
pub use journal::RestoreInFlight;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {} has schema version {found}, newer than this voltool understands ({supported}); upgrade voltool", path.display())]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("state database {}: corrupt record for volume {volume}: {reason}", path.display())]
    Corrupt { path: PathBuf, volume: String, reason: String },
}

/// Numbered migrations; index + 1 is the schema version each one produces.
const MIGRATIONS: &[&str] = &[
    // 1: volumes and their Docker mount IDs.
    "CREATE TABLE volumes (
        name TEXT PRIMARY KEY NOT NULL,
        spec TEXT NOT NULL,          -- VolumeSpec as JSON
        options TEXT NOT NULL,       -- the options the user passed, as JSON (never secrets)
        created_at TEXT NOT NULL     -- RFC 3339
     );
     CREATE TABLE mount_ids (
        volume TEXT NOT NULL REFERENCES volumes(name) ON DELETE CASCADE,
        id TEXT NOT NULL,
        PRIMARY KEY (volume, id)
     );",
    // 2: the backup catalog and schedule state.
    "CREATE TABLE backups (
        id TEXT PRIMARY KEY NOT NULL,
        volume TEXT NOT NULL,        -- not a foreign key: backups outlive their volume
        target_ref TEXT NOT NULL,    -- what the run was given: a config target name or a URL
        target_url TEXT NOT NULL,    -- where that resolved to (never credentials)
        trigger TEXT NOT NULL,       -- manual, schedule, archive
        started_at TEXT NOT NULL,    -- RFC 3339
        finished_at TEXT,
        duration_ms INTEGER,
        status TEXT NOT NULL,        -- running, complete, failed, deleting (no CHECK: new states need no migration)
        reason TEXT,                 -- why it failed
        bytes_in INTEGER,
        bytes_out INTEGER,
        files INTEGER,
        sha256 TEXT,
        upload_token TEXT,           -- S3 multipart upload id while running
        cleanup_pending INTEGER NOT NULL DEFAULT 0,
        verify_status TEXT,          -- ok, failed (NULL: never verified)
        verify_at TEXT,
        verify_reason TEXT
     );
     CREATE INDEX backups_by_volume ON backups (volume, started_at);
     CREATE TABLE schedules (
        key TEXT PRIMARY KEY NOT NULL,  -- volume:NAME or config:SCHEDULE:VOLUME
        expr TEXT NOT NULL,
        anchor TEXT NOT NULL,           -- when this expression was first seen
        last_slot TEXT                  -- the latest slot handled (run or skipped)
     );",
    // 3: restores in flight (a daemon killed during one finishes or undoes it at start).
    "CREATE TABLE restores (
        volume TEXT PRIMARY KEY NOT NULL,
        started_at TEXT NOT NULL
     );",
    // 4: the phase of a restore's swap, kept here and not in a file inside the volume (where a
    // container could replace it): see voltool_restore::staged.
    "ALTER TABLE restores ADD COLUMN nonce TEXT NOT NULL DEFAULT '';
     ALTER TABLE restores ADD COLUMN phase TEXT NOT NULL DEFAULT '';",
    // 5: consistent backups: the mode a backup used, how long its containers were held, how
    // its point-in-time copy was taken; and the holds in force (containers stopped or paused,
    // services scaled to 0, filesystems frozen), written before the first one is taken so a
    // daemon killed in the window releases them at start (see voltool_daemon's consistency).
    "ALTER TABLE backups ADD COLUMN consistency TEXT;
     ALTER TABLE backups ADD COLUMN downtime_ms INTEGER;
     ALTER TABLE backups ADD COLUMN snapshot TEXT;
     ALTER TABLE backups ADD COLUMN consistency_note TEXT;
     CREATE TABLE holds (
        backup TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,          -- stopped, paused, scaled, frozen
        target TEXT NOT NULL,        -- container ID, service ID, or the frozen mountpoint
        name TEXT NOT NULL,          -- for people: container or service name, volume
        replicas INTEGER,            -- scaled: the replicas before
        marker TEXT,                 -- stopped: its FinishedAt right after our stop
        PRIMARY KEY (backup, seq)
     );",
    // 6: incremental chains, encryption, and backups found on a target (`backup sync`).
    "ALTER TABLE backups ADD COLUMN parent TEXT;          -- the previous link of its chain
     ALTER TABLE backups ADD COLUMN level INTEGER NOT NULL DEFAULT 0;  -- 0: a full backup
     ALTER TABLE backups ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE backups ADD COLUMN origin TEXT NOT NULL DEFAULT 'own';  -- own, synced, adopted
     ALTER TABLE backups ADD COLUMN vanished_at TEXT;     -- sync found its objects gone",
    // 7: the last restore test of a backup, apart from its verification.
    "ALTER TABLE backups ADD COLUMN test_status TEXT;     -- ok, failed; NULL: never tested
     ALTER TABLE backups ADD COLUMN test_at TEXT;
     ALTER TABLE backups ADD COLUMN test_reason TEXT;",
];

/// A stored volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub name: String,
    pub spec: VolumeSpec,
    pub options: BTreeMap<String, String>,
    pub created_at: String,
}

/// The state database: one writer connection behind a mutex, a small pool of read-only
/// connections ([`pool`]: WAL lets them read while the writer commits), and group commit of
/// the Mount-ID changes every Mount and Unmount makes ([`batch`]). Every write is committed
/// (and fsynced) before its method returns.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    readers: pool::Readers,
    batch: batch::Batcher,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when it cannot be opened or migrated, [`StoreError::TooNew`]
    /// when it was written by a newer voltool.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Sqlite { path: path.into(), source })?;
        let store = Self {
            conn: Mutex::new(conn),
            readers: pool::Readers::new(path),
            batch: batch::Batcher::default(),
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite { path: self.path.clone(), source }
    }

    /// The writer connection (also for reads that must see a write of the same call).
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-only connection from the pool: sees every commit made before the call.
    fn reader(&self) -> Result<pool::Reader<'_>, StoreError> {
        self.readers.get().map_err(self.err())
    }

    /// Applies Mount-ID changes (all or none) in the next group commit; see [`batch`].
    fn mount_id_ops(&self, ops: Vec<batch::MountIdOp>) -> Result<Vec<usize>, StoreError> {
        self.batch.submit(&self.conn, ops).map_err(self.err())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        // WAL: readers never block the writer. FULL: every commit fsyncs the WAL before it
        // returns, so a commit survives a power cut (NORMAL would only survive a process crash,
        // losing the last commits -- a Mount ID, a backup's `complete`, a prune's `deleting`
        // mark -- at a power cut). See docs/DESIGN.md "State".
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
        )
        .map_err(self.err())?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(self.err())?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::TooNew { path: self.path.clone(), found: version, supported });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(self.err())?;
            tx.execute_batch(sql).map_err(self.err())?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)).map_err(self.err())?;
            tx.commit().map_err(self.err())?;
        }
        Ok(())
    }

    /// Current schema version.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(self.err())
    }

    /// Inserts a new volume; `Ok(false)` when the name is taken.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn insert_volume(&self, rec: &VolumeRecord) -> Result<bool, StoreError> {
        let spec = serde_json::to_string(&rec.spec).unwrap_or_default();
        let opts = serde_json::to_string(&rec.options).unwrap_or_default();
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO volumes (name, spec, options, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![rec.name, spec, opts, rec.created_at],
            )
            .map_err(self.err())?;
        Ok(n == 1)
    }

    fn decode(
        &self,
        name: String,
        spec: String,
        options: String,
        created_at: String,
    ) -> Result<VolumeRecord, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { path: self.path.clone(), volume: name.clone(), reason };
        let spec = serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
        let options = serde_json::from_str(&options).map_err(|e| corrupt(e.to_string()))?;
        Ok(VolumeRecord { name, spec, options, created_at })
    }

    /// One volume, if it exists.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn get_volume(&self, name: &str) -> Result<Option<VolumeRecord>, StoreError> {
        let row = self
            .reader()?
            .prepare_cached("SELECT name, spec, options, created_at FROM volumes WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).optional())
            .map_err(self.err())?;
        row.map(|(n, s, o, c)| self.decode(n, s, o, c)).transpose()
    }

    /// One volume, if it exists, and whether a restore into it is in flight: what every Mount
    /// reads, in one statement (one read transaction).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn get_volume_restoring(&self, name: &str) -> Result<Option<(VolumeRecord, bool)>, StoreError> {
        let row = self
            .reader()?
            .prepare_cached(
                "SELECT name, spec, options, created_at, EXISTS (SELECT 1 FROM restores WHERE volume = ?1)
                 FROM volumes WHERE name = ?1",
            )
            .and_then(|mut s| {
                s.query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, bool>(4)?)))
                    .optional()
            })
            .map_err(self.err())?;
        row.map(|(n, s, o, c, restoring)| Ok((self.decode(n, s, o, c)?, restoring))).transpose()
    }

    /// All volumes, by name.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn list_volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        let rows: Vec<(String, String, String, String)> = {
            let conn = self.reader()?;
            let mut stmt = conn
                .prepare_cached("SELECT name, spec, options, created_at FROM volumes ORDER BY name")
                .map_err(self.err())?;
            let it = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).map_err(self.err())?;
            it.collect::<Result<_, _>>().map_err(self.err())?
        };
        rows.into_iter().map(|(n, s, o, c)| self.decode(n, s, o, c)).collect()
    }

    /// Replaces a volume's spec and options (after a resize).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn update_volume(&self, rec: &VolumeRecord) -> Result<(), StoreError> {
        let spec = serde_json::to_string(&rec.spec).unwrap_or_default();
        let opts = serde_json::to_string(&rec.options).unwrap_or_default();
        self.conn()
            .execute("UPDATE volumes SET spec = ?2, options = ?3 WHERE name = ?1", params![rec.name, spec, opts])
            .map_err(self.err())?;
        Ok(())
    }

    /// Deletes a volume and its mount IDs; `Ok(false)` when it did not exist.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn delete_volume(&self, name: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute("DELETE FROM volumes WHERE name = ?1", [name]).map_err(self.err())?;
        Ok(n == 1)
    }

    /// The Mount IDs Docker holds on a volume.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn mount_ids(&self, volume: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.reader()?;
        let mut stmt =
            conn.prepare_cached("SELECT id FROM mount_ids WHERE volume = ?1 ORDER BY id").map_err(self.err())?;
        let ids = stmt.query_map([volume], |r| r.get(0)).map_err(self.err())?;
        ids.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Adds a Mount ID; `Ok(false)` when it was already held.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn add_mount_id(&self, volume: &str, id: &str) -> Result<bool, StoreError> {
        let n = self.mount_id_ops(vec![batch::MountIdOp::Add { volume: volume.into(), id: id.into() }])?;
        Ok(n.first() == Some(&1))
    }

    /// Drops every Mount ID of a volume whose mount is gone and adds `id` for the mount that
    /// replaced it, in one commit; returns how many IDs were dropped.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] (then nothing changed).
    pub fn replace_mount_ids(&self, volume: &str, id: &str) -> Result<usize, StoreError> {
        let ops = vec![
            batch::MountIdOp::Clear { volume: volume.into() },
            batch::MountIdOp::Add { volume: volume.into(), id: id.into() },
        ];
        Ok(self.mount_id_ops(ops)?.first().copied().unwrap_or(0))
    }

    /// Removes a Mount ID and returns how many remain on the volume.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn remove_mount_id(&self, volume: &str, id: &str) -> Result<usize, StoreError> {
        let n = self.mount_id_ops(vec![batch::MountIdOp::Remove { volume: volume.into(), id: id.into() }])?;
        Ok(n.first().copied().unwrap_or(0))
    }

    /// Drops every Mount ID of a volume (its mount is gone).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn clear_mount_ids(&self, volume: &str) -> Result<usize, StoreError> {
        Ok(self.mount_id_ops(vec![batch::MountIdOp::Clear { volume: volume.into() }])?.first().copied().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::VolumeType;

    pub(super) fn rec(name: &str) -> VolumeRecord {
        VolumeRecord {
            name: name.into(),
            spec: VolumeSpec { kind: VolumeType::Tmpfs, size: Some(1 << 20), ..Default::default() },
            options: [("type".to_string(), "tmpfs".to_string())].into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn volumes_and_mount_ids_survive_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("state.db");
        {
            let s = Store::open(&p).expect("open");
            assert!(s.insert_volume(&rec("a")).expect("insert"));
            assert!(!s.insert_volume(&rec("a")).expect("dup"), "duplicate name must not insert");
            assert!(s.add_mount_id("a", "m1").expect("add"));
            assert!(!s.add_mount_id("a", "m1").expect("re-add"));
            assert!(s.add_mount_id("a", "m2").expect("add"));
        }
        let s = Store::open(&p).expect("reopen");
        assert_eq!(s.schema_version().expect("v"), MIGRATIONS.len() as i64);
        assert_eq!(s.get_volume("a").expect("get"), Some(rec("a")));
        assert_eq!(s.mount_ids("a").expect("ids"), vec!["m1", "m2"]);
        assert_eq!(s.remove_mount_id("a", "nope").expect("rm unknown"), 2);
        assert_eq!(s.remove_mount_id("a", "m1").expect("rm"), 1);
        assert!(s.delete_volume("a").expect("del"));
        assert!(s.mount_ids("a").expect("ids").is_empty(), "cascade");
        assert_eq!(s.get_volume("a").expect("get"), None);
    }

    #[test]
    fn a_mount_reads_the_record_and_a_restore_in_flight_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::open(&dir.path().join("state.db")).expect("open");
        assert_eq!(s.get_volume_restoring("a").expect("get"), None);
        s.insert_volume(&rec("a")).expect("insert");
        assert_eq!(s.get_volume_restoring("a").expect("get"), Some((rec("a"), false)));
        s.set_restoring("a", true, "t").expect("restoring");
        assert_eq!(s.get_volume_restoring("a").expect("get"), Some((rec("a"), true)));
        s.set_restoring("a", false, "t").expect("done");
        assert_eq!(s.get_volume_restoring("a").expect("get"), Some((rec("a"), false)));
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("state.db");
        Connection::open(&p).expect("c").execute_batch("PRAGMA user_version = 99").expect("set");
        let e = Store::open(&p).expect_err("too new").to_string();
        assert!(e.contains("schema version 99"), "{e}");
    }
}
