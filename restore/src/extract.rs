//! Safe extraction of a tar stream into an empty staging directory.
//!
//! The archive is untrusted: it may come from anywhere (a seed-recipe `tar czf`, a file a
//! user downloaded, a corrupted backup). Nothing it says can make a write land outside the
//! staging directory:
//!
//! - entry paths are relative; absolute paths and `..` components are refused (a leading `./`
//!   and `/`-only entries are fine), as are NUL bytes and empty names;
//! - no write goes through a symbolic link: every parent of an entry must be a real directory
//!   (checked with `lstat`, and the staging directory starts empty, so every symlink in it
//!   was made by this archive); symlinks themselves are created as links, never followed;
//! - a hard link must name an earlier regular file of the same archive, by a path that passes
//!   the same checks (so it can never point at `/etc/passwd`);
//! - device nodes are refused unless allowed; sockets and unknown types are refused;
//! - the total of file contents is capped (the volume's size limit) and checked before each
//!   file is written, so a huge file fails before it fills the disk;
//! - the stream must end cleanly: a truncated archive or a corrupt compressed frame is an
//!   error (GNU tar would warn and go on).
//!
//! Modes (with setuid/setgid/sticky), numeric owners (when running as root), nanosecond
//! mtimes and `SCHILY.xattr.*` records are restored; directory modes and mtimes are applied
//! last, deepest first, so a read-only directory does not stop its own contents.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::error::RestoreError;
use crate::pipeline::{CopyError, FileMeta, FileWriter};

/// Seconds and nanoseconds since the epoch.
type Mtime = (i64, u32);

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
}

/// What an extraction wrote: per regular file, its size and sha256.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractReport {
    pub compression: Option<Compression>,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Relative path → (kind, size, sha256 for files / link target for links).
    pub written: BTreeMap<String, Written>,
}

/// One extracted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    File { size: u64, sha256: String, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
    Hardlink { target: String },
    Fifo,
    Device,
}

/// Looks at the first bytes of `input` and returns a reader of the tar stream inside.
///
/// # Errors
/// [`RestoreError::Format`] when the stream is neither zstd, gzip nor tar.
pub fn open_archive<'a>(input: impl Read + 'a) -> Result<(Compression, Box<dyn Read + 'a>), RestoreError> {
    let mut r = BufReader::with_capacity(1 << 20, input);
    let head = fill_at_least(&mut r, 512).map_err(|e| RestoreError::Read(e.to_string()))?;
    let kind = if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) || is_skippable_zstd(&head) {
        Compression::Zstd
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Compression::Gzip
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Compression::None
    } else if head.is_empty() {
        return Err(RestoreError::Format("the archive is empty".into()));
    } else {
        return Err(RestoreError::Format("not a tar, .tar.gz or .tar.zst archive (unknown first bytes)".into()));
    };
    let reader: Box<dyn Read + 'a> = match kind {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| RestoreError::Read(e.to_string()))?)
        }
    };
    Ok((kind, reader))
}

fn is_skippable_zstd(head: &[u8]) -> bool {
    head.len() >= 4 && head[1..4] == [0x2A, 0x4D, 0x18] && (0x50..=0x5F).contains(&head[0])
}

/// Reads until the buffer holds `n` bytes or the stream ends, without consuming them.
fn fill_at_least<R: Read>(r: &mut BufReader<R>, n: usize) -> io::Result<Vec<u8>> {
    // BufReader only refills when empty; peek through its buffer by reading into a copy and
    // chaining it back is not possible, so read the head into our own buffer instead.
    let buf = r.fill_buf()?;
    if buf.len() >= n {
        return Ok(buf[..n].to_vec());
    }
    // A short first read (pipes): the caller gets what there is; 512 bytes arrive in one
    // read from files and almost always from pipes, and the magic checks need at most 262.
    Ok(buf.to_vec())
}

/// Extracts the archive `input` (tar, gzip or zstd, told by its first bytes) into the empty
/// directory `dest`, decompressing on a second thread (see [`crate::pipeline`]). The report's
/// `compression` says what the stream was.
///
/// # Errors
/// As [`open_archive`] and [`extract`]; [`RestoreError::Thread`] when a helper thread cannot
/// start.
pub fn extract_archive(
    input: impl Read + Send + 'static,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractReport, RestoreError> {
    let (kind, reader) = crate::pipeline::spawn_decoder(input)?;
    let mut report = extract(reader, dest, opts)?;
    report.compression = Some(kind);
    Ok(report)
}

