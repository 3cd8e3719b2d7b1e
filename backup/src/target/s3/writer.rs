//! Writing an archive (a stream of unknown length) as a multipart upload.
//!
//! [`super::Target::create`] starts a multipart upload at once (so [`ObjectWriter::token`], the
//! upload id, can be recorded before a byte is written) and the writer cuts the stream into
//! parts:
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
//! - [`ObjectWriter::commit`] uploads the last part (any size; an empty stream is written with
//!   PutObject and the multipart upload aborted), completes the upload with the parts in order
//!   and checks with HeadObject that the object has exactly the size written (a mismatched
//!   object is deleted). Only then is the object visible.
//! - The multipart upload is aborted when any part finally fails (the writer then refuses
//!   further writes), when completing fails, and when the writer is aborted or dropped without
//!   commit (parts still in flight may finish first, for at most 10 s, so that no part lands
//!   after the abort).

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use super::explain::explain;
use super::retry::{upload_gone, with_retries};
use super::watch::{body_attempt_timeout, long_timeouts};
use super::{ObjectWriter, Shared, TargetError, block};

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
pub(super) const IN_FLIGHT_BYTES: u64 = 16 << 20;
/// Attempt timeout of CompleteMultipartUpload (AWS may take minutes for many parts).
const COMPLETE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an abort waits for parts in flight, and for the AbortMultipartUpload itself
/// (shorter after a failure: the server is likely gone, and cleanup can abort it later).
const ABORT_DRAIN: Duration = Duration::from_secs(10);
const ABORT_TIMEOUT: Duration = Duration::from_secs(20);
const ABORT_AFTER_FAILURE_TIMEOUT: Duration = Duration::from_secs(10);

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
pub(super) fn max_in_flight(size: u64) -> usize {
    usize::try_from(IN_FLIGHT_BYTES / size.max(1)).unwrap_or(MAX_IN_FLIGHT).clamp(1, MAX_IN_FLIGHT)
}

/// An archive being uploaded as a multipart upload.
pub(super) struct S3Writer {
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
    /// Starts the multipart upload of `key`.
    ///
    /// # Errors
    /// [`TargetError::S3`] when the server does not start it.
    pub(super) fn start(sh: &Arc<Shared>, key: String) -> Result<Self, TargetError> {
        let out = block(
            &sh.rt,
            with_retries(|| sh.client.create_multipart_upload().bucket(&sh.spec.bucket).key(&key).send()),
        )
        .map_err(|f| sh.error("starting the upload of", &key, &f))?;
        let Some(upload_id) = out.upload_id().filter(|u| !u.is_empty()).map(str::to_owned) else {
            return Err(sh.s3_error("starting the upload of", &key, "the server returned no upload id".into()));
        };
        tracing::debug!(target_url = %sh.describe, %key, %upload_id, "multipart upload started");
        Ok(S3Writer {
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
        })
    }

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
        // In the caller's span (a backup run's ID): its retries are logged on a runtime task.
        let upload = tracing::Instrument::in_current_span(upload_part(sh, key, upload_id, number, body));
        self.tasks.spawn_on(upload, &self.shared.rt);
        Ok(())
    }

    /// Fails the upload with `e` during commit (aborting it) and returns the failure.
    fn commit_failed(&mut self, e: TargetError) -> TargetError {
        let _ = self.fail(e);
        self.failure.take().unwrap_or_else(|| self.shared.s3_error("completing", &self.key, "the upload failed".into()))
    }

    /// The failure recorded by a failed part, for commit.
    fn take_failure(&mut self) -> TargetError {
        self.failure.take().unwrap_or_else(|| self.shared.s3_error("completing", &self.key, "upload failed".into()))
    }

    /// Commits an empty stream: multipart uploads need a part; a plain empty object is simpler.
    fn write_empty(&mut self) -> Result<u64, TargetError> {
        let sh = Arc::clone(&self.shared);
        if let Err(e) = block(&sh.rt, sh.put(&self.key, Bytes::new())) {
            return Err(self.commit_failed(e));
        }
        self.abort_upload(Duration::ZERO, ABORT_TIMEOUT);
        tracing::info!(target_url = %sh.describe, key = %self.key, "empty object written");
        Ok(0)
    }

    /// Sends the last part and waits for every part in flight.
    fn send_rest(&mut self) -> Result<(), TargetError> {
        if !self.buf.is_empty() && self.send_part().is_err() {
            return Err(self.take_failure());
        }
        while !self.tasks.is_empty() {
            if self.reap_one().is_err() {
                return Err(self.take_failure());
            }
        }
        Ok(())
    }

    /// CompleteMultipartUpload with the parts in order, watched; returns how many parts.
    fn complete(&mut self) -> Result<usize, TargetError> {
        let sh = Arc::clone(&self.shared);
        let key = self.key.clone();
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
            Ok(Ok(_)) => Ok(count),
            Ok(Err(f)) => {
                // A retried completion whose first try succeeded finds the upload gone.
                let completed_before = f.code() == Some("NoSuchUpload")
                    && matches!(sh.head(&key), Ok(Some(Some(size))) if size == self.written);
                if completed_before {
                    Ok(count)
                } else {
                    let e = sh.error("completing the upload of", &key, &f);
                    Err(self.commit_failed(e))
                }
            }
            Err(hung) => {
                let e = sh.s3_error("completing the upload of", &key, hung.to_string());
                Err(self.commit_failed(e))
            }
        }
    }

    /// Checks with HeadObject that the completed object has exactly the size written; deletes
    /// it when not.
    fn check_stored(&self) -> Result<(), TargetError> {
        let (sh, key) = (&self.shared, &self.key);
        match sh.head(key) {
            Ok(Some(Some(size))) if size == self.written => Ok(()),
            Ok(Some(Some(size))) => {
                let reason =
                    format!("the server stored {size} bytes but {} were written; the object was deleted", self.written);
                let _ = block(&sh.rt, sh.client.delete_object().bucket(&sh.spec.bucket).key(key).send());
                Err(sh.s3_error("checking", key, reason))
            }
            Ok(Some(None)) => Err(sh.s3_error("checking", key, "the server did not say the object's size".into())),
            Ok(None) => Err(sh.s3_error("checking", key, "the object is not there after completing the upload".into())),
            Err(f) => Err(sh.error("checking", key, &f)),
        }
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
        if self.parts_sent == 0 && self.buf.is_empty() {
            return self.write_empty();
        }
        self.send_rest()?;
        let count = self.complete()?;
        self.finished = true;
        self.check_stored()?;
        let secs = self.started.elapsed().as_secs_f64();
        let (sh, key) = (&self.shared, &self.key);
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
