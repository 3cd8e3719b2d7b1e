//! `s3://bucket/prefix` targets: AWS S3 or an S3-compatible server, through `aws-sdk-s3`.
//!
//! ## Layout
//! - this file: the target ([`S3Target`]: building the client, the small requests) and what its
//!   writers and readers share;
//! - `writer`: an archive (a stream of unknown length) as a multipart upload, parts cut by the
//!   pure schedule [`part_size`], at most 2 parts / 16 MiB in flight;
//! - `reader`: streaming reads that resume a broken download;
//! - `cleanup`: what an interrupted upload left;
//! - `list`: [`Target::list`], ListObjectsV2 page by page, bounded;
//! - `retry`: the retry policy (retry only errors marked temporary);
//! - `watch`: requests that may rightly take long, watched by probing the server;
//! - `explain`: errors in plain words.
//!
//! ## Writing
//! Bodies are in memory, so the SDK signs each one with its SHA-256 (`x-amz-content-sha256`,
//! which a server checking signatures verifies), adds a CRC32 checksum header the server
//! verifies too (not with `checksums=when-required`, see below), and can resend a body on its
//! own retries. Each request makes up to 3 attempts inside the SDK (exponential backoff); a
//! part, a completion or a small object that still fails is tried again up to 3 times in all
//! (1 s, then 3 s apart) while less than 30 s have passed since its first try. Errors that
//! retrying cannot fix (access denied, missing bucket...) are not retried. If the process dies
//! mid-upload, [`Target::cleanup`] with the recorded token (the upload id) aborts the upload
//! later.
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
//! to the AWS chain (`AWS_REGION`, profile...) and then `us-east-1`. `checksums` (the spec's
//! [`Checksums`]) sets both the SDK's request checksum calculation and its response checksum
//! validation: `when-supported` (the SDK's default) sends `x-amz-checksum-crc32` and
//! `x-amz-sdk-checksum-algorithm` with PutObject and UploadPart and `x-amz-checksum-mode` with
//! GetObject (checking the checksum an object comes back with, where the server gives one for
//! the whole object); `when-required` sends none of them (no request voltool makes requires
//! one), for stores that reject them. Unset, the AWS chain's `AWS_REQUEST_CHECKSUM_CALCULATION`
//! / `AWS_RESPONSE_CHECKSUM_VALIDATION` (or the profile's) decide. `backup/tests/s3/matrix.rs`
//! checks both against s3s-fs and moto through a relay that records the headers sent.
//! Credentials come from the standard AWS chain (environment, profile, SSO, web identity, ECS,
//! instance metadata).
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
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::runtime::Handle;

use super::{Checksums, Listed, ObjectWriter, S3Spec, Target, TargetError};

mod cleanup;
mod explain;
mod list;
mod reader;
mod retry;
mod watch;
mod writer;

#[cfg(test)]
mod tests;

pub use writer::{BASE_PART_SIZE, MAX_PART_SIZE, MIN_PART_SIZE, part_size, upload_capacity};

use explain::explain;
use retry::{Failure, upload_gone, with_retries};
use watch::{body_attempt_timeout, long_timeouts};

/// An error of one S3 operation, as the SDK returns it.
type S3Error<E> = SdkError<E, HttpResponse>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per attempt and in all, for requests that are quick on a live server.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(40);
/// A transfer moving no bytes for this long fails its attempt.
const STALL_GRACE: Duration = Duration::from_secs(20);
/// SDK attempts per request.
const SDK_ATTEMPTS: u32 = 3;

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
            .field("checksums", &self.shared.spec.checksums.map(Checksums::as_str))
            .finish()
    }
}

impl S3Target {
    /// Builds the client (region, credentials chain, timeouts, retries). Sends no request.
    /// Blocks; call it outside async code.
    ///
    /// # Errors
    /// [`TargetError::Config`] for a spec without a bucket or with an endpoint that is not a
    /// plain http(s) URL.
    pub fn new(spec: S3Spec, rt: Handle) -> Result<Self, TargetError> {
        let describe = if spec.prefix.is_empty() {
            format!("s3://{}", spec.bucket)
        } else {
            format!("s3://{}/{}", spec.bucket, spec.prefix)
        };
        if spec.bucket.is_empty() {
            return Err(TargetError::Config { target: describe, reason: "missing bucket".into() });
        }
        let endpoint_url = endpoint_url(&spec, &describe)?;
        let sdk_config = block(&rt, sdk_loader(&spec).load());
        let region = sdk_config.region().map_or_else(|| "us-east-1".to_owned(), |r| r.to_string());
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk_config).force_path_style(spec.path_style);
        if let Some(e) = &spec.endpoint {
            builder = builder.endpoint_url(e.trim_end_matches('/'));
        }
        if let Some(c) = spec.checksums {
            let (request, response) = checksum_config(c);
            builder = builder.request_checksum_calculation(request).response_checksum_validation(response);
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

    /// [`Target::list`] asking for `page` keys a request (1-1000; `list` asks for 1000), so a
    /// test follows continuation tokens without writing thousands of objects.
    ///
    /// # Errors
    /// As [`Target::list`].
    pub fn list_paged(&self, limit: usize, page: i32) -> Result<Vec<Listed>, TargetError> {
        self.shared.list(limit, page.clamp(1, list::PAGE))
    }
}

/// What the SDK is told for `checksums=`: the same mode for request checksums and for the
/// validation of response checksums.
fn checksum_config(c: Checksums) -> (RequestChecksumCalculation, ResponseChecksumValidation) {
    match c {
        Checksums::WhenSupported => {
            (RequestChecksumCalculation::WhenSupported, ResponseChecksumValidation::WhenSupported)
        }
        Checksums::WhenRequired => (RequestChecksumCalculation::WhenRequired, ResponseChecksumValidation::WhenRequired),
    }
}

/// The spec's endpoint, checked: an http(s) URL with a host and without credentials.
fn endpoint_url(spec: &S3Spec, describe: &str) -> Result<Option<url::Url>, TargetError> {
    let Some(e) = &spec.endpoint else { return Ok(None) };
    let bad = |reason: &str| TargetError::Config { target: describe.to_owned(), reason: reason.to_owned() };
    match url::Url::parse(e) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Err(bad(
            "credentials do not belong in the endpoint URL; give them to the daemon through the AWS environment",
        )),
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(Some(u)),
        _ => Err(bad("the endpoint must be an http:// or https:// URL")),
    }
}