/// Extracts the tar stream `input` (already decompressed) into the empty directory `dest`.
/// File contents are written, hashed and finished on a second thread (see
/// [`crate::pipeline`]).
///
/// # Errors
/// [`RestoreError::Refused`] naming the entry for anything unsafe, [`RestoreError::TooLarge`]
/// over `max_bytes`, [`RestoreError::Read`] for a truncated or corrupt stream,
/// [`RestoreError::Write`] for filesystem errors in `dest`, [`RestoreError::Thread`] when the
/// file thread cannot start.
pub fn extract(input: impl Read, dest: &Path, opts: &ExtractOptions) -> Result<ExtractReport, RestoreError> {
    let mut dirs: Vec<(PathBuf, u32, Option<Mtime>)> = Vec::new();
    let mut report = ExtractReport::default();
    let mut files: HashSet<String> = HashSet::new();
    let mut known_dirs: HashSet<PathBuf> = HashSet::new();
    // The names of the files handed to the file thread, in the order it numbers them.
    let mut hashed: Vec<String> = Vec::new();
    let mut writer = FileWriter::start()?;
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(|e| RestoreError::Read(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| RestoreError::Read(format!("after {} entries: {e}", report.entries)))?;
        let raw = entry.path_bytes().into_owned();
        let Some(rel) = safe_path(&raw, opts.strip_components)? else { continue };
        let name = rel.to_string_lossy().into_owned();
        report.entries += 1;
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().ok().map(|s| (i64::try_from(s).unwrap_or(0), 0u32));
        let pax = pax_records(&mut entry);
        let mtime = pax.mtime.or(mtime);
        let full = dest.join(&rel);
        check_parents(dest, &rel, &name, &mut known_dirs)?;
        let kind = header.entry_type();
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(refused(&name, "a directory entry where the archive already put a file")),
                    Err(_) => fs::create_dir(&full).map_err(write_err(&full))?,
                }
                fs::set_permissions(&full, fs::Permissions::from_mode(0o700)).map_err(write_err(&full))?;
                set_owner(&full, &header, opts, false)?;
                known_dirs.insert(rel);
                dirs.push((full.clone(), mode, mtime));
                report.written.insert(name, Written::Dir { mode });
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                if kind == EntryType::GNUSparse {
                    return Err(refused(&name, "GNU sparse entries are not supported; archive with --sparse off"));
                }
                let size = entry.size();
                if let Some(max) = opts.max_bytes
                    && report.bytes.saturating_add(size) > max
                {
                    return Err(RestoreError::TooLarge { entry: name, limit: max });
                }
                // O_CREAT|O_EXCL|O_NOFOLLOW (open(2)): fails on anything already there,
                // symlinks included, so an earlier entry of the same name is looked at (and
                // replaced, tar semantics) only then, instead of an lstat before every file.
                let out = match create_file(&full) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        remove_non_dir(&full, &name)?;
                        create_file(&full).map_err(write_err(&full))?
                    }
                    Err(e) => return Err(write_err(&full)(e)),
                };
                // The file thread writes the bytes, then sets owner, mode, xattrs and times
                // through the descriptor (no path lookups: nothing can be swapped in under the
                // name) and closes it.
                let meta = FileMeta { owner: owner(&header, opts), mode, xattrs: pax.xattrs, mtime };
                let copied =
                    writer.copy(&mut entry, out, full.clone(), meta).map_err(|e| stream_or_write(e, &full, &name))?;
                if copied != size {
                    return Err(RestoreError::Read(format!("entry {name:?}: the archive ends inside the file")));
                }
                if writer.failed() {
                    // Its error, naming the file.
                    writer.finish()?;
                    return Err(RestoreError::Write(format!("{}: the file writer stopped", full.display())));
                }
                report.files += 1;
                report.bytes += size;
                files.insert(name.clone());
                hashed.push(name.clone());
                report.written.insert(name, Written::File { size, sha256: String::new(), mode });
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .ok_or_else(|| refused(&name, "a symlink without a target"))?;
                remove_non_dir(&full, &name)?;
                std::os::unix::fs::symlink(&target, &full).map_err(write_err(&full))?;
                set_owner(&full, &header, opts, true)?;
                if let Some((s, ns)) = mtime {
                    let t = filetime::FileTime::from_unix_time(s, ns);
                    let _ = filetime::set_symlink_file_times(&full, t, t);
                }
                report.written.insert(name, Written::Symlink { target });
            }
            EntryType::Link => {
                let raw_target = entry.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                let shown = String::from_utf8_lossy(&raw_target).into_owned();
                let target = match safe_path(&raw_target, opts.strip_components) {
                    Ok(Some(t)) => t,
                    Ok(None) => return Err(refused(&name, "a hard link to nothing")),
                    Err(_) => {
                        return Err(refused(&name, &format!("a hard link to {shown:?}, outside the volume")));
                    }
                };
                let tname = target.to_string_lossy().into_owned();
                if !files.contains(&tname) {
                    return Err(refused(
                        &name,
                        &format!("a hard link to {tname:?}, which is not a file extracted earlier from this archive"),
                    ));
                }
                check_parents(dest, &target, &name, &mut known_dirs)?;
                remove_non_dir(&full, &name)?;
                fs::hard_link(dest.join(&target), &full).map_err(write_err(&full))?;
                report.written.insert(name, Written::Hardlink { target: tname });
            }
            EntryType::Fifo => {
                remove_non_dir(&full, &name)?;
                nix::unistd::mkfifo(&full, nix::sys::stat::Mode::from_bits_truncate(mode))
                    .map_err(|e| RestoreError::Write(format!("{}: {e}", full.display())))?;
                set_owner(&full, &header, opts, false)?;
                report.written.insert(name, Written::Fifo);
            }
            EntryType::Char | EntryType::Block => {
                if !opts.allow_devices {
                    return Err(refused(&name, "a device node (restore with --allow-devices to create it)"));
                }
                let dev = nix::sys::stat::makedev(
                    u64::from(header.device_major().ok().flatten().unwrap_or(0)),
                    u64::from(header.device_minor().ok().flatten().unwrap_or(0)),
                );
                let sflag = if kind == EntryType::Char {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                remove_non_dir(&full, &name)?;
                nix::sys::stat::mknod(&full, sflag, nix::sys::stat::Mode::from_bits_truncate(mode), dev)
                    .map_err(|e| RestoreError::Write(format!("{}: {e}", full.display())))?;
                set_owner(&full, &header, opts, false)?;
                report.written.insert(name, Written::Device);
            }
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {
                report.entries -= 1;
            }
            other => return Err(refused(&name, &format!("an entry of type {other:?}, which restore does not create"))),
        }
    }
    // Every file's sha256, from the hashing thread. A name written twice (tar semantics: the
    // later entry wins) gets the later file's digest last; a name whose later entry is no
    // longer a file keeps what that entry wrote.
    let digests = writer.finish()?;
    for (name, digest) in hashed.iter().zip(digests) {
        if let Some(Written::File { sha256, .. }) = report.written.get_mut(name) {
            *sha256 = hex::encode(digest);
        }
    }
    // Directory modes and times last, deepest first.
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (p, mode, mtime) in dirs {
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(write_err(&p))?;
        if let Some((s, ns)) = mtime {
            let t = filetime::FileTime::from_unix_time(s, ns);
            filetime::set_file_times(&p, t, t).map_err(write_err(&p))?;
        }
    }
    Ok(report)
}

