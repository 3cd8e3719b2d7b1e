//! One file out of an archive without reading the rest (`voltool backup cat`, restores of
//! single paths): the manifest says which zstd frames hold the entry ([`Entry::frame_at`],
//! [`Entry::frame_len`]) and where in the first one its header starts
//! ([`Entry::frame_skip`]). Each frame decodes on its own, so a ranged read of those bytes
//! (S3 `Range`, `pread`) is all that is fetched: a 1 KiB file of a 1 GiB archive costs one or
//! two 2 MiB frames, compressed.
//!
//! The bytes come from a target and are untrusted: the entry found must be the one asked for
//! (path, type, size) and its content must hash to the manifest's sha256. The content is
//! streamed to the writer as it is read, so a mismatch is reported after the bytes went out:
//! callers that must not pass on bad bytes write to a temporary place first.

use std::io::{self, BufReader, Read, Write};

use sha2::{Digest, Sha256};

use crate::error::BackupError;
use crate::manifest::{Entry, EntryKind};
use crate::tarparse::{Kind, TarReader};

/// Whether `e` can be read alone (its manifest was written with frame ranges).
pub fn locatable(e: &Entry) -> bool {
    e.frame_at > 0 && e.frame_len > 0
}

/// Reads the regular file `e` out of `frames` (exactly the bytes `e.frame_at ..
/// e.frame_at + e.frame_len` of its link's archive) into `out`; returns the bytes written.
///
/// # Errors
/// [`BackupError::Corrupt`] naming the entry when the frames do not hold it as the manifest
/// says (another path, type or size; a content whose sha256 differs); [`BackupError::Write`]
/// when `out` fails.
pub fn read_file(frames: impl Read, e: &Entry, out: &mut dyn Write) -> Result<u64, BackupError> {
    let bad = |reason: String| BackupError::Corrupt { entry: e.path.clone(), reason };
    if e.kind != EntryKind::File {
        return Err(bad("not a regular file".into()));
    }
    let decoder =
        zstd::stream::read::Decoder::new(frames).map_err(|err| bad(format!("its frames cannot be decoded: {err}")))?;
    let mut decoded = BufReader::with_capacity(1 << 16, decoder);
    let skipped = io::copy(&mut (&mut decoded).take(u64::from(e.frame_skip)), &mut io::sink())
        .map_err(|err| bad(format!("its frames cannot be decoded: {err}")))?;
    if skipped != u64::from(e.frame_skip) {
        return Err(bad("its frames end before the entry".into()));
    }
    let mut tar = TarReader::new(decoded);
    let header = tar
        .next_entry()
        .map_err(|err| bad(format!("no tar header where the manifest says: {err}")))?
        .ok_or_else(|| bad("no tar header where the manifest says".into()))?;
    let path = String::from_utf8_lossy(&header.path);
    let path = path.strip_prefix("./").unwrap_or(&path);
    if path != e.path || !matches!(header.kind, Some(Kind::Regular | Kind::Continuous)) || header.size != e.size {
        return Err(bad(format!("the archive holds {path:?} ({} bytes) where the manifest says", header.size)));
    }
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    loop {
        let chunk = tar.content_chunk().map_err(|err| bad(format!("damaged content: {err}")))?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        out.write_all(chunk).map_err(BackupError::Write)?;
        let k = chunk.len();
        tar.consume_content(k);
        n += k as u64;
    }
    if n != e.size {
        return Err(bad(format!("the frames end after {n} of its {} bytes", e.size)));
    }
    let sha = hex::encode(hasher.finalize());
    if e.sha256.as_deref().is_some_and(|want| want != sha) {
        return Err(bad(format!("its content's sha256 is {sha}, the manifest records another")));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn every_file_reads_alone_from_its_frames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("src");
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        // Files across several 2 MiB frames, some spanning two.
        for i in 0..12u8 {
            let len = 300_000 * usize::from(i) + 7;
            std::fs::write(root.join(format!("d/f{i:02}")), vec![i; len]).expect("write");
        }
        std::fs::write(root.join("small"), b"a small file").expect("write");
        let mut archive = Vec::new();
        let summary = crate::write_archive(&root, &mut archive, &crate::ArchiveOptions::default()).expect("archive");
        let m = crate::Manifest::new("v-1", "v", &BTreeMap::new(), summary, time::OffsetDateTime::UNIX_EPOCH)
            .expect("manifest");
        let files: Vec<&Entry> = m.entries.iter().filter(|e| e.kind == EntryKind::File).collect();
        assert_eq!(files.len(), 13);
        for e in files {
            assert!(locatable(e), "{e:?}");
            let at = usize::try_from(e.frame_at).expect("at");
            let range = &archive[at..at + usize::try_from(e.frame_len).expect("len")];
            assert!(range.len() <= 2 * (4 << 20), "{}: {} bytes fetched", e.path, range.len());
            let mut out = Vec::new();
            read_file(range, e, &mut out).expect("read");
            assert_eq!(out, std::fs::read(root.join(&e.path)).expect("source"), "{}", e.path);
        }
        // The wrong frames, or a manifest that lies, are named.
        let small = m.entries.iter().find(|e| e.path == "small").expect("small");
        let other = m.entries.iter().find(|e| e.path == "d/f05").expect("f05");
        let at = usize::try_from(other.frame_at).expect("at");
        let range = &archive[at..at + usize::try_from(other.frame_len).expect("len")];
        let wrong = Entry { frame_skip: other.frame_skip, ..small.clone() };
        assert!(matches!(read_file(range, &wrong, &mut Vec::new()), Err(BackupError::Corrupt { .. })));
        let lying = Entry { sha256: Some("0".repeat(64)), ..other.clone() };
        assert!(matches!(read_file(range, &lying, &mut Vec::new()), Err(BackupError::Corrupt { .. })));
    }
}
