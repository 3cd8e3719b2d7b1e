//! The reading side of [`super`]: whole frames handed to a pool of decoding workers, which
//! decode each in one call and take turns ([`Turn`]) to pass them on in stream order; what the
//! workers cannot take is decoded by zstd's streaming decoder on the dispatching thread, after
//! every frame before it was passed on.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Condvar, Mutex, PoisonError};

use super::walk::{Stop, Walk, walk_frames};
use crate::blocks::{BlockSender, Forwarded};

/// Whose turn it is to hand a decoded frame on (frames are numbered in stream order), or
/// `None` once decoding stopped (an error, or the reader went away).
pub(super) struct Turn {
    next: Mutex<Option<u64>>,
    changed: Condvar,
}

impl Turn {
    fn new() -> Self {
        Self { next: Mutex::new(Some(0)), changed: Condvar::new() }
    }

    /// Waits until it is frame `seq`'s turn; false when decoding stopped.
    pub(super) fn wait(&self, seq: u64) -> bool {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match *next {
                None => return false,
                Some(n) if n == seq => return true,
                Some(_) => next = self.changed.wait(next).unwrap_or_else(PoisonError::into_inner),
            }
        }
    }

    /// The frame whose turn it was is passed on: the next one's turn.
    pub(super) fn pass(&self) {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = next.as_mut() {
            *n += 1;
        }
        self.changed.notify_all();
    }

    pub(super) fn stop(&self) {
        *self.next.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.changed.notify_all();
    }

    pub(super) fn stopped(&self) -> bool {
        self.next.lock().unwrap_or_else(PoisonError::into_inner).is_none()
    }
}

/// A whole frame for a decoding worker.
pub(super) struct Job {
    pub(super) seq: u64,
    pub(super) frame: Vec<u8>,
    /// Its decoded size, from its header (at most the output's block size).
    pub(super) size: usize,
}

/// Decodes the zstd stream `raw` into `out` (see the module's description), the frames on
/// `workers` threads, until the stream ends (then `out` ends), fails (`out` fails with the
/// error, after every byte decoded before it) or `out`'s reader goes away. `step` bounds each
/// read asked of zstd's streaming decoder where it is used: the bytes a failing call decoded
/// are lost, so a small step pins a failure to its place.
///
/// Returns how the stream was decoded.
pub fn decode(mut raw: impl BufRead + Send, out: &BlockSender, workers: usize, step: usize) -> Decoded {
    let turn = Turn::new();
    let mut decoded = Decoded::default();
    let (spare_tx, spare) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let mut lanes = Vec::new();
        for i in 0..workers.max(1) {
            let (job_tx, jobs) = mpsc::sync_channel::<Job>(1);
            let (turn, spare_tx) = (&turn, spare_tx.clone());
            let started = std::thread::Builder::new()
                .name(format!("zstd-decode-{i}"))
                .spawn_scoped(s, move || decode_worker(&jobs, out, turn, &spare_tx, step));
            if started.is_err() {
                break;
            }
            lanes.push(job_tx);
        }
        drop(spare_tx);
        if lanes.is_empty() {
            // No thread to decode on: all of it here, as a stream.
            stream_rest(Vec::new(), &mut raw, out, &turn, 0, step);
            decoded.streamed = true;
        } else {
            decoded = dispatch(&mut raw, out, &turn, &lanes, &spare, step);
        }
        drop(lanes);
    });
    decoded
}

/// How [`decode`] decoded a stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Frames handed to the workers.
    pub frames: u64,
    /// Whether (some of) the stream went through zstd's streaming decoder instead.
    pub streamed: bool,
    /// Whether it began with voltool's start marker.
    pub marked: bool,
}

fn decode_worker(jobs: &Receiver<Job>, out: &BlockSender, turn: &Turn, spare: &Sender<Vec<u8>>, step: usize) {
    let mut dctx = zstd::bulk::Decompressor::new();
    for job in jobs {
        if !turn.stopped() {
            decode_one(&job, &mut dctx, out, turn, step);
        }
        let _ = spare.send(job.frame);
    }
}

