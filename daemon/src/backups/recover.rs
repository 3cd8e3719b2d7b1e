//! Recovery of runs and prunes that a stop (a kill, a power cut) interrupted.
//!
//! - At start, every row still `running` belongs to a run killed with the previous daemon: it
//!   is marked failed (interrupted) with its cleanup pending, without network I/O, so the
//!   daemon starts at once.
//! - The cleanup pass (right after a start, then every [`super::CLEANUP_RETRY`] while one
//!   fails) first looks at a pending run's objects: when all three are on the target (the
//!   run was cut after its checksum object was committed, before the catalog said so), the
//!   archive is read back and checked against the manifest and the checksum object; if that
//!   holds, the row becomes `complete` (verified), else the objects are removed as for any
//!   failed run.
//! - `deleting` rows (an interrupted prune) are finished: objects, then the row.

use voltool_plugin::store::{BackupRow, BackupStatus};

use super::engine::{Engine, EngineError};
use super::progress::Progress;
use super::{Backups, names};
use crate::error::{Error, Result};

impl Backups {
    /// See the module docs. `at_start`: only the catalog is touched (and internal mounts left
    /// behind are released); otherwise pending work is attempted.
    pub(super) async fn recover(&self, at_start: bool) -> Result<()> {
        let rows = self.blocking(|e| Ok(e.svc.store().backups_needing_cleanup()?)).await?;
        for row in rows {
            if row.status == BackupStatus::Running {
                if !at_start {
                    continue; // in flight in this process
                }
                let mut done = row.clone();
                done.status = BackupStatus::Failed;
                done.reason = Some("interrupted: the daemon stopped during the backup".into());
                done.finished_at = Some(self.e.clock.now_rfc3339());
                done.cleanup_pending = true;
                tracing::warn!(
                    backup = row.id,
                    volume = row.volume,
                    "backup interrupted by a daemon stop; marked failed"
                );
                self.blocking(move |e| Ok(e.svc.store().finish_backup(&done)?)).await?;
                continue;
            }
            if at_start {
                continue;
            }
            let (e, r) = (self.e.clone(), row.clone());
            let outcome = tokio::task::spawn_blocking(move || e.settle(&r))
                .await
                .map_err(|err| Error::Internal(err.to_string()))?;
            if let Err(err) = outcome {
                tracing::warn!(backup = row.id, error = %err, "could not finish the cleanup of a backup yet; will retry");
            }
        }
        if at_start {
            self.e.svc.release_mounts_with_prefix(super::MOUNT_ID_PREFIX).await?;
        }
        Ok(())
    }
}

impl Engine {
    /// Finishes one row that needs work: a `deleting` one is deleted; a failed run with its
    /// cleanup pending is kept when whole and verified, else its objects are removed.
    fn settle(&self, row: &BackupRow) -> std::result::Result<(), EngineError> {
        if row.status == BackupStatus::Deleting {
            self.finish_prune(row)?;
            tracing::info!(backup = row.id, "finished deleting a backup an interrupted prune chose");
            return Ok(());
        }
        if self.rescue(row)? {
            return Ok(());
        }
        self.remove_objects(row)?;
        let mut done = row.clone();
        done.cleanup_pending = false;
        done.upload_token = None;
        self.svc.store().finish_backup(&done)?;
        tracing::info!(backup = row.id, "removed the partial objects of a failed backup");
        Ok(())
    }

    /// Keeps a run whose three objects are whole on the target: read back, checked against its
    /// manifest and checksum object, and recorded `complete` and verified. `Ok(false)`: not
    /// whole, or it does not verify (then it is removed as a failed run).
    fn rescue(&self, row: &BackupRow) -> std::result::Result<bool, EngineError> {
        let (spec, target) = self.open_row_target(row)?;
        for n in names(row).all() {
            if !target.exists(n)? {
                return Ok(false);
            }
        }
        // An encrypted run is read back with the configured identities: without one it cannot
        // be checked, and is removed like any failed run.
        let (report, stored_size) = match self.verify_backup(row, &spec, &Progress::default()) {
            Ok(r) => r,
            Err(reason) => {
                tracing::warn!(backup = row.id, reason = %reason, "an interrupted backup's objects are there but do not verify");
                return Ok(false);
            }
        };
        let mut done = row.clone();
        done.status = BackupStatus::Complete;
        done.reason = None;
        done.cleanup_pending = false;
        done.upload_token = None;
        done.bytes_in = Some(report.bytes);
        done.bytes_out = Some(stored_size);
        done.files = Some(report.files);
        done.sha256 = Some(report.archive_sha256);
        let store = self.svc.store();
        store.finish_backup(&done)?;
        store.set_backup_verified(&row.id, true, &self.clock.now_rfc3339(), None)?;
        tracing::info!(
            backup = row.id,
            volume = row.volume,
            "an interrupted backup was whole on its target and verifies; kept as complete"
        );
        Ok(true)
    }
}

#[cfg(test)]
#[path = "recover_tests.rs"]
mod tests;
