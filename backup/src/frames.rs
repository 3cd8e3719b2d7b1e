//! The archive's zstd stream as a sequence of independent frames, so that decoding uses every
//! CPU, not one.
//!
//! One zstd frame decodes on one thread: a single-frame archive (what `zstd` or
//! `tar | zstd -T0` writes, and what voltool wrote before) is decoded at the speed of one CPU
//! whatever the machine has, and that decoding was the slowest step of `backup verify` and
//! the migration receiver. [`compress`] therefore cuts the tar stream into
//! [`FRAME`]-sized pieces and compresses each into a frame of its own (its decoded size in
//! its header, a content checksum at its end) on a pool of workers, writing them in order:
//!
//! ```text
//! [skippable frame "voltool-frames/1"] [frame 0] [frame 1] ... [skippable frame: end, bytes, frames]
//! ```
//!
//! It is still one ordinary zstd stream: `zstd -d` (and every other decoder) decodes
//! concatenated frames one after another and skips skippable frames, so `zstd -d < ID.tar.zst |
//! tar -x` works as before. Each frame starts without the history of the previous one, which
//! costs ~0.15% of output size on the benchmark set (2 MiB frames; zstd level 3 looks back 2 MiB
//! at most anyway).
//!
//! [`decode`] walks the frames without decoding them (frame and block headers give every
//! frame's length) and hands whole frames to a pool of workers, which decode each in one call
//! straight into an output buffer and pass them on in order ([`crate::blocks`]). The two
//! skippable frames make the stream self-terminating: a stream that began with the start
//! marker must end with the end marker, whose byte and frame counts must match; so a stream
//! cut exactly between two frames (which would otherwise decode cleanly) is an error, as a cut
//! anywhere else is. A stream with an unfinished frame at its end (what [`compress`] leaves
//! when the walk fails) fails in every decoder.
//!
//! Anything else — a frame without its size in its header or larger than an output buffer (an
//! archive made by another tool, or by voltool before), a dictionary, a damaged or cut frame
//! header — is decoded as before, from that point on, by zstd's streaming decoder, on the
//! dispatching thread, after every frame before it was passed on. A frame that fails to decode
//! in one call is decoded again as a stream in small steps, so the reader gets every byte before
//! the damaged spot and then the same error the streaming decoder gives: a damaged archive is
//! pinned to the same entry either way.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Condvar, Mutex, PoisonError};

use zstd::stream::raw::CParameter;

use crate::blocks::BlockSender;

/// Tar bytes in one frame (and the size of the buffers the decoded stream is handed on in).
pub const FRAME: usize = 2 << 20;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The skippable-frame magic number voltool's markers use (zstd reserves 0x184D2A50-5F).
const MARKER_MAGIC: u32 = 0x184D_2A5E;
const START: &[u8; 16] = b"voltool-frames/1";
const END: &[u8; 16] = b"voltool-end/1\0\0\0";
/// A skippable frame's payload read into memory at most (larger ones are skipped).
const SMALL_SKIPPABLE: u32 = 4096;
/// Compressed bytes a frame of `n` decoded bytes may take at most before it is left to the
/// streaming decoder (zstd never needs more than the input plus a few bytes per 128 KiB
/// block; this is far above that, and still bounded).
fn frame_cap(n: usize) -> usize {
    2 * n + (64 << 10)
}

/// Worker threads for [`compress`] and [`decode`]: one per CPU, at most 4.
#[must_use]
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).clamp(1, 4)
}

fn marker(payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + payload.len());
    m.extend_from_slice(&MARKER_MAGIC.to_le_bytes());
    m.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    m.extend_from_slice(payload);
    m
}

fn end_marker(bytes: u64, frames: u64) -> Vec<u8> {
    let mut p = END.to_vec();
    p.extend_from_slice(&bytes.to_le_bytes());
    p.extend_from_slice(&frames.to_le_bytes());
    marker(&p)
}

fn compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(CParameter::ChecksumFlag(true))?;
    c.set_parameter(CParameter::ContentSizeFlag(true))?;
    Ok(c)
}

/// One block of tar for [`compress`]: the buffer and how many of its bytes are tar.
pub(crate) type Block = (Vec<u8>, usize);

