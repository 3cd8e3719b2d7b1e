//! Verifying an archive against its manifest, streaming, without writing anything to disk.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::blocks::{self, BlockReader, InputDigest, hash_input};
use crate::error::BackupError;
use crate::manifest::{Entry, EntryKind, Manifest};
use crate::tarparse::{Header, Kind, TarReader};

/// What a successful verification checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries compared (all of the manifest's).
    pub entries: u64,
    /// Regular files whose content was hashed, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Size and sha256 of the compressed stream as read.
    pub archive_size: u64,
    pub archive_sha256: String,
}

enum Problem {
    Entry { entry: String, reason: String },
    Stream(String),
}

fn entry_problem(entry: &str, reason: impl Into<String>) -> Problem {
    Problem::Entry { entry: entry.to_owned(), reason: reason.into() }
}

/// Reads the whole archive from `input` and checks it against `manifest`: the compressed
/// stream's size and sha256, and every entry's type, mode, owner, mtime, size, link target and
/// (for files) content sha256. Also fails on entries missing from or extra to the manifest.
///
/// An entry-level mismatch is [`BackupError::Corrupt`] naming the first bad entry (with a note
/// when the archive's sha256 is also wrong); a damaged stream or a wrong archive sha256 is
/// [`BackupError::ArchiveCorrupt`] naming `ID.tar.zst`.
pub fn verify_archive(input: impl Read + Send, manifest: &Manifest) -> Result<VerifyReport, BackupError> {
    let archive = manifest.archive_file_name();
    let (outcome, raw) = check_stream(input, manifest);
    if let Some(source) = raw.error {
        return Err(BackupError::Read { path: PathBuf::from(&archive), source });
    }
    let size = raw.size;
    let sha = hex::encode(raw.sha256);
    let archive_problem = (sha != manifest.archive_sha256 || size != manifest.archive_size).then(|| {
        format!(
            "sha256 {sha} ({size} bytes) does not match the manifest's {} ({} bytes)",
            manifest.archive_sha256, manifest.archive_size
        )
    });
    match (outcome, archive_problem) {
        (Ok((files, bytes)), None) => Ok(VerifyReport {
            entries: manifest.entries.len() as u64,
            files,
            bytes,
            archive_size: size,
            archive_sha256: sha,
        }),
        (Ok(_), Some(reason)) => Err(BackupError::ArchiveCorrupt { archive, reason }),
        (Err(Problem::Entry { entry, mut reason }), also) => {
            if let Some(also) = also {
                reason.push_str(&format!("; archive {archive}: {also}"));
            }
            Err(BackupError::Corrupt { entry, reason })
        }
        (Err(Problem::Stream(mut reason)), also) => {
            if let Some(also) = also {
                reason.push_str(&format!("; {also}"));
            }
            Err(BackupError::ArchiveCorrupt { archive, reason })
        }
    }
}

/// Compressed bytes in existence at once (read ahead of the decoder).
const RAW_BLOCKS: usize = 4;
/// The most decoded bytes asked of zstd's streaming decoder in one call, where it is used
/// (archives of other tools or older ones, a damaged frame: see [`crate::frames`]). zstd drops
/// what a call decoded when the call ends in an error, so this bounds how much of the stream
/// before a damaged spot the checks never see; the single-threaded reader this replaces asked
/// for at most as much (the 8 KiB of a content copy), so a damaged stream is still pinned to
/// the same entry.
const DECODE_STEP: usize = 8 * 1024;

