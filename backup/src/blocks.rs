//! A byte stream handed from one thread to another in recycled buffers.
//!
//! [`channel`] gives a [`BlockSender`] (the producing thread: reads a file, decodes zstd...)
//! and a [`BlockReader`] (the consuming thread reads it as an ordinary [`Read`], or skips
//! forward through [`Seek`] without copying). At most `count` buffers of `size` bytes ever
//! exist; the reader gives each back once read, so memory stays bounded however long the
//! stream is and the producer waits when the consumer falls behind (nothing is ever buffered
//! whole).
//!
//! Every end is explicit: the reader sees end-of-stream only after the producer said the
//! stream ended ([`BlockSender::end`]); a producer that fails says so ([`BlockSender::fail`],
//! the same error reaches the reader at the same point of the stream), and one that goes away
//! without either makes the reader fail, never end cleanly (a clean end at a tar header
//! boundary would look like the end of the archive).
//!
//! [`hash_input`] is the producer used for archives read from a file or a bucket: it hashes
//! and counts every byte on its own thread while the consumer decodes.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use sha2::{Digest, Sha256};

enum Msg {
    Data(Vec<u8>, usize),
    End,
    Failed(io::Error),
}

/// Buffers given back by the reader (with how many of their bytes were stream), and how many
/// were made.
type Pool = (Receiver<(Vec<u8>, usize)>, usize);

/// How [`BlockSender::forward`] ended.
#[derive(Debug)]
pub enum Forwarded {
    /// The source ended; every byte was sent.
    End,
    /// The source failed after the bytes sent.
    Failed(io::Error),
    /// The reader went away.
    Gone,
}

/// The producing side of [`channel`]. Its methods take `&self`: several threads may share it
/// (taking turns to send, see [`crate::frames`]); one that waits for a buffer holds up only
/// the others asking for one.
pub struct BlockSender {
    tx: SyncSender<Msg>,
    /// Buffers given back, and how many were made.
    free: Mutex<Pool>,
    count: usize,
    size: usize,
}

/// The consuming side of [`channel`]: the stream, in order.
pub struct BlockReader {
    rx: Receiver<Msg>,
    /// Where read blocks go: back to the producer, or (see [`hashed_channel`]) through the
    /// hashing thread first. With the block, how many of its bytes were stream.
    free: Sender<(Vec<u8>, usize)>,
    block: Vec<u8>,
    unread: Range<usize>,
    /// Bytes consumed so far (read or skipped): the stream position [`Seek`] reports.
    pos: u64,
    /// How the stream ended, once it has: later reads repeat it.
    end: Option<Result<(), (io::ErrorKind, String)>>,
}

/// A stream in at most `count` buffers of `size` bytes each.
#[must_use]
pub fn channel(count: usize, size: usize) -> (BlockSender, BlockReader) {
    let (free_tx, free) = mpsc::channel();
    let (tx, rx) = ends(count, size, free);
    (tx, BlockReader { rx, free: free_tx, block: Vec::new(), unread: 0..0, pos: 0, end: None })
}

fn ends(count: usize, size: usize, free: Receiver<(Vec<u8>, usize)>) -> (BlockSender, Receiver<Msg>) {
    let count = count.max(1);
    let (tx, rx) = mpsc::sync_channel(count);
    (BlockSender { tx, free: Mutex::new((free, 0)), count, size: size.max(1) }, rx)
}

/// The thread of [`hashed_channel`]: joined, the stream's size and sha256.
pub type StreamHash = std::thread::JoinHandle<(u64, [u8; 32])>;

/// [`channel`], and a thread that hashes and counts every block after the reader is done with
/// it, on its way back to the producer: the sha256 of the stream costs neither side any time
/// (it trails the reader by at most `count` blocks). The thread's result is the stream's size
/// and sha256, once the reader is dropped; it covers the whole stream when the reader read it
/// to its end (on an early drop, only what was read).
///
/// # Errors
/// When the thread cannot start.
pub fn hashed_channel(count: usize, size: usize) -> io::Result<(BlockSender, BlockReader, StreamHash)> {
    let (back_tx, back) = mpsc::channel::<(Vec<u8>, usize)>();
    let (free_tx, free) = mpsc::channel();
    let hasher = std::thread::Builder::new().name("stream-hash".into()).spawn(move || {
        let mut h = Sha256::new();
        let mut n = 0u64;
        for (buf, len) in back {
            h.update(&buf[..len]);
            n += len as u64;
            // The producer may be gone: then the buffer is just freed.
            let _ = free_tx.send((buf, 0));
        }
        (n, h.finalize().into())
    })?;
    let (tx, rx) = ends(count, size, free);
    Ok((tx, BlockReader { rx, free: back_tx, block: Vec::new(), unread: 0..0, pos: 0, end: None }, hasher))
}

