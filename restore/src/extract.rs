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

use crate::error::RestoreError;
use crate::pipeline::{CopyError, FileMeta, FileWriter, WriteBehind};
use voltool_backup::tarparse::{Header, Kind, TarReader};

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

/// Extracts the archive `input` (tar, gzip or zstd, told by its first bytes) into the empty
/// directory `dest`, reading ahead (and hashing, with [`ExtractOptions::hash_archive`]) on one
/// thread and decompressing on another (see [`crate::pipeline`]). The report's `compression`
/// says what the stream was.
///
/// # Errors
/// As [`open_archive`] and [`extract`]; [`RestoreError::Thread`] when a helper thread cannot
/// start.
pub fn extract_archive(
    input: impl Read + Send + 'static,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractReport, RestoreError> {
    // On an error below the reading threads are left to stop by themselves: the next
    // hand-over fails (nobody reads any more) and they end without reading the rest.
    let (reading, raw) = crate::pipeline::spawn_reader(input, opts.hash_archive)?;
    let (kind, tar) = crate::pipeline::spawn_decoder(raw)?;
    let mut report = extract_from(tar, dest, opts)?;
    report.compression = Some(kind);
    // The stream was read to its end (see `extract_from`): the digest covers all of it.
    if let Some((size, sha)) = reading.digest()? {
        report.archive = Some(ArchiveDigest { size, sha256: hex::encode(sha) });
    }
    Ok(report)
}

/// Extracts the tar stream `input` (already decompressed) into the empty directory `dest`.
/// File contents are written (hashed, with [`ExtractOptions::hash_files`]) and finished on a
/// second thread (see [`crate::pipeline`]).
///
/// # Errors
/// [`RestoreError::Refused`] naming the entry for anything unsafe, [`RestoreError::TooLarge`]
/// over `max_bytes`, [`RestoreError::Read`] for a truncated or corrupt stream,
/// [`RestoreError::Write`] for filesystem errors in `dest`, [`RestoreError::Thread`] when the
/// file thread cannot start.
pub fn extract(input: impl Read, dest: &Path, opts: &ExtractOptions) -> Result<ExtractReport, RestoreError> {
    extract_from(BufReader::with_capacity(256 * 1024, input), dest, opts)
}

