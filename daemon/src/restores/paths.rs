//! `voltool restore VOL --from ID --path P [--path ...] [--to DIR]` (SPEC §8): some paths of a
//! backup, back into the volume as it is. The backup's manifest (its chain's last link's)
//! gives every entry under each path and the frames of the link that holds it; only those
//! frame ranges are read (one ranged read per path and link), the entries extracted into a
//! staging directory in the volume, each file checked against its sha256, and each path put
//! in place atomically ([`voltool_restore::staged::restore_paths`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use voltool_backup::{Entry, EntryKind, Identities, Manifest, ObjectNames, TargetSpec, open_target};
use voltool_plugin::store::BackupRow;
use voltool_restore::staged::{DirMeta, Selection};
use voltool_restore::{ChainLink, ExtractOptions, RestoreError};

use super::{RestoreOptions, RestoreOutcome, Restores, restore_err, verified_outcome};
use crate::backups::{backup_err, open_frames, read_manifest_from};
use crate::error::{Error, Result};

/// A requested path: relative, no `..`, not empty.
fn clean(p: &str, what: &str) -> Result<PathBuf> {
    let path = Path::new(p.trim_start_matches("./"));
    let ok = !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        return Err(Error::BadRequest(format!("{what} {p:?}: a path relative to the volume root, without '..'")));
    }
    Ok(path.to_path_buf())
}

/// The entries of `m` at or below `p`, in archive order.
fn under<'m>(m: &'m Manifest, p: &Path) -> Vec<&'m Entry> {
    let p = p.to_string_lossy();
    let prefix = format!("{p}/");
    m.entries.iter().filter(|e| e.path == p || e.path.starts_with(&prefix)).collect()
}

/// One ranged read per (path, link): the frames from the first entry the link holds under the
/// path to the end of its last; `keep` takes exactly those entries.
fn links_for(plan: &Plan, selected: &[Vec<&Entry>]) -> Vec<ChainLink> {
    let mut out = Vec::new();
    for group in selected {
        let mut by_level: BTreeMap<u32, Vec<&Entry>> = BTreeMap::new();
        for e in group {
            by_level.entry(e.level).or_default().push(e);
        }
        for (level, entries) in by_level {
            let Some(first) = entries.iter().min_by_key(|e| (e.frame_at, e.frame_skip)) else { continue };
            let end = entries.iter().map(|e| e.frame_at + e.frame_len).max().unwrap_or(first.frame_at);
            let (start, skip) = (first.frame_at, u64::from(first.frame_skip));
            let Some(row) = plan.rows.get(level as usize).cloned() else { continue };
            let name = ObjectNames::new(&row.id, row.encrypted).archive;
            let keep: Arc<HashSet<String>> = Arc::new(entries.iter().map(|e| e.path.clone()).collect());
            let (spec, ids, rt) = (plan.spec.clone(), plan.identities.clone(), tokio::runtime::Handle::current());
            out.push(ChainLink {
                name,
                open: Box::new(move || {
                    open_frames(&spec, &rt, &row, &ids, (start, end - start), Default::default())
                        .map_err(RestoreError::Read)
                }),
                take: Some(keep.len() as u64),
                keep: Box::new(move |path, _| keep.contains(path)),
                expect: None,
                skip,
            });
        }
    }
    out
}

/// What a path restore reads: the chain's link IDs (full first), the final manifest, and the
/// entries under each requested path.
struct Plan {
    spec: TargetSpec,
    rows: Vec<BackupRow>,
    manifest: Manifest,
    /// The configured identities (an encrypted link is decrypted with them).
    identities: Arc<Identities>,
}

