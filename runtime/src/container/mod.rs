//! A minimal, unprivileged container for restore checks: run one command against a directory
//! (a scratch volume restored from a backup) with as little of the host, and as little
//! privilege, around it as possible. The command is hostile.
//!
//! ## Design
//! The command runs as PID 1 of new mount, PID, network, IPC and UTS namespaces (clone(2)),
//! set up in two stages:
//! 1. **privileged** ([`child`]): still host root, the child builds the root: a small
//!    read-only tmpfs holding read-only recursive bind mounts of the rootfs's system
//!    directories (`/usr`, `/bin`, `/lib*`, `/etc`, ...; not `/home`, `/root`, `/srv`,
//!    `/mnt`, `/var` and the like) — every bind `nosuid,nodev`; `/data` the checked directory,
//!    read-write, `nosuid,nodev`; `/tmp` a private tmpfs (`nosuid,nodev,noexec`); `/proc` the
//!    new PID namespace's; `/dev` a `nodev` tmpfs with only `null`, `zero`, `random`,
//!    `urandom` bound in; no network (loopback down); `pivot_root`, old root detached;
//!    supplementary groups dropped; rlimits set (when no cgroup).
//! 2. **unprivileged** ([`userns`]): the child unshares a new user namespace and a new mount
//!    namespace *together*. Every mount above was made in the more privileged namespace, so
//!    the kernel locks them in the new one (mount_namespaces(7), "restrictions on mount
//!    namespaces"): their `ro`, `nosuid`, `nodev`, `noexec` flags cannot be cleared and they
//!    cannot be unmounted to reveal what is under them — not even by root of a nested user
//!    namespace the command makes itself. The parent writes `uid_map`/`gid_map` (root inside
//!    = [`IdRange::host_uid`] outside, 65536 ids; `setgroups` denied); the child becomes uid
//!    and gid 0 *inside*, locks the securebits, empties its bounding, ambient, inheritable,
//!    permitted and effective capability sets, sets `no_new_privs` and execs `/bin/sh -c`.
//!    Unless [`Confinement::nested_user_namespaces`], it first sets `user.max_user_namespaces`
//!    of its namespace to 0: the command cannot make user namespaces of its own.
//!    `CapEff` of the command, as the host sees it in `/proc/PID/status`, is 0.
//!
//! Memory and processes are limited ([`cgroup`]): a child cgroup (cgroup v2 with the `memory`
//! and `pids` controllers, under [`Confinement::cgroup_parent`]) with `memory.max`,
//! `memory.swap.max = 0` and `pids.max`, removed afterwards; where there is no usable cgroup v2
//! the command gets `RLIMIT_NPROC` and `RLIMIT_AS` instead (per process for memory: weaker,
//! said in [`ContainerOutcome::limits`]). The command's stdout and stderr are captured (first
//! 64 KiB); it is killed, with every process of its PID namespace, after the timeout.
//!
//! The restored files keep the owners the archive gave them; an unprivileged command could not
//! read a mode-600 file of uid 0. [`shift_owners`] moves a throwaway tree's owners into the
//! mapped range (host uid `u` → `host_uid + u`, ids past the range → the range's `65534`), so
//! inside the container every file has the owner it had in the backup.
//!
//! The child side of clone(2) only makes syscalls on values prepared beforehand (no
//! allocation: the daemon is multi-threaded, and the child of a clone is a single thread that
//! may inherit a held allocator lock; set*id go through raw syscalls, not glibc's wrappers,
//! which would try to signal the parent's other threads).
//!
//! ## Limitations
//! The uid range must not be used by anyone else on the host (see [`IdRange`]). The rlimit
//! fallback bounds memory per process, not for the whole check.

#![allow(unsafe_code)]

mod cgroup;
mod child;
mod userns;

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

pub use cgroup::Limits;
pub use userns::{IdRange, shift_owners};

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
    /// Mounted read-write at `/data`. The command runs as [`IdRange::host_uid`]: see
    /// [`shift_owners`] to make a throwaway tree its own.
    pub data: PathBuf,
    /// Run as `/bin/sh -c COMMAND`.
    pub command: String,
    pub timeout: Duration,
    /// An empty directory the container's root is mounted on (in its own namespace only).
    pub workdir: PathBuf,
    /// Who the command runs as and what it may use.
    pub confinement: Confinement,
}

/// The command's identity and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    pub ids: IdRange,
    /// `memory.max` (cgroup) or `RLIMIT_AS` (fallback), bytes.
    pub memory_max: u64,
    /// `pids.max` (cgroup) or `RLIMIT_NPROC` (fallback).
    pub pids_max: u64,
    /// Whether the command may make user namespaces of its own. Off by default: root of a
    /// nested user namespace holds every capability there (still none on the host, and the
    /// locked mounts stay locked), which opens kernel code to it that a check has no use for
    /// (`user.max_user_namespaces` is set to 0 in the check's namespace).
    pub nested_user_namespaces: bool,
    /// Where the check's cgroup is made (a directory of a cgroup v2 mount; created if missing,
    /// the `memory` and `pids` controllers enabled from the mount's root down).
    pub cgroup_parent: PathBuf,
}

