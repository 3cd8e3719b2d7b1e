//! The check's user namespace: the id range it maps, the parent's `uid_map`/`gid_map`
//! writes, the child's switch to "root without capabilities", and the owner shift that makes a
//! throwaway tree the check's own.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use nix::unistd::{Gid, Pid, Uid};

use super::child::die;
use crate::error::{Error, Result};

/// The host ids root of the check's user namespace maps to: container id `n` is host id
/// `host_uid + n` (`host_gid + n`), for `n < count`.
///
/// The default, 2147483648 (2^31) and 65536 ids, lies far above the ranges `useradd` hands
/// out in `/etc/subuid` (100000 + 65536·k) and systemd's container ranges (524288 to
/// 1879048191). It must be used by nobody else: a process or file of another user or rootless
/// container with an id in this range would be, to the check, its own (it could signal such a
/// process if it could see it — it cannot, its PID namespace holds only itself — and read or
/// write such files through the binds — it cannot write there, they are read-only and locked).
/// Every check uses the same range; checks are apart by their namespaces, not by their ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub host_uid: u32,
    pub host_gid: u32,
    pub count: u32,
}

impl Default for IdRange {
    fn default() -> Self {
        IdRange { host_uid: 1 << 31, host_gid: 1 << 31, count: 65536 }
    }
}

impl IdRange {
    /// The host id of a file owned by `id` in the backup, once it belongs to the check: in the
    /// range, or the range's `nobody` (65534) for ids the range does not hold.
    pub fn shift(&self, base: u32, id: u32) -> u32 {
        let inside = if id < self.count { id } else { 65534.min(self.count - 1) };
        base + inside
    }

    fn map_line(&self, base: u32) -> String {
        format!("0 {base} {}\n", self.count)
    }
}

/// The socket pair the parent and the child use to hand over between the two stages.
/// Both ends are close-on-exec.
pub(super) fn sync_pair() -> Result<(UnixStream, OwnedFd)> {
    let (a, b) = UnixStream::pair().map_err(|e| io_namespace("socketpair", &e))?;
    Ok((a, b.into()))
}

/// The parent's side: waits for the child to have made its user namespace, writes the maps
/// (user_namespaces(7): `setgroups` "deny" first, then `gid_map`, `uid_map`; only a process
/// with `CAP_SETUID`/`CAP_SETGID` in the parent namespace may map ids other than its own),
/// and lets it go on. A child that died before (its setup failed: the reason is in its
/// output) is not an error here; the caller reaps it.
pub(super) fn map_ids(mut f: UnixStream, pid: Pid, ids: &IdRange) -> Result<()> {
    // The first stage is our own code; 30 s is far past what it takes.
    f.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| io_namespace("sync socket timeout", &e))?;
    let mut b = [0u8; 1];
    match std::io::Read::read(&mut f, &mut b) {
        Ok(1) if b[0] == b'u' => {}
        Ok(_) => return Ok(()),
        Err(e) => return Err(io_namespace("waiting for the check's user namespace", &e)),
    }
    let proc_ = Path::new("/proc").join(pid.as_raw().to_string());
    let write = |name: &str, text: &str, op: &'static str| {
        std::fs::write(proc_.join(name), text).map_err(|e| io_namespace(op, &e))
    };
    write("setgroups", "deny", "write setgroups of the check")?;
    write("gid_map", &ids.map_line(ids.host_gid), "write gid_map of the check")?;
    write("uid_map", &ids.map_line(ids.host_uid), "write uid_map of the check")?;
    std::io::Write::write_all(&mut f, b"g").map_err(|e| io_namespace("releasing the check", &e))
}

fn io_namespace(op: &'static str, e: &io::Error) -> Error {
    Error::Namespace { op, errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)) }
}

