//! A minimal container for restore checks: run one command against a directory (a scratch
//! volume restored from a backup) with as little of the host around it as possible.
//!
//! The command runs as PID 1 of new mount, PID, network, IPC and UTS namespaces (clone(2)):
//! - the root is a small read-only tmpfs holding read-only recursive bind mounts of the
//!   rootfs's system directories (`/usr`, `/bin`, `/lib*`, `/etc`, ...; the host's own root by
//!   default, or a given rootfs directory) — not `/home`, `/root`, `/srv`, `/mnt`, `/var/lib`
//!   and the like, which stay out of sight;
//! - `/data` is the checked directory, read-write; `/tmp` a private tmpfs; `/proc` the new PID
//!   namespace's; `/dev` only `null`, `zero`, `random`, `urandom`;
//! - the network namespace is empty (not even loopback up): no network;
//! - the old root is detached after `pivot_root`, the hostname is `voltool-check`.
//!
//! The command's stdout and stderr are captured (first 64 KiB); it is killed (with every
//! process of its PID namespace) after the timeout.
//!
//! The child side of clone(2) only makes syscalls on values prepared beforehand (no
//! allocation: the daemon is multi-threaded, and the child of a clone is a single thread that
//! may inherit a held allocator lock).

#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use crate::error::{Error, Result};

/// Top-level directories of the rootfs that are never shown to the command.
const HIDDEN: &[&str] =
    &["proc", "sys", "dev", "tmp", "run", "data", "mnt", "media", "home", "root", "srv", "boot", "lost+found", "var"];
const DEVICES: &[&str] = &["null", "zero", "random", "urandom"];
const OUTPUT_CAP: usize = 64 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The root to show read-only; `None`: the host's `/`.
    pub rootfs: Option<PathBuf>,
    /// Mounted read-write at `/data`.
    pub data: PathBuf,
    /// Run as `/bin/sh -c COMMAND`.
    pub command: String,
    pub timeout: Duration,
    /// An empty directory the container's root is mounted on (in its own namespace only).
    pub workdir: PathBuf,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerOutcome {
    /// The exit status; 128 + N when killed by signal N.
    pub status: i32,
    pub timed_out: bool,
    /// stdout and stderr, interleaved, at most 64 KiB.
    pub output: String,
}

struct Prepared {
    newroot: CString,
    binds: Vec<(CString, CString)>,
    symlinks: Vec<(CString, CString)>,
    proc_: CString,
    dev: CString,
    tmp: CString,
    data_dst: CString,
    data_src: CString,
    devices: Vec<(CString, CString)>,
    dot: CString,
    slash: CString,
    sh: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    devnull: CString,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Thread(format!("path {} has a NUL byte", p.display())))
}

fn prepare(spec: &ContainerSpec) -> Result<Prepared> {
    let root = spec.rootfs.clone().unwrap_or_else(|| PathBuf::from("/"));
    let newroot = spec.workdir.clone();
    let mut binds = Vec::new();
    let mut symlinks = Vec::new();
    let entries =
        std::fs::read_dir(&root).map_err(|e| Error::Thread(format!("reading rootfs {}: {e}", root.display())))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let n = name.to_string_lossy();
        if HIDDEN.contains(&n.as_ref()) {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() {
            if let Ok(target) = std::fs::read_link(e.path()) {
                symlinks.push((cstr(&target)?, cstr(&newroot.join(&name))?));
            }
        } else if ft.is_dir() {
            binds.push((cstr(&e.path())?, cstr(&newroot.join(&name))?));
        }
    }
    let devices = DEVICES
        .iter()
        .map(|d| Ok((cstr(&Path::new("/dev").join(d))?, cstr(&newroot.join("dev").join(d))?)))
        .collect::<Result<Vec<_>>>()?;
    let c = |s: &str| CString::new(s).map_err(|_| Error::Thread("NUL byte in the command".into()));
    Ok(Prepared {
        proc_: cstr(&newroot.join("proc"))?,
        dev: cstr(&newroot.join("dev"))?,
        tmp: cstr(&newroot.join("tmp"))?,
        data_dst: cstr(&newroot.join("data"))?,
        data_src: cstr(&spec.data)?,
        newroot: cstr(&newroot)?,
        binds,
        symlinks,
        devices,
        dot: c(".")?,
        slash: c("/")?,
        sh: c("/bin/sh")?,
        argv: vec![c("sh")?, c("-c")?, c(&spec.command)?],
        envp: vec![
            c("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")?,
            c("HOME=/tmp")?,
            c("VOLTOOL_CHECK=1")?,
        ],
        devnull: c("/dev/null")?,
    })
}

