//! Encrypting: [`Sealer`] over any writer (inline), [`SealedWriter`] over a target's object
//! writer (on a thread of its own, hashing the stored bytes).

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::{CryptError, Recipients};
use crate::target::{ObjectWriter, TargetError};

/// Bytes the archiver hands the encrypting thread at a time.
pub const BLOCK: usize = 1 << 20;
/// Blocks in flight between the archiver and the encrypting thread (the memory bound).
pub const BLOCKS: usize = 4;

/// An age stream being written into `W`: bytes written are encrypted; [`Sealer::finish`]
/// writes the last chunk and gives `W` back. Dropping it unfinished leaves a stream that
/// fails to decrypt (truncated), never one that looks whole.
pub struct Sealer<W: Write> {
    stream: age::stream::StreamWriter<W>,
}

impl Recipients {
    /// Starts an age stream to these recipients in `out` (the header is written at once).
    /// `object` names it in errors.
    ///
    /// # Errors
    /// [`CryptError::Encrypt`]: age refused the recipients, or the header could not be
    /// written (with the writer's reason).
    pub fn seal<W: Write>(&self, out: W, object: &str) -> Result<Sealer<W>, CryptError> {
        let stream = self
            .encryptor(object)?
            .wrap_output(out)
            .map_err(|e| CryptError::Encrypt { object: object.to_owned(), reason: e.to_string() })?;
        Ok(Sealer { stream })
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing mid-stream would not make a partial age file readable; the last chunk is
        // written by `finish`.
        Ok(())
    }
}

impl<W: Write> Sealer<W> {
    /// Ends the stream (its last chunk) and returns the writer.
    ///
    /// # Errors
    /// The writer's error.
    pub fn finish(self) -> io::Result<W> {
        self.stream.finish()
    }
}

/// An object as stored on its target: its size and sha256 (of the encrypted bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Counts and hashes what passes into `inner`.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Msg {
    Data(Vec<u8>),
    /// The producer is done: finish the stream.
    End,
}

/// What the encrypting thread hands back: the target's writer with everything written, and
/// the stored size and sha256.
type Done = io::Result<(Box<dyn ObjectWriter>, StoredObject)>;

/// An encrypted object being written to a target: an [`ObjectWriter`] over the target's own.
/// What is written is collected into [`BLOCK`]-sized blocks and encrypted on a thread of its
/// own into the target's writer, hashing the stored bytes; at most [`BLOCKS`] blocks exist.
/// [`SealedWriter::finish`] (or `commit`) ends the age stream and commits the object; dropping
/// it unfinished discards the object as the target's writer does.
pub struct SealedWriter {
    name: String,
    token: Option<String>,
    tx: Option<SyncSender<Msg>>,
    free: Receiver<Vec<u8>>,
    made: usize,
    buf: Vec<u8>,
    worker: Option<JoinHandle<Done>>,
}

impl SealedWriter {
    /// Starts encrypting to `recipients` into `inner` (the target's writer of `name`).
    ///
    /// # Errors
    /// [`CryptError::Encrypt`] when age refuses the recipients or the thread cannot start.
    pub fn new(inner: Box<dyn ObjectWriter>, recipients: &Recipients, name: &str) -> Result<Self, CryptError> {
        let encryptor = recipients.encryptor(name)?;
        let token = inner.token();
        let (tx, rx) = mpsc::sync_channel::<Msg>(BLOCKS);
        let (free_tx, free) = mpsc::channel::<Vec<u8>>();
        let worker = std::thread::Builder::new()
            .name("age-encrypt".into())
            .spawn(move || -> Done {
                let mut out = encryptor.wrap_output(Hashing { inner, hash: Sha256::new(), size: 0 })?;
                loop {
                    match rx.recv() {
                        Ok(Msg::Data(mut b)) => {
                            out.write_all(&b)?;
                            b.clear();
                            // The producer may be gone: then the block is freed.
                            let _ = free_tx.send(b);
                        }
                        Ok(Msg::End) => break,
                        // Dropped unfinished: the target's writer is dropped too, which
                        // discards the object.
                        Err(_) => return Err(io::Error::other("the encrypted object was abandoned")),
                    }
                }
                let h = out.finish()?;
                let stored = StoredObject { size: h.size, sha256: hex::encode(h.hash.finalize()) };
                Ok((h.inner, stored))
            })
            .map_err(|e| CryptError::Encrypt {
                object: name.to_owned(),
                reason: format!("starting its thread: {e}"),
            })?;
        Ok(Self {
            name: name.to_owned(),
            token,
            tx: Some(tx),
            free,
            made: 1,
            buf: Vec::with_capacity(BLOCK),
            worker: Some(worker),
        })
    }

    /// The encrypting thread's result, once it has ended.
    fn join(&mut self) -> Done {
        self.tx = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(done)) => done,
            Some(Err(_)) => Err(io::Error::other("the encrypting thread panicked")),
            None => Err(io::Error::other("the encrypted object was already finished")),
        }
    }

    /// Hands the current block to the thread and takes an empty one.
    fn send_block(&mut self) -> io::Result<()> {
        let next = match self.free.try_recv() {
            Ok(b) => b,
            Err(_) if self.made < BLOCKS => {
                self.made += 1;
                Vec::with_capacity(BLOCK)
            }
            // Waits for the thread to give a block back (or to have failed).
            Err(_) => self.free.recv().unwrap_or_default(),
        };
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(Msg::Data(full)).is_ok());
        if sent && self.buf.capacity() > 0 {
            return Ok(());
        }
        // The thread stopped: its error says why.
        Err(match self.join() {
            Err(e) => e,
            Ok(_) => io::Error::other("the encrypting thread ended early"),
        })
    }

    /// Ends the age stream, commits the object, and returns its size and sha256 as stored.
    ///
    /// # Errors
    /// The target's, or [`TargetError::Stream`] for what failed while encrypting (the
    /// target's writer's reason).
    pub fn finish(mut self) -> Result<StoredObject, TargetError> {
        let name = self.name.clone();
        let stream = |source| TargetError::Stream { name, source };
        if !self.buf.is_empty() {
            let full = std::mem::take(&mut self.buf);
            if let Some(tx) = &self.tx {
                // A failed send shows in the thread's result below.
                let _ = tx.send(Msg::Data(full));
            }
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::End);
        }
        let (inner, stored) = self.join().map_err(stream)?;
        inner.commit()?;
        Ok(stored)
    }
}

impl Write for SealedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.tx.is_none() {
            return Err(io::Error::other("the encrypted object was already finished"));
        }
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.send_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Nothing is visible before the commit.
        Ok(())
    }
}

impl ObjectWriter for SealedWriter {
    fn token(&self) -> Option<String> {
        self.token.clone()
    }

    fn commit(self: Box<Self>) -> Result<u64, TargetError> {
        (*self).finish().map(|s| s.size)
    }

    fn abort(self: Box<Self>) {
        // Drop ends the thread, which drops the target's writer: it discards the object.
    }
}

impl Drop for SealedWriter {
    fn drop(&mut self) {
        if self.worker.is_some() {
            // Without `End` the thread drops the target's writer unfinished; waiting for it
            // means the object is discarded when the drop returns.
            let _ = self.join();
        }
    }
}
