//! `s3://bucket/prefix` targets: AWS S3 or an S3-compatible server, through `aws-sdk-s3`.
//!
//! ## Writing an archive (a stream of unknown length)
//! [`Target::create`] starts a multipart upload at once (so [`ObjectWriter::token`], the upload
//! id, can be recorded before a byte is written) and the writer cuts the stream into parts:
//!
//! - Part sizes follow [`part_size`], a pure schedule of the part index and the provider's
//!   part-count limit (`max_parts`, 10,000 on AWS): 8 MiB parts for the first tenth of the
//!   allowed parts, then the size doubles after every further tenth (capped at S3's 5 GiB).
//!   With 10,000 parts the first ~7.8 GiB go in 8 MiB parts and the limit is ~7.8 TiB (more
//!   than S3's 5 TiB object limit); with `max_parts = 10` parts double each time and the limit
//!   is ~8 GiB. No part but the last is below S3's 5 MiB minimum. A stream larger than the
//!   schedule's capacity fails with a message saying so (raise `max_parts`).
//! - A full part is handed to a task on the runtime and the writer goes on filling the next
//!   one. At most 2 parts and at most 16 MiB (or one part, when parts are larger) are in
//!   flight; `write` blocks while the limit is reached. Memory is therefore bounded by the
//!   in-flight bytes plus the part being filled: 24 MiB with 8 MiB parts, whatever the length
//!   of the stream (larger parts, from the 1,001st part on with 10,000 parts, need more).
//! - Bodies are in memory, so the SDK sends a CRC32 checksum header the server verifies and
//!   can resend a body on its own retries. Each request makes up to 3 attempts inside the SDK
//!   (exponential backoff); a part, a completion or a small object that still fails is
//!   tried again up to 3 times in all (1 s, then 3 s apart) while less than 30 s have passed
//!   since its first try. Errors that retrying cannot fix (access denied, missing bucket...)
//!   are not retried.
//! - [`ObjectWriter::commit`] uploads the last part (any size; an empty stream is written with
//!   PutObject and the multipart upload aborted), completes the upload with the parts in order
//!   and checks with HeadObject that the object has exactly the size written (a mismatched
//!   object is deleted). Only then is the object visible.
//! - The multipart upload is aborted when any part finally fails (the writer then refuses
//!   further writes), when completing fails, and when the writer is aborted or dropped without
//!   commit (parts still in flight may finish first, for at most 10 s, so that no part lands
//!   after the abort). If the process dies, [`Target::cleanup`] with the recorded token
//!   aborts the upload later.
//!
//! ## Timeouts: a dead or hung server fails the backup in under a minute
//! Connecting times out after 10 s. Requests that are quick on a live server (create, head,
//! delete, abort, the start of a GET) get 15 s per attempt and 40 s in all. Requests that may
//! rightly take long (a part or a small object on a slow uplink, completing many parts) are
//! watched instead: after 15 s without an answer, and every 10 s from then on, a HeadBucket
//! with a 10 s timeout checks that the server still answers anything; two unanswered probes
//! in a row give the request up ("endpoint ... stopped answering"), so a hung server fails a
//! write after ~35 s, while a slow but live link is never cut off (their own attempt timeout,
//! 60 s plus 32 s per MiB, is only a last resort). A transfer moving no bytes for 20 s fails
//! its attempt (the SDK's stalled-stream protection, for uploads and downloads). A server
//! that refuses connections fails a write after the retries above, ~20-30 s. After a failure
//! the abort of the upload is given 10 s (20 s after a drop or `abort`).
//!
//! ## Reading
//! [`Target::open`] streams a GetObject body through a blocking `Read`; if the connection
//! breaks mid-way it resumes at the current offset with a ranged GET (`If-Match` the ETag, so
//! a replaced object is never spliced), up to 3 times.
//!
//! ## Configuration and errors
//! Endpoint, region and path-style addressing come from the [`S3Spec`]; the region falls back
//! to the AWS chain (`AWS_REGION`, profile...) and then `us-east-1`. Credentials come from the
//! standard AWS chain (environment, profile, SSO, web identity, ECS, instance metadata).
//! Errors are [`TargetError::S3`] with a reason in plain words ("bucket x does not exist",
//! "cannot connect to endpoint ...: connection refused", "access denied by the server: ...");
//! they are built from the error code and message only, never from request headers, so no
//! credential or signature can appear in them.
//!
//! ## Threads
//! Every method blocks and belongs outside async code (a `spawn_blocking` thread or a plain
//! thread); requests run on the runtime whose handle [`S3Target::new`] gets, which must be a
//! multi-threaded runtime that outlives the target and its writers and readers. Called from a
//! task of a multi-threaded runtime anyway, a method works through `block_in_place` (it holds
//! up that task); from a current-thread runtime's task it panics.

use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncReadExt};
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use super::{ObjectWriter, S3Spec, Target, TargetError};

