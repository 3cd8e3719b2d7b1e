//! Errors of the runtime layer: each names the path it concerns and keeps the errno.

use std::path::PathBuf;

use nix::errno::Errno;

/// Result alias for the runtime crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the runtime layer can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `mount(2)` failed.
    #[error("mount {fstype} {source_desc} on {}: {errno}", target.display())]
    Mount {
        source_desc: String,
        target: PathBuf,
        fstype: String,
        #[source]
        errno: Errno,
    },
    /// `umount2(2)` failed.
    #[error("unmount {}: {errno}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        errno: Errno,
    },
    /// Changing the propagation type of a mount failed.
    #[error("set propagation of {}: {errno}", target.display())]
    Propagation {
        target: PathBuf,
        #[source]
        errno: Errno,
    },
    /// A namespace operation (unshare/setns) failed.
    #[error("{op}: {errno}")]
    Namespace {
        op: &'static str,
        #[source]
        errno: Errno,
    },
    /// Reading or parsing a mount table failed.
    #[error("read mount table {}: {source}", path.display())]
    MountTable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A loop-device operation failed.
    #[error("loop device {}: {op}: {errno}", device.display())]
    Loop {
        op: &'static str,
        device: PathBuf,
        #[source]
        errno: Errno,
    },
    /// A project-quota operation failed.
    #[error("project quota on {}: {op}: {errno}", path.display())]
    Quota {
        op: &'static str,
        path: PathBuf,
        #[source]
        errno: Errno,
    },
    /// Freezing, thawing or reflinking a filesystem object failed.
    #[error("{op} {}: {errno}", path.display())]
    Snapshot {
        op: &'static str,
        path: PathBuf,
        #[source]
        errno: Errno,
    },
    /// A tree walk (a snapshot's tree copy) failed or hit its limits.
    #[error(transparent)]
    Walk(#[from] crate::walk::WalkError),
    /// A worker thread for namespace work panicked or could not be spawned.
    #[error("namespace worker thread: {0}")]
    Thread(String),
}

impl Error {
    /// The errno behind this error, if it came from a syscall.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Mount { errno, .. }
            | Error::Unmount { errno, .. }
            | Error::Propagation { errno, .. }
            | Error::Namespace { errno, .. }
            | Error::Loop { errno, .. }
            | Error::Quota { errno, .. }
            | Error::Snapshot { errno, .. } => Some(*errno),
            Error::MountTable { source, .. } => source.raw_os_error().map(Errno::from_raw),
            Error::Thread(_) | Error::Walk(_) => None,
        }
    }
}