fn refused(entry: &str, why: &str) -> RestoreError {
    RestoreError::Refused { entry: entry.to_owned(), reason: why.to_owned() }
}

fn write_err(p: &Path) -> impl Fn(io::Error) -> RestoreError + '_ {
    move |e| RestoreError::Write(format!("{}: {e}", p.display()))
}

fn stream_or_write(e: CopyError, p: &Path, name: &str) -> RestoreError {
    match e {
        CopyError::Read(e) => RestoreError::Read(format!("entry {name:?}: {e}")),
        CopyError::Write(e) => RestoreError::Write(format!("{}: {e}", p.display())),
    }
}

fn create_file(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(p)
}

/// Validates an entry path: relative, no `..`, no NUL. `None` for the root itself (`./`) and
/// entries removed by `strip`.
fn safe_path(raw: &[u8], strip: usize) -> Result<Option<PathBuf>, RestoreError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    if raw.contains(&0) {
        return Err(refused(&shown, "a name with a NUL byte"));
    }
    let p = Path::new(std::ffi::OsStr::from_bytes(raw));
    if p.is_absolute() {
        return Err(refused(&shown, "an absolute path (restore writes only inside the volume)"));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(refused(&shown, "a path with '..' (it would leave the volume)")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(&shown, "an absolute path (restore writes only inside the volume)"));
            }
        }
    }
    if parts.len() <= strip {
        return Ok(None);
    }
    Ok(Some(parts[strip..].iter().collect()))
}

