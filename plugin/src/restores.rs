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
use voltool_restore::{ExtractOptions, ExtractReport};

use crate::backups::Backups;
use crate::error::{Error, Result};
use crate::service::VolumeService;

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
    backups: Backups,
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
    pub fn new(svc: VolumeService, backups: Backups) -> Self {
        Self { svc, backups }
    }

    /// Restores from a catalog ID or an archive URL.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an unknown source, [`Error::Restore`] naming the problem
    /// (refused entry, mismatch, volume in use); the volume is unchanged on error.
    pub async fn restore_from(&self, volume: &str, from: &str, opts: RestoreOptions) -> Result<RestoreOutcome> {
        crate::options::validate_name(volume)?;
        let crate::backups::Located { spec, archive: name, manifest: manifest_name, catalog_sha256 } =
            match self.backups.locate(from).await? {
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
            PendingManifest::open(m, input).map(|p| Some(p.expect_archive(catalog_sha256)))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let created = self.prepare(volume, manifest.as_ref().map(|m| &m.options), &opts).await?;
        let rt = tokio::runtime::Handle::current();
        let open = move || -> std::result::Result<Box<dyn Read + Send>, String> {
            let target = open_target(&spec, &rt).map_err(|e| e.to_string())?;
            // Read once, start to end: no page cache (O_DIRECT from a directory target).
            target.open_stored(&name).map_err(|e| e.to_string())
        };
        self.run(volume, Box::new(open), manifest, opts, created).await
    }

    /// Restores from a stream (import, or a local file the CLI sends).
    ///
    /// # Errors
    /// As [`Self::restore_from`].
    pub async fn import(
        &self,
        volume: &str,
        input: Box<dyn Read + Send>,
        opts: RestoreOptions,
    ) -> Result<RestoreOutcome> {
        crate::options::validate_name(volume)?;
        let created = self.prepare(volume, None, &opts).await?;
        let mut input = Some(input);
        let open = move || input.take().ok_or_else(|| "the stream can be read once".to_string());
        self.run(volume, Box::new(open), None, opts, created).await
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
                let users = self.svc.store().mount_ids(volume)?.iter().filter(|id| !id.starts_with("voltool-")).count();
                if users > 0 && !opts.force {
                    return Err(restore_err(
                        volume,
                        format!("it is in use by {users} container mount(s); stop them or use --force"),
                    ));
                }
                Ok(false)
            }
        }
    }

    async fn run(
        &self,
        volume: &str,
        open: Box<dyn FnOnce() -> std::result::Result<Box<dyn Read + Send>, String> + Send>,
        manifest: Option<PendingManifest>,
        opts: RestoreOptions,
        created: bool,
    ) -> Result<RestoreOutcome> {
        let record = self.svc.record(volume).await?;
        let mount_id = format!("{MOUNT_ID_PREFIX}{}", nonce());
        let root = self.svc.mount(volume, &mount_id).await?;
        let (v, has_manifest) = (volume.to_owned(), manifest.is_some());
        let max = record.spec.size;
        self.svc.store().set_restoring(volume, true, &now_rfc3339())?;
        let result = tokio::task::spawn_blocking(move || -> Result<ExtractReport> {
            if !opts.force && !created && dir_has_entries(&root).map_err(|e| restore_err(&v, e))? {
                return Err(restore_err(&v, "it is not empty; restore into a new volume or use --force"));
            }
            let input = open().map_err(|e| restore_err(&v, e))?;
            let xopts = ExtractOptions {
                allow_devices: opts.allow_devices,
                max_bytes: max,
                strip_components: opts.strip_components,
                same_owner: nix::unistd::geteuid().is_root(),
                // With a manifest, the archive's sha256 checks every byte against it (less
                // work than hashing every file: the archive is compressed).
                hash_archive: has_manifest,
                hash_files: false,
                // On disk before the swap replaces the volume's data (see `swap_in`).
                durable: !opts.scratch,
            };
            let mut parsing = manifest.map(PendingManifest::parse).transpose().map_err(|e| restore_err(&v, e))?;
            let mut check = |rep: &ExtractReport| match parsing.take() {
                Some(p) => voltool_restore::check_manifest(rep, &p.join()?).map_err(|e| e.to_string()),
                None => Ok(()),
            };
            restore_checked(&root, input, &mut check, &xopts).map_err(|e| restore_err(&v, e))
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
            verified_against_manifest: has_manifest,
            created,
        })
    }

    /// Whether this daemon can take the volume a migration offers: the protocol, the options,
    /// the secrets they name, and the name (free, or an empty volume nobody uses).
    ///
    /// # Errors
    /// [`Error::Restore`] saying why not.
    pub async fn check_offer(&self, name: &str, offer: &voltool_migrate::Offer) -> Result<()> {
        crate::options::validate_name(name)?;
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
        crate::options::parse_full(&offer.options).map_err(|e| restore_err(name, format!("its options: {e}")))?;
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
        let mut check_manifest = move |rep: &ExtractReport| -> std::result::Result<(), String> {
            let trailer =
                reader.lock().unwrap_or_else(|p| p.into_inner()).take_manifest().map_err(|e| e.to_string())?;
            let bytes = trailer.into_json().map_err(|e| e.to_string())?;
            let text = String::from_utf8(bytes).map_err(|_| "the manifest is not UTF-8".to_string())?;
            let m = Manifest::from_json(&text).map_err(|e| format!("the manifest: {e}"))?;
            voltool_restore::check_manifest(rep, &m).map_err(|e| e.to_string())
        };
        let record = self.svc.record(name).await?;
        let mount_id = format!("{MOUNT_ID_PREFIX}{}", nonce());
        let root = self.svc.mount(name, &mount_id).await?;
        let v = name.to_owned();
        let max = record.spec.size;
        self.svc.store().set_restoring(name, true, &now_rfc3339())?;
        let result = tokio::task::spawn_blocking(move || -> Result<ExtractReport> {
            let xopts = ExtractOptions {
                max_bytes: max,
                same_owner: nix::unistd::geteuid().is_root(),
                // The manifest arrives after the data; it records the sha256 of the stream the
                // sender wrote (these data frames' bytes), so the stream's digest checks every
                // byte against it, as for a restore from a backup.
                hash_archive: true,
                durable: true,
                ..ExtractOptions::default()
            };
            restore_checked(&root, Box::new(shared), &mut check_manifest, &xopts).map_err(|e| restore_err(&v, e))
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
    /// [`Error::NotFound`].
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
        let Some(_) = self.backups.locate(id).await? else {
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
        self.backups.record_verification(id, outcome.ok, reason.as_deref()).await?;
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
        std::fs::create_dir_all(&workdir).map_err(Error::io(scratch, "create", workdir.clone()))?;
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

    /// At start: finishes or undoes restores a killed daemon left in flight (see [`recover`]).
    ///
    /// # Errors
    /// Store errors; a volume that cannot be recovered is logged and left flagged.
    pub async fn recover_interrupted(&self) -> Result<()> {
        for volume in self.svc.store().restoring()? {
            if self.svc.get(&volume).await?.is_none() {
                self.svc.store().set_restoring(&volume, false, "")?;
                continue;
            }
            let mount_id = format!("{MOUNT_ID_PREFIX}recover-{}", nonce());
            let root = self.svc.mount(&volume, &mount_id).await?;
            let r = tokio::task::spawn_blocking(move || recover(&root))
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
    /// [`Error::NotFound`], mount errors.
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

fn dir_has_entries(root: &Path) -> std::io::Result<bool> {
    Ok(std::fs::read_dir(root)?.flatten().any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        !n.starts_with(".voltool-restore-") && n != "lost+found"
    }))
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

/// A backup's manifest opened, with only its head read and parsed.
///
/// The head (format version, the volume's options) is read at once: creating the volume needs
/// it, and a manifest of a newer format is refused before anything happens. voltool writes
/// the entries last, so the head is what comes before them (a few hundred bytes); the rest
/// (~20 MB of JSON for 100,000 files) is read and parsed by [`PendingManifest::parse`] on a
/// thread of its own, alongside the extraction, and is only needed for the check before the
/// swap. A manifest laid out otherwise is read whole at once instead.
pub struct PendingManifest {
    name: String,
    /// What was read so far, and the rest of the stream (`None`: all was read).
    read: Vec<u8>,
    rest: Option<Box<dyn Read + Send>>,
    pub options: BTreeMap<String, String>,
    /// The archive sha256 the manifest must record (the catalog's, see [`Self::expect_archive`]).
    expect_archive: Option<String>,
}

impl std::fmt::Debug for PendingManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingManifest")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What [`PendingManifest`] reads at once.
#[derive(Deserialize)]
struct ManifestHead {
    format_version: u32,
    options: BTreeMap<String, String>,
}

/// Where a manifest's entries begin, as voltool writes it (compact JSON, entries last).
const ENTRIES_KEY: &[u8] = b",\"entries\":[";
/// How much is read looking for [`ENTRIES_KEY`] before reading the whole manifest instead.
const HEAD_MAX: usize = 1 << 20;

/// A manifest being parsed: [`ParsingManifest::join`] waits for it.
pub struct ParsingManifest {
    name: String,
    thread: std::thread::JoinHandle<std::result::Result<Manifest, String>>,
}

fn read_rest(name: &str, r: &mut dyn Read, into: &mut Vec<u8>) -> std::result::Result<(), String> {
    let limit = crate::backups::MANIFEST_LIMIT.saturating_sub(into.len() as u64);
    r.take(limit + 1).read_to_end(into).map_err(|e| format!("reading {name}: {e}"))?;
    if into.len() as u64 > crate::backups::MANIFEST_LIMIT {
        return Err(format!("{name} is larger than {} bytes", crate::backups::MANIFEST_LIMIT));
    }
    Ok(())
}

impl PendingManifest {
    /// Reads and checks the head of the manifest `name` from `input`.
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming the manifest when it cannot be read, the head is not
    /// valid JSON, or the format is newer than this voltool reads.
    pub fn open(name: String, mut input: Box<dyn Read + Send>) -> Result<Self> {
        let mut read = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut ended = false;
        // Searched up to here (a key may straddle two reads).
        let mut from = 0;
        let cut = loop {
            if let Some(i) = read[from..].windows(ENTRIES_KEY.len()).position(|w| w == ENTRIES_KEY) {
                break Some(from + i);
            }
            from = read.len().saturating_sub(ENTRIES_KEY.len() - 1);
            if read.len() >= HEAD_MAX {
                break None;
            }
            let n = input.read(&mut chunk).map_err(|e| Error::BadRequest(format!("reading {name}: {e}")))?;
            if n == 0 {
                ended = true;
                break None;
            }
            read.extend_from_slice(&chunk[..n]);
        };
        let head = cut.and_then(|i| {
            let mut text = read[..i].to_vec();
            text.push(b'}');
            serde_json::from_slice::<ManifestHead>(&text).ok()
        });
        let (head, rest) = match head {
            Some(h) => (h, Some(input)),
            None => {
                // Not laid out as voltool writes it: read it whole.
                if !ended {
                    read_rest(&name, &mut input, &mut read).map_err(Error::BadRequest)?;
                }
                let h = serde_json::from_slice(&read).map_err(|e| Error::BadRequest(format!("{name}: {e}")))?;
                (h, None)
            }
        };
        if head.format_version == 0 || head.format_version > voltool_backup::FORMAT_VERSION {
            let e = voltool_backup::BackupError::ManifestVersion {
                found: head.format_version,
                supported: voltool_backup::FORMAT_VERSION,
            };
            return Err(Error::BadRequest(format!("{name}: {e}")));
        }
        Ok(Self { name, read, rest, options: head.options, expect_archive: None })
    }

    /// [`Self::open`] over a manifest already in memory.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn new(name: String, text: String) -> Result<Self> {
        Self::open(name, Box::new(std::io::Cursor::new(text.into_bytes())))
    }

    /// Holds the manifest to the archive sha256 the catalog recorded when the backup was made:
    /// an archive and manifest rewritten together on the target (consistent with each other)
    /// are then refused too.
    #[must_use]
    pub fn expect_archive(mut self, sha256: Option<String>) -> Self {
        self.expect_archive = sha256;
        self
    }

    /// Starts reading the rest of the manifest and parsing it whole on its own thread.
    ///
    /// # Errors
    /// When the thread cannot start.
    pub fn parse(self) -> std::result::Result<ParsingManifest, String> {
        let Self { name, read, rest, expect_archive, .. } = self;
        let n2 = name.clone();
        let thread = std::thread::Builder::new()
            .name("manifest-parse".into())
            .spawn(move || {
                // Parsed as it is read, never held whole as text, and stopped at the limit.
                let rest: Box<dyn Read + Send> = rest.unwrap_or_else(|| Box::new(std::io::empty()));
                let lim = voltool_backup::ManifestLimits { bytes: crate::backups::MANIFEST_LIMIT };
                let m = Manifest::from_reader(&n2, std::io::Cursor::new(read).chain(rest), lim)
                    .map_err(|e| format!("{n2}: {e}"))?;
                match expect_archive {
                    Some(want) if want != m.archive_sha256 => Err(format!(
                        "{n2} records archive sha256 {}, the catalog recorded {want} when the backup was made: the backup was changed since",
                        m.archive_sha256
                    )),
                    _ => Ok(m),
                }
            })
            .map_err(|e| format!("starting the thread that parses {name}: {e}"))?;
        Ok(ParsingManifest { name, thread })
    }
}

impl ParsingManifest {
    /// The parsed manifest.
    ///
    /// # Errors
    /// The manifest's parse error, naming it.
    pub fn join(self) -> std::result::Result<Manifest, String> {
        self.thread.join().map_err(|_| format!("parsing {} failed", self.name))?
    }
}

/// Extracts `input` into a staging directory in `root`, checks it, and swaps it in.
///
/// # Errors
/// The extraction's, the manifest check's, or the swap's error; `root` is unchanged then.
pub fn restore_into(
    root: &Path,
    input: Box<dyn Read + Send>,
    manifest: Option<&Manifest>,
    opts: &ExtractOptions,
) -> std::result::Result<ExtractReport, String> {
    let mut check = |rep: &ExtractReport| match manifest {
        Some(m) => voltool_restore::check_manifest(rep, m).map_err(|e| e.to_string()),
        None => Ok(()),
    };
    restore_checked(root, input, &mut check, opts)
}

/// [`restore_into`] with any check between extraction and swap (a migration reads its
/// manifest only after the data).
///
/// # Errors
/// The extraction's, the check's or the swap's error; `root` is unchanged then.
pub fn restore_checked(
    root: &Path,
    input: Box<dyn Read + Send>,
    check: &mut dyn FnMut(&ExtractReport) -> std::result::Result<(), String>,
    opts: &ExtractOptions,
) -> std::result::Result<ExtractReport, String> {
    let n = nonce();
    let staging = root.join(format!(".voltool-restore-{n}"));
    std::fs::create_dir(&staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let done = voltool_restore::extract_archive(input, &staging, opts)
        .map_err(|e| e.to_string())
        .and_then(|rep| check(&rep).map(|()| rep));
    let report = match done {
        Ok(r) => r,
        Err(e) => {
            remove_tree(&staging);
            return Err(e);
        }
    };
    swap_in(root, &staging, &n).inspect_err(|_| remove_tree(&staging))?;
    Ok(report)
}

fn remove_tree(p: &Path) {
    // A restored tree may hold read-only directories: make them writable first.
    fn writable(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                writable(&e.path());
            }
        }
    }
    writable(p);
    if let Err(e) = std::fs::remove_dir_all(p) {
        tracing::warn!(path = %p.display(), error = %e, "could not remove a restore's temporary tree");
    }
}

/// Writes the swap phase marker atomically (temporary file, fsync, rename, fsync of the root).
fn set_phase(root: &Path, n: &str, phase: &str) -> std::result::Result<(), String> {
    use std::io::Write;
    let marker = root.join(format!(".voltool-restore-{n}.swap"));
    let tmp = root.join(format!(".voltool-restore-{n}.swap.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(phase.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &marker).map_err(|e| format!("{}: {e}", marker.display()))?;
    sync_dir(root)
}

fn sync_dir(dir: &Path) -> std::result::Result<(), String> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("syncing {}: {e}", dir.display()))
}

/// Entries of the volume proper (not restore bookkeeping, not `lost+found`).
fn user_entries(dir: &Path) -> std::result::Result<Vec<std::ffi::OsString>, String> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            let s = n.to_string_lossy();
            !s.starts_with(".voltool-restore-") && s != "lost+found"
        })
        .collect())
}

