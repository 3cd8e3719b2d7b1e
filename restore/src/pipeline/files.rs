//! The file thread behind the extraction: each file's bytes written to the descriptor the
//! extraction created, hashed when asked, then finished (owner, mode, xattrs, mtime) and
//! closed, in archive order; and the write-behind thread that has the kernel write them to
//! disk meanwhile (see [`super`] for the whole pipeline).
//!
//! Split from the reading and decoding threads: those hand the archive's bytes forward, this
//! takes the files' bytes backward, and they share nothing but [`CHUNK`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::CHUNK;
use crate::error::RestoreError;

/// File-data batches in existence at once.
const FILE_BUFFERS: usize = 4;
/// Files opened in one batch at most: each holds its descriptor until the file thread closes
/// it, so at most `FILES_PER_BATCH * (FILE_BUFFERS + 1)` are open at once, however many empty
/// files an archive holds.
const FILES_PER_BATCH: usize = 32;
/// File bytes written between two write-behind syncs. Smaller means more syncs (each also
/// commits the journal); larger leaves more for the closing sync. 16–256 MiB measured alike
/// on the bench set; the kernel's own writeback would wait for 10% of RAM or 30 s.
pub(crate) const WRITE_BEHIND: usize = 64 << 20;

/// What the file thread applies to a file once its bytes are written, in this order:
/// fchown(2) (it clears setuid/setgid, so before the mode), fchmod(2), fsetxattr(2),
/// futimens(3) (last: writing would change the mtime again).
#[derive(Debug, Default)]
pub(crate) struct FileMeta {
    /// `Some((uid, gid))` when the owner must be set.
    pub(crate) owner: Option<(Option<u32>, Option<u32>)>,
    /// `Some(mode)` when the mode must be set (creating did not give it).
    pub(crate) mode: Option<u32>,
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
    pub(crate) mtime: Option<(i64, u32)>,
}

/// One step for the file thread; `Bytes` refer to the batch's buffer, in order.
enum Op {
    /// A new file, created (empty) by the extraction; its bytes follow.
    Open(Box<(File, PathBuf, FileMeta)>),
    Bytes(usize),
    /// The file is complete: apply its metadata, close it, keep its digest.
    Close,
}

struct Batch {
    buf: Vec<u8>,
    ops: Vec<Op>,
}

/// Writes, hashes (when asked) and finishes files on their own thread, in archive order; the
/// extraction thread only parses, checks and creates. Files are numbered in the order they are
/// opened; [`FileWriter::finish`] returns their sha256 digests in that order.
///
/// The extraction creates each file itself (`O_CREAT|O_EXCL|O_NOFOLLOW`, after every path
/// check) and hands over the descriptor: this thread never resolves a path, so it cannot
/// write anywhere the checks did not allow. Its first error stops its work and is returned by
/// [`FileWriter::finish`] (and seen by [`FileWriter::failed`] at once).
pub(crate) struct FileWriter {
    tx: Option<SyncSender<Batch>>,
    free: Receiver<Vec<u8>>,
    failed: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<[u8; 32]>, RestoreError>>>,
    made: usize,
    buf: Vec<u8>,
    fill: usize,
    ops: Vec<Op>,
    /// Bytes of the current file in the current batch, not yet in `ops`.
    part: usize,
    /// `Open` steps in the current batch.
    files_in_batch: usize,
}

/// Why copying a file failed: reading the archive, or handing it to the file thread.
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

fn write_error(p: &Path, e: &io::Error) -> RestoreError {
    RestoreError::Write(format!("{}: {e}", p.display()))
}

/// The file thread: returns every file's digest, or the first error.
fn write_files(
    rx: &Receiver<Batch>,
    free: &Sender<Vec<u8>>,
    failed: &AtomicBool,
    hash: bool,
    behind: Option<&WriteBehind>,
) -> Result<Vec<[u8; 32]>, RestoreError> {
    let mut digests = Vec::new();
    let mut unsynced = 0usize;
    let mut h = Sha256::new();
    let mut cur: Option<Box<(File, PathBuf, FileMeta)>> = None;
    let mut result = Ok(());
    for batch in rx {
        let mut at = 0;
        for op in batch.ops {
            if result.is_err() {
                break;
            }
            result = match op {
                Op::Open(f) => {
                    cur = Some(f);
                    Ok(())
                }
                Op::Bytes(n) => {
                    let data = &batch.buf[at..at + n];
                    at += n;
                    if hash {
                        h.update(data);
                    }
                    match &mut cur {
                        Some(f) => f.0.write_all(data).map_err(|e| write_error(&f.1, &e)),
                        None => Err(RestoreError::Write("file data without a file".into())),
                    }
                }
                Op::Close => {
                    if hash {
                        digests.push(h.finalize_reset().into());
                    }
                    match cur.take() {
                        Some(f) => apply(&f.0, &f.1, &f.2),
                        None => Err(RestoreError::Write("file data without a file".into())),
                    }
                }
            };
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
        }
        unsynced += at;
        if let Some(b) = behind
            && unsynced >= WRITE_BEHIND
        {
            unsynced = 0;
            b.poke();
        }
        // The extraction may be gone already: then the buffer is just freed. (The first
        // batch may come without a buffer: nothing to give back.)
        if !batch.buf.is_empty() {
            let _ = free.send(batch.buf);
        }
    }
    result.map(|()| digests)
}

