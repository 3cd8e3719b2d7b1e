//! The management API's restore, import and export routes.
//!
//! - `POST /v1/volumes/{name}/restore` `{"from", "force"?, "allow_devices"?, "strip_components"?}`
//!   — from a catalog ID or an archive URL; answers when done
//! - `POST /v1/volumes/{name}/import?force=&allow_devices=&strip_components=` — the request
//!   body is the archive (tar, tar.gz or tar.zst), streamed straight into the extraction
//! - `GET  /v1/volumes/{name}/export` — the volume as a zstd-compressed pax tar, the same
//!   stream a backup stores, produced while it is sent (never spooled)

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::Error;
use crate::mgmt::status_of;
use crate::restores::{RestoreOptions, Restores};

fn err(e: Error) -> Response {
    (status_of(&e), axum::Json(json!({ "error": e.to_string() }))).into_response()
}

/// The routes.
pub fn router(restores: Restores) -> Router {
    Router::new()
        .route("/v1/volumes/{name}/restore", post(restore))
        .route("/v1/volumes/{name}/import", post(import))
        .route("/v1/volumes/{name}/export", get(export))
        .with_state(restores)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    from: String,
    #[serde(flatten)]
    opts: RestoreOptions,
}

async fn restore(State(r): State<Restores>, Path(name): Path<String>, body: Bytes) -> Response {
    let req: RestoreBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return err(Error::BadRequest(format!("invalid request body: {e}"))),
    };
    match r.restore_from(&name, &req.from, req.opts).await {
        Ok(o) => axum::Json(o).into_response(),
        Err(e) => err(e),
    }
}

async fn import(
    State(r): State<Restores>,
    Path(name): Path<String>,
    Query(opts): Query<RestoreOptions>,
    body: Body,
) -> Response {
    let reader = tokio_util::io::SyncIoBridge::new(BodyReader { body, buf: Bytes::new() });
    match r.import(&name, Box::new(reader), opts).await {
        Ok(o) => axum::Json(o).into_response(),
        Err(e) => err(e),
    }
}

/// The request body as an `AsyncRead`.
struct BodyReader {
    body: Body,
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
            match Pin::new(&mut self.body).poll_frame(cx) {
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

/// The export stream: ends with an error (the HTTP body is cut off, so the client sees a
/// failed transfer, not a short archive) when archiving failed.
struct Checked {
    inner: tokio::io::DuplexStream,
    failed: Arc<Mutex<Option<String>>>,
}

impl AsyncRead for Checked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before => {
                match self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    Some(e) => Poll::Ready(Err(io::Error::other(e))),
                    None => Poll::Ready(Ok(())),
                }
            }
            other => other,
        }
    }
}

async fn export(State(r): State<Restores>, Path(name): Path<String>) -> Response {
    let (root, id) = match r.export_begin(&name).await {
        Ok(x) => x,
        Err(e) => return err(e),
    };
    let (theirs, ours) = tokio::io::duplex(1 << 20);
    let failed = Arc::new(Mutex::new(None));
    let writer = tokio_util::io::SyncIoBridge::new(theirs);
    let (f2, r2, n2) = (failed.clone(), r.clone(), name.clone());
    tokio::spawn(async move {
        let res = tokio::task::spawn_blocking(move || {
            let opts = voltool_backup::ArchiveOptions {
                threads: std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)),
                ..voltool_backup::ArchiveOptions::default()
            };
            let mut w = writer;
            let out = voltool_backup::write_archive(&root, &mut w, &opts);
            if let Err(e) = &out {
                *f2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
            use std::io::Write;
            let _ = w.flush();
            let _ = w.shutdown();
            out
        })
        .await;
        match res {
            Ok(Ok(s)) => tracing::info!(volume = n2, files = s.files, bytes = s.bytes_in, "exported"),
            Ok(Err(e)) => tracing::warn!(volume = n2, error = %e, "export failed"),
            Err(e) => tracing::error!(volume = n2, error = %e, "export task died"),
        }
        r2.export_end(&n2, &id).await;
    });
    let stream = tokio_util::io::ReaderStream::with_capacity(Checked { inner: ours, failed }, 1 << 18);
    ([("content-type", "application/zstd")], Body::from_stream(stream)).into_response()
}
