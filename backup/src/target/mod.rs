//! Where backups are stored: a directory (`file:///path` or a plain absolute path) or an S3
//! bucket (`s3://bucket/prefix`).
//!
//! Every backup is three objects next to each other (SPEC §3): `ID.tar.zst`,
//! `ID.manifest.json`, `ID.tar.zst.sha256`. A [`Target`] writes the archive through an
//! [`ObjectWriter`] that keeps it invisible under its final name until [`ObjectWriter::commit`];
//! the two small objects are written whole by [`Target::put_small`]. The backup engine commits
//! them in the order archive → manifest → checksum and records in its catalog that the run is
//! in progress, with the writer's [`ObjectWriter::token`], before it writes a byte, so that
//! [`Target::cleanup`] can remove whatever an interrupted run left. [`Target::list`] says
//! what a target holds (the names of its objects, at most [`LIST_LIMIT`]), so the target,
//! not a host's catalog, can be the source of truth (`voltool backup ls --target`, `backup
//! sync`).
//!
//! All methods block: the engine calls them from a blocking thread, next to the archiver.

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;

pub mod file;
pub mod s3;
mod spec;

pub use file::FileTarget;

pub use spec::{Checksums, S3Spec, TargetConfig, TargetSpec};

/// Errors of a backup target. Messages name the target and the object, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A target URL or target configuration that cannot be used.
    #[error("backup target {target:?}: {reason}")]
    Config { target: String, reason: String },
    /// A local filesystem operation on a `file://` target failed.
    #[error("backup target {target}: {op} {}: {source}", path.display())]
    Io {
        target: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An S3 request failed (after retries where they apply).
    #[error("backup target {target}: {op} {key}: {reason}")]
    S3 { target: String, op: &'static str, key: String, reason: String },
    /// The object does not exist.
    #[error("backup target {target}: object {name} not found")]
    NotFound { target: String, name: String },
    /// The object is larger than the caller allows (small objects only).
    #[error("backup target {target}: object {name} is larger than {limit} bytes")]
    TooLarge { target: String, name: String, limit: u64 },
    /// A listing found more entries than the caller allows ([`Target::list`]).
    #[error(
        "backup target {target}: more than {limit} entries, more than voltool lists; prune old backups or give each host a prefix (directory) of its own"
    )]
    TooManyObjects { target: String, limit: usize },
    /// Writing the object through a layer over the target's writer (encryption,
    /// [`crate::crypt::SealedWriter`]) failed; the source is the target writer's error when
    /// that is what failed.
    #[error("{name}: {source}")]
    Stream {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// The most entries [`Target::list`] goes through by default: ~100,000 backups of three
/// objects each, ~30 MB of names in memory.
pub const LIST_LIMIT: usize = 300_000;

/// One object as [`Target::list`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The object's name, as [`Target::open`] takes it.
    pub name: String,
    /// Its size in bytes, as stored.
    pub size: u64,
}

/// Whether `name` is an object name targets accept: one plain file name, not hidden (the
/// temporary names of writes in progress start with `.`), without control characters.
pub fn is_object_name(name: &str) -> bool {
    !(name.is_empty() || name.starts_with('.') || name.contains('/') || name.chars().any(char::is_control))
}

/// A place backups are stored.
pub trait Target: Send + Sync + fmt::Debug {
    /// The target as users name it, without credentials (`file:///srv/backups`, `s3://bkt/pfx`).
    fn describe(&self) -> String;

    /// Starts writing the object `name` (the archive). Nothing is visible under `name` until
    /// the writer is committed; dropping or aborting the writer discards what was written.
    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, TargetError>;

    /// Writes a small object completely and atomically (visible whole or not at all).
    fn put_small(&self, name: &str, data: &[u8]) -> Result<(), TargetError>;

    /// Opens an object for streaming reads. A missing object is [`TargetError::NotFound`].
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, TargetError>;

    /// [`Target::open`] for one pass over a whole archive (a verification, a restore): the
    /// bytes as the storage holds them, not a copy cached in memory, and without the page
    /// cache's work for data read once. A directory target reads with `O_DIRECT` (bypassing
    /// the page cache, where a backup just written still sits whole); others read as `open`
    /// does.
    fn open_stored(&self, name: &str) -> Result<Box<dyn Read + Send>, TargetError> {
        self.open(name)
    }

    /// Opens bytes `start .. start + len` of an object (fewer when it is shorter): a ranged read,
    /// so that one file of an archive costs only the frames that hold it. A directory target
    /// seeks (`pread`), S3 sends a `Range` GET; this default reads up to `start` and drops it.
    fn open_range(&self, name: &str, start: u64, len: u64) -> Result<Box<dyn Read + Send>, TargetError> {
        let mut r = self.open(name)?;
        std::io::copy(&mut (&mut r).take(start), &mut std::io::sink()).map_err(|e| TargetError::S3 {
            target: self.describe(),
            op: "reading",
            key: name.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Box::new(r.take(len)))
    }

    /// Reads a small object whole, refusing one larger than `limit` bytes.
    fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>, TargetError> {
        let mut r = self.open(name)?.take(limit + 1);
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).map_err(|e| TargetError::S3 {
            target: self.describe(),
            op: "reading",
            key: name.to_owned(),
            reason: e.to_string(),
        })?;
        if buf.len() as u64 > limit {
            return Err(TargetError::TooLarge { target: self.describe(), name: name.to_owned(), limit });
        }
        Ok(buf)
    }

