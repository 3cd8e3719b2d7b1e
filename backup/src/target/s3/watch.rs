//! Watching requests that may rightly take long (a part or a small object on a slow uplink,
//! completing many parts): instead of a short timeout that would cut off a slow but live link,
//! [`Shared::watch`] probes the server while it waits and gives the request up only when the
//! server stopped answering anything — after [`PROBE_AFTER`] (15 s) without an answer, then
//! every [`PROBE_TIMEOUT`] (10 s), a HeadBucket with a 10 s timeout; [`PROBE_MISSES`] (2)
//! unanswered probes in a row fail the request, so a hung server fails a write after ~35 s.
//! The watched request's own attempt timeout ([`body_attempt_timeout`]: 60 s plus 32 s per
//! MiB) is only a last resort.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::error::SdkError;

use super::Shared;
use super::explain::explain;

/// Requests that may rightly take long are watched: after `PROBE_AFTER` without an answer,
/// and then continuously, a HeadBucket with `PROBE_TIMEOUT` checks that the server still
/// answers; `PROBE_MISSES` unanswered probes in a row give the request up.
const PROBE_AFTER: Duration = Duration::from_secs(15);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_MISSES: u32 = 2;

/// The server stopped answering while a watched request waited for it.
#[derive(Debug, thiserror::Error)]
#[error("endpoint {endpoint} stopped answering: no answer for {secs} s, and {misses} probes failed ({reason})")]
pub(super) struct Unanswered {
    endpoint: String,
    /// Seconds since the request was sent.
    secs: u64,
    misses: u32,
    /// Why the last probe failed.
    reason: String,
}

/// Last-resort attempt timeout of a request carrying `len` bytes: 60 s plus 32 s per MiB
/// (32 KiB/s, so that the parts in flight still fit through a 1 Mbit/s uplink). A hung server
/// is caught long before by the probes (see [`PROBE_AFTER`]).
pub(super) fn body_attempt_timeout(len: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis((len as u64).div_ceil(32 << 10).saturating_mul(1000))
}

/// Timeouts of a watched request (see [`Shared::watch`]): a long attempt timeout and no
/// overall one.
pub(super) fn long_timeouts(attempt: Duration) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default()
        .timeout_config(TimeoutConfig::builder().operation_attempt_timeout(attempt).disable_operation_timeout().build())
}

impl Shared {
    /// Waits for a request that may rightly take long, checking while it waits that the server
    /// still answers other requests.
    ///
    /// # Errors
    /// [`Unanswered`] when the server stopped answering (the request is dropped).
    pub(super) async fn watch<F: Future>(&self, fut: F) -> Result<F::Output, Unanswered> {
        let mut fut = std::pin::pin!(fut);
        let start = Instant::now();
        tokio::select! {
            out = &mut fut => return Ok(out),
            () = tokio::time::sleep(PROBE_AFTER) => {}
        }
        let mut misses = 0;
        loop {
            let probe_start = Instant::now();
            let probe = tokio::select! {
                out = &mut fut => return Ok(out),
                p = self.probe() => p,
            };
            match probe {
                None => misses = 0,
                Some(reason) => {
                    misses += 1;
                    if misses >= PROBE_MISSES {
                        return Err(Unanswered {
                            endpoint: self.endpoint.clone(),
                            secs: start.elapsed().as_secs(),
                            misses,
                            reason,
                        });
                    }
                }
            }
            // Probe at most every PROBE_TIMEOUT.
            let rest = PROBE_TIMEOUT.saturating_sub(probe_start.elapsed());
            tokio::select! {
                out = &mut fut => return Ok(out),
                () = tokio::time::sleep(rest) => {}
            }
        }
    }

    /// One HeadBucket, without retries: `None` if the server answered anything at all (an
    /// error answer too), else why not.
    async fn probe(&self) -> Option<String> {
        let config = aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled()).timeout_config(
            TimeoutConfig::builder().operation_attempt_timeout(PROBE_TIMEOUT).operation_timeout(PROBE_TIMEOUT).build(),
        );
        match self.client.head_bucket().bucket(&self.spec.bucket).customize().config_override(config).send().await {
            Ok(_) | Err(SdkError::ServiceError(_) | SdkError::ResponseError(_)) => None,
            Err(e) => Some(explain(&e, self)),
        }
    }
}