fn move_all(from: &Path, to: &Path) -> std::result::Result<(), String> {
    for name in user_entries(from)? {
        std::fs::rename(from.join(&name), to.join(&name))
            .map_err(|e| format!("moving {}: {e}", from.join(&name).display()))?;
    }
    Ok(())
}

/// Swaps the staged tree in, crash-safely (the tree is on disk already: extracted with
/// [`ExtractOptions::durable`]): phase 1 moves the old entries into
/// `.voltool-restore-old-N`, phase 2 moves the staged ones into the root; a marker file records
/// the phase, so [`recover`] after a crash rolls phase 1 back (old content) or phase 2 forward
/// (new content) — never a mix. On an error here everything moved is moved back.
fn swap_in(root: &Path, staging: &Path, n: &str) -> std::result::Result<(), String> {
    let old = root.join(format!(".voltool-restore-old-{n}"));
    std::fs::create_dir(&old).map_err(|e| format!("creating {}: {e}", old.display()))?;
    set_phase(root, n, "1")?;
    if let Err(e) = move_all(root, &old).and_then(|()| sync_dir(root)).and_then(|()| set_phase(root, n, "2")) {
        let _ = move_all(&old, root);
        let _ = std::fs::remove_dir(&old);
        let _ = std::fs::remove_file(root.join(format!(".voltool-restore-{n}.swap")));
        return Err(format!("swapping the restored data in: {e}"));
    }
    if let Err(e) = move_all(staging, root).and_then(|()| sync_dir(root)) {
        // Undo: staged entries back, old ones in.
        for name in user_entries(root).unwrap_or_default() {
            let _ = std::fs::rename(root.join(&name), staging.join(&name));
        }
        let _ = move_all(&old, root);
        let _ = std::fs::remove_dir(&old);
        let _ = std::fs::remove_file(root.join(format!(".voltool-restore-{n}.swap")));
        return Err(format!("swapping the restored data in: {e}"));
    }
    std::fs::remove_file(root.join(format!(".voltool-restore-{n}.swap")))
        .map_err(|e| format!("removing the swap marker: {e}"))?;
    sync_dir(root)?;
    let _ = std::fs::remove_dir(staging);
    remove_tree(&old);
    Ok(())
}