/// Has the kernel write a filesystem's dirty data to disk on a thread of its own, each time it
/// is poked (pokes that come while it syncs fold into one). Its errors are dropped: the
/// closing sync of a durable extraction, on a descriptor of its own opened before the first
/// write, reports any writeback error since (`syncfs(2)` reports each error once per open file).
pub(crate) struct WriteBehind {
    poke: SyncSender<()>,
    thread: JoinHandle<()>,
}

impl WriteBehind {
    /// Starts the thread; `dir` is any directory on the filesystem to sync.
    ///
    /// # Errors
    /// [`RestoreError::Thread`] when the thread cannot start.
    pub(crate) fn start(dir: File) -> Result<Self, RestoreError> {
        let (poke, pokes) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("restore-sync".into())
            .spawn(move || {
                for () in pokes {
                    let _ = nix::unistd::syncfs(&dir);
                }
            })
            .map_err(|e| RestoreError::Thread { what: "write-behind", source: e })?;
        Ok(Self { poke, thread })
    }

    fn poke(&self) {
        let _ = self.poke.try_send(());
    }

    /// Waits for a sync under way to end.
    fn stop(self) {
        drop(self.poke);
        let _ = self.thread.join();
    }
}

/// Applies `meta` to the open file (see [`FileMeta`] for the order).
fn apply(f: &File, p: &Path, meta: &FileMeta) -> Result<(), RestoreError> {
    if let Some((uid, gid)) = meta.owner {
        std::os::unix::fs::fchown(f, uid, gid).map_err(|e| write_error(p, &e))?;
    }
    if let Some(mode) = meta.mode {
        f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| write_error(p, &e))?;
    }
    for (key, value) in &meta.xattrs {
        // As GNU tar: an xattr the filesystem refuses does not fail the restore.
        let _ = xattr::FileExt::set_xattr(f, key, value);
    }
    if let Some((s, ns)) = meta.mtime {
        let t = filetime::FileTime::from_unix_time(s, ns);
        filetime::set_file_handle_times(f, Some(t), Some(t)).map_err(|e| write_error(p, &e))?;
    }
    Ok(())
}

impl FileWriter {
    /// Starts the file thread; `hash` says whether it computes every file's sha256, `behind`
    /// whether it pokes a write-behind thread (which it stops, waiting for it, when it ends).
    ///
    /// # Errors
    /// [`RestoreError::Thread`] when the thread cannot start.
    pub(crate) fn start(hash: bool, behind: Option<WriteBehind>) -> Result<Self, RestoreError> {
        let (tx, rx) = mpsc::sync_channel::<Batch>(FILE_BUFFERS);
        let (free_tx, free) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let f2 = failed.clone();
        let thread = std::thread::Builder::new()
            .name("restore-files".into())
            .spawn(move || {
                let written = write_files(&rx, &free_tx, &f2, hash, behind.as_ref());
                if let Some(b) = behind {
                    b.stop();
                }
                written
            })
            .map_err(|e| RestoreError::Thread { what: "file writer", source: e })?;
        Ok(Self {
            tx: Some(tx),
            free,
            failed,
            thread: Some(thread),
            made: 0,
            buf: Vec::new(),
            fill: 0,
            ops: Vec::new(),
            part: 0,
            files_in_batch: 0,
        })
    }

    /// Whether the file thread has failed (then [`FileWriter::finish`] says why).
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Hands the current batch to the thread and takes an empty buffer.
    fn send(&mut self) -> Result<(), io::Error> {
        let stopped = || io::Error::other("the file writer thread stopped");
        if self.part > 0 {
            self.ops.push(Op::Bytes(self.part));
            self.part = 0;
        }
        let next = match self.free.try_recv() {
            Ok(b) => b,
            Err(_) if self.made < FILE_BUFFERS => {
                self.made += 1;
                vec![0u8; CHUNK]
            }
            Err(_) => self.free.recv().map_err(|_| stopped())?,
        };
        let buf = std::mem::replace(&mut self.buf, next);
        let ops = std::mem::take(&mut self.ops);
        self.fill = 0;
        self.files_in_batch = 0;
        if !buf.is_empty() || !ops.is_empty() {
            self.tx.as_ref().ok_or_else(stopped)?.send(Batch { buf, ops }).map_err(|_| stopped())?;
        }
        Ok(())
    }

