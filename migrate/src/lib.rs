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
//!    an `M` frame, or an `E` frame with the reason if archiving failed. The receiving daemon
//!    extracts the `D` stream into staging, reads the manifest, checks every file against it
//!    and only then swaps the data in; a stream that ends without its `M` frame (ssh cut,
//!    sender killed) is an error and the half-received volume is removed.
//! 3. **Result** (one JSON line back): the receiver's [`Reply`] with what it verified; the
//!    sender reports success only on `ok`.
//!
//! Frame: one type byte, a 4-byte big-endian length, the payload. Data frames hold at most
//! [`MAX_FRAME`] bytes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The protocol version in [`Offer`].
pub const PROTOCOL: u32 = 1;
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

    /// Ends the data and sends the manifest (JSON).
    pub fn finish(mut self, manifest: &[u8]) -> io::Result<W> {
        self.flush_data()?;
        self.frame(b'M', manifest)?;
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

/// Reads the `D` payloads as one stream; stops (EOF) at the `M` frame, whose payload
/// [`FrameReader::manifest`] then returns. Errors for `E` frames and early ends.
#[derive(Debug)]
pub struct FrameReader<R: Read> {
    inner: R,
    /// Bytes left in the current data frame.
    left: usize,
    manifest: Option<Vec<u8>>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, left: 0, manifest: None }
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
        let mut v = vec![0u8; len];
        self.inner
            .read_exact(&mut v)
            .map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { FrameError::Truncated } else { e.into() })?;
        Ok(v)
    }

    fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, FrameError> {
        while self.left == 0 {
            if self.manifest.is_some() {
                return Ok(0);
            }
            let (kind, len) = self.next_header()?;
            match kind {
                b'D' if len <= MAX_FRAME => self.left = len,
                b'D' => return Err(FrameError::TooLarge(len)),
                b'M' => {
                    self.manifest = Some(self.payload(len, 1 << 30)?);
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

    /// Reads past any data not consumed yet and returns the manifest.
    ///
    /// # Errors
    /// As reading: truncated stream, sender error.
    pub fn manifest(&mut self) -> Result<Vec<u8>, FrameError> {
        let mut sink = [0u8; 64 * 1024];
        while self.manifest.is_none() {
            self.read_data(&mut sink)?;
        }
        Ok(self.manifest.clone().unwrap_or_default())
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
    fn frames_round_trip_with_manifest() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = FrameWriter::new(Vec::new());
        for chunk in data.chunks(77_777) {
            w.write_all(chunk).unwrap();
        }
        let bytes = w.finish(b"{\"m\":1}").unwrap();
        let mut r = FrameReader::new(&bytes[..]);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(r.manifest().unwrap(), b"{\"m\":1}");
    }

    #[test]
    fn manifest_skips_unread_data() {
        let mut w = FrameWriter::new(Vec::new());
        w.write_all(&[1u8; 5000]).unwrap();
        let bytes = w.finish(b"M").unwrap();
        let mut r = FrameReader::new(&bytes[..]);
        let mut two = [0u8; 2];
        r.read_exact(&mut two).unwrap();
        assert_eq!(r.manifest().unwrap(), b"M");
    }

    #[test]
    fn truncation_sender_errors_and_garbage_are_errors() {
        let mut w = FrameWriter::new(Vec::new());
        w.write_all(&[1u8; 5000]).unwrap();
        let bytes = w.finish(b"M").unwrap();
        let mut r = FrameReader::new(&bytes[..3000]);
        let e = r.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("ended before"), "{e}");
        let bytes = FrameWriter::new(Vec::new()).fail("disk on fire").unwrap();
        let e = FrameReader::new(&bytes[..]).read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("disk on fire"), "{e}");
        let e = FrameReader::new(&b"GET / HTTP/1.1\r\n"[..]).read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("not a voltool migration stream"), "{e}");
        let e = FrameReader::new(&[][..]).manifest().unwrap_err().to_string();
        assert!(e.contains("ended before"), "{e}");
    }
}
