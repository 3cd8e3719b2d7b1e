//! `voltool backup ls --target T` and `voltool backup sync`: the target as the source of truth
//! (SPEC §8).
//!
//! - **Listing** ([`Backups::target_listing`]): every backup on the target by its manifest
//!   object ([`super::on_target`]: bounded, checked, an unreadable manifest is one entry of
//!   the answer), each with this host's catalog entry for its ID.
//! - **Sync** ([`Backups::sync`]), per target, plan then execute: the catalog's rows are read
//!   *before* the target is listed, so a row `complete` then had its objects whole before the
//!   listing began and one the listing misses is gone, never merely not written yet. The plan
//!   ([`plan`], pure) adds every `complete` backup the catalog lacks (origin `synced`, or
//!   `adopted` with `adopt`; volume, time, sizes, files, sha256 and chain from the manifest),
//!   adopts rows earlier syncs added (with `adopt`), marks `vanished_at` on `complete` rows of
//!   this target whose objects are not all listed and clears it on those whose objects are
//!   back. Each change is one conditional statement (`voltool_plugin::store`'s `synced`
//!   module), so a prune or a run meanwhile is never undone. A target that cannot be listed
//!   changes nothing (a partial listing would mark the rest vanished).
//!
//! Retention leaves `synced` rows alone (`prune.rs`): the host that wrote a backup prunes it;
//! `adopted` ones are this host's to prune. Vanished rows are never restored (the catalog
//! refuses them) nor counted by retention.

use std::collections::{BTreeMap, HashMap};

use voltool_api::{CatalogMark, FoundState, Skipped, SyncBackups, SyncReport, TargetBackup, TargetListing, TargetSync};
use voltool_backup::{LIST_LIMIT, Target, TargetError, TargetSpec, open_target};
use voltool_plugin::store::{BackupRow, BackupStatus};

use super::Backups;
use super::engine::{Engine, EngineError};
use super::on_target::{BackupObjects, Found, scan};
use crate::error::{Error, Result};

/// A target as a sync records it in the rows it adds.
#[derive(Debug, Clone)]
pub(super) struct Place {
    /// What the user (or the config) named it: the rows' `target_ref`.
    pub reference: String,
    /// Its URL: the rows' `target_url`.
    pub url: String,
}

/// What a sync of one target changes, decided before anything is.
#[derive(Debug, Default)]
pub(super) struct SyncPlan {
    pub add: Vec<BackupRow>,
    pub adopt: Vec<String>,
    pub vanish: Vec<String>,
    pub back: Vec<String>,
    /// What is reported without a change: unreadable, incomplete, encrypted, known.
    pub report: TargetSync,
}

/// The pure plan of a sync of the target at `place`: `rows` are the whole catalog as it was
/// before the target was listed, `found` and `listed` what the target holds.
pub(super) fn plan(
    rows: &[BackupRow],
    found: &[Found],
    listed: &BTreeMap<String, u64>,
    place: &Place,
    adopt: bool,
) -> SyncPlan {
    let by_id: HashMap<&str, &BackupRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut out =
        SyncPlan { report: TargetSync { target: place.url.clone(), ..TargetSync::default() }, ..SyncPlan::default() };
    for f in found {
        let id = &f.objects.id;
        let skipped = || Skipped { id: id.clone(), problem: f.problem.clone().unwrap_or_default() };
        let known = by_id.get(id.as_str());
        match (f.state, known, &f.head) {
            (FoundState::Complete, Some(row), _) => {
                out.report.known += 1;
                if adopt && row.origin == "synced" {
                    out.adopt.push(id.clone());
                }
            }
            (FoundState::Complete, None, Some(head)) => out.add.push(found_row(f, head, place, adopt)),
            (FoundState::Encrypted, Some(_), _) => out.report.known += 1,
            (FoundState::Encrypted, None, _) => out.report.encrypted.push(id.clone()),
            (FoundState::Incomplete, ..) => out.report.incomplete.push(skipped()),
            (FoundState::Unreadable | FoundState::Complete, ..) => out.report.unreadable.push(skipped()),
        }
    }
    for r in rows.iter().filter(|r| r.status == BackupStatus::Complete && r.target_url == place.url) {
        let whole = BackupObjects::of_row(r).names().iter().all(|n| listed.contains_key(n));
        match (whole, r.vanished_at.is_some()) {
            (false, false) => out.vanish.push(r.id.clone()),
            (true, true) => out.back.push(r.id.clone()),
            _ => {}
        }
    }
    out
}

/// The catalog row of a complete backup found on a target.
fn found_row(f: &Found, head: &voltool_backup::ManifestHead, place: &Place, adopt: bool) -> BackupRow {
    let mut r = BackupRow::running(&f.objects.id, &head.volume, &place.reference, &place.url, "sync", &head.created);
    r.status = BackupStatus::Complete;
    r.finished_at = Some(head.created.clone());
    r.bytes_in = Some(head.bytes);
    r.bytes_out = Some(head.stored_size.unwrap_or(head.archive_size));
    r.files = Some(head.files);
    r.sha256 = Some(head.archive_sha256.clone());
    r.parent = head.parent.as_ref().map(|p| p.id.clone());
    r.level = head.level;
    r.encrypted = f.objects.encrypted;
    r.origin = if adopt { "adopted" } else { "synced" }.into();
    r
}

impl Engine {
    /// The target a reference names, opened.
    fn open_reference(&self, reference: &str) -> std::result::Result<(TargetSpec, Box<dyn Target>), EngineError> {
        let spec = self.settings.resolve(reference)?;
        let target = open_target(&spec, &self.rt)?;
        Ok((spec, target))
    }

