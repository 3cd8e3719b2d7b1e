//! Verifying an archive against its manifest, streaming, without writing anything to disk.

use std::collections::HashMap;
use std::io::{self, Read};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::archive::HashingWriter;
use crate::error::BackupError;
use crate::manifest::{Entry, EntryKind, Manifest};

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

/// A reader that hashes and counts what it passes on, and keeps its inner reader's error.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.count += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(e);
                Err(io::Error::other(msg))
            }
        }
    }
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
pub fn verify_archive(input: impl Read, manifest: &Manifest) -> Result<VerifyReport, BackupError> {
    let archive = manifest.archive_file_name();
    let mut raw = HashingReader { inner: input, hasher: Sha256::new(), count: 0, error: None };
    let outcome = check_stream(&mut raw, manifest);
    // Whatever the decoder did not consume still belongs to the archive's sha256.
    let drained = io::copy(&mut raw, &mut io::sink());
    if let Some(source) = raw.error.take() {
        return Err(BackupError::Read { path: PathBuf::from(&archive), source });
    }
    let size = raw.count;
    let sha = hex::encode(raw.hasher.finalize());
    let archive_problem = match drained {
        Err(e) => Some(format!("reading the archive failed: {e}")),
        Ok(_) if sha != manifest.archive_sha256 || size != manifest.archive_size => Some(format!(
            "sha256 {sha} ({size} bytes) does not match the manifest's {} ({} bytes)",
            manifest.archive_sha256, manifest.archive_size
        )),
        Ok(_) => None,
    };
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

/// Decoded tar bytes in existence at once (in the channel, being filled, being parsed).
const TAR_BLOCKS: usize = 4;
/// The most decoded bytes asked of zstd in one call. zstd drops what a call decoded when the
/// call ends in an error, so this bounds how much of the stream before a damaged spot the
/// checks never see; the single-threaded reader this replaces asked for at most as much (the
/// 8 KiB of a content copy), so a damaged stream is still pinned to the same entry.
const DECODE_STEP: usize = 8 * 1024;

/// Decodes and checks every entry; returns (files, content bytes).
///
/// Two threads: this one reads, hashes and decodes the compressed stream (`raw` stays here, so
/// it need not be `Send`); a checking thread parses the tar and hashes every file's contents.
/// Decoded tar travels in [`crate::pipeline::BLOCK`]-sized buffers, at most [`TAR_BLOCKS`] of
/// them, recycled: memory stays bounded and the decoder waits when the checks fall behind.
fn check_stream<R: Read>(raw: &mut HashingReader<R>, manifest: &Manifest) -> Result<(u64, u64), Problem> {
    let mut decoder = zstd::stream::read::Decoder::new(raw).map_err(|e| Problem::Stream(format!("zstd: {e}")))?;
    let (to_checker, from_decoder) = mpsc::sync_channel(TAR_BLOCKS);
    let (give_back, given_back) = mpsc::channel();
    for _ in 0..TAR_BLOCKS {
        let _ = give_back.send(vec![0u8; crate::pipeline::BLOCK]);
    }
    std::thread::scope(|s| {
        let tar = TarBlocks { rx: from_decoder, give_back, block: Vec::new(), unread: 0..0, end: None };
        let checker = std::thread::Builder::new()
            .name("verify-check".into())
            .spawn_scoped(s, move || check_entries(tar, manifest));
        let Ok(checker) = checker else {
            // No second thread: check on this one, as before.
            return check_entries(&mut decoder, manifest);
        };
        feed(&mut decoder, &to_checker, &given_back);
        drop(to_checker);
        checker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// What the decoding side hands the checking side, in stream order: blocks, then `Done` or
/// `Broken`. A channel that closes without either is an error, never a clean end.
enum TarChunk {
    /// A buffer and how many of its bytes are decoded tar.
    Block(Vec<u8>, usize),
    /// The zstd stream decoded to its end.
    Done,
    /// Decoding failed here: the error a reader of the decoder would have seen at this point.
    Broken(io::Error),
}

/// Decodes into recycled blocks until the stream ends or fails, or the checking side stops
/// listening (it found a problem: the rest is only hashed, by the caller's drain).
fn feed(decoder: &mut impl Read, tx: &SyncSender<TarChunk>, given_back: &Receiver<Vec<u8>>) {
    // Every buffer comes back through `given_back` (the caller put them all there first); when
    // the checking side stops, that channel closes and so does this loop.
    while let Ok(mut block) = given_back.recv() {
        let mut len = 0;
        let last = loop {
            if len == block.len() {
                break None;
            }
            let step = (block.len() - len).min(DECODE_STEP);
            match decoder.read(&mut block[len..len + step]) {
                Ok(0) => break Some(TarChunk::Done),
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(TarChunk::Broken(e)),
            }
        };
        if len > 0 && tx.send(TarChunk::Block(block, len)).is_err() {
            return;
        }
        if let Some(last) = last {
            let _ = tx.send(last);
            return;
        }
    }
}

/// The checking thread's reader of the decoded tar stream.
struct TarBlocks {
    rx: Receiver<TarChunk>,
    give_back: Sender<Vec<u8>>,
    /// The block being read and the part of it not read yet.
    block: Vec<u8>,
    unread: Range<usize>,
    /// How the stream ended, once it has: later reads repeat it.
    end: Option<Result<(), (io::ErrorKind, String)>>,
}

impl TarBlocks {
    /// Takes the next block from the decoding side, handing the finished one back; false at
    /// the end of the stream. A failure (the decoder's, or its side stopping without saying
    /// how the stream ended) is returned again on every later call.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.end.is_none() {
            match self.rx.recv() {
                Ok(TarChunk::Block(block, len)) => {
                    (self.block, self.unread) = (block, 0..len);
                    return Ok(true);
                }
                Ok(TarChunk::Done) => self.end = Some(Ok(())),
                Ok(TarChunk::Broken(e)) => self.end = Some(Err((e.kind(), e.to_string()))),
                Err(_) => {
                    let msg = "the zstd decoder stopped in the middle of the stream".to_owned();
                    self.end = Some(Err((io::ErrorKind::UnexpectedEof, msg)));
                }
            }
        }
        match &self.end {
            Some(Err((kind, msg))) => Err(io::Error::new(*kind, msg.clone())),
            _ => Ok(false),
        }
    }
}

impl Read for TarBlocks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.unread.is_empty() && !self.next_block()? {
            return Ok(0);
        }
        let n = out.len().min(self.unread.len());
        let from = self.unread.start;
        out[..n].copy_from_slice(&self.block[from..from + n]);
        self.unread.start += n;
        if self.unread.is_empty() {
            // Used up: back to the decoding side (which may have stopped: then it is freed).
            let _ = self.give_back.send(std::mem::take(&mut self.block));
        }
        Ok(n)
    }
}