/// The SDK's configuration: region (the spec's, the AWS chain's, `us-east-1`), credentials
/// chain, timeouts, retries and stalled-stream protection.
fn sdk_loader(spec: &S3Spec) -> aws_config::ConfigLoader {
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
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .region(region_chain)
        .timeout_config(timeouts)
        .retry_config(retries)
        .stalled_stream_protection(stall)
}

/// The SDK's default HTTPS client (rustls with aws-lc, proxies from the environment), with
/// one difference: host names resolve through [`TokioDnsResolver`], so a failed lookup reaches
/// us as a typed [`aws_smithy_runtime_api::client::dns::ResolveDnsError`] (the default resolver
/// reports it only in words), which [`explain`] turns into the `path_style` hint.
fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{ConnectorBuilder, proxy::ProxyConfig};
    use aws_smithy_runtime::client::dns::TokioDnsResolver;
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build_with_resolver(TokioDnsResolver::new())
    })
}

impl Target for S3Target {
    fn describe(&self) -> String {
        self.shared.describe.clone()
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, TargetError> {
        let key = self.shared.key_of(name)?;
        Ok(Box::new(writer::S3Writer::start(&self.shared, key)?))
    }

    fn put_small(&self, name: &str, data: &[u8]) -> Result<(), TargetError> {
        let sh = &self.shared;
        let key = sh.key_of(name)?;
        block(&sh.rt, sh.put(&key, Bytes::copy_from_slice(data)))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, TargetError> {
        let key = self.shared.key_of(name)?;
        Ok(Box::new(reader::open(&self.shared, name, key)?))
    }

    fn open_range(&self, name: &str, start: u64, len: u64) -> Result<Box<dyn Read + Send>, TargetError> {
        let key = self.shared.key_of(name)?;
        Ok(Box::new(reader::open_range(&self.shared, name, key, Some((start, len)))?))
    }

    fn list(&self, limit: usize) -> Result<Vec<Listed>, TargetError> {
        self.shared.list(limit, list::PAGE)
    }

    fn exists(&self, name: &str) -> Result<bool, TargetError> {
        let sh = &self.shared;
        let key = sh.key_of(name)?;
        match sh.head(&key) {
            Ok(Some(_)) => Ok(true),
            Ok(None) => Ok(false),
            Err(f) => Err(sh.error("checking", &key, &f)),
        }
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        let sh = &self.shared;
        let key = sh.key_of(name)?;
        match block(&sh.rt, with_retries(|| sh.client.delete_object().bucket(&sh.spec.bucket).key(&key).send())) {
            Ok(_) => Ok(()),
            Err(f) if f.code() == Some("NoSuchKey") => Ok(()),
            Err(f) => Err(sh.error("deleting", &key, &f)),
        }
    }

    fn cleanup(&self, name: &str, token: Option<&str>) -> Result<(), TargetError> {
        let key = self.shared.key_of(name)?;
        self.shared.cleanup(&key, token)
    }
}

impl Shared {
    /// The key of object `name`, refusing names that are not one plain file name.
    fn key_of(&self, name: &str) -> Result<String, TargetError> {
        if !super::is_object_name(name) {
            return Err(TargetError::Config {
                target: self.describe.clone(),
                reason: format!("bad object name {name:?}"),
            });
        }
        Ok(self.spec.key(name))
    }

    fn s3_error(&self, op: &'static str, key: &str, reason: String) -> TargetError {
        TargetError::S3 { target: self.describe.clone(), op, key: key.to_owned(), reason }
    }

    /// A request that failed for good, as [`TargetError::S3`] with its reason in plain words.
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
            Err(hung) => Err(self.s3_error("writing", key, hung.to_string())),
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

/// Runs `fut` on the runtime and waits for it: `block_on` inside `block_in_place`, which
/// costs nothing on a plain or `spawn_blocking` thread and, on a worker thread of a
/// multi-threaded runtime (a method called from async code by mistake), moves the worker's
/// other tasks away instead of panicking. Panics only in a current-thread runtime's task.
fn block<F: Future>(rt: &Handle, fut: F) -> F::Output {
    tokio::task::block_in_place(|| rt.block_on(fut))
}
