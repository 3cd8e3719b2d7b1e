//! Restores in flight: which volume, which restore (its nonce names its staging directories)
//! and the phase of its swap. Kept here, not in the volume, so that what a container does
//! inside the volume cannot change what the daemon does at the next start.

use rusqlite::params;

use super::{Store, StoreError};

/// A restore the daemon had in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreInFlight {
    pub volume: String,
    /// Empty for a restore recorded by a voltool before phases were kept here.
    pub nonce: String,
    /// A `voltool_restore::staged::Phase` name; empty before the restore began.
    pub phase: String,
}

impl Store {
    /// Records the phase of restore `nonce` into `volume` (the row [`Store::set_restoring`]
    /// made).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn set_restore_phase(&self, volume: &str, nonce: &str, phase: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("UPDATE restores SET nonce = ?2, phase = ?3 WHERE volume = ?1", params![volume, nonce, phase])
            .map_err(self.err())?;
        Ok(())
    }

    /// Every restore in flight, by volume.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn restores_in_flight(&self) -> Result<Vec<RestoreInFlight>, StoreError> {
        let conn = self.reader()?;
        let mut stmt =
            conn.prepare_cached("SELECT volume, nonce, phase FROM restores ORDER BY volume").map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok(RestoreInFlight { volume: r.get(0)?, nonce: r.get(1)?, phase: r.get(2)? }))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Whether a restore into `volume` is in flight.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn is_restoring(&self, volume: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .reader()?
            .prepare_cached("SELECT COUNT(*) FROM restores WHERE volume = ?1")
            .and_then(|mut s| s.query_row([volume], |r| r.get(0)))
            .map_err(self.err())?;
        Ok(n > 0)
    }
}
