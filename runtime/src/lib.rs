//! # voltool-runtime
//!
//! ## Overview
//! The small runtime layer under voltool: every `mount(2)`, `umount2(2)`, `unshare(2)`,
//! `setns(2)` and (later) loop-device ioctl the daemon makes goes through this crate, and
//! nowhere else in the workspace. It also parses `/proc/self/mountinfo` and probes what the
//! host kernel supports.
//!
//! ## Design
//! - Narrow traits ([`Mounter`]) with one real implementation ([`LinuxMounter`], one syscall
//!   per method) and a recording fake ([`RecordingMounter`]) that keeps an in-memory mount
//!   table and can inject an errno. Upper layers take an `Arc<dyn Mounter>` through their
//!   constructors, so their tests run without root (the youki `Syscall` idea, without a
//!   `cfg!(test)` switch).
//! - Mount-namespace work ([`ns`]) runs on a dedicated OS thread that first unshares its
//!   filesystem attributes: `setns(CLONE_NEWNS)` is refused with `EINVAL` in a thread that
//!   shares its `fs_struct` with others (see setns(2)), which every tokio worker does.
//! - Errors carry the path they concern and the raw [`nix::errno::Errno`]; callers match on
//!   the errno (e.g. `EBUSY`), never on message text.
//!
//! ## Boundaries
//! Owns every syscall and every `unsafe` block of the workspace (the workspace denies
//! `unsafe_code`; only modules of this crate allow it, each saying why). It must not know volumes, options, backups or HTTP: it
//! depends on no other voltool crate, and each facility is a narrow trait with a real and a
//! recording implementation that the crates above receive through their constructors.
//!
//! ## Limitations
//! Linux only. The real implementation needs `CAP_SYS_ADMIN`; its tests skip (with a visible
//! `SKIP` line) when not run as root outside CI.

pub mod container;
pub mod error;
pub mod fsat;
pub mod fuse;
pub mod lock;
pub mod loopdev;
pub mod mount;
pub mod mountinfo;
pub mod ns;
pub mod probe;
pub mod quota;
pub mod snapshot;
pub mod walk;

pub use error::{Error, Result};
pub use mount::{
    LinuxMounter, MountFlags, MountRequest, Mounter, Propagation, RecordedCall, RecordingMounter, UnmountOutcome,
};
pub use mountinfo::MountInfo;
