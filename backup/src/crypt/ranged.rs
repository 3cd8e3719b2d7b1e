//! Part of an encrypted object without reading the rest (`backup cat`, `restore --path` of an
//! encrypted backup): age's STREAM is a series of 64 KiB chunks, each sealed on its own with
//! its index in the nonce, so the plaintext `start .. start + len` is in the chunks
//! `start / 64 KiB ..= (start + len - 1) / 64 KiB` and age's [`age::stream::StreamReader`]
//! seeks to them. [`RangedObject`] gives it the stored object as `Read + Seek` by ranged reads
//! ([`Target::open_range`]: S3 `Range`, `pread`): the header, then the chunks asked for.
//!
//! Every chunk read is authenticated as usual, and the last one as the last: a reader never
//! sees an end of the object that is not one (a window that ends is followed by the next).

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::open::Plaintext;
use super::{CryptError, Identities};
use crate::target::Target;

/// A plaintext chunk of age's STREAM and its sealed size (chunk + Poly1305 tag).
const CHUNK: u64 = 64 << 10;
const SEALED_CHUNK: u64 = CHUNK + 16;
/// The first read: the header (a few hundred bytes per recipient) and the payload nonce.
const HEADER_WINDOW: u64 = 16 << 10;

/// A stored object of known size as `Read + Seek`, read by ranged reads of at most `window`
/// bytes (one open read at a time; a seek elsewhere drops it).
pub struct RangedObject {
    target: Box<dyn Target>,
    name: String,
    size: u64,
    pos: u64,
    window: u64,
    /// The open ranged read and the bytes left in it.
    open: Option<(Box<dyn Read + Send>, u64)>,
    /// Bytes fetched from the target so far (shared: the caller keeps a handle).
    fetched: Arc<AtomicU64>,
}

impl RangedObject {
    /// `name` on `target`, `size` bytes as stored; reads of `window` bytes after the first;
    /// every byte fetched is counted into `fetched`.
    pub fn new(target: Box<dyn Target>, name: &str, size: u64, window: u64, fetched: Arc<AtomicU64>) -> Self {
        Self { target, name: name.to_owned(), size, pos: 0, window: window.max(SEALED_CHUNK), open: None, fetched }
    }
}

impl Read for RangedObject {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        if self.open.as_ref().is_none_or(|(_, left)| *left == 0) {
            let want = if self.pos == 0 { HEADER_WINDOW } else { self.window };
            let len = want.min(self.size - self.pos);
            let r = self.target.open_range(&self.name, self.pos, len).map_err(io::Error::other)?;
            self.open = Some((r, len));
        }
        let Some((r, left)) = self.open.as_mut() else { return Ok(0) };
        let cap = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
        let n = r.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: the object ends before the {} bytes its backup records", self.name, self.size),
            ));
        }
        *left -= n as u64;
        self.pos += n as u64;
        self.fetched.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Seek for RangedObject {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let at = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start"))?;
        if at != self.pos {
            self.open = None;
            self.pos = at;
        }
        Ok(at)
    }
}

/// The plaintext bytes `start .. start + len` of the age object `object` (`stored_size` bytes
/// on the target), decrypted with `ids`: the header and only the chunks that hold them are
/// read.
///
/// # Errors
/// As [`super::open`]; reading fails as it does (a chunk that does not authenticate, an
/// object shorter than `stored_size`).
pub fn open_range(
    object: RangedObject,
    ids: &Identities,
    start: u64,
    len: u64,
) -> Result<Box<dyn Read + Send>, CryptError> {
    let name = object.name.clone();
    let o = || name.clone();
    let d = age::Decryptor::new(object).map_err(|e| super::open::header_error(e, &name))?;
    if ids.is_empty() {
        return Err(ids.none_match(&name));
    }
    let stream = d.decrypt(ids.iter()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => ids.none_match(&name),
        age::DecryptError::Io(source) => CryptError::Read { object: o(), source },
        _ => CryptError::Header { object: o() },
    })?;
    let mut plain = Plaintext { stream, object: o() };
    // Seeking reads (and authenticates) the chunk the range starts in.
    plain
        .stream
        .seek(SeekFrom::Start(start))
        .map_err(|e| CryptError::Read { object: o(), source: plain.explain(e) })?;
    Ok(Box::new(plain.take(len)))
}

/// The ranged-read window that holds `len` plaintext bytes starting anywhere in a chunk.
#[must_use]
pub fn window_for(len: u64) -> u64 {
    (len / CHUNK + 2) * SEALED_CHUNK
}
