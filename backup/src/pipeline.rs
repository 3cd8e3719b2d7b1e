//! The archive's byte pipeline: the walking thread fills blocks of tar, a compressor thread
//! hands each to a worker that compresses it into a zstd frame of its own
//! ([`crate::frames`]), and hashes and writes the frames in order.
//!
//! Why a thread apart from the walker: the walker's time goes to system calls and hashing file
//! contents, the compressor's to hashing the compressed stream and writing it to the target
//! while the workers compress. Blocks are recycled, so at most `BLOCKS_IN_FLIGHT + 2` blocks
//! plus one per worker exist at once whatever the size of the volume.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};

use sha2::{Digest, Sha256};

/// A writer that hashes and counts everything passed through to `inner`.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0 }
    }

    pub(crate) fn finish(self) -> (W, u64, String) {
        (self.inner, self.count, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Size of a block of tar: one zstd frame each.
pub(crate) const BLOCK: usize = crate::frames::FRAME;
/// Full blocks queued for the compressor.
const BLOCKS_IN_FLIGHT: usize = 2;

/// What the walker sends: a block (the buffer and how many of its bytes are tar), or the end
/// of a complete stream. A channel that closes without `End` means the walk failed.
enum Msg {
    Block(Vec<u8>, usize),
    End,
}

/// The walker's end of the pipeline: a block being filled.
pub(crate) struct BlockWriter {
    buf: Vec<u8>,
    len: usize,
    /// Bytes in the blocks sent so far.
    sent: u64,
    tx: SyncSender<Msg>,
    recycled: Receiver<Vec<u8>>,
}

/// The compressor's end, run by [`Compressor::run`] on its own thread.
pub(crate) struct Compressor {
    rx: Receiver<Msg>,
    recycle: Sender<Vec<u8>>,
}

/// The two ends of a new pipeline.
pub(crate) fn pipeline() -> (BlockWriter, Compressor) {
    let (tx, rx) = std::sync::mpsc::sync_channel(BLOCKS_IN_FLIGHT);
    let (recycle, recycled) = std::sync::mpsc::channel();
    (BlockWriter { buf: vec![0; BLOCK], len: 0, sent: 0, tx, recycled }, Compressor { rx, recycle })
}

impl BlockWriter {
    /// The free tail of the current block (never empty: a full block is sent first).
    pub(crate) fn spare(&mut self) -> io::Result<&mut [u8]> {
        if self.len == self.buf.len() {
            self.send()?;
        }
        Ok(&mut self.buf[self.len..])
    }

    /// Tar bytes written so far: where the next entry begins in the stream.
    pub(crate) fn position(&self) -> u64 {
        self.sent + self.len as u64
    }

    /// Marks `n` bytes of [`BlockWriter::spare`] as filled.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Hands the current block (if it holds anything) to the compressor.
    pub(crate) fn send(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let next = match self.recycled.try_recv() {
            Ok(buf) => buf,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => vec![0; BLOCK],
        };
        let full = std::mem::replace(&mut self.buf, next);
        let len = std::mem::take(&mut self.len);
        self.sent += len as u64;
        self.tx.send(Msg::Block(full, len)).map_err(|_| stopped())
    }

    /// Sends what is left and marks the stream complete. Dropping the writer without this
    /// leaves the compressed stream unfinished.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.send()?;
        self.tx.send(Msg::End).map_err(|_| stopped())
    }
}

/// A closed channel means the compressor failed; its own error is the one reported.
fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the compressor stopped")
}

impl Write for BlockWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let spare = self.spare()?;
        let n = spare.len().min(data.len());
        spare[..n].copy_from_slice(&data[..n]);
        self.advance(n);
        Ok(n)
    }

    /// Does nothing: blocks go out when full or at the end ([`BlockWriter::send`]), never
    /// half empty.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Compressor {
    /// Compresses every block into `out` until [`BlockWriter::finish`], on `threads` workers
    /// (0 or 1: on this thread). If the walker's end is dropped without it, the stream is left
    /// unfinished (see [`crate::frames::compress`]: it cannot pass for a complete archive).
    /// Returns `out`, the compressed size, its lowercase hex sha256 and the frames' offsets
    /// ([`crate::frames::compress`]).
    pub(crate) fn run<W: Write>(self, out: W, level: i32, threads: u32) -> io::Result<(W, u64, String, Vec<u64>)> {
        let mut out = HashingWriter::new(out);
        let next = || match self.rx.recv() {
            Ok(Msg::Block(buf, len)) => Ok(Some((buf, len))),
            Ok(Msg::End) => Ok(None),
            Err(_) => Err(io::Error::other("the walk failed")),
        };
        // The walker may be gone already (it failed); then the block is simply freed.
        let recycle = |buf| {
            let _ = self.recycle.send(buf);
        };
        let (_, offsets) = crate::frames::compress(&mut out, level, threads as usize, next, recycle)?;
        let (mut out, size, sha) = out.finish();
        out.flush()?;
        Ok((out, size, sha, offsets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8], threads: u32, finish: bool) -> io::Result<(Vec<u8>, u64, String, Vec<u64>)> {
        let (mut blocks, compressor) = pipeline();
        std::thread::scope(|s| {
            let t = s.spawn(|| compressor.run(Vec::new(), 3, threads));
            let sent = blocks.write_all(data);
            if finish && sent.is_ok() {
                blocks.finish()?;
            } else {
                drop(blocks);
            }
            t.join().unwrap_or_else(|_| Err(io::Error::other("panicked")))
        })
    }

    /// Regression: the end of a complete stream was signalled by closing the channel and a
    /// flag set just after, so the compressor sometimes saw the close first and failed a
    /// good backup ("the walk failed"). The end is now a message of its own.
    #[test]
    fn a_finished_stream_always_completes() {
        for i in 0..500 {
            let data = vec![i as u8; i * 37];
            let (out, size, sha, offsets) = round_trip(&data, if i % 2 == 0 { 2 } else { 0 }, true).expect("stream");
            // One frame per block, each where the table says.
            assert_eq!(offsets.len(), data.len().div_ceil(BLOCK) + 1, "run {i}");
            for w in offsets.windows(2) {
                let frame = &out[usize::try_from(w[0]).expect("offset")..usize::try_from(w[1]).expect("offset")];
                assert!(zstd::decode_all(frame).is_ok(), "run {i}: a frame at {w:?}");
            }
            assert_eq!(zstd::decode_all(&out[..]).expect("decode"), data, "run {i}");
            assert_eq!((size, sha), (out.len() as u64, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&out))));
        }
    }

    #[test]
    fn an_unfinished_stream_fails() {
        let data = vec![7u8; 3 * BLOCK + 5];
        let err = round_trip(&data, 2, false).expect_err("walk failed");
        assert!(err.to_string().contains("the walk failed"), "{err}");
    }
}
