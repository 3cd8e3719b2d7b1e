//! Retention, plan then execute (rustic_core's `prune_plan` then `prune`), so that no crash
//! order leaves a volume with fewer restorable backups than its policy keeps.
//!
//! 1. **Plan** ([`PrunePlan::new`]): a pure function of the catalog's rows, the policies
//!    ([`Policies`]: `prune --keep` for all, or each volume's `backup-keep`) and the clock's
//!    "now" — no I/O, table-tested. Only `complete` rows are candidates, grouped by (volume,
//!    target): a `running`, `failed` or `deleting` row is neither counted as restorable nor
//!    chosen. Per group ([`plan_group`]) it only ever drops backups the policy does not keep;
//!    retention runs after a *new* backup is complete, so the kept ones never get fewer.
//! 2. **Execute** ([`delete_one`]), per dropped backup:
//!    - the row becomes `deleting` (committed; `synchronous=FULL` puts it on disk): from here
//!      on nothing counts it as restorable, and a crash leaves work that is finished at start;
//!    - the objects go checksum first, then manifest, then archive. A backup is written in the
//!      opposite order (archive, manifest, checksum last), so on the target the `.sha256` is
//!      the mark of a whole backup: it exists only while the other two do, in every crash
//!      order. A directory target fsyncs the directory after each unlink;
//!    - the row is removed last.
//! 3. **Recovery**: `deleting` rows are finished ([`finish_deleting`]) by the cleanup pass that
//!    runs right after a start (and every [`super::CLEANUP_RETRY`] while one fails). A prune
//!    that runs before that leaves them alone (step 1).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use voltool_backup::retention::{Candidate, KeepPolicy};
use voltool_backup::{ObjectNames, Target};
use voltool_plugin::store::{BackupRow, BackupStatus};

use super::engine::{Engine, EngineError};
use super::{Backups, PruneItem, backup_err, names, parse_time};
use crate::error::{Error, Result};

/// Which policy each volume's backups are pruned with.
#[derive(Debug, Clone)]
pub(super) enum Policies {
    /// `prune --keep`: one policy for every volume.
    Forced(KeepPolicy),
    /// Each volume's own `backup-keep`; a volume not in the map (no policy, or one that does
    /// not parse) is left alone.
    PerVolume(HashMap<String, KeepPolicy>),
}

impl Policies {
    fn of(&self, volume: &str) -> Option<KeepPolicy> {
        match self {
            Policies::Forced(p) => Some(*p),
            Policies::PerVolume(m) => m.get(volume).copied(),
        }
    }
}

/// What a prune does: every decision, and the rows to delete, in the order they go.
#[derive(Debug, Default)]
pub(super) struct PrunePlan {
    pub items: Vec<PruneItem>,
    pub delete: Vec<BackupRow>,
}

/// The rows a prune decides on, by (volume, target URL): `complete` ones only, and only at
/// `only_target` when it is given.
fn candidates(rows: &[BackupRow], only_target: Option<&str>) -> BTreeMap<(String, String), Vec<BackupRow>> {
    let mut groups: BTreeMap<(String, String), Vec<BackupRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status == BackupStatus::Complete) {
        if only_target.is_some_and(|t| t != r.target_url) {
            continue;
        }
        groups.entry((r.volume.clone(), r.target_url.clone())).or_default().push(r.clone());
    }
    groups
}

/// The volumes whose policies a prune of `rows` needs.
pub(super) fn volumes_to_prune(rows: &[BackupRow], only_target: Option<&str>) -> BTreeSet<String> {
    candidates(rows, only_target).into_keys().map(|(v, _)| v).collect()
}

impl PrunePlan {
    /// The pure plan over catalog rows (of one volume or all): per (volume, target), what
    /// `policies` keeps at `now`.
    pub(super) fn new(rows: &[BackupRow], policies: &Policies, only_target: Option<&str>, now: DateTime<Utc>) -> Self {
        let mut out = Self::default();
        for ((volume, target), backups) in candidates(rows, only_target) {
            let Some(policy) = policies.of(&volume) else { continue };
            let group = plan_group(&volume, &target, &policy, &backups, now);
            out.items.extend(group.items);
            out.delete.extend(group.delete);
        }
        out
    }
}