/// Compresses the blocks `next` returns (each at most [`FRAME`] bytes; `Ok(None)` once the
/// stream is complete, an error when it failed) into `out`, one frame per block, on `workers`
/// threads (1: on this one), in order; every block is given back to `recycle` once
/// compressed. Returns the tar bytes compressed.
///
/// On an error the stream is left unfinished: no end marker, and the 4 bytes that begin a
/// zstd frame, so that no decoder takes the frames written so far for a whole stream.
///
/// # Errors
/// `next`'s error, zstd's, or `out`'s.
pub(crate) fn compress<W: Write>(
    out: &mut W,
    level: i32,
    workers: usize,
    next: impl FnMut() -> io::Result<Option<Block>>,
    recycle: impl FnMut(Vec<u8>),
) -> io::Result<u64> {
    out.write_all(&marker(START))?;
    let done = if workers <= 1 {
        compress_here(out, level, next, recycle)
    } else {
        compress_pool(out, level, workers, next, recycle)
    };
    match done {
        Ok((bytes, frames)) => {
            out.write_all(&end_marker(bytes, frames))?;
            Ok(bytes)
        }
        Err(e) => {
            let _ = out.write_all(&ZSTD_MAGIC);
            Err(e)
        }
    }
}

fn compress_here<W: Write>(
    out: &mut W,
    level: i32,
    mut next: impl FnMut() -> io::Result<Option<Block>>,
    mut recycle: impl FnMut(Vec<u8>),
) -> io::Result<(u64, u64)> {
    let mut c = compressor(level)?;
    let mut dst = Vec::new();
    let (mut bytes, mut frames) = (0u64, 0u64);
    while let Some((buf, len)) = next()? {
        dst.clear();
        dst.reserve(zstd::zstd_safe::compress_bound(len));
        c.compress_to_buffer(&buf[..len], &mut dst)?;
        recycle(buf);
        out.write_all(&dst)?;
        bytes += len as u64;
        frames += 1;
    }
    Ok((bytes, frames))
}

/// A worker's job: the block, its length, and a buffer for the frame.
type CJob = (Vec<u8>, usize, Vec<u8>);
/// A worker's answer: the block back, and the frame.
type CDone = (Vec<u8>, io::Result<Vec<u8>>);

fn compress_pool<W: Write>(
    out: &mut W,
    level: i32,
    workers: usize,
    mut next: impl FnMut() -> io::Result<Option<Block>>,
    mut recycle: impl FnMut(Vec<u8>),
) -> io::Result<(u64, u64)> {
    std::thread::scope(|s| {
        // Block i goes to worker i % workers and comes back from it, so the frames are
        // written in order and at most `workers` blocks are being compressed at once.
        let mut lanes: Vec<(SyncSender<CJob>, Receiver<CDone>)> = Vec::new();
        for i in 0..workers {
            let (job_tx, jobs) = mpsc::sync_channel::<CJob>(0);
            let (done_tx, done) = mpsc::sync_channel::<CDone>(1);
            std::thread::Builder::new().name(format!("voltool-zstd-{i}")).spawn_scoped(s, move || {
                let mut c = compressor(level);
                for (buf, len, mut dst) in jobs {
                    let r = match &mut c {
                        Ok(c) => {
                            dst.clear();
                            dst.reserve(zstd::zstd_safe::compress_bound(len));
                            c.compress_to_buffer(&buf[..len], &mut dst).map(|_| dst)
                        }
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    if done_tx.send((buf, r)).is_err() {
                        break;
                    }
                }
            })?;
            lanes.push((job_tx, done));
        }
        let stopped = || io::Error::other("a compression worker stopped");
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut write_out = |lane: &(SyncSender<CJob>, Receiver<CDone>), spare: &mut Vec<Vec<u8>>| {
            let (buf, frame) = lane.1.recv().map_err(|_| stopped())?;
            recycle(buf);
            let frame = frame?;
            out.write_all(&frame)?;
            spare.push(frame);
            io::Result::Ok(())
        };
        let (mut bytes, mut frames) = (0u64, 0u64);
        let mut seq = 0usize;
        while let Some((buf, len)) = next()? {
            let lane = &lanes[seq % workers];
            if seq >= workers {
                write_out(lane, &mut spare)?;
            }
            lane.0.send((buf, len, spare.pop().unwrap_or_default())).map_err(|_| stopped())?;
            bytes += len as u64;
            frames += 1;
            seq += 1;
        }
        for k in seq.saturating_sub(workers)..seq {
            write_out(&lanes[k % workers], &mut spare)?;
        }
        Ok((bytes, frames))
    })
}

/// Whose turn it is to hand a decoded frame on (frames are numbered in stream order), or
/// `None` once decoding stopped (an error, or the reader went away).
struct Turn {
    next: Mutex<Option<u64>>,
    changed: Condvar,
}

impl Turn {
    fn new() -> Self {
        Self { next: Mutex::new(Some(0)), changed: Condvar::new() }
    }

    /// Waits until it is frame `seq`'s turn; false when decoding stopped.
    fn wait(&self, seq: u64) -> bool {
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
    fn pass(&self) {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = next.as_mut() {
            *n += 1;
        }
        self.changed.notify_all();
    }

    fn stop(&self) {
        *self.next.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.changed.notify_all();
    }

    fn stopped(&self) -> bool {
        self.next.lock().unwrap_or_else(PoisonError::into_inner).is_none()
    }
}

/// A whole frame for a decoding worker.
struct Job {
    seq: u64,
    frame: Vec<u8>,
    /// Its decoded size, from its header (at most the output's block size).
    size: usize,
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
                    crate::blocks::Forwarded::Failed(e2) => {
                        out.fail(e2);
                        forwarded = true;
                    }
                    crate::blocks::Forwarded::Gone => forwarded = true,
                    crate::blocks::Forwarded::End => {}
                }
            }
            if !forwarded {
                out.fail(e);
            }
            turn.stop();
        }
    }
}