/// Size of the first parts of an upload.
pub const BASE_PART_SIZE: u64 = 8 << 20;
/// S3's smallest part (all but the last part of an upload).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// S3's highest part number.
const MAX_PART_NUMBER: u32 = 10_000;
/// The schedule doubles the part size after every `max_parts / GROWTH_STEPS` parts.
const GROWTH_STEPS: u32 = 10;
/// Parts in flight at most, and bytes in flight at most (but always at least one part).
/// Two parts keep an upload going while the next one fills (the archiver produces a part
/// in well under the time a part takes to send on most links); more only cost memory.
const MAX_IN_FLIGHT: usize = 2;
const IN_FLIGHT_BYTES: u64 = 16 << 20;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per attempt and in all, for requests that are quick on a live server.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(40);
/// A transfer moving no bytes for this long fails its attempt.
const STALL_GRACE: Duration = Duration::from_secs(20);
/// Requests that may rightly take long (bodies on slow links, completing many parts) are
/// watched: after `PROBE_AFTER` without an answer, and then continuously, a HeadBucket with
/// `PROBE_TIMEOUT` checks that the server still answers; `PROBE_MISSES` unanswered probes in
/// a row give the request up.
const PROBE_AFTER: Duration = Duration::from_secs(15);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_MISSES: u32 = 2;
/// Attempt timeout of CompleteMultipartUpload (AWS may take minutes for many parts).
const COMPLETE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(600);
/// SDK attempts per request.
const SDK_ATTEMPTS: u32 = 3;
/// Our own tries of a request (each one up to `SDK_ATTEMPTS` attempts), the pauses between
/// them, and how long after the first try a new one may still start.
const TRIES: u32 = 3;
const TRY_PAUSES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
const RETRY_WINDOW: Duration = Duration::from_secs(30);
/// How long an abort waits for parts in flight, and for the AbortMultipartUpload itself
/// (shorter after a failure: the server is likely gone, and cleanup can abort it later).
const ABORT_DRAIN: Duration = Duration::from_secs(10);
const ABORT_TIMEOUT: Duration = Duration::from_secs(20);
const ABORT_AFTER_FAILURE_TIMEOUT: Duration = Duration::from_secs(10);
/// Times a broken download is resumed.
const READ_RESUMES: u32 = 3;

/// The size of part `index` (0-based) of an upload that may have at most `max_parts` parts,
/// or `None` when `index` is past the limit.
///
/// 8 MiB for the first `max_parts / 10` parts (at least one), then doubling after each
/// further `max_parts / 10` parts, capped at 5 GiB.
pub fn part_size(index: u32, max_parts: u32) -> Option<u64> {
    let max_parts = max_parts.clamp(1, MAX_PART_NUMBER);
    if index >= max_parts {
        return None;
    }
    let run = (max_parts / GROWTH_STEPS).max(1);
    let doublings = (index / run).min(20);
    Some((BASE_PART_SIZE << doublings).min(MAX_PART_SIZE))
}

/// The largest stream an upload of at most `max_parts` parts can hold under [`part_size`].
pub fn upload_capacity(max_parts: u32) -> u64 {
    (0..max_parts.clamp(1, MAX_PART_NUMBER)).filter_map(|i| part_size(i, max_parts)).sum()
}

/// How many parts of `size` bytes may be in flight at once.
fn max_in_flight(size: u64) -> usize {
    usize::try_from(IN_FLIGHT_BYTES / size.max(1)).unwrap_or(MAX_IN_FLIGHT).clamp(1, MAX_IN_FLIGHT)
}

/// Last-resort attempt timeout of a request carrying `len` bytes: 60 s plus 32 s per MiB
/// (32 KiB/s, so that the parts in flight still fit through a 1 Mbit/s uplink). A hung server
/// is caught long before by the probes (see [`PROBE_AFTER`]).
fn body_attempt_timeout(len: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis((len as u64).div_ceil(32 << 10).saturating_mul(1000))
}

/// An S3 bucket and prefix.
pub struct S3Target {
    shared: Arc<Shared>,
}

/// What the target, its writers, readers and upload tasks share.
struct Shared {
    client: Client,
    spec: S3Spec,
    rt: Handle,
    /// `s3://bucket/prefix`.
    describe: String,
    /// The endpoint as errors name it (no user info, no query).
    endpoint: String,
    region: String,
}

impl fmt::Debug for S3Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Target")
            .field("target", &self.shared.describe)
            .field("endpoint", &self.shared.endpoint)
            .field("region", &self.shared.region)
            .field("path_style", &self.shared.spec.path_style)
            .field("max_parts", &self.shared.spec.max_parts)
            .finish()
    }
}

impl S3Target {
    /// Builds the client (region, credentials chain, timeouts, retries). Sends no request.
    /// Blocks; call it outside async code.
    pub fn new(spec: S3Spec, rt: Handle) -> Result<Self, TargetError> {
        let describe = if spec.prefix.is_empty() {
            format!("s3://{}", spec.bucket)
        } else {
            format!("s3://{}/{}", spec.bucket, spec.prefix)
        };
        if spec.bucket.is_empty() {
            return Err(TargetError::Config { target: describe, reason: "missing bucket".into() });
        }
        let endpoint_url = match &spec.endpoint {
            None => None,
            Some(e) => match url::Url::parse(e) {
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    return Err(TargetError::Config {
                        target: describe,
                        reason: "credentials do not belong in the endpoint URL; give them to the daemon through the AWS environment".into(),
                    });
                }
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
                _ => {
                    return Err(TargetError::Config {
                        target: describe,
                        reason: "the endpoint must be an http:// or https:// URL".into(),
                    });
                }
            },
        };
        let region_chain = RegionProviderChain::first_try(spec.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::from_static("us-east-1"));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let retries = RetryConfig::standard()
            .with_max_attempts(SDK_ATTEMPTS)
            .with_initial_backoff(Duration::from_millis(500))
            .with_max_backoff(Duration::from_secs(5));
        let stall = StalledStreamProtectionConfig::enabled().grace_period(STALL_GRACE).build();
        let loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region_chain)
            .timeout_config(timeouts)
            .retry_config(retries)
            .stalled_stream_protection(stall);
        let sdk_config = block(&rt, loader.load());
        let region = sdk_config.region().map_or_else(|| "us-east-1".to_owned(), |r| r.to_string());
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk_config).force_path_style(spec.path_style);
        if let Some(e) = &spec.endpoint {
            builder = builder.endpoint_url(e.trim_end_matches('/'));
        }
        let client = Client::from_conf(builder.build());
        let endpoint = match endpoint_url {
            Some(mut u) => {
                u.set_query(None);
                u.set_fragment(None);
                u.as_str().trim_end_matches('/').to_owned()
            }
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        Ok(Self { shared: Arc::new(Shared { client, spec, rt, describe, endpoint, region }) })
    }

    /// The largest stream one archive can be with this target's `max_parts`.
    pub fn capacity(&self) -> u64 {
        upload_capacity(self.shared.spec.max_parts)
    }
}

