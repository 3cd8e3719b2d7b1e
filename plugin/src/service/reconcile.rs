//! Reconciliation at start: the persisted Mount IDs brought in line with the kernel's mount
//! table, which is the truth after a daemon restart or a host reboot.

use super::inner::Inner;
use crate::backend::AnyBackend;
use crate::error::Result;

impl Inner {
    /// Brings the persisted Mount IDs in line with the kernel: IDs of a volume whose mount
    /// is gone are dropped (the next Mount remounts it), and a mount nobody holds an ID for
    /// is unmounted.
    ///
    /// Also undoes what a daemon killed during a backup's snapshot left: an image volume's
    /// filesystem still frozen (thawed here; thawing one that is not frozen does nothing) and
    /// snapshot copies (unmounted and deleted).
    pub(super) fn reconcile(&self) -> Result<()> {
        AnyBackend::drop_stale_snapshots(&self.host, &self.layout);
        for rec in self.store.list_volumes()? {
            let ids = self.store.mount_ids(&rec.name)?;
            let backend = AnyBackend::for_spec(&rec.spec);
            if matches!(backend, AnyBackend::Image(_))
                && self.is_mounted(&rec.name, &rec.spec)?
                && let Err(e) = self.host.snapshots.thaw(&self.layout.mountpoint(&rec.name))
            {
                tracing::warn!(volume = rec.name, error = %e, "could not thaw the volume's filesystem");
            }
            if self.is_mounted(&rec.name, &rec.spec)? && !backend.is_alive(&self.host, &self.layout, &rec.name) {
                backend.unmount(&self.host, &self.layout, &rec.name)?;
                tracing::warn!(
                    volume = rec.name,
                    "unmounted a userspace nfs mount whose session died with the last run"
                );
            }
            let mounted = self.is_mounted(&rec.name, &rec.spec)?;
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
