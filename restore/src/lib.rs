//! # voltool-restore
//!
//! ## Overview
//! Getting data back out of an archive safely: [`extract::open_archive`] recognises plain
//! tar, gzip and zstd streams by their first bytes (so the seed recipes' `tar czf` backups
//! and voltool's own `.tar.zst` both restore), [`extract::extract`] writes the entries into
//! an empty staging directory without ever writing outside it, and [`check_manifest`]
//! compares what was written with a voltool manifest (every entry's path, type and size, and
//! the content through the archive's sha256 or every file's).
//!
//!
//! ## Design
//! [`extract_archive`] reads (and hashes) the archive on one thread, decompresses on a second
//! and writes and finishes file contents on a third while the calling thread parses, checks
//! paths and creates (see the `pipeline` module); buffers are bounded and recycled, so memory
//! does not grow with the archive.
//!
//! [`staged::restore_staged`] extracts into a fresh directory on the volume's own filesystem,
//! checks the result, and only then swaps it in, so a failed restore leaves the volume as it
//! was; the swap's phase is kept by the caller ([`staged::Journal`]: the daemon's SQLite
//! state), never in the volume, and [`staged::recover`] finishes or undoes a swap a crash cut
//! short. Every path operation goes through directory descriptors
//! ([`voltool_runtime::fsat`]): containers may write into the volume while it runs.
//! [`staged::restore_into`] and [`staged::recover_root`] do the same from the volume's mount
//! point, a restore bounded by what [`staged::Reserve`] leaves free on the filesystem; the
//! caller keeps only its journal and what it checks the result against.
//!
//! ## Boundaries
//! Owns extraction and the staged swap. It must not know volumes, the catalog or HTTP: which
//! archive to restore, into which volume, and the journal that records a swap's phase in
//! SQLite are `voltool-daemon`'s (through [`staged::Journal`]).
//!
//! ## Limitations
//! GNU sparse entries are refused; ACLs come back only as their xattrs.

pub mod error;
pub mod extract;
mod pipeline;
pub mod staged;

pub use error::RestoreError;
pub use extract::{
    ArchiveDigest, ChainLink, Compression, ExtractOptions, ExtractReport, Keep, Space, Written, extract,
    extract_archive, extract_archive_into, extract_chain_into, open_archive,
};

use voltool_backup::{EntryKind, Manifest};

/// Checks an extraction against a voltool manifest: the same paths, kinds and, for files,
/// sizes; and the content: the archive's size and sha256 against the ones the manifest
/// records, when the extraction hashed the archive ([`ExtractOptions::hash_archive`]: every
/// byte of every file, header and link at once), else every file's sha256
/// ([`ExtractOptions::hash_files`]). An extraction that hashed neither does not pass.
///
/// The two content checks are equivalent: the manifest's file digests are taken from the
/// bytes written into the archive, in the same pass that computes the archive's digest.
///
/// # Errors
/// [`RestoreError::Manifest`] naming the first difference.
pub fn check_manifest(report: &ExtractReport, manifest: &Manifest) -> Result<(), RestoreError> {
    check_entries(report, manifest, false)
}

/// [`check_manifest`] for the tree an incremental chain made ([`extract_chain_into`], which
/// checked every link's archive digest): the final link's manifest lists the whole tree.
///
/// # Errors
/// [`RestoreError::Manifest`] naming the first difference.
pub fn check_chain_manifest(report: &ExtractReport, manifest: &Manifest) -> Result<(), RestoreError> {
    check_entries(report, manifest, true)
}

/// Checks a restore of some entries of a backup (`restore --path`): exactly `entries` were
/// made, each file with the manifest's size and sha256 ([`ExtractOptions::hash_files`]).
///
/// # Errors
/// [`RestoreError::Manifest`] naming the first difference.
pub fn check_selection(report: &ExtractReport, entries: &[voltool_backup::Entry]) -> Result<(), RestoreError> {
    check_list(report, entries, None)
}

fn check_entries(report: &ExtractReport, manifest: &Manifest, links_checked: bool) -> Result<(), RestoreError> {
    check_list(report, &manifest.entries, Some((manifest, links_checked)))
}

/// `whole`: the manifest whose archive digest may vouch for the content, and whether the
/// links of a chain were checked already.
fn check_list(
    report: &ExtractReport,
    entries: &[voltool_backup::Entry],
    whole: Option<(&Manifest, bool)>,
) -> Result<(), RestoreError> {
    let bad = |m: String| Err(RestoreError::Manifest(m));
    let Some((manifest, links_checked)) = whole else {
        return check_each(report, entries, false);
    };
    let whole_archive = match &report.archive {
        _ if links_checked => true,
        Some(a) if a.size == manifest.archive_size && a.sha256 == manifest.archive_sha256 => true,
        Some(a) => {
            return bad(format!(
                "the archive's sha256 {} ({} bytes) does not match the manifest's {} ({} bytes): it was changed or damaged after the backup (`voltool backup verify` names the first bad entry)",
                a.sha256, a.size, manifest.archive_sha256, manifest.archive_size
            ));
        }
        None => false,
    };
    check_each(report, entries, whole_archive)
}