/// Finishes or undoes what a restore killed mid-way left in a volume's root: a swap in phase
/// 1 is rolled back, one in phase 2 rolled forward; staging and old trees without a marker
/// are deleted. Returns what it did, for the log.
///
/// # Errors
/// When the volume's root cannot be read or an entry cannot be moved.
pub fn recover(root: &Path) -> std::result::Result<Vec<String>, String> {
    let mut did = Vec::new();
    let names: Vec<String> = std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for name in &names {
        let Some(n) = name.strip_prefix(".voltool-restore-").and_then(|r| r.strip_suffix(".swap")) else { continue };
        let phase = std::fs::read_to_string(root.join(name)).unwrap_or_default();
        let (staging, old) =
            (root.join(format!(".voltool-restore-{n}")), root.join(format!(".voltool-restore-old-{n}")));
        if phase.trim() == "2" {
            // Every old entry was out; finish moving the new ones in.
            move_all(&staging, root)?;
            did.push(format!("finished swapping in restore {n}"));
        } else {
            // Part of the old entries moved out, the new ones not yet in: move the old back.
            move_all(&old, root)?;
            did.push(format!("rolled back restore {n}"));
        }
        sync_dir(root)?;
        std::fs::remove_file(root.join(name)).map_err(|e| format!("{name}: {e}"))?;
        let _ = std::fs::remove_file(root.join(format!("{name}.tmp")));
    }
    for name in std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?.flatten() {
        let s = name.file_name().to_string_lossy().into_owned();
        if s.starts_with(".voltool-restore-") {
            if name.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&name.path());
            } else {
                let _ = std::fs::remove_file(name.path());
            }
            did.push(format!("removed {s}"));
        }
    }
    Ok(did)
}

