//! Safe extraction of a tar stream into an empty staging directory.
//!
//! The archive is untrusted: it may come from anywhere (a seed-recipe `tar czf`, a file a
//! user downloaded, a corrupted backup). Nothing it says can make a write land outside the
//! staging directory:
//!
//! - entry paths are relative; absolute paths and `..` components are refused (a leading `./`
//!   and `/`-only entries are fine), as are NUL bytes and empty names;
//! - no write goes through a symbolic link, whoever made it (this archive, or a container
//!   writing into the volume while the restore runs): every directory is reached from the
//!   staging directory's descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, one
//!   component at a time, and every entry is made in its parent's descriptor with the `*at`
//!   calls (`O_CREAT|O_EXCL|O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), so the kernel refuses what a
//!   check could only race (see `tree`); symlinks themselves are created as links, never
//!   followed;
//! - a hard link must name an earlier regular file of the same archive, by a path that passes
//!   the same checks (so it can never point at `/etc/passwd`);
//! - device nodes are refused unless allowed; sockets and unknown types are refused;
//! - the total of file contents is capped (the volume's size limit), and bytes and inodes by
//!   the room the caller leaves on the filesystem ([`Space`]), checked before each entry is
//!   written, so a huge file (or a million empty ones) fails before it fills the disk;
//! - archives that did not come from voltool's own catalog lose setuid/setgid bits and
//!   `security.*`/`trusted.*` xattrs unless [`ExtractOptions::preserve_privileges`];
//! - the stream must end cleanly: a truncated archive or a corrupt compressed frame is an
//!   error (GNU tar would warn and go on).
//!
//! Modes (with setuid/setgid/sticky), numeric owners (when running as root), nanosecond
//! mtimes and `SCHILY.xattr.*` records are restored; directory modes and mtimes are applied
//! last, deepest first, so a read-only directory does not stop its own contents.

mod entry;
mod run;
mod tree;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use voltool_runtime::fsat::Dir;

use crate::error::RestoreError;

/// Seconds and nanoseconds since the epoch.
type Mtime = (i64, u32);

/// Which entries a pass of a chain extraction makes: by relative path, and whether the entry
/// is a directory.
pub type Keep<'a> = dyn Fn(&str, bool) -> bool + Send + 'a;

/// One link of an incremental chain for [`extract_chain_into`].
pub struct ChainLink {
    /// Names the link in messages (`ID.tar.zst`).
    pub name: String,
    /// Opens the link's archive (called when its pass begins).
    pub open: Box<dyn FnOnce() -> Result<Box<dyn Read + Send>, RestoreError> + Send>,
    /// The entries of this link the final tree takes.
    pub keep: Box<Keep<'static>>,
    /// The archive's size and sha256 its manifest records: checked once the pass read it.
    /// `None` for a part of an archive (a range of its frames): files are checked one by one.
    pub expect: Option<ArchiveDigest>,
    /// Decoded bytes before the first entry (a range that starts inside a frame).
    pub skip: u64,
    /// Stop once this many entries were made (a range ends wherever its last frame does).
    pub take: Option<u64>,
}

impl std::fmt::Debug for ChainLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainLink").field("name", &self.name).field("expect", &self.expect).finish()
    }
}

/// The compression an archive stream uses, told by its first bytes (never by a file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// How to extract.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Create character and block device nodes (default: refuse them).
    pub allow_devices: bool,
    /// Refuse an archive whose file contents add up to more than this many bytes.
    pub max_bytes: Option<u64>,
    /// Drop this many leading path components (like GNU tar's `--strip-components`).
    pub strip_components: usize,
    /// Set owners from the archive (needs root); otherwise files belong to the caller.
    pub same_owner: bool,
    /// Compute every regular file's sha256 (into [`Written::File`]), to check the files
    /// against a manifest one by one.
    pub hash_files: bool,
    /// Compute the sha256 of the whole archive as read ([`ExtractReport::archive`]), to check
    /// it against the one a manifest records: every byte at once, for less work than hashing
    /// each file. [`extract_archive`] only.
    pub hash_archive: bool,
    /// Return only once everything extracted is on disk: the filesystem of `dest` is synced
    /// (`syncfs(2)`) at the end, after the directories' modes and times, and the kernel starts
    /// writing files out while the extraction goes on (see [`crate::pipeline`]), so that the
    /// sync does not begin from gigabytes of dirty pages. For a tree that is about to replace
    /// a volume's data: renamed into place unwritten, it could come back from a power cut as
    /// empty or partial files (delayed allocation).
    pub durable: bool,
    /// Keep setuid/setgid bits and `security.*`/`trusted.*` xattrs (an archive from this
    /// daemon's own catalog); otherwise they are dropped.
    pub preserve_privileges: bool,
    /// The room on the filesystem the extraction may use: checked before each entry.
    pub space: Option<Space>,
}

