//! # voltool-nfsfuse
//!
//! ## Overview
//! NFSv3 volumes on hosts without a kernel NFS client: a FUSE filesystem whose every
//! operation is an NFSv3 call made by a userspace client (`nfs3_client`). The daemon mounts
//! a FUSE file descriptor with `voltool_runtime::fuse::mount_fuse` (through its `Mounter`
//! seam) and hands the descriptor to [`serve`], which connects to the server and serves the
//! kernel's requests on its own threads until the mountpoint is unmounted:
//!
//! ```no_run
//! # fn demo(mounter: &dyn voltool_runtime::Mounter, target: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
//! use voltool_nfsfuse::{NfsConfig, serve};
//! let mut cfg = NfsConfig::new("192.0.2.10".parse()?, "/export");
//! cfg.subdir = "vol1".into();
//! let fd = voltool_runtime::fuse::mount_fuse(mounter, target, &cfg.source(), true)?;
//! let mounted = match serve(cfg, fd) {
//!     Ok(m) => m,
//!     Err(e) => {
//!         voltool_runtime::mount::unmount(mounter, target)?; // the FUSE mount is dead without a server
//!         return Err(e.into());
//!     }
//! };
//! // ... later, when the last user is gone:
//! voltool_runtime::mount::unmount(mounter, target)?;
//! mounted.join()?; // the session ended with the unmount; no thread is left behind
//! # Ok(()) }
//! ```
//!
//! ## Design
//! - [`serve`] MOUNTs the export, resolves the subdir and reads FSINFO before it returns, so
//!   a wrong or dead server fails there, within [`NfsConfig::call_timeout`], with an error
//!   naming the server, the export and the path.
//! - The filesystem owns a small multi-threaded tokio runtime; FUSE requests are served by
//!   four `fuser` threads, each running its NFS work with `block_on`. Every NFS call runs
//!   under `tokio::time::timeout(call_timeout)`: a hung server makes the operation fail with
//!   `EIO` after the timeout instead of blocking forever. The connection of a call that timed
//!   out is dropped; a broken connection is replaced and the call retried once. After a
//!   timeout the server counts as down: calls fail at once with `EIO` until a background
//!   probe (an NFS NULL call every 0.5 s) is answered, so a hung server costs one timeout,
//!   not one per file of a listing.
//! - Up to four NFS connections (one per FUSE thread), authenticated as root with AUTH_UNIX;
//!   files are created with the calling process's uid/gid (a setgid directory's group wins).
//!   Owner, mode, size and times are shown exactly as the server reports them; the mount
//!   uses `default_permissions`, so the kernel checks mode bits.
//! - Inode 1 is the volume root; other inodes are the server's `fileid` when free, else a
//!   synthetic number, and are forgotten with the kernel's lookup counts.
//! - Reads and writes are split into the server's FSINFO `rtmax`/`wtmax` (at most 1 MiB,
//!   64 KiB when the server gives none); writes are `FILE_SYNC`, so flush/fsync have nothing
//!   left to do. Directory listings use READDIRPLUS with NFS cookies as FUSE offsets.
//! - A file unlinked while open is renamed to `.nfsfuse…` and removed at its last close, as
//!   the kernel NFS client does.
//!
//! ## Boundaries
//! Owns the userspace NFSv3 client behind a FUSE filesystem. It must not know volumes or
//! options: the plugin's NFS backend decides when to mount and with what, and holds the
//! session.
//!
//! ## Limitations
//! - No NLM/NFSv4 locks: `flock`/`fcntl` locks are local to this host.
//! - Close-to-open consistency with a 1 s attribute and name cache: changes made by other
//!   clients are seen at the next open, or within a second for attributes and names.
//! - No writeback cache and synchronous (`FILE_SYNC`) writes: slower than the kernel client
//!   for many small writes.
//! - NFSv3 only, AUTH_UNIX as root: the export must not squash root.
//! - `RENAME_NOREPLACE`/`RENAME_EXCHANGE` are refused with `EINVAL`; renaming over a file
//!   that is still open elsewhere does not keep it alive; no extended attributes.
//! - A non-idempotent call retried after a broken connection may report `EEXIST`/`ENOENT`
//!   although it succeeded (as with the kernel client without a server reply cache).

