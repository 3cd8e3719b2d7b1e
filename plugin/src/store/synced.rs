//! The catalog's side of `backup sync`: backups found on a target are added as they are
//! there (`complete`, origin `synced` or `adopted`), a sync with `--adopt` makes `synced`
//! rows this host's to prune, and rows whose objects are gone from their target carry
//! `vanished_at` until they come back. Each change is one conditional statement, so a sync
//! racing a prune or a run never undoes what they did (a row a prune marked `deleting` is not
//! marked vanished, an ID that exists is never overwritten).

use rusqlite::params;

use super::{BackupRow, Store, StoreError};

fn i(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl Store {
    /// Adds a backup found on a target, with every field `b` has that a sync knows: status,
    /// times, sizes, files, sha256, chain, origin. Nothing happens when the ID is in the
    /// catalog already; returns whether the row was added.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn insert_found_backup(&self, b: &BackupRow) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "INSERT INTO backups (id, volume, target_ref, target_url, trigger, started_at, finished_at, status,
                    bytes_in, bytes_out, files, sha256, parent, level, encrypted, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT (id) DO NOTHING",
                params![
                    b.id,
                    b.volume,
                    b.target_ref,
                    b.target_url,
                    b.trigger,
                    b.started_at,
                    b.finished_at,
                    b.status.as_str(),
                    i(b.bytes_in),
                    i(b.bytes_out),
                    i(b.files),
                    b.sha256,
                    b.parent,
                    i64::from(b.level),
                    i64::from(b.encrypted),
                    b.origin,
                ],
            )
            .map_err(self.err())?;
        Ok(n == 1)
    }

    /// `backup sync --adopt`: a `synced` row becomes `adopted` (retention may delete it).
    /// Returns whether it was `synced`.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn adopt_backup(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("UPDATE backups SET origin = 'adopted' WHERE id = ?1 AND origin = 'synced'", [id])
            .map_err(self.err())?;
        Ok(n == 1)
    }

    /// Marks a `complete` backup's objects gone from its target since `at` (`Some`), or
    /// back (`None`). Returns whether the row changed: a row already so marked, or (for
    /// `Some`) one that is not `complete` any more, is left alone.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn set_backup_vanished(&self, id: &str, at: Option<&str>) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n = match at {
            Some(at) => conn.execute(
                "UPDATE backups SET vanished_at = ?2 WHERE id = ?1 AND status = 'complete' AND vanished_at IS NULL",
                params![id, at],
            ),
            None => {
                conn.execute("UPDATE backups SET vanished_at = NULL WHERE id = ?1 AND vanished_at IS NOT NULL", [id])
            }
        }
        .map_err(self.err())?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::BackupStatus;
    use super::*;

    fn found(id: &str) -> BackupRow {
        let mut b = BackupRow::running(id, "v", "s3://b/p", "s3://b/p", "sync", "2026-01-01T00:00:00Z");
        b.status = BackupStatus::Complete;
        b.finished_at = Some("2026-01-01T00:00:00Z".into());
        b.bytes_in = Some(10);
        b.bytes_out = Some(u64::MAX);
        b.files = Some(2);
        b.sha256 = Some("ab".repeat(32));
        b.parent = Some("v-0".into());
        b.level = 3;
        b.origin = "synced".into();
        b
    }

    #[test]
    fn a_found_backup_is_added_once_as_found_and_adopted_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::open(&dir.path().join("state.db")).expect("open");
        let b = found("v-1");
        assert!(s.insert_found_backup(&b).expect("insert"));
        let mut other = found("v-1");
        other.volume = "w".into();
        assert!(!s.insert_found_backup(&other).expect("insert"), "an ID in the catalog is left as it is");
        let mut want = b.clone();
        want.bytes_out = Some(i64::MAX as u64);
        assert_eq!(s.get_backup("v-1").expect("get"), Some(want));
        assert!(s.adopt_backup("v-1").expect("adopt"));
        assert!(!s.adopt_backup("v-1").expect("adopt"), "adopted already");
        assert_eq!(s.get_backup("v-1").expect("get").map(|r| r.origin).as_deref(), Some("adopted"));
        s.insert_backup(&BackupRow::running("v-2", "v", "/b", "file:///b", "manual", "t")).expect("insert");
        assert!(!s.adopt_backup("v-2").expect("adopt"), "an own row stays own");
    }

    #[test]
    fn only_complete_rows_vanish_and_they_come_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::open(&dir.path().join("state.db")).expect("open");
        s.insert_found_backup(&found("v-1")).expect("insert");
        assert!(s.set_backup_vanished("v-1", Some("t1")).expect("vanish"));
        assert!(!s.set_backup_vanished("v-1", Some("t2")).expect("vanish"), "the first time stays");
        assert_eq!(s.get_backup("v-1").expect("get").and_then(|r| r.vanished_at).as_deref(), Some("t1"));
        assert!(s.set_backup_vanished("v-1", None).expect("back"));
        assert!(!s.set_backup_vanished("v-1", None).expect("back"));
        assert!(s.mark_backup_deleting("v-1").expect("deleting"));
        assert!(!s.set_backup_vanished("v-1", Some("t3")).expect("vanish"), "a prune's row is not marked");
        assert!(!s.set_backup_vanished("gone", Some("t3")).expect("vanish"));
    }
}
