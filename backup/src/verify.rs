//! Verifying an archive against its manifest, streaming, without writing anything to disk.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};

use sha2::{Digest, Sha256};

use crate::blocks::{self, BlockReader, InputDigest, hash_input};
use crate::error::BackupError;
use crate::manifest::{EntryKind, Manifest};
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
    Entry {
        entry: String,
        reason: String,
    },
    Stream(String),
    /// The manifest could not be had.
    Manifest(Unloaded),
}

/// Why the manifest could not be had while the archive was checked.
#[derive(Debug, thiserror::Error)]
enum Unloaded {
    /// The loader failed; its message (which names the manifest).
    #[error("{0}")]
    Load(String),
    #[error("cannot start the manifest's thread: {0}")]
    NoThread(std::io::Error),
    #[error("the manifest's thread stopped")]
    ThreadStopped,
    #[error("the manifest was not loaded")]
    NotLoaded,
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
    verify_archive_loading(input, &archive, || Ok::<_, std::convert::Infallible>(manifest)).map(|(_, report)| report)
}

/// [`verify_archive`] with the manifest read and parsed by `load` on a thread of its own while
/// the archive is already being read, decoded and hashed (a manifest of 100,000 entries is
/// ~20 MB of JSON: parsing it first would hold everything up). Entries the archive yields
/// before the manifest is ready wait, checked (their contents hashed), for it. `archive`
/// names the archive in messages (`ID.tar.zst`). Returns the manifest with the report.
///
/// # Errors
/// As [`verify_archive`]; `load`'s error as [`BackupError::ManifestLoad`].
pub fn verify_archive_loading<M, E>(
    input: impl Read + Send,
    archive: &str,
    load: impl FnOnce() -> Result<M, E> + Send,
) -> Result<(M, VerifyReport), BackupError>
where
    M: Borrow<Manifest> + Send,
    E: std::fmt::Display,
{
    let (outcome, raw, manifest) = check_stream(input, load);
    let Some(manifest) = manifest else {
        return Err(BackupError::ManifestLoad(match outcome {
            Err(Problem::Manifest(e)) => e.to_string(),
            _ => Unloaded::NotLoaded.to_string(),
        }));
    };
    let m: &Manifest = manifest.borrow();
    let archive = archive.to_owned();
    if let Some(source) = raw.error {
        return Err(BackupError::Read { path: PathBuf::from(&archive), source });
    }
    let size = raw.size;
    let sha = hex::encode(raw.sha256);
    let archive_problem = (sha != m.archive_sha256 || size != m.archive_size).then(|| {
        format!(
            "sha256 {sha} ({size} bytes) does not match the manifest's {} ({} bytes)",
            m.archive_sha256, m.archive_size
        )
    });
    let entries = m.entries.len() as u64;
    match (outcome, archive_problem) {
        (Ok((files, bytes)), None) => {
            Ok((manifest, VerifyReport { entries, files, bytes, archive_size: size, archive_sha256: sha }))
        }
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
        (Err(Problem::Manifest(e)), _) => Err(BackupError::ManifestLoad(e.to_string())),
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

/// Reads, decodes and checks every entry; returns (files, content bytes), the digest of the
/// compressed stream (all of it: what the decoder did not consume still belongs to the
/// archive's sha256) and the manifest (`None` when `load` failed).
///
/// The costly jobs each have threads of their own: a reading thread hashes the compressed
/// stream ([`crate::blocks::hash_input`]), this one walks the zstd frames and hands them to
/// decoding workers ([`crate::frames::decode`], one per CPU), a checking thread parses the tar
/// and hashes every file's contents, and one loads the manifest meanwhile. The bytes travel in
/// a few buffers, recycled ([`crate::blocks`]): memory stays bounded and each side waits when
/// the next falls behind. When the checks stop at a problem, decoding stops too, and the
/// reading thread still hashes the rest.
fn check_stream<M, E>(
    input: impl Read + Send,
    load: impl FnOnce() -> Result<M, E> + Send,
) -> (Result<(u64, u64), Problem>, InputDigest, Option<M>)
where
    M: Borrow<Manifest> + Send,
    E: std::fmt::Display,
{
    let workers = crate::frames::default_workers();
    let (raw_tx, raw_rx) = blocks::channel(RAW_BLOCKS, crate::pipeline::BLOCK);
    let (tar_tx, tar_rx) = blocks::channel(workers + 2, crate::frames::FRAME);
    let (manifest_tx, manifest_rx) = mpsc::sync_channel(1);
    // Cleared when the manifest cannot be had: then the archive's digest is of no use, and
    // the rest of it is not read.
    let drain = AtomicBool::new(true);
    let drain = &drain;
    std::thread::scope(|s| {
        let loading = std::thread::Builder::new().name("verify-manifest".into()).spawn_scoped(s, move || {
            let _ = manifest_tx.send(load().map_err(|e| Unloaded::Load(e.to_string())));
        });
        if let Err(e) = loading {
            let digest = InputDigest { size: 0, sha256: [0; 32], error: None };
            return (Err(Problem::Manifest(Unloaded::NoThread(e))), digest, None);
        }
        let reader = std::thread::Builder::new()
            .name("verify-read".into())
            .spawn_scoped(s, move || hash_input(input, raw_tx, drain));
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                let digest = InputDigest { size: 0, sha256: [0; 32], error: Some(e) };
                return (Err(Problem::Stream("cannot start the reading thread".into())), digest, None);
            }
        };
        let checker = std::thread::Builder::new()
            .name("verify-check".into())
            .spawn_scoped(s, move || check_entries(tar_rx, &manifest_rx, drain));
        let (outcome, manifest) = match checker {
            Ok(checker) => {
                crate::frames::decode(raw_rx, &tar_tx, workers, DECODE_STEP);
                drop(tar_tx);
                checker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
            Err(e) => {
                drop(raw_rx);
                (Err(Problem::Stream(format!("cannot start the checking thread: {e}"))), None)
            }
        };
        let digest = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (outcome, digest, manifest)
    })
}

/// One entry as the archive has it, its contents hashed.
struct Seen {
    path: String,
    kind: EntryKind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, u32),
    size: u64,
    target: Option<String>,
    sha256: Option<[u8; 32]>,
}

