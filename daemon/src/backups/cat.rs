//! `voltool backup cat ID PATH`: one file of a backup, read alone (SPEC §8). The backup's
//! manifest says which link of its chain holds the file and which zstd frames of that link's
//! archive hold it; only those bytes are fetched (a ranged read: S3 `Range`, `pread`) and
//! checked against the manifest's sha256 as they stream out (see
//! [`voltool_backup::single`]).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use voltool_backup::crypt::{self, RangedObject};
use voltool_backup::{EntryKind, Identities, ObjectNames, TargetSpec, open_target};
use voltool_plugin::store::{BackupRow, BackupStatus};

use super::{Backups, backup_err, read_manifest_from};
use crate::error::{Error, Result};
use crate::restores::{ExportStream, blocking_stream};

impl Backups {
    /// The content of the regular file `path` (relative to the volume root) in backup `id`.
    ///
    /// # Errors
    /// [`Error::BackupNotFound`]; [`Error::BadRequest`] for a backup that is not complete, a
    /// path it does not hold or that is not a regular file, a backup written before
    /// single-file reads; [`Error::Backup`] when its target or chain cannot be read. A file
    /// whose bytes do not match the manifest ends the stream with an error.
    pub async fn cat(&self, id: &str, path: &str) -> Result<ExportStream> {
        let row = self.row(id).await?;
        if row.status != BackupStatus::Complete {
            return Err(Error::BadRequest(format!("backup {id} is not complete")));
        }
        let spec = self.e.resolve_row(&row)?;
        let chain = self.e.catalog.chain(id).await?;
        let want = path.trim_start_matches("./").trim_start_matches('/').trim_end_matches('/').to_owned();
        let (i, s, encrypted) = (id.to_owned(), spec.clone(), row.encrypted);
        let (entry, ids) = self
            .blocking(move |e| {
                let target = open_target(&s, &e.rt).map_err(|m| backup_err(&i, m))?;
                let ids = e.catalog.identities();
                let m = read_manifest_from(&*target, &ObjectNames::new(&i, encrypted), &ids)
                    .map_err(|m| backup_err(&i, m))?;
                Ok((m.entries.into_iter().find(|x| x.path == want), ids))
            })
            .await?;
        let entry = entry.ok_or_else(|| Error::BadRequest(format!("backup {id} holds no {path:?}")))?;
        if entry.kind != EntryKind::File {
            return Err(Error::BadRequest(format!("{path:?} in backup {id} is not a regular file")));
        }
        if !voltool_backup::single::locatable(&entry) {
            return Err(Error::BadRequest(format!(
                "backup {id} was written before single-file reads: restore it whole (voltool restore VOL --from {id})"
            )));
        }
        let link = match chain {
            Some(rows) => rows
                .into_iter()
                .nth(entry.level as usize)
                .filter(|r| r.level == entry.level)
                .ok_or_else(|| backup_err(id, format!("its chain has no link of level {}", entry.level)))?,
            None => row,
        };
        let rt = self.e.rt.clone();
        let id = id.to_owned();
        Ok(blocking_stream(move |out| {
            let archive = ObjectNames::new(&link.id, link.encrypted).archive;
            let fetched = Arc::new(AtomicU64::new(0));
            let frames = open_frames(&spec, &rt, &link, &ids, (entry.frame_at, entry.frame_len), fetched.clone())?;
            let read = voltool_backup::single::read_file(frames, &entry, out);
            let (link, fetched) = (link.id, fetched.load(Ordering::Relaxed));
            tracing::info!(backup = id, link, path = entry.path, fetched, "read one file of a backup");
            read.map(drop).map_err(|e| format!("{archive}: {e}"))
        }))
    }
}

/// The bytes `start .. start + len` of the archive of backup `link` (a link of a chain, or a
/// backup on its own): one ranged read of a plain archive; of an encrypted one, its age header
/// and the chunks that hold them, decrypted with `ids` (its stored size is the row's
/// `bytes_out`). The bytes read from the target are counted into `fetched`.
///
/// # Errors
/// The target's or the decryption's, as text naming the object.
pub(crate) fn open_frames(
    spec: &TargetSpec,
    rt: &tokio::runtime::Handle,
    link: &BackupRow,
    ids: &Identities,
    (start, len): (u64, u64),
    fetched: Arc<AtomicU64>,
) -> std::result::Result<Box<dyn Read + Send>, String> {
    let n = ObjectNames::new(&link.id, link.encrypted);
    let target = open_target(spec, rt).map_err(|e| e.to_string())?;
    if !link.encrypted {
        let inner = target.open_range(&n.archive, start, len).map_err(|e| e.to_string())?;
        return Ok(Box::new(Counted { inner, n: fetched }));
    }
    let size = link.bytes_out.ok_or_else(|| format!("{}: the catalog records no stored size", n.archive))?;
    let object = RangedObject::new(target, &n.archive, size, crypt::window_for(len), fetched);
    crypt::open_range(object, ids, start, len).map_err(|e| e.to_string())
}

/// Counts what was read from the target.
struct Counted<R> {
    inner: R,
    n: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
}
