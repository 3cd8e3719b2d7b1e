//! The blocking engine: the state the async [`super::Backups`] shares between its tasks, and
//! the parts of a run, a verification and a cleanup that do file and network I/O on a
//! blocking thread (`spawn_blocking`): writing a backup's three objects, archiving through a
//! read-only view of the volume, reading a manifest back, verifying a stored archive and
//! removing a failed run's objects.
//!
//! Targets are only ever opened through [`open_target`] from a [`TargetSpec`], so a test
//! points the engine at a directory in a tempdir (`file://`) and exercises the same code as
//! a run to S3.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, Semaphore};
use voltool_backup::crypt::{self, Identities, StoredHash};
use voltool_backup::{
    ArchiveOptions, ArchiveSummary, BackupError, CryptError, Encryption, Manifest, ManifestLimits, ObjectNames,
    ObjectWriter, Recipients, SealedWriter, StreamedPut, Target, TargetError, TargetSpec, VerifyReport, open_target,
};
use voltool_plugin::VolumeService;
use voltool_plugin::store::{BackupRow, StoreError};

use super::progress::{CountingReader, Progress};
use super::settings::ResolveError;
use super::{BackupSettings, Catalog, Clock, MANIFEST_LIMIT, manifest_cache, names};
use crate::error::Result;
use crate::restores::Restores;