impl BlockSender {
    /// An empty buffer to fill: a new one while fewer than `count` exist, else the next one
    /// the reader gives back (waiting for it). `None` once the reader is gone.
    pub fn buffer(&self) -> Option<Vec<u8>> {
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (back, made) = &mut *free;
        if let Ok((b, _)) = back.try_recv() {
            return Some(b);
        }
        if *made < self.count {
            *made += 1;
            return Some(vec![0u8; self.size]);
        }
        back.recv().ok().map(|(b, _)| b)
    }

    /// The size of the buffers [`Self::buffer`] makes.
    #[must_use]
    pub fn block_size(&self) -> usize {
        self.size
    }

    /// Hands the first `len` bytes of `buf` to the reader; false when the reader is gone.
    pub fn send(&self, buf: Vec<u8>, len: usize) -> bool {
        len == 0 || self.tx.send(Msg::Data(buf, len)).is_ok()
    }

    /// The stream ended cleanly here.
    pub fn end(&self) {
        let _ = self.tx.send(Msg::End);
    }

    /// The stream failed here: the reader gets `e` after the bytes sent before it.
    pub fn fail(&self, e: io::Error) {
        let _ = self.tx.send(Msg::Failed(e));
    }

    /// Copies `r` to the reader until it ends or fails (then the reader sees the same), or the
    /// reader goes away. Each `read` asks for at most `step` bytes (a decoder that fails
    /// drops what the failing call decoded, so a small step pins a failure to its place);
    /// buffers are sent full, except the last. Returns false when the reader went away.
    pub fn pump(&self, r: &mut impl Read, step: usize) -> bool {
        match self.forward(r, step) {
            Forwarded::End => {
                self.end();
                true
            }
            Forwarded::Failed(e) => {
                self.fail(e);
                true
            }
            Forwarded::Gone => false,
        }
    }

    /// [`Self::pump`] without passing the end or the failure on: the caller does (or sends
    /// more first).
    pub fn forward(&self, r: &mut impl Read, step: usize) -> Forwarded {
        let step = step.max(1);
        while let Some(mut buf) = self.buffer() {
            let mut len = 0;
            let last = loop {
                if len == buf.len() {
                    break None;
                }
                let want = (buf.len() - len).min(step);
                match r.read(&mut buf[len..len + want]) {
                    Ok(0) => break Some(Ok(())),
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(Err(e)),
                }
            };
            if !self.send(buf, len) {
                return Forwarded::Gone;
            }
            match last {
                None => {}
                Some(Ok(())) => return Forwarded::End,
                Some(Err(e)) => return Forwarded::Failed(e),
            }
        }
        Forwarded::Gone
    }
}

impl BlockReader {
    /// Gives the current block back (its stream bytes are `0..unread.end`).
    fn give_back(&mut self) {
        let used = std::mem::take(&mut self.block);
        if !used.is_empty() {
            // The producer may have stopped: then the buffer is just freed.
            let _ = self.free.send((used, self.unread.end));
        }
        self.unread = 0..0;
    }

