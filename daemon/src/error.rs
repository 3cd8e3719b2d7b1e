//! The daemon's errors, and the one place they become HTTP responses.
//!
//! [`Error`] is what the backup engine, restores, export/import and the migration receiver
//! fail with: a volume-service error ([`voltool_plugin::Error`]) or one of their own.
//! [`ApiError`] is the management API's error: every handler returns
//! `Result<_, ApiError>`, and the status of each error kind is decided in [`status_of`], a
//! `match` without a catch-all arm, so a new kind forces a decision (the bottlerocket
//! apiserver shape). Messages name the volume, backup or path and never carry a secret.

use axum::extract::FromRequest;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use voltool_plugin::options::OptionError;
use voltool_plugin::secrets::SecretError;
use voltool_plugin::store::StoreError;

/// Result alias for the daemon crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a daemon operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The volume service refused or failed (bad options, not found, in use, mount, store).
    #[error(transparent)]
    Volume(#[from] voltool_plugin::Error),
    /// A backup operation failed; the reason names the target or the file.
    #[error("backup {id}: {reason}")]
    Backup { id: String, reason: String },
    #[error("backup {id} not found")]
    BackupNotFound { id: String },
    #[error("a backup of volume {volume} is already running ({id})")]
    BackupBusy { volume: String, id: String },
    /// A backup target failed or refused (a listing of what it holds), naming it.
    #[error(transparent)]
    Target(#[from] voltool_backup::TargetError),
    /// A restore or import was refused or failed; the volume is unchanged.
    #[error("restore into volume {volume}: {reason}")]
    Restore { volume: String, reason: String },
    /// Input that cannot be used (a bad target, retention policy, ...).
    #[error("{0}")]
    BadRequest(String),
    /// A worker task died (panic); a bug, reported rather than hidden.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Volume(e.into())
    }
}

impl From<OptionError> for Error {
    fn from(e: OptionError) -> Self {
        Error::Volume(e.into())
    }
}

impl Error {
    /// The volume service's "volume not found".
    pub fn volume_not_found(volume: impl Into<String>) -> Self {
        Error::Volume(voltool_plugin::Error::NotFound { volume: volume.into() })
    }
}

/// HTTP status of a volume-service error.
pub fn volume_status(e: &voltool_plugin::Error) -> StatusCode {
    use voltool_plugin::Error as V;
    match e {
        V::Option(_) | V::Resize { .. } | V::Remote { .. } | V::Unsupported { .. } => StatusCode::BAD_REQUEST,
        V::NotFound { .. } => StatusCode::NOT_FOUND,
        V::Secret { source, .. } => match source {
            SecretError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            SecretError::Exists { .. } => StatusCode::CONFLICT,
            SecretError::WrongServer { .. } => StatusCode::FORBIDDEN,
            SecretError::Name { .. }
            | SecretError::NotFound { .. }
            | SecretError::Empty { .. }
            | SecretError::TooLarge { .. }
            | SecretError::Server { .. } => StatusCode::BAD_REQUEST,
        },
        V::Conflict { .. } | V::InUse { .. } | V::Restoring { .. } => StatusCode::CONFLICT,
        V::Mount { .. }
        | V::Unmount { .. }
        | V::Io { .. }
        | V::Tool { .. }
        | V::Timeout { .. }
        | V::Store(_)
        | V::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// HTTP status of a daemon error.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Volume(v) => volume_status(v),
        Error::BadRequest(_) | Error::Restore { .. } => StatusCode::BAD_REQUEST,
        Error::BackupNotFound { .. } => StatusCode::NOT_FOUND,
        Error::BackupBusy { .. } => StatusCode::CONFLICT,
        Error::Backup { .. } | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::Target(t) => target_status(t),
    }
}

/// HTTP status of a target's error: the request's fault, or the storage's (a bad gateway).
pub fn target_status(e: &voltool_backup::TargetError) -> StatusCode {
    use voltool_backup::TargetError as T;
    match e {
        T::Config { .. } | T::TooManyObjects { .. } | T::TooLarge { .. } => StatusCode::BAD_REQUEST,
        T::NotFound { .. } => StatusCode::NOT_FOUND,
        T::Io { .. } | T::S3 { .. } | T::Stream { .. } => StatusCode::BAD_GATEWAY,
    }
}

/// HTTP status of a secret-store error met on the secret routes (`voltool secret ...`): there
/// a secret bound to other servers is a bad request, not a refusal of a volume.
pub fn secret_status(e: &SecretError) -> StatusCode {
    match e {
        SecretError::Name { .. }
        | SecretError::Empty { .. }
        | SecretError::TooLarge { .. }
        | SecretError::Server { .. }
        | SecretError::WrongServer { .. } => StatusCode::BAD_REQUEST,
        SecretError::Exists { .. } => StatusCode::CONFLICT,
        SecretError::NotFound { .. } => StatusCode::NOT_FOUND,
        SecretError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The management API's error: a status and a message, answered as `{"error": message}`
/// ([`voltool_api::ErrorBody`]).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    /// A 400 with this message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// Any status with this message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self { status: status_of(&e), message: e.to_string() }
    }
}

impl From<voltool_plugin::Error> for ApiError {
    fn from(e: voltool_plugin::Error) -> Self {
        Self { status: volume_status(&e), message: e.to_string() }
    }
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        Self { status: secret_status(&e), message: e.to_string() }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(e.to_string()).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(voltool_api::ErrorBody { error: self.message })).into_response()
    }
}

/// A JSON request body read as bytes whatever its Content-Type (the CLI and Docker send
/// none); an empty or all-blank body is `{}`. A body that does not parse is a 400 saying
/// where it failed, never quoting it (it may hold a secret).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
        parse_body(&bytes).map(JsonBody)
    }
}

/// Parses a JSON request body (empty = `{}`).
///
/// # Errors
/// A 400 with serde's reason.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Parses a body that carries a secret: a failure says only where (serde's reason could quote
/// the value).
///
/// # Errors
/// A 400 naming the line and column where it failed.
pub fn parse_secret_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body at line {} column {}", e.line(), e.column())))
}
