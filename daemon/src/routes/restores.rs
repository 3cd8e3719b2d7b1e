//! The management API's restore, import and export routes.
//!
//! - `POST /v1/volumes/{name}/restore` `{"from", "force"?, "allow_devices"?, "strip_components"?}`
//!   — from a catalog ID or an archive URL; answers when done
//! - `POST /v1/volumes/{name}/import?force=&allow_devices=&strip_components=&preserve_privileges=`
//!   — the request body is the archive (tar, tar.gz or tar.zst), streamed straight into the
//!   extraction; with `manifest_len=N&manifest_name=NAME` its first N bytes are the voltool
//!   manifest of the archive that follows (a local `ID.tar.zst` with `ID.manifest.json` beside
//!   it), which the restore is checked against
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
use std::io::Read as _;
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{ApiError, Error};
use crate::restores::{RestoreOptions, Restores};

fn err(e: Error) -> Response {
    ApiError::from(e).into_response()
}

/// The routes.
pub fn router(restores: Restores) -> Router {
    Router::new()
        .route("/v1/volumes/{name}/restore", post(restore))
        .route("/v1/volumes/{name}/import", post(import))
        .route("/v1/volumes/{name}/export", get(export))
        .route("/v1/volumes/{name}/offer", get(offer))
        .route("/v1/backups/{id}/restore-test", post(restore_test))
        .route("/v1/volumes/{name}/receive/check", post(receive_check))
        .route("/v1/volumes/{name}/receive", post(receive))
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

/// The import route's query: the restore's options and where a manifest leads the body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    allow_devices: bool,
    #[serde(default)]
    strip_components: usize,
    #[serde(default)]
    preserve_privileges: bool,
    /// The body's first this many bytes are a manifest.
    manifest_len: Option<u64>,
    manifest_name: Option<String>,
}

/// Reads the manifest that leads an import's body (exactly `len` bytes, parsed as they arrive,
/// at most [`crate::backups::MANIFEST_LIMIT`]).
fn read_leading_manifest(
    name: &str,
    len: u64,
    reader: &mut (dyn io::Read + Send),
) -> Result<voltool_backup::Manifest, Error> {
    let limit = crate::backups::MANIFEST_LIMIT;
    if len > limit {
        return Err(Error::BadRequest(format!("manifest {name} is larger than {limit} bytes")));
    }
    let mut part = reader.take(len);
    let m = voltool_backup::Manifest::from_reader(name, &mut part, voltool_backup::ManifestLimits { bytes: len })
        .map_err(|e| Error::BadRequest(format!("manifest {name}: {e}")))?;
    // Whitespace after the JSON: still the manifest's bytes.
    io::copy(&mut part, &mut io::sink()).map_err(|e| Error::BadRequest(format!("reading manifest {name}: {e}")))?;
    Ok(m)
}

async fn import(
    State(r): State<Restores>,
    Path(name): Path<String>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Response {
    let opts = RestoreOptions {
        force: q.force,
        allow_devices: q.allow_devices,
        strip_components: q.strip_components,
        preserve_privileges: q.preserve_privileges,
        ..RestoreOptions::default()
    };
    let body = SharedBody::new(body);
    let mut reader: Box<dyn io::Read + Send> =
        Box::new(tokio_util::io::SyncIoBridge::new(BodyReader { body: body.clone(), buf: Bytes::new() }));
    let manifest = match q.manifest_len {
        None => None,
        Some(len) => {
            let mname = q.manifest_name.unwrap_or_else(|| "the manifest".into());
            let read = tokio::task::spawn_blocking(move || {
                let m = read_leading_manifest(&mname, len, &mut *reader);
                (m, reader)
            })
            .await;
            match read {
                Ok((Ok(m), back)) => {
                    reader = back;
                    Some(m)
                }
                Ok((Err(e), _)) => {
                    body.drain().await;
                    return err(e);
                }
                Err(e) => return err(Error::Internal(e.to_string())),
            }
        }
    };
    match r.import(&name, reader, manifest, opts).await {
        Ok(o) => axum::Json(o).into_response(),
        Err(e) => {
            body.drain().await;
            err(e)
        }
    }
}

/// The most of an unread request body drained before an error reply (see [`SharedBody::drain`]).
const DRAIN_BYTES: u64 = 64 << 20;
/// How long draining may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// A request body the extraction reads and the handler can still drain afterwards.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Body>>);

impl SharedBody {
    fn new(body: Body) -> Self {
        SharedBody(Arc::new(Mutex::new(body)))
    }

    /// Reads and drops what the client is still sending (at most [`DRAIN_BYTES`], for at most
    /// [`DRAIN_TIME`]) before an error reply. A stream refused before it was read (volume in
    /// use, bad options) would otherwise be cut off mid-upload: the client's write fails on the
    /// closed connection and it never sees the reply saying why.
    async fn drain(&self) {
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
}

/// The request body as an `AsyncRead`.
struct BodyReader {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RestoreTestBody {
    #[serde(default)]
    check_cmd: Option<String>,
}

async fn restore_test(State(r): State<Restores>, Path(id): Path<String>, body: Bytes) -> Response {
    let req: RestoreTestBody = if body.iter().all(u8::is_ascii_whitespace) {
        RestoreTestBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return err(Error::BadRequest(format!("invalid request body: {e}"))),
        }
    };
    match r.restore_test(&id, req.check_cmd.as_deref()).await {
        Ok(o) => axum::Json(o).into_response(),
        Err(e) => err(e),
    }
}

async fn offer(State(r): State<Restores>, Path(name): Path<String>) -> Response {
    match r.offer(&name).await {
        Ok(o) => axum::Json(o).into_response(),
        Err(e) => err(e),
    }
}

async fn receive_check(State(r): State<Restores>, Path(name): Path<String>, body: Bytes) -> Response {
    let offer: voltool_migrate::Offer = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => return err(Error::BadRequest(format!("invalid migration offer: {e}"))),
    };
    match r.check_offer(&name, &offer).await {
        Ok(()) => axum::Json(voltool_migrate::Reply { ready: true, ..Default::default() }).into_response(),
        Err(e) => err(e),
    }
}

/// The body is the offer (one JSON line) followed by the frames.
async fn receive(State(r): State<Restores>, Path(name): Path<String>, body: Body) -> Response {
    let body = SharedBody::new(body);
    let mut reader = std::io::BufReader::new(tokio_util::io::SyncIoBridge::new(BodyReader {
        body: body.clone(),
        buf: Bytes::new(),
    }));
    let got = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let res = std::io::BufRead::read_line(&mut (&mut reader).take(1 << 20), &mut line).map(|_| line);
        (res, reader)
    })
    .await;
    let (line, reader) = match got {
        Ok((Ok(line), reader)) => (line, reader),
        Ok((Err(e), _)) => return err(Error::BadRequest(format!("reading the migration offer: {e}"))),
        Err(e) => return err(Error::Internal(e.to_string())),
    };
    let offer: voltool_migrate::Offer = match serde_json::from_str(&line) {
        Ok(o) => o,
        Err(e) => return err(Error::BadRequest(format!("invalid migration offer: {e}"))),
    };
    match r.receive(&name, offer, Box::new(reader)).await {
        Ok(o) => axum::Json(o).into_response(),
        Err(e) => {
            body.drain().await;
            err(e)
        }
    }
}