/// Writes `msg` and the errno to `fd`, then exits 127. No allocation.
fn die(fd: i32, msg: &str, errno: Errno) -> ! {
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

/// Makes the mount at `dst` and everything under it read-only (mount_setattr(2)), falling
/// back to remounting the top one read-only on kernels without it.
fn read_only_recursive(dst: &CStr) -> Errno {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
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
    mount(None, dst, None, libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY, None)
}

/// Closes every descriptor the child inherited except the report pipe (moved to fd 3) and
/// stdio. The child gets a copy of the daemon's descriptor table: an open file of another
/// thread (a volume being written, a backup being read) would otherwise stay open here until
/// exec (`O_CLOEXEC`) and keep that mount busy for a concurrent unmount. Syscalls only.
fn keep_only_report_fd(wfd: i32) -> i32 {
    const REPORT: i32 = 3;
    // SAFETY: dup2/close_range on descriptors of this process's private table.
    unsafe {
        if wfd != REPORT && libc::dup2(wfd, REPORT) != REPORT {
            return wfd; // keep going with what we have; exec still closes the rest
        }
        // dup2 cleared close-on-exec: the command gets the pipe as 1 and 2 only.
        libc::fcntl(REPORT, libc::F_SETFD, libc::FD_CLOEXEC);
        // close_range(2) (Linux 5.9); on older kernels exec's O_CLOEXEC remains the backstop.
        libc::syscall(libc::SYS_close_range, REPORT as libc::c_uint + 1, libc::c_uint::MAX, 0 as libc::c_uint);
    }
    REPORT
}

/// The child: set the namespaces' filesystem up and exec. Syscalls only.
fn child(p: &Prepared, wfd: i32) -> isize {
    let wfd = keep_only_report_fd(wfd);
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
    let e = mount(Some(c"proc"), &p.proc_, Some(c"proc"), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None);
    if !ok(e) {
        die(wfd, "mounting /proc", e);
    }
    let e = mount(Some(tmpfs), &p.dev, Some(tmpfs), libc::MS_NOSUID | libc::MS_NOEXEC, Some(c"size=64k,mode=755"));
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
    let e = mount(Some(tmpfs), &p.tmp, Some(tmpfs), libc::MS_NOSUID | libc::MS_NODEV, Some(c"size=64m,mode=1777"));
    if !ok(e) {
        die(wfd, "mounting /tmp", e);
    }
    let e = mount(Some(&p.data_src), &p.data_dst, None, libc::MS_BIND | libc::MS_REC, None);
    if !ok(e) {
        die(wfd, "binding /data", e);
    }
    let e = mount(None, &p.newroot, None, libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV, None);
    if !ok(e) {
        die(wfd, "making the root read-only", e);
    }
    // SAFETY: chdir/pivot_root/umount2 on valid strings.
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

/// Runs the command in a fresh minimal container and waits for it (or the timeout).
///
/// # Errors
/// [`Error::Namespace`] when clone(2) fails (needs `CAP_SYS_ADMIN`), [`Error::Thread`] for
/// bad paths. A command that fails, or whose setup fails inside, is an `Ok` outcome with its
/// status (127 and the reason in `output` for a setup failure).
pub fn run(spec: &ContainerSpec) -> Result<ContainerOutcome> {
    let prepared = prepare(spec)?;
    // CLOEXEC: other processes the daemon spawns meanwhile must not hold the pipe open; the
    // child's dup2 onto 1 and 2 clears the flag there.
    let (rfd, wfd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| Error::Namespace { op: "pipe", errno })?;
    let mut stack = vec![0u8; 1 << 20];
    let w = wfd.as_raw_fd();
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    // SAFETY: the child only runs `child`, which makes syscalls on `prepared` (borrowed,
    // alive until waitpid below returns) and then execs or _exits.
    let pid = unsafe { nix::sched::clone(Box::new(|| child(&prepared, w)), &mut stack, flags, Some(libc::SIGCHLD)) }
        .map_err(|errno| Error::Namespace { op: "clone(new mount, pid, net, ipc, uts namespaces)", errno })?;
    drop(wfd);
    let reader = std::thread::spawn(move || {
        // SAFETY: rfd is an owned pipe end moved here.
        let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(rfd)) });
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            if out.len() < OUTPUT_CAP {
                out.extend_from_slice(&buf[..n.min(OUTPUT_CAP - out.len())]);
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let t0 = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(Error::Namespace { op: "waitpid", errno }),
        }
        if !timed_out && t0.elapsed() > spec.timeout {
            // PID 1 of the namespace: killing it kills every process in it.
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            timed_out = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stack);
    let output = reader.join().unwrap_or_default();
    Ok(ContainerOutcome { status, timed_out, output })
}