/// What a blocking step of the engine fails with. The messages are what the catalog records
/// as a failed run's reason and what `backup verify` reports, so each names the object.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The row's target reference no longer resolves.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The target failed (open, write, read, delete), naming the object.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Archiving, or checking the stored archive against its manifest, failed.
    #[error(transparent)]
    Archive(#[from] BackupError),
    /// The catalog could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The manifest object could not be written or parsed.
    #[error("{name}: {source}")]
    Manifest { name: String, source: BackupError },
    #[error("{name} is not UTF-8")]
    ManifestNotUtf8 { name: String },
    /// The manifest object belongs to another backup.
    #[error("{name} describes backup {found}, not this one")]
    ManifestOfOther { name: String, found: String },
    /// The checksum object does not match the manifest's archive sha256.
    #[error("{sum} does not match the archive sha256 in {manifest}")]
    ChecksumMismatch { sum: String, manifest: String },
    /// A link of an incremental chain failed its verification.
    #[error("link {link} of its chain: {source}")]
    Link {
        link: String,
        #[source]
        source: Box<EngineError>,
    },
    /// The chain cannot be followed (a link missing from the catalog or the target).
    #[error("{0}")]
    Chain(String),
    /// The manifest does not say the encryption its object's name does (an encrypted
    /// manifest that records no stored sha256, or a plain one that claims encryption).
    #[error("{name} does not match how the backup is stored (encrypted or not)")]
    ManifestEncryption { name: String },
    /// The encrypted archive as stored is not the object its manifest describes.
    #[error("{name}: the stored object's size or sha256 differs from what {manifest} records")]
    StoredMismatch { name: String, manifest: String },
    /// Encrypting, or decrypting with the configured identities, failed.
    #[error(transparent)]
    Crypt(#[from] CryptError),
    /// The manifest's archive sha256 is not the one the catalog recorded.
    #[error("the manifest's archive sha256 {manifest} differs from the catalog's {catalog}")]
    CatalogMismatch { manifest: String, catalog: String },
}

/// The engine's shared state and its blocking operations.
pub(super) struct Engine {
    pub svc: VolumeService,
    pub settings: BackupSettings,
    pub default_target: String,
    pub rt: tokio::runtime::Handle,
    pub clock: Arc<dyn Clock>,
    /// volume → ID of its run in flight.
    pub running: Mutex<HashMap<String, String>>,
    /// ID → progress of runs and verifications in flight.
    pub progress: Mutex<HashMap<String, Arc<Progress>>>,
    pub slots: Arc<Semaphore>,
    pub wake: Notify,
    /// Woken whenever a run or verification in flight ends (its progress is removed), for
    /// callers waiting on one ([`super::Backups::show_waiting`]).
    pub ended: Notify,
    pub catalog: Catalog,
    /// Runs the restore tests of `backup-verify=restore` volumes after their backups.
    pub restores: Restores,
    /// The background retry of pending cleanups: running, and when it last started.
    pub cleanup_running: AtomicBool,
    pub cleanup_last: Mutex<Option<Instant>>,
    /// The Docker engine, for the consistency steps.
    pub docker: super::DockerLink,
    /// Each volume's newest link's entries, so its next incremental need not read them back.
    pub links: super::link_index::LinkIndex,
}

impl Engine {
    /// Forgets a run that ended: the volume may run again, its progress is gone.
    pub fn forget(&self, volume: &str, id: &str) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.get(volume).is_some_and(|i| i == id) {
            running.remove(volume);
        }
        self.progress.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.ended.notify_waiters();
    }

    /// The ID of the run of `volume` in flight, if any.
    pub fn running_on(&self, volume: &str) -> Option<String> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).get(volume).cloned()
    }

    pub fn resolve_row(&self, row: &BackupRow) -> Result<TargetSpec> {
        self.catalog.resolve_row(row)
    }

    /// The target a row's reference names today (no check that it is where the row went).
    pub fn open_row_target(&self, row: &BackupRow) -> Result<(TargetSpec, Box<dyn Target>), EngineError> {
        let spec = self.settings.resolve(&row.target_ref)?;
        let target = open_target(&spec, &self.rt)?;
        Ok((spec, target))
    }

    fn archive_options(&self) -> ArchiveOptions {
        ArchiveOptions {
            level: self.settings.level,
            threads: if self.settings.threads == 0 {
                std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
            } else {
                self.settings.threads
            },
            xattrs: true,
            // A backup's manifest lists every file's sha256.
            hash_files: true,
            previous: None,
        }
    }

    /// The blocking part of a run: archive → manifest → checksum. With `seal`, the archive
    /// and the manifest are age-encrypted to those recipients (`ID.tar.zst.age`,
    /// `ID.manifest.json.age`; the row says `encrypted`), the manifest records the stored
    /// object's size and sha256, and the checksum object holds that sha256.
    #[allow(clippy::too_many_arguments)]
    pub fn write_backup(
        &self,
        row: &BackupRow,
        spec: &TargetSpec,
        root: PathBuf,
        options: &BTreeMap<String, String>,
        created: time::OffsetDateTime,
        progress: &Progress,
        (seal, rehash): (Option<&Recipients>, bool),
    ) -> Result<Manifest, EngineError> {
        let target = open_target(spec, &self.rt)?;
        let n = names(row);
        let writer = target.create(&n.archive)?;
        if let Some(token) = writer.token() {
            self.svc.store().set_backup_token(&row.id, Some(&token))?;
        }
        let mut opts = self.archive_options();
        let mut fallback = None;
        if let Some(parent) = &row.parent {
            match self.parent_index(&*target, parent) {
                Ok(Some(prev)) => opts.previous = Some(std::sync::Arc::new(prev.with_rehash(rehash))),
                Ok(None) => {
                    fallback = Some(format!("{parent}'s manifest has no inode numbers (an older voltool wrote it)"))
                }
                Err(err) => fallback = Some(format!("{parent} could not be read: {err}")),
            }
        }
        let (mut summary, stored) = match seal {
            None => {
                let mut writer = writer;
                let summary = self.archive_read_only(&root, &mut *writer, &opts, progress)?;
                writer.commit()?;
                (summary, None)
            }
            Some(recipients) => {
                let mut writer = SealedWriter::new(writer, recipients, &n.archive)?;
                let summary = self.archive_read_only(&root, &mut writer, &opts, progress)?;
                (summary, Some(writer.finish()?))
            }
        };
        if let Some(why) = fallback {
            tracing::warn!(
                backup = row.id,
                volume = row.volume,
                reason = why,
                "incremental asked for: made a full backup"
            );
            summary.notes.insert(0, format!("a full backup, not an incremental: {why}"));
        }
        let mut m = Manifest::without_entries(&row.id, &row.volume, options, &summary, created)?;
        if let Some(s) = stored {
            m.encryption = Some(Encryption::Age);
            m.stored_size = Some(s.size);
            m.stored_sha256 = Some(s.sha256);
        }
        // Streamed from the archiver's compact entry list: the manifest of a volume with many
        // files is never whole in memory (see `voltool_backup::manifest`).
        let manifest_err = |source| EngineError::Manifest { name: n.manifest.clone(), source };
        let mut out = StreamedPut::new(&*target, &n.manifest);
        match seal {
            None => m
                .write_json(&summary.entries, std::io::BufWriter::with_capacity(64 << 10, &mut out))
                .map_err(manifest_err)?,
            Some(recipients) => {
                let mut sealed = recipients.seal(&mut out, &n.manifest)?;
                m.write_json(&summary.entries, std::io::BufWriter::with_capacity(64 << 10, &mut sealed))
                    .map_err(manifest_err)?;
                sealed.finish().map_err(|e| manifest_err(BackupError::Write(e)))?;
            }
        }
        if seal.is_some() {
            manifest_cache::keep(&self.svc.layout().state_dir, row, &m, &summary.entries);
        }
        let entries = std::mem::take(&mut summary.entries);
        drop(summary);
        out.finish()?;
        target.put_small(&n.checksum, n.checksum_line(m.stored_sha256()).as_bytes())?;
        self.links.keep((&row.volume, &row.target_url), &row.id, &m.archive_sha256, m.level, entries);
        Ok(m)
    }

    /// What an incremental on `parent` compares with: the entries this daemon kept of it when
    /// it wrote it ([`LinkIndex`]; only while the catalog records it with the archive sha256
    /// it was written with), else its manifest read back. An error when any of its objects is
    /// gone from the target (a link on it could never be restored) or its manifest cannot be
    /// read: the caller makes a full backup then.
    ///
    /// [`LinkIndex`]: super::link_index::LinkIndex
    fn parent_index(&self, target: &dyn Target, parent: &str) -> Result<Option<voltool_backup::Previous>, EngineError> {
        let row = self.svc.store().get_backup(parent)?;
        let n = ObjectNames::new(parent, row.as_ref().is_some_and(|r| r.encrypted));
        for object in [&n.archive, &n.manifest, &n.checksum] {
            if !target.exists(object)? {
                return Err(TargetError::NotFound { target: target.describe(), name: object.clone() }.into());
            }
        }
        let kept = row
            .as_ref()
            .and_then(|r| Some((self.links.get((&r.volume, &r.target_url), parent, r.sha256.as_deref())?, r)));
        if let Some((kept, r)) = kept
            && let Some(sha) = r.sha256.clone()
        {
            let parent = voltool_backup::ParentRef { id: parent.to_owned(), archive_sha256: sha };
            return Ok(voltool_backup::Previous::from_entries(parent, kept.level, kept.entries));
        }
        let m = self.parent_manifest(target, parent, row.as_ref())?;
        Ok(voltool_backup::Previous::from_manifest(&m))
    }

    /// The manifest an incremental run compares with: an encrypted parent's from the state
    /// dir's copy when it is there and whole (no identity needed), else from the target.
    fn parent_manifest(&self, target: &dyn Target, id: &str, row: Option<&BackupRow>) -> Result<Manifest, EngineError> {
        if let Some(m) = row.filter(|r| r.encrypted).and_then(|r| manifest_cache::read(&self.svc.layout().state_dir, r))
        {
            return Ok(m);
        }
        self.read_manifest(target, &ObjectNames::new(id, row.is_some_and(|r| r.encrypted)))
    }

    /// Archives `root` through a read-only view of it: a read-only bind mount over it in a
    /// private mount namespace that only the archiving thread sees, so the backup cannot
    /// change the volume whatever happens. Where namespaces are not available (no
    /// CAP_SYS_ADMIN) it reads the volume directly (the archiver only ever opens files
    /// read-only).
    fn archive_read_only(
        &self,
        root: &Path,
        writer: &mut dyn ObjectWriter,
        opts: &ArchiveOptions,
        progress: &Progress,
    ) -> Result<ArchiveSummary, BackupError> {
        use voltool_runtime::{MountFlags, MountRequest};
        let mounter = self.svc.mounter();
        let inside = voltool_runtime::ns::in_new_mount_ns(|| {
            let ro = MountRequest {
                flags: MountFlags::MS_BIND | MountFlags::MS_REMOUNT | MountFlags::MS_RDONLY,
                ..MountRequest::bind(root, root)
            };
            match mounter.mount(&MountRequest::bind(root, root)).and_then(|()| mounter.mount(&ro)) {
                Ok(()) => {
                    Some(voltool_backup::write_archive_with_progress(root, &mut *writer, opts, progress.done.clone()))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no read-only view of the volume; reading it directly");
                    None
                }
            }
        });
        match inside {
            Ok(Some(result)) => result,
            // The closure never touched the writer: no namespace, or no bind mount.
            Ok(None) | Err(voltool_runtime::Error::Namespace { .. }) => {
                voltool_backup::write_archive_with_progress(root, writer, opts, progress.done.clone())
            }
            Err(e) => Err(BackupError::Write(std::io::Error::other(e.to_string()))),
        }
    }

    /// Reads a backup's manifest (decrypting it with the configured identities when the
    /// names are `.age` ones) and holds it to the checksum object beside it.
    pub fn read_manifest(&self, target: &dyn Target, n: &ObjectNames) -> Result<Manifest, EngineError> {
        read_manifest_from(target, n, &self.catalog.identities())
    }

    /// Reads a stored archive back and checks it against its manifest (and the catalog's
    /// sha256, when it has one); an encrypted one is decrypted on the way and its stored
    /// bytes held to the size and sha256 its manifest records. Returns the report and the
    /// stored object's size.
    pub fn verify_backup(
        &self,
        row: &BackupRow,
        spec: &TargetSpec,
        progress: &Progress,
    ) -> Result<(VerifyReport, u64), EngineError> {
        let target = open_target(spec, &self.rt)?;
        let n = names(row);
        // As stored, not as cached: a backup verified right after it was written is still
        // whole in the page cache.
        let reader = target.open_stored(&n.archive)?;
        let reader = CountingReader { inner: reader, count: progress.done.clone() };
        let stored = StoredHash::new();
        let reader: Box<dyn std::io::Read + Send> = if row.encrypted {
            crypt::open(stored.reader(reader), &self.catalog.identities(), &n.archive)?
        } else {
            Box::new(reader)
        };
        // The manifest (~20 MB of JSON for 100,000 files) is read and parsed while the archive
        // is already being read and decoded.
        let load = || {
            let m = self.read_manifest(&*target, &n)?;
            if let Some(sha) = &row.sha256
                && *sha != m.archive_sha256
            {
                return Err(EngineError::CatalogMismatch { manifest: m.archive_sha256, catalog: sha.clone() });
            }
            Ok(m)
        };
        let (m, report) = voltool_backup::verify_archive_loading(reader, &n.archive, load)?;
        if !row.encrypted {
            let size = report.archive_size;
            return Ok((report, size));
        }
        let got = stored.result();
        if m.stored_sha256.as_deref() != Some(got.sha256.as_str()) || m.stored_size != Some(got.size) {
            return Err(EngineError::StoredMismatch { name: n.archive, manifest: n.manifest });
        }
        Ok((report, got.size))
    }

    /// Removes every object of a failed or interrupted run (and its open upload).
    pub fn remove_objects(&self, row: &BackupRow) -> Result<(), EngineError> {
        let (_, target) = self.open_row_target(row)?;
        let n = names(row);
        target.cleanup(&n.archive, row.upload_token.as_deref())?;
        for name in [&n.checksum, &n.manifest, &n.archive] {
            target.cleanup(name, None)?;
            target.delete(name)?;
        }
        Ok(())
    }
}

