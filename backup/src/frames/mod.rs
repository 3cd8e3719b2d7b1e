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
//!
//! ## Layout
//! `compress` (the writing side: a pool of compressors, frames written in order), `decode`
//! (the reading side: a pool of decoders taking turns to hand their frames on) and `walk`
//! (finding the frames in a stream from their headers, without decoding them).

mod compress;
mod decode;
mod walk;

#[cfg(test)]
mod tests;

pub(crate) use compress::compress;
pub use decode::{Decoded, decode};

/// Tar bytes in one frame (and the size of the buffers the decoded stream is handed on in).
pub const FRAME: usize = 2 << 20;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The skippable-frame magic number voltool's markers use (zstd reserves 0x184D2A50-5F).
const MARKER_MAGIC: u32 = 0x184D_2A5E;
const START: &[u8; 16] = b"voltool-frames/1";
const END: &[u8; 16] = b"voltool-end/1\0\0\0";
/// A skippable frame's payload read into memory at most (larger ones are skipped).
const SMALL_SKIPPABLE: u32 = 4096;

/// Worker threads for [`compress`] and [`decode`]: one per CPU, at most 4.
#[must_use]
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).clamp(1, 4)
}

/// A skippable frame of voltool's holding `payload`.
fn marker(payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + payload.len());
    m.extend_from_slice(&MARKER_MAGIC.to_le_bytes());
    m.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    m.extend_from_slice(payload);
    m
}

/// voltool's end marker: the tar bytes and frames the stream held.
fn end_marker(bytes: u64, frames: u64) -> Vec<u8> {
    let mut p = END.to_vec();
    p.extend_from_slice(&bytes.to_le_bytes());
    p.extend_from_slice(&frames.to_le_bytes());
    marker(&p)
}