impl Target for S3Target {
    fn describe(&self) -> String {
        self.shared.describe.clone()
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, TargetError> {
        let sh = &self.shared;
        sh.check_name(name)?;
        let key = sh.spec.key(name);
        let out = block(
            &sh.rt,
            with_retries(|| sh.client.create_multipart_upload().bucket(&sh.spec.bucket).key(&key).send()),
        )
        .map_err(|f| sh.error("starting the upload of", &key, &f))?;
        let Some(upload_id) = out.upload_id().filter(|u| !u.is_empty()).map(str::to_owned) else {
            return Err(sh.s3_error("starting the upload of", &key, "the server returned no upload id".into()));
        };
        tracing::debug!(target_url = %sh.describe, %key, %upload_id, "multipart upload started");
        Ok(Box::new(S3Writer {
            shared: Arc::clone(sh),
            key,
            upload_id,
            buf: Vec::new(),
            part_limit: 0,
            parts_sent: 0,
            written: 0,
            tasks: JoinSet::new(),
            parts: Vec::new(),
            failure: None,
            finished: false,
            started: Instant::now(),
        }))
    }

    fn put_small(&self, name: &str, data: &[u8]) -> Result<(), TargetError> {
        let sh = &self.shared;
        sh.check_name(name)?;
        let key = sh.spec.key(name);
        block(&sh.rt, sh.put(&key, Bytes::copy_from_slice(data)))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, TargetError> {
        let sh = &self.shared;
        sh.check_name(name)?;
        let key = sh.spec.key(name);
        let out = block(&sh.rt, with_retries(|| sh.client.get_object().bucket(&sh.spec.bucket).key(&key).send()));
        let out = match out {
            Ok(out) => out,
            Err(f)
                if f.err.as_service_error().is_some_and(|e| e.is_no_such_key())
                    || (f.status() == Some(404) && f.code() != Some("NoSuchBucket")) =>
            {
                return Err(TargetError::NotFound { target: sh.describe.clone(), name: name.to_owned() });
            }
            Err(f) => return Err(sh.error("reading", &key, &f)),
        };
        let size = out.content_length().and_then(|l| u64::try_from(l).ok());
        let etag = out.e_tag().map(str::to_owned);
        Ok(Box::new(S3Reader {
            shared: Arc::clone(sh),
            key,
            etag,
            size,
            pos: 0,
            body: Some(Box::pin(out.body.into_async_read())),
            resumes_left: READ_RESUMES,
        }))
    }

    fn exists(&self, name: &str) -> Result<bool, TargetError> {
        let sh = &self.shared;
        sh.check_name(name)?;
        let key = sh.spec.key(name);
        match sh.head(&key) {
            Ok(Some(_)) => Ok(true),
            Ok(None) => Ok(false),
            Err(f) => Err(sh.error("checking", &key, &f)),
        }
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        let sh = &self.shared;
        sh.check_name(name)?;
        let key = sh.spec.key(name);
        match block(&sh.rt, with_retries(|| sh.client.delete_object().bucket(&sh.spec.bucket).key(&key).send())) {
            Ok(_) => Ok(()),
            Err(f) if f.code() == Some("NoSuchKey") => Ok(()),
            Err(f) => Err(sh.error("deleting", &key, &f)),
        }
    }

    fn cleanup(&self, name: &str, token: Option<&str>) -> Result<(), TargetError> {
        let sh = &self.shared;
        sh.check_name(name)?;
        let key = sh.spec.key(name);
        if let Some(upload_id) = token.filter(|t| !t.is_empty()) {
            match block(&sh.rt, sh.abort_upload(&key, upload_id)) {
                Ok(()) => {
                    tracing::info!(target_url = %sh.describe, %key, %upload_id, "aborted a leftover multipart upload")
                }
                Err(f) if upload_gone(&f) => {}
                // Some servers (s3s-fs) deny aborting an upload that no longer exists. What
                // matters is that nothing stays stored: no parts left means nothing to do.
                Err(f) if f.status() == Some(403) && block(&sh.rt, sh.no_parts_left(&key, upload_id)) => {
                    tracing::debug!(target_url = %sh.describe, %key, %upload_id, "upload already gone (abort denied, no parts)");
                }
                Err(f) => return Err(sh.error("aborting the upload of", &key, &f)),
            }
        }
        // Uploads whose id was never recorded: find them by key, where the server can list them.
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let listed = block(
                &sh.rt,
                with_retries(|| {
                    sh.client
                        .list_multipart_uploads()
                        .bucket(&sh.spec.bucket)
                        .prefix(&key)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send()
                }),
            );
            let out = match listed {
                Ok(out) => out,
                Err(f) if f.code() == Some("NotImplemented") || f.status() == Some(501) => {
                    tracing::debug!(target_url = %sh.describe, "the server cannot list multipart uploads");
                    return Ok(());
                }
                // Listing is a sweep for uploads whose id was lost; credentials allowed to
                // write but not to list uploads should not fail every cleanup.
                Err(f) if f.status() == Some(403) => {
                    tracing::warn!(
                        target_url = %sh.describe, %key, error = %sh.error("listing the uploads of", &key, &f),
                        "cannot list multipart uploads; only recorded upload ids are cleaned up"
                    );
                    return Ok(());
                }
                Err(f) => return Err(sh.error("listing the uploads of", &key, &f)),
            };
            for up in out.uploads() {
                let (Some(k), Some(id)) = (up.key(), up.upload_id()) else { continue };
                if k != key || Some(id) == token {
                    continue;
                }
                match block(&sh.rt, sh.abort_upload(&key, id)) {
                    Ok(()) => {
                        tracing::info!(target_url = %sh.describe, %key, upload_id = %id, "aborted a leftover multipart upload")
                    }
                    Err(f) if upload_gone(&f) => {}
                    Err(f) => return Err(sh.error("aborting the upload of", &key, &f)),
                }
            }
            if out.is_truncated() != Some(true)
                || (out.next_key_marker().is_none() && out.next_upload_id_marker().is_none())
            {
                return Ok(());
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
        }
    }
}

impl Shared {
    fn check_name(&self, name: &str) -> Result<(), TargetError> {
        if name.is_empty() || name.starts_with('.') || name.contains('/') || name.chars().any(char::is_control) {
            return Err(TargetError::Config {
                target: self.describe.clone(),
                reason: format!("bad object name {name:?}"),
            });
        }
        Ok(())
    }

    fn s3_error(&self, op: &'static str, key: &str, reason: String) -> TargetError {
        TargetError::S3 { target: self.describe.clone(), op, key: key.to_owned(), reason }
    }

    fn error<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        op: &'static str,
        key: &str,
        f: &Failure<E>,
    ) -> TargetError {
        let mut reason = explain(&f.err, self);
        if f.tries > 1 {
            reason.push_str(&format!(" (gave up after {} tries)", f.tries));
        }
        self.s3_error(op, key, reason)
    }

    /// PutObject, watched.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), TargetError> {
        let len = data.len();
        let send = with_retries(|| {
            self.client
                .put_object()
                .bucket(&self.spec.bucket)
                .key(key)
                .content_length(len as i64)
                .body(ByteStream::from(data.clone()))
                .customize()
                .config_override(long_timeouts(body_attempt_timeout(len)))
                .send()
        });
        match self.watch(send).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(f)) => Err(self.error("writing", key, &f)),
            Err(hung) => Err(self.s3_error("writing", key, hung)),
        }
    }

    /// Waits for a request that may rightly take long, checking while it waits that the server
    /// still answers other requests. `Err` (a reason) when it stopped answering.
    async fn watch<F: Future>(&self, fut: F) -> Result<F::Output, String> {
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
                        return Err(format!(
                            "endpoint {} stopped answering: no answer for {} s, and {misses} probes failed ({reason})",
                            self.endpoint,
                            start.elapsed().as_secs()
                        ));
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

    /// HeadObject: the object's size, `None` if it does not exist.
    fn head(
        &self,
        key: &str,
    ) -> Result<Option<Option<u64>>, Failure<aws_sdk_s3::operation::head_object::HeadObjectError>> {
        match block(&self.rt, with_retries(|| self.client.head_object().bucket(&self.spec.bucket).key(key).send())) {
            Ok(out) => Ok(Some(out.content_length().and_then(|l| u64::try_from(l).ok()))),
            Err(f) if f.err.as_service_error().is_some_and(|e| e.is_not_found()) || f.status() == Some(404) => {
                // A missing bucket is an error, not a missing object.
                if f.code() == Some("NoSuchBucket") { Err(f) } else { Ok(None) }
            }
            Err(f) => Err(f),
        }
    }

    /// Whether upload `upload_id` holds no parts (or no longer exists), by ListParts.
    async fn no_parts_left(&self, key: &str, upload_id: &str) -> bool {
        let listed = with_retries(|| {
            self.client.list_parts().bucket(&self.spec.bucket).key(key).upload_id(upload_id).max_parts(1).send()
        })
        .await;
        match listed {
            Ok(out) => out.parts().is_empty(),
            Err(f) => upload_gone(&f),
        }
    }

    async fn abort_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), Failure<aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadError>> {
        with_retries(|| {
            self.client.abort_multipart_upload().bucket(&self.spec.bucket).key(key).upload_id(upload_id).send()
        })
        .await
        .map(|_| ())
    }
}