/// Parses the decoded tar stream and checks every entry; returns (files, content bytes).
fn check_entries(tar: impl Read, manifest: &Manifest) -> Result<(u64, u64), Problem> {
    let mut ar = tar::Archive::new(tar);
    let index: HashMap<&str, usize> = manifest.entries.iter().enumerate().map(|(i, e)| (e.path.as_str(), i)).collect();
    let mut seen = vec![false; manifest.entries.len()];
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut last = String::from("(start of archive)");
    let entries = ar.entries().map_err(|e| Problem::Stream(format!("tar: {e}")))?;
    for item in entries {
        let mut ent = item.map_err(|e| Problem::Stream(format!("damaged after entry {last:?}: {e}")))?;
        let path = normalize(&String::from_utf8_lossy(&ent.path_bytes()));
        last.clone_from(&path);
        let Some(&i) = index.get(path.as_str()) else {
            return Err(entry_problem(&path, "in the archive but not in the manifest"));
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(entry_problem(&path, "appears twice in the archive"));
        }
        let expected = &manifest.entries[i];
        check_entry(&mut ent, expected)?;
        if expected.kind == EntryKind::File {
            files += 1;
            bytes += expected.size;
        }
    }
    // Past the tar end-of-archive blocks: only zero padding may follow, and the zstd frame
    // (with its checksum) must decode to its end.
    let mut tar = ar.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tar.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if buf[..n].iter().all(|b| *b == 0) => {}
            Ok(_) => return Err(Problem::Stream("data after the end of the tar archive".into())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Problem::Stream(format!("damaged after entry {last:?}: {e}"))),
        }
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(entry_problem(&manifest.entries[i].path, "in the manifest but missing from the archive"));
    }
    Ok((files, bytes))
}