mod attr;
mod client;
mod dir;
mod errno;
mod fs;
mod inodes;
mod ops;

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::Duration;

/// Default deadline of one NFS call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an NFS volume lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsConfig {
    /// The server's address (names are resolved by the caller).
    pub server: IpAddr,
    /// The exported path, as the server's MOUNT service knows it.
    pub export: String,
    /// The volume's directory under the export, relative; `""` is the export root.
    pub subdir: String,
    /// NFS port; `None` asks the server's portmapper.
    pub nfs_port: Option<u16>,
    /// MOUNT port; `None` asks the server's portmapper.
    pub mount_port: Option<u16>,
    /// Deadline of each NFS call (and of the whole connect in [`serve`]).
    pub call_timeout: Duration,
    /// Connect from a privileged source port (needs root), for servers that require it
    /// (the Linux kernel server's `secure` default).
    pub privileged_port: bool,
}

impl NfsConfig {
    /// The export root of `export` on `server`, ports from the portmapper, the default
    /// timeout, unprivileged source ports.
    pub fn new(server: IpAddr, export: impl Into<String>) -> Self {
        Self {
            server,
            export: export.into(),
            subdir: String::new(),
            nfs_port: None,
            mount_port: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            privileged_port: false,
        }
    }

    /// `server:/export/subdir`, the mount source to show in the mount table.
    pub fn source(&self) -> String {
        let host = match self.server {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let sub = self.subdir.trim_matches('/');
        if sub.is_empty() {
            format!("{host}:{}", self.export)
        } else {
            format!("{host}:{}/{sub}", self.export.trim_end_matches('/'))
        }
    }
}

/// Why serving an NFS volume failed. Messages name the server, the export and the path;
/// NFS (AUTH_UNIX) carries no secrets.
#[derive(Debug, thiserror::Error)]
pub enum NfsFuseError {
    /// The MOUNT of the export failed (refused, unreachable, no such export).
    #[error("nfs server {server}: cannot mount export {export}: {reason}")]
    Mount { server: IpAddr, export: String, reason: String },
    /// Connecting took longer than the call timeout.
    #[error("nfs server {server} did not answer within {timeout:?} (export {export}): is it reachable from this host?")]
    Timeout { server: IpAddr, export: String, timeout: Duration },
    /// The volume's directory in the export is missing or unusable.
    #[error("nfs server {server}: {path} in export {export}: {reason}")]
    Path { server: IpAddr, export: String, path: String, reason: String },
    /// The FUSE side failed (handshake with the kernel, or the session ended with an error).
    #[error("fuse session for nfs server {server} export {export}: {what}: {source}")]
    Fuse {
        server: IpAddr,
        export: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The runtime or a thread could not be started.
    #[error("nfsfuse: {what}: {source}")]
    Runtime {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A served NFS volume: owns the FUSE session thread. The session ends when the
/// mountpoint is unmounted; [`Mounted::join`] then returns. Dropping a `Mounted` without
/// joining detaches the thread, which still ends at the unmount.
#[derive(Debug)]
pub struct Mounted {
    thread: Option<JoinHandle<std::io::Result<()>>>,
    server: IpAddr,
    export: String,
    source: String,
}

impl Mounted {
    /// `server:/export/subdir` of this volume.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the session has ended (the mountpoint was unmounted or the connection to
    /// the kernel was aborted).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the session to end: call it after unmounting the mountpoint. Blocks until
    /// the requests in flight are answered (at most the call timeout with a hung server);
    /// after a lazy (`MNT_DETACH`) unmount, until the last user of the mount is gone — call
    /// it from a blocking context, or poll [`Mounted::is_finished`].
    ///
    /// # Errors
    /// [`NfsFuseError::Fuse`] when the session ended with an error or its thread panicked.
    pub fn join(mut self) -> Result<(), NfsFuseError> {
        let Some(t) = self.thread.take() else { return Ok(()) };
        let fuse = |what, source| NfsFuseError::Fuse { server: self.server, export: self.export.clone(), what, source };
        match t.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fuse("session ended", e)),
            Err(_) => Err(fuse("session thread", std::io::Error::other("panicked"))),
        }
    }
}

/// Waits until the kernel's FUSE INIT request is readable on `fd`, so that a descriptor
/// that was never mounted fails instead of blocking the handshake forever.
fn wait_for_init(fd: &OwnedFd, timeout: Duration) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request from the kernel: is the descriptor mounted (mount_fuse)?",
                ));
            }
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Serves the NFS volume `cfg` on `fuse_fd`, a `/dev/fuse` descriptor already mounted
/// (`voltool_runtime::fuse::mount_fuse`). Connects first: MOUNT, the subdir and FSINFO, all
/// within `cfg.call_timeout`; then answers the kernel's INIT and serves requests on a
/// session thread until the mountpoint is unmounted.
///
/// Call it from a blocking context (a plain thread or `spawn_blocking`), not from inside an
/// async task: it runs a runtime of its own.
///
/// # Errors
/// [`NfsFuseError`] naming the server and export: the server refused or did not answer,
/// the subdir is missing, or the FUSE handshake failed. On error `fuse_fd` is closed, which
/// makes the FUSE mount fail every access with `ENOTCONN`: the caller unmounts it.
pub fn serve(cfg: NfsConfig, fuse_fd: OwnedFd) -> Result<Mounted, NfsFuseError> {
    let source = cfg.source();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nfsfuse-io")
        .enable_all()
        .build()
        .map_err(|source| NfsFuseError::Runtime { what: "start the tokio runtime", source })?;
    let connected = match rt.block_on(async { tokio::time::timeout(cfg.call_timeout, client::connect(&cfg)).await }) {
        Ok(r) => r?,
        Err(_) => {
            return Err(NfsFuseError::Timeout { server: cfg.server, export: cfg.export, timeout: cfg.call_timeout });
        }
    };
    let fuse_err = |what, source| NfsFuseError::Fuse { server: cfg.server, export: cfg.export.clone(), what, source };
    wait_for_init(&fuse_fd, cfg.call_timeout).map_err(|e| fuse_err("wait for the kernel", e))?;
    let fs =
        fs::NfsFs::new(rt, connected.client, connected.root, connected.root_attr.mode, connected.io, source.clone());
    let mut config = fuser::Config::default();
    config.n_threads = Some(client::POOL_SIZE);
    let session = fuser::Session::from_fd(fs, fuse_fd, fuser::SessionACL::All, config)
        .map_err(|e| fuse_err("handshake with the kernel", e))?;
    let thread = std::thread::Builder::new()
        .name("nfsfuse-session".into())
        .spawn(move || session.run())
        .map_err(|source| NfsFuseError::Runtime { what: "start the session thread", source })?;
    tracing::info!(volume = %source, "nfs volume served over fuse");
    Ok(Mounted { thread: Some(thread), server: cfg.server, export: cfg.export, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_server_export_and_subdir() {
        let mut c = NfsConfig::new("10.0.0.5".parse().expect("ip"), "/export/");
        assert_eq!(c.source(), "10.0.0.5:/export/");
        c.subdir = "/v1/".into();
        assert_eq!(c.source(), "10.0.0.5:/export/v1");
        c.server = "fd00::1".parse().expect("ip");
        assert_eq!(c.source(), "[fd00::1]:/export/v1");
        assert_eq!(c.call_timeout, DEFAULT_CALL_TIMEOUT);
    }

    #[test]
    fn a_silent_server_fails_within_the_call_timeout() {
        // Connections complete (the kernel accepts into the backlog) but nothing answers.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let mut c = NfsConfig::new("127.0.0.1".parse().expect("ip"), "/export");
        (c.nfs_port, c.mount_port, c.call_timeout) = (Some(port), Some(port), Duration::from_millis(500));
        let fd = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDWR, nix::sys::stat::Mode::empty()).expect("fd");
        let t0 = std::time::Instant::now();
        let e = serve(c, fd).expect_err("no answer");
        assert!(matches!(e, NfsFuseError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("127.0.0.1") && e.to_string().contains("/export"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_closed_port_fails_fast_with_the_server_named() {
        let mut c = NfsConfig::new("127.0.0.1".parse().expect("ip"), "/x");
        c.nfs_port = Some(1);
        c.mount_port = Some(1);
        let fd = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDWR, nix::sys::stat::Mode::empty()).expect("fd");
        let e = serve(c, fd).expect_err("nothing listens on port 1").to_string();
        assert!(e.contains("127.0.0.1") && e.contains("/x") && e.contains("refused"), "{e}");
    }
}
