//! The writing side of [`super`]: the tar stream's blocks compressed one frame each, on a pool
//! of workers that take blocks from one queue (a bounded number at once; the frames are
//! written in stream order), between voltool's start and end markers.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use zstd::stream::raw::CParameter;

use super::{START, ZSTD_MAGIC, end_marker, marker};

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
/// compressed. Returns the tar bytes compressed and where each frame starts in the stream
/// (with one more offset: where the last one ends), for reading single entries later.
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
) -> io::Result<(u64, Vec<u64>)> {
    let start = marker(START);
    out.write_all(&start)?;
    let mut offsets = vec![start.len() as u64];
    let done = if workers <= 1 {
        compress_here(out, level, next, recycle, &mut offsets)
    } else {
        compress_pool(out, level, workers, next, recycle, &mut offsets)
    };
    match done {
        Ok((bytes, frames)) => {
            out.write_all(&end_marker(bytes, frames))?;
            Ok((bytes, offsets))
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
    offsets: &mut Vec<u64>,
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
        offsets.push(offsets.last().copied().unwrap_or(0) + dst.len() as u64);
        bytes += len as u64;
        frames += 1;
    }
    Ok((bytes, frames))
}

/// A worker's job: its place in the stream, the block, its length, and a buffer for the frame.
type CJob = (usize, Vec<u8>, usize, Vec<u8>);
/// A worker's answer: the job's place, the block back, and the frame.
type CDone = (usize, Vec<u8>, io::Result<Vec<u8>>);

/// Blocks handed to the pool and not yet written out, per worker: more than one each, so a
/// worker that finishes a quick block (random data) takes the next one at once instead of
/// waiting for a slow one (text) on another worker to be written first.
const QUEUED_PER_WORKER: usize = 2;

fn compress_pool<W: Write>(
    out: &mut W,
    level: i32,
    workers: usize,
    mut next: impl FnMut() -> io::Result<Option<Block>>,
    mut recycle: impl FnMut(Vec<u8>),
    offsets: &mut Vec<u64>,
) -> io::Result<(u64, u64)> {
    std::thread::scope(|s| {
        // One queue all workers take from; the frames come back in any order and are written
        // in stream order from `pending`. At most `cap` blocks are between `next` and `out`.
        let cap = workers * QUEUED_PER_WORKER;
        let (job_tx, jobs) = mpsc::sync_channel::<CJob>(cap);
        let jobs = Arc::new(Mutex::new(jobs));
        let (done_tx, done) = mpsc::channel::<CDone>();
        for i in 0..workers {
            let (jobs, done_tx) = (Arc::clone(&jobs), done_tx.clone());
            std::thread::Builder::new().name(format!("voltool-zstd-{i}")).spawn_scoped(s, move || {
                let mut c = compressor(level);
                loop {
                    // A poisoned lock means another worker panicked: stop too.
                    let job = match jobs.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => break,
                    };
                    let Ok((seq, buf, len, mut dst)) = job else { break };
                    let r = match &mut c {
                        Ok(c) => {
                            dst.clear();
                            dst.reserve(zstd::zstd_safe::compress_bound(len));
                            c.compress_to_buffer(&buf[..len], &mut dst).map(|_| dst)
                        }
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    if done_tx.send((seq, buf, r)).is_err() {
                        break;
                    }
                }
            })?;
        }
        drop(done_tx);
        let stopped = || io::Error::other("a compression worker stopped");
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut pending: BTreeMap<usize, io::Result<Vec<u8>>> = BTreeMap::new();
        let mut written = 0usize;
        // Waits for one frame, then writes every frame that is next in the stream.
        let mut take_one = |pending: &mut BTreeMap<usize, io::Result<Vec<u8>>>, spare: &mut Vec<Vec<u8>>| {
            let (seq, buf, frame) = done.recv().map_err(|_| stopped())?;
            recycle(buf);
            pending.insert(seq, frame);
            while let Some(frame) = pending.remove(&written) {
                let frame = frame?;
                out.write_all(&frame)?;
                offsets.push(offsets.last().copied().unwrap_or(0) + frame.len() as u64);
                spare.push(frame);
                written += 1;
            }
            io::Result::Ok(written)
        };
        let (mut bytes, mut frames) = (0u64, 0u64);
        let mut seq = 0usize;
        let mut out_so_far = 0usize;
        while let Some((buf, len)) = next()? {
            while seq - out_so_far >= cap {
                out_so_far = take_one(&mut pending, &mut spare)?;
            }
            job_tx.send((seq, buf, len, spare.pop().unwrap_or_default())).map_err(|_| stopped())?;
            bytes += len as u64;
            frames += 1;
            seq += 1;
        }
        drop(job_tx);
        while out_so_far < seq {
            out_so_far = take_one(&mut pending, &mut spare)?;
        }
        Ok((bytes, frames))
    })
}
