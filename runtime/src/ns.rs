//! Mount-namespace work, done safely inside a multi-threaded daemon.
//!
//! `setns(fd, CLONE_NEWNS)` fails with `EINVAL` when the caller shares its filesystem
//! attributes (`CLONE_FS`) with other threads (setns(2)), and `unshare(CLONE_NEWNS)` would
//! otherwise change the namespace under whatever else the thread runs later. So each call
//! here spawns a dedicated OS thread, detaches its filesystem attributes, changes namespace,
//! runs the closure and exits, taking the namespace change with it. No tokio worker and no
//! other thread is ever moved.

use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::mount::MsFlags;
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

fn run_on_thread<F, R>(setup: impl FnOnce() -> Result<()> + Send, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("voltool-ns".into())
            .spawn_scoped(s, move || -> Result<R> {
                setup()?;
                Ok(f())
            })
            .map_err(|e| Error::Thread(e.to_string()))?;
        h.join().map_err(|_| Error::Thread("panicked".into()))?
    })
}

/// Runs `f` in a fresh, private mount namespace (a copy of the caller's). Mounts made by `f`
/// are invisible outside and vanish when it returns.
///
/// # Errors
/// [`Error::Namespace`] when unshare(2) or the propagation change fails (needs
/// `CAP_SYS_ADMIN`); [`Error::Thread`] when the worker thread cannot start or panics.
pub fn in_new_mount_ns<F, R>(f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    run_on_thread(
        || {
            // unshare(2): CLONE_NEWNS implies CLONE_FS, which detaches this thread's root/cwd
            // from the rest of the process.
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
                .map_err(|errno| Error::Namespace { op: "unshare(CLONE_NEWNS)", errno })?;
            // mount_namespaces(7): the copy keeps the parent's propagation; make it private
            // so nothing mounted here propagates back to the host.
            nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
                .map_err(|errno| Error::Namespace { op: "make / rprivate", errno })
        },
        f,
    )
}

/// Runs `f` inside the existing mount namespace named by `ns_file` (e.g.
/// `/proc/<pid>/ns/mnt`).
///
/// # Errors
/// [`Error::Namespace`] when the namespace file cannot be opened or setns(2) fails.
pub fn in_mount_ns<F, R>(ns_file: &Path, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let ns_file = ns_file.to_path_buf();
    run_on_thread(
        move || {
            // setns(2) requires that the caller does not share CLONE_FS with other threads.
            unshare(CloneFlags::CLONE_FS).map_err(|errno| Error::Namespace { op: "unshare(CLONE_FS)", errno })?;
            let fd = open(&ns_file, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|errno| Error::Namespace { op: "open namespace file", errno })?;
            setns(&fd, CloneFlags::CLONE_NEWNS).map_err(|errno| Error::Namespace { op: "setns(CLONE_NEWNS)", errno })
        },
        f,
    )
}