/// Timeouts of a watched request (see [`Shared::watch`]): a long attempt timeout and no
/// overall one.
fn long_timeouts(attempt: Duration) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default()
        .timeout_config(TimeoutConfig::builder().operation_attempt_timeout(attempt).disable_operation_timeout().build())
}

/// Whether a request on a multipart upload failed because the upload does not exist.
fn upload_gone<E: ProvideErrorMetadata>(f: &Failure<E>) -> bool {
    f.code() == Some("NoSuchUpload") || (f.status() == Some(404) && f.code() != Some("NoSuchBucket"))
}

/// A request that failed for good, and how many times it was tried.
struct Failure<E> {
    err: Box<SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
    tries: u32,
}

impl<E: ProvideErrorMetadata> Failure<E> {
    fn code(&self) -> Option<&str> {
        match &*self.err {
            SdkError::ServiceError(se) => se.err().code(),
            _ => None,
        }
    }

    fn status(&self) -> Option<u16> {
        self.err.raw_response().map(|r| r.status().as_u16())
    }
}

/// Runs a request (each call of `send` is one try with the SDK's own retries) up to
/// [`TRIES`] times while its errors are transient and [`RETRY_WINDOW`] has not passed.
async fn with_retries<T, E, F, Fut>(mut send: F) -> Result<T, Failure<E>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>>,
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