fn check_each(
    report: &ExtractReport,
    entries: &[voltool_backup::Entry],
    whole_archive: bool,
) -> Result<(), RestoreError> {
    let bad = |m: String| Err(RestoreError::Manifest(m));
    if report.written.len() != entries.len() {
        return bad(format!("{} entries restored, the manifest lists {}", report.written.len(), entries.len()));
    }
    for e in entries {
        let Some(w) = report.written.get(&e.path) else {
            return bad(format!("{:?} is in the manifest but not in the archive", e.path));
        };
        let ok = match (e.kind, w) {
            (EntryKind::File, Written::File { size, sha256, .. }) => {
                *size == e.size
                    && (whole_archive || (!sha256.is_empty() && Some(sha256.as_str()) == e.sha256.as_deref()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A small tree archived by the backup engine, its manifest, and a fresh staging dir.
    fn backup() -> (Vec<u8>, Manifest, tempfile::TempDir) {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/a.txt"), b"alpha\n").unwrap();
        std::fs::write(src.path().join("big"), vec![5u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("d/a.txt", src.path().join("link")).unwrap();
        let (archive, m) = archive_of(src.path(), &voltool_backup::ArchiveOptions::default());
        (archive, m, tempfile::tempdir().unwrap())
    }

    /// The backup engine's archive of `root` and its manifest.
    fn archive_of(root: &std::path::Path, opts: &voltool_backup::ArchiveOptions) -> (Vec<u8>, Manifest) {
        let mut archive = Vec::new();
        let summary = voltool_backup::write_archive(root, &mut archive, opts).unwrap();
        let id = "v-20260101T000000Z-abcdef";
        let m = Manifest::new(id, "v", &BTreeMap::new(), summary, time::OffsetDateTime::UNIX_EPOCH).unwrap();
        (archive, m)
    }

    fn extract_with(archive: &[u8], hash_archive: bool, hash_files: bool) -> ExtractReport {
        let dest = tempfile::tempdir().unwrap();
        let opts = ExtractOptions { hash_archive, hash_files, ..ExtractOptions::default() };
        extract_archive(std::io::Cursor::new(archive.to_vec()), dest.path(), &opts).unwrap()
    }

    #[test]
    fn the_archive_digest_or_every_file_digest_checks_the_content_and_neither_does_not_pass() {
        let (archive, m, _) = backup();
        let by_archive = extract_with(&archive, true, false);
        assert_eq!(by_archive.archive.as_ref().map(|a| a.sha256.as_str()), Some(m.archive_sha256.as_str()));
        check_manifest(&by_archive, &m).unwrap();
        let by_files = extract_with(&archive, false, true);
        assert!(by_files.archive.is_none());
        check_manifest(&by_files, &m).unwrap();
        let neither = extract_with(&archive, false, false);
        let e = check_manifest(&neither, &m).unwrap_err().to_string();
        assert!(e.contains("differs from the manifest"), "{e}");
    }

    #[test]
    fn a_manifest_that_disagrees_is_named() {
        let (archive, m, _) = backup();
        let by_archive = extract_with(&archive, true, false);
        let mut other = m.clone();
        other.archive_sha256 = "0".repeat(64);
        let e = check_manifest(&by_archive, &other).unwrap_err().to_string();
        assert!(e.contains("does not match the manifest's") && e.contains(&"0".repeat(64)), "{e}");
        let mut other = m.clone();
        other.archive_size += 1;
        assert!(check_manifest(&by_archive, &other).is_err(), "the size counts too");
        // File by file: a wrong digest or size is named.
        let by_files = extract_with(&archive, false, true);
        let mut other = m.clone();
        let i = other.entries.iter().position(|e| e.path == "big").unwrap();
        other.entries[i].sha256 = Some("1".repeat(64));
        let e = check_manifest(&by_files, &other).unwrap_err().to_string();
        assert!(e.contains("\"big\""), "{e}");
        let mut other = m.clone();
        other.entries[i].size -= 1;
        let e = check_manifest(&by_archive, &other).unwrap_err().to_string();
        assert!(e.contains("\"big\""), "a size differs even when the archive digest matches: {e}");
        // An entry missing from the archive, whatever the digests say.
        let mut other = m;
        other.entries[i].path = "elsewhere".into();
        assert!(check_manifest(&by_archive, &other).unwrap_err().to_string().contains("elsewhere"));
    }

    #[test]
    fn the_archive_digest_covers_the_whole_stream_even_past_the_end_of_the_tar() {
        // 8 MiB of incompressible bytes after the tar's end blocks (GNU tar ignores them): the
        // extraction is over long before the reading thread reached them.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"data"[..]).unwrap();
        let mut tar = b.into_inner().unwrap();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        tar.extend((0..8 << 20).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        let z = zstd::encode_all(&tar[..], 1).unwrap();
        assert!(z.len() > 8 << 20, "stays large compressed");
        let report = extract_with(&z, true, false);
        assert_eq!(report.files, 1);
        let a = report.archive.expect("a digest");
        assert_eq!((a.size, a.sha256), (z.len() as u64, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&z))));
        // A damaged frame after the tar's end still fails the extraction.
        let mut cut = z.clone();
        cut.truncate(z.len() - 100);
        let dest = tempfile::tempdir().unwrap();
        let opts = ExtractOptions { hash_archive: true, ..ExtractOptions::default() };
        let e = extract_archive(std::io::Cursor::new(cut), dest.path(), &opts).unwrap_err();
        assert!(e.to_string().contains("after the last entry"), "{e}");
    }

    #[test]
    fn modes_and_owners_come_back_whether_creating_gave_them_or_not() {
        use std::os::unix::fs::MetadataExt;
        let root = nix::unistd::geteuid().is_root();
        let mut b = tar::Builder::new(Vec::new());
        let files = [("a", 0o644, 0), ("b", 0o666, 0), ("c", 0o4755, 0), ("d", 0o600, 1234), ("e", 0o2770, 0)];
        for (name, mode, uid) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(1);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_cksum();
            b.append_data(&mut h, name, &b"x"[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let dest = tempfile::tempdir().unwrap();
        // As for an archive of this daemon's own catalog: privileges kept.
        let opts = ExtractOptions { same_owner: root, preserve_privileges: true, ..ExtractOptions::default() };
        extract(&tar[..], dest.path(), &opts).unwrap();
        for (name, mode, uid) in files {
            let m = std::fs::metadata(dest.path().join(name)).unwrap();
            assert_eq!(m.mode() & 0o7777, mode, "{name}");
            if root {
                assert_eq!((u64::from(m.uid()), u64::from(m.gid())), (uid, uid), "{name}");
            }
        }
        // A foreign archive (the default): setuid and setgid bits are dropped, the rest kept.
        let dest = tempfile::tempdir().unwrap();
        extract(&tar[..], dest.path(), &ExtractOptions { same_owner: root, ..ExtractOptions::default() }).unwrap();
        for (name, mode, _) in files {
            let m = std::fs::metadata(dest.path().join(name)).unwrap();
            assert_eq!(m.mode() & 0o7777, mode & 0o1777, "{name}");
        }
    }

    #[test]
    fn a_fifo_and_a_symlink_keep_their_mtimes() {
        use std::os::unix::fs::MetadataExt;
        let src = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&src.path().join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
        std::os::unix::fs::symlink("pipe", src.path().join("link")).unwrap();
        let old = nix::sys::time::TimeSpec::new(1_000_000_000, 123_456_789);
        for name in ["pipe", "link"] {
            let flag = nix::sys::stat::UtimensatFlags::NoFollowSymlink;
            nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &src.path().join(name), &old, &old, flag).unwrap();
        }
        let (archive, _) = archive_of(src.path(), &voltool_backup::ArchiveOptions::default());
        let dest = tempfile::tempdir().unwrap();
        extract_archive(std::io::Cursor::new(archive), dest.path(), &ExtractOptions::default()).unwrap();
        for name in ["pipe", "link"] {
            let m = std::fs::symlink_metadata(dest.path().join(name)).unwrap();
            assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 123_456_789), "{name}");
        }
    }

    #[test]
    fn a_manifest_without_file_digests_is_checked_through_the_archive_digest_only() {
        // As a migration's sender writes it (ArchiveOptions::hash_files off).
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), vec![3u8; 70_000]).unwrap();
        let opts = voltool_backup::ArchiveOptions { hash_files: false, ..voltool_backup::ArchiveOptions::default() };
        let (archive, m) = archive_of(src.path(), &opts);
        assert!(m.entries.iter().all(|e| e.sha256.is_none()), "no file digests");
        check_manifest(&extract_with(&archive, true, false), &m).unwrap();
        // Without the archive's digest nothing vouches for the content: refused.
        assert!(check_manifest(&extract_with(&archive, false, true), &m).is_err());
        // A damaged archive: the digest differs.
        let mut other = m;
        other.archive_sha256 = "f".repeat(64);
        assert!(check_manifest(&extract_with(&archive, true, false), &other).is_err());
    }
}