/// Reads, decodes and checks every entry; returns (files, content bytes) and the digest of
/// the compressed stream (all of it: what the decoder did not consume still belongs to the
/// archive's sha256).
///
/// The costly jobs each have threads of their own: a reading thread hashes the compressed
/// stream ([`crate::blocks::hash_input`]), this one walks the zstd frames and hands them to
/// decoding workers ([`crate::frames::decode`], one per CPU), and a checking thread parses the
/// tar and hashes every file's contents. The bytes travel in a few buffers, recycled
/// ([`crate::blocks`]): memory stays bounded and each side waits when the next falls behind.
/// When the checks stop at a problem, decoding stops too, and the reading thread still hashes
/// the rest.
fn check_stream(input: impl Read + Send, manifest: &Manifest) -> (Result<(u64, u64), Problem>, InputDigest) {
    let workers = crate::frames::default_workers();
    let (raw_tx, raw_rx) = blocks::channel(RAW_BLOCKS, crate::pipeline::BLOCK);
    let (tar_tx, tar_rx) = blocks::channel(workers + 2, crate::frames::FRAME);
    std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("verify-read".into())
            .spawn_scoped(s, move || hash_input(input, raw_tx, true));
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                let digest = InputDigest { size: 0, sha256: [0; 32], error: Some(e) };
                return (Err(Problem::Stream("cannot start the reading thread".into())), digest);
            }
        };
        let checker = std::thread::Builder::new()
            .name("verify-check".into())
            .spawn_scoped(s, move || check_entries(tar_rx, manifest));
        let outcome = match checker {
            Ok(checker) => {
                crate::frames::decode(raw_rx, &tar_tx, workers, DECODE_STEP);
                drop(tar_tx);
                checker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
            Err(e) => {
                drop(raw_rx);
                Err(Problem::Stream(format!("cannot start the checking thread: {e}")))
            }
        };
        let digest = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (outcome, digest)
    })
}

/// Parses the decoded tar stream and checks every entry; returns (files, content bytes).
fn check_entries(tar: BlockReader, manifest: &Manifest) -> Result<(u64, u64), Problem> {
    let mut ar = TarReader::new(tar);
    // The archive lists entries in the manifest's order (both are the walk's order): each is
    // looked for at the next position first, and in an index (built when first needed) only
    // when it is not there.
    let mut index: Option<HashMap<&str, usize>> = None;
    let mut next = 0usize;
    let mut seen = vec![false; manifest.entries.len()];
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut last: Option<usize> = None;
    let last_name = |last: Option<usize>| last.map_or("(start of archive)", |i| manifest.entries[i].path.as_str());
    loop {
        let header =
            ar.next_entry().map_err(|e| Problem::Stream(format!("damaged after entry {:?}: {e}", last_name(last))))?;
        let Some(header) = header else { break };
        let lossy = String::from_utf8_lossy(&header.path);
        let path = normalize(&lossy);
        let i = match manifest.entries.get(next) {
            Some(e) if e.path == path => next,
            _ => {
                let index = index.get_or_insert_with(|| {
                    manifest.entries.iter().enumerate().map(|(i, e)| (e.path.as_str(), i)).collect()
                });
                match index.get(path) {
                    Some(&i) => i,
                    None => return Err(entry_problem(path, "in the archive but not in the manifest")),
                }
            }
        };
        next = i + 1;
        last = Some(i);
        let path = manifest.entries[i].path.as_str();
        if std::mem::replace(&mut seen[i], true) {
            return Err(entry_problem(path, "appears twice in the archive"));
        }
        let expected = &manifest.entries[i];
        check_entry(&mut ar, &header, expected)?;
        if expected.kind == EntryKind::File {
            files += 1;
            bytes += expected.size;
        }
    }
    // Past the tar end-of-archive blocks: only zero padding may follow, and the zstd frame
    // (with its checksum) must decode to its end.
    let mut tar = ar.into_inner();
    loop {
        let buf =
            tar.fill_buf().map_err(|e| Problem::Stream(format!("damaged after entry {:?}: {e}", last_name(last))))?;
        if buf.is_empty() {
            break;
        }
        if buf.iter().any(|b| *b != 0) {
            return Err(Problem::Stream("data after the end of the tar archive".into()));
        }
        let n = buf.len();
        tar.consume(n);
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(entry_problem(&manifest.entries[i].path, "in the manifest but missing from the archive"));
    }
    Ok((files, bytes))
}

fn normalize(p: &str) -> &str {
    let p = p.strip_prefix("./").unwrap_or(p);
    p.trim_end_matches('/')
}

