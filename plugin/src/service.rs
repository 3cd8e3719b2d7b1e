//! The volume service: one owner for every volume, reference-counted mounts keyed by
//! Docker's Mount IDs, persisted in the [`Store`], reconciled with the kernel at start.
//!
//! Concurrency: operations on one volume are serialised by a per-volume async lock
//! ([`locks`]); different volumes never wait on each other. The blocking part of each
//! operation (SQLite, syscalls, directory walks: [`inner`]) runs on tokio's blocking pool so
//! the plugin socket stays responsive. This file is the async API; beside it: the views
//! ([`view`]), the network checks of a create ([`network`]), reconciliation at start
//! ([`reconcile`]).

mod inner;
mod locks;
mod network;
mod reconcile;
mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{AnyBackend, Host, Layout};
use crate::error::{Error, Result};
use crate::options;
use crate::store::{Store, VolumeRecord};
use inner::Inner;
use locks::{Undo, VolumeLocks};
pub use view::{LastBackup, VolumeStatus, VolumeView};

/// The service behind both the Docker plugin API and the management API.
#[derive(Clone)]
pub struct VolumeService {
    inner: Arc<Inner>,
    locks: VolumeLocks,
    deadline: Duration,
    /// Counts the volumes created, resized or removed; every subscriber (the backup
    /// scheduler, the volume watcher) sees each change.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
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
            locks: VolumeLocks::default(),
            deadline: MOUNT_DEADLINE,
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
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

    /// A receiver that sees a new value whenever a volume was created, resized or removed
    /// since it last looked (`changed().await`).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
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

    /// Like [`Self::locked`], but the caller gives up after `deadline` (see
    /// [`VolumeLocks::run`]); `undo` takes back work that succeeded after that.
    async fn locked_within<T: Send + 'static>(
        &self,
        name: &str,
        deadline: Option<(&'static str, Duration)>,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
        undo: Option<Undo>,
    ) -> Result<T> {
        options::validate_name(name)?;
        self.locks.run(&self.inner, name, deadline, f, undo).await
    }

    /// Creates a volume. Creating an existing volume with the same options succeeds (Docker
    /// may repeat a Create); with different options it fails.
    ///
    /// # Errors
    /// [`Error::Option`] for bad input (nothing is created), [`Error::Conflict`], I/O and
    /// store errors (anything half-made is removed).
    pub async fn create(&self, name: &str, opts: BTreeMap<String, String>) -> Result<Vec<String>> {
        options::validate_name(name)?;
        let options::Parsed { mut spec, stored, inline_password } = options::parse_full(&opts)?;
        options::check_backup_policy(&spec.backup, self.backup_grammar.as_ref())?;
        let warnings = self.prepare_network(name, &mut spec, inline_password.as_ref()).await?;
        let name = name.to_string();
        self.locked(&name.clone(), move |inner| inner.create(&name, spec, stored)).await?;
        self.changed();
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
        self.locked(name, move |inner| inner.resize(&n, bytes, raw)).await?;
        self.changed();
        Ok(())
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
        self.changed();
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
        // Set when this call added the ID: only then may its undo release it (a repeated ID
        // belongs to the call that added it, which was answered).
        let added = Arc::new(AtomicBool::new(false));
        let took = added.clone();
        let undo: Undo = Box::new(move |inner| {
            if took.load(Ordering::Acquire)
                && let Err(e) = inner.unmount(&n2, &id2)
            {
                tracing::warn!(volume = n2, error = %e, "could not release a mount that finished after its deadline");
            }
        });
        let work = move |inner: &Inner| {
            let (mp, new) = inner.mount(&n, &id)?;
            added.store(new, Ordering::Release);
            Ok(mp)
        };
        self.locked_within(name, Some(("mount", self.deadline)), work, Some(undo)).await
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

    /// Takes a point-in-time copy of the volume, which must be mounted (a backup holds a Mount
    /// ID on it), under the volume's lock for the few milliseconds of freeze and reflink.
    ///
    /// # Errors
    /// [`Error::Unsupported`] saying why this volume cannot have one (the caller holds its
    /// containers for the whole backup instead); [`Error::NotFound`], mount and I/O errors.
    pub async fn snapshot(&self, name: &str, tag: &str) -> Result<crate::backend::Snapshot> {
        let (n, t) = (name.to_string(), tag.to_string());
        self.locked(name, move |inner| {
            let rec = inner.record(&n)?;
            AnyBackend::for_spec(&rec.spec).snapshot(&inner.host, &inner.layout, &n, &t)
        })
        .await
    }

    /// Unmounts and deletes a snapshot taken by [`Self::snapshot`].
    ///
    /// # Errors
    /// [`Error::Unmount`], [`Error::Io`].
    pub async fn drop_snapshot(&self, name: &str, snap: crate::backend::Snapshot) -> Result<()> {
        let n = name.to_string();
        self.blocking(move |inner| AnyBackend::drop_snapshot(&inner.host, &n, &snap)).await
    }

    /// Freezes (`freeze = true`) or thaws the filesystem of a mounted image-backed volume: the
    /// `freeze` consistency step where no snapshot can be taken. Other volumes share a
    /// filesystem with the state dir or a server and are refused.
    ///
    /// # Errors
    /// [`Error::Unsupported`], [`Error::NotFound`], [`Error::Mount`] (the kernel's errno).
    pub async fn set_frozen(&self, name: &str, freeze: bool) -> Result<PathBuf> {
        let n = name.to_string();
        self.blocking(move |inner| {
            let spec = inner.record(&n)?.spec;
            freezable(&n, &spec)?;
            let mp = inner.layout.mountpoint(&n);
            // Never freeze what is under an unmounted mountpoint: that is the host's filesystem.
            if freeze && !inner.is_mounted(&n, &spec)? {
                return Err(Error::Unsupported {
                    volume: n,
                    reason: "it is not mounted, so there is nothing to freeze".into(),
                });
            }
            let done = if freeze { inner.host.snapshots.freeze(&mp) } else { inner.host.snapshots.thaw(&mp) };
            done.map_err(|source| Error::Mount { volume: n.clone(), source })?;
            Ok(mp)
        })
        .await
    }

    /// Whether the volume's filesystem can be frozen (`backup-consistency=freeze`).
    ///
    /// # Errors
    /// [`Error::Unsupported`] saying why not, [`Error::NotFound`].
    pub async fn check_freezable(&self, name: &str) -> Result<()> {
        let n = name.to_string();
        self.blocking(move |inner| freezable(&n, &inner.record(&n)?.spec)).await
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
            v.status = Some(inner.status(&v));
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
        // In the caller's span (a backup run's ID): a span does not cross threads by itself.
        let (inner, span) = (self.inner.clone(), tracing::Span::current());
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&inner)))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    }
}

/// Only an image-backed volume has a filesystem of its own to freeze.
fn freezable(name: &str, spec: &options::VolumeSpec) -> Result<()> {
    if matches!(AnyBackend::for_spec(spec), AnyBackend::Image(_)) {
        return Ok(());
    }
    Err(Error::Unsupported {
        volume: name.into(),
        reason: "only image-backed volumes (size= where project quotas are missing, or fs=) can be frozen: \
                 others share their filesystem with the state dir or a server"
            .into(),
    })
}

#[cfg(test)]
mod tests;

/// Fakes for the host facilities, shared by this crate's tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::sync::Arc;

    use voltool_runtime::RecordingMounter;

    use crate::backend::Host;

    pub fn fake_host(mounter: &Arc<RecordingMounter>) -> Host {
        Host::recording(mounter)
    }
}
