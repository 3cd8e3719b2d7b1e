//! A reflink copy of a directory tree (the snapshot of a directory volume on xfs): every
//! regular file `FICLONE`d, directories, symlinks, fifos and device nodes made anew, with
//! owners, modes, nanosecond mtimes and xattrs, hard links kept as hard links.
//!
//! The source belongs to containers (during a backup with `hooks` only they keep running), so
//! it is read the way a backup reads it: [`crate::walk::TreeWalk`], one component at a time
//! from directory descriptors, files opened `O_NOFOLLOW` and checked with `fstat`. The copy is
//! made under a directory of the daemon's own (`<state>/snapshots/TAG`), which no container can
//! reach, so it is written by path. Only entries on the root's filesystem are copied (a mount
//! inside the volume is left out, as the backup leaves it out).

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{FileStat, SFlag};
use nix::sys::time::TimeSpec;

use super::ficlone;
use crate::error::{Error, Result};
use crate::walk::{TreeWalk, WalkLimits, open_dir_at, open_file_at, open_root, stat_at};

/// The most directories and hard-linked files a copy keeps track of (their paths are held
/// until the end): past it the copy stops with `E2BIG`, so memory stays bounded whatever the
/// tree (about 200 bytes each).
pub const MAX_TRACKED: usize = 1_000_000;

/// What a tree copy made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeCopy {
    pub files: u64,
    pub dirs: u64,
    /// Entries left out, and why (a mount point, a file that changed kind while copied).
    pub notes: Vec<String>,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl Fn(Errno) -> Error + 'a {
    move |errno| Error::Snapshot { op, path: path.into(), errno }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    move |e| Error::Snapshot { op, path: path.into(), errno: super::io_errno(&e) }
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn times(st: &FileStat) -> [TimeSpec; 2] {
    [TimeSpec::new(st.st_atime, st.st_atime_nsec), TimeSpec::new(st.st_mtime, st.st_mtime_nsec)]
}

/// Owner, then mode (chown clears setuid bits), then times, of `dst` (a path of ours).
fn set_meta(dst: &Path, st: &FileStat, is_link: bool) -> Result<()> {
    let (uid, gid) = (Some(nix::unistd::Uid::from_raw(st.st_uid)), Some(nix::unistd::Gid::from_raw(st.st_gid)));
    let follow = if is_link { nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW } else { nix::fcntl::AtFlags::empty() };
    nix::unistd::fchownat(nix::fcntl::AT_FDCWD, dst, uid, gid, follow).map_err(err("chown", dst))?;
    if !is_link {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(st.st_mode & 0o7777))
            .map_err(io("chmod", dst))?;
    }
    let [a, m] = times(st);
    let how = if is_link {
        nix::sys::stat::UtimensatFlags::NoFollowSymlink
    } else {
        nix::sys::stat::UtimensatFlags::FollowSymlink
    };
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, dst, &a, &m, how).map_err(err("set times of", dst))
}

