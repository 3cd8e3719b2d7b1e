//! Restore, export and import (SPEC §3): getting an archive into a volume safely, and a
//! volume out as the same stream a backup stores.
//!
//! ## Restore
//! The archive is extracted by [`voltool_restore::extract`] into a staging directory inside
//! the volume itself (`.voltool-restore-NONCE`, so on the same filesystem and under the same
//! size limit), checked against the backup's manifest when there is one, and only then
//! swapped in: the volume's old entries move into `.voltool-restore-old-NONCE`, the staged
//! ones take their place (renames, so nothing is copied), and the old ones are deleted. Any
//! failure before the swap removes the staging directory and leaves the volume as it was; a
//! failure during the swap moves everything back.
//!
//! A volume that containers hold, or that has data, is refused unless `force`. A missing
//! volume is created, with the options recorded in the manifest when there is one.
//!
//! ## Sources
//! A catalog ID (read from its target and checked against its manifest), a target URL of an
//! archive (`file:///dir/ID.tar.zst`, `s3://bucket/prefix/ID.tar.zst?endpoint=...`, with its
//! manifest next to it if present), or a stream the CLI sends (a local file, stdin: `import`).
//! Plain `.tar`, `.tar.gz` and `.tar.zst` are told apart by their first bytes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use voltool_backup::{Manifest, TargetSpec, open_target};
use voltool_restore::{ExtractOptions, ExtractReport, RestoreError};

use crate::backups::Catalog;
use crate::error::{Error, Result};
use voltool_plugin::service::VolumeService;

mod manifest;
mod staging;

pub use manifest::{ParsingManifest, PendingManifest};
pub use staging::Reserve;
use staging::{Verify, check_catalog_digest, recover_in, restore_staged};

/// Mount IDs held while restoring or exporting start with this.
pub const MOUNT_ID_PREFIX: &str = "voltool-restore-";

/// How a restore may treat the volume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreOptions {
    /// Replace a volume that has data or is used by containers.
    #[serde(default)]
    pub force: bool,
    /// Create device nodes found in the archive.
    #[serde(default)]
    pub allow_devices: bool,
    /// Drop leading path components (`tar czf x.tgz /data` archives hold `data/...`).
    #[serde(default)]
    pub strip_components: usize,
    /// Keep setuid/setgid bits and `security.*` xattrs of an archive that is not from this
    /// daemon's catalog (one from the catalog, or checked against its manifest, keeps them).
    #[serde(default)]
    pub preserve_privileges: bool,
    /// A throwaway restore (a restore test's scratch volume): the restored tree is swapped in
    /// without waiting for it to reach the disk.
    #[serde(skip)]
    pub scratch: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreOutcome {
    pub volume: String,
    /// `zstd`, `gzip` or `none`.
    pub compression: String,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Whether the result was checked against a voltool manifest.
    pub verified_against_manifest: bool,
    /// What the archive was checked against: `manifest` (the backup's manifest), `catalog`
    /// (the sha256 the catalog recorded at backup time; the manifest was missing) or `none`
    /// (an archive without a manifest: unverified).
    pub verification: String,
    /// Whether the volume was created by this restore.
    pub created: bool,
}

/// The outcome of a restore test.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreTestOutcome {
    pub id: String,
    pub ok: bool,
    /// The check command's exit status (128 + N for signal N).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// Its stdout and stderr (first 64 KiB).
    pub output: String,
    /// Why the test could not run or failed before the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Restores, exports and imports.
#[derive(Clone, Debug)]
pub struct Restores {
    svc: VolumeService,
    catalog: Catalog,
    /// What restores leave free on the filesystem they write to.
    reserve: Reserve,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn nonce() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", n, std::process::id())
}

fn restore_err(volume: &str, reason: impl std::fmt::Display) -> Error {
    Error::Restore { volume: volume.to_owned(), reason: reason.to_string() }
}

impl Restores {
    pub fn new(svc: VolumeService, catalog: Catalog) -> Self {
        Self { svc, catalog, reserve: Reserve::default() }
    }

    /// The catalog restores look backups up in.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Sets what restores leave free on a filesystem (`[restore] reserve`).
    #[must_use]
    pub fn with_reserve(mut self, reserve: Reserve) -> Self {
        self.reserve = reserve;
        self
    }