/// The most an extraction may take of its filesystem: bytes (each file counted in whole 4 KiB
/// blocks, each entry one block more) and inodes (one per entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub bytes: u64,
    pub inodes: u64,
}

/// What an extraction wrote: per regular file, its size (and sha256 with
/// [`ExtractOptions::hash_files`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractReport {
    pub compression: Option<Compression>,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Relative path → (kind, size, sha256 for files / link target for links).
    pub written: BTreeMap<String, Written>,
    /// The archive as read, with [`ExtractOptions::hash_archive`].
    pub archive: Option<ArchiveDigest>,
}

/// The size and sha256 (hex) of an archive stream, every byte of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveDigest {
    pub size: u64,
    pub sha256: String,
}

/// One extracted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// `sha256` is empty unless [`ExtractOptions::hash_files`] was set.
    File {
        size: u64,
        sha256: String,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: String,
    },
    Hardlink {
        target: String,
    },
    Fifo,
    Device,
}

/// Looks at the first bytes of `input` and returns a reader of the tar stream inside.
///
/// # Errors
/// [`RestoreError::Format`] when the stream is neither zstd, gzip nor tar.
pub fn open_archive<'a>(input: impl Read + 'a) -> Result<(Compression, Box<dyn Read + 'a>), RestoreError> {
    let mut r = BufReader::with_capacity(1 << 20, input);
    // BufReader fills its buffer with one read: 512 bytes arrive in one read from files and
    // almost always from pipes, and the magic checks need at most 262.
    let kind = detect(r.fill_buf().map_err(|e| RestoreError::Read(e.to_string()))?)?;
    Ok((kind, decoder(kind, r)?))
}

/// The compression a stream uses, told by its first bytes `head` (never by a file name).
///
/// # Errors
/// [`RestoreError::Format`] when it is empty, or neither zstd, gzip nor tar.
pub(crate) fn detect(head: &[u8]) -> Result<Compression, RestoreError> {
    if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) || is_skippable_zstd(head) {
        Ok(Compression::Zstd)
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Ok(Compression::Gzip)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Ok(Compression::None)
    } else if head.is_empty() {
        Err(RestoreError::Format("the archive is empty".into()))
    } else {
        Err(RestoreError::Format("not a tar, .tar.gz or .tar.zst archive (unknown first bytes)".into()))
    }
}

/// A reader of the tar stream inside `r`, compressed as `kind` says.
///
/// # Errors
/// [`RestoreError::Read`] when the zstd decoder cannot be made.
pub(crate) fn decoder<'a>(kind: Compression, r: impl BufRead + 'a) -> Result<Box<dyn Read + 'a>, RestoreError> {
    Ok(match kind {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| RestoreError::Read(e.to_string()))?)
        }
    })
}

fn is_skippable_zstd(head: &[u8]) -> bool {
    head.len() >= 4 && head[1..4] == [0x2A, 0x4D, 0x18] && (0x50..=0x5F).contains(&head[0])
}

/// Extracts the archive stream `input` (any [`Compression`]) into the empty directory
/// `dest`: the stream is read (and hashed, with [`ExtractOptions::hash_archive`]) and
/// decompressed on threads of their own while this thread parses and creates (see
/// [`crate::pipeline`]).
///
/// `dest` is opened once (`O_NOFOLLOW`) and everything below it is reached through that
/// descriptor: for a directory the caller made itself. [`extract_archive_into`] takes the
/// descriptor.
///
/// # Errors
/// As [`open_archive`] and [`extract`]; [`RestoreError::Thread`] when a helper thread cannot
/// start.
pub fn extract_archive(
    input: impl Read + Send + 'static,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractReport, RestoreError> {
    extract_archive_into(input, open_dest(dest)?, opts)
}