fn check_entry(ar: &mut TarReader<BlockReader>, header: &Header, expected: &Entry) -> Result<(), Problem> {
    let path = expected.path.as_str();
    let kind = match header.kind {
        Some(Kind::Regular | Kind::Continuous) => EntryKind::File,
        Some(Kind::Directory) => EntryKind::Dir,
        Some(Kind::Symlink) => EntryKind::Symlink,
        Some(Kind::Link) => EntryKind::Hardlink,
        Some(Kind::Fifo) => EntryKind::Fifo,
        other => return Err(entry_problem(path, format!("unexpected tar entry type {other:?}"))),
    };
    if kind != expected.kind {
        return Err(entry_problem(
            path,
            format!("is a {kind:?} in the archive, the manifest says {:?}", expected.kind),
        ));
    }
    let bad = |what: &str| entry_problem(path, format!("unreadable {what} in the tar header"));
    let mode = header.mode.ok_or_else(|| bad("mode"))? & 0o7777;
    let uid = header.uid.ok_or_else(|| bad("uid"))?;
    let gid = header.gid.ok_or_else(|| bad("gid"))?;
    let mtime = header.mtime.ok_or_else(|| bad("mtime"))?;
    let size = header.size;
    if size != expected.size {
        return Err(entry_problem(path, format!("size {size} in the archive, the manifest says {}", expected.size)));
    }
    if kind == EntryKind::File {
        // Hashed straight out of the decoded buffers: no copy.
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        loop {
            let chunk =
                ar.content_chunk().map_err(|e| Problem::Stream(format!("damaged inside entry {path:?}: {e}")))?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(chunk);
            let k = chunk.len();
            ar.consume_content(k);
            n += k as u64;
        }
        if n != expected.size {
            return Err(Problem::Stream(format!(
                "damaged inside entry {path:?}: the stream ends after {n} of its {} bytes",
                expected.size
            )));
        }
        let mut hex_buf = [0u8; 64];
        let sha = hex::encode_to_slice(hasher.finalize(), &mut hex_buf)
            .ok()
            .and_then(|()| std::str::from_utf8(&hex_buf).ok())
            .unwrap_or_default();
        if Some(sha) != expected.sha256.as_deref() {
            let want = expected.sha256.as_deref().unwrap_or("none");
            return Err(entry_problem(path, format!("content sha256 {sha} does not match the manifest's {want}")));
        }
    }
    if mode != expected.mode {
        return Err(entry_problem(
            path,
            format!("mode {mode:o} in the archive, the manifest says {:o}", expected.mode),
        ));
    }
    if uid != u64::from(expected.uid) || gid != u64::from(expected.gid) {
        let (eu, eg) = (expected.uid, expected.gid);
        return Err(entry_problem(path, format!("owner {uid}:{gid} in the archive, the manifest says {eu}:{eg}")));
    }
    if mtime != (expected.mtime, expected.mtime_nsec) {
        let want = crate::archive::pax_time(expected.mtime, expected.mtime_nsec);
        let got = crate::archive::pax_time(mtime.0, mtime.1);
        return Err(entry_problem(path, format!("mtime {got} in the archive, the manifest says {want}")));
    }
    let target = (!header.link.is_empty()).then(|| String::from_utf8_lossy(&header.link).into_owned());
    if matches!(kind, EntryKind::Symlink | EntryKind::Hardlink) && target != expected.target {
        let got = target.unwrap_or_default();
        let want = expected.target.clone().unwrap_or_default();
        return Err(entry_problem(path, format!("link target {got:?} in the archive, the manifest says {want:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::pax_time;
    use crate::tarparse::parse_pax_time;

    #[test]
    fn pax_time_round_trips() {
        for (s, n) in [(5, 0), (5, 1), (-2, 250_000_000), (-1, 0), (0, 999_999_999)] {
            assert_eq!(parse_pax_time(&pax_time(s, n)), Some((s, n)), "{s}.{n}");
        }
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("./a/b/"), "a/b");
        assert_eq!(normalize("a"), "a");
    }
}