    /// Makes the next block current, giving the used one back; false at the end of the
    /// stream. A failure (the producer's, or its going away without an end) is returned again
    /// on every later call.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.end.is_none() {
            match self.rx.recv() {
                Ok(Msg::Data(block, len)) => {
                    self.give_back();
                    self.block = block;
                    self.unread = 0..len;
                    return Ok(true);
                }
                Ok(Msg::End) => {
                    self.give_back();
                    self.end = Some(Ok(()));
                }
                Ok(Msg::Failed(e)) => self.end = Some(Err((e.kind(), e.to_string()))),
                Err(_) => {
                    let msg = "the stream's producer stopped in the middle of it".to_owned();
                    self.end = Some(Err((io::ErrorKind::UnexpectedEof, msg)));
                }
            }
        }
        match &self.end {
            Some(Err((kind, msg))) => Err(io::Error::new(*kind, msg.clone())),
            _ => Ok(false),
        }
    }

    /// The unread part of the current block, taking the next one when it is used up; empty
    /// at the end of the stream. With [`Self::consume`], reading without a copy.
    ///
    /// # Errors
    /// The producer's error, or its going away without an end.
    pub fn fill(&mut self) -> io::Result<&[u8]> {
        if self.unread.is_empty() && !self.next_block()? {
            return Ok(&[]);
        }
        Ok(&self.block[self.unread.clone()])
    }

    /// Marks `n` bytes of what [`Self::fill`] returned as read.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.unread.len());
        self.unread.start += n;
        self.pos += n as u64;
    }
}

impl Drop for BlockReader {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl io::BufRead for BlockReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.fill()
    }

    fn consume(&mut self, n: usize) {
        BlockReader::consume(self, n);
    }
}

impl Read for BlockReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill()?;
        let n = out.len().min(avail.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Forward seeks only (`SeekFrom::Current(n)`, `n >= 0`): skipping bytes without copying or
/// zeroing anything (the `tar` crate skips padding and unread contents this way). Skipping
/// past the end is an error, as reading there would be.
impl Seek for BlockReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let mut left = match to {
            SeekFrom::Current(n) if n >= 0 => n.unsigned_abs(),
            _ => return Err(io::Error::new(io::ErrorKind::Unsupported, "a stream can only skip forward")),
        };
        while left > 0 {
            let avail = self.fill()?.len();
            if avail == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ends inside what is skipped"));
            }
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(avail);
            self.consume(k);
            left -= k as u64;
        }
        Ok(self.pos)
    }
}

/// What [`hash_input`] read: the count and sha256 of every byte, and the read error that
/// stopped it, if one did.
#[derive(Debug)]
pub struct InputDigest {
    pub size: u64,
    pub sha256: [u8; 32],
    pub error: Option<io::Error>,
}

/// Reads `input` to its end, hashing and counting every byte, and sends it on through `tx`
/// (blocks filled whole, to hand over fewer). A read error goes to the reader too (as
/// [`BlockSender::fail`]) and is returned in the digest.
///
/// When the reader goes away early, `drain` (read then) says whether to go on reading (and
/// hashing) to the end anyway, for a digest of the whole input (verify reports a wrong archive
/// sha256 along with the first bad entry), or to stop there (nobody will look at the digest:
/// the rest of a large archive need not be read). The reader's side may clear it before it
/// goes away.
pub fn hash_input(mut input: impl Read, tx: BlockSender, drain: &AtomicBool) -> InputDigest {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut scratch: Vec<u8> = Vec::new();
    let mut listening = true;
    loop {
        let mut buf = match listening.then(|| tx.buffer()).flatten() {
            Some(b) => b,
            None => {
                listening = false;
                if !drain.load(Ordering::Acquire) {
                    return InputDigest { size, sha256: hasher.finalize().into(), error: None };
                }
                if scratch.is_empty() {
                    scratch = vec![0u8; tx.size];
                }
                std::mem::take(&mut scratch)
            }
        };
        let mut len = 0;
        let stop = loop {
            if len == buf.len() {
                break None;
            }
            match input.read(&mut buf[len..]) {
                Ok(0) => break Some(None),
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(Some(e)),
            }
        };
        hasher.update(&buf[..len]);
        size += len as u64;
        if listening {
            listening = tx.send(buf, len);
        } else {
            scratch = buf;
        }
        match stop {
            None => {}
            Some(error) => {
                if listening {
                    match &error {
                        None => tx.end(),
                        Some(e) => tx.fail(io::Error::new(e.kind(), e.to_string())),
                    }
                }
                return InputDigest { size, sha256: hasher.finalize().into(), error };
            }
        }
    }
}

#[cfg(test)]
#[path = "blocks_tests.rs"]
mod tests;