/// Whether trying again may help.
fn transient<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => !d.is_user() && !mentions_credentials(err),
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

fn mentions_credentials<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool
where
    E: std::error::Error + 'static,
{
    let text = error_chain(err).to_ascii_lowercase();
    text.contains("credential") || text.contains("identity")
}

/// The messages of an error and its sources, joined by ": ".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The first `std::io::Error` among an error's sources.
fn find_io_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = e.source();
    }
    None
}

/// A server's message, shortened, for a reason ("" when there is none).
fn server_message(msg: Option<&str>) -> String {
    match msg.map(str::trim).filter(|m| !m.is_empty()) {
        None => String::new(),
        Some(m) => {
            let short: String = m.chars().take(200).collect();
            format!(" ({short})")
        }
    }
}

/// A reason a person understands, from the error's code, message and kind only (never from
/// the request, so no credentials or signatures).
fn explain<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>, sh: &Shared) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let bucket = &sh.spec.bucket;
    let ep = &sh.endpoint;
    let creds = "check the AWS credentials given to the daemon";
    match err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let e = se.err();
            let msg = server_message(e.message());
            match e.code() {
                Some(
                    code @ ("InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidToken"
                    | "ExpiredToken"
                    | "TokenRefreshRequired"
                    | "InvalidSecurity"
                    | "InvalidClientTokenId"
                    | "NotSignedUp"),
                ) => format!("access denied by the server: {code} — {creds}"),
                Some(code @ ("AccessDenied" | "AllAccessDisabled" | "AccountProblem")) => {
                    format!(
                        "access denied by the server: {code}{msg} — {creds} and their permissions on bucket {bucket}"
                    )
                }
                Some("NoSuchBucket") => format!("bucket {bucket} does not exist"),
                Some("NoSuchKey") => "the object does not exist".into(),
                Some("NoSuchUpload") => {
                    "the multipart upload no longer exists on the server (aborted or expired)".into()
                }
                Some(
                    code
                    @ ("AuthorizationHeaderMalformed" | "PermanentRedirect" | "IllegalLocationConstraintException"),
                ) => {
                    format!(
                        "the server expects another region ({code}{msg}); the target uses region {} — set the target's region",
                        sh.region
                    )
                }
                Some("NotImplemented") => format!("the server does not support this request (NotImplemented{msg})"),
                Some(code @ ("SlowDown" | "ServiceUnavailable" | "InternalError")) => {
                    format!("the server is overloaded or failing: {code}{msg} (HTTP {status})")
                }
                Some(
                    code @ ("EntityTooSmall" | "EntityTooLarge" | "InvalidPart" | "InvalidPartOrder" | "BadDigest"),
                ) => {
                    format!("the server refused the upload: {code}{msg}")
                }
                Some(code) if !code.is_empty() && status == 403 => {
                    format!(
                        "access denied by the server: {code}{msg} — {creds} and their permissions on bucket {bucket}"
                    )
                }
                Some(code) if !code.is_empty() => format!("the server answered {code}{msg} (HTTP {status})"),
                _ => match status {
                    // HEAD answers have no body, hence no code.
                    403 => format!(
                        "access denied by the server (HTTP 403) — {creds} and their permissions on bucket {bucket}"
                    ),
                    404 => format!("not found (HTTP 404; does bucket {bucket} exist?)"),
                    301 | 307 => format!(
                        "the server redirects to another region (HTTP {status}); the target uses region {} — set the target's region",
                        sh.region
                    ),
                    400 => format!(
                        "the server rejected the request (HTTP 400; a wrong region? the target uses {})",
                        sh.region
                    ),
                    s if s >= 500 => format!("the server failed (HTTP {s})"),
                    s => format!("the server answered HTTP {s}"),
                },
            }
        }
        SdkError::TimeoutError(_) => format!("endpoint {ep} did not answer in time (request timed out)"),
        SdkError::DispatchFailure(d) => {
            if mentions_credentials(err) {
                let chain = error_chain(err);
                let detail = chain.trim_start_matches("dispatch failure: ").trim_start_matches("other: ");
                let detail = detail.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
                return format!(
                    "no usable AWS credentials ({detail}) — give the daemon AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"
                );
            }
            match find_io_error(err) {
                Some(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
                    format!("cannot connect to endpoint {ep}: connection refused")
                }
                Some(io) if io.kind() == io::ErrorKind::TimedOut => {
                    format!("cannot connect to endpoint {ep}: timed out")
                }
                Some(io) if matches!(io.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {
                    format!("the connection to endpoint {ep} broke: {io}")
                }
                Some(io) if !sh.spec.path_style && sh.spec.endpoint.is_some() && io.to_string().contains("lookup") => {
                    format!(
                        "cannot reach endpoint {ep}: {io} (without path_style the bucket is part of the host name, \
                         {bucket}.HOST; set path_style=true for servers like MinIO or Ceph)"
                    )
                }
                Some(io) => format!("cannot reach endpoint {ep}: {io}"),
                None if d.is_timeout() => format!("cannot connect to endpoint {ep}: timed out"),
                None => format!("cannot reach endpoint {ep}: {}", error_chain(err)),
            }
        }
        SdkError::ResponseError(r) => {
            format!("unreadable answer from endpoint {ep} (HTTP {}): {}", r.raw().status().as_u16(), error_chain(err))
        }
        _ => format!("the request could not be made: {}", error_chain(err)),
    }
}

