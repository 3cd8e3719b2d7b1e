//! The volume service: one owner for every volume, reference-counted mounts keyed by
//! Docker's Mount IDs, persisted in the [`Store`], reconciled with the kernel at start.
//!
//! Concurrency: operations on one volume are serialised by a per-volume async lock; different
//! volumes never wait on each other. The blocking part of each operation (SQLite, syscalls,
//! directory walks) runs on tokio's blocking pool so the plugin socket stays responsive.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{AnyBackend, Host, Layout};
use crate::error::{Error, Result};
use crate::options::{self, VolumeSpec, VolumeType, format_size};
use crate::store::{Store, VolumeRecord};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

/// Project IDs voltool hands out start here, clear of IDs admins commonly use by hand.
const FIRST_PROJECT_ID: u32 = 100_000;

/// How long Status may spend measuring a local volume's usage.
const USAGE_BUDGET: Duration = Duration::from_millis(300);

/// Live state of a volume, as Docker's `Status` and `voltool volume inspect` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VolumeStatus {
    #[serde(rename = "type")]
    pub kind: VolumeType,
    /// Human size limit (`16 MiB`) or `none`.
    pub size_limit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_limit_bytes: Option<u64>,
    /// Allocated bytes; absent when they could not be measured quickly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// What the filesystem can hold (below the limit by its metadata); mounted tmpfs and
    /// image-backed volumes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// `directory`, `image (ext4)`, `image (xfs)` or `tmpfs`.
    pub backing: String,
    pub mounted: bool,
    pub mount_count: usize,
    /// The newest finished backup (complete or failed) and its verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
}

/// The last backup of a volume, as its Status shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LastBackup {
    pub id: String,
    pub status: crate::store::BackupStatus,
    pub time: String,
    /// `ok`, `failed` or `not verified`.
    pub verified: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A volume as the outside world sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeView {
    pub name: String,
    pub mountpoint: PathBuf,
    pub created_at: String,
    /// The options the user passed (never secrets).
    pub options: BTreeMap<String, String>,
    pub spec: VolumeSpec,
    /// Only filled in by [`VolumeService::get`], which measures usage.
    pub status: Option<VolumeStatus>,
    pub mounted: bool,
    pub mount_count: usize,
}

/// Takes back the effect of work whose caller gave up waiting.
type Undo = Box<dyn FnOnce(&Inner) + Send>;

struct Inner {
    store: Store,
    host: Host,
    layout: Layout,
    secrets: crate::secrets::SecretStore,
    /// Serialises project-ID allocation across volumes (IDs are max + 1 of the stored ones).
    project_ids: Mutex<()>,
}

/// The service behind both the Docker plugin API and the management API.
#[derive(Clone)]
pub struct VolumeService {
    inner: Arc<Inner>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    deadline: Duration,
    /// Notified when a volume is created or removed (the backup scheduler listens).
    changes: Arc<tokio::sync::Notify>,
    /// The grammar of the `backup-*` option values (the daemon's backup engine knows it).
    backup_grammar: Arc<dyn options::BackupGrammar>,
}

/// How long Mount/Unmount may take: a network mount against a server that stopped answering
/// fails after this, instead of hanging Docker.
pub const MOUNT_DEADLINE: Duration = Duration::from_secs(15);

impl std::fmt::Debug for VolumeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeService").field("layout", &self.inner.layout).finish_non_exhaustive()
    }
}

impl VolumeService {
    /// Opens the state under `layout` (creating directories and the database) and reconciles
    /// it with the kernel's mount table. Does no network I/O.
    ///
    /// # Errors
    /// [`Error::Io`] for the directories, [`Error::Store`] for the database.
    pub fn open(layout: Layout, host: Host) -> Result<Self> {
        for dir in [&layout.state_dir, &layout.state_dir.join("volumes"), &layout.mount_root] {
            std::fs::create_dir_all(dir).map_err(Error::io("-", "create", dir.clone()))?;
        }
        let store = Store::open(&layout.database())?;
        let secrets = crate::secrets::SecretStore::open(&layout.state_dir.join("secrets"))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let svc = Self {
            inner: Arc::new(Inner { store, host, layout, secrets, project_ids: Mutex::new(()) }),
            locks: Arc::default(),
            deadline: MOUNT_DEADLINE,
            changes: Arc::default(),
            backup_grammar: Arc::new(options::AnyBackupValue),
        };
        svc.inner.reconcile()?;
        Ok(svc)
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The state database (the backup engine keeps its catalog there).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The mount seam (the backup engine makes its read-only view with it).
    pub fn mounter(&self) -> Arc<dyn voltool_runtime::Mounter> {
        self.inner.host.mounter.clone()
    }

    /// Checks the values of `backup-schedule`, `backup-keep` and `backup-target` URLs with
    /// `grammar` at create (default: any value is taken as written).
    pub fn with_backup_grammar(mut self, grammar: Arc<dyn options::BackupGrammar>) -> Self {
        self.backup_grammar = grammar;
        self
    }

    /// Notified whenever a volume is created or removed.
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changes.clone()
    }

