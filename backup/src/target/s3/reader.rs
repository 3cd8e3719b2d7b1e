//! Reading an object: [`super::Target::open`] streams a GetObject body through a blocking
//! `Read`; if the connection breaks mid-way it resumes at the current offset with a ranged GET
//! (`If-Match` the ETag, so a replaced object is never spliced), up to [`READ_RESUMES`] (3)
//! times, one second apart.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncReadExt};

use super::explain::{error_chain, explain};
use super::retry::with_retries;
use super::{Shared, TargetError, block};

/// Times a broken download is resumed.
const READ_RESUMES: u32 = 3;

/// Opens object `key` (named `name` in errors) for a streaming read.
///
/// # Errors
/// [`TargetError::NotFound`] for a missing object, [`TargetError::S3`] for others.
pub(super) fn open(sh: &Arc<Shared>, name: &str, key: String) -> Result<S3Reader, TargetError> {
    open_range(sh, name, key, None)
}

/// Opens bytes `start .. start + len` of object `key` (a `Range` GET), or all of it.
///
/// # Errors
/// As [`open`].
pub(super) fn open_range(
    sh: &Arc<Shared>,
    name: &str,
    key: String,
    range: Option<(u64, u64)>,
) -> Result<S3Reader, TargetError> {
    if range.is_some_and(|(_, len)| len == 0) {
        return Ok(S3Reader {
            shared: Arc::clone(sh),
            key,
            etag: None,
            size: Some(0),
            pos: 0,
            body: None,
            resumes_left: 0,
        });
    }
    let header = range.map(|(start, len)| format!("bytes={start}-{}", start + len - 1));
    let out = block(
        &sh.rt,
        with_retries(|| sh.client.get_object().bucket(&sh.spec.bucket).key(&key).set_range(header.clone()).send()),
    );
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
    let start = range.map_or(0, |(s, _)| s);
    // `size` is where the read ends: the object's end, or the range's.
    let size = out.content_length().and_then(|l| u64::try_from(l).ok()).map(|l| start + l);
    let etag = out.e_tag().map(str::to_owned);
    Ok(S3Reader {
        shared: Arc::clone(sh),
        key,
        etag,
        size,
        pos: start,
        body: Some(Box::pin(out.body.into_async_read())),
        resumes_left: READ_RESUMES,
    })
}

/// A GetObject body read blockingly, resumed with a ranged GET if the connection breaks.
pub(super) struct S3Reader {
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
        let range = match self.size {
            Some(end) => format!("bytes={}-{}", self.pos, end.saturating_sub(1)),
            None => format!("bytes={}-", self.pos),
        };
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
