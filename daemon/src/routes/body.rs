//! A streamed request body (an import's archive, a migration's frames) as the blocking reader
//! an extraction takes, and drained after an error so that the client sees the reply.
//!
//! The body is shared ([`SharedBody`]) between the reader the extraction owns
//! ([`SharedBody::reader`], read on a blocking thread through a `SyncIoBridge`) and the
//! handler, which after a refusal reads and drops what the client is still sending (at most
//! [`DRAIN_BYTES`], for at most [`DRAIN_TIME`]).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::SyncIoBridge;

/// The most of an unread request body drained before an error reply (see [`SharedBody::drain`]).
const DRAIN_BYTES: u64 = 64 << 20;
/// How long draining may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// A request body the extraction reads and the handler can still drain afterwards.
#[derive(Clone)]
pub(super) struct SharedBody(Arc<Mutex<Body>>);

impl SharedBody {
    pub(super) fn new(body: Body) -> Self {
        SharedBody(Arc::new(Mutex::new(body)))
    }

    /// The body as a blocking reader (for a blocking thread: it waits on the runtime).
    pub(super) fn reader(&self) -> SyncIoBridge<BodyReader> {
        SyncIoBridge::new(BodyReader { body: self.clone(), buf: Bytes::new() })
    }

    /// Reads and drops what the client is still sending (at most [`DRAIN_BYTES`], for at most
    /// [`DRAIN_TIME`]) before an error reply. A stream refused before it was read (volume in
    /// use, bad options) would otherwise be cut off mid-upload: the client's write fails on the
    /// closed connection and it never sees the reply saying why.
    pub(super) async fn drain(&self) {
        let body = self.clone();
        let drained = std::future::poll_fn(move |cx| {
            let mut seen = 0u64;
            loop {
                let mut b = body.0.lock().unwrap_or_else(|p| p.into_inner());
                match Pin::new(&mut *b).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                        if seen > DRAIN_BYTES {
                            return Poll::Ready(());
                        }
                    }
                    Poll::Ready(_) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        });
        let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
    }

    /// `result`, after draining the body when it is an error (see [`Self::drain`]).
    pub(super) async fn drain_on_error<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            self.drain().await;
        }
        result
    }
}

/// The request body as an `AsyncRead`.
pub(super) struct BodyReader {
    body: SharedBody,
    buf: Bytes,
}

impl AsyncRead for BodyReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.buf.is_empty() {
                let n = out.remaining().min(self.buf.len());
                let chunk = self.buf.split_to(n);
                out.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            let polled = {
                let mut body = self.body.0.lock().unwrap_or_else(|p| p.into_inner());
                Pin::new(&mut *body).poll_frame(cx)
            };
            match polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf = data;
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