#[derive(Deserialize)]
struct ExportQuery {
    #[serde(default)]
    framed: bool,
}

async fn export(State(r): State<Restores>, Path(name): Path<String>, Query(q): Query<ExportQuery>) -> Response {
    let offer = match q.framed {
        true => match r.offer(&name).await {
            Ok(o) => Some(o),
            Err(e) => return err(e),
        },
        false => None,
    };
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
                // A migration's receiver checks the stream as a whole against the manifest's
                // `archive_sha256` (and every entry's path, type and size): digests of every
                // file would be computed for nobody. An export's summary is not used.
                hash_files: false,
                ..voltool_backup::ArchiveOptions::default()
            };
            use std::io::Write;
            let fail = |e: &str| *f2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_owned());
            match offer {
                None => {
                    let mut w = writer;
                    let out = voltool_backup::write_archive(&root, &mut w, &opts);
                    if let Err(e) = &out {
                        fail(&e.to_string());
                    }
                    let _ = w.flush();
                    let _ = w.shutdown();
                    out
                }
                Some(offer) => {
                    // Migration: data frames, then the manifest (or the error) as a frame.
                    let mut fw = voltool_migrate::FrameWriter::new(writer);
                    let out = voltool_backup::write_archive(&root, &mut fw, &opts);
                    let now = time::OffsetDateTime::now_utc();
                    let id = format!("{}-migrate", offer.volume);
                    // The manifest as compact JSON, zstd-compressed (a `Z` frame): for 100,000
                    // files the pretty JSON is ~28 MB, 3% more bytes through ssh.
                    let trailer = out.as_ref().map_err(|e| e.to_string()).and_then(|s| {
                        let m = voltool_backup::Manifest::new(&id, &offer.volume, &offer.options, s.clone(), now)
                            .map_err(|e| e.to_string())?;
                        let json = serde_json::to_vec(&m).map_err(|e| format!("the manifest: {e}"))?;
                        drop(m);
                        voltool_migrate::Trailer::compressed(&json).map_err(|e| e.to_string())
                    });
                    let done = match &trailer {
                        Ok(t) => fw.finish(t),
                        Err(e) => fw.fail(e),
                    };
                    match done {
                        Ok(mut w) => {
                            let _ = w.shutdown();
                        }
                        Err(e) => fail(&e.to_string()),
                    }
                    out
                }
            }
        })
        .await;
        match res {
            Ok(Ok(s)) => {
                tracing::info!(volume = n2, files = s.files, bytes = s.bytes_in, notes = s.notes.len(), "exported");
                // E.g. the volume written during the walk: the stream is crash-consistent at best.
                if let Some(first) = s.notes.first() {
                    tracing::warn!(volume = n2, notes = s.notes.len(), first = %first, "exported with notes: a volume written during the walk is exported crash-consistent at best");
                }
            }
            Ok(Err(e)) => tracing::warn!(volume = n2, error = %e, "export failed"),
            Err(e) => tracing::error!(volume = n2, error = %e, "export task died"),
        }
        r2.export_end(&n2, &id).await;
    });
    let stream = tokio_util::io::ReaderStream::with_capacity(Checked { inner: ours, failed }, 1 << 18);
    ([("content-type", "application/zstd")], Body::from_stream(stream)).into_response()
}