/// Reads up to `n` more bytes of `r` onto `into`: true when all `n` came, false at the end of
/// the stream.
fn take(r: &mut impl BufRead, mut n: usize, into: &mut Vec<u8>) -> io::Result<bool> {
    while n > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        let k = buf.len().min(n);
        into.extend_from_slice(&buf[..k]);
        r.consume(k);
        n -= k;
    }
    Ok(true)
}

/// Skips `n` bytes of `r`: false when the stream ends first.
fn skip(r: &mut impl BufRead, mut n: u64) -> io::Result<bool> {
    while n > 0 {
        let avail = r.fill_buf()?.len();
        if avail == 0 {
            return Ok(false);
        }
        let k = usize::try_from(n).unwrap_or(usize::MAX).min(avail);
        r.consume(k);
        n -= k as u64;
    }
    Ok(true)
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x))
}

/// What the frame header at the start of `hdr` (magic and descriptor byte read) says: its
/// whole length, and its decoded size when the header states it and the frame can be decoded
/// in one call (no dictionary, reserved bit clear).
fn header_shape(fhd: u8) -> (usize, Option<(usize, usize)>) {
    let single = fhd & 0x20 != 0;
    let window = usize::from(!single);
    let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs = match fhd >> 6 {
        0 => usize::from(single),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let len = 5 + window + dict + fcs;
    // (offset, length) of the content size field, when the frame is one to decode in a call.
    let plain = dict == 0 && fhd & 0x08 == 0 && fcs > 0;
    (len, plain.then_some((5 + window, fcs)))
}

/// Whether the stream began with voltool's start marker, and what its frames added up to.
struct Walk {
    marked: bool,
    bytes: u64,
    frames: u64,
    seq: u64,
}

/// How the frame walk ended.
enum Stop {
    /// The stream ended at a frame boundary.
    End,
    /// The end marker, its counts right, and nothing after it.
    Finished,
    /// Something the workers cannot take: decode from here as a stream (these bytes first).
    Stream(Vec<u8>),
    /// A marked stream is wrong at its end (message).
    Bad(String),
    /// Decoding stopped (an error was passed on, or the reader went away).
    Stopped,
}

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

fn walk_frames(
    raw: &mut impl BufRead,
    max: usize,
    turn: &Turn,
    lanes: &[SyncSender<Job>],
    spare: &Receiver<Vec<u8>>,
    walk: &mut Walk,
) -> Stop {
    loop {
        if turn.stopped() {
            return Stop::Stopped;
        }
        let mut frame = spare.try_recv().unwrap_or_default();
        frame.clear();
        match take(raw, 4, &mut frame) {
            Ok(true) => {}
            Ok(false) if frame.is_empty() => return Stop::End,
            Ok(false) | Err(_) => return Stop::Stream(frame),
        }
        let magic = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            match skippable(raw, magic, frame, walk) {
                Ok(None) => continue,
                Ok(Some(stop)) => return stop,
                Err(prefix) => return Stop::Stream(prefix),
            }
        }
        if frame != ZSTD_MAGIC {
            return Stop::Stream(frame);
        }
        match take(raw, 1, &mut frame) {
            Ok(true) => {}
            _ => return Stop::Stream(frame),
        }
        let (len, size_field) = header_shape(frame[4]);
        match take(raw, len - 5, &mut frame) {
            Ok(true) => {}
            _ => return Stop::Stream(frame),
        }
        let size = size_field.map(|(at, n)| le(&frame[at..at + n]) + if n == 2 { 256 } else { 0 });
        let Some(size) = size.and_then(|s| usize::try_from(s).ok()).filter(|&s| s <= max) else {
            return Stop::Stream(frame);
        };
        let checksum = frame[4] & 0x04 != 0;
        // The blocks: a 3-byte header each (last flag, type, size), then the block's bytes (one
        // for an RLE block).
        loop {
            let at = frame.len();
            match take(raw, 3, &mut frame) {
                Ok(true) => {}
                _ => return Stop::Stream(frame),
            }
            let h = le(&frame[at..at + 3]);
            let (last, kind, n) = (h & 1 == 1, (h >> 1) & 3, h >> 3);
            let body = match kind {
                0 | 2 => n,
                1 => 1,
                _ => return Stop::Stream(frame),
            };
            let body = usize::try_from(body).unwrap_or(usize::MAX);
            if frame.len().saturating_add(body) > frame_cap(size) {
                return Stop::Stream(frame);
            }
            match take(raw, body, &mut frame) {
                Ok(true) => {}
                _ => return Stop::Stream(frame),
            }
            if last {
                break;
            }
        }
        if checksum {
            match take(raw, 4, &mut frame) {
                Ok(true) => {}
                _ => return Stop::Stream(frame),
            }
        }
        let seq = walk.seq;
        let lane = &lanes[usize::try_from(seq % lanes.len() as u64).unwrap_or(0)];
        if lane.send(Job { seq, frame, size }).is_err() {
            return Stop::Stopped;
        }
        walk.seq += 1;
        walk.frames += 1;
        walk.bytes += size as u64;
    }
}