/// Reads a backup's manifest from `target` (decrypting it with `identities` when the names
/// are `.age` ones) and holds it to the checksum object beside it.
///
/// # Errors
/// The target's, [`EngineError::Manifest`], [`EngineError::Crypt`] and the mismatches of
/// [`EngineError`], naming the object.
pub(crate) fn read_manifest_from(
    target: &dyn Target,
    n: &ObjectNames,
    identities: &Identities,
) -> Result<Manifest, EngineError> {
    let (id, encrypted) = (n.id.as_str(), n.encrypted);
    let manifest_err = |source| EngineError::Manifest { name: n.manifest.clone(), source };
    let m = if encrypted {
        let plain = crypt::open(target.open(&n.manifest)?, identities, &n.manifest)?;
        Manifest::from_reader(&n.manifest, plain, ManifestLimits { bytes: MANIFEST_LIMIT }).map_err(manifest_err)?
    } else {
        let bytes = target.read_small(&n.manifest, MANIFEST_LIMIT)?;
        let text = String::from_utf8(bytes).map_err(|_| EngineError::ManifestNotUtf8 { name: n.manifest.clone() })?;
        Manifest::from_json(&text).map_err(manifest_err)?
    };
    if m.id != id {
        return Err(EngineError::ManifestOfOther { name: n.manifest.clone(), found: m.id });
    }
    if m.encryption.is_some() != encrypted || (encrypted && m.stored_sha256.is_none()) {
        return Err(EngineError::ManifestEncryption { name: n.manifest.clone() });
    }
    let sum = target.read_small(&n.checksum, 4096)?;
    if sum != n.checksum_line(m.stored_sha256()).as_bytes() {
        return Err(EngineError::ChecksumMismatch { sum: n.checksum.clone(), manifest: n.manifest.clone() });
    }
    Ok(m)
}
