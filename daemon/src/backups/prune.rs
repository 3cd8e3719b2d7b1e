//! Retention, plan then execute, so that no crash order leaves a volume with fewer
//! restorable backups than its policy keeps.
//!
//! 1. **Plan** ([`plan_group`]): a pure function of the catalog's `complete` rows of one
//!    (volume, target), the policy and the clock. It only ever drops backups the policy does
//!    not keep; retention runs after a *new* backup is complete, so the kept ones never get
//!    fewer.
//! 2. **Execute** ([`delete_one`]), per dropped backup:
//!    - the row becomes `deleting` (committed; `synchronous=FULL` puts it on disk): from here
//!      on nothing counts it as restorable, and a crash leaves work that is finished at start;
//!    - the objects go checksum first, then manifest, then archive. A backup is written in the
//!      opposite order (archive, manifest, checksum last), so on the target the `.sha256` is
//!      the mark of a whole backup: it exists only while the other two do, in every crash
//!      order. A directory target fsyncs the directory after each unlink;
//!    - the row is removed last.
//! 3. **Recovery**: `deleting` rows are finished ([`finish_deleting`]) by the cleanup pass that
//!    runs right after a start (and every [`super::CLEANUP_RETRY`] while one fails).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use voltool_backup::retention::{Candidate, KeepPolicy};

use super::{Backups, Engine, PruneItem, backup_err, names, parse_time};
use crate::error::{Error, Result};
use voltool_plugin::store::{BackupRow, BackupStatus};

/// What a prune of one (volume, target) does: every decision, and the rows to delete.
#[derive(Debug, Default)]
pub(super) struct PrunePlan {
    pub items: Vec<PruneItem>,
    pub delete: Vec<BackupRow>,
}

/// The pure plan for one volume's `complete` backups at one target.
pub(super) fn plan_group(
    volume: &str,
    target: &str,
    policy: &KeepPolicy,
    backups: &[BackupRow],
    now: DateTime<Utc>,
) -> PrunePlan {
    let mut out = PrunePlan::default();
    if policy.is_empty() {
        return out;
    }
    let complete: Vec<&BackupRow> = backups.iter().filter(|b| b.status == BackupStatus::Complete).collect();
    let candidates: Vec<Candidate> = complete
        .iter()
        .map(|b| Candidate {
            id: b.id.clone(),
            created: parse_time(&b.started_at).unwrap_or(now),
            verified: b.verify_status.as_deref() == Some("ok"),
        })
        .collect();
    let by_id: HashMap<&str, &BackupRow> = complete.iter().map(|b| (b.id.as_str(), *b)).collect();
    for d in voltool_backup::retention::plan(policy, &candidates, now) {
        if !d.keep
            && let Some(row) = by_id.get(d.id.as_str())
        {
            out.delete.push((*row).clone());
        }
        out.items.push(PruneItem {
            id: d.id,
            volume: volume.to_owned(),
            target: target.to_owned(),
            keep: d.keep,
            reasons: d.reasons,
            error: None,
        });
    }
    out
}

/// The steps of deleting one backup: the seam the crash-order tests drive.
pub(super) trait DeleteSteps {
    /// Marks the row `deleting`, durably; `Ok(false)` when it is no longer `complete`.
    fn mark_deleting(&self, id: &str) -> std::result::Result<bool, String>;
    /// Deletes one object (a missing one is not an error), durably.
    fn delete_object(&self, name: &str) -> std::result::Result<(), String>;
    /// Removes the row.
    fn forget(&self, id: &str) -> std::result::Result<(), String>;
}

/// Deletes one backup chosen by a plan. `Ok(false)`: it was not `complete` any more, and
/// nothing was touched.
pub(super) fn delete_one(steps: &dyn DeleteSteps, id: &str) -> std::result::Result<bool, String> {
    if !steps.mark_deleting(id)? {
        return Ok(false);
    }
    finish_deleting(steps, id)?;
    Ok(true)
}

/// The part after the mark; also what recovery runs for a `deleting` row.
pub(super) fn finish_deleting(steps: &dyn DeleteSteps, id: &str) -> std::result::Result<(), String> {
    let [archive, manifest, sum] = names(id);
    for n in [&sum, &manifest, &archive] {
        steps.delete_object(n)?;
    }
    steps.forget(id)
}