/// Copies the extended attributes of the open `src` to the open `dst` (at most 64 KiB of
/// names, 64 KiB per value; `security.*` too, as root).
#[allow(unsafe_code)]
fn copy_xattrs(src: &std::fs::File, dst: &std::fs::File, path: &Path) -> Result<()> {
    const LIMIT: usize = 64 << 10;
    let mut names = vec![0u8; LIMIT];
    // SAFETY: `names` is a writable buffer of the length passed; `src` is an open fd.
    let n = unsafe { libc::flistxattr(src.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return match Errno::last() {
            Errno::ENOTSUP => Ok(()),
            e => Err(Error::Snapshot { op: "list xattrs of", path: path.into(), errno: e }),
        };
    }
    let mut value = vec![0u8; LIMIT];
    for name in names[..n.unsigned_abs()].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(cname) = CString::new(name) else { continue };
        // SAFETY: `cname` is NUL-terminated, `value` writable for its length, `src` open.
        let len = unsafe { libc::fgetxattr(src.as_raw_fd(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len < 0 {
            continue; // removed meanwhile, or larger than the bound: left out
        }
        // SAFETY: `cname` is NUL-terminated, `value[..len]` initialised, `dst` open.
        let set =
            unsafe { libc::fsetxattr(dst.as_raw_fd(), cname.as_ptr(), value.as_ptr().cast(), len.unsigned_abs(), 0) };
        if set < 0 {
            return Err(Error::Snapshot { op: "set xattr on", path: path.into(), errno: Errno::last() });
        }
    }
    Ok(())
}

/// Reflinks the regular file `name` of `parent` (stat `st`) to `dst`.
fn copy_file(parent: std::os::fd::BorrowedFd<'_>, name: &OsStr, st: &FileStat, dst: &Path) -> Result<bool> {
    let Ok(src) = open_file_at(parent, name) else { return Ok(false) };
    let now = nix::sys::stat::fstat(&src).map_err(err("stat", dst))?;
    if kind(&now) != SFlag::S_IFREG || now.st_ino != st.st_ino {
        return Ok(false); // swapped while copied: left out, like the backup leaves it out
    }
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dst)
        .map_err(io("create", dst))?;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open for the call.
    #[allow(unsafe_code)]
    unsafe { ficlone(out.as_raw_fd(), src.as_raw_fd() as nix::sys::ioctl::ioctl_param_type) }
        .map_err(err("reflink", dst))?;
    copy_xattrs(&src, &out, dst)?;
    drop(out);
    set_meta(dst, &now, false)?;
    Ok(true)
}

/// Makes `dst` (which must not exist) a reflink copy of the tree at `src`; on error what was
/// made stays for the caller to remove.
///
/// # Errors
/// [`Error::Snapshot`]; `EOPNOTSUPP`/`EXDEV`/`EINVAL` from the first reflink when the
/// filesystem cannot share blocks; [`Error::Walk`] past the walk's limits.
pub fn reflink_tree(src: &Path, dst: &Path) -> Result<TreeCopy> {
    let (fd, root_st) = open_root(src)?;
    std::fs::create_dir(dst).map_err(io("create", dst))?;
    let mut walk = TreeWalk::new(src, fd, &root_st, WalkLimits::default())?;
    let mut out = TreeCopy::default();
    let mut dirs: Vec<(PathBuf, FileStat)> = vec![(dst.to_path_buf(), root_st)];
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut notes = Vec::new();
    loop {
        let item = walk.next(&mut notes)?;
        let Some(item) = item else { break };
        let target = dst.join(OsStr::from_bytes(item.rel));
        let Ok(st) = stat_at(item.parent, item.name) else { continue };
        let k = kind(&st);
        if k != SFlag::S_IFDIR
            && st.st_nlink > 1
            && let Some(first) = links.get(&(st.st_dev, st.st_ino))
        {
            std::fs::hard_link(first, &target).map_err(io("link", &target))?;
            continue;
        }
        let made = match k {
            SFlag::S_IFDIR if st.st_dev != root_st.st_dev => {
                // A mount inside the volume: the directory, empty, as a backup archives it.
                std::fs::create_dir(&target).map_err(io("create", &target))?;
                dirs.push((target.clone(), st));
                out.notes.push(format!("{}: a mount point, its contents left out", target.display()));
                false
            }
            SFlag::S_IFDIR => match open_dir_at(item.parent, item.name) {
                Ok(d) => {
                    std::fs::create_dir(&target).map_err(io("create", &target))?;
                    let now = nix::sys::stat::fstat(&d).map_err(err("stat", &target))?;
                    dirs.push((target.clone(), now));
                    out.dirs += 1;
                    walk.enter(d, now.st_dev, now.st_ino)?;
                    false
                }
                Err(_) => false,
            },
            SFlag::S_IFREG => {
                let done = copy_file(item.parent, item.name, &st, &target)?;
                out.files += u64::from(done);
                done
            }
            SFlag::S_IFLNK => match nix::fcntl::readlinkat(item.parent, item.name) {
                Ok(to) => {
                    std::os::unix::fs::symlink(&to, &target).map_err(io("symlink", &target))?;
                    set_meta(&target, &st, true)?;
                    true
                }
                Err(_) => false,
            },
            SFlag::S_IFIFO | SFlag::S_IFCHR | SFlag::S_IFBLK => {
                nix::sys::stat::mknod(
                    &target,
                    k,
                    nix::sys::stat::Mode::from_bits_truncate(st.st_mode & 0o777),
                    st.st_rdev,
                )
                .map_err(err("mknod", &target))?;
                set_meta(&target, &st, false)?;
                true
            }
            _ => false, // sockets: not archived either
        };
        if made && st.st_nlink > 1 {
            links.insert((st.st_dev, st.st_ino), target);
        }
        if dirs.len() + links.len() > MAX_TRACKED {
            return Err(Error::Snapshot {
                op: "copy (too many directories and hard links)",
                path: src.into(),
                errno: Errno::E2BIG,
            });
        }
    }
    out.notes.append(&mut notes);
    // Directories last, deepest first: their times change while entries are made in them.
    for (path, st) in dirs.iter().rev() {
        set_meta(path, st, false)?;
    }
    Ok(out)
}