/// A skippable frame whose magic (in `frame`) was read: skipped, or taken as voltool's start
/// or end marker. `Ok(None)`: go on with the next frame; `Err(bytes)`: the stream ends inside
/// it (the streaming decoder reports that).
fn skippable(raw: &mut impl BufRead, magic: u32, mut frame: Vec<u8>, walk: &mut Walk) -> Result<Option<Stop>, Vec<u8>> {
    if !matches!(take(raw, 4, &mut frame), Ok(true)) {
        return Err(frame);
    }
    let n = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if magic != MARKER_MAGIC || n > SMALL_SKIPPABLE {
        return match skip(raw, u64::from(n)) {
            Ok(true) => Ok(None),
            _ => Err(frame),
        };
    }
    let at = frame.len();
    if !matches!(take(raw, n as usize, &mut frame), Ok(true)) {
        return Err(frame);
    }
    let payload = &frame[at..];
    if payload == START && walk.seq == 0 && walk.frames == 0 {
        walk.marked = true;
    } else if walk.marked && payload.len() == 32 && &payload[..16] == END {
        let (bytes, frames) = (le(&payload[16..24]), le(&payload[24..32]));
        if (bytes, frames) != (walk.bytes, walk.frames) {
            return Ok(Some(Stop::Bad(format!(
                "voltool's end marker counts {bytes} bytes in {frames} zstd frames, the stream held {} in {}",
                walk.bytes, walk.frames
            ))));
        }
        return Ok(Some(match raw.fill_buf() {
            Ok([]) => Stop::Finished,
            Ok(_) => Stop::Bad("data after voltool's end marker in the zstd stream".into()),
            Err(e) => Stop::Bad(e.to_string()),
        }));
    }
    Ok(None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        // Half text-like (compresses), half noise (does not).
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 4096) % 2 == 0 { b"log line: all is well\n"[i % 22] } else { x as u8 }
            })
            .collect()
    }

    fn compress_all(input: &[u8], block: usize, workers: usize) -> Vec<u8> {
        let mut chunks = input.chunks(block).map(|c| (c.to_vec(), c.len()));
        let mut out = Vec::new();
        let n = compress(&mut out, 3, workers, || Ok(chunks.next()), drop).unwrap();
        assert_eq!(n, input.len() as u64);
        out
    }

    /// Decodes through [`decode`] with output buffers of `size`; the bytes read and how the
    /// stream ended.
    fn decode_all(z: Vec<u8>, size: usize, workers: usize, step: usize) -> (Vec<u8>, io::Result<()>) {
        let (got, r, _) = decode_stats(z, size, workers, step);
        (got, r)
    }

    fn decode_stats(z: Vec<u8>, size: usize, workers: usize, step: usize) -> (Vec<u8>, io::Result<()>, Decoded) {
        let (tx, mut rx) = blocks::channel(workers + 2, size);
        let t = std::thread::spawn(move || decode(io::Cursor::new(z), &tx, workers, step));
        let mut got = Vec::new();
        let r = rx.read_to_end(&mut got).map(|_| ());
        drop(rx);
        (got, r, t.join().unwrap())
    }

    /// Where each frame of `z` starts (its magic number), found by walking the headers.
    fn frame_starts(z: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut starts = Vec::new();
        while at < z.len() {
            if z[at..].starts_with(&ZSTD_MAGIC) {
                starts.push(at);
                let (len, _) = header_shape(z[at + 4]);
                at += len;
                loop {
                    let h = le(&z[at..at + 3]);
                    at += 3 + if (h >> 1) & 3 == 1 { 1 } else { (h >> 3) as usize };
                    if h & 1 == 1 {
                        break;
                    }
                }
                at += 4;
            } else {
                at += 8 + le(&z[at + 4..at + 8]) as usize;
            }
        }
        starts
    }

    #[test]
    fn frames_round_trip_through_the_pool_and_through_plain_zstd() {
        for (n, workers) in
            [(0usize, 2usize), (1, 1), (FRAME - 1, 2), (5 * FRAME + 77, 2), (3 * FRAME, 3), (4 * FRAME + 5, 1)]
        {
            let input = data(n, n as u64);
            let z = compress_all(&input, FRAME, workers);
            assert_eq!(zstd::decode_all(&z[..]).unwrap(), input, "plain zstd, {n} bytes");
            assert_eq!(frame_starts(&z).len(), n.div_ceil(FRAME));
            for dw in [1, 2, 4] {
                let (got, r, how) = decode_stats(z.clone(), FRAME, dw, 8192);
                r.unwrap();
                assert!(got == input, "{n} bytes, {workers} compressors, {dw} decoders");
                let frames = n.div_ceil(FRAME) as u64;
                assert_eq!(how, Decoded { frames, streamed: false, marked: true }, "all by the workers");
            }
        }
    }

    #[test]
    fn streams_of_other_tools_decode_as_before() {
        let input = data(3 * FRAME + 11, 7);
        // One frame larger than a buffer (zstd's own streaming encoder: no size in the header).
        let single = zstd::encode_all(&input[..], 3).unwrap();
        // Frames with their sizes, no markers, then a streaming one, with a skippable frame.
        let mut mixed = Vec::new();
        for c in input.chunks(FRAME / 2) {
            mixed.extend(zstd::bulk::compress(c, 1).unwrap());
        }
        mixed.extend(marker(b"something else"));
        mixed.extend(zstd::encode_all(&input[..1000], 1).unwrap());
        let mut want_mixed = input.clone();
        want_mixed.extend_from_slice(&input[..1000]);
        let parts = input.len().div_ceil(FRAME / 2) as u64;
        for (z, want, frames) in [(single, input.clone(), 0), (mixed, want_mixed, parts)] {
            let (got, r, how) = decode_stats(z, FRAME, 2, 8192);
            r.unwrap();
            assert!(got == want);
            assert_eq!(how, Decoded { frames, streamed: true, marked: false });
        }
        let (got, r) = decode_all(Vec::new(), FRAME, 2, 8192);
        assert!(r.is_ok() && got.is_empty(), "an empty stream is an empty stream");
    }

    #[test]
    fn a_damaged_frame_gives_every_byte_before_the_damage_then_the_streaming_error() {
        let input = data(4 * FRAME, 3);
        let z = compress_all(&input, FRAME, 2);
        // Damage the body of a compressed block in the middle of the third frame (its
        // headers intact: the frame walk passes it to a worker, whose decoding fails).
        let mut bad = z.clone();
        let third = frame_starts(&z)[2];
        let mut at = third + header_shape(z[third + 4]).0;
        let spot = loop {
            let h = le(&z[at..at + 3]);
            let n = (h >> 3) as usize;
            if (h >> 1) & 3 == 2 && at > third + 200_000 && n > 1000 {
                break at + 3 + n / 2;
            }
            at += 3 + if (h >> 1) & 3 == 1 { 1 } else { n };
        };
        for b in &mut bad[spot..spot + 64] {
            *b ^= 0x5A;
        }
        let (got, r, how) = decode_stats(bad.clone(), FRAME, 2, 8192);
        let e = r.unwrap_err();
        assert!(!how.streamed, "the frame walk took the damaged frame whole");
        // What plain streaming zstd decodes before failing, in the same steps.
        let mut plain = zstd::stream::read::Decoder::new(&bad[..]).unwrap();
        let mut want = Vec::new();
        let mut buf = [0u8; 8192];
        let plain_err = loop {
            match plain.read(&mut buf) {
                Ok(0) => panic!("plain zstd decoded the damaged stream"),
                Ok(k) => want.extend_from_slice(&buf[..k]),
                Err(e) => break e,
            }
        };
        assert!(got.len() >= 2 * FRAME, "the first two frames came through: {}", got.len());
        assert!(got[..2 * FRAME] == input[..2 * FRAME]);
        assert_eq!(got.len(), want.len(), "as far as the streaming decoder gets ({e} / {plain_err})");
        assert!(got == want);
        assert_eq!(e.to_string(), plain_err.to_string());
    }

    #[test]
    fn a_stream_cut_anywhere_is_an_error() {
        let input = data(3 * FRAME + 5, 9);
        let z = compress_all(&input, FRAME, 2);
        let mut frame_starts = frame_starts(&z);
        let end_marker_at = z.len() - 40;
        frame_starts.push(end_marker_at);
        // At every frame boundary (where each frame before is whole), inside frames, inside
        // the markers, and one byte short.
        let mut cuts: Vec<usize> = frame_starts.clone();
        cuts.extend([0, 3, 10, 24, 30, frame_starts[1] - 2, frame_starts[1] + 100, z.len() - 1, z.len() - 20]);
        for cut in cuts {
            let (got, r) = decode_all(z[..cut].to_vec(), FRAME, 2, 8192);
            if cut == 0 {
                assert!(r.is_ok() && got.is_empty());
                continue;
            }
            assert!(r.is_err(), "cut at {cut} of {} decoded cleanly ({} bytes)", z.len(), got.len());
            assert!(got == input[..got.len()]);
        }
        // The start marker alone, then nothing: cut short too.
        let (_, r) = decode_all(z[..24].to_vec(), FRAME, 2, 8192);
        assert!(r.unwrap_err().to_string().contains("end marker"));
    }

    #[test]
    fn wrong_counts_and_data_after_the_end_marker_are_refused() {
        let input = data(2 * FRAME, 1);
        let z = compress_all(&input, FRAME, 2);
        let mut counted = z.clone();
        let n = counted.len();
        counted[n - 16] ^= 1; // the byte count
        let (_, r) = decode_all(counted, FRAME, 2, 8192);
        assert!(r.unwrap_err().to_string().contains("end marker counts"));
        let mut extra = z.clone();
        extra.extend(zstd::bulk::compress(b"more", 1).unwrap());
        let (got, r) = decode_all(extra, FRAME, 2, 8192);
        assert!(r.unwrap_err().to_string().contains("after voltool's end marker"));
        assert!(got == input);
    }

    #[test]
    fn an_unfinished_stream_fails_in_plain_zstd_too() {
        let input = data(3 * FRAME, 5);
        let mut chunks = input.chunks(FRAME).map(|c| (c.to_vec(), c.len()));
        let mut k = 0;
        let mut out = Vec::new();
        let r = compress(
            &mut out,
            3,
            2,
            || {
                k += 1;
                if k == 3 { Err(io::Error::other("the walk failed")) } else { Ok(chunks.next()) }
            },
            drop,
        );
        assert!(r.unwrap_err().to_string().contains("walk failed"));
        assert!(zstd::decode_all(&out[..]).is_err(), "plain zstd must not take it for a whole stream");
        let (got, r) = decode_all(out, FRAME, 2, 8192);
        assert!(r.is_err());
        assert!(got == input[..got.len()]);
    }

    #[test]
    fn a_reader_that_goes_away_stops_the_workers() {
        let input = data(16 * FRAME, 2);
        let z = compress_all(&input, FRAME, 2);
        let (tx, mut rx) = blocks::channel(4, FRAME);
        let t = std::thread::spawn(move || decode(io::Cursor::new(z), &tx, 2, 8192));
        let mut first = vec![0u8; 3 * FRAME];
        rx.read_exact(&mut first).unwrap();
        drop(rx);
        t.join().unwrap();
        assert!(first == input[..3 * FRAME]);
    }
}