/// [`extract_archive`] into an open directory.
///
/// # Errors
/// As [`extract_archive`].
pub fn extract_archive_into(
    input: impl Read + Send + 'static,
    dest: Dir,
    opts: &ExtractOptions,
) -> Result<ExtractReport, RestoreError> {
    // On an error below the reading threads are left to stop by themselves: the next
    // hand-over fails (nobody reads any more) and they end without reading the rest.
    let (reading, raw) = crate::pipeline::spawn_reader(input, opts.hash_archive)?;
    let (kind, tar) = crate::pipeline::spawn_decoder(raw)?;
    let mut report = run::Extraction::start(dest, opts)?.run(tar)?;
    report.compression = Some(kind);
    // The stream was read to its end (see `Extraction::run`): the digest covers all of it.
    if let Some((size, sha)) = reading.digest()? {
        report.archive = Some(ArchiveDigest { size, sha256: hex::encode(sha) });
    }
    Ok(report)
}

/// Extracts an incremental chain into the empty directory `dest`: one pass per link, oldest
/// first, each making only what its `keep` takes (what the final tree takes from that link),
/// each archive's digest checked against its manifest's once read; directory modes and times
/// are set at the end (the last link's win), as for one archive. The report's `archive` is
/// `None`: every link's digest was checked here.
///
/// # Errors
/// As [`extract_archive_into`]; [`RestoreError::Manifest`] naming the link whose archive is not
/// the one its manifest describes.
pub fn extract_chain_into(
    dest: Dir,
    links: Vec<ChainLink>,
    opts: &ExtractOptions,
) -> Result<ExtractReport, RestoreError> {
    let opts = ExtractOptions { hash_archive: true, ..opts.clone() };
    let mut x = run::Extraction::start(dest, &opts)?;
    for link in links {
        let input = (link.open)()?;
        let (reading, raw) = crate::pipeline::spawn_reader(input, link.expect.is_some())?;
        let (kind, mut tar) = crate::pipeline::spawn_decoder(raw)?;
        x.report.compression = Some(kind);
        let skipped = std::io::copy(&mut (&mut tar).take(link.skip), &mut std::io::sink())
            .map_err(|e| RestoreError::Read(format!("{}: {e}", link.name)))?;
        if skipped != link.skip {
            return Err(RestoreError::Read(format!("{}: the range ends before its first entry", link.name)));
        }
        x = x.pass(tar, &*link.keep, link.take)?;
        let Some(expect) = link.expect else { continue };
        let got = reading.digest()?.map(|(size, sha)| ArchiveDigest { size, sha256: hex::encode(sha) });
        if got.as_ref() != Some(&expect) {
            return Err(RestoreError::Manifest(format!(
                "link {} of the chain is not the archive its manifest describes (sha256 {}, expected {}): it was changed or damaged after the backup",
                link.name,
                got.map_or_else(|| "not computed".into(), |d| d.sha256),
                expect.sha256
            )));
        }
    }
    x.finish()
}

/// Extracts the tar stream `input` (already decompressed) into the empty directory `dest`.
/// File contents are written (hashed, with [`ExtractOptions::hash_files`]) and finished on a
/// second thread (see [`crate::pipeline`]).
///
/// # Errors
/// [`RestoreError::Refused`] naming the entry for anything unsafe, [`RestoreError::TooLarge`]
/// over `max_bytes`, [`RestoreError::NoSpace`] over [`ExtractOptions::space`],
/// [`RestoreError::Read`] for a truncated or corrupt stream, [`RestoreError::Write`] for
/// filesystem errors in `dest`, [`RestoreError::Thread`] when the file thread cannot start.
pub fn extract(input: impl Read, dest: &Path, opts: &ExtractOptions) -> Result<ExtractReport, RestoreError> {
    run::Extraction::start(open_dest(dest)?, opts)?.run(BufReader::with_capacity(256 * 1024, input))
}

fn open_dest(dest: &Path) -> Result<Dir, RestoreError> {
    Dir::open(dest).map_err(|e| RestoreError::Write(format!("{}: {e}", dest.display())))
}

/// Appends one tar entry whose name and link name are written byte for byte, including
/// names the `tar` crate's own setters refuse (`..`, absolute paths). For building hostile
/// archives in tests of anything that restores.
///
/// # Panics
/// When a name is longer than 100 bytes or the builder's output fails.
pub fn append_raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    #[allow(clippy::expect_used)]
    b.append(&h, data).expect("appending to an in-memory tar");
}
