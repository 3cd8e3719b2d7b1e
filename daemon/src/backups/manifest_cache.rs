//! The last encrypted manifest of each (volume, target), in plain text in the state dir
//! (`<state>/manifests/`), so the next incremental run compares the tree with it without
//! the private key: a host that only takes backups needs only public keys (SPEC §8). The
//! copy holds what the volume itself holds (names, sizes, times, sha256s) and lives in the
//! root-only state dir beside the volume's data; it is used only for the backup it names,
//! whose archive sha256 must be the one the catalog recorded; anything else (missing,
//! another backup, unparsable) falls back to the target's copy, which needs the identity.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use voltool_backup::{EntryList, Manifest, ManifestLimits};
use voltool_plugin::store::BackupRow;

use super::MANIFEST_LIMIT;

/// The cache file of `volume`'s backups to `target_url`.
fn path(state_dir: &Path, volume: &str, target_url: &str) -> PathBuf {
    let t = hex::encode(&Sha256::digest(target_url.as_bytes())[..8]);
    state_dir.join("manifests").join(format!("{volume}@{t}.manifest.json"))
}

/// Keeps the manifest of the encrypted backup `row` (replacing the one before it), written
/// whole before it takes the name. A failure is logged, not the run's: the next incremental
/// reads the target's copy instead.
pub(super) fn keep(state_dir: &Path, row: &BackupRow, m: &Manifest, entries: &EntryList) {
    let dest = path(state_dir, &row.volume, &row.target_url);
    let write = || -> std::io::Result<()> {
        let dir = dest.parent().unwrap_or(state_dir);
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        {
            let mut out = BufWriter::with_capacity(64 << 10, tmp.as_file_mut());
            m.write_json(entries, &mut out).map_err(std::io::Error::other)?;
            out.flush()?;
        }
        tmp.persist(&dest).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!(backup = row.id, path = %dest.display(), error = %e, "could not keep the manifest for the next incremental");
    }
}

/// The kept manifest of `parent` (an encrypted backup of `volume` to its target), when it is
/// that backup's and matches the catalog.
pub(super) fn read(state_dir: &Path, parent: &BackupRow) -> Option<Manifest> {
    let p = path(state_dir, &parent.volume, &parent.target_url);
    let file = fs::File::open(&p).ok()?;
    let m = Manifest::from_reader(&p.display().to_string(), file, ManifestLimits { bytes: MANIFEST_LIMIT }).ok()?;
    (m.id == parent.id && parent.sha256.as_deref() == Some(m.archive_sha256.as_str())).then_some(m)
}
