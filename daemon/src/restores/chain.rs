//! Restoring an incremental chain (SPEC §8): every link's manifest is read and the chain
//! checked (each link names its parent and the parent's archive sha256) before anything is
//! written; then one pass per link, oldest first, makes from each only the entries the final
//! tree takes from it ([`voltool_restore::extract_chain_into`]), into the same staging
//! directory, checked against the final manifest and swapped in as any restore.

use std::collections::HashMap;
use std::sync::Arc;

use voltool_backup::{EntryKind, Identities, Manifest, ObjectNames, TargetSpec, crypt, open_target};
use voltool_plugin::store::BackupRow;
use voltool_restore::{ArchiveDigest, ChainLink, ExtractOptions, RestoreError};

use super::{RestoreOptions, RestoreOutcome, Restores, dir_has_entries, restore_err, verified_outcome};
use crate::backups::read_manifest_from;
use crate::error::{Error, Result};

/// Reads and checks the manifests of a chain's links (full first): each names the link before
/// it and that link's archive sha256, and records the archive sha256 the catalog has.
///
/// # Errors
/// [`Error::Backup`] naming the first bad link.
pub(crate) fn load_chain(spec: &TargetSpec, rows: &[BackupRow], ids: &Identities) -> Result<Vec<Manifest>> {
    let target = open_target(spec, &tokio::runtime::Handle::current()).map_err(|e| Error::BadRequest(e.to_string()))?;
    let last = rows.last().map_or("", |r| r.id.as_str());
    let broken = |link: &str, why: String| {
        crate::backups::backup_err(last, format!("its chain is broken at link {link}: {why}"))
    };
    let mut out: Vec<Manifest> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let m = read_manifest_from(&*target, &ObjectNames::new(&row.id, row.encrypted), ids)
            .map_err(|e| broken(&row.id, e.to_string()))?;
        if row.sha256.as_deref().is_some_and(|s| s != m.archive_sha256) {
            return Err(broken(&row.id, "its archive sha256 is not the one the catalog recorded".into()));
        }
        let parent_ok = match (out.last(), &m.parent) {
            (None, None) => m.level == 0,
            (Some(p), Some(r)) => r.id == p.id && r.archive_sha256 == p.archive_sha256 && m.level == p.level + 1,
            _ => false,
        };
        if !parent_ok || m.level as usize != i {
            return Err(broken(&row.id, "its manifest does not follow the link before it".into()));
        }
        out.push(m);
    }
    Ok(out)
}

/// One [`ChainLink`] per manifest: each takes the directories the final tree has, and the other
/// entries the final tree takes from it; an encrypted link is decrypted with `ids`.
fn links(spec: &TargetSpec, manifests: &[Manifest], last: &Manifest, ids: &Arc<Identities>) -> Vec<ChainLink> {
    let index: Arc<HashMap<String, (u32, bool)>> =
        Arc::new(last.entries.iter().map(|e| (e.path.clone(), (e.level, e.kind == EntryKind::Dir))).collect());
    manifests
        .iter()
        .map(|m| {
            let (index, level) = (index.clone(), m.level);
            let (spec, name) = (spec.clone(), m.archive_file_name());
            let (n, encrypted, ids) = (name.clone(), m.encryption.is_some(), ids.clone());
            let rt = tokio::runtime::Handle::current();
            ChainLink {
                name: name.clone(),
                open: Box::new(move || {
                    let stored = open_target(&spec, &rt)
                        .and_then(|t| t.open_stored(&n))
                        .map_err(|e| RestoreError::Read(e.to_string()))?;
                    if !encrypted {
                        return Ok(stored);
                    }
                    crypt::open(stored, &ids, &n).map_err(|e| RestoreError::Read(e.to_string()))
                }),
                keep: Box::new(move |path, is_dir| match index.get(path) {
                    Some(&(_, true)) => is_dir,
                    Some(&(l, false)) => !is_dir && l == level,
                    None => false,
                }),
                expect: Some(ArchiveDigest { size: m.archive_size, sha256: m.archive_sha256.clone() }),
                skip: 0,
                take: None,
            }
        })
        .collect()
}

impl Restores {
    /// Restores the chain `rows` ends (full first) into `volume`.
    ///
    /// # Errors
    /// As a restore from a catalog ID; [`Error::Backup`] for a broken chain (nothing written).
    pub(super) async fn restore_chain(
        &self,
        volume: &str,
        rows: Vec<BackupRow>,
        opts: RestoreOptions,
    ) -> Result<RestoreOutcome> {
        let Some(last_row) = rows.last() else { return Err(Error::Internal("an empty chain".into())) };
        let spec = self.catalog.resolve_row(last_row)?;
        let (s, c, span) = (spec.clone(), self.catalog.clone(), tracing::Span::current());
        let (manifests, ids) = tokio::task::spawn_blocking(move || {
            let _restore = span.enter();
            let ids = c.identities();
            load_chain(&s, &rows, &ids).map(|m| (m, Arc::new(ids)))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let Some(last) = manifests.last().cloned() else { return Err(Error::Internal("an empty chain".into())) };
        let created = self.prepare(volume, Some(&last.options), &opts).await?;
        let links = links(&spec, &manifests, &last, &ids);
        drop(manifests);
        let report = self
            .land(volume, created, "restore", move |at| {
                let v = at.volume.as_str();
                if !opts.flags.force {
                    at.refuse_if_held()?;
                }
                if !opts.flags.force && !created && dir_has_entries(&at.root).map_err(|e| restore_err(v, e))? {
                    return Err(restore_err(v, "it is not empty; restore into a new volume or use --force"));
                }
                let xopts = ExtractOptions {
                    allow_devices: opts.flags.allow_devices,
                    max_bytes: at.max_bytes,
                    same_owner: nix::unistd::geteuid().is_root(),
                    hash_archive: true,
                    durable: !opts.scratch,
                    preserve_privileges: true,
                    ..ExtractOptions::default()
                };
                let mut check =
                    |rep: &voltool_restore::ExtractReport| voltool_restore::check_chain_manifest(rep, &last);
                at.restore(voltool_restore::staged::Source::Chain(links), &mut check, &xopts)
            })
            .await?;
        tracing::info!(volume, files = report.files, bytes = report.bytes, "restored an incremental chain");
        Ok(verified_outcome(volume, &report, created))
    }
}
