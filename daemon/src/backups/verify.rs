//! `backup verify`: a complete backup's archive is read back from its target as stored and
//! checked against its manifest and checksum object; the verdict goes to the catalog. The
//! same check runs after a run with `verify` (inside that run's slot).

use std::sync::Arc;

use voltool_backup::VerifyReport;
use voltool_plugin::store::BackupStatus;

use super::engine::EngineError;
use super::progress::Progress;
use super::{Backups, VerifyOutcome};
use crate::error::{Error, Result};
use crate::observe::EventKind;

impl Backups {
    /// Re-reads a complete backup from its target and checks it against its manifest; the
    /// result goes to the catalog.
    ///
    /// # Errors
    /// [`Error::BackupNotFound`], [`Error::BadRequest`] for a backup that is not complete;
    /// a failed check is an `Ok` outcome with `ok: false`.
    pub async fn verify(&self, id: &str) -> Result<VerifyOutcome> {
        self.verify_with(id, Arc::new(Progress::in_phase("verifying")), true).await
    }

    /// `take_slot`: wait for one of the global slots (a standalone verify); a run verifying
    /// its own backup already holds one (taking a second could deadlock all slots).
    pub(super) async fn verify_with(
        &self,
        id: &str,
        progress: Arc<Progress>,
        take_slot: bool,
    ) -> Result<VerifyOutcome> {
        let row = self.row(id).await?;
        if row.status != BackupStatus::Complete {
            return Err(Error::BadRequest(format!(
                "backup {id} is {}, only complete backups can be verified",
                serde_json::to_value(row.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            )));
        }
        let spec = self.e.resolve_row(&row)?;
        // An incremental is verified with every link before it, full first.
        let chain = match self.e.catalog.chain(id).await {
            Ok(rows) => rows.unwrap_or_else(|| vec![row.clone()]),
            Err(err) => {
                let outcome = outcome(id, Ok(Err(EngineError::Chain(err.to_string()))));
                let (i, reason) = (id.to_owned(), outcome.error.clone());
                let at = self.e.clock.now_rfc3339();
                self.blocking(move |e| Ok(e.svc.store().set_backup_verified(&i, false, &at, reason.as_deref())?))
                    .await?;
                return Ok(outcome);
            }
        };
        progress.set_total(chain.iter().map(|r| r.bytes_out.unwrap_or(0)).sum());
        let registered = {
            let mut map = self.e.progress.lock().unwrap_or_else(|p| p.into_inner());
            map.insert(id.to_owned(), progress.clone()).is_none()
        };
        let permit = if take_slot { Some(self.e.slots.clone().acquire_owned().await) } else { None };
        let (e, p) = (self.e.clone(), progress.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut last = None;
            for r in &chain {
                let link = |source| EngineError::Link { link: r.id.clone(), source: Box::new(source) };
                let report = if chain.len() > 1 {
                    e.verify_backup(r, &spec, &p).map_err(link)?
                } else {
                    e.verify_backup(r, &spec, &p)?
                };
                last = Some(report);
            }
            last.ok_or_else(|| EngineError::Chain("an empty chain".into()))
        })
        .await;
        drop(permit);
        if registered {
            self.e.progress.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
            self.e.ended.notify_waiters();
        }
        let outcome = outcome(id, result);
        if outcome.ok {
            tracing::info!(backup = id, "backup verified");
        } else {
            tracing::warn!(backup = id, error = outcome.error.as_deref().unwrap_or(""), "backup verification failed");
            if let Some(o) = self.e.restores.observer() {
                o.metrics().verify_failed(&row.volume);
                let mut event = o.event(EventKind::VerifyFailed).volume(&row.volume).backup_id(id);
                event.reason.clone_from(&outcome.error);
                o.emit(event);
            }
        }
        let (i, ok, reason) = (id.to_owned(), outcome.ok, outcome.error.clone());
        let at = self.e.clock.now_rfc3339();
        self.blocking(move |e| Ok(e.svc.store().set_backup_verified(&i, ok, &at, reason.as_deref())?)).await?;
        Ok(outcome)
    }
}

/// The verdict on backup `id` as `backup verify` reports it; a task that died is a failed
/// check (`internal error: ...`).
fn outcome(
    id: &str,
    result: std::result::Result<std::result::Result<(VerifyReport, u64), EngineError>, tokio::task::JoinError>,
) -> VerifyOutcome {
    let failed = |reason: String| VerifyOutcome {
        id: id.to_owned(),
        ok: false,
        error: Some(format!("backup {id}: {reason}")),
        entries: None,
        files: None,
        bytes: None,
        archive_bytes: None,
    };
    match result {
        Ok(Ok((rep, _))) => VerifyOutcome {
            id: id.to_owned(),
            ok: true,
            error: None,
            entries: Some(rep.entries),
            files: Some(rep.files),
            bytes: Some(rep.bytes),
            archive_bytes: Some(rep.archive_size),
        },
        Ok(Err(reason)) => failed(reason.to_string()),
        Err(err) => failed(format!("internal error: {err}")),
    }
}