impl Default for Confinement {
    /// 1 GiB of memory, 512 processes, no nested user namespaces, cgroups under
    /// `/sys/fs/cgroup/voltool-checks`.
    fn default() -> Self {
        Confinement {
            ids: IdRange::default(),
            memory_max: 1 << 30,
            pids_max: 512,
            nested_user_namespaces: false,
            cgroup_parent: PathBuf::from("/sys/fs/cgroup/voltool-checks"),
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerOutcome {
    /// The exit status; 128 + N when killed by signal N.
    pub status: i32,
    pub timed_out: bool,
    /// stdout and stderr, interleaved, at most 64 KiB.
    pub output: String,
    /// Which limits held the command.
    pub limits: Limits,
}

/// Everything the child needs, made before clone(2).
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
    /// `(RLIMIT_NPROC, RLIMIT_AS)` when no cgroup limits the command.
    rlimits: Option<(u64, u64)>,
    /// `/proc/sys/user/max_user_namespaces` (in the new root), to write 0 to; `None`: nested
    /// user namespaces allowed.
    max_userns: Option<CString>,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Thread(format!("path {} has a NUL byte", p.display())))
}

fn prepare(spec: &ContainerSpec, rlimits: Option<(u64, u64)>) -> Result<Prepared> {
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
        rlimits,
        max_userns: if spec.confinement.nested_user_namespaces {
            None
        } else {
            Some(c("/proc/sys/user/max_user_namespaces")?)
        },
    })
}

/// Runs the command in a fresh minimal container and waits for it (or the timeout).
///
/// # Errors
/// [`Error::Namespace`] when clone(2) fails (needs `CAP_SYS_ADMIN`) or the user namespace's
/// id maps cannot be written, [`Error::Thread`] for bad paths. A command that fails, or whose
/// setup fails inside, is an `Ok` outcome with its status (127 and the reason in `output` for
/// a setup failure).
pub fn run(spec: &ContainerSpec) -> Result<ContainerOutcome> {
    let conf = &spec.confinement;
    let cg = cgroup::Cgroup::create(conf);
    let rlimits = cg.is_err().then_some((conf.pids_max, conf.memory_max));
    let prepared = prepare(spec, rlimits)?;
    // CLOEXEC: other processes the daemon spawns meanwhile must not hold the pipe open; the
    // child's dup2 onto 1 and 2 clears the flag there.
    let (rfd, wfd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| Error::Namespace { op: "pipe", errno })?;
    let (sync_parent, sync_child) = userns::sync_pair()?;
    let mut stack = vec![0u8; 1 << 20];
    let (w, s) = (wfd.as_raw_fd(), sync_child.as_raw_fd());
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    // SAFETY: the child only runs `child::main`, which makes syscalls on `prepared` (borrowed,
    // alive until waitpid below returns) and then execs or _exits.
    let pid =
        unsafe { nix::sched::clone(Box::new(|| child::main(&prepared, w, s)), &mut stack, flags, Some(libc::SIGCHLD)) }
            .map_err(|errno| Error::Namespace { op: "clone(new mount, pid, net, ipc, uts namespaces)", errno })?;
    drop(wfd);
    drop(sync_child);
    let limits = match &cg {
        Ok(c) => match c.add(pid) {
            Ok(()) => {
                Limits::Cgroup { path: c.path().to_path_buf(), memory_max: conf.memory_max, pids_max: conf.pids_max }
            }
            Err(e) => return Err(abort(pid, e)),
        },
        Err(why) => Limits::Rlimits { reason: why.to_string(), memory_max: conf.memory_max, pids_max: conf.pids_max },
    };
    if let Err(e) = userns::map_ids(sync_parent, pid, &conf.ids) {
        return Err(abort(pid, e));
    }
    let reader = std::thread::spawn(move || read_capped(rfd));
    let (status, timed_out) = wait_with_deadline(pid, spec.timeout)?;
    drop(stack);
    drop(cg);
    let output = reader.join().unwrap_or_default();
    Ok(ContainerOutcome { status, timed_out, output, limits })
}

/// Kills and reaps the child after a setup failure in the parent.
fn abort(pid: nix::unistd::Pid, e: Error) -> Error {
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
    e
}

/// The first [`OUTPUT_CAP`] bytes of the pipe, read to its end.
fn read_capped(rfd: OwnedFd) -> String {
    let mut f = std::fs::File::from(rfd);
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
}

/// Waits for PID 1 of the container; kills it (and with it its whole PID namespace) at the
/// deadline. Returns the status (128 + N for signal N) and whether it timed out.
fn wait_with_deadline(pid: nix::unistd::Pid, timeout: Duration) -> Result<(i32, bool)> {
    let t0 = Instant::now();
    let mut timed_out = false;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok((code, timed_out)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok((128 + sig as i32, timed_out)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(Error::Namespace { op: "waitpid", errno }),
        }
        if !timed_out && t0.elapsed() > timeout {
            // PID 1 of the namespace: killing it kills every process in it.
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            timed_out = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
