//! Finding the frames of a zstd stream from their headers, without decoding them: a frame's
//! header and block headers give its whole length, so it can be read whole and handed to a
//! worker. voltool's start and end markers (skippable frames) are checked here; anything a
//! worker cannot take ends the walk with the bytes read so far, for the streaming decoder.

use std::io::{self, BufRead};
use std::sync::mpsc::{Receiver, SyncSender};

use super::decode::{Job, Turn};
use super::{END, MARKER_MAGIC, SMALL_SKIPPABLE, START, ZSTD_MAGIC};

/// Compressed bytes a frame of `n` decoded bytes may take at most before it is left to the
/// streaming decoder (zstd never needs more than the input plus a few bytes per 128 KiB
/// block; this is far above that, and still bounded).
fn frame_cap(n: usize) -> usize {
    2 * n + (64 << 10)
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

pub(super) fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x))
}

/// What the frame header at the start of `hdr` (magic and descriptor byte read) says: its
/// whole length, and its decoded size when the header states it and the frame can be decoded
/// in one call (no dictionary, reserved bit clear).
pub(super) fn header_shape(fhd: u8) -> (usize, Option<(usize, usize)>) {
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
pub(super) struct Walk {
    pub(super) marked: bool,
    pub(super) bytes: u64,
    pub(super) frames: u64,
    pub(super) seq: u64,
}

/// How the frame walk ended.
pub(super) enum Stop {
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

/// Reads the frames of `raw` one after another and hands each whole one, with its decoded size
/// (at most `max`), to worker `seq % lanes.len()`, reusing the frame buffers that come back
/// through `spare`; counts them in `walk`. Returns how the walk ended.
pub(super) fn walk_frames(
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
        if !take_blocks(raw, &mut frame, size) {
            return Stop::Stream(frame);
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

/// Reads the rest of a frame whose header is in `frame`: its blocks (a 3-byte header each:
/// last flag, type, size; then the block's bytes, one for an RLE block) and its checksum.
/// False when the stream ends first, a block is reserved, or the frame grows past what its
/// decoded `size` allows ([`frame_cap`]): the streaming decoder takes it from there.
fn take_blocks(raw: &mut impl BufRead, frame: &mut Vec<u8>, size: usize) -> bool {
    let checksum = frame[4] & 0x04 != 0;
    loop {
        let at = frame.len();
        if !matches!(take(raw, 3, frame), Ok(true)) {
            return false;
        }
        let h = le(&frame[at..at + 3]);
        let (last, kind, n) = (h & 1 == 1, (h >> 1) & 3, h >> 3);
        let body = match kind {
            0 | 2 => n,
            1 => 1,
            _ => return false,
        };
        let body = usize::try_from(body).unwrap_or(usize::MAX);
        if frame.len().saturating_add(body) > frame_cap(size) {
            return false;
        }
        if !matches!(take(raw, body, frame), Ok(true)) {
            return false;
        }
        if last {
            break;
        }
    }
    !checksum || matches!(take(raw, 4, frame), Ok(true))
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
