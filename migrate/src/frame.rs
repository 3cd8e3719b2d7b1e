//! The frames of the stream: [`FrameWriter`] cuts the data into `D` frames of at most
//! [`MAX_FRAME`] bytes and ends with the [`Trailer`] (or an `E` frame); [`FrameReader`] reads
//! the data back as one stream, refusing frames over their limits before reading them.

use std::io::{self, Read, Write};

use crate::{MAX_FRAME, MAX_MANIFEST, Trailer};

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
}