/// The child's side, after the root is built: a new user namespace and mount namespace
/// together (the mounts are locked in the new one), wait for the maps, become uid/gid 0
/// inside, then give up every capability for good. Syscalls only; dies on failure.
pub(super) fn become_unprivileged(wfd: i32, sync: i32, max_userns: Option<&std::ffi::CStr>) {
    // SAFETY: raw syscalls on integers and small stack buffers.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            die(wfd, "unshare(user and mount namespaces)", Errno::last());
        }
        let mut b = [b'u'];
        if libc::write(sync, b.as_ptr().cast(), 1) != 1 {
            die(wfd, "signalling the parent", Errno::last());
        }
        if libc::read(sync, b.as_mut_ptr().cast(), 1) != 1 || b[0] != b'g' {
            die(wfd, "waiting for the id maps", Errno::last());
        }
        libc::close(sync);
        // Raw set*id: glibc's wrappers would signal the parent's other threads (setxid).
        if libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0 {
            die(wfd, "setresgid(0) in the user namespace", Errno::last());
        }
        if libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0 {
            die(wfd, "setresuid(0) in the user namespace", Errno::last());
        }
        if let Some(path) = max_userns {
            // A per-user-namespace sysctl: root of this namespace (CAP_SYS_RESOURCE here) sets
            // it for this namespace and those below it (sysctl user.max_user_namespaces).
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                die(wfd, "setting user.max_user_namespaces to 0", Errno::last());
            }
            libc::close(fd);
        }
        drop_capabilities(wfd);
    }
}

/// Locks the securebits (uid 0 gets no capabilities at exec, none kept across set*id),
/// empties the bounding and ambient sets, sets `no_new_privs`, and empties the effective,
/// permitted and inheritable sets (capabilities(7), prctl(2)). Syscalls only.
fn drop_capabilities(wfd: i32) {
    const SECBITS: libc::c_ulong = (libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_KEEP_CAPS_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED) as libc::c_ulong;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // SAFETY: prctl/capset with integer arguments and correctly laid-out structs.
    unsafe {
        if libc::prctl(libc::PR_SET_SECUREBITS, SECBITS, 0, 0, 0) != 0 {
            die(wfd, "locking the securebits", Errno::last());
        }
        for cap in 0..64 {
            // EINVAL past the kernel's last capability.
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && Errno::last() != Errno::EINVAL {
                die(wfd, "dropping the bounding set", Errno::last());
            }
        }
        if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 {
            die(wfd, "clearing the ambient set", Errno::last());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            die(wfd, "no_new_privs", Errno::last());
        }
        let header = Header { version: 0x2008_0522, pid: 0 }; // _LINUX_CAPABILITY_VERSION_3
        let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
        if libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) != 0 {
            die(wfd, "emptying the capability sets", Errno::last());
        }
    }
}

/// Moves the owners of everything in the directory `root` (and `root` itself) into `ids`'
/// range (see [`IdRange::shift`]), keeping setuid/setgid bits (chown clears them). For a
/// throwaway tree nothing else uses (the restore test's scratch volume): it walks by
/// descriptors (`openat2` `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`), never
/// follows a symlink and never crosses a mount, holding one directory descriptor at a time (a
/// deep tree costs memory for names, not descriptors); it goes back up by `..` and checks each
/// parent is still the directory it left.
///
/// # Errors
/// The first `fstatat`/`fchownat`/`openat2` error, naming the entry.
pub fn shift_owners(root: &Path, ids: &IdRange) -> io::Result<()> {
    struct Level {
        id: (u64, u64),
        pending: Vec<OsString>,
    }
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = nix::fcntl::open(root, flags, Mode::empty()).map_err(|e| named(e, root.as_os_str()))?;
    let st = fstat(&dir).map_err(|e| named(e, root.as_os_str()))?;
    let (uid, gid) = (ids.shift(ids.host_uid, st.st_uid), ids.shift(ids.host_gid, st.st_gid));
    nix::unistd::fchown(&dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(|e| named(e, root.as_os_str()))?;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut levels = vec![Level { id: identity(&st), pending: entries(&dir)? }];
    while let Some(level) = levels.last_mut() {
        let Some(name) = level.pending.pop() else {
            levels.pop();
            if let Some(parent) = levels.last() {
                dir = up(&dir, parent.id)?;
            }
            continue;
        };
        let st = fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| named(e, &name))?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if !is_dir && st.st_nlink > 1 && !seen.insert(identity(&st)) {
            continue; // another link of an inode already shifted
        }
        shift_entry(&dir, ids, &st, &name)?;
        if is_dir {
            let how = OpenHow::new().flags(flags).resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
            let sub = nix::fcntl::openat2(&dir, name.as_os_str(), how).map_err(|e| named(e, &name))?;
            levels.push(Level { id: identity(&st), pending: entries(&sub)? });
            dir = sub;
        }
    }
    Ok(())
}