/// Runs `fut` on the runtime and waits for it: `block_on` inside `block_in_place`, which
/// costs nothing on a plain or `spawn_blocking` thread and, on a worker thread of a
/// multi-threaded runtime (a method called from async code by mistake), moves the worker's
/// other tasks away instead of panicking. Panics only in a current-thread runtime's task.
fn block<F: Future>(rt: &Handle, fut: F) -> F::Output {
    tokio::task::block_in_place(|| rt.block_on(fut))
}

/// An archive being uploaded as a multipart upload.
struct S3Writer {
    shared: Arc<Shared>,
    key: String,
    upload_id: String,
    /// The part being filled and the size it is filled to.
    buf: Vec<u8>,
    part_limit: u64,
    /// Parts handed to upload tasks so far.
    parts_sent: u32,
    written: u64,
    tasks: JoinSet<Result<CompletedPart, TargetError>>,
    parts: Vec<CompletedPart>,
    /// Why the upload failed (it was then aborted); later calls repeat it.
    failure: Option<TargetError>,
    /// Committed or aborted: nothing left to do on drop.
    finished: bool,
    started: Instant,
}

impl S3Writer {
    fn failed_io(&self) -> io::Error {
        match &self.failure {
            Some(e) => io::Error::other(e.to_string()),
            None => io::Error::other(format!("{}: the upload is finished", self.shared.describe)),
        }
    }

    /// Records the first failure, stops the parts in flight and aborts the upload.
    fn fail(&mut self, err: TargetError) -> io::Error {
        tracing::warn!(target_url = %self.shared.describe, key = %self.key, error = %err, "upload failed; aborting it");
        if self.failure.is_none() {
            self.failure = Some(err);
        }
        self.tasks.abort_all();
        self.abort_upload(Duration::ZERO, ABORT_AFTER_FAILURE_TIMEOUT);
        self.failed_io()
    }

    /// Aborts the multipart upload after letting parts in flight finish for at most `drain`
    /// (best effort, logged).
    fn abort_upload(&mut self, drain: Duration, timeout: Duration) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.buf = Vec::new();
        let sh = Arc::clone(&self.shared);
        let (key, upload_id) = (self.key.clone(), self.upload_id.clone());
        let mut tasks = std::mem::take(&mut self.tasks);
        let job = async move {
            if !drain.is_zero() {
                let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
            }
            tasks.shutdown().await;
            match tokio::time::timeout(timeout, sh.abort_upload(&key, &upload_id)).await {
                Ok(Ok(())) => tracing::info!(target_url = %sh.describe, %key, %upload_id, "multipart upload aborted"),
                Ok(Err(f)) if upload_gone(&f) => {}
                Ok(Err(f)) => tracing::warn!(
                    target_url = %sh.describe, %key, %upload_id, error = %sh.error("aborting the upload of", &key, &f),
                    "could not abort the multipart upload; Target::cleanup with its id removes it later"
                ),
                Err(_) => tracing::warn!(
                    target_url = %sh.describe, %key, %upload_id,
                    "aborting the multipart upload timed out; Target::cleanup with its id removes it later"
                ),
            }
        };
        let current_thread_rt =
            Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if current_thread_rt {
            // Waiting could panic (in a task) or deadlock here; let the runtime finish it.
            self.shared.rt.spawn(job);
        } else {
            block(&self.shared.rt, job);
        }
    }

    /// Collects finished part uploads without waiting; fails on the first failed one.
    fn reap_finished(&mut self) -> Result<(), io::Error> {
        while let Some(r) = self.tasks.try_join_next() {
            self.collect(r)?;
        }
        Ok(())
    }

    /// Waits for one part upload to finish.
    fn reap_one(&mut self) -> Result<(), io::Error> {
        let rt = self.shared.rt.clone();
        if let Some(r) = block(&rt, self.tasks.join_next()) {
            self.collect(r)?;
        }
        Ok(())
    }

    fn collect(
        &mut self,
        r: Result<Result<CompletedPart, TargetError>, tokio::task::JoinError>,
    ) -> Result<(), io::Error> {
        match r {
            Ok(Ok(part)) => {
                self.parts.push(part);
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(e)),
            Err(join) => {
                let e = self.shared.s3_error("uploading", &self.key, format!("a part upload task failed: {join}"));
                Err(self.fail(e))
            }
        }
    }

    /// Hands the filled buffer to an upload task, first waiting until the in-flight limit
    /// allows one more part.
    fn send_part(&mut self) -> Result<(), io::Error> {
        let len = self.buf.len() as u64;
        self.reap_finished()?;
        while self.tasks.len() >= max_in_flight(len.max(self.part_limit)) {
            self.reap_one()?;
        }
        let body = Bytes::from(std::mem::take(&mut self.buf));
        self.parts_sent += 1;
        let number = self.parts_sent;
        let (sh, key, upload_id) = (Arc::clone(&self.shared), self.key.clone(), self.upload_id.clone());
        tracing::debug!(key = %key, part = number, bytes = len, "uploading part");
        self.tasks.spawn_on(upload_part(sh, key, upload_id, number, body), &self.shared.rt);
        Ok(())
    }
}

