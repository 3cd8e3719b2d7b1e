//! # voltool-backup
//!
//! ## Overview
//! The backup archive format (SPEC §3): `ID.tar.zst`, a zstd-compressed POSIX pax tar of a
//! volume root that stock `zstd -d | tar -x` restores; `ID.manifest.json`, which describes
//! every entry (path, type, mode, owner, size, mtime, sha256) and the archive's size and
//! sha256; and `ID.tar.zst.sha256` in `sha256sum -c` format.
//!
//! - [`archive::write_archive`] walks the root and streams tar → zstd → a hashing, counting
//!   writer, hashing each regular file as it is read, and returns an [`ArchiveSummary`].
//! - [`manifest::Manifest`] turns the summary into the manifest (JSON in and out);
//!   [`manifest::sha256sum_line`] and [`manifest::backup_id`] name things.
//! - [`verify::verify_archive`] re-reads an archive (zstd → tar, nothing written to disk) and
//!   checks every byte against the manifest, naming the first bad entry or the archive.
//!
//! ## Design
//! - One pass, constant memory: every file is read once, straight into the block handed to
//!   zstd, and hashed there; neither a file nor the volume is ever buffered and nothing is
//!   written to a temporary file. Memory grows only with the number of entries (the compact
//!   [`manifest::EntryList`], ~70 bytes plus the path each) and of multiply-linked inodes;
//!   the manifest is written out streaming from that list, never whole in memory.
//! - Threads: the calling thread walks (`openat`/`fstatat` relative to the open directory)
//!   and reads; a compressor thread feeds zstd 1 MiB blocks (zstd's own workers use 1 MiB jobs
//!   to keep their buffers small) and hashes and writes the compressed stream; a read-ahead
//!   thread walks the same order up to 2,048 entries / 32 MiB ahead and `posix_fadvise`s
//!   upcoming files, so a cold-cache backup of many small files keeps the disk busy with many
//!   requests instead of one after another.
//! - Deterministic order: depth-first, names sorted bytewise, directories before their
//!   contents. Symlinks are never followed; a directory on another device (a mount point) is
//!   archived as an empty directory. Files are opened `O_NOFOLLOW|O_NONBLOCK` and re-checked by
//!   inode so a swapped-in symlink or fifo is refused rather than followed or blocked on.
//! - ustar headers with pax (`x`) records for what ustar cannot hold: long paths and link
//!   targets, sizes ≥ 8 GiB, uids/gids ≥ 2^21, negative or sub-second mtimes (so GNU tar
//!   restores nanosecond mtimes) and extended attributes (`SCHILY.xattr.*`). Owner names are
//!   left empty, so restores are numeric.
//! - Hard links: the second and later paths of an inode with `st_nlink > 1` become tar link
//!   entries pointing at the first path. Fifos are recorded; devices and sockets are skipped
//!   with a note in the summary.
//! - A file that changes while read: the archive holds exactly `st_size` bytes (zero-padded if
//!   it shrank) and a note says so; its recorded sha256 is of what the archive holds, so the
//!   archive always verifies against its own manifest.
//! - zstd frames carry their content checksum; `threads > 1` uses zstd's worker threads.
//!
//! ## Boundaries
//! Owns the archive format, the targets and the pure policies (retention, schedules). It must
//! not know volumes, the catalog's storage or HTTP: the engine that runs backups of volumes,
//! keeps the catalog and schedules runs is `voltool-daemon`'s. Depends on `voltool-runtime`
//! only (the descriptor-relative walk).
//!
//! ## Limitations
//! - The root directory's own mode/owner/mtime are not recorded (a restore target is created
//!   with the volume's options).
//! - Manifest paths are UTF-8: a non-UTF-8 name is stored in the tar as its raw bytes but
//!   appears lossily in the manifest (two such names could collide there).
//! - Xattrs are archived but not listed in the manifest nor checked by verify; GNU tar restores
//!   them only with `--xattrs`. ACLs travel as their `system.posix_acl_*` xattrs.
//! - Sparse files are stored dense (holes become zeros); atime/ctime are not kept.
//! - Verify stops at the first problem (one pass; a damaged zstd stream cannot be resynced).
//!
//! Also here, without I/O of their own: [`target`] (where backups are stored: directories and
//! S3 buckets, behind one blocking trait), [`retention`] (which backups a `backup-keep` policy
//! keeps, a pure function of the catalog and the clock) and [`schedule`] (cron expressions and
//! the missed-run rule). The catalog and the scheduler loop live in the daemon
//! (`voltool_plugin::backups`).

pub mod archive;
pub mod blocks;
pub mod crypt;
pub mod error;
pub mod frames;
mod header;
pub mod incremental;
pub mod manifest;
mod pipeline;
mod prefetch;
pub mod retention;
pub mod schedule;
pub mod single;
pub mod target;
pub mod tarparse;
pub mod verify;
/// The descriptor-relative walk under backups, exports and migrations (the runtime's).
pub use voltool_runtime::walk;

pub use archive::{ArchiveOptions, ArchiveSummary, write_archive, write_archive_with_progress};
pub use crypt::{CryptError, Identities, Recipients, SealedWriter, StoredObject};
pub use error::BackupError;
pub use incremental::Previous;
pub use manifest::{
    Encryption, Entry, EntryKind, EntryList, FORMAT_VERSION, Manifest, ManifestHead, ManifestLimits, ObjectNames,
    ParentRef, backup_id, sha256sum_line,
};
pub use target::{
    LIST_LIMIT, Listed, ObjectWriter, StreamedPut, Target, TargetConfig, TargetError, TargetSpec, open_target,
};
pub use verify::{VerifyReport, verify_archive, verify_archive_loading};

// Here rather than in error.rs: the fuzz workspace compiles error.rs on its own, without the
// runtime crate.
impl From<voltool_runtime::walk::WalkError> for BackupError {
    fn from(e: voltool_runtime::walk::WalkError) -> Self {
        use voltool_runtime::walk::WalkError as W;
        match e {
            W::Root { path, reason } => BackupError::Root { path, reason },
            W::Read { path, source } => BackupError::Read { path, source },
            W::TooDeep { path, limit } => BackupError::TooDeep { path, limit },
            W::PathTooLong { path, len, limit } => BackupError::PathTooLong { path, len, limit },
        }
    }
}
