//! An exclusive, non-blocking lock on a state directory, so two daemons never share one
//! (each would reconcile and unmount the other's mounts).

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Held for the daemon's lifetime; the kernel drops it when the process dies (flock(2)).
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("state dir {} is in use by another voltool daemon (lock file {})", dir.display(), path.display())]
    Busy { dir: PathBuf, path: PathBuf },
    #[error("lock file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Takes `DIR/.lock` exclusively without waiting.
///
/// # Errors
/// [`LockError::Busy`] when another process holds it, [`LockError::Io`] otherwise.
pub fn lock_dir(dir: &Path) -> Result<DirLock, LockError> {
    let path = dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LockError::Io { path: path.clone(), source })?;
    // flock(2) LOCK_EX|LOCK_NB: EWOULDBLOCK when held by another open file description.
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(DirLock { _lock: l, path }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Busy { dir: dir.to_path_buf(), path }),
        Err((_, errno)) => Err(LockError::Io { path, source: errno.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_busy_until_first_dropped() {
        let d = tempfile::tempdir().expect("tmp");
        let first = lock_dir(d.path()).expect("first");
        let e = lock_dir(d.path()).expect_err("second");
        assert!(matches!(e, LockError::Busy { .. }), "{e}");
        assert!(e.to_string().contains("in use by another voltool daemon"));
        drop(first);
        lock_dir(d.path()).expect("free again");
    }
}
