//! The manifest as a migration sends it after the data: compact JSON, zstd-compressed.
//!
//! It lives here, next to the archive decoding, because `voltool-migrate` only frames bytes
//! and has no codec; both ends of a migration are this crate's users.

use std::io::Read;

use crate::error::RestoreError;

/// zstd level for the manifest: hex digests and paths compress about 2:1 at any level, and
/// level 3 is fast enough (~0.1 s for 100,000 entries) not to delay the end of the stream.
const LEVEL: i32 = 3;

/// Compresses a manifest's JSON for sending.
///
/// # Errors
/// [`RestoreError::Trailer`] when zstd fails (out of memory).
pub fn compress_manifest(json: &[u8]) -> Result<Vec<u8>, RestoreError> {
    zstd::bulk::compress(json, LEVEL).map_err(|e| RestoreError::Trailer(format!("compressing it: {e}")))
}

/// Decompresses a received manifest, refusing more than `limit` bytes of JSON (the payload
/// comes from the network: a small frame must not expand into all of memory).
///
/// # Errors
/// [`RestoreError::Trailer`] for a corrupt or truncated payload, or one over `limit`.
pub fn decompress_manifest(compressed: &[u8], limit: usize) -> Result<Vec<u8>, RestoreError> {
    let bad = |e: std::io::Error| RestoreError::Trailer(format!("it is not valid zstd: {e}"));
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(compressed)
        .map_err(bad)?
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(bad)?;
    if out.len() > limit {
        return Err(RestoreError::Trailer(format!("it holds more than {limit} bytes")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_oversized_or_corrupt_payloads() {
        let json = br#"{"entries":[{"path":"a","sha256":"00"}]}"#.repeat(1000);
        let z = compress_manifest(&json).unwrap();
        assert!(z.len() < json.len() / 10);
        assert_eq!(decompress_manifest(&z, json.len()).unwrap(), json);
        let e = decompress_manifest(&z, json.len() - 1).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
        let e = decompress_manifest(&z[..z.len() / 2], json.len()).unwrap_err().to_string();
        assert!(e.contains("not valid zstd"), "{e}");
        assert!(decompress_manifest(b"{}", 100).is_err(), "plain JSON is not a compressed trailer");
    }
}
