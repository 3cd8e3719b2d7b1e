//! The daemon's side of a staged restore: its journal in the state database, the room it may
//! take on the volume's filesystem (`[restore] reserve`), the check against the catalog, and
//! recovery at start. The staging and swap themselves are [`voltool_restore::staged`].

use std::io::Read;
use std::path::Path;

use voltool_restore::staged::{Journal, JournalError, Phase};
use voltool_restore::{ExtractOptions, ExtractReport, RestoreError, Space};
use voltool_runtime::fsat::Dir;

use crate::error::{Error, Result};
use voltool_plugin::service::VolumeService;

/// How a restore's result is checked before the swap.
#[derive(Debug)]
pub(super) enum Verify {
    /// Against the backup's manifest (every byte through the archive's sha256 it records;
    /// the manifest itself held to the catalog's record when there is one).
    Manifest(super::PendingManifest),
    /// Against a manifest already read (one the CLI sent ahead of the archive).
    Parsed(Box<voltool_backup::Manifest>),
    /// Against the archive sha256 the catalog recorded when the backup was made (its manifest
    /// object is missing).
    Catalog { sha256: String },
}

impl Verify {
    /// What the outcome says the restore was checked against.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Verify::Manifest(_) | Verify::Parsed(_) => "manifest",
            Verify::Catalog { .. } => "catalog",
        }
    }
}

/// The archive as read must be the one the catalog recorded.
pub(super) fn check_catalog_digest(rep: &ExtractReport, want: &str) -> std::result::Result<(), RestoreError> {
    match &rep.archive {
        Some(d) if d.sha256 == want => Ok(()),
        Some(d) => Err(RestoreError::Manifest(format!(
            "the archive's sha256 is {}, the catalog recorded {want} when the backup was made: the backup was changed since",
            d.sha256
        ))),
        None => Err(RestoreError::Manifest("the archive's sha256 was not computed".into())),
    }
}

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

/// Extracts `input` into a staging directory in the volume's root (the daemon's own
/// mountpoint `root`), runs `check`, and swaps it in, by descriptors (see
/// [`voltool_restore::staged`]). The volume's `restores` row (made by the caller) keeps the
/// phase. The extraction may take what `reserve` leaves of the filesystem.
///
/// # Errors
/// The extraction's, the check's or the swap's error; the volume is unchanged then.
pub(super) fn restore_staged(
    svc: VolumeService,
    volume: &str,
    root: &Path,
    input: Box<dyn Read + Send>,
    check: &mut dyn FnMut(&ExtractReport) -> std::result::Result<(), RestoreError>,
    opts: &mut ExtractOptions,
    reserve: Reserve,
) -> std::result::Result<ExtractReport, RestoreError> {
    let dir = Dir::open(root).map_err(|e| RestoreError::Write(format!("the volume's root: {e}")))?;
    opts.space = Some(
        reserve
            .space(&dir, opts.max_bytes.is_some())
            .map_err(|e| RestoreError::Write(format!("the free space of the volume's filesystem: {e}")))?,
    );
    let journal = StoreJournal { svc, volume: volume.to_owned(), nonce: super::nonce() };
    voltool_restore::staged::restore_staged(&dir, &journal.nonce, &journal, input, check, opts)
}

/// What a restore leaves free on the filesystem it writes to (`[restore] reserve`): a share
/// of its size or a number of bytes; inodes always keep the same share (5% by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reserve {
    /// A share of the filesystem's size (and of its inodes), at most `cap` bytes.
    Share {
        fraction: f64,
        cap: Option<u64>,
    },
    Bytes(u64),
}

impl Default for Reserve {
    /// 5% of the filesystem, at most 1 GiB (and 5% of its inodes).
    fn default() -> Self {
        Reserve::Share { fraction: 0.05, cap: Some(1 << 30) }
    }
}

impl Reserve {
    /// Parses `5%` or a size (`1GiB`, `512M`, bytes).
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming the value.
    pub fn parse(s: &str) -> Result<Self> {
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

    /// The room a restore into `root`'s filesystem may take: its free bytes and inodes less
    /// the reserve. `own_limit`: the volume has a size limit of its own (an image, a project
    /// quota, tmpfs), which bounds its bytes already: then only what is free is counted.
    ///
    /// # Errors
    /// The `fstatvfs(2)` error.
    pub fn space(self, root: &Dir, own_limit: bool) -> std::io::Result<Space> {
        let st = nix::sys::statvfs::fstatvfs(root).map_err(std::io::Error::from)?;
        let frsize = st.fragment_size().max(1);
        let (total, free) = (st.blocks().saturating_mul(frsize), st.blocks_available().saturating_mul(frsize));
        let (itotal, ifree) = (st.files(), st.files_available());
        let (keep, ikeep) = match self {
            _ if own_limit => (0, 0),
            Reserve::Share { fraction, cap } => {
                let b = (total as f64 * fraction) as u64;
                (cap.map_or(b, |c| b.min(c)), (itotal as f64 * fraction) as u64)
            }
            Reserve::Bytes(b) => (b, (itotal as f64 * 0.05) as u64),
        };
        // Filesystems without an inode count (btrfs says 0) are bounded by bytes alone.
        let inodes = if itotal == 0 { u64::MAX } else { ifree.saturating_sub(ikeep) };
        Ok(Space { bytes: free.saturating_sub(keep), inodes })
    }
}

/// At start: what a restore interrupted in `flight` left in its volume's root `root` is
/// finished or undone (see [`voltool_restore::staged::recover`]), then any other leftover of
/// a restore (also one of an older voltool) removed. Returns what was done, for the log.
///
/// # Errors
/// [`RestoreError::Write`].
pub(super) fn recover_in(
    root: &Path,
    flight: &voltool_plugin::store::RestoreInFlight,
) -> std::result::Result<Vec<String>, RestoreError> {
    let dir = Dir::open(root).map_err(|e| RestoreError::Write(format!("the volume's root: {e}")))?;
    let mut did = Vec::new();
    if !flight.nonce.is_empty() {
        // No phase yet: recorded before the restore made anything.
        let phase = Phase::parse(&flight.phase).unwrap_or(Phase::Extracting);
        let r = voltool_restore::staged::recover(&dir, &flight.nonce, phase)?;
        did.push(format!("{r:?} restore {} (interrupted in phase {})", flight.nonce, phase.as_str()));
    }
    did.extend(voltool_restore::staged::recover_leftovers(&dir)?);
    Ok(did)
}