    /// The objects directly under the target, sorted by name: not those of a subdirectory (a
    /// deeper prefix), nor the temporary names of writes in progress, nor names
    /// [`is_object_name`] refuses. Objects on a target are anybody's input: the listing goes
    /// through at most `limit` entries, then fails.
    ///
    /// # Errors
    /// [`TargetError::TooManyObjects`] past `limit` entries; the target's errors (a target
    /// never written to is empty, not an error).
    fn list(&self, limit: usize) -> Result<Vec<Listed>, TargetError>;

    /// Whether the object exists.
    fn exists(&self, name: &str) -> Result<bool, TargetError>;

    /// Deletes an object; a missing one is not an error.
    fn delete(&self, name: &str) -> Result<(), TargetError>;

    /// Removes what an interrupted write of `name` may have left: temporary files, an open
    /// multipart upload (`token` is what [`ObjectWriter::token`] returned, if it was recorded).
    /// Does not delete a committed object `name` itself (use [`Target::delete`]).
    fn cleanup(&self, name: &str, token: Option<&str>) -> Result<(), TargetError>;
}

/// An object being written. `Write` errors carry the target's reason (e.g. "no space left").
pub trait ObjectWriter: Write + Send {
    /// What a later [`Target::cleanup`] needs to find this write if the process dies (the S3
    /// multipart upload id); `None` when the name alone is enough.
    fn token(&self) -> Option<String>;

    /// Makes the object visible under its final name, durably. Returns its size in bytes.
    fn commit(self: Box<Self>) -> Result<u64, TargetError>;

    /// Discards everything written (best effort; errors are logged, not returned).
    fn abort(self: Box<Self>);
}

/// Objects up to this size written through [`StreamedPut`] go out with one
/// [`Target::put_small`]; larger ones are streamed. As large as one S3 part: streaming a
/// smaller object would hold as much in memory and cost three more requests.
pub const SMALL_OBJECT: usize = 8 << 20;

/// Writes an object of unknown size (a manifest) without ever holding more than
/// [`SMALL_OBJECT`] bytes of it: up to that size it is kept and written with
/// [`Target::put_small`] by [`StreamedPut::finish`] (one request, as before for small
/// objects); once it grows past it, it is streamed through [`Target::create`] and committed
/// by `finish`. Either way the object becomes visible whole or not at all, and dropping the
/// writer unfinished leaves nothing under `name`.
pub struct StreamedPut<'a> {
    target: &'a dyn Target,
    name: String,
    small: Vec<u8>,
    large: Option<Box<dyn ObjectWriter>>,
}

impl<'a> StreamedPut<'a> {
    pub fn new(target: &'a dyn Target, name: &str) -> Self {
        Self { target, name: name.to_owned(), small: Vec::new(), large: None }
    }

    /// Makes the object visible. Errors: the target's, naming it and the object.
    pub fn finish(mut self) -> Result<(), TargetError> {
        match self.large.take() {
            Some(w) => w.commit().map(drop),
            None => self.target.put_small(&self.name, &self.small),
        }
    }
}

impl fmt::Debug for StreamedPut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamedPut").field("name", &self.name).field("streaming", &self.large.is_some()).finish()
    }
}

impl Write for StreamedPut<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.large.is_none() && self.small.len() + data.len() <= SMALL_OBJECT {
            self.small.extend_from_slice(data);
            return Ok(data.len());
        }
        if self.large.is_none() {
            let mut w = self.target.create(&self.name).map_err(std::io::Error::other)?;
            w.write_all(&std::mem::take(&mut self.small))?;
            self.large = Some(w);
        }
        match &mut self.large {
            Some(w) => w.write(data),
            None => Err(std::io::Error::other("unreachable: the object is being streamed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Nothing is visible before `finish`, so there is nothing to flush to.
        Ok(())
    }
}

/// Opens the target a spec describes. S3 targets need a tokio runtime handle for their
/// requests (the methods themselves block and must not be called on a runtime worker thread).
pub fn open_target(spec: &TargetSpec, rt: &tokio::runtime::Handle) -> Result<Box<dyn Target>, TargetError> {
    match spec {
        TargetSpec::File(dir) => Ok(Box::new(FileTarget::new(dir.clone()))),
        TargetSpec::S3(s3) => Ok(Box::new(s3::S3Target::new(s3.clone(), rt.clone())?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_put_small_and_large_objects_appear_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = FileTarget::new(dir.path().to_path_buf());
        for (name, len) in [("small.json", 10), ("large.json", SMALL_OBJECT + 12_345)] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut w = StreamedPut::new(&t, name);
            for chunk in data.chunks(100_003) {
                w.write_all(chunk).expect("write");
            }
            assert!(!t.exists(name).expect("exists"), "{name} visible before finish");
            w.finish().expect("finish");
            assert_eq!(t.read_small(name, u64::MAX >> 1).expect("read"), data, "{name}");
        }
        let mut w = StreamedPut::new(&t, "dropped.json");
        w.write_all(&vec![1u8; SMALL_OBJECT + 1]).expect("write");
        drop(w);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
