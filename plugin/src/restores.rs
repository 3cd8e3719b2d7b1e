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
        let (spec, name, manifest_name) = match self.backups.locate(from).await? {
            Some(found) => found,
            None => locate_url(from)?,
        };
        // The manifest first (small): it gives the options of a volume to create.
        let (s2, m2) = (spec.clone(), manifest_name.clone());
        let manifest = tokio::task::spawn_blocking(move || -> Result<Option<Manifest>> {
            let Some(m) = m2 else { return Ok(None) };
            let target =
                open_target(&s2, &tokio::runtime::Handle::current()).map_err(|e| Error::BadRequest(e.to_string()))?;
            if !target.exists(&m).map_err(|e| Error::BadRequest(e.to_string()))? {
                return Ok(None);
            }
            let bytes = target.read_small(&m, 1 << 30).map_err(|e| Error::BadRequest(e.to_string()))?;
            let text = String::from_utf8(bytes).map_err(|_| Error::BadRequest(format!("{m} is not UTF-8")))?;
            Manifest::from_json(&text).map(Some).map_err(|e| Error::BadRequest(format!("{m}: {e}")))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let created = self.prepare(volume, manifest.as_ref().map(|m| &m.options), &opts).await?;
        let rt = tokio::runtime::Handle::current();
        let open = move || -> std::result::Result<Box<dyn Read + Send>, String> {
            let target = open_target(&spec, &rt).map_err(|e| e.to_string())?;
            target.open(&name).map_err(|e| e.to_string())
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
        manifest: Option<Manifest>,
        opts: RestoreOptions,
        created: bool,
    ) -> Result<RestoreOutcome> {
        let record = self.svc.record(volume).await?;
        let mount_id = format!("{MOUNT_ID_PREFIX}{}", nonce());
        let root = self.svc.mount(volume, &mount_id).await?;
        let (v, has_manifest) = (volume.to_owned(), manifest.is_some());
        let max = record.spec.size;
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
            };
            restore_into(&root, input, manifest.as_ref(), &xopts).map_err(|e| restore_err(&v, e))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()));
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
        if offer.protocol != voltool_migrate::PROTOCOL {
            return Err(restore_err(
                name,
                format!(
                    "the sender speaks migration protocol {}, this voltool {}",
                    offer.protocol,
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
            let bytes = reader.lock().unwrap_or_else(|p| p.into_inner()).manifest().map_err(|e| e.to_string())?;
            let text = String::from_utf8(bytes).map_err(|_| "the manifest is not UTF-8".to_string())?;
            let m = Manifest::from_json(&text).map_err(|e| format!("the manifest: {e}"))?;
            voltool_restore::check_manifest(rep, &m).map_err(|e| e.to_string())
        };
        let record = self.svc.record(name).await?;
        let mount_id = format!("{MOUNT_ID_PREFIX}{}", nonce());
        let root = self.svc.mount(name, &mount_id).await?;
        let v = name.to_owned();
        let max = record.spec.size;
        let result = tokio::task::spawn_blocking(move || -> Result<ExtractReport> {
            let xopts = ExtractOptions {
                max_bytes: max,
                same_owner: nix::unistd::geteuid().is_root(),
                ..ExtractOptions::default()
            };
            restore_checked(&root, Box::new(shared), &mut check_manifest, &xopts).map_err(|e| restore_err(&v, e))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()));
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
        let restored = self.restore_from(scratch, id, RestoreOptions::default()).await?;
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
        };
        let ran = tokio::task::spawn_blocking(move || voltool_runtime::container::run(&spec))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let _ = std::fs::remove_dir(&workdir);
        self.svc.unmount(scratch, &mount_id).await?;
        let ran = ran.map_err(|e| restore_err(scratch, format!("starting the check container: {e}")))?;
        tracing::info!(backup = id, status = ran.status, files = restored.files, "restore test ran");
        Ok(RestoreTestOutcome {
            id: id.to_owned(),
            ok: ran.status == 0 && !ran.timed_out,
            status: Some(ran.status),
            output: ran.output,
            error: ran.timed_out.then(|| "restore test: the check command timed out".to_string()),
        })
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
fn locate_url(from: &str) -> Result<(TargetSpec, String, Option<String>)> {
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
    Ok((spec, name.to_owned(), manifest))
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
    let done = voltool_restore::open_archive(input)
        .and_then(|(kind, r)| {
            let mut rep = voltool_restore::extract(r, &staging, opts)?;
            rep.compression = Some(kind);
            Ok(rep)
        })
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

/// Moves the root's entries aside, the staged ones in, then deletes the old ones. On a
/// failure everything moved is moved back.
fn swap_in(root: &Path, staging: &Path, n: &str) -> std::result::Result<(), String> {
    let old = root.join(format!(".voltool-restore-old-{n}"));
    std::fs::create_dir(&old).map_err(|e| format!("creating {}: {e}", old.display()))?;
    let keep = |name: &std::ffi::OsStr| {
        let s = name.to_string_lossy();
        !s.starts_with(".voltool-restore-") && s != "lost+found"
    };
    let mut moved_out = Vec::new();
    let mut moved_in = Vec::new();
    let result = (|| -> std::result::Result<(), String> {
        for e in std::fs::read_dir(root).map_err(|e| e.to_string())?.flatten() {
            if keep(&e.file_name()) {
                std::fs::rename(e.path(), old.join(e.file_name()))
                    .map_err(|err| format!("{}: {err}", e.path().display()))?;
                moved_out.push(e.file_name());
            }
        }
        for e in std::fs::read_dir(staging).map_err(|e| e.to_string())?.flatten() {
            std::fs::rename(e.path(), root.join(e.file_name()))
                .map_err(|err| format!("{}: {err}", e.path().display()))?;
            moved_in.push(e.file_name());
        }
        Ok(())
    })();
    if let Err(e) = result {
        for name in moved_in {
            let _ = std::fs::rename(root.join(&name), staging.join(&name));
        }
        for name in moved_out {
            let _ = std::fs::rename(old.join(&name), root.join(&name));
        }
        let _ = std::fs::remove_dir(&old);
        return Err(format!("swapping the restored data in: {e}"));
    }
    let _ = std::fs::remove_dir(staging);
    remove_tree(&old);
    Ok(())
}

/// A frame reader shared between the extraction (data) and the check (manifest).
struct Shared<R: Read>(std::sync::Arc<std::sync::Mutex<voltool_migrate::FrameReader<R>>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).read(buf)
    }
}