/// [`extract`] over a buffered stream (file contents are read straight out of its buffers).
fn extract_from(input: impl BufRead, dest: &Path, opts: &ExtractOptions) -> Result<ExtractReport, RestoreError> {
    let mut dirs: Vec<(PathBuf, u32, Option<Mtime>)> = Vec::new();
    let mut report = ExtractReport::default();
    let mut known_dirs: HashSet<PathBuf> = HashSet::new();
    // The names of the files handed to the file thread, in the order it numbers them.
    let mut hashed: Vec<String> = Vec::new();
    // Opened before anything is written: its sync reports any writeback error since.
    let durable = opts.durable.then(|| File::open(dest)).transpose().map_err(write_err(dest))?;
    let behind = match &durable {
        Some(_) => Some(WriteBehind::start(File::open(dest).map_err(write_err(dest))?)?),
        None => None,
    };
    let mut writer = FileWriter::start(opts.hash_files, behind)?;
    let mut tar = TarReader::new(input);
    let creation = Creation::new(dest);
    let mut parent = ParentDir { rel: PathBuf::new(), dir: None };
    loop {
        let header = tar.next_entry().map_err(|e| RestoreError::Read(format!("after {} entries: {e}", tar.count())))?;
        let Some(header) = header else { break };
        let Some(rel) = safe_path(&header.path, opts.strip_components)? else { continue };
        let name = rel.to_string_lossy().into_owned();
        report.entries += 1;
        let mode = header.mode.unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime;
        let full = dest.join(&rel);
        check_parents(dest, &rel, &name, &mut known_dirs)?;
        let kind = header.kind.unwrap_or(Kind::Other(0));
        match kind {
            Kind::Directory => {
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(refused(&name, "a directory entry where the archive already put a file")),
                    Err(_) => fs::create_dir(&full).map_err(write_err(&full))?,
                }
                fs::set_permissions(&full, fs::Permissions::from_mode(0o700)).map_err(write_err(&full))?;
                set_owner(&full, &header, opts, false)?;
                known_dirs.insert(rel);
                dirs.push((full, mode, mtime));
                report.written.insert(name, Written::Dir { mode });
            }
            Kind::Regular | Kind::Continuous | Kind::GnuSparse => {
                if kind == Kind::GnuSparse {
                    return Err(refused(&name, "GNU sparse entries are not supported; archive with --sparse off"));
                }
                let size = header.size;
                if let Some(max) = opts.max_bytes
                    && report.bytes.saturating_add(size) > max
                {
                    return Err(RestoreError::TooLarge { entry: name, limit: max });
                }
                // O_CREAT|O_EXCL|O_NOFOLLOW (open(2)): fails on anything already there,
                // symlinks included, so an earlier entry of the same name is looked at (and
                // replaced, tar semantics) only then, instead of an lstat before every file.
                let file_name = rel.file_name().ok_or_else(|| refused(&name, "a file without a name"))?;
                let dir = parent.get(dest, rel.parent().unwrap_or(Path::new("")))?;
                let out = match create_file(dir, file_name, mode & 0o777) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        remove_non_dir(&full, &name)?;
                        create_file(dir, file_name, mode & 0o777).map_err(write_err(&full))?
                    }
                    Err(e) => return Err(write_err(&full)(e)),
                };
                // The file thread writes the bytes, then sets owner, mode, xattrs and times
                // through the descriptor (no path lookups: nothing can be swapped in under the
                // name) and closes it; owner and mode only where creating did not already
                // give the right ones.
                let meta = FileMeta {
                    owner: creation.owner(&header, opts),
                    mode: creation.chmod_needed(mode).then_some(mode),
                    xattrs: header.xattrs,
                    mtime,
                };
                let copied = writer
                    .copy(&mut tar.contents(), out, full, meta)
                    .map_err(|e| stream_or_write(e, &dest.join(&rel), &name))?;
                if copied != size {
                    return Err(RestoreError::Read(format!("entry {name:?}: the archive ends inside the file")));
                }
                if writer.failed() {
                    // Its error, naming the file.
                    writer.finish()?;
                    return Err(RestoreError::Write(format!("{}: the file writer stopped", dest.join(&rel).display())));
                }
                report.files += 1;
                report.bytes += size;
                if opts.hash_files {
                    hashed.push(name.clone());
                }
                report.written.insert(name, Written::File { size, sha256: String::new(), mode });
            }
            Kind::Symlink => {
                if header.link.is_empty() {
                    return Err(refused(&name, "a symlink without a target"));
                }
                let target = String::from_utf8_lossy(&header.link).into_owned();
                remove_non_dir(&full, &name)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&header.link), &full)
                    .map_err(write_err(&full))?;
                set_owner(&full, &header, opts, true)?;
                if let Some((s, ns)) = mtime {
                    let t = filetime::FileTime::from_unix_time(s, ns);
                    let _ = filetime::set_symlink_file_times(&full, t, t);
                }
                report.written.insert(name, Written::Symlink { target });
            }
            Kind::Link => {
                let shown = String::from_utf8_lossy(&header.link).into_owned();
                let target = match safe_path(&header.link, opts.strip_components) {
                    Ok(Some(t)) => t,
                    Ok(None) => return Err(refused(&name, "a hard link to nothing")),
                    Err(_) => {
                        return Err(refused(&name, &format!("a hard link to {shown:?}, outside the volume")));
                    }
                };
                let tname = target.to_string_lossy().into_owned();
                // Only to a regular file this archive wrote, and that is still one (a later
                // entry of the same name may have replaced it).
                if !matches!(report.written.get(&tname), Some(Written::File { .. })) {
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
            Kind::Fifo => {
                remove_non_dir(&full, &name)?;
                nix::unistd::mkfifo(&full, nix::sys::stat::Mode::from_bits_truncate(mode))
                    .map_err(|e| RestoreError::Write(format!("{}: {e}", full.display())))?;
                set_owner(&full, &header, opts, false)?;
                report.written.insert(name, Written::Fifo);
            }
            Kind::Char | Kind::Block => {
                if !opts.allow_devices {
                    return Err(refused(&name, "a device node (restore with --allow-devices to create it)"));
                }
                let dev = nix::sys::stat::makedev(u64::from(header.dev_major), u64::from(header.dev_minor));
                let sflag =
                    if kind == Kind::Char { nix::sys::stat::SFlag::S_IFCHR } else { nix::sys::stat::SFlag::S_IFBLK };
                remove_non_dir(&full, &name)?;
                nix::sys::stat::mknod(&full, sflag, nix::sys::stat::Mode::from_bits_truncate(mode), dev)
                    .map_err(|e| RestoreError::Write(format!("{}: {e}", full.display())))?;
                set_owner(&full, &header, opts, false)?;
                report.written.insert(name, Written::Device);
            }
            Kind::Other(flag) => {
                return Err(refused(
                    &name,
                    &format!("an entry of type {:?}, which restore does not create", char::from(flag)),
                ));
            }
        }
    }
    // The end of the tar archive is not the end of the stream: read it to its end, so a
    // damaged or truncated compressed frame after the archive's last block still fails (and
    // the whole archive is read, for its digest). What follows the end blocks is ignored, as
    // GNU tar does.
    let mut rest = tar.into_inner();
    loop {
        let n = rest.fill_buf().map_err(|e| RestoreError::Read(format!("after the last entry: {e}")))?.len();
        if n == 0 {
            break;
        }
        rest.consume(n);
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
    if let Some(dir) = durable {
        nix::unistd::syncfs(&dir)
            .map_err(|e| RestoreError::Write(format!("writing {} to disk: {e}", dest.display())))?;
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

/// Creates the new file `name` in the directory `dir` (`O_CREAT|O_EXCL|O_NOFOLLOW`, so
/// nothing already there is followed or reused) with permission bits `perm`.
fn create_file(dir: &File, name: &std::ffi::OsStr, perm: u32) -> io::Result<File> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, name, flags, nix::sys::stat::Mode::from_bits_truncate(perm))
        .map(File::from)
        .map_err(io::Error::from)
}