/// Every parent of `rel` under `dest` must be a real directory (made if missing).
///
/// `known` holds the directories (relative to `dest`) this extraction has already checked or
/// made, so each is `lstat`ed once, not once per entry below it. That stays true for the whole
/// extraction: nothing in an archive can turn a directory into something else (every entry
/// that would replace a path refuses a directory there, see [`remove_non_dir`], and nothing
/// removes directories), and a directory's parents are checked before it is recorded.
fn check_parents(dest: &Path, rel: &Path, name: &str, known: &mut HashSet<PathBuf>) -> Result<(), RestoreError> {
    let Some(parent) = rel.parent() else { return Ok(()) };
    if parent.as_os_str().is_empty() || known.contains(parent) {
        return Ok(());
    }
    let mut cur = dest.to_path_buf();
    let mut sub = PathBuf::new();
    for c in parent.components() {
        cur.push(c);
        sub.push(c);
        if known.contains(&sub) {
            continue;
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(
                    name,
                    &format!(
                        "a path through the symlink {:?} (it could point outside the volume)",
                        cur.strip_prefix(dest).unwrap_or(&cur)
                    ),
                ));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(refused(name, "a path through a file")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(write_err(&cur))?;
            }
            Err(e) => return Err(RestoreError::Write(format!("{}: {e}", cur.display()))),
        }
        known.insert(sub.clone());
    }
    Ok(())
}

/// Tar semantics: a later entry replaces an earlier one of the same name (but never a
/// directory with its contents).
fn remove_non_dir(full: &Path, name: &str) -> Result<(), RestoreError> {
    match fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => Err(refused(name, "a non-directory where the archive already put a directory")),
        Ok(_) => fs::remove_file(full).map_err(write_err(full)),
        Err(_) => Ok(()),
    }
}

/// The owner to give a file: the archive's when restoring owners, else none.
fn owner(h: &tar::Header, opts: &ExtractOptions) -> Option<(Option<u32>, Option<u32>)> {
    opts.same_owner
        .then(|| (h.uid().ok().and_then(|u| u32::try_from(u).ok()), h.gid().ok().and_then(|g| u32::try_from(g).ok())))
}

fn set_owner(p: &Path, h: &tar::Header, opts: &ExtractOptions, link: bool) -> Result<(), RestoreError> {
    if !opts.same_owner {
        return Ok(());
    }
    let uid = h.uid().ok().and_then(|u| u32::try_from(u).ok());
    let gid = h.gid().ok().and_then(|g| u32::try_from(g).ok());
    let r = if link { std::os::unix::fs::lchown(p, uid, gid) } else { std::os::unix::fs::chown(p, uid, gid) };
    r.map_err(write_err(p))
}

/// What an entry's pax records say that restore applies.
#[derive(Default)]
struct Pax {
    /// Nanosecond mtime from an `mtime` record.
    mtime: Option<Mtime>,
    /// `SCHILY.xattr.NAME` records: (NAME, value).
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Reads the entry's pax records once (the mtime and the xattrs).
fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> Pax {
    let mut pax = Pax::default();
    let Ok(Some(exts)) = entry.pax_extensions() else { return pax };
    let mut mtime_seen = false;
    for ext in exts.flatten() {
        let Ok(key) = ext.key() else { continue };
        if key == "mtime" {
            // The first record counts, even when it does not parse.
            if !mtime_seen {
                pax.mtime = ext.value().ok().and_then(parse_pax_time);
                mtime_seen = true;
            }
        } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            pax.xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
        }
    }
    pax
}

/// A pax time (`SECONDS[.FRACTION]`) as seconds and nanoseconds.
fn parse_pax_time(v: &str) -> Option<Mtime> {
    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = s.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let ns: u32 = digits.parse().unwrap_or(0);
    // A negative fractional time counts down from the whole second.
    Some(if secs < 0 && ns > 0 { (secs - 1, 1_000_000_000 - ns) } else { (secs, ns) })
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
