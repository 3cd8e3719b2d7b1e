//! # voltool-migrate
//!
//! ## Overview
//! Moving a volume between hosts (SPEC §4). `voltool migrate VOL [USER@]HOST[:NEW]` runs the
//! system `ssh` and starts `voltool receive NEW` on the remote; both CLIs only pipe bytes
//! between their daemon and ssh. This crate holds what both ends agree on:
//!
//! 1. **Handshake** (one JSON line each way, before any data): the sender's [`Offer`] (volume
//!    name, options without secrets, the secret names the volume needs); the receiver answers
//!    with a [`Reply`] `ready` or an error (a missing secret, an existing volume with data),
//!    so nothing moves when the remote cannot take the volume.
//! 2. **Frames** ([`FrameWriter`], [`FrameReader`]): the sender's daemon writes the volume's
//!    zstd tar as `D` frames and, after the last byte, the manifest (every file's sha256) as
//!    a [`Trailer`]: a `Z` frame (the JSON, zstd-compressed: a 100,000-file manifest is
//!    ~28 MB of JSON, 3% of the wire otherwise) or, from protocol 1 senders, an `M` frame (the
//!    JSON as is); or an `E` frame with the reason if archiving failed. The receiving daemon
//!    extracts the `D` stream into staging, reads the manifest, checks every file against it
//!    and only then swaps the data in; a stream that ends without its `M` frame (ssh cut,
//!    sender killed) is an error and the half-received volume is removed.
//! 3. **Result** (one JSON line back): the receiver's [`Reply`] with what it verified; the
//!    sender reports success only on `ok`.
//!
//! Frame: one type byte, a 4-byte big-endian length, the payload. Data frames hold at most
//! [`MAX_FRAME`] bytes.
//!
//! ## Limitations
//! This crate only frames bytes: it has no codec, so the `Z` payload is compressed and
//! decompressed by the daemon (which links zstd for its archives anyway).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The protocol version in [`Offer`]. 2: the manifest travels compressed (`Z` frame).
pub const PROTOCOL: u32 = 2;
/// The oldest sender protocol a receiver of this version still reads (1: `M` frames).
pub const OLDEST_PROTOCOL: u32 = 1;
/// The largest manifest a receiver takes (its frame payload, and decompressed).
pub const MAX_MANIFEST: usize = 1 << 30;
/// The largest payload of one frame.
pub const MAX_FRAME: usize = 1 << 20;

/// The sender's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub protocol: u32,
    pub volume: String,
    /// The volume's options (never secret values).
    pub options: BTreeMap<String, String>,
    /// Names of secrets the options refer to; the receiver must have them.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// The receiver's answers: first `ready` (or `error`), at the end `ok` (or `error`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// The manifest after the data, as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trailer {
    /// The manifest JSON as is (`M` frame; protocol 1).
    Json(Vec<u8>),
    /// The manifest JSON, zstd-compressed (`Z` frame; protocol 2).
    ZstdJson(Vec<u8>),
}

/// zstd level for the manifest: hex digests and paths compress about 2:1 at any level, and
/// level 3 is fast enough (~0.1 s for 100,000 entries) not to delay the end of the stream.
const MANIFEST_LEVEL: i32 = 3;

impl Trailer {
    /// The manifest JSON, compressed for a `Z` frame.
    ///
    /// # Errors
    /// [`FrameError::Manifest`] when zstd fails (out of memory).
    pub fn compressed(json: &[u8]) -> Result<Self, FrameError> {
        zstd::bulk::compress(json, MANIFEST_LEVEL)
            .map(Trailer::ZstdJson)
            .map_err(|e| FrameError::Manifest(format!("compressing it: {e}")))
    }

    /// The manifest JSON, decompressing a `Z` trailer; refuses more than [`MAX_MANIFEST`]
    /// bytes of JSON (the payload comes from the network: a small frame must not expand into
    /// all of memory).
    ///
    /// # Errors
    /// [`FrameError::Manifest`] for a corrupt or truncated payload, or one over the limit.
    pub fn into_json(self) -> Result<Vec<u8>, FrameError> {
        Self::json_within(self, MAX_MANIFEST)
    }