/// A frame reader shared between the extraction (data) and the check (manifest).
struct Shared<R: Read>(std::sync::Arc<std::sync::Mutex<voltool_migrate::FrameReader<R>>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_head_is_read_at_once_and_its_entries_alongside() {
        let newer =
            format!(r#"{{"format_version":{},"options":{{}},"entries":[]}}"#, voltool_backup::FORMAT_VERSION + 1);
        let e = PendingManifest::new("x.manifest.json".into(), newer).unwrap_err().to_string();
        assert!(e.contains("x.manifest.json"), "names the manifest: {e}");
        assert!(PendingManifest::new("x.manifest.json".into(), "{".into()).is_err(), "not JSON");
        // A head that reads but entries that do not: the parse (joined before the swap) fails.
        let bad = r#"{"format_version":1,"options":{"size":"1g"},"entries":7}"#;
        let p = PendingManifest::new("y.manifest.json".into(), bad.into()).unwrap();
        assert_eq!(p.options.get("size").map(String::as_str), Some("1g"));
        let e = p.parse().unwrap().join().unwrap_err();
        assert!(e.contains("y.manifest.json"), "names the manifest: {e}");
    }

    /// A reader that hands out `text` 1000 bytes at a time.
    struct Trickle {
        text: Vec<u8>,
        at: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(1000).min(self.text.len() - self.at);
            out[..n].copy_from_slice(&self.text[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn only_the_head_is_read_at_once_and_the_rest_on_the_parsing_thread() {
        let entries: Vec<String> = (0..20_000)
            .map(|i| {
                format!(
                    r#"{{"path":"f{i}","kind":"file","mode":420,"uid":0,"gid":0,"mtime":1,"size":1,"sha256":"{}"}}"#,
                    "a".repeat(64)
                )
            })
            .collect();
        let text = format!(
            r#"{{"format_version":1,"id":"v-20260101T000000Z-abcdef","volume":"v","options":{{"size":"1g"}},"created":"2026-01-01T00:00:00Z","tool_version":"0","archive_size":1,"archive_sha256":"x","files":20000,"bytes":20000,"entries":[{}]}}"#,
            entries.join(",")
        );
        assert!(text.len() > 2 * HEAD_MAX, "bigger than what the head read may take");
        let p = PendingManifest::open(
            "z.manifest.json".into(),
            Box::new(Trickle { text: text.clone().into_bytes(), at: 0 }),
        )
        .unwrap();
        assert_eq!(p.options.get("size").map(String::as_str), Some("1g"));
        assert!(p.read.len() < 64 * 1024, "read {} bytes for the head", p.read.len());
        let m = p.parse().unwrap().join().unwrap();
        assert_eq!(m.entries.len(), 20_000);
        assert_eq!(m.entries[19_999].path, "f19999");
        // Held to the catalog's archive sha256: the same passes, another is refused.
        let held = |sha: &str| {
            PendingManifest::new("z.manifest.json".into(), text.clone())
                .unwrap()
                .expect_archive(Some(sha.into()))
                .parse()
                .unwrap()
                .join()
        };
        assert!(held("x").is_ok());
        let e = held("y").unwrap_err();
        assert!(e.contains("catalog") && e.contains("z.manifest.json"), "{e}");
    }

    fn names(root: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(root).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// A crash in phase 1 (old entries partly moved out, new ones still staged).
    #[test]
    fn recover_rolls_phase_one_back_to_the_old_content() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("old1"), "1").unwrap();
        std::fs::create_dir(root.join(".voltool-restore-old-n")).unwrap();
        std::fs::write(root.join(".voltool-restore-old-n/old2"), "2").unwrap();
        std::fs::create_dir(root.join(".voltool-restore-n")).unwrap();
        std::fs::write(root.join(".voltool-restore-n/new1"), "x").unwrap();
        std::fs::write(root.join(".voltool-restore-n.swap"), "1").unwrap();
        let did = recover(root).unwrap();
        assert!(did.iter().any(|d| d.contains("rolled back")), "{did:?}");
        assert_eq!(names(root), ["old1", "old2"]);
    }

    /// A crash in phase 2 (old entries all out, new ones partly in).
    #[test]
    fn recover_rolls_phase_two_forward_to_the_new_content() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("new1"), "x").unwrap();
        std::fs::create_dir(root.join(".voltool-restore-old-n")).unwrap();
        std::fs::write(root.join(".voltool-restore-old-n/old1"), "1").unwrap();
        std::fs::create_dir_all(root.join(".voltool-restore-n/newdir")).unwrap();
        std::fs::write(root.join(".voltool-restore-n.swap"), "2").unwrap();
        let did = recover(root).unwrap();
        assert!(did.iter().any(|d| d.contains("finished")), "{did:?}");
        assert_eq!(names(root), ["new1", "newdir"]);
    }

    /// An extraction cut short (staging, no marker) or a cleanup cut short (old tree, no marker).
    #[test]
    fn recover_removes_unmarked_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("keep"), "k").unwrap();
        std::fs::create_dir_all(root.join(".voltool-restore-a/x")).unwrap();
        std::fs::create_dir_all(root.join(".voltool-restore-old-b/y")).unwrap();
        recover(root).unwrap();
        assert_eq!(names(root), ["keep"]);
    }

    /// A normal swap leaves only the new entries.
    #[test]
    fn swap_replaces_the_entries() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("old"), "o").unwrap();
        std::fs::create_dir(root.join("lost+found")).unwrap();
        let staging = root.join(".voltool-restore-z");
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("new"), "n").unwrap();
        swap_in(root, &staging, "z").unwrap();
        assert_eq!(names(root), ["lost+found", "new"]);
    }
}
