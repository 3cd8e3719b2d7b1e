//! The blocking half of the volume service: [`Inner`] owns the store, the host seams, the
//! layout and the secrets, and does each operation's work (SQLite, syscalls) on tokio's
//! blocking pool, with the volume's lock held by the caller ([`super::locks`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use time::format_description::well_known::Rfc3339;

use crate::backend::{AnyBackend, Host, Layout};
use crate::error::{Error, Result};
use crate::options::{self, VolumeSpec, VolumeType};
use crate::store::{Store, VolumeRecord};

/// Project IDs voltool hands out start here, clear of IDs admins commonly use by hand.
const FIRST_PROJECT_ID: u32 = 100_000;

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) host: Host,
    pub(super) layout: Layout,
    pub(super) secrets: crate::secrets::SecretStore,
    /// Serialises project-ID allocation across volumes (IDs are max + 1 of the stored ones).
    pub(super) project_ids: Mutex<()>,
}

impl Inner {
    pub(super) fn record(&self, name: &str) -> Result<VolumeRecord> {
        self.store.get_volume(name)?.ok_or_else(|| Error::NotFound { volume: name.into() })
    }

    /// Whether the volume is mounted, asked of the kernel on every call (a mount may vanish
    /// behind the daemon's back: an admin's umount, a plugin restart). For a volume on a local
    /// filesystem that is one statx(2) of the mountpoint; network mountpoints are looked up
    /// in the mount table instead, as resolving them could wait on a hung server.
    pub(super) fn is_mounted(&self, name: &str, spec: &VolumeSpec) -> Result<bool> {
        let mp = self.layout.mountpoint(name);
        let m = self.host.mounter.as_ref();
        match AnyBackend::for_spec(spec) {
            AnyBackend::Nfs | AnyBackend::Cifs => m.is_mounted(&mp),
            AnyBackend::Local | AnyBackend::Project | AnyBackend::Tmpfs | AnyBackend::Image(_) => m.is_mount_root(&mp),
        }
        .map_err(|source| Error::Mount { volume: name.into(), source })
    }

    pub(super) fn create(&self, name: &str, mut spec: VolumeSpec, opts: BTreeMap<String, String>) -> Result<()> {
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

    pub(super) fn remove(&self, name: &str, force: bool) -> Result<()> {
        let rec = self.record(name)?;
        let ids = self.store.mount_ids(name)?;
        if !ids.is_empty() && !force {
            return Err(Error::InUse { volume: name.into(), mounts: ids.len() });
        }
        let backend = AnyBackend::for_spec(&rec.spec);
        if self.is_mounted(name, &rec.spec)? {
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

    /// Mounts `name` for `id`; also says whether `id` was added (`false`: it was held already,
    /// so whoever added it owns it and a late Mount's undo must leave it).
    pub(super) fn mount(&self, name: &str, id: &str) -> Result<(PathBuf, bool)> {
        let (rec, restoring) =
            self.store.get_volume_restoring(name)?.ok_or_else(|| Error::NotFound { volume: name.into() })?;
        // A container may not start on a volume whose data is being replaced (it would see
        // half a tree, and its writes could be swapped away); the restore's own mounts may.
        if !id.starts_with("voltool-") && restoring {
            return Err(Error::Restoring { volume: name.to_owned() });
        }
        let mp = self.layout.mountpoint(name);
        let backend = AnyBackend::for_spec(&rec.spec);
        // One look at the kernel per call: it is the hot path of every container start.
        let mut mounted = self.is_mounted(name, &rec.spec)?;
        if mounted && !backend.is_alive(&self.host, &self.layout, name) {
            // A userspace NFS mount left by an earlier run of the daemon: its server is gone.
            backend.unmount(&self.host, &self.layout, name)?;
            tracing::warn!(volume = name, "replaced a dead userspace nfs mount");
            mounted = false;
        }
        if mounted {
            return match self.store.add_mount_id(name, id) {
                Ok(added) => Ok((mp, added)),
                Err(e) => {
                    // Do not leave a mount nobody is recorded as holding.
                    if self.store.mount_ids(name).map(|ids| ids.is_empty()).unwrap_or(false) {
                        let _ = backend.unmount(&self.host, &self.layout, name);
                    }
                    Err(e.into())
                }
            };
        }
        if let Err(e) = self.mount_backend(name, &rec.spec, &backend) {
            // IDs held on a mount that is gone are stale whether or not this one worked.
            match self.store.clear_mount_ids(name) {
                Ok(stale) if stale > 0 => {
                    tracing::warn!(volume = name, stale, "mount vanished; dropped stale mount IDs")
                }
                _ => {}
            }
            return Err(e);
        }
        // The stale IDs go and this one comes in the same commit.
        match self.store.replace_mount_ids(name, id) {
            Ok(stale) => {
                if stale > 0 {
                    tracing::warn!(volume = name, stale, "mount vanished; dropped stale mount IDs and remounted");
                }
                tracing::info!(volume = name, mountpoint = %mp.display(), "mounted");
                Ok((mp, true))
            }
            Err(e) => {
                // Nobody is recorded as holding the new mount (the stale IDs held the old).
                let _ = backend.unmount(&self.host, &self.layout, name);
                Err(e.into())
            }
        }
    }

    /// The backend's mount, with the password of a CIFS volume's secret.
    fn mount_backend(&self, name: &str, spec: &VolumeSpec, backend: &AnyBackend) -> Result<()> {
        let password = match spec.cifs.as_ref().and_then(|t| t.secret.as_ref().map(|s| (s, &t.host))) {
            // Only to a server the secret is bound to (an unbound one is bound now).
            Some((secret, server)) => Some(
                self.secrets
                    .read_for(secret, server)
                    .map_err(|source| Error::Secret { volume: name.into(), source })
                    .map(|v| String::from_utf8_lossy(&v).into_owned())?,
            ),
            None => None,
        };
        backend.mount(&self.host, &self.layout, name, spec, password.as_deref())
    }

    pub(super) fn resize(&self, name: &str, bytes: u64, raw: String) -> Result<()> {
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

    pub(super) fn unmount(&self, name: &str, id: &str) -> Result<()> {
        let rec = self.record(name)?;
        let remaining = self.store.remove_mount_id(name, id)?;
        if remaining == 0 && self.is_mounted(name, &rec.spec)? {
            let outcome = AnyBackend::for_spec(&rec.spec).unmount(&self.host, &self.layout, name)?;
            tracing::info!(volume = name, ?outcome, "unmounted");
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