    /// What the target holds: its listing (name → size) and the backups found in it.
    fn read_target(
        &self,
        target: &dyn Target,
    ) -> std::result::Result<(BTreeMap<String, u64>, Vec<Found>), TargetError> {
        let listed: BTreeMap<String, u64> = target.list(LIST_LIMIT)?.into_iter().map(|l| (l.name, l.size)).collect();
        let found = scan(target, &listed, &self.catalog.identities());
        Ok((listed, found))
    }

    /// Syncs the catalog with one target. A target that cannot be opened or listed is
    /// reported on its entry, with nothing changed.
    ///
    /// # Errors
    /// Store errors.
    fn sync_target(&self, reference: &str, adopt: bool) -> Result<TargetSync> {
        let (spec, target) = match self.open_reference(reference) {
            Ok(t) => t,
            Err(e) => {
                return Ok(TargetSync {
                    target: reference.to_owned(),
                    error: Some(e.to_string()),
                    ..TargetSync::default()
                });
            }
        };
        let place = Place { reference: reference.to_owned(), url: spec.describe() };
        // The catalog first: see the module docs.
        let rows = self.svc.store().list_backups(None)?;
        let (listed, found) = match self.read_target(&*target) {
            Ok(t) => t,
            Err(e) => return Ok(TargetSync { target: place.url, error: Some(e.to_string()), ..TargetSync::default() }),
        };
        let plan = plan(&rows, &found, &listed, &place, adopt);
        self.apply(plan)
    }

    /// Executes a sync's plan, reporting what changed.
    fn apply(&self, plan: SyncPlan) -> Result<TargetSync> {
        let store = self.svc.store();
        let mut report = plan.report;
        for row in &plan.add {
            if store.insert_found_backup(row)? {
                tracing::info!(
                    backup = row.id,
                    target = report.target,
                    origin = row.origin,
                    "backup found on its target added to the catalog"
                );
                report.added.push(row.id.clone());
            } else {
                report.known += 1;
            }
        }
        for id in plan.adopt {
            if store.adopt_backup(&id)? {
                report.adopted.push(id);
            }
        }
        let now = self.clock.now_rfc3339();
        for id in plan.vanish {
            if store.set_backup_vanished(&id, Some(&now))? {
                tracing::warn!(backup = id, target = report.target, "backup's objects are gone from its target");
                report.vanished.push(id);
            }
        }
        for id in plan.back {
            if store.set_backup_vanished(&id, None)? {
                tracing::info!(backup = id, target = report.target, "backup's objects are back on its target");
                report.returned.push(id);
            }
        }
        Ok(report)
    }

    /// The references a sync without a target goes through: every `[targets.NAME]`, then
    /// the default target; each place once.
    fn sync_references(&self) -> Vec<String> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for r in self.settings.targets.keys().chain(std::iter::once(&self.default_target)) {
            let place = self.settings.resolve(r).map(|s| s.describe()).unwrap_or_else(|_| r.clone());
            if !seen.contains(&place) {
                seen.push(place);
                out.push(r.clone());
            }
        }
        out
    }
}

/// This host's catalog entry for a backup found on a target.
fn mark(row: &BackupRow) -> CatalogMark {
    CatalogMark {
        origin: row.origin.clone(),
        status: crate::views::backup_status(row.status),
        target_url: row.target_url.clone(),
        vanished_at: row.vanished_at.clone(),
    }
}

fn listing_entry(f: Found, rows: &HashMap<String, BackupRow>) -> TargetBackup {
    let catalog = rows.get(&f.objects.id).map(mark);
    let h = f.head;
    TargetBackup {
        id: f.objects.id,
        state: f.state,
        problem: f.problem,
        volume: h.as_ref().map(|h| h.volume.clone()),
        created: h.as_ref().map(|h| h.created.clone()),
        level: h.as_ref().map_or(0, |h| h.level),
        parent: h.as_ref().and_then(|h| h.parent.as_ref().map(|p| p.id.clone())),
        archive_size: f.archive_size,
        files: h.as_ref().map(|h| h.files),
        catalog,
    }
}

impl Backups {
    /// What a target holds (a name or URL; `None`: the default target): every backup on it
    /// by its manifest object, in ID order (by volume, then time), with this host's catalog
    /// entry for each.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a reference that does not resolve, [`Error::Target`] when
    /// the target cannot be listed (or holds more than [`LIST_LIMIT`] objects), store errors.
    pub async fn target_listing(&self, target: Option<&str>) -> Result<TargetListing> {
        let reference = target.map_or_else(|| self.e.default_target.clone(), str::to_owned);
        self.blocking(move |e| {
            let (spec, target) = e.open_reference(&reference).map_err(|err| match err {
                EngineError::Target(t) => Error::Target(t),
                other => Error::BadRequest(other.to_string()),
            })?;
            let (_, found) = e.read_target(&*target)?;
            let rows: HashMap<String, BackupRow> =
                e.svc.store().list_backups(None)?.into_iter().map(|r| (r.id.clone(), r)).collect();
            let backups = found.into_iter().map(|f| listing_entry(f, &rows)).collect();
            Ok(TargetListing { target: spec.describe(), backups })
        })
        .await
    }

    /// Adds to the catalog what the target holds and it lacks, and marks what is gone (see
    /// the module docs); every configured target and the default one when `req` names none.
    /// A target that cannot be listed is reported on its entry ([`SyncReport::ok`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn sync(&self, req: SyncBackups) -> Result<SyncReport> {
        let adopt = req.adopt;
        self.blocking(move |e| {
            let references = req.target.map_or_else(|| e.sync_references(), |t| vec![t]);
            let targets = references.iter().map(|r| e.sync_target(r, adopt)).collect::<Result<Vec<_>>>()?;
            Ok(SyncReport { targets })
        })
        .await
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
