//! # voltool-restore
//!
//! ## Overview
//! Getting data back out of an archive safely: [`extract::open_archive`] recognises plain
//! tar, gzip and zstd streams by their first bytes (so the seed recipes' `tar czf` backups
//! and voltool's own `.tar.zst` both restore), [`extract::extract`] writes the entries into
//! an empty staging directory without ever writing outside it, and [`check_manifest`]
//! compares what was written with a voltool manifest (every file's size and sha256).
//!
//!
//! ## Design
//! [`extract_archive`] decompresses on one thread and writes, hashes and finishes file
//! contents on another while the calling thread parses, checks paths and creates (see the
//! `pipeline` module); buffers are bounded and recycled, so memory does not grow with the
//! archive.
//!
//! The caller (the daemon) owns staging and swapping: it extracts into a fresh directory on
//! the volume's own filesystem, checks the result, and only then swaps it in, so a failed
//! restore leaves the volume as it was.
//!
//! ## Limitations
//! GNU sparse entries are refused; ACLs come back only as their xattrs.

pub mod error;
pub mod extract;
mod pipeline;

pub use error::RestoreError;
pub use extract::{Compression, ExtractOptions, ExtractReport, Written, extract, extract_archive, open_archive};

use voltool_backup::{EntryKind, Manifest};

/// Checks an extraction against a voltool manifest: the same paths, kinds and, for files,
/// sizes and sha256.
///
/// # Errors
/// [`RestoreError::Manifest`] naming the first difference.
pub fn check_manifest(report: &ExtractReport, manifest: &Manifest) -> Result<(), RestoreError> {
    let bad = |m: String| Err(RestoreError::Manifest(m));
    if report.written.len() != manifest.entries.len() {
        return bad(format!(
            "{} entries restored, the manifest lists {}",
            report.written.len(),
            manifest.entries.len()
        ));
    }
    for e in &manifest.entries {
        let Some(w) = report.written.get(&e.path) else {
            return bad(format!("{:?} is in the manifest but not in the archive", e.path));
        };
        let ok = match (e.kind, w) {
            (EntryKind::File, Written::File { size, sha256, .. }) => {
                *size == e.size && Some(sha256.as_str()) == e.sha256.as_deref()
            }
            (EntryKind::Dir, Written::Dir { .. }) | (EntryKind::Fifo, Written::Fifo) => true,
            (EntryKind::Symlink, Written::Symlink { target }) | (EntryKind::Hardlink, Written::Hardlink { target }) => {
                Some(target.as_str()) == e.target.as_deref()
            }
            _ => false,
        };
        if !ok {
            return bad(format!("{:?} differs from the manifest (type, size or sha256)", e.path));
        }
    }
    Ok(())
}