/// The directory a file is created in, kept open while consecutive entries share it: each
/// file is then created by its name alone (openat(2)) instead of a path the kernel walks from
/// the root. Every directory opened here passed [`check_parents`] (real directories, no
/// symlinks, all made or checked by this extraction).
struct ParentDir {
    rel: PathBuf,
    dir: Option<File>,
}

impl ParentDir {
    fn get(&mut self, dest: &Path, rel_parent: &Path) -> Result<&File, RestoreError> {
        if self.dir.is_none() || self.rel != rel_parent {
            let full = dest.join(rel_parent);
            let d = OpenOptions::new()
                .read(true)
                .custom_flags((nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_NOFOLLOW).bits())
                .open(&full)
                .map_err(write_err(&full))?;
            self.rel = rel_parent.to_path_buf();
            self.dir = Some(d);
        }
        self.dir.as_ref().ok_or_else(|| RestoreError::Write("no parent directory".into()))
    }
}

/// What a new file needs after it is created with its permission bits, given how files are
/// created here: `(owner to set, whether the mode must be set again)`.
///
/// A file is created owned by the restoring process, with its mode's permission bits less the
/// umask; only what differs is set again afterwards (most archives restored by root hold files
/// of root, with modes the umask does not touch: two system calls fewer per file).
struct Creation {
    uid: u32,
    gid: u32,
    /// `None` when the creating group is not known (a setgid staging directory), or the umask.
    gid_known: bool,
    umask: Option<u32>,
}

impl Creation {
    fn new(dest: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        let setgid = fs::metadata(dest).map_or(true, |m| m.mode() & 0o2000 != 0);
        let umask = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Umask:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        });
        Self { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw(), gid_known: !setgid, umask }
    }

    fn owner(&self, h: &Header, opts: &ExtractOptions) -> Option<(Option<u32>, Option<u32>)> {
        let (uid, gid) = owner(h, opts)?;
        let uid = uid.filter(|&u| u != self.uid);
        let gid = gid.filter(|&g| !self.gid_known || g != self.gid);
        (uid.is_some() || gid.is_some()).then_some((uid, gid))
    }

    fn chmod_needed(&self, mode: u32) -> bool {
        mode & 0o7000 != 0 || self.umask.is_none_or(|u| mode & u != 0)
    }
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
fn owner(h: &Header, opts: &ExtractOptions) -> Option<(Option<u32>, Option<u32>)> {
    opts.same_owner.then(|| (h.uid.and_then(|u| u32::try_from(u).ok()), h.gid.and_then(|g| u32::try_from(g).ok())))
}

fn set_owner(p: &Path, h: &Header, opts: &ExtractOptions, link: bool) -> Result<(), RestoreError> {
    if !opts.same_owner {
        return Ok(());
    }
    let uid = h.uid.and_then(|u| u32::try_from(u).ok());
    let gid = h.gid.and_then(|g| u32::try_from(g).ok());
    let r = if link { std::os::unix::fs::lchown(p, uid, gid) } else { std::os::unix::fs::chown(p, uid, gid) };
    r.map_err(write_err(p))
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