/// The pure plan for one volume's `complete` backups at one target (other rows are ignored).
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
    // Rows `backup sync` found on the target without `--adopt` are not this daemon's to
    // delete; rows whose objects it found gone are not restorable, so they keep nothing.
    let complete: Vec<&BackupRow> = backups
        .iter()
        .filter(|b| b.status == BackupStatus::Complete && b.origin != "synced" && b.vanished_at.is_none())
        .collect();
    let candidates: Vec<Candidate> = complete
        .iter()
        .map(|b| Candidate {
            id: b.id.clone(),
            created: parse_time(&b.started_at).unwrap_or(now),
            verified: b.verify_status.as_deref() == Some("ok"),
            parent: b.parent.clone(),
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
    type Error;
    /// Marks the row `deleting`, durably; `Ok(false)` when it is no longer `complete`.
    fn mark_deleting(&self, id: &str) -> std::result::Result<bool, Self::Error>;
    /// Deletes one object (a missing one is not an error), durably.
    fn delete_object(&self, name: &str) -> std::result::Result<(), Self::Error>;
    /// Removes the row.
    fn forget(&self, id: &str) -> std::result::Result<(), Self::Error>;
}

/// Deletes one backup chosen by a plan. `Ok(false)`: it was not `complete` any more, and
/// nothing was touched.
pub(super) fn delete_one<S: DeleteSteps + ?Sized>(steps: &S, n: &ObjectNames) -> std::result::Result<bool, S::Error> {
    if !steps.mark_deleting(&n.id)? {
        return Ok(false);
    }
    finish_deleting(steps, n)?;
    Ok(true)
}

/// The part after the mark; also what recovery runs for a `deleting` row.
pub(super) fn finish_deleting<S: DeleteSteps + ?Sized>(
    steps: &S,
    n: &ObjectNames,
) -> std::result::Result<(), S::Error> {
    for name in [&n.checksum, &n.manifest, &n.archive] {
        steps.delete_object(name)?;
    }
    steps.forget(&n.id)
}

/// [`DeleteSteps`] on the real catalog and target.
struct Real<'a> {
    engine: &'a Engine,
    target: Box<dyn Target>,
}

impl DeleteSteps for Real<'_> {
    type Error = EngineError;

    fn mark_deleting(&self, id: &str) -> std::result::Result<bool, EngineError> {
        Ok(self.engine.svc.store().mark_backup_deleting(id)?)
    }

    fn delete_object(&self, name: &str) -> std::result::Result<(), EngineError> {
        Ok(self.target.delete(name)?)
    }

    fn forget(&self, id: &str) -> std::result::Result<(), EngineError> {
        self.engine.svc.store().delete_backup(id)?;
        Ok(())
    }
}

impl Engine {
    fn real_steps(&self, row: &BackupRow) -> std::result::Result<Real<'_>, EngineError> {
        let (_, target) = self.open_row_target(row)?;
        Ok(Real { engine: self, target })
    }

    /// Deletes a complete backup chosen by retention (see the module docs for the order).
    fn prune_backup(&self, row: &BackupRow) -> std::result::Result<bool, EngineError> {
        delete_one(&self.real_steps(row)?, &names(row))
    }

    /// Finishes the deletion of a `deleting` row left by an interrupted prune.
    pub(super) fn finish_prune(&self, row: &BackupRow) -> std::result::Result<(), EngineError> {
        finish_deleting(&self.real_steps(row)?, &names(row))
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
        let policies = match forced {
            Some(p) => Policies::Forced(p),
            None => Policies::PerVolume(self.volume_policies(volumes_to_prune(&rows, only_target)).await),
        };
        let plan = PrunePlan::new(&rows, &policies, only_target, self.e.clock.now());
        if dry_run {
            return Ok(plan.items);
        }
        Ok(self.execute(plan).await)
    }

    /// Each volume's own `backup-keep` (volumes without one, or gone, are left out).
    async fn volume_policies(&self, volumes: BTreeSet<String>) -> HashMap<String, KeepPolicy> {
        let mut out = HashMap::new();
        for vol in volumes {
            let keep = self.e.svc.record(&vol).await.ok().and_then(|r| r.spec.backup.keep);
            if let Some(p) = keep.and_then(|k| KeepPolicy::parse(&k).ok()) {
                out.insert(vol, p);
            }
        }
        out
    }

    /// Deletes what the plan drops, one backup at a time; a failed deletion is reported on
    /// its item (the backup stays in the catalog).
    async fn execute(&self, plan: PrunePlan) -> Vec<PruneItem> {
        let mut errors: HashMap<String, String> = HashMap::new();
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
        plan.items
            .into_iter()
            .map(|mut item| {
                item.error = errors.remove(&item.id);
                item
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