    /// The stored record of a volume.
    ///
    /// # Errors
    /// [`Error::NotFound`], store errors.
    pub async fn record(&self, name: &str) -> Result<VolumeRecord> {
        options::validate_name(name)?;
        let n = name.to_string();
        self.blocking(move |inner| inner.record(&n)).await
    }

    /// Releases every Mount ID starting with `prefix` on every volume (internal mounts a
    /// killed daemon left behind).
    ///
    /// # Errors
    /// Store and unmount errors.
    pub async fn release_mounts_with_prefix(&self, prefix: &str) -> Result<()> {
        let p = prefix.to_string();
        let held: Vec<(String, String)> = self
            .blocking(move |inner| {
                let mut out = Vec::new();
                for v in inner.store.list_volumes()? {
                    for id in inner.store.mount_ids(&v.name)? {
                        if id.starts_with(&p) {
                            out.push((v.name.clone(), id));
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        for (vol, id) in held {
            tracing::info!(volume = vol, mount_id = id, "releasing an internal mount left by a stopped daemon");
            self.unmount(&vol, &id).await?;
        }
        Ok(())
    }

    /// The secret store volumes refer to (`secret=NAME`).
    pub fn secrets(&self) -> &crate::secrets::SecretStore {
        &self.inner.secrets
    }

    /// Runs `f` with the volume's lock held, on the blocking pool.
    async fn locked<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.locked_within(name, None, f, None).await
    }

    /// Like [`Self::locked`], but the caller gives up after `deadline`. The work itself runs in
    /// its own task that keeps the volume's lock until the (possibly hung) syscall returns,
    /// so no second operation on the volume can start underneath it; other volumes are not
    /// affected. If the work succeeds after the caller gave up, `undo` runs (under the same
    /// lock), so a mount Docker was told had failed does not stay held.
    async fn locked_within<T: Send + 'static>(
        &self,
        name: &str,
        deadline: Option<(&'static str, Duration)>,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
        undo: Option<Undo>,
    ) -> Result<T> {
        options::validate_name(name)?;
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(name.to_string()).or_default().clone()
        };
        let (inner, locks, key) = (self.inner.clone(), self.locks.clone(), name.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            {
                let _guard = lock.lock().await;
                let work = inner.clone();
                let result =
                    tokio::task::spawn_blocking(move || f(&work)).await.map_err(|e| Error::Internal(e.to_string()));
                let result = result.and_then(|r| r);
                if let Err(Ok(_)) = tx.send(result)
                    && let Some(undo) = undo
                {
                    // The caller timed out and reported failure: take the effect back.
                    let _ = tokio::task::spawn_blocking(move || undo(&inner)).await;
                    tracing::warn!(volume = key, "a mount finished after its deadline; released it again");
                }
            }
            // Drop the map entry when nobody else holds or waits for it, so the map only holds
            // volumes with work in flight.
            let mut map = locks.lock().unwrap_or_else(|p| p.into_inner());
            if Arc::strong_count(&lock) == 2 {
                map.remove(&key);
            }
        });
        let joined = match deadline {
            None => rx.await,
            Some((op, after)) => match tokio::time::timeout(after, rx).await {
                Ok(j) => j,
                Err(_) => return Err(Error::Timeout { volume: name.into(), op, after }),
            },
        };
        joined.map_err(|e| Error::Internal(e.to_string()))?
    }

    /// Creates a volume. Creating an existing volume with the same options succeeds (Docker
    /// may repeat a Create); with different options it fails.
    ///
    /// # Errors
    /// [`Error::Option`] for bad input (nothing is created), [`Error::Conflict`], I/O and
    /// store errors (anything half-made is removed).
    pub async fn create(&self, name: &str, opts: BTreeMap<String, String>) -> Result<Vec<String>> {
        options::validate_name(name)?;
        let parsed = options::parse_full(&opts)?;
        options::check_backup_policy(&parsed.spec.backup, self.backup_grammar.as_ref())?;
        let (mut spec, stored) = (parsed.spec, parsed.stored);
        let mut warnings = Vec::new();
        if let Some(t) = spec.nfs.as_mut() {
            if t.subdir.is_none() {
                t.subdir = Some(name.to_string());
            }
            // Network check before taking the volume's lock: a slow server delays only
            // this create.
            crate::backend::nfs::check_and_prepare(t, &spec.owner)
                .await
                .map_err(|e| Error::Remote { volume: name.into(), reason: e.0 })?;
        }
        if let Some(t) = spec.cifs.as_mut() {
            if t.subdir.is_none() {
                t.subdir = Some(name.to_string());
            }
            let remote = |reason: String| Error::Remote { volume: name.into(), reason };
            let secret_err = |source| Error::Secret { volume: name.into(), source };
            // The secret's binding is checked before anything reaches the server.
            let inline_name = format!("{name}-password");
            let password = match (&parsed.inline_password, &t.secret) {
                (Some(pw), _) => {
                    self.inner.secrets.add_inline(&inline_name, pw.as_bytes(), &t.host, true).map_err(secret_err)?;
                    Some(pw.clone())
                }
                (None, Some(secret)) => Some(
                    String::from_utf8(self.inner.secrets.read_for(secret, &t.host).map_err(secret_err)?)
                        .map_err(|_| remote(format!("secret {secret} is not UTF-8 text")))?,
                ),
                (None, None) => None,
            };
            let ip = crate::backend::remote::resolve("smb", &t.host, std::time::Duration::from_secs(5))
                .await
                .map_err(|e| remote(e.to_string()))?;
            crate::backend::cifs::check_and_prepare(t, ip, password).await.map_err(|e| remote(e.0))?;
            if let Some(pw) = &parsed.inline_password {
                // Compatibility with the local driver's o=password=: keep it as a secret bound
                // to this server, never in the volume's options, never replacing another value.
                self.inner.secrets.add_inline(&inline_name, pw.as_bytes(), &t.host, false).map_err(secret_err)?;
                t.secret = Some(inline_name.clone());
                let w = format!(
                    "volume {name}: the password given in o=password= was moved into secret {inline_name}; next time use -o secret={inline_name} (Docker itself still keeps the options it was given)"
                );
                tracing::warn!(volume = name, secret = inline_name, "inline cifs password moved into a secret");
                warnings.push(w);
            }
        }
        let name = name.to_string();
        self.locked(&name.clone(), move |inner| inner.create(&name, spec, stored)).await?;
        self.changes.notify_one();
        Ok(warnings)
    }

    /// Grows a volume's size limit to `size` (e.g. `128m`), online when it is mounted.
    ///
    /// # Errors
    /// [`Error::Option`] for a bad size, [`Error::Resize`] when the volume cannot grow,
    /// [`Error::NotFound`], tool/loop/I/O errors.
    pub async fn resize(&self, name: &str, size: &str) -> Result<()> {
        let bytes = options::size_opt("size", size)?;
        let (n, raw) = (name.to_string(), size.to_string());
        self.locked(name, move |inner| inner.resize(&n, bytes, raw)).await
    }

    /// Removes a volume and its data. `force` first unmounts a volume that still has mounts.
    /// An `on-remove=archive` volume's data is deleted like `on-remove=delete`: the caller
    /// (the daemon) backs it up first and calls this only when that backup verified.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::InUse`], unmount/I/O/store errors.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let n = name.to_string();
        self.locked(name, move |inner| inner.remove(&n, force)).await?;
        self.changes.notify_one();
        Ok(())
    }

    /// Mounts the volume for Docker Mount ID `id` and returns the mountpoint. A repeated ID is
    /// a no-op returning the same path.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Mount`], store errors.
    pub async fn mount(&self, name: &str, id: &str) -> Result<PathBuf> {
        let (n, id) = (name.to_string(), id.to_string());
        let (n2, id2) = (n.clone(), id.clone());
        let undo: Undo = Box::new(move |inner| {
            let _ = inner.unmount(&n2, &id2);
        });
        self.locked_within(name, Some(("mount", self.deadline)), move |inner| inner.mount(&n, &id), Some(undo)).await
    }

    /// Releases Mount ID `id` (an unknown ID succeeds); the real unmount happens when the
    /// volume's last ID is released.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Unmount`], store errors.
    pub async fn unmount(&self, name: &str, id: &str) -> Result<()> {
        let (n, id) = (name.to_string(), id.to_string());
        self.locked_within(name, Some(("unmount", self.deadline)), move |inner| inner.unmount(&n, &id), None).await
    }

    /// Sets how long Mount and Unmount may take before the caller gets an error (a hung
    /// network server); default [`MOUNT_DEADLINE`].
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// How many Mount IDs (containers, and the daemon's own work) hold the volume.
    ///
    /// # Errors
    /// Store errors.
    pub async fn mount_count(&self, name: &str) -> Result<usize> {
        let n = name.to_string();
        self.blocking(move |inner| Ok(inner.store.mount_ids(&n)?.len())).await
    }

    /// The mountpoint of an existing volume.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn path(&self, name: &str) -> Result<PathBuf> {
        let n = name.to_string();
        self.blocking(move |inner| {
            inner.record(&n)?;
            Ok(inner.layout.mountpoint(&n))
        })
        .await
    }

