//! The manifest after the data, as it travels ([`Trailer`]): compressed for a `Z` frame and
//! decompressed by the receiver within [`MAX_MANIFEST`] bytes (its payload comes from the
//! network: a small frame must not expand into all of memory).

use std::io::{self, Read};

use crate::{FrameError, MAX_MANIFEST};

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