/// Compares entries, in archive order, with the manifest's.
struct Compare {
    /// The archive lists entries in the manifest's order (both are the walk's order): each
    /// is looked for at the next position first, and in an index (built when first needed)
    /// only when it is not there.
    index: Option<HashMap<String, usize>>,
    next: usize,
    seen: Vec<bool>,
    files: u64,
    bytes: u64,
}

impl Compare {
    fn new(m: &Manifest) -> Self {
        Self { index: None, next: 0, seen: vec![false; m.entries.len()], files: 0, bytes: 0 }
    }

    fn check(&mut self, m: &Manifest, e: &Seen) -> Result<(), Problem> {
        // An incremental begins with the root itself, for its listing.
        if m.level > 0 && e.path.is_empty() && e.kind == EntryKind::Dir {
            return Ok(());
        }
        let i = match m.entries.get(self.next) {
            Some(x) if x.path == e.path => self.next,
            _ => {
                let index = self
                    .index
                    .get_or_insert_with(|| m.entries.iter().enumerate().map(|(i, x)| (x.path.clone(), i)).collect());
                match index.get(&e.path) {
                    Some(&i) => i,
                    None => return Err(entry_problem(&e.path, "in the archive but not in the manifest")),
                }
            }
        };
        self.next = i + 1;
        if std::mem::replace(&mut self.seen[i], true) {
            return Err(entry_problem(&e.path, "appears twice in the archive"));
        }
        let expected = &m.entries[i];
        if !m.holds(expected) {
            return Err(entry_problem(
                &e.path,
                format!("in the archive, but the manifest says link {} of the chain holds it", expected.level),
            ));
        }
        compare_entry(e, expected)?;
        if expected.kind == EntryKind::File {
            self.files += 1;
            self.bytes += expected.size;
        }
        Ok(())
    }