    /// One volume with its live status, or `None` when it does not exist. Does not take the
    /// volume's lock: Get must answer even while a slow Mount is in flight.
    ///
    /// # Errors
    /// [`Error::Option`] for an invalid name, store errors.
    pub async fn get(&self, name: &str) -> Result<Option<VolumeView>> {
        options::validate_name(name)?;
        let n = name.to_string();
        self.blocking(move |inner| {
            let Some(rec) = inner.store.get_volume(&n)? else { return Ok(None) };
            let mut v = inner.view(rec)?;
            let backend = AnyBackend::for_spec(&v.spec);
            v.status = Some(VolumeStatus {
                kind: v.spec.kind,
                size_limit: v.spec.size.map_or_else(|| "none".to_string(), format_size),
                size_limit_bytes: v.spec.size,
                used_bytes: backend.used_bytes(&inner.host, &inner.layout, &n, &v.spec, v.mounted, USAGE_BUDGET),
                capacity_bytes: backend.capacity_bytes(&inner.layout, &n, v.mounted),
                backing: match backend {
                    AnyBackend::Nfs if inner.host.nfs_userspace => "nfs (userspace client over FUSE)".into(),
                    AnyBackend::Nfs => "nfs (kernel client)".into(),
                    _ => backend.describe(),
                },
                mounted: v.mounted,
                mount_count: v.mount_count,
                last_backup: inner.store.last_backup(&n).ok().flatten().map(|b| LastBackup {
                    id: b.id,
                    status: b.status,
                    time: b.finished_at.unwrap_or(b.started_at),
                    verified: b.verify_status.unwrap_or_else(|| "not verified".into()),
                    reason: b.reason,
                }),
            });
            Ok(Some(v))
        })
        .await
    }

