//! The daemon's side of a staged restore: the volume mounted for it and flagged in the state
//! database while it runs ([`Restores::land`]), its journal in that database
//! ([`StoreJournal`]), reading `[restore] reserve` ([`parse_reserve`]), and recovery at start
//! ([`Restores::recover_interrupted`]). The staging, the swap, the reserve's arithmetic and
//! the recovery of one volume are [`voltool_restore::staged`]; what is here is the glue to the
//! volume service and its store.

use std::path::PathBuf;

use voltool_restore::staged::{Journal, JournalError, Phase, Reserve};
use voltool_restore::{ExtractOptions, ExtractReport, RestoreError};

use super::{MOUNT_ID_PREFIX, Restores, nonce, refuse_if_held, restore_err};
use crate::backups::{Clock, SystemClock};
use crate::error::{Error, Result};
use voltool_plugin::service::VolumeService;

/// The journal of one restore: its phase in the `restores` row of its volume (SQLite, synced
/// before `record` returns), never in a file inside the volume.
struct StoreJournal {
    svc: VolumeService,
    volume: String,
    nonce: String,
}

impl Journal for StoreJournal {
    fn record(&self, phase: Phase) -> std::result::Result<(), JournalError> {
        self.svc
            .store()
            .set_restore_phase(&self.volume, &self.nonce, phase.as_str())
            .map_err(|e| JournalError(Box::new(e)))
    }
}

/// A volume mounted for a restore and flagged restoring (Mounts refused): what the blocking
/// part of a restore works with (see [`Restores::land`]).
pub(super) struct Landing {
    svc: VolumeService,
    pub(super) volume: String,
    /// The daemon's own mount point of the volume.
    pub(super) root: PathBuf,
    /// The volume's size limit, when it has one.
    pub(super) max_bytes: Option<u64>,
    reserve: Reserve,
}

impl Landing {
    /// Refuses the volume when containers hold it (see [`refuse_if_held`]).
    ///
    /// # Errors
    /// [`Error::Restore`] saying how many mounts hold it; store errors.
    pub(super) fn refuse_if_held(&self) -> Result<()> {
        refuse_if_held(&self.svc, &self.volume)
    }

    /// Restores some paths of a backup into the volume ([`voltool_restore::staged::restore_paths_into`]).
    ///
    /// # Errors
    /// [`Error::Restore`] with the extraction's, the check's or the moves' error.
    pub(super) fn restore_paths(
        &self,
        links: Vec<voltool_restore::ChainLink>,
        sel: &voltool_restore::staged::Selection<'_>,
        check: &mut dyn FnMut(&ExtractReport) -> std::result::Result<(), RestoreError>,
        opts: &ExtractOptions,
    ) -> Result<ExtractReport> {
        voltool_restore::staged::restore_paths_into(&self.root, &nonce(), links, sel, check, opts, self.reserve)
            .map_err(|e| restore_err(&self.volume, e))
    }

    /// Extracts `input` into a staging directory in the volume's root, runs `check`, and swaps
    /// it in, by descriptors ([`voltool_restore::staged::restore_into`]). The volume's
    /// `restores` row keeps the phase. The extraction may take what the reserve leaves of the
    /// filesystem.
    ///
    /// # Errors
    /// [`Error::Restore`] with the extraction's, the check's or the swap's error; the volume is
    /// unchanged then.
    pub(super) fn restore(
        &self,
        input: impl Into<voltool_restore::staged::Source>,
        check: &mut dyn FnMut(&ExtractReport) -> std::result::Result<(), RestoreError>,
        opts: &ExtractOptions,
    ) -> Result<ExtractReport> {
        let journal = StoreJournal { svc: self.svc.clone(), volume: self.volume.clone(), nonce: nonce() };
        voltool_restore::staged::restore_into(&self.root, &journal.nonce, &journal, input, check, opts, self.reserve)
            .map_err(|e| restore_err(&self.volume, e))
    }
}

impl Restores {
    /// Runs `work` on a blocking thread with `volume` mounted for the daemon and flagged
    /// restoring (container Mounts are refused meanwhile); the flag is cleared and the mount
    /// released after, whatever happened, and a volume `created` for this restore is removed
    /// again when it failed. `what` names the restore in the log.
    ///
    /// # Errors
    /// The volume service's and store's errors, `work`'s, [`Error::Internal`] when it panicked.
    pub(super) async fn land<F>(&self, volume: &str, created: bool, what: &str, work: F) -> Result<ExtractReport>
    where
        F: FnOnce(&Landing) -> Result<ExtractReport> + Send + 'static,
    {
        let record = self.svc.record(volume).await?;
        let mount_id = format!("{MOUNT_ID_PREFIX}{}", nonce());
        let root = self.svc.mount(volume, &mount_id).await?;
        // Dated as the catalog dates things (the one RFC 3339 helper, the system clock).
        self.svc.store().set_restoring(volume, true, &SystemClock.now_rfc3339())?;
        let landing = Landing {
            svc: self.svc.clone(),
            volume: volume.to_owned(),
            root,
            max_bytes: record.spec.size,
            reserve: self.reserve,
        };
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || span.in_scope(|| work(&landing)))
            .await
            .map_err(|e| Error::Internal(e.to_string()))
            .and_then(|r| r);
        self.svc.store().set_restoring(volume, false, "")?;
        if let Err(e) = self.svc.unmount(volume, &mount_id).await {
            tracing::warn!(volume, error = %e, "could not release the {what}'s mount");
        }
        if let Err(e) = &result
            && created
        {
            // A volume this restore made and could not fill goes again.
            tracing::warn!(volume, error = %e, "{what} failed; removing the volume it created");
            let _ = self.svc.remove(volume, true).await;
        }
        result
    }

    /// At start: finishes or undoes restores a killed daemon left in flight, by the phase
    /// their journal recorded, and removes any other leftover of a restore (see
    /// [`voltool_restore::staged::recover_root`]).
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
            let r = tokio::task::spawn_blocking(move || {
                // No nonce: the restore had not begun, or an older voltool kept its phase in the
                // volume (a marker the leftovers' recovery reads).
                let interrupted =
                    (!flight.nonce.is_empty()).then(|| (flight.nonce.as_str(), Phase::parse(&flight.phase)));
                voltool_restore::staged::recover_root(&root, interrupted)
            })
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
}

/// Parses `[restore] reserve`: `5%` (a share of the filesystem, 0 to 50) or a size (`1GiB`,
/// `512M`, bytes, in the volume options' size grammar).
///
/// # Errors
/// [`Error::BadRequest`] naming the value.
pub fn parse_reserve(s: &str) -> Result<Reserve> {
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 =
            p.trim().parse().map_err(|_| Error::BadRequest(format!("restore reserve {s:?}: not a percentage")))?;
        if !(0.0..=50.0).contains(&v) {
            return Err(Error::BadRequest(format!("restore reserve {s:?}: a percentage from 0 to 50")));
        }
        return Ok(Reserve::Share { fraction: v / 100.0, cap: None });
    }
    voltool_plugin::options::parse_size(t)
        .map(Reserve::Bytes)
        .map_err(|e| Error::BadRequest(format!("restore reserve {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_is_a_share_or_a_size() {
        assert_eq!(parse_reserve("10%").ok(), Some(Reserve::Share { fraction: 0.1, cap: None }));
        assert_eq!(parse_reserve(" 1024 ").ok(), Some(Reserve::Bytes(1024)));
        for bad in ["lots", "60%", "x%", "-1%"] {
            let e = parse_reserve(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("restore reserve") && e.contains(bad), "{bad}: {e}");
        }
    }
}