    /// Reads one file's contents from `r` and queues them, with the created `file` (named
    /// `path`, for messages) and what to apply once written; returns the bytes read. The
    /// file's digest is the next one [`FileWriter::finish`] returns.
    pub(crate) fn copy(
        &mut self,
        r: &mut impl Read,
        file: File,
        path: PathBuf,
        meta: FileMeta,
    ) -> Result<u64, CopyError> {
        if self.part > 0 {
            self.ops.push(Op::Bytes(self.part));
            self.part = 0;
        }
        if self.files_in_batch == FILES_PER_BATCH {
            self.send().map_err(CopyError::Write)?;
        }
        self.files_in_batch += 1;
        self.ops.push(Op::Open(Box::new((file, path, meta))));
        let mut n = 0u64;
        loop {
            if self.fill == self.buf.len() {
                self.send().map_err(CopyError::Write)?;
            }
            let k = match r.read(&mut self.buf[self.fill..]) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(e)),
            };
            self.fill += k;
            self.part += k;
            n += k as u64;
        }
        if self.part > 0 {
            self.ops.push(Op::Bytes(self.part));
            self.part = 0;
        }
        self.ops.push(Op::Close);
        Ok(n)
    }

    /// Writes and finishes what is queued and returns every file's sha256, in the order of
    /// [`FileWriter::copy`] (none when not hashing).
    ///
    /// # Errors
    /// The file thread's first error ([`RestoreError::Write`] naming the file).
    pub(crate) fn finish(mut self) -> Result<Vec<[u8; 32]>, RestoreError> {
        let stopped = || RestoreError::Write("the file writer thread stopped".into());
        if !self.ops.is_empty() {
            let batch = Batch { buf: std::mem::take(&mut self.buf), ops: std::mem::take(&mut self.ops) };
            // A failed send means the thread ended: join says why.
            let _ = self.tx.as_ref().ok_or_else(stopped)?.send(batch);
        }
        drop(self.tx.take());
        self.thread.take().ok_or_else(stopped)?.join().map_err(|_| stopped())?
    }
}

impl Drop for FileWriter {
    /// On an early return the thread finishes what it was given (a few buffers of local
    /// writes) and ends: nothing outlives the extraction.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_writer_writes_and_hashes_each_file_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0usize, 1, 4096, CHUNK - 3, 5, 3 * CHUNK + 17, 0, 100];
        let mut w = FileWriter::start(true, None).unwrap();
        let mut want = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..n).map(|j| (j * 31 + i) as u8).collect();
            let p = dir.path().join(format!("f{i}"));
            let f = File::create(&p).unwrap();
            let meta = FileMeta { mode: Some(0o640), mtime: Some((1_700_000_000, 5)), ..FileMeta::default() };
            assert_eq!(w.copy(&mut &data[..], f, p, meta).ok(), Some(n as u64));
            want.push((<[u8; 32]>::from(Sha256::digest(&data)), data));
        }
        let digests = w.finish().unwrap();
        assert_eq!(digests.len(), sizes.len());
        for (i, (d, (want_d, data))) in digests.iter().zip(&want).enumerate() {
            assert_eq!(d, want_d, "file {i}");
            let p = dir.path().join(format!("f{i}"));
            assert_eq!(&std::fs::read(&p).unwrap(), data, "file {i}");
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o640);
            assert_eq!(filetime::FileTime::from_last_modification_time(&m).unix_seconds(), 1_700_000_000);
        }
    }

    #[test]
    fn empty_files_do_not_pile_up_open_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = FileWriter::start(false, None).unwrap();
        for i in 0..2000 {
            let p = dir.path().join(format!("e{i}"));
            let f = File::create(&p).unwrap();
            w.copy(&mut &[][..], f, p, FileMeta { mode: Some(0o600), ..FileMeta::default() }).ok().unwrap();
            let open = std::fs::read_dir("/proc/self/fd").unwrap().count();
            assert!(open < 1000, "{open} descriptors open after {i} files");
        }
        assert!(w.finish().unwrap().is_empty(), "no digests when not hashing");
    }

    #[test]
    fn a_write_error_is_returned_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ro");
        std::fs::write(&p, b"").unwrap();
        // A read-only descriptor: every write fails (EBADF).
        let f = File::open(&p).unwrap();
        let mut w = FileWriter::start(true, None).unwrap();
        let data = [1u8; 10];
        assert!(w.copy(&mut &data[..], f, p.clone(), FileMeta::default()).is_ok());
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains("ro"), "{e}");
    }
}