    /// All volumes (without usage, which can be slow to measure).
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(&self) -> Result<Vec<VolumeView>> {
        self.blocking(|inner| inner.store.list_volumes()?.into_iter().map(|r| inner.view(r)).collect()).await
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| Error::Internal(e.to_string()))?
    }
}

impl Inner {
    fn record(&self, name: &str) -> Result<VolumeRecord> {
        self.store.get_volume(name)?.ok_or_else(|| Error::NotFound { volume: name.into() })
    }

    fn is_mounted(&self, name: &str) -> Result<bool> {
        let mp = self.layout.mountpoint(name);
        self.host.mounter.is_mounted(&mp).map_err(|source| Error::Mount { volume: name.into(), source })
    }

    fn view(&self, rec: VolumeRecord) -> Result<VolumeView> {
        let mount_count = self.store.mount_ids(&rec.name)?.len();
        let mounted = self.is_mounted(&rec.name)?;
        Ok(VolumeView {
            mountpoint: self.layout.mountpoint(&rec.name),
            name: rec.name,
            created_at: rec.created_at,
            options: rec.options,
            spec: rec.spec,
            status: None,
            mounted,
            mount_count,
        })
    }

    fn create(&self, name: &str, mut spec: VolumeSpec, opts: BTreeMap<String, String>) -> Result<()> {
        if let Some(existing) = self.store.get_volume(name)? {
            return if existing.options == opts { Ok(()) } else { Err(Error::Conflict { volume: name.into() }) };
        }
        let vdir = self.layout.volume_dir(name);
        if vdir.exists() {
            // Left by a create that crashed before its record was written, or by a lost
            // database: keep the bytes, out of the way.
            let dest = self.layout.orphans_dir().join(format!("{name}-{}", now_compact()));
            std::fs::create_dir_all(self.layout.orphans_dir()).map_err(Error::io(
                name,
                "create",
                self.layout.orphans_dir(),
            ))?;
            std::fs::rename(&vdir, &dest).map_err(Error::io(name, "move orphaned directory", &vdir))?;
            crate::backend::sync_dirs(name, &[&self.layout.orphans_dir(), vdir.parent().unwrap_or(&vdir)])?;
            tracing::warn!(volume = name, moved_to = %dest.display(), "found a volume directory without a record; moved it aside");
        }
        if spec.kind == VolumeType::Local {
            spec.backing = Some(options::resolve_backing(&spec, self.host.quota)?);
        }
        // Held until the record is stored, so two creates never pick the same project ID.
        let _ids = (spec.backing == Some(options::Backing::Project)).then(|| {
            let guard = self.project_ids.lock().unwrap_or_else(|p| p.into_inner());
            let max = self.store.list_volumes().ok().into_iter().flatten().filter_map(|r| r.spec.project_id).max();
            spec.project_id = Some(max.map_or(FIRST_PROJECT_ID, |m| m + 1));
            guard
        });
        let backend = AnyBackend::for_spec(&spec);
        let rec = VolumeRecord { name: name.into(), spec: spec.clone(), options: opts, created_at: now_rfc3339() };
        let made = backend.provision(&self.host, &self.layout, name, &spec).and_then(|()| {
            if self.store.insert_volume(&rec)? { Ok(()) } else { Err(Error::Conflict { volume: name.into() }) }
        });
        if let Err(e) = made {
            if let Err(cleanup) = backend.destroy(&self.layout, name) {
                tracing::error!(volume = name, error = %cleanup, "cleanup after failed create");
            }
            return Err(e);
        }
        tracing::info!(volume = name, kind = %spec.kind, "created volume");
        Ok(())
    }

