//! The retry policy of S3 requests: try again only errors marked temporary.
//!
//! Each request makes up to [`super::SDK_ATTEMPTS`] attempts inside the SDK (exponential
//! backoff). A request that still fails is tried again by [`with_retries`] up to [`TRIES`]
//! times in all ([`TRY_PAUSES`]: 1 s, then 3 s apart) while less than [`RETRY_WINDOW`] (30 s)
//! have passed since its first try — but only when [`transient`] says the error is temporary:
//! timeouts, broken answers, connections that failed for a reason other than the request or
//! missing credentials, and the server's 5xx (but 501), 429 and its "slow down / try later"
//! codes. Errors that retrying cannot fix (access denied, a missing bucket or object, a
//! request the server does not implement) fail at once, so a misconfigured target fails a
//! backup in one round trip instead of after 30 s.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::S3Error;
use super::explain::{credentials_error, error_chain};

/// Our own tries of a request (each one up to `SDK_ATTEMPTS` attempts), the pauses between
/// them, and how long after the first try a new one may still start.
const TRIES: u32 = 3;
const TRY_PAUSES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
const RETRY_WINDOW: Duration = Duration::from_secs(30);

/// A request that failed for good, and how many times it was tried.
pub(super) struct Failure<E> {
    pub(super) err: Box<S3Error<E>>,
    pub(super) tries: u32,
}

impl<E: ProvideErrorMetadata> Failure<E> {
    /// The server's error code (`NoSuchKey`, ...), if it answered with one.
    pub(super) fn code(&self) -> Option<&str> {
        match &*self.err {
            SdkError::ServiceError(se) => se.err().code(),
            _ => None,
        }
    }

    /// The HTTP status of the answer, if there was one.
    pub(super) fn status(&self) -> Option<u16> {
        self.err.raw_response().map(|r| r.status().as_u16())
    }
}

/// Whether a request on a multipart upload failed because the upload does not exist.
pub(super) fn upload_gone<E: ProvideErrorMetadata>(f: &Failure<E>) -> bool {
    f.code() == Some("NoSuchUpload") || (f.status() == Some(404) && f.code() != Some("NoSuchBucket"))
}

/// Runs a request (each call of `send` is one try with the SDK's own retries) up to
/// [`TRIES`] times while its errors are transient and [`RETRY_WINDOW`] has not passed.
pub(super) async fn with_retries<T, E, F, Fut>(mut send: F) -> Result<T, Failure<E>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S3Error<E>>>,
{
    let start = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        match send().await {
            Ok(v) => return Ok(v),
            Err(err) => {
                let pause = TRY_PAUSES.get(tries as usize - 1).copied();
                let Some(pause) = pause.filter(|_| tries < TRIES && start.elapsed() < RETRY_WINDOW && transient(&err))
                else {
                    return Err(Failure { err: Box::new(err), tries });
                };
                // The error's Display chain only: its Debug form holds the raw response.
                tracing::warn!(error = %error_chain(&err), try_no = tries, "s3 request failed; trying again");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Whether trying again may help: the error is marked temporary.
pub(super) fn transient<E: ProvideErrorMetadata + std::error::Error + 'static>(err: &S3Error<E>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => !d.is_user() && credentials_error(err).is_none(),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            (status >= 500 && status != 501)
                || status == 429
                || matches!(
                    se.err().code(),
                    Some(
                        "InternalError"
                            | "ServiceUnavailable"
                            | "SlowDown"
                            | "RequestTimeout"
                            | "RequestTimeoutException"
                    )
                )
        }
        _ => false,
    }
}