    /// The manifest JSON as a stream, decompressed as it is read and ending with an error
    /// past [`MAX_MANIFEST`] bytes: a parser reading it (`Manifest::from_reader`) holds the
    /// compressed payload and what it parsed, never the JSON whole. [`Trailer::into_json`]
    /// holds the JSON: a `Z` payload of ~1 MiB can expand to [`MAX_MANIFEST`].
    ///
    /// # Errors
    /// [`FrameError::Manifest`] when the zstd decoder cannot start.
    pub fn into_reader(self) -> Result<Box<dyn Read + Send>, FrameError> {
        Self::reader_within(self, MAX_MANIFEST)
    }

    fn reader_within(self, limit: usize) -> Result<Box<dyn Read + Send>, FrameError> {
        let compressed = match self {
            Trailer::Json(json) => return Ok(Box::new(io::Cursor::new(json))),
            Trailer::ZstdJson(z) => z,
        };
        let decoder = zstd::stream::read::Decoder::with_buffer(io::Cursor::new(compressed))
            .map_err(|e| FrameError::Manifest(format!("it is not valid zstd: {e}")))?;
        Ok(Box::new(Capped { inner: decoder, left: limit as u64 }))
    }

    fn json_within(self, limit: usize) -> Result<Vec<u8>, FrameError> {
        let compressed = match self {
            Trailer::Json(json) => return Ok(json),
            Trailer::ZstdJson(z) => z,
        };
        let bad = |e: io::Error| FrameError::Manifest(format!("it is not valid zstd: {e}"));
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(compressed.as_slice())
            .map_err(bad)?
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(bad)?;
        if out.len() > limit {
            return Err(FrameError::Manifest(format!("it holds more than {limit} bytes")));
        }
        Ok(out)
    }
}

