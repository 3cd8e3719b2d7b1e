//! The child side of the check container: build the root while still privileged, then
//! become unprivileged and exec. Syscalls only, on values prepared before clone(2): see the
//! module docs of [`super`].

use std::ffi::CStr;

use nix::errno::Errno;

use super::{Prepared, userns};

/// Where the child keeps its output pipe and its end of the sync socket.
pub(super) const REPORT: i32 = 3;
pub(super) const SYNC: i32 = 4;

/// Writes `msg` and the errno to `fd`, then exits 127. No allocation.
pub(super) fn die(fd: i32, msg: &str, errno: Errno) -> ! {
    let mut buf = [0u8; 24];
    let mut n = errno as i32;
    let mut i = buf.len();
    if n <= 0 {
        n = 0;
    }
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    // SAFETY: writing valid buffers to an open descriptor, then _exit; no allocation.
    unsafe {
        libc::write(fd, b"voltool-check: ".as_ptr().cast(), 15);
        libc::write(fd, msg.as_ptr().cast(), msg.len());
        libc::write(fd, b" failed, errno ".as_ptr().cast(), 15);
        libc::write(fd, buf[i..].as_ptr().cast(), buf.len() - i);
        libc::write(fd, b"\n".as_ptr().cast(), 1);
        libc::_exit(127)
    }
}