    fn finish(&self, m: &Manifest) -> Result<(u64, u64), Problem> {
        if let Some(i) = self.seen.iter().zip(&m.entries).position(|(s, e)| !s && m.holds(e)) {
            return Err(entry_problem(&m.entries[i].path, "in the manifest but missing from the archive"));
        }
        Ok((self.files, self.bytes))
    }
}

/// The manifest, once it came.
struct Awaited<'r, M> {
    rx: Option<&'r Receiver<Result<M, Unloaded>>>,
    /// Cleared when the manifest cannot be had (before the archive's reader goes away).
    drain: &'r AtomicBool,
    got: Option<(M, Compare)>,
    /// Entries seen before it came.
    backlog: Vec<Seen>,
}

impl<M: Borrow<Manifest>> Awaited<'_, M> {
    /// Takes the manifest if it came (waiting for it with `wait`), and checks the backlog.
    fn poll(&mut self, wait: bool) -> Result<(), Problem> {
        let Some(rx) = self.rx else { return Ok(()) };
        let got = if wait {
            rx.recv().unwrap_or_else(|_| Err(Unloaded::ThreadStopped))
        } else {
            match rx.try_recv() {
                Ok(got) => got,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => Err(Unloaded::ThreadStopped),
            }
        };
        self.rx = None;
        let m = got.map_err(|e| {
            self.drain.store(false, Ordering::Release);
            Problem::Manifest(e)
        })?;
        let mut cmp = Compare::new(m.borrow());
        let checked = self.backlog.drain(..).try_for_each(|e| cmp.check(m.borrow(), &e));
        self.got = Some((m, cmp));
        checked
    }

    fn check(&mut self, e: Seen) -> Result<(), Problem> {
        match &mut self.got {
            Some((m, cmp)) => cmp.check((*m).borrow(), &e),
            None => {
                self.backlog.push(e);
                Ok(())
            }
        }
    }
}

/// Parses the decoded tar stream and checks every entry against the manifest that comes
/// through `manifest`; returns (files, content bytes), and the manifest (when it came: every
/// outcome is reported with it, a wrong archive sha256 added to the first problem).
fn check_entries<M: Borrow<Manifest>>(
    tar: BlockReader,
    manifest: &Receiver<Result<M, Unloaded>>,
    drain: &AtomicBool,
) -> (Result<(u64, u64), Problem>, Option<M>) {
    let mut awaited = Awaited { rx: Some(manifest), drain, got: None, backlog: Vec::new() };
    let mut outcome = check_all(tar, &mut awaited);
    // Entries still waiting for the manifest came before whatever stopped the checks: their
    // problems come first.
    if outcome.is_err()
        && !matches!(outcome, Err(Problem::Manifest(_)))
        && let Err(e) = awaited.poll(true)
    {
        outcome = Err(e);
    }
    (outcome, awaited.got.map(|(m, _)| m))
}

fn check_all<M: Borrow<Manifest>>(tar: BlockReader, awaited: &mut Awaited<'_, M>) -> Result<(u64, u64), Problem> {
    let mut ar = TarReader::new(tar);
    let mut last: Option<String> = None;
    let last_name = |last: &Option<String>| last.clone().unwrap_or_else(|| "(start of archive)".into());
    loop {
        awaited.poll(false)?;
        let header =
            ar.next_entry().map_err(|e| Problem::Stream(format!("damaged after entry {:?}: {e}", last_name(&last))))?;
        let Some(header) = header else { break };
        let e = observe(&mut ar, &header)?;
        last = Some(e.path.clone());
        awaited.check(e)?;
    }
    // Past the tar end-of-archive blocks: only zero padding may follow, and the zstd stream
    // must decode to its end.
    let mut tar = ar.into_inner();
    loop {
        let buf =
            tar.fill_buf().map_err(|e| Problem::Stream(format!("damaged after entry {:?}: {e}", last_name(&last))))?;
        if buf.is_empty() {
            break;
        }
        if buf.iter().any(|b| *b != 0) {
            return Err(Problem::Stream("data after the end of the tar archive".into()));
        }
        let n = buf.len();
        tar.consume(n);
    }
    awaited.poll(true)?;
    match &awaited.got {
        Some((m, cmp)) => cmp.finish(m.borrow()),
        None => Err(Problem::Manifest(Unloaded::NotLoaded)),
    }
}