    /// Restores from a catalog ID or an archive URL.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an unknown source, [`Error::Restore`] naming the problem
    /// (refused entry, mismatch, volume in use); the volume is unchanged on error.
    pub async fn restore_from(&self, volume: &str, from: &str, opts: RestoreOptions) -> Result<RestoreOutcome> {
        voltool_plugin::options::validate_name(volume)?;
        let crate::backups::Located { spec, archive: name, manifest: manifest_name, catalog_sha256 } =
            match self.catalog.locate(from).await? {
                Some(found) => found,
                None => locate_url(from)?,
            };
        // The manifest's head first: it gives the options of a volume to create. Its entries
        // (~20 MB of JSON for 100,000 files) are read and parsed on a thread of their own
        // while the archive is extracted (see `PendingManifest`), not before.
        let (s2, m2) = (spec.clone(), manifest_name.clone());
        let manifest = tokio::task::spawn_blocking(move || -> Result<Option<PendingManifest>> {
            let Some(m) = m2 else { return Ok(None) };
            let target =
                open_target(&s2, &tokio::runtime::Handle::current()).map_err(|e| Error::BadRequest(e.to_string()))?;
            if !target.exists(&m).map_err(|e| Error::BadRequest(e.to_string()))? {
                return Ok(None);
            }
            let input = target.open(&m).map_err(|e| Error::BadRequest(e.to_string()))?;
            PendingManifest::open(m, input).map(Some)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        // A backup of the catalog is held to the archive sha256 recorded when it was made:
        // through its manifest, or directly when the manifest object is gone.
        let verify = match (manifest, catalog_sha256) {
            (Some(m), sha) => Some(Verify::Manifest(m.expect_archive(sha))),
            (None, Some(sha256)) => Some(Verify::Catalog { sha256 }),
            (None, None) => None,
        };
        let options = match &verify {
            Some(Verify::Manifest(m)) => Some(m.options.clone()),
            _ => None,
        };
        let created = self.prepare(volume, options.as_ref(), &opts).await?;
        let rt = tokio::runtime::Handle::current();
        let open = move || -> std::result::Result<Box<dyn Read + Send>, String> {
            let target = open_target(&spec, &rt).map_err(|e| e.to_string())?;
            // Read once, start to end: no page cache (O_DIRECT from a directory target).
            target.open_stored(&name).map_err(|e| e.to_string())
        };
        self.run(volume, Box::new(open), verify, opts, created).await
    }

    /// Restores from a stream (import, or a local file the CLI sends), checked against
    /// `manifest` when the CLI sent the one beside the file.
    ///
    /// # Errors
    /// As [`Self::restore_from`].
    pub async fn import(
        &self,
        volume: &str,
        input: Box<dyn Read + Send>,
        manifest: Option<Manifest>,
        opts: RestoreOptions,
    ) -> Result<RestoreOutcome> {
        voltool_plugin::options::validate_name(volume)?;
        let created = self.prepare(volume, manifest.as_ref().map(|m| &m.options), &opts).await?;
        let mut input = Some(input);
        let open = move || input.take().ok_or_else(|| "the stream can be read once".to_string());
        let verify = manifest.map(|m| Verify::Parsed(Box::new(m)));
        self.run(volume, Box::new(open), verify, opts, created).await
    }

    /// Creates a missing volume, or checks an existing one may be restored into.
    async fn prepare(
        &self,
        volume: &str,
        options: Option<&BTreeMap<String, String>>,
        opts: &RestoreOptions,
    ) -> Result<bool> {
        match self.svc.get(volume).await? {
            None => {
                let options = options.cloned().unwrap_or_default();
                self.svc.create(volume, options).await.map_err(|e| restore_err(volume, format!("creating it: {e}")))?;
                Ok(true)
            }
            Some(_) => {
                if !opts.force {
                    refuse_if_held(&self.svc, volume)?;
                }
                Ok(false)
            }
        }
    }

    async fn run(
        &self,
        volume: &str,
        open: Box<dyn FnOnce() -> std::result::Result<Box<dyn Read + Send>, String> + Send>,
        verify: Option<Verify>,
        opts: RestoreOptions,
        created: bool,
    ) -> Result<RestoreOutcome> {
        let record = self.svc.record(volume).await?;
        let mount_id = format!("{MOUNT_ID_PREFIX}{}", nonce());
        let root = self.svc.mount(volume, &mount_id).await?;
        let v = volume.to_owned();
        let verification = verify.as_ref().map_or("none", Verify::name);
        let max = record.spec.size;
        self.svc.store().set_restoring(volume, true, &now_rfc3339())?;
        let (svc, reserve) = (self.svc.clone(), self.reserve);
        let result = tokio::task::spawn_blocking(move || -> Result<ExtractReport> {
            if !opts.force {
                refuse_if_held(&svc, &v)?;
            }
            if !opts.force && !created && dir_has_entries(&root).map_err(|e| restore_err(&v, e))? {
                return Err(restore_err(&v, "it is not empty; restore into a new volume or use --force"));
            }
            let input = open().map_err(|e| restore_err(&v, e))?;
            let mut xopts = ExtractOptions {
                allow_devices: opts.allow_devices,
                max_bytes: max,
                strip_components: opts.strip_components,
                same_owner: nix::unistd::geteuid().is_root(),
                // With a manifest (or the catalog's record), the archive's sha256 checks every
                // byte against it (less work than hashing every file: the archive is
                // compressed).
                hash_archive: verify.is_some(),
                hash_files: false,
                // On disk before the swap replaces the volume's data.
                durable: !opts.scratch,
                // Only an archive this daemon made (its manifest or its catalog say so) keeps
                // setuid bits and security xattrs, unless the caller asks.
                preserve_privileges: verify.is_some() || opts.preserve_privileges,
                space: None,
            };
            let (mut parsing, mut parsed, catalog) = match verify {
                Some(Verify::Manifest(m)) => (Some(m.parse().map_err(|e| restore_err(&v, e))?), None, None),
                Some(Verify::Parsed(m)) => (None, Some(m), None),
                Some(Verify::Catalog { sha256 }) => (None, None, Some(sha256)),
                None => (None, None, None),
            };
            let mut check = |rep: &ExtractReport| -> std::result::Result<(), RestoreError> {
                if let Some(p) = parsing.take() {
                    let m = p.join().map_err(RestoreError::Manifest)?;
                    voltool_restore::check_manifest(rep, &m)?;
                }
                if let Some(m) = parsed.take() {
                    voltool_restore::check_manifest(rep, &m)?;
                }
                if let Some(want) = &catalog {
                    check_catalog_digest(rep, want)?;
                }
                Ok(())
            };
            restore_staged(svc, &v, &root, input, &mut check, &mut xopts, reserve).map_err(|e| restore_err(&v, e))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()));
        self.svc.store().set_restoring(volume, false, "")?;
        if let Err(e) = self.svc.unmount(volume, &mount_id).await {
            tracing::warn!(volume, error = %e, "could not release the restore's mount");
        }
        let result = result?;
        if let Err(e) = &result
            && created
        {
            // A volume this restore made and could not fill goes again.
            tracing::warn!(volume, error = %e, "restore failed; removing the volume it created");
            let _ = self.svc.remove(volume, true).await;
        }
        let report = result?;
        tracing::info!(volume, files = report.files, bytes = report.bytes, "restored");
        Ok(RestoreOutcome {
            volume: volume.to_owned(),
            compression: match report.compression {
                Some(voltool_restore::Compression::Zstd) => "zstd",
                Some(voltool_restore::Compression::Gzip) => "gzip",
                _ => "none",
            }
            .into(),
            entries: report.entries,
            files: report.files,
            bytes: report.bytes,
            verified_against_manifest: verification == "manifest",
            verification: verification.into(),
            created,
        })
    }

    /// Whether this daemon can take the volume a migration offers: the protocol, the options,
    /// the secrets they name, and the name (free, or an empty volume nobody uses).
    ///
    /// # Errors
    /// [`Error::Restore`] saying why not.
    pub async fn check_offer(&self, name: &str, offer: &voltool_migrate::Offer) -> Result<()> {
        voltool_plugin::options::validate_name(name)?;
        // A newer sender may send what this one cannot read; an older one (protocol 1: the
        // manifest uncompressed) is still read.
        if !(voltool_migrate::OLDEST_PROTOCOL..=voltool_migrate::PROTOCOL).contains(&offer.protocol) {
            return Err(restore_err(
                name,
                format!(
                    "the sender speaks migration protocol {}, this voltool reads {} to {}: run the same voltool version on both hosts",
                    offer.protocol,
                    voltool_migrate::OLDEST_PROTOCOL,
                    voltool_migrate::PROTOCOL
                ),
            ));
        }
        voltool_plugin::options::parse_full(&offer.options)
            .map_err(|e| restore_err(name, format!("its options: {e}")))?;
        for secret in &offer.secrets {
            if !self.svc.secrets().exists(secret) {
                return Err(restore_err(
                    name,
                    format!(
                        "the volume needs secret {secret}, which this host does not have; add it first: voltool secret add {secret}"
                    ),
                ));
            }
        }
        if self.svc.get(name).await?.is_some() {
            let users = self.svc.store().mount_ids(name)?.len();
            if users > 0 {
                return Err(restore_err(name, format!("a volume {name} exists here and is in use")));
            }
            let (root, id) = self.export_begin(name).await?;
            let empty = !dir_has_entries(&root).unwrap_or(true);
            self.export_end(name, &id).await;
            if !empty {
                return Err(restore_err(name, format!("a volume {name} with data exists here; choose another name")));
            }
        }
        Ok(())
    }

    /// Receives a migration stream: creates the volume (or uses an empty one), extracts the
    /// data frames into staging, reads the manifest frame, checks every file against it and
    /// swaps the data in. On any failure a volume created here is removed again.
    ///
    /// # Errors
    /// [`Error::Restore`] with the reason.
    pub async fn receive(
        &self,
        name: &str,
        offer: voltool_migrate::Offer,
        frames: Box<dyn Read + Send>,
    ) -> Result<RestoreOutcome> {
        self.check_offer(name, &offer).await?;
        let created = self.prepare(name, Some(&offer.options), &RestoreOptions::default()).await?;
        let reader = std::sync::Arc::new(std::sync::Mutex::new(voltool_migrate::FrameReader::new(frames)));
        let shared = Shared(reader.clone());
        let mut check_manifest = move |rep: &ExtractReport| -> std::result::Result<(), RestoreError> {
            let bad = |e: String| RestoreError::Manifest(e);
            let trailer =
                reader.lock().unwrap_or_else(|p| p.into_inner()).take_manifest().map_err(|e| bad(e.to_string()))?;
            // Parsed as it is decompressed, never held whole as text (a small frame may expand
            // to a gigabyte), and stopped at the limit.
            let input = trailer.into_reader().map_err(|e| bad(e.to_string()))?;
            let lim = voltool_backup::ManifestLimits { bytes: crate::backups::MANIFEST_LIMIT };
            let m = Manifest::from_reader("the migration's manifest", input, lim)
                .map_err(|e| bad(format!("the manifest: {e}")))?;
            voltool_restore::check_manifest(rep, &m)
        };
        let record = self.svc.record(name).await?;
        let mount_id = format!("{MOUNT_ID_PREFIX}{}", nonce());
        let root = self.svc.mount(name, &mount_id).await?;
        let v = name.to_owned();
        let max = record.spec.size;
        self.svc.store().set_restoring(name, true, &now_rfc3339())?;
        let (svc, reserve) = (self.svc.clone(), self.reserve);
        let result = tokio::task::spawn_blocking(move || -> Result<ExtractReport> {
            refuse_if_held(&svc, &v)?;
            let mut xopts = ExtractOptions {
                max_bytes: max,
                same_owner: nix::unistd::geteuid().is_root(),
                // The manifest arrives after the data; it records the sha256 of the stream the
                // sender wrote (these data frames' bytes), so the stream's digest checks every
                // byte against it, as for a restore from a backup.
                hash_archive: true,
                durable: true,
                // A migration is asked for by a caller of this daemon (root-equivalent) and
                // checked against the sender's manifest: the volume moves as it was.
                preserve_privileges: true,
                ..ExtractOptions::default()
            };
            restore_staged(svc, &v, &root, Box::new(shared), &mut check_manifest, &mut xopts, reserve)
                .map_err(|e| restore_err(&v, e))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()));
        self.svc.store().set_restoring(name, false, "")?;
        if let Err(e) = self.svc.unmount(name, &mount_id).await {
            tracing::warn!(volume = name, error = %e, "could not release the receive's mount");
        }
        let result = result.and_then(|r| r);
        match result {
            Ok(report) => {
                tracing::info!(volume = name, files = report.files, bytes = report.bytes, "received a migrated volume");
                Ok(RestoreOutcome {
                    volume: name.to_owned(),
                    compression: "zstd".into(),
                    entries: report.entries,
                    files: report.files,
                    bytes: report.bytes,
                    verified_against_manifest: true,
                    verification: "manifest".into(),
                    created,
                })
            }
            Err(e) => {
                if created {
                    tracing::warn!(volume = name, error = %e, "migration failed; removing the volume it created");
                    let _ = self.svc.remove(name, true).await;
                }
                Err(e)
            }
        }
    }

    /// The volume's stored options and the secrets they name (for a migration offer).
    ///
    /// # Errors
    /// [`voltool_plugin::Error::NotFound`].
    pub async fn offer(&self, name: &str) -> Result<voltool_migrate::Offer> {
        let rec = self.svc.record(name).await?;
        let secrets = rec.spec.cifs.as_ref().and_then(|c| c.secret.clone()).into_iter().collect();
        Ok(voltool_migrate::Offer {
            protocol: voltool_migrate::PROTOCOL,
            volume: name.to_owned(),
            options: rec.options,
            secrets,
        })
    }

    /// The restore test of a backup: restores it into a scratch volume and runs `command`
    /// (default: list the data) in a minimal container (the runtime's: no network, the host
    /// root read-only, the scratch volume at `/data`). The command's exit status decides;
    /// the scratch volume is always removed. The result is recorded with the backup.
    ///
    /// # Errors
    /// [`Error::BackupNotFound`], store errors; a failed restore or check is an `Ok` outcome
    /// with `ok: false`.
    pub async fn restore_test(&self, id: &str, command: Option<&str>) -> Result<RestoreTestOutcome> {
        let Some(_) = self.catalog.locate(id).await? else {
            return Err(Error::BackupNotFound { id: id.to_owned() });
        };
        let scratch = format!("voltool-check-{}", nonce());
        let command = command.unwrap_or("ls -la /data >/dev/null").to_owned();
        let outcome = self.restore_test_in(&scratch, id, &command).await;
        if self.svc.get(&scratch).await.ok().flatten().is_some()
            && let Err(e) = self.svc.remove(&scratch, true).await
        {
            tracing::warn!(volume = scratch, error = %e, "could not remove the restore test's scratch volume");
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => RestoreTestOutcome {
                id: id.into(),
                ok: false,
                status: None,
                output: String::new(),
                error: Some(e.to_string()),
            },
        };
        let reason = (!outcome.ok).then(|| {
            outcome.error.clone().unwrap_or_else(|| {
                format!(
                    "restore test: the check command exited {}: {}",
                    outcome.status.unwrap_or(-1),
                    outcome.output.trim()
                )
            })
        });
        self.catalog.record_verification(id, outcome.ok, reason.as_deref()).await?;
        Ok(outcome)
    }

    async fn restore_test_in(&self, scratch: &str, id: &str, command: &str) -> Result<RestoreTestOutcome> {
        // The scratch volume is a plain directory volume: no network, no image to make.
        self.svc.create(scratch, BTreeMap::new()).await?;
        let opts = RestoreOptions { scratch: true, ..RestoreOptions::default() };
        let restored = self.restore_from(scratch, id, opts).await?;
        let mount_id = format!("{MOUNT_ID_PREFIX}check-{}", nonce());
        let data = self.svc.mount(scratch, &mount_id).await?;
        let workdir = self.svc.layout().state_dir.join("check").join(scratch);
        std::fs::create_dir_all(&workdir).map_err(voltool_plugin::Error::io(scratch, "create", workdir.clone()))?;
        let spec = voltool_runtime::container::ContainerSpec {
            rootfs: None,
            data,
            command: command.to_owned(),
            timeout: std::time::Duration::from_secs(600),
            workdir: workdir.clone(),
            confinement: voltool_runtime::container::Confinement::default(),
        };
        // The check runs unprivileged (root of its own user namespace = a high host uid):
        // the scratch copy's owners move into that range so it sees them as in the backup.
        let name = scratch.to_owned();
        let ran = tokio::task::spawn_blocking(move || {
            voltool_runtime::container::shift_owners(&spec.data, &spec.confinement.ids)
                .map_err(|e| restore_err(&name, format!("giving the restored data to the check's user: {e}")))?;
            voltool_runtime::container::run(&spec)
                .map_err(|e| restore_err(&name, format!("starting the check container: {e}")))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        let _ = std::fs::remove_dir(&workdir);
        self.svc.unmount(scratch, &mount_id).await?;
        let ran = ran?;
        tracing::info!(backup = id, status = ran.status, files = restored.files, limits = %ran.limits, "restore test ran");
        Ok(RestoreTestOutcome {
            id: id.to_owned(),
            ok: ran.status == 0 && !ran.timed_out,
            status: Some(ran.status),
            output: ran.output,
            error: ran.timed_out.then(|| "restore test: the check command timed out".to_string()),
        })
    }

    /// At start: finishes or undoes restores a killed daemon left in flight, by the phase
    /// their journal recorded (see [`voltool_restore::staged::recover`]).
    ///
    /// # Errors
    /// Store errors; a volume that cannot be recovered is logged and left flagged (its Mounts
    /// are refused until it is).
    pub async fn recover_interrupted(&self) -> Result<()> {
        for flight in self.svc.store().restores_in_flight()? {
            let volume = flight.volume.clone();
            if self.svc.get(&volume).await?.is_none() {
                self.svc.store().set_restoring(&volume, false, "")?;
                continue;
            }
            let mount_id = format!("{MOUNT_ID_PREFIX}recover-{}", nonce());
            let root = self.svc.mount(&volume, &mount_id).await?;
            let r = tokio::task::spawn_blocking(move || recover_in(&root, &flight))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?;
            self.svc.unmount(&volume, &mount_id).await?;
            match r {
                Ok(did) => {
                    tracing::warn!(volume, actions = ?did, "recovered a restore interrupted by a daemon stop");
                    self.svc.store().set_restoring(&volume, false, "")?;
                }
                Err(e) => tracing::error!(volume, error = %e, "could not recover an interrupted restore"),
            }
        }
        Ok(())
    }

    /// Mounts a volume for export and returns its root and the mount ID to release after.
    ///
    /// # Errors
    /// [`voltool_plugin::Error::NotFound`], mount errors.
    pub async fn export_begin(&self, volume: &str) -> Result<(PathBuf, String)> {
        let id = format!("{MOUNT_ID_PREFIX}export-{}", nonce());
        let root = self.svc.mount(volume, &id).await?;
        Ok((root, id))
    }

    /// Releases the mount of [`Self::export_begin`].
    pub async fn export_end(&self, volume: &str, id: &str) {
        if let Err(e) = self.svc.unmount(volume, id).await {
            tracing::warn!(volume, error = %e, "could not release the export's mount");
        }
    }
}

/// Refuses a volume containers hold. `prepare` checked before the restore's own mount; a
/// container's Mount could have come in between. From the `restores` row on, Mounts are
/// refused, so this second look, made after it, closes that window.
fn refuse_if_held(svc: &VolumeService, volume: &str) -> Result<()> {
    let users = svc.store().mount_ids(volume)?.iter().filter(|id| !id.starts_with("voltool-")).count();
    if users > 0 {
        return Err(restore_err(
            volume,
            format!("it is in use by {users} container mount(s); stop them or use --force"),
        ));
    }
    Ok(())
}

/// Whether the volume at `root` holds data (anything but `lost+found` and a restore's own
/// directories).
fn dir_has_entries(root: &Path) -> std::io::Result<bool> {
    let dir = voltool_runtime::fsat::Dir::open(root)?;
    Ok(dir.entries()?.iter().any(|n| voltool_restore::staged::is_user_entry(n)))
}

/// Splits an archive URL into its target, object name and the manifest's name next to it.
fn locate_url(from: &str) -> Result<crate::backups::Located> {
    let bad = |m: String| Error::BadRequest(m);
    let (base, query) = match from.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (from, None),
    };
    let Some((dir, name)) = base.rsplit_once('/') else {
        return Err(bad(format!(
            "{from:?} is neither a backup ID in the catalog nor an archive URL (file:///dir/ID.tar.zst, s3://bucket/prefix/ID.tar.zst)"
        )));
    };
    if name.is_empty() || dir.is_empty() || !(from.starts_with('/') || from.contains("://")) {
        return Err(bad(format!(
            "{from:?} is neither a backup ID in the catalog nor an archive URL (file:///dir/ID.tar.zst, s3://bucket/prefix/ID.tar.zst)"
        )));
    }
    let dir_url = match query {
        Some(q) => format!("{dir}?{q}"),
        None => dir.to_owned(),
    };
    let dir_url = if dir_url.ends_with("://") { format!("{dir_url}/") } else { dir_url };
    let spec = TargetSpec::parse(&dir_url).map_err(|e| bad(e.to_string()))?;
    let manifest = name.strip_suffix(".tar.zst").map(|id| format!("{id}.manifest.json"));
    Ok(crate::backups::Located { spec, archive: name.to_owned(), manifest, catalog_sha256: None })
}

/// A frame reader shared between the extraction (data) and the check (manifest).
struct Shared<R: Read>(std::sync::Arc<std::sync::Mutex<voltool_migrate::FrameReader<R>>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).read(buf)
    }
}