fn mount(src: Option<&CStr>, dst: &CStr, fstype: Option<&CStr>, flags: libc::c_ulong, data: Option<&CStr>) -> Errno {
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let r = unsafe {
        libc::mount(
            src.map_or(std::ptr::null(), CStr::as_ptr),
            dst.as_ptr(),
            fstype.map_or(std::ptr::null(), CStr::as_ptr),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r == 0 { Errno::UnknownErrno } else { Errno::last() }
}

fn ok(e: Errno) -> bool {
    e == Errno::UnknownErrno
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes the mount at `dst` and everything under it `ro,nosuid,nodev` (mount_setattr(2),
/// `AT_RECURSIVE`), falling back to remounting the top one on kernels without it.
fn read_only_recursive(dst: &CStr) -> Errno {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: valid path and a correctly sized, initialised mount_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            dst.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Errno::UnknownErrno;
    }
    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    mount(None, dst, None, flags, None)
}

/// Moves the report pipe to fd 3 and the sync socket to fd 4, both close-on-exec, and closes
/// every other descriptor the child inherited but stdio. The child gets a copy of the
/// daemon's descriptor table: an open file of another thread (a volume being written, a
/// backup being read) would otherwise stay open here until exec (`O_CLOEXEC`) and keep that
/// mount busy for a concurrent unmount. Syscalls only.
fn keep_only_own_fds(wfd: i32, sync: i32) -> (i32, i32) {
    // SAFETY: fcntl/dup2/close_range on descriptors of this process's private table.
    unsafe {
        // First out of the way (>= 10), so that neither dup2 below overwrites the other.
        let (w, s) = (libc::fcntl(wfd, libc::F_DUPFD_CLOEXEC, 10), libc::fcntl(sync, libc::F_DUPFD_CLOEXEC, 10));
        if w < 0 || s < 0 || libc::dup2(w, REPORT) != REPORT || libc::dup2(s, SYNC) != SYNC {
            return (wfd, sync); // keep going with what we have; exec still closes the rest
        }
        // dup2 cleared close-on-exec: the command gets the pipe as 1 and 2 only.
        libc::fcntl(REPORT, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(SYNC, libc::F_SETFD, libc::FD_CLOEXEC);
        // close_range(2) (Linux 5.9); on older kernels exec's O_CLOEXEC remains the backstop.
        libc::syscall(libc::SYS_close_range, SYNC as libc::c_uint + 1, libc::c_uint::MAX, 0 as libc::c_uint);
    }
    (REPORT, SYNC)
}

/// The child: set the namespaces' filesystem up, become unprivileged and exec.
pub(super) fn main(p: &Prepared, wfd: i32, sync: i32) -> isize {
    let (wfd, sync) = keep_only_own_fds(wfd, sync);
    build_root(p, wfd);
    enter_root(p, wfd);
    limit(p, wfd);
    userns::become_unprivileged(wfd, sync, p.max_userns.as_deref());
    exec(p, wfd)
}

/// Binds the rootfs's system directories read-only, nosuid, nodev onto a read-only tmpfs.
fn build_root(p: &Prepared, wfd: i32) {
    let tmpfs = c"tmpfs";
    if !ok(mount(None, &p.slash, None, libc::MS_REC | libc::MS_PRIVATE, None)) {
        die(wfd, "making / private", Errno::last());
    }
    let e = mount(Some(tmpfs), &p.newroot, Some(tmpfs), libc::MS_NOSUID | libc::MS_NODEV, Some(c"size=1m,mode=755"));
    if !ok(e) {
        die(wfd, "mounting the root tmpfs", e);
    }
    for (target, link) in &p.symlinks {
        // SAFETY: valid strings.
        if unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) } != 0 {
            die(wfd, "symlink in the root", Errno::last());
        }
    }
    for (src, dst) in &p.binds {
        // SAFETY: valid string.
        if unsafe { libc::mkdir(dst.as_ptr(), 0o755) } != 0 {
            die(wfd, "mkdir in the root", Errno::last());
        }
        let e = mount(Some(src), dst, None, libc::MS_BIND | libc::MS_REC, None);
        if !ok(e) {
            die(wfd, "binding a rootfs directory", e);
        }
        let e = read_only_recursive(dst);
        if !ok(e) {
            die(wfd, "making a rootfs directory read-only", e);
        }
    }
    for d in [&p.proc_, &p.dev, &p.tmp, &p.data_dst] {
        // SAFETY: valid string.
        if unsafe { libc::mkdir(d.as_ptr(), 0o755) } != 0 {
            die(wfd, "mkdir of /proc, /dev, /tmp or /data", Errno::last());
        }
    }
    build_special(p, wfd);
}

/// `/proc`, `/dev`, `/tmp` and `/data`.
fn build_special(p: &Prepared, wfd: i32) {
    let tmpfs = c"tmpfs";
    let (nosuid, nodev, noexec) = (libc::MS_NOSUID, libc::MS_NODEV, libc::MS_NOEXEC);
    let e = mount(Some(c"proc"), &p.proc_, Some(c"proc"), nosuid | nodev | noexec, None);
    if !ok(e) {
        die(wfd, "mounting /proc", e);
    }
    // nodev: a node made here would not open; the four bound in are mounts of their own.
    let e = mount(Some(tmpfs), &p.dev, Some(tmpfs), nosuid | nodev | noexec, Some(c"size=64k,mode=755"));
    if !ok(e) {
        die(wfd, "mounting /dev", e);
    }
    for (src, dst) in &p.devices {
        // SAFETY: valid string; the fd is closed at once.
        let fd = unsafe { libc::open(dst.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o666) };
        if fd < 0 {
            die(wfd, "creating a /dev node", Errno::last());
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        let e = mount(Some(src), dst, None, libc::MS_BIND, None);
        if !ok(e) {
            die(wfd, "binding a /dev node", e);
        }
    }
    // /dev itself read-only: nothing can be created there (the nodes stay writable).
    let e = mount(None, &p.dev, None, libc::MS_REMOUNT | libc::MS_RDONLY | nosuid | nodev | noexec, None);
    if !ok(e) {
        die(wfd, "making /dev read-only", e);
    }
    let e = mount(Some(tmpfs), &p.tmp, Some(tmpfs), nosuid | nodev | noexec, Some(c"size=64m,mode=1777"));
    if !ok(e) {
        die(wfd, "mounting /tmp", e);
    }
    let e = mount(Some(&p.data_src), &p.data_dst, None, libc::MS_BIND | libc::MS_REC, None);
    if !ok(e) {
        die(wfd, "binding /data", e);
    }
    // A bind's flags are set by a remount of the bind (mount(2), MS_BIND | MS_REMOUNT).
    let e = mount(None, &p.data_dst, None, libc::MS_REMOUNT | libc::MS_BIND | nosuid | nodev, None);
    if !ok(e) {
        die(wfd, "making /data nosuid,nodev", e);
    }
    let e = mount(None, &p.newroot, None, libc::MS_REMOUNT | libc::MS_RDONLY | nosuid | nodev, None);
    if !ok(e) {
        die(wfd, "making the root read-only", e);
    }
}

/// `pivot_root` into the new root and detach the old one; hostname.
fn enter_root(p: &Prepared, wfd: i32) {
    // SAFETY: chdir/pivot_root/umount2/sethostname on valid strings.
    unsafe {
        if libc::chdir(p.newroot.as_ptr()) != 0 {
            die(wfd, "chdir to the new root", Errno::last());
        }
        if libc::syscall(libc::SYS_pivot_root, p.dot.as_ptr(), p.dot.as_ptr()) != 0 {
            die(wfd, "pivot_root", Errno::last());
        }
        if libc::umount2(p.dot.as_ptr(), libc::MNT_DETACH) != 0 {
            die(wfd, "detaching the old root", Errno::last());
        }
        if libc::chdir(p.slash.as_ptr()) != 0 {
            die(wfd, "chdir /", Errno::last());
        }
        let host = b"voltool-check";
        libc::sethostname(host.as_ptr().cast(), host.len());
    }
}

/// Drops the daemon's supplementary groups (host gid 0 would stay one in the user namespace)
/// and sets the rlimits when no cgroup limits the command. Soft and hard: raising a hard
/// limit needs `CAP_SYS_RESOURCE` in the host namespace, which the command will not have.
fn limit(p: &Prepared, wfd: i32) {
    // SAFETY: raw setgroups(2) with an empty list (not glibc's, which signals all threads).
    if unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) } != 0 {
        die(wfd, "dropping supplementary groups", Errno::last());
    }
    let Some((nproc, mem)) = p.rlimits else { return };
    for (res, v, what) in [(libc::RLIMIT_NPROC, nproc, "RLIMIT_NPROC"), (libc::RLIMIT_AS, mem, "RLIMIT_AS")] {
        let r = libc::rlimit { rlim_cur: v, rlim_max: v };
        // SAFETY: a valid rlimit struct.
        if unsafe { libc::setrlimit(res, &r) } != 0 {
            die(wfd, what, Errno::last());
        }
    }
}

fn exec(p: &Prepared, wfd: i32) -> isize {
    // SAFETY: open/dup2/execve on valid strings and NULL-terminated arrays.
    unsafe {
        let null = libc::open(p.devnull.as_ptr(), libc::O_RDONLY);
        if null > 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
        libc::dup2(wfd, 1);
        libc::dup2(wfd, 2);
        let argv: [*const libc::c_char; 4] =
            [p.argv[0].as_ptr(), p.argv[1].as_ptr(), p.argv[2].as_ptr(), std::ptr::null()];
        let envp: [*const libc::c_char; 4] =
            [p.envp[0].as_ptr(), p.envp[1].as_ptr(), p.envp[2].as_ptr(), std::ptr::null()];
        libc::execve(p.sh.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    die(2, "exec /bin/sh", Errno::last())
}