async fn upload_part(
    sh: Arc<Shared>,
    key: String,
    upload_id: String,
    number: u32,
    body: Bytes,
) -> Result<CompletedPart, TargetError> {
    let len = body.len();
    let number_i32 = i32::try_from(number).unwrap_or(i32::MAX);
    let send = with_retries(|| {
        sh.client
            .upload_part()
            .bucket(&sh.spec.bucket)
            .key(&key)
            .upload_id(&upload_id)
            .part_number(number_i32)
            .content_length(len as i64)
            .body(ByteStream::from(body.clone()))
            .customize()
            .config_override(long_timeouts(body_attempt_timeout(len)))
            .send()
    });
    let what = format!("part {number} ({len} bytes)");
    let out = match sh.watch(send).await {
        Ok(Ok(out)) => out,
        Ok(Err(f)) => {
            let reason = explain(&f.err, &sh);
            let tries = if f.tries > 1 { format!(" (gave up after {} tries)", f.tries) } else { String::new() };
            return Err(sh.s3_error("uploading", &key, format!("{what}: {reason}{tries}")));
        }
        Err(hung) => return Err(sh.s3_error("uploading", &key, format!("{what}: {hung}"))),
    };
    let Some(etag) = out.e_tag() else {
        return Err(sh.s3_error("uploading", &key, format!("{what}: the server returned no ETag")));
    };
    Ok(CompletedPart::builder().part_number(number_i32).e_tag(etag).build())
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failure.is_some() || self.finished {
            return Err(self.failed_io());
        }
        if data.is_empty() {
            return Ok(0);
        }
        if self.buf.is_empty() {
            let Some(size) = part_size(self.parts_sent, self.shared.spec.max_parts) else {
                let e = self.shared.s3_error(
                    "uploading",
                    &self.key,
                    format!(
                        "the stream is larger than {} bytes, the most {} parts can hold; raise the target's max_parts",
                        upload_capacity(self.shared.spec.max_parts),
                        self.shared.spec.max_parts
                    ),
                );
                return Err(self.fail(e));
            };
            self.part_limit = size;
        }
        let room = usize::try_from(self.part_limit).unwrap_or(usize::MAX) - self.buf.len();
        let n = room.min(data.len());
        if self.buf.capacity() - self.buf.len() < n {
            // Grow by doubling up to the part size, never past it.
            let want = (self.buf.len() + n).max(self.buf.capacity() * 2).max(BASE_PART_SIZE as usize);
            let want = want.min(usize::try_from(self.part_limit).unwrap_or(usize::MAX));
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if self.buf.len() as u64 == self.part_limit {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Parts are sent when full; there is nothing smaller to send before commit.
        if self.failure.is_some() { Err(self.failed_io()) } else { Ok(()) }
    }
}

impl ObjectWriter for S3Writer {
    fn token(&self) -> Option<String> {
        Some(self.upload_id.clone())
    }

    fn commit(mut self: Box<Self>) -> Result<u64, TargetError> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        if self.finished {
            return Err(self.shared.s3_error("completing", &self.key, "the upload is already finished".into()));
        }
        let sh = Arc::clone(&self.shared);
        let key = self.key.clone();
        let failed = |w: &mut Self, e: TargetError| -> TargetError {
            let _ = w.fail(e);
            w.failure.take().unwrap_or_else(|| sh.s3_error("completing", &key, "the upload failed".into()))
        };

        if self.parts_sent == 0 && self.buf.is_empty() {
            // An empty stream: multipart uploads need a part; a plain empty object is simpler.
            if let Err(e) = block(&sh.rt, sh.put(&key, Bytes::new())) {
                return Err(failed(&mut self, e));
            }
            self.abort_upload(Duration::ZERO, ABORT_TIMEOUT);
            tracing::info!(target_url = %sh.describe, %key, "empty object written");
            return Ok(0);
        }
        if !self.buf.is_empty() {
            self.send_part().map_err(|_| {
                self.failure.take().unwrap_or_else(|| sh.s3_error("completing", &key, "upload failed".into()))
            })?;
        }
        while !self.tasks.is_empty() {
            if self.reap_one().is_err() {
                return Err(self
                    .failure
                    .take()
                    .unwrap_or_else(|| sh.s3_error("completing", &key, "upload failed".into())));
            }
        }
        let mut parts = std::mem::take(&mut self.parts);
        parts.sort_by_key(|p| p.part_number());
        let count = parts.len();
        let upload = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        let attempt = COMPLETE_ATTEMPT_TIMEOUT;
        let send = with_retries(|| {
            sh.client
                .complete_multipart_upload()
                .bucket(&sh.spec.bucket)
                .key(&key)
                .upload_id(&self.upload_id)
                .multipart_upload(upload.clone())
                .customize()
                .config_override(long_timeouts(attempt))
                .send()
        });
        match block(&sh.rt, sh.watch(send)) {
            Ok(Ok(_)) => {}
            Ok(Err(f)) => {
                // A retried completion whose first try succeeded finds the upload gone.
                let completed_before = f.code() == Some("NoSuchUpload")
                    && matches!(sh.head(&key), Ok(Some(Some(size))) if size == self.written);
                if !completed_before {
                    let e = sh.error("completing the upload of", &key, &f);
                    return Err(failed(&mut self, e));
                }
            }
            Err(hung) => {
                let e = sh.s3_error("completing the upload of", &key, hung);
                return Err(failed(&mut self, e));
            }
        }
        self.finished = true;
        match sh.head(&key) {
            Ok(Some(Some(size))) if size == self.written => {}
            Ok(Some(Some(size))) => {
                let reason =
                    format!("the server stored {size} bytes but {} were written; the object was deleted", self.written);
                let _ = block(&sh.rt, sh.client.delete_object().bucket(&sh.spec.bucket).key(&key).send());
                return Err(sh.s3_error("checking", &key, reason));
            }
            Ok(Some(None)) => {
                return Err(sh.s3_error("checking", &key, "the server did not say the object's size".into()));
            }
            Ok(None) => {
                return Err(sh.s3_error(
                    "checking",
                    &key,
                    "the object is not there after completing the upload".into(),
                ));
            }
            Err(f) => return Err(sh.error("checking", &key, &f)),
        }
        let secs = self.started.elapsed().as_secs_f64();
        tracing::info!(target_url = %sh.describe, %key, bytes = self.written, parts = count, secs, "object uploaded");
        Ok(self.written)
    }

    fn abort(mut self: Box<Self>) {
        self.abort_upload(ABORT_DRAIN, ABORT_TIMEOUT);
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!(key = %self.key, "upload dropped before commit; aborting it");
            self.abort_upload(ABORT_DRAIN, ABORT_TIMEOUT);
        }
    }
}

