//! The threads around extraction: decompression ahead of the tar parser; writing, sha256 and
//! metadata behind it.
//!
//! Parsing, the path checks and creating stay on the extraction thread, in archive order (each
//! check depends on what earlier entries made); what can move off it is the work on either
//! side. GNU tar's usual pipeline
//! `zstd -d | tar -x` splits the same way, decoding in one process and writing in another.
//!
//! - [`spawn_reader`] reads the archive ahead of the decoder on its own thread, and hashes it
//!   behind the decoder on another when asked (the archive's sha256, which a manifest
//!   records);
//! - [`spawn_decoder`] recognises and decompresses the stream on its own thread (zstd frames
//!   on one worker per CPU, [`voltool_backup::frames`]);
//! - both hand their bytes on in [`CHUNK`]-sized buffers through bounded channels
//!   ([`voltool_backup::blocks`]): at most [`RAW_BUFFERS`] and [`DECODE_BUFFERS`] exist,
//!   recycled, so memory stays bounded however large the archive is and each side waits when
//!   the next falls behind (never buffering the stream);
//! - [`FileWriter`] takes each file's bytes in batches of up to [`CHUNK`] (many small files
//!   share one batch) and, on its own thread, writes them to the file the extraction created,
//!   hashes them when asked, then applies owner, mode, xattrs and mtime through the descriptor
//!   and closes it; again at most [`FILE_BUFFERS`](files::FILE_BUFFERS) buffers, recycled.
//!   The extraction thread is left with parsing, the path checks and creating (the part whose
//!   order matters for safety);
//! - with write-behind ([`WriteBehind`]), a last thread has the kernel write the files to
//!   disk while the extraction goes on: a `syncfs(2)` after every
//!   [`WRITE_BEHIND`](files::WRITE_BEHIND) bytes the file thread wrote, so a durable
//!   extraction's closing sync finds little left to do.
//!
//! Every failure is forwarded in order: a read or decoder error reaches the tar parser as the
//! same `io::Error` at the same point of the stream, and a thread that disappears without
//! saying it finished is an error, never a clean end (a clean end at a header boundary would
//! look like the end of the archive to the parser).
//!
//! This file holds the threads ahead of the parser (reading, hashing, decoding); the `files`
//! module the ones behind it (writing, finishing, write-behind).

mod files;

use std::io::{self, Read};
use std::thread::JoinHandle;

use voltool_backup::blocks::{self, BlockReader};

use crate::error::RestoreError;
use crate::extract::{Compression, decoder, detect};

pub(crate) use files::{CopyError, FileMeta, FileWriter, WriteBehind};

/// The size of one buffer handed between threads.
pub(crate) const CHUNK: usize = 1 << 20;
/// Archive buffers read ahead of the decoder.
const RAW_BUFFERS: usize = 4;
/// Decoded buffers in existence at once (in the channel, being filled, being parsed).
const DECODE_BUFFERS: usize = 4;

/// The archive's reading (and hashing) threads, see [`spawn_reader`].
pub(crate) struct Reading {
    hasher: Option<JoinHandle<(u64, [u8; 32])>>,
}

impl Reading {
    /// The archive's size and sha256 (with `hash`), once the reader of the stream is dropped:
    /// all of it when the stream was read to its end.
    ///
    /// # Errors
    /// [`RestoreError::Read`] when the hashing thread failed.
    pub(crate) fn digest(self) -> Result<Option<(u64, [u8; 32])>, RestoreError> {
        self.hasher
            .map(|h| h.join().map_err(|_| RestoreError::Read("the archive's hashing thread failed".into())))
            .transpose()
    }
}

/// Starts the thread that reads `input` ahead of the decoder and, with `hash`, one that hashes
/// every byte behind the decoder (the archive's sha256, checked against a manifest instead of
/// every file's): the hash trails the decoding instead of holding it up, so the stretches where
/// reading is the slowest step (incompressible data) are not also slowed by the hash.
///
/// # Errors
/// [`RestoreError::Thread`] when a thread cannot start.
pub(crate) fn spawn_reader(
    mut input: impl Read + Send + 'static,
    hash: bool,
) -> Result<(Reading, BlockReader), RestoreError> {
    let thread_err = |what| move |e| RestoreError::Thread { what, source: e };
    let (tx, rx, hasher) = if hash {
        let (tx, rx, h) = blocks::hashed_channel(RAW_BUFFERS, CHUNK).map_err(thread_err("archive hasher"))?;
        (tx, rx, Some(h))
    } else {
        let (tx, rx) = blocks::channel(RAW_BUFFERS, CHUNK);
        (tx, rx, None)
    };
    std::thread::Builder::new()
        .name("restore-read".into())
        .spawn(move || {
            tx.pump(&mut input, CHUNK);
        })
        .map_err(thread_err("reader"))?;
    Ok((Reading { hasher }, rx))
}