fn normalize(p: &str) -> String {
    let p = p.strip_prefix("./").unwrap_or(p);
    p.trim_end_matches('/').to_owned()
}

fn check_entry<R: Read>(ent: &mut tar::Entry<'_, R>, expected: &Entry) -> Result<(), Problem> {
    let path = expected.path.as_str();
    let header = ent.header();
    let kind = match header.entry_type() {
        EntryType::Regular | EntryType::Continuous => EntryKind::File,
        EntryType::Directory => EntryKind::Dir,
        EntryType::Symlink => EntryKind::Symlink,
        EntryType::Link => EntryKind::Hardlink,
        EntryType::Fifo => EntryKind::Fifo,
        other => return Err(entry_problem(path, format!("unexpected tar entry type {other:?}"))),
    };
    if kind != expected.kind {
        return Err(entry_problem(
            path,
            format!("is a {kind:?} in the archive, the manifest says {:?}", expected.kind),
        ));
    }
    let bad = |what: &str| entry_problem(path, format!("unreadable {what} in the tar header"));
    let mode = header.mode().map_err(|_| bad("mode"))? & 0o7777;
    let uid = header.uid().map_err(|_| bad("uid"))?;
    let gid = header.gid().map_err(|_| bad("gid"))?;
    let header_mtime = header.mtime().map_err(|_| bad("mtime"))?;
    let target = ent.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned());
    let size = ent.size();
    let mut mtime = (i64::try_from(header_mtime).unwrap_or(i64::MAX), 0u32);
    if let Ok(Some(exts)) = ent.pax_extensions() {
        for ext in exts.flatten() {
            if ext.key() == Ok("mtime") {
                mtime = ext.value().ok().and_then(parse_pax_time).ok_or_else(|| bad("pax mtime"))?;
            }
        }
    }
    if size != expected.size {
        return Err(entry_problem(path, format!("size {size} in the archive, the manifest says {}", expected.size)));
    }
    if kind == EntryKind::File {
        let mut sink = HashingWriter::new(io::sink());
        let n = io::copy(ent, &mut sink).map_err(|e| Problem::Stream(format!("damaged inside entry {path:?}: {e}")))?;
        let (_, _, sha) = sink.finish();
        if n != expected.size {
            return Err(entry_problem(path, format!("{n} content bytes, the manifest says {}", expected.size)));
        }
        if Some(&sha) != expected.sha256.as_ref() {
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
    if matches!(kind, EntryKind::Symlink | EntryKind::Hardlink) && target != expected.target {
        let got = target.unwrap_or_default();
        let want = expected.target.clone().unwrap_or_default();
        return Err(entry_problem(path, format!("link target {got:?} in the archive, the manifest says {want:?}")));
    }
    Ok(())
}

/// Parses a pax time (`[-]SECONDS[.FRACTION]`) into seconds and nanoseconds (floor semantics).
fn parse_pax_time(s: &str) -> Option<(i64, u32)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let whole: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nsec: u32 = digits.parse().ok()?;
    Some(match (neg, nsec) {
        (false, _) => (whole, nsec),
        (true, 0) => (-whole, 0),
        (true, _) => (-whole - 1, 1_000_000_000 - nsec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::pax_time;

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