fn decode_one(
    job: &Job,
    dctx: &mut io::Result<zstd::bulk::Decompressor<'static>>,
    out: &BlockSender,
    turn: &Turn,
    step: usize,
) {
    let decoded = if job.size == 0 {
        None
    } else {
        match out.buffer() {
            Some(mut buf) => {
                let r = match dctx {
                    Ok(d) => d.decompress_to_buffer(&job.frame, &mut buf[..job.size]),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                Some((buf, r))
            }
            None => return turn.stop(),
        }
    };
    if !turn.wait(job.seq) {
        return;
    }
    let failure = match decoded {
        // An empty frame: nothing to hand on (its header and checksum are checked below).
        None => match dctx {
            Ok(d) => d.decompress_to_buffer(&job.frame, &mut [0u8; 0][..]).err(),
            Err(e) => Some(io::Error::new(e.kind(), e.to_string())),
        },
        Some((buf, Ok(n))) if n == job.size => {
            if !out.send(buf, n) {
                return turn.stop();
            }
            None
        }
        Some((_, Ok(n))) => Some(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a zstd frame decoded to {n} bytes, its header says {}", job.size),
        )),
        Some((_, Err(e))) => Some(e),
    };
    match failure {
        None => turn.pass(),
        Some(e) => {
            // Again as a stream, in small steps: the reader gets what precedes the damage,
            // then the streaming decoder's error (or this one, should that decoder pass it).
            let mut forwarded = false;
            if let Ok(d) = zstd::stream::read::Decoder::with_buffer(&job.frame[..]) {
                match out.forward(&mut d.single_frame(), step) {
                    Forwarded::Failed(e2) => {
                        out.fail(e2);
                        forwarded = true;
                    }
                    Forwarded::Gone => forwarded = true,
                    Forwarded::End => {}
                }
            }
            if !forwarded {
                out.fail(e);
            }
            turn.stop();
        }
    }
}

/// Walks the stream's frames onto the workers ([`walk_frames`]) and then ends `out` as the
/// walk's end says: the end, an error, or the streaming decoder for the rest.
fn dispatch(
    raw: &mut impl BufRead,
    out: &BlockSender,
    turn: &Turn,
    lanes: &[SyncSender<Job>],
    spare: &Receiver<Vec<u8>>,
    step: usize,
) -> Decoded {
    let mut walk = Walk { marked: false, bytes: 0, frames: 0, seq: 0 };
    let stop = walk_frames(raw, out.block_size(), turn, lanes, spare, &mut walk);
    let mut decoded = Decoded { frames: walk.frames, streamed: false, marked: walk.marked };
    match stop {
        Stop::Stopped => {}
        Stop::Stream(prefix) => {
            decoded.streamed = true;
            stream_rest(prefix, raw, out, turn, walk.seq, step);
        }
        Stop::End if walk.marked => {
            if turn.wait(walk.seq) {
                out.fail(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the zstd stream ends before voltool's end marker: the archive was cut short",
                ));
            }
            turn.stop();
        }
        Stop::End | Stop::Finished => {
            if turn.wait(walk.seq) {
                out.end();
            }
            turn.stop();
        }
        Stop::Bad(msg) => {
            if turn.wait(walk.seq) {
                out.fail(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
            turn.stop();
        }
    }
    decoded
}

/// Decodes `prefix` and then the rest of `raw` with zstd's streaming decoder into `out`,
/// once every frame before (`seq` of them) was passed on.
fn stream_rest(prefix: Vec<u8>, raw: &mut impl BufRead, out: &BlockSender, turn: &Turn, seq: u64, step: usize) {
    if turn.wait(seq) {
        match zstd::stream::read::Decoder::with_buffer(io::Cursor::new(prefix).chain(raw)) {
            Ok(mut d) => {
                out.pump(&mut d, step);
            }
            Err(e) => out.fail(e),
        }
    }
    turn.stop();
}