    fn remove(&self, name: &str, force: bool) -> Result<()> {
        let rec = self.record(name)?;
        let ids = self.store.mount_ids(name)?;
        if !ids.is_empty() && !force {
            return Err(Error::InUse { volume: name.into(), mounts: ids.len() });
        }
        let backend = AnyBackend::for_spec(&rec.spec);
        if self.is_mounted(name)? {
            backend.unmount(&self.host, &self.layout, name)?;
        }
        self.store.clear_mount_ids(name)?;
        // Delete the record first: a crash after it leaves an orphan directory, which the
        // next create of the name moves aside, never a record pointing at half-deleted data.
        self.store.delete_volume(name)?;
        match rec.spec.on_remove {
            options::OnRemove::Delete | options::OnRemove::Archive
                if !matches!(backend, AnyBackend::Nfs | AnyBackend::Cifs) =>
            {
                backend.destroy(&self.layout, name)?;
                tracing::info!(volume = name, "removed volume and deleted its data");
            }
            options::OnRemove::Delete | options::OnRemove::Retain | options::OnRemove::Archive
                if backend == AnyBackend::Nfs =>
            {
                backend.destroy(&self.layout, name)?;
                let t = rec.spec.nfs.as_ref().map(|t| format!("{}:{}", t.addr, t.remote_path())).unwrap_or_default();
                tracing::info!(volume = name, remote = t, "removed volume; its data stays on the nfs server");
            }
            options::OnRemove::Delete | options::OnRemove::Retain | options::OnRemove::Archive => {
                let kept = backend.retain(&self.layout, name, &now_compact())?;
                tracing::info!(volume = name, kept = %kept.display(), "removed volume; data retained (on-remove=retain)");
            }
        }
        Ok(())
    }

