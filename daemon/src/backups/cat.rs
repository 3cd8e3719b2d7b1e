//! `voltool backup cat ID PATH`: one file of a backup, read alone (SPEC §8). The backup's
//! manifest says which link of its chain holds the file and which zstd frames of that link's
//! archive hold it; only those bytes are fetched (a ranged read: S3 `Range`, `pread`) and
//! checked against the manifest's sha256 as they stream out (see
//! [`voltool_backup::single`]).

use voltool_backup::{EntryKind, open_target};
use voltool_plugin::store::BackupStatus;

use super::{Backups, backup_err, names, read_manifest_from};
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
        let (i, s) = (id.to_owned(), spec.clone());
        let entry = self
            .blocking(move |e| {
                let target = open_target(&s, &e.rt).map_err(|m| backup_err(&i, m))?;
                let m = read_manifest_from(&*target, &i).map_err(|m| backup_err(&i, m))?;
                Ok(m.entries.into_iter().find(|x| x.path == want))
            })
            .await?
            .ok_or_else(|| Error::BadRequest(format!("backup {id} holds no {path:?}")))?;
        if entry.kind != EntryKind::File {
            return Err(Error::BadRequest(format!("{path:?} in backup {id} is not a regular file")));
        }
        if !voltool_backup::single::locatable(&entry) {
            return Err(Error::BadRequest(format!(
                "backup {id} was written before single-file reads: restore it whole (voltool restore VOL --from {id})"
            )));
        }
        let link = match &chain {
            Some(rows) => rows
                .get(entry.level as usize)
                .filter(|r| r.level == entry.level)
                .map(|r| r.id.clone())
                .ok_or_else(|| backup_err(id, format!("its chain has no link of level {}", entry.level)))?,
            None => id.to_owned(),
        };
        let rt = self.e.rt.clone();
        let id = id.to_owned();
        Ok(blocking_stream(move |out| {
            let [archive, ..] = names(&link);
            let target = open_target(&spec, &rt).map_err(|e| e.to_string())?;
            let frames = target.open_range(&archive, entry.frame_at, entry.frame_len).map_err(|e| e.to_string())?;
            let mut counted = Counted { inner: frames, n: 0 };
            let read = voltool_backup::single::read_file(&mut counted, &entry, out);
            tracing::info!(backup = id, link, path = entry.path, fetched = counted.n, "read one file of a backup");
            read.map(drop).map_err(|e| format!("{archive}: {e}"))
        }))
    }
}

/// Counts what was read from the target.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}
