//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while writing, describing or verifying an archive.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The volume root is missing or is not a directory.
    #[error("volume root {path}: {reason}")]
    Root { path: PathBuf, reason: String },
    /// Reading a file, directory or link of the volume (or the archive being verified) failed.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An entry of the volume is deeper than a walk takes ([`crate::walk::MAX_DEPTH`]).
    #[error("{path}: deeper than {limit} levels, the most a backup or export takes: move it up to back the volume up")]
    TooDeep { path: PathBuf, limit: usize },
    /// An entry's path in the volume is longer than a walk takes ([`crate::walk::MAX_PATH`]).
    #[error(
        "{path}: a path of {len} bytes, longer than the {limit} a backup or export takes: shorten it to back the volume up"
    )]
    PathTooLong { path: PathBuf, len: usize, limit: usize },
    /// Writing the archive stream (tar, zstd or the output) failed.
    #[error("writing the archive stream: {0}")]
    Write(#[source] io::Error),
    /// Options that cannot be used (e.g. a zstd level out of range).
    #[error("invalid archive options: {0}")]
    Options(String),
    /// One entry of the archive does not match the manifest (or is missing / extra).
    #[error("entry {entry:?}: {reason}")]
    Corrupt { entry: String, reason: String },
    /// The archive as a whole is damaged: undecodable stream, sha256 or size mismatch.
    #[error("archive {archive}: {reason}")]
    ArchiveCorrupt { archive: String, reason: String },
    /// The manifest is not valid JSON of the expected shape.
    #[error("manifest: {0}")]
    Manifest(#[from] serde_json::Error),
    /// The manifest could not be read or is not the one expected (the loader's message, which
    /// names it).
    #[error("{0}")]
    ManifestLoad(String),
    /// The manifest is larger than the reader accepts ([`crate::ManifestLimits`]).
    #[error("manifest {name}: larger than {limit} bytes")]
    ManifestTooLarge { name: String, limit: u64 },
    /// A string in the manifest is longer than the reader accepts
    /// ([`crate::manifest::MAX_MANIFEST_STRING`]); `at` is the byte of its opening quote.
    #[error("manifest {name}: a string longer than {limit} bytes at byte {at}")]
    ManifestString { name: String, at: u64, limit: u64 },
    /// The manifest was written by a newer, incompatible format.
    #[error("manifest format version {found} is not supported (this voltool reads version {supported})")]
    ManifestVersion { found: u32, supported: u32 },
}
