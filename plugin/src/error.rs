//! Errors of the volume service. Every message names the volume it concerns and never
//! carries a secret.

use std::path::PathBuf;

use crate::options::OptionError;
use crate::store::StoreError;

/// Result alias for the plugin crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a volume operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad name or options; nothing was created.
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("volume {volume} not found")]
    NotFound { volume: String },
    #[error("volume {volume} already exists with different options; remove it first or use another name")]
    Conflict { volume: String },
    #[error("volume {volume} is in use by {mounts} container mount(s); stop them first")]
    InUse { volume: String, mounts: usize },
    #[error("volume {volume} is being restored; start the container again when the restore has finished")]
    Restoring { volume: String },
    #[error("volume {volume}: mount failed: {source}")]
    Mount {
        volume: String,
        #[source]
        source: voltool_runtime::Error,
    },
    #[error("volume {volume}: unmount failed: {source}")]
    Unmount {
        volume: String,
        #[source]
        source: voltool_runtime::Error,
    },
    #[error("volume {volume}: {action} {}: {source}", path.display())]
    Io {
        volume: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume}: {source}")]
    Tool {
        volume: String,
        #[source]
        source: crate::backend::tools::ToolError,
    },
    /// A mount or unmount did not finish in time (typically a network server that stopped
    /// answering); the operation may still complete later.
    #[error("volume {volume}: {op} did not finish within {after:?}; is its server answering?")]
    Timeout { volume: String, op: &'static str, after: std::time::Duration },
    /// The volume's server failed the create-time check.
    #[error("volume {volume}: {reason}")]
    Remote { volume: String, reason: String },
    /// The volume's secret cannot be used: not bound to the volume's server, an inline
    /// password that would replace another value, missing. Nothing was sent to the server.
    #[error("volume {volume}: {source}")]
    Secret {
        volume: String,
        #[source]
        source: crate::secrets::SecretError,
    },
    /// Something this host or this version cannot do for the volume.
    #[error("volume {volume}: {reason}")]
    Unsupported { volume: String, reason: String },
    #[error("volume {volume} cannot be resized: {reason}")]
    Resize { volume: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A worker task died (panic); a bug, reported rather than hidden.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn io(volume: &str, action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let (volume, path) = (volume.to_string(), path.into());
        move |source| Error::Io { volume, action, path, source }
    }
}