/// A reader failing (`InvalidData`) once more than `left` bytes would be read.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return match self.inner.read(&mut [0u8])? {
                0 => Ok(0),
                _ => Err(io::Error::new(io::ErrorKind::InvalidData, "the manifest sent after the data is too large")),
            };
        }
        let k = out.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut out[..k])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// What went wrong reading frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the stream ended before the sender finished (connection lost or sender stopped)")]
    Truncated,
    #[error("the sender failed: {0}")]
    Sender(String),
    #[error("not a voltool migration stream (frame type {0:#04x})")]
    Garbage(u8),
    #[error("frame of {0} bytes is larger than allowed")]
    TooLarge(usize),
    #[error("the manifest of this stream was already taken")]
    ManifestTaken,
    #[error("the manifest sent after the data: {0}")]
    Manifest(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes `D` frames for everything written, then [`FrameWriter::finish`] adds the trailer.
#[derive(Debug)]
pub struct FrameWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, buf: Vec::with_capacity(MAX_FRAME) }
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("frame too large"))?;
        self.inner.write_all(&[kind])?;
        self.inner.write_all(&len.to_be_bytes())?;
        self.inner.write_all(payload)
    }

    fn flush_data(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.frame(b'D', &buf)?;
            self.buf = buf;
            self.buf.clear();
        }
        Ok(())
    }

    /// Ends the data and sends the manifest.
    ///
    /// # Errors
    /// Writing failed, or the trailer is larger than [`MAX_MANIFEST`].
    pub fn finish(mut self, trailer: &Trailer) -> io::Result<W> {
        self.flush_data()?;
        let (kind, payload) = match trailer {
            Trailer::Json(b) => (b'M', b),
            Trailer::ZstdJson(b) => (b'Z', b),
        };
        if payload.len() > MAX_MANIFEST {
            return Err(io::Error::other(format!(
                "the manifest is {} bytes, more than a receiver takes",
                payload.len()
            )));
        }
        self.frame(kind, payload)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// Ends the stream with the sender's error.
    pub fn fail(mut self, reason: &str) -> io::Result<W> {
        self.buf.clear();
        self.frame(b'E', reason.as_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_FRAME - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_FRAME {
            self.flush_data()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_data()?;
        self.inner.flush()
    }
}

/// Reads the `D` payloads as one stream; stops (EOF) at the manifest frame, whose payload
/// [`FrameReader::take_manifest`] then hands over. Errors for `E` frames and early ends.
#[derive(Debug)]
pub struct FrameReader<R: Read> {
    inner: R,
    /// Bytes left in the current data frame.
    left: usize,
    end: End,
}

/// Where the reader is: in the data, at the manifest, or past it.
#[derive(Debug)]
enum End {
    Data,
    Manifest(Trailer),
    Taken,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, left: 0, end: End::Data }
    }

    fn next_header(&mut self) -> Result<(u8, usize), FrameError> {
        let mut h = [0u8; 5];
        match self.inner.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Truncated),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        Ok((h[0], len))
    }

    fn payload(&mut self, len: usize, limit: usize) -> Result<Vec<u8>, FrameError> {
        if len > limit {
            return Err(FrameError::TooLarge(len));
        }
        // Memory grows with the bytes that arrive, not with what the header claims: a header
        // saying 1 GiB followed by nothing costs nothing.
        let mut v = Vec::with_capacity(len.min(MAX_FRAME));
        (&mut self.inner).take(len as u64).read_to_end(&mut v)?;
        if v.len() < len {
            return Err(FrameError::Truncated);
        }
        Ok(v)
    }

    fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, FrameError> {
        while self.left == 0 {
            if !matches!(self.end, End::Data) {
                return Ok(0);
            }
            let (kind, len) = self.next_header()?;
            match kind {
                b'D' if len <= MAX_FRAME => self.left = len,
                b'D' => return Err(FrameError::TooLarge(len)),
                b'M' => {
                    self.end = End::Manifest(Trailer::Json(self.payload(len, MAX_MANIFEST)?));
                    return Ok(0);
                }
                b'Z' => {
                    self.end = End::Manifest(Trailer::ZstdJson(self.payload(len, MAX_MANIFEST)?));
                    return Ok(0);
                }
                b'E' => {
                    let msg = self.payload(len, 1 << 16)?;
                    return Err(FrameError::Sender(String::from_utf8_lossy(&msg).into_owned()));
                }
                other => return Err(FrameError::Garbage(other)),
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(FrameError::Truncated);
        }
        self.left -= n;
        Ok(n)
    }

    /// Reads past any data not consumed yet and hands the manifest over (once: the reader
    /// keeps no copy).
    ///
    /// # Errors
    /// As reading: truncated stream, sender error; [`FrameError::ManifestTaken`] the second
    /// time.
    pub fn take_manifest(&mut self) -> Result<Trailer, FrameError> {
        let mut sink = [0u8; 64 * 1024];
        while matches!(self.end, End::Data) {
            self.read_data(&mut sink)?;
        }
        match std::mem::replace(&mut self.end, End::Taken) {
            End::Manifest(t) => Ok(t),
            End::Data | End::Taken => Err(FrameError::ManifestTaken),
        }
    }
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_data(buf).map_err(|e| match e {
            FrameError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_trailer_round_trips_and_refuses_oversized_or_corrupt_payloads() {
        let json = br#"{"entries":[{"path":"a","sha256":"00"}]}"#.repeat(1000);
        let Trailer::ZstdJson(z) = Trailer::compressed(&json).unwrap() else { panic!("not compressed") };
        assert!(z.len() < json.len() / 10);
        assert_eq!(Trailer::ZstdJson(z.clone()).into_json().unwrap(), json);
        let e = Trailer::ZstdJson(z.clone()).json_within(json.len() - 1).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
        let e = Trailer::ZstdJson(z[..z.len() / 2].to_vec()).into_json().unwrap_err().to_string();
        assert!(e.contains("not valid zstd"), "{e}");
        assert!(Trailer::ZstdJson(b"{}".to_vec()).into_json().is_err(), "plain JSON is not a compressed trailer");
        assert_eq!(Trailer::Json(b"{}".to_vec()).into_json().unwrap(), b"{}");
    }

    #[test]
    fn frames_round_trip_with_manifest() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = FrameWriter::new(Vec::new());
        for chunk in data.chunks(77_777) {
            w.write_all(chunk).unwrap();
        }
        let bytes = w.finish(&Trailer::ZstdJson(b"zz".to_vec())).unwrap();
        let mut r = FrameReader::new(&bytes[..]);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(r.take_manifest().unwrap(), Trailer::ZstdJson(b"zz".to_vec()));
        assert!(matches!(r.take_manifest(), Err(FrameError::ManifestTaken)), "handed over once");
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0, "still at the end");
    }

    #[test]
    fn manifest_skips_unread_data() {
        let mut w = FrameWriter::new(Vec::new());
        w.write_all(&[1u8; 5000]).unwrap();
        let bytes = w.finish(&Trailer::Json(b"M".to_vec())).unwrap();
        let mut r = FrameReader::new(&bytes[..]);
        let mut two = [0u8; 2];
        r.read_exact(&mut two).unwrap();
        assert_eq!(r.take_manifest().unwrap(), Trailer::Json(b"M".to_vec()));
    }

    /// A frame header claiming a huge payload: over the limit it is refused before any read,
    /// under it memory follows the bytes that came (a 1 GiB claim with 10 bytes behind it is a
    /// truncated stream, not a 1 GiB allocation).
    #[test]
    fn huge_frame_length_claims_allocate_nothing() {
        for kind in [b'D', b'M', b'Z', b'E'] {
            let mut s = vec![kind];
            s.extend_from_slice(&u32::MAX.to_be_bytes());
            s.extend_from_slice(&[0u8; 10]);
            let e = FrameReader::new(&s[..]).take_manifest().unwrap_err();
            assert!(matches!(e, FrameError::TooLarge(n) if n == u32::MAX as usize), "{kind}: {e}");
        }
        let mut s = vec![b'Z'];
        s.extend_from_slice(&u32::try_from(MAX_MANIFEST - 1).unwrap().to_be_bytes());
        s.extend_from_slice(&[0u8; 10]);
        let e = FrameReader::new(&s[..]).take_manifest().unwrap_err();
        assert!(matches!(e, FrameError::Truncated), "{e}");
    }

    #[test]
    fn truncation_sender_errors_and_garbage_are_errors() {
        let mut w = FrameWriter::new(Vec::new());
        w.write_all(&[1u8; 5000]).unwrap();
        let bytes = w.finish(&Trailer::ZstdJson(b"M".to_vec())).unwrap();
        let mut r = FrameReader::new(&bytes[..3000]);
        let e = r.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("ended before"), "{e}");
        let bytes = FrameWriter::new(Vec::new()).fail("disk on fire").unwrap();
        let e = FrameReader::new(&bytes[..]).read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("disk on fire"), "{e}");
        let e = FrameReader::new(&b"GET / HTTP/1.1\r\n"[..]).read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("not a voltool migration stream"), "{e}");
        let e = FrameReader::new(&[][..]).take_manifest().unwrap_err().to_string();
        assert!(e.contains("ended before"), "{e}");
    }

    /// A `Z` trailer of ~1 MiB can expand to the 1 GiB limit: `into_json` holds all of it,
    /// `into_reader` streams it, and stops past the limit either way.
    #[test]
    fn zstd_manifest_bomb_streams_and_stops_at_the_limit() {
        let json = vec![b' '; 4 << 20];
        let t = Trailer::compressed(&json).unwrap();
        let Trailer::ZstdJson(z) = &t else { panic!("compressed") };
        assert!(z.len() < 4096, "a bomb: {} bytes expand to 4 MiB", z.len());
        let mut got = Vec::new();
        t.clone().reader_within(json.len()).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, json);
        let e = t.clone().reader_within(json.len() - 1).unwrap().read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let mut r = Trailer::Json(b"{}".to_vec()).into_reader().unwrap();
        let mut small = String::new();
        r.read_to_string(&mut small).unwrap();
        assert_eq!(small, "{}");
    }
}
