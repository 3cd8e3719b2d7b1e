//! Exporting a volume: the same stream a backup stores (a zstd-compressed pax tar), written
//! while it is read (never spooled), or for a migration the same bytes in data frames followed
//! by a frame with the manifest. A failure cuts the stream off with an error, so the reader
//! sees a failed transfer, not a short archive.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, DuplexStream, ReadBuf};
use tokio_util::io::SyncIoBridge;
use voltool_backup::{ArchiveOptions, ArchiveSummary, BackupError};
use voltool_migrate::Offer;

use super::{MOUNT_ID_PREFIX, Restores, nonce};
use crate::error::Result;

/// Bytes between the archive's writer and the stream's reader.
const PIPE_BYTES: usize = 1 << 20;

/// Why an export failed, kept for the stream's reader.
type Failed = Arc<Mutex<Option<String>>>;

impl Restores {
    /// Mounts a volume for export and returns its root and the mount ID to release after.
    ///
    /// # Errors
    /// [`voltool_plugin::Error::NotFound`], mount errors.
    pub async fn export_begin(&self, volume: &str) -> Result<(PathBuf, String)> {
        let id = format!("{MOUNT_ID_PREFIX}export-{}", nonce());
        let root = self.svc.mount(volume, &id).await?;
        Ok((root, id))
    }

    /// Releases the mount of [`Self::export_begin`].
    pub async fn export_end(&self, volume: &str, id: &str) {
        if let Err(e) = self.svc.unmount(volume, id).await {
            tracing::warn!(volume, error = %e, "could not release the export's mount");
        }
    }

    /// The volume `name` as a stream: the archive, or with `framed` a migration's frames (the
    /// archive in data frames, then the manifest). It is written on a thread of its own while
    /// it is read; the volume stays mounted until it ends.
    ///
    /// # Errors
    /// [`voltool_plugin::Error::NotFound`], mount errors; a failure while writing ends the
    /// stream with an error instead.
    #[tracing::instrument(name = "export", skip_all, fields(volume = %name, framed))]
    pub async fn export(&self, name: &str, framed: bool) -> Result<ExportStream> {
        let offer = if framed { Some(self.offer(name).await?) } else { None };
        let (root, id) = self.export_begin(name).await?;
        let (theirs, ours) = tokio::io::duplex(PIPE_BYTES);
        let failed = Failed::default();
        let writer = SyncIoBridge::new(theirs);
        let (f2, r2, n2, span) = (failed.clone(), self.clone(), name.to_owned(), tracing::Span::current());
        let task = async move {
            let res =
                tokio::task::spawn_blocking(move || span.in_scope(|| write_export(&root, writer, offer, &f2))).await;
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
        };
        tokio::spawn(tracing::Instrument::in_current_span(task));
        Ok(ExportStream { inner: ours, failed })
    }
}

/// Writes the export of the volume at `root` into `writer` (see [`Restores::export`]); what
/// the reader must see fail is put in `failed`.
fn write_export(
    root: &Path,
    writer: SyncIoBridge<DuplexStream>,
    offer: Option<Offer>,
    failed: &Failed,
) -> std::result::Result<ArchiveSummary, BackupError> {
    let opts = ArchiveOptions {
        threads: std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)),
        // A migration's receiver checks the stream as a whole against the manifest's
        // `archive_sha256` (and every entry's path, type and size): digests of every file
        // would be computed for nobody. An export's summary is not used.
        hash_files: false,
        ..ArchiveOptions::default()
    };
    let fail = |e: &str| *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_owned());
    let Some(offer) = offer else {
        let mut w = writer;
        let out = voltool_backup::write_archive(root, &mut w, &opts);
        if let Err(e) = &out {
            fail(&e.to_string());
        }
        let _ = w.flush();
        let _ = w.shutdown();
        return out;
    };
    // Migration: data frames, then the manifest (or the error) as a frame.
    let mut fw = voltool_migrate::FrameWriter::new(writer);
    let out = voltool_backup::write_archive(root, &mut fw, &opts);
    let trailer = match &out {
        Ok(s) => manifest_frame(&offer, s).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
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

/// Why a migration's manifest frame could not be made; the receiver is sent it instead.
#[derive(Debug, thiserror::Error)]
enum TrailerError {
    #[error(transparent)]
    Manifest(#[from] BackupError),
    #[error("the manifest: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Frame(#[from] voltool_migrate::FrameError),
}

/// The manifest of a migration's stream as compact JSON, zstd-compressed (a `Z` frame): for
/// 100,000 files the pretty JSON is ~28 MB, 3% more bytes through ssh.
fn manifest_frame(
    offer: &Offer,
    summary: &ArchiveSummary,
) -> std::result::Result<voltool_migrate::Trailer, TrailerError> {
    let now = time::OffsetDateTime::now_utc();
    let id = format!("{}-migrate", offer.volume);
    let m = voltool_backup::Manifest::new(&id, &offer.volume, &offer.options, summary.clone(), now)?;
    let json = serde_json::to_vec(&m)?;
    drop(m);
    Ok(voltool_migrate::Trailer::compressed(&json)?)
}

/// The export stream: ends with an error (an HTTP body is then cut off, so the client sees a
/// failed transfer, not a short archive) when archiving failed.
pub struct ExportStream {
    inner: DuplexStream,
    failed: Failed,
}

impl AsyncRead for ExportStream {
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

/// A stream that `work` writes on a blocking thread while it is read; an error `work` returns
/// ends the stream with that error (so an HTTP body is cut off, not short).
pub(crate) fn blocking_stream(
    work: impl FnOnce(&mut dyn Write) -> std::result::Result<(), String> + Send + 'static,
) -> ExportStream {
    let (theirs, ours) = tokio::io::duplex(PIPE_BYTES);
    let failed = Failed::default();
    let f2 = failed.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = SyncIoBridge::new(theirs);
        let out = work(&mut w).and_then(|()| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = out {
            // Before the writer goes: the reader sees the error where the stream ends.
            *f2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
        let _ = w.shutdown();
    });
    ExportStream { inner: ours, failed }
}