#[allow(clippy::unnecessary_cast)]
fn identity(st: &FileStat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

fn named(e: Errno, name: &OsStr) -> io::Error {
    io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", Path::new(name).display()))
}

/// The names in a directory (not `.`, `..`), read through a descriptor of its own.
fn entries(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let fd = nix::fcntl::openat(dir, ".", OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY, Mode::empty())?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let n = e?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            out.push(OsString::from_vec(n));
        }
    }
    Ok(out)
}

/// Back to the parent by `..`, checking it is the directory the walk came from.
fn up(dir: &OwnedFd, parent: (u64, u64)) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(dir, "..", OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
    if identity(&fstat(&fd)?) != parent {
        return Err(io::Error::other("a directory moved while its owners were being shifted"));
    }
    Ok(fd)
}

fn shift_entry(dir: &OwnedFd, ids: &IdRange, st: &FileStat, name: &OsStr) -> io::Result<()> {
    let (uid, gid) = (ids.shift(ids.host_uid, st.st_uid), ids.shift(ids.host_gid, st.st_gid));
    nix::unistd::fchownat(dir, name, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| named(e, name))?;
    let special = st.st_mode & (libc::S_ISUID | libc::S_ISGID);
    if special != 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG {
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        nix::sys::stat::fchmodat(dir, name, mode, nix::sys::stat::FchmodatFlags::NoFollowSymlink)
            .map_err(|e| named(e, name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_shift_into_the_range_and_strangers_become_nobody() {
        let r = IdRange::default();
        assert_eq!(r.shift(r.host_uid, 0), 1 << 31);
        assert_eq!(r.shift(r.host_uid, 1000), (1 << 31) + 1000);
        assert_eq!(r.shift(r.host_uid, 65535), (1 << 31) + 65535);
        assert_eq!(r.shift(r.host_uid, 100_000), (1 << 31) + 65534);
        assert_eq!(r.map_line(r.host_uid), "0 2147483648 65536\n");
        let small = IdRange { host_uid: 5000, host_gid: 6000, count: 10 };
        assert_eq!(small.shift(small.host_gid, 12), 6009);
    }

    #[test]
    fn shift_owners_moves_every_entry_once_and_follows_no_link() {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIP shift_owners_moves_every_entry_once_and_follows_no_link: needs root (chown)");
            return;
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let t = tempfile::tempdir().expect("tmp");
        let outside = t.path().join("outside");
        std::fs::write(&outside, "x").expect("write");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
        std::fs::write(root.join("a/b/c/f"), "f").expect("write");
        std::fs::write(root.join("a/suid"), "s").expect("write");
        std::fs::set_permissions(root.join("a/suid"), std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        std::os::unix::fs::chown(root.join("a/b/c/f"), Some(1000), Some(100_000)).expect("chown");
        std::fs::hard_link(root.join("a/b/c/f"), root.join("a/link")).expect("link");
        std::os::unix::fs::symlink(&outside, root.join("a/b/out")).expect("symlink");
        let ids = IdRange { host_uid: 200_000, host_gid: 300_000, count: 65536 };
        shift_owners(&root, &ids).expect("shift");
        let m = |p: &str| std::fs::symlink_metadata(root.join(p)).expect("lstat");
        assert_eq!((m("").uid(), m("").gid()), (200_000, 300_000));
        assert_eq!((m("a/b/c").uid(), m("a/b/c").gid()), (200_000, 300_000));
        assert_eq!((m("a/b/c/f").uid(), m("a/b/c/f").gid()), (201_000, 365_534), "hard link shifted once");
        assert_eq!(m("a/b/out").uid(), 200_000, "the link itself");
        assert_eq!(m("a/suid").mode() & 0o7777, 0o4755, "setuid kept");
        let o = std::fs::metadata(&outside).expect("stat");
        assert_eq!((o.uid(), o.gid()), (0, 0), "nothing outside the tree");
    }
}
