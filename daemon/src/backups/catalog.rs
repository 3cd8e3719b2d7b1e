//! The catalog as restores see it: where a complete backup's objects are, and the record of
//! a verification. Restores hold a [`Catalog`], not the engine, so the engine can hold the
//! restores (it runs restore tests after scheduled backups) without a cycle.

use std::sync::Arc;

use voltool_backup::{Identities, TargetSpec};
use voltool_plugin::VolumeService;
use voltool_plugin::secrets::SecretError;
use voltool_plugin::store::{BackupRow, BackupStatus};
use zeroize::Zeroize;

use super::{BackupSettings, backup_err, names, now_rfc3339};
use crate::error::{Error, Result};

/// Where a backup's objects are, for a restore.
#[derive(Debug, Clone)]
pub struct Located {
    pub spec: TargetSpec,
    /// The archive's and the manifest's object names.
    pub archive: String,
    pub manifest: Option<String>,
    /// The objects are age-encrypted: reading them takes one of [`Catalog::identities`].
    pub encrypted: bool,
    /// The archive's sha256 as the catalog recorded it when the backup was made (restores
    /// from a catalog ID hold the manifest to it).
    pub catalog_sha256: Option<String>,
    /// The volume the catalog says it is a backup of (empty for a file given by URL).
    pub volume: String,
}

/// A backup whose objects `backup sync` found gone from its target cannot be restored: said
/// so before anything is read.
fn refuse_vanished(row: &BackupRow) -> Result<()> {
    match &row.vanished_at {
        Some(at) => Err(backup_err(
            &row.id,
            format!(
                "its objects are gone from {} (found missing by backup sync at {at}); it cannot be restored from there",
                row.target_url
            ),
        )),
        None => Ok(()),
    }
}

/// The backup catalog (rows in the state database) with the config's targets; cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    svc: VolumeService,
    settings: Arc<BackupSettings>,
}

impl Catalog {
    pub fn new(svc: VolumeService, settings: BackupSettings) -> Self {
        Self { svc, settings: Arc::new(settings) }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&VolumeService) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let svc = self.svc.clone();
        tokio::task::spawn_blocking(move || f(&svc)).await.map_err(|err| Error::Internal(err.to_string()))?
    }

    /// Records a verification result for a backup.
    ///
    /// # Errors
    /// Store errors.
    pub async fn record_verification(&self, id: &str, ok: bool, reason: Option<&str>) -> Result<()> {
        let (i, r) = (id.to_owned(), reason.map(str::to_owned));
        self.blocking(move |svc| Ok(svc.store().set_backup_verified(&i, ok, &now_rfc3339(), r.as_deref())?)).await
    }

    /// Records a restore test's result for a backup (its verification too).
    ///
    /// # Errors
    /// Store errors.
    pub async fn record_restore_test(&self, id: &str, ok: bool, reason: Option<&str>) -> Result<()> {
        let (i, r) = (id.to_owned(), reason.map(str::to_owned));
        self.blocking(move |svc| Ok(svc.store().set_backup_tested(&i, ok, &now_rfc3339(), r.as_deref())?)).await
    }

    /// Where a complete backup's archive is: its target, `ID.tar.zst` and `ID.manifest.json`;
    /// `None` when `id` is not in the catalog.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a backup that is not complete, target errors.
    pub async fn locate(&self, id: &str) -> Result<Option<Located>> {
        let i = id.to_owned();
        let Some(row) = self.blocking(move |svc| Ok(svc.store().get_backup(&i)?)).await? else { return Ok(None) };
        if row.status != BackupStatus::Complete {
            return Err(Error::BadRequest(format!("backup {id} is not complete; it cannot be restored")));
        }
        refuse_vanished(&row)?;
        let spec = self.resolve_row(&row)?;
        let n = names(&row);
        Ok(Some(Located {
            spec,
            archive: n.archive,
            manifest: Some(n.manifest),
            encrypted: row.encrypted,
            catalog_sha256: row.sha256,
            volume: row.volume,
        }))
    }

    /// The private keys `[backup] identities` names, read from the secrets store now (a
    /// blocking call). A named secret that is missing or holds no usable key is noted for the
    /// message that says nothing could decrypt (by name only) and logged, not an error here:
    /// the others may still do.
    pub fn identities(&self) -> Identities {
        let mut ids = Identities::new();
        for name in &self.settings.identities {
            let why = match self.svc.secrets().read(name) {
                Ok(mut value) => {
                    let added = ids.add(name, &value);
                    value.zeroize();
                    match added {
                        Ok(()) => continue,
                        Err(e) => {
                            tracing::warn!(identity = name, error = %e, "an identity secret holds no usable key");
                            "not an age identity"
                        }
                    }
                }
                Err(SecretError::NotFound { .. }) => "no such secret",
                Err(e) => {
                    tracing::warn!(identity = name, error = %e, "an identity secret cannot be read");
                    "unreadable"
                }
            };
            ids.unusable(name, why);
        }
        ids
    }

    /// The links of the chain `id` ends, full backup first, when `id` is an incremental in the
    /// catalog (`None` for a full backup or an ID the catalog does not have).
    ///
    /// # Errors
    /// [`Error::Backup`] naming the first link that is missing or not complete: a broken
    /// chain is never restored in part.
    pub async fn chain(&self, id: &str) -> Result<Option<Vec<BackupRow>>> {
        let i = id.to_owned();
        let Some(last) = self.blocking(move |svc| Ok(svc.store().get_backup(&i)?)).await? else { return Ok(None) };
        if last.level == 0 {
            return Ok(None);
        }
        refuse_vanished(&last)?;
        let mut links = vec![last];
        while let Some(parent) = links.last().and_then(|r| r.parent.clone()) {
            let p = parent.clone();
            let row = self.blocking(move |svc| Ok(svc.store().get_backup(&p)?)).await?;
            let broken = |why: &str| backup_err(id, format!("its chain is broken: link {parent} {why}"));
            match row {
                None => return Err(broken("is not in the catalog (deleted?)")),
                Some(r) if r.status != BackupStatus::Complete => return Err(broken("is not complete")),
                Some(r) if r.vanished_at.is_some() => return Err(broken("is gone from its target")),
                Some(r) => links.push(r),
            }
            if links.len() > 100_000 {
                return Err(backup_err(id, "its chain loops"));
            }
        }
        links.reverse();
        Ok(Some(links))
    }

    /// The target a row was written to, as the config names it now; an error when the name
    /// now points elsewhere (the backup would be looked for in the wrong place).
    ///
    /// # Errors
    /// [`Error::Backup`] naming both places.
    pub fn resolve_row(&self, row: &BackupRow) -> Result<TargetSpec> {
        let spec = self.settings.resolve(&row.target_ref).map_err(|m| backup_err(&row.id, m))?;
        if spec.describe() != row.target_url {
            return Err(backup_err(
                &row.id,
                format!(
                    "it was written to {}, but target {:?} now points at {}",
                    row.target_url,
                    row.target_ref,
                    spec.describe()
                ),
            ));
        }
        Ok(spec)
    }
}