fn normalize(p: &str) -> &str {
    let p = p.strip_prefix("./").unwrap_or(p);
    if p == "." { "" } else { p.trim_end_matches('/') }
}

/// Reads one entry's header fields and, for a file, hashes its contents straight out of the
/// decoded buffers (no copy).
fn observe(ar: &mut TarReader<BlockReader>, header: &Header) -> Result<Seen, Problem> {
    let path = normalize(&String::from_utf8_lossy(&header.path)).to_owned();
    let kind = match header.kind {
        Some(Kind::Regular | Kind::Continuous) => EntryKind::File,
        Some(Kind::Directory) => EntryKind::Dir,
        Some(Kind::Symlink) => EntryKind::Symlink,
        Some(Kind::Link) => EntryKind::Hardlink,
        Some(Kind::Fifo) => EntryKind::Fifo,
        other => return Err(entry_problem(&path, format!("unexpected tar entry type {other:?}"))),
    };
    let bad = |what: &str| entry_problem(&path, format!("unreadable {what} in the tar header"));
    let mode = header.mode.ok_or_else(|| bad("mode"))? & 0o7777;
    let uid = header.uid.ok_or_else(|| bad("uid"))?;
    let gid = header.gid.ok_or_else(|| bad("gid"))?;
    let mtime = header.mtime.ok_or_else(|| bad("mtime"))?;
    let size = header.size;
    let sha256 = if kind == EntryKind::File {
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
        if n != size {
            return Err(Problem::Stream(format!(
                "damaged inside entry {path:?}: the stream ends after {n} of its {size} bytes"
            )));
        }
        Some(hasher.finalize().into())
    } else {
        None
    };
    let target = (!header.link.is_empty()).then(|| String::from_utf8_lossy(&header.link).into_owned());
    Ok(Seen { path, kind, mode, uid, gid, mtime, size, target, sha256 })
}

/// Compares what the archive has for an entry with what the manifest says.
fn compare_entry(e: &Seen, expected: &crate::manifest::Entry) -> Result<(), Problem> {
    let path = expected.path.as_str();
    if e.kind != expected.kind {
        return Err(entry_problem(
            path,
            format!("is a {:?} in the archive, the manifest says {:?}", e.kind, expected.kind),
        ));
    }
    if e.size != expected.size {
        return Err(entry_problem(
            path,
            format!("size {} in the archive, the manifest says {}", e.size, expected.size),
        ));
    }
    if let Some(digest) = &e.sha256 {
        let mut hex_buf = [0u8; 64];
        let sha = hex::encode_to_slice(digest, &mut hex_buf)
            .ok()
            .and_then(|()| std::str::from_utf8(&hex_buf).ok())
            .unwrap_or_default();
        if Some(sha) != expected.sha256.as_deref() {
            let want = expected.sha256.as_deref().unwrap_or("none");
            return Err(entry_problem(path, format!("content sha256 {sha} does not match the manifest's {want}")));
        }
    }
    if e.mode != expected.mode {
        return Err(entry_problem(
            path,
            format!("mode {:o} in the archive, the manifest says {:o}", e.mode, expected.mode),
        ));
    }
    if e.uid != u64::from(expected.uid) || e.gid != u64::from(expected.gid) {
        let (eu, eg) = (expected.uid, expected.gid);
        return Err(entry_problem(
            path,
            format!("owner {}:{} in the archive, the manifest says {eu}:{eg}", e.uid, e.gid),
        ));
    }
    if e.mtime != (expected.mtime, expected.mtime_nsec) {
        let want = crate::archive::pax_time(expected.mtime, expected.mtime_nsec);
        let got = crate::archive::pax_time(e.mtime.0, e.mtime.1);
        return Err(entry_problem(path, format!("mtime {got} in the archive, the manifest says {want}")));
    }
    if matches!(e.kind, EntryKind::Symlink | EntryKind::Hardlink) && e.target != expected.target {
        let got = e.target.clone().unwrap_or_default();
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