/// A GetObject body read blockingly, resumed with a ranged GET if the connection breaks.
struct S3Reader {
    shared: Arc<Shared>,
    key: String,
    etag: Option<String>,
    /// The object's size, if the server said it.
    size: Option<u64>,
    pos: u64,
    body: Option<Pin<Box<dyn AsyncBufRead + Send>>>,
    resumes_left: u32,
}

impl S3Reader {
    fn io_error(&self, reason: String) -> io::Error {
        io::Error::other(format!("{}: reading {}: {reason}", self.shared.describe, self.key))
    }

    /// Opens the object again at the current offset.
    fn reopen(&mut self) -> io::Result<()> {
        let sh = Arc::clone(&self.shared);
        let range = format!("bytes={}-", self.pos);
        let out = block(
            &sh.rt,
            with_retries(|| {
                sh.client
                    .get_object()
                    .bucket(&sh.spec.bucket)
                    .key(&self.key)
                    .range(&range)
                    .set_if_match(self.etag.clone())
                    .send()
            }),
        );
        match out {
            Ok(out) => {
                self.body = Some(Box::pin(out.body.into_async_read()));
                Ok(())
            }
            Err(f) if f.code() == Some("PreconditionFailed") || f.status() == Some(412) => {
                Err(self.io_error("the object was replaced while it was read".into()))
            }
            Err(f) => Err(self.io_error(explain(&f.err, &sh))),
        }
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.size.is_some_and(|s| self.pos >= s) {
                return Ok(0);
            }
            if self.body.is_none() {
                self.reopen()?;
            }
            let Some(body) = self.body.as_mut() else { return Ok(0) };
            let result = block(&self.shared.rt, body.read(buf));
            let err = match result {
                Ok(0) if self.size.is_none_or(|s| self.pos >= s) => return Ok(0),
                Ok(0) => io::Error::new(io::ErrorKind::UnexpectedEof, "the connection ended early"),
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) => e,
            };
            self.body = None;
            if self.resumes_left == 0 {
                let reason = format!("{} (at byte {}, after {READ_RESUMES} resumptions)", error_chain(&err), self.pos);
                return Err(self.io_error(reason));
            }
            self.resumes_left -= 1;
            tracing::warn!(target_url = %self.shared.describe, key = %self.key, at = self.pos, error = %error_chain(&err), "download broke; resuming");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn default_limit_keeps_8_mib_parts_for_gibs() {
        let covered: u64 = (0..1000).map(|i| part_size(i, 10_000).unwrap()).sum();
        assert!((0..1000).all(|i| part_size(i, 10_000) == Some(8 * MIB)));
        assert!(covered >= 7 * GIB, "{covered}");
        assert_eq!(part_size(1000, 10_000), Some(16 * MIB));
        assert_eq!(part_size(9_999, 10_000), Some(4 * GIB));
        assert_eq!(part_size(10_000, 10_000), None);
        // More than S3's largest object (5 TiB).
        assert!(upload_capacity(10_000) >= 5 << 40, "{}", upload_capacity(10_000));
    }

    #[test]
    fn ten_parts_cover_far_more_than_300_mib() {
        let sizes: Vec<u64> = (0..10).map(|i| part_size(i, 10).unwrap()).collect();
        assert_eq!(sizes[0], 8 * MIB);
        assert_eq!(sizes[5], 256 * MIB);
        assert_eq!(part_size(10, 10), None);
        assert!(upload_capacity(10) >= 300 * MIB);
        assert!(upload_capacity(10) >= 8 * GIB - 8 * MIB, "{}", upload_capacity(10));
        // 300 MiB needs 6 parts: 8+16+32+64+128 = 248 MiB, then the rest.
        let mut total = 0;
        let mut n = 0;
        while total < 300 * MIB {
            total += part_size(n, 10).unwrap();
            n += 1;
        }
        assert_eq!(n, 6);
    }

    #[test]
    fn every_limit_gives_valid_growing_parts() {
        for max_parts in [2, 3, 9, 10, 11, 99, 100, 1000, 1001, 5000, 9999, 10_000] {
            let mut prev = 0;
            for i in 0..max_parts {
                let s = part_size(i, max_parts).unwrap();
                assert!((MIN_PART_SIZE..=MAX_PART_SIZE).contains(&s), "{max_parts} {i} {s}");
                assert!(s >= prev, "{max_parts} {i}");
                prev = s;
            }
            assert_eq!(part_size(max_parts, max_parts), None);
        }
        assert!(upload_capacity(1000) >= 700 * GIB, "{}", upload_capacity(1000));
        assert!(upload_capacity(100) >= 70 * GIB);
        assert_eq!(upload_capacity(2), 24 * MIB);
    }

    #[test]
    fn in_flight_bytes_stay_bounded() {
        assert_eq!(max_in_flight(8 * MIB), 2);
        assert_eq!(max_in_flight(16 * MIB), 1);
        assert_eq!(max_in_flight(32 * MIB), 1);
        assert_eq!(max_in_flight(4 * GIB), 1);
        for s in [5 * MIB, 8 * MIB, 16 * MIB, 32 * MIB] {
            assert!(max_in_flight(s) as u64 * s <= IN_FLIGHT_BYTES.max(s));
        }
        assert_eq!(body_attempt_timeout(8 << 20), Duration::from_secs(60 + 256));
    }
}