impl Restores {
    async fn path_plan(&self, from: &str) -> Result<Plan> {
        let rows: Vec<BackupRow> = match self.catalog.chain(from).await? {
            Some(rows) => rows,
            None => {
                let located = self.catalog.locate(from).await?;
                if located.is_none() {
                    return Err(Error::BadRequest(format!(
                        "restore --path reads a backup of the catalog by ID; {from:?} is not one (restore the whole archive instead)"
                    )));
                }
                let i = from.to_owned();
                let row = tokio::task::spawn_blocking({
                    let svc = self.svc.clone();
                    move || svc.store().get_backup(&i)
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
                row.into_iter().collect()
            }
        };
        let last = rows.last().ok_or_else(|| Error::Internal("an empty chain".into()))?;
        let spec = self.catalog.resolve_row(last)?;
        let (s, i, encrypted, c) = (spec.clone(), from.to_owned(), last.encrypted, self.catalog.clone());
        let span = tracing::Span::current();
        let (manifest, identities) = tokio::task::spawn_blocking(move || {
            let _restore = span.enter();
            let target = open_target(&s, &tokio::runtime::Handle::current()).map_err(|e| backup_err(&i, e))?;
            let ids = c.identities();
            let m =
                read_manifest_from(&*target, &ObjectNames::new(&i, encrypted), &ids).map_err(|e| backup_err(&i, e))?;
            Ok::<_, Error>((m, Arc::new(ids)))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        Ok(Plan { spec, rows, manifest, identities })
    }

    /// Restores `paths` of backup `from` into `volume` (created when missing), under `to` or
    /// in place.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a path that is not clean or that the backup does not hold, a
    /// hard link whose file is not selected, a backup written before single-file reads;
    /// [`Error::Restore`] when the restore failed (the volume is as it was then, path by path).
    #[tracing::instrument(name = "restore", skip_all, fields(volume = %volume, from = %from))]
    pub async fn restore_paths(
        &self,
        volume: &str,
        from: &str,
        paths: &[String],
        to: Option<&str>,
        opts: RestoreOptions,
    ) -> Result<RestoreOutcome> {
        voltool_plugin::options::validate_name(volume)?;
        let wanted: Vec<PathBuf> = paths.iter().map(|p| clean(p, "--path")).collect::<Result<_>>()?;
        let to = to.map(|t| clean(t, "--to")).transpose()?;
        let plan = self.path_plan(from).await?;
        let selected: Vec<Vec<&Entry>> = wanted.iter().map(|p| under(&plan.manifest, p)).collect();
        let chosen: HashSet<&str> = selected.iter().flatten().map(|e| e.path.as_str()).collect();
        for (p, s) in wanted.iter().zip(&selected) {
            if s.is_empty() {
                return Err(Error::BadRequest(format!("backup {from} holds no {}", p.display())));
            }
            for e in s {
                if e.kind != EntryKind::Dir && !voltool_backup::single::locatable(e) {
                    return Err(Error::BadRequest(format!(
                        "backup {from} was written before single-path restores: restore it whole into a new volume"
                    )));
                }
                if e.kind == EntryKind::Hardlink && !e.target.as_deref().is_some_and(|t| chosen.contains(t)) {
                    return Err(Error::BadRequest(format!(
                        "{} is a hard link to {}: add --path {} too",
                        e.path,
                        e.target.as_deref().unwrap_or("?"),
                        e.target.as_deref().unwrap_or("?")
                    )));
                }
            }
        }
        let entries: Vec<Entry> = selected.iter().flatten().map(|e| (*e).clone()).collect();
        let links = links_for(&plan, &selected);
        let dirs: HashMap<String, DirMeta> = plan
            .manifest
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .map(|e| {
                let m = DirMeta { mode: e.mode, uid: e.uid, gid: e.gid, mtime: (e.mtime, e.mtime_nsec) };
                (e.path.clone(), m)
            })
            .collect();
        let created = match self.svc.get(volume).await? {
            Some(_) => false,
            None => self.prepare(volume, Some(&plan.manifest.options), &opts).await?,
        };
        drop(plan);
        let report = self
            .land(volume, created, "restore", move |at| {
                let xopts = ExtractOptions {
                    allow_devices: opts.flags.allow_devices,
                    max_bytes: at.max_bytes,
                    same_owner: nix::unistd::geteuid().is_root(),
                    hash_files: true,
                    durable: true,
                    preserve_privileges: true,
                    ..ExtractOptions::default()
                };
                let meta = move |p: &Path| dirs.get(p.to_string_lossy().as_ref()).copied();
                let sel = Selection { paths: &wanted, to: to.as_deref(), dir_meta: &meta };
                let mut check = |rep: &voltool_restore::ExtractReport| voltool_restore::check_selection(rep, &entries);
                at.restore_paths(links, &sel, &mut check, &xopts).map_err(|e| restore_err(&at.volume, e))
            })
            .await?;
        tracing::info!(
            volume,
            files = report.files,
            bytes = report.bytes,
            paths = paths.len(),
            "restored paths of a backup"
        );
        Ok(verified_outcome(volume, &report, created))
    }
}