/// Recognises the stream `raw` by its first bytes and returns the compression and a reader of
/// the tar stream inside, decompressed on a thread of its own (a plain tar is `raw` itself).
///
/// # Errors
/// [`RestoreError::Format`] for an empty or unknown stream, [`RestoreError::Read`] when
/// reading it fails, [`RestoreError::Thread`] when the thread cannot start.
pub(crate) fn spawn_decoder(mut raw: BlockReader) -> Result<(Compression, BlockReader), RestoreError> {
    let kind = detect(raw.fill().map_err(|e| RestoreError::Read(e.to_string()))?)?;
    if kind == Compression::None {
        return Ok((kind, raw));
    }
    let thread = std::thread::Builder::new().name("restore-decode".into());
    let spawned = if kind == Compression::Zstd {
        // Frames decoded on one worker per CPU (voltool's archives; others as a stream).
        let workers = voltool_backup::frames::default_workers();
        let (tx, rx) = blocks::channel(workers + 2, voltool_backup::frames::FRAME);
        thread.spawn(move || voltool_backup::frames::decode(raw, &tx, workers, CHUNK)).map(|_| rx)
    } else {
        let (tx, rx) = blocks::channel(DECODE_BUFFERS, CHUNK);
        thread
            .spawn(move || match decoder(kind, raw) {
                Ok(mut r) => {
                    tx.pump(&mut r, CHUNK);
                }
                Err(e) => tx.fail(io::Error::other(e.to_string())),
            })
            .map(|_| rx)
    };
    let rx = spawned.map_err(|e| RestoreError::Thread { what: "decoder", source: e })?;
    Ok((kind, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    use sha2::{Digest, Sha256};

    fn raw_reader(bytes: Vec<u8>, hash: bool) -> (Reading, BlockReader) {
        spawn_reader(std::io::Cursor::new(bytes), hash).unwrap()
    }

    #[test]
    fn decoder_hands_over_the_whole_stream_and_reports_the_kind_and_the_archive_digest() {
        let data: Vec<u8> = (0..5 * CHUNK + 123).map(|i| (i % 253) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f", &data[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let z = zstd::encode_all(&tar[..], 3).unwrap();
        let want: [u8; 32] = Sha256::digest(&z).into();
        let (reader, raw) = raw_reader(z.clone(), true);
        let (kind, mut r) = spawn_decoder(raw).unwrap();
        assert_eq!(kind, Compression::Zstd);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, tar);
        drop(r);
        assert_eq!(reader.digest().unwrap(), Some((z.len() as u64, want)));
        // A plain tar passes through undecoded; no digest unless asked.
        let (reader, raw) = raw_reader(tar.clone(), false);
        let (kind, mut r) = spawn_decoder(raw).unwrap();
        assert_eq!(kind, Compression::None);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, tar);
        assert!(reader.digest().unwrap().is_none());
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_an_end() {
        let tar: Vec<u8> = vec![7u8; 3 * CHUNK];
        let mut z = zstd::encode_all(&tar[..], 3).unwrap();
        z.truncate(z.len() - 10);
        // Not a tar at all, but the magic says zstd: decoding fails at the cut.
        let (_, raw) = raw_reader(z, false);
        let (_, mut r) = spawn_decoder(raw).unwrap();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(r.read(&mut [0u8; 10]).is_err(), "the failure repeats: {e}");
    }

    #[test]
    fn empty_and_unknown_streams_are_refused_by_their_first_bytes() {
        let (_, raw) = raw_reader(Vec::new(), false);
        assert!(spawn_decoder(raw).err().unwrap().to_string().contains("empty"));
        let (_, raw) = raw_reader(b"hello, this is not an archive".to_vec(), false);
        assert!(spawn_decoder(raw).err().unwrap().to_string().contains("unknown first bytes"));
    }
}