/// [`DeleteSteps`] on the real catalog and target.
struct Real<'a> {
    engine: &'a Engine,
    target: Box<dyn voltool_backup::target::Target>,
}

impl DeleteSteps for Real<'_> {
    fn mark_deleting(&self, id: &str) -> std::result::Result<bool, String> {
        self.engine.svc.store().mark_backup_deleting(id).map_err(|e| e.to_string())
    }

    fn delete_object(&self, name: &str) -> std::result::Result<(), String> {
        self.target.delete(name).map_err(|e| e.to_string())
    }

    fn forget(&self, id: &str) -> std::result::Result<(), String> {
        self.engine.svc.store().delete_backup(id).map(|_| ()).map_err(|e| e.to_string())
    }
}

impl Engine {
    fn real_steps(&self, row: &BackupRow) -> std::result::Result<Real<'_>, String> {
        let spec = self.settings.resolve(&row.target_ref)?;
        let target = voltool_backup::target::open_target(&spec, &self.rt).map_err(|e| e.to_string())?;
        Ok(Real { engine: self, target })
    }

    /// Deletes a complete backup chosen by retention (see the module docs for the order).
    fn prune_backup(&self, row: &BackupRow) -> std::result::Result<bool, String> {
        delete_one(&self.real_steps(row)?, &row.id)
    }

    /// Finishes the deletion of a `deleting` row left by an interrupted prune.
    pub(super) fn finish_prune(&self, row: &BackupRow) -> std::result::Result<(), String> {
        finish_deleting(&self.real_steps(row)?, &row.id)
    }
}

impl Backups {
    /// Applies retention: to one volume or all, with `keep` or each volume's `backup-keep`
    /// (volumes without a policy are left alone), per target. `only_target` restricts it to
    /// backups stored at that target URL. With `dry_run` nothing is deleted.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a bad `keep`, store errors.
    pub async fn prune(
        &self,
        volume: Option<&str>,
        keep: Option<&str>,
        dry_run: bool,
        only_target: Option<&str>,
    ) -> Result<Vec<PruneItem>> {
        let forced = keep.map(KeepPolicy::parse).transpose().map_err(|err| Error::BadRequest(err.to_string()))?;
        let v = volume.map(str::to_owned);
        let rows = self.blocking(move |e| Ok(e.svc.store().list_backups(v.as_deref())?)).await?;
        // (volume, target) → complete backups
        let mut groups: BTreeMap<(String, String), Vec<BackupRow>> = BTreeMap::new();
        for r in rows.into_iter().filter(|r| r.status == BackupStatus::Complete) {
            if only_target.is_some_and(|t| t != r.target_url) {
                continue;
            }
            groups.entry((r.volume.clone(), r.target_url.clone())).or_default().push(r);
        }
        let now = Utc::now();
        let mut out = Vec::new();
        for ((vol, target), backups) in groups {
            let policy = match &forced {
                Some(p) => *p,
                None => match self.e.svc.record(&vol).await.ok().and_then(|r| r.spec.backup.keep) {
                    Some(k) => match KeepPolicy::parse(&k) {
                        Ok(p) => p,
                        Err(_) => continue,
                    },
                    None => continue,
                },
            };
            let plan = plan_group(&vol, &target, &policy, &backups, now);
            let mut errors: HashMap<String, String> = HashMap::new();
            if !dry_run {
                for row in plan.delete {
                    let id = row.id.clone();
                    let res = self.blocking(move |e| e.prune_backup(&row).map_err(|m| backup_err(&row.id, m))).await;
                    match res {
                        Ok(true) => tracing::info!(backup = id, "backup deleted by retention"),
                        Ok(false) => tracing::info!(backup = id, "backup changed meanwhile; not deleted"),
                        Err(err) => {
                            errors.insert(id, err.to_string());
                        }
                    }
                }
            }
            out.extend(plan.items.into_iter().map(|mut item| {
                item.error = errors.remove(&item.id);
                item
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