    fn mount(&self, name: &str, id: &str) -> Result<PathBuf> {
        let rec = self.record(name)?;
        // A container may not start on a volume whose data is being replaced (it would see
        // half a tree, and its writes could be swapped away); the restore's own mounts may.
        if !id.starts_with("voltool-") && self.store.is_restoring(name)? {
            return Err(Error::Restoring { volume: name.to_owned() });
        }
        let mp = self.layout.mountpoint(name);
        let backend = AnyBackend::for_spec(&rec.spec);
        // One look at the mount table per call: it is the hot path of every container start.
        let mut mounted = self.is_mounted(name)?;
        if mounted && !backend.is_alive(&self.host, &self.layout, name) {
            // A userspace NFS mount left by an earlier run of the daemon: its server is gone.
            backend.unmount(&self.host, &self.layout, name)?;
            tracing::warn!(volume = name, "replaced a dead userspace nfs mount");
            mounted = false;
        }
        if !mounted {
            let stale = self.store.clear_mount_ids(name)?;
            if stale > 0 {
                tracing::warn!(volume = name, stale, "mount vanished; dropped stale mount IDs and remounting");
            }
            let password = match rec.spec.cifs.as_ref().and_then(|t| t.secret.as_ref().map(|s| (s, &t.host))) {
                // Only to a server the secret is bound to (an unbound one is bound now).
                Some((secret, server)) => Some(
                    self.secrets
                        .read_for(secret, server)
                        .map_err(|source| Error::Secret { volume: name.into(), source })
                        .map(|v| String::from_utf8_lossy(&v).into_owned())?,
                ),
                None => None,
            };
            backend.mount(&self.host, &self.layout, name, &rec.spec, password.as_deref())?;
            tracing::info!(volume = name, mountpoint = %mp.display(), "mounted");
        }
        if let Err(e) = self.store.add_mount_id(name, id) {
            // Do not leave a mount nobody is recorded as holding.
            if self.store.mount_ids(name).map(|ids| ids.is_empty()).unwrap_or(false) {
                let _ = AnyBackend::for_spec(&rec.spec).unmount(&self.host, &self.layout, name);
            }
            return Err(e.into());
        }
        Ok(mp)
    }

    fn resize(&self, name: &str, bytes: u64, raw: String) -> Result<()> {
        let mut rec = self.record(name)?;
        AnyBackend::for_spec(&rec.spec).grow(&self.host, &self.layout, name, &rec.spec, bytes)?;
        rec.spec.size = Some(bytes);
        // The limit the user now asked for is what inspect shows.
        if rec.options.contains_key("size") {
            rec.options.insert("size".into(), raw);
        }
        self.store.update_volume(&rec)?;
        tracing::info!(volume = name, size = bytes, "resized volume");
        Ok(())
    }

    fn unmount(&self, name: &str, id: &str) -> Result<()> {
        let rec = self.record(name)?;
        let remaining = self.store.remove_mount_id(name, id)?;
        if remaining == 0 && self.is_mounted(name)? {
            let outcome = AnyBackend::for_spec(&rec.spec).unmount(&self.host, &self.layout, name)?;
            tracing::info!(volume = name, ?outcome, "unmounted");
        }
        Ok(())
    }

    /// Brings the persisted Mount IDs in line with the kernel: IDs of a volume whose mount
    /// is gone are dropped (the next Mount remounts it), and a mount nobody holds an ID for
    /// is unmounted.
    fn reconcile(&self) -> Result<()> {
        for rec in self.store.list_volumes()? {
            let ids = self.store.mount_ids(&rec.name)?;
            let backend = AnyBackend::for_spec(&rec.spec);
            if self.is_mounted(&rec.name)? && !backend.is_alive(&self.host, &self.layout, &rec.name) {
                backend.unmount(&self.host, &self.layout, &rec.name)?;
                tracing::warn!(
                    volume = rec.name,
                    "unmounted a userspace nfs mount whose session died with the last run"
                );
            }
            let mounted = self.is_mounted(&rec.name)?;
            if !mounted && !ids.is_empty() {
                self.store.clear_mount_ids(&rec.name)?;
                tracing::warn!(
                    volume = rec.name,
                    stale = ids.len(),
                    "mount gone since last run; dropped its mount IDs"
                );
            } else if mounted && ids.is_empty() {
                AnyBackend::for_spec(&rec.spec).unmount(&self.host, &self.layout, &rec.name)?;
                tracing::warn!(volume = rec.name, "unmounted a mount no container holds");
            }
        }
        Ok(())
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().replace_nanosecond(0).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

fn now_compact() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!("{:04}{:02}{:02}T{:02}{:02}{:02}Z", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
}

#[cfg(test)]
mod tests;

/// Fakes for the host facilities, shared by this crate's tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::sync::Arc;

    use voltool_runtime::RecordingMounter;
    use voltool_runtime::loopdev::RecordingLoopDevices;

    use crate::backend::Host;
    use crate::backend::tools::RecordingFsTools;
    use crate::options::QuotaSupport;
    use voltool_runtime::quota::RecordingProjectQuota;

    pub fn fake_host(mounter: &Arc<RecordingMounter>) -> Host {
        Host {
            mounter: mounter.clone(),
            loops: Arc::new(RecordingLoopDevices::new()),
            tools: Arc::new(RecordingFsTools::new()),
            projects: Arc::new(RecordingProjectQuota::new()),
            quota: QuotaSupport { project: false, loop_devices: true },
            nfs_userspace: false,
            fuse: Arc::default(),
        }
    }
}
