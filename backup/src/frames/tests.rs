//! Round trips through the pool and through plain zstd, other tools' streams, damaged, cut and
//! unfinished streams, and a reader that goes away.

use std::io::{self, Read};

use super::walk::{header_shape, le};
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
    let (n, _) = compress(&mut out, 3, workers, || Ok(chunks.next()), drop).unwrap();
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
