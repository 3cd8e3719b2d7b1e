//! The crate's error type. Messages name the entry or the archive, never a secret.

/// What can go wrong while restoring.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The input is not an archive this crate reads.
    #[error("{0}")]
    Format(String),
    /// The stream is truncated or corrupt (decompression or tar framing).
    #[error("reading the archive: {0}")]
    Read(String),
    /// Writing into the staging directory failed.
    #[error("writing {0}")]
    Write(String),
    /// An entry that would write outside the target, or that restore does not create.
    #[error("refused entry {entry:?}: {reason}")]
    Refused { entry: String, reason: String },
    /// The archive holds more than the limit (the volume's size).
    #[error("refused entry {entry:?}: the archive holds more than {limit} bytes of file data, the volume's size limit")]
    TooLarge { entry: String, limit: u64 },
    /// The archive needs more room than the filesystem it lands on may give (its free space
    /// or inodes less the reserve).
    #[error(
        "refused entry {entry:?}: the archive needs more than the {bytes} bytes / {inodes} inodes the volume's filesystem can spare (free space less the reserve)"
    )]
    NoSpace { entry: String, bytes: u64, inodes: u64 },
    /// A step of a staged restore (staging, swap, cleanup, recovery) failed in the volume.
    #[error("{action}: {source}")]
    Staging { action: &'static str, source: std::io::Error },
    /// A helper thread of the extraction (decoder, file writer) could not start.
    #[error("starting the restore's {what} thread: {source}")]
    Thread { what: &'static str, source: std::io::Error },
    /// What was extracted does not match the backup's manifest.
    #[error("the restored data does not match the manifest: {0}")]
    Manifest(String),
}
