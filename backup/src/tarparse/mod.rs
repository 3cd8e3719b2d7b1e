//! A minimal reader of tar streams for extraction: ustar and pax headers (`x` records: path,
//! linkpath, size, uid, gid, mtime, `SCHILY.xattr.*`; `g` records are read and ignored), GNU
//! long names and link names (`L`, `K`), numbers in octal or GNU base-256.
//!
//! It works on the decoded stream's own buffers ([`BufRead`]): padding is skipped without a
//! copy, and file contents can be read straight out of them ([`TarReader::content_chunk`]).
//! Restore and verify parse ~200,000 headers for 100,000 files; the `tar` crate's reader
//! allocated and re-parsed the pax records several times per entry, which made restore's
//! extraction thread the slowest of its threads.
//!
//! Everything is untrusted: every header's checksum is checked, every length and count is held
//! to [`Limits`] before memory is spent on it (extended headers in a row and their bytes, pax
//! records, xattrs, path lengths, entries), and a stream that ends inside a header, a record
//! or the padding is an error ([`TarError`], naming the entry or the header's offset); the
//! caller decides what entries mean (see `extract`).

mod fields;
mod limits;
#[cfg(test)]
mod tests;

use std::io::{self, BufRead, Read};

use fields::{apply_pax, field, num, padding, sum_ok, trim_nul};
pub use fields::{parse_pax_time, pax_record};
pub use limits::{At, Limit, Limits, TarError};

/// The largest pax or GNU long-name record accepted by default ([`Limits::meta_record`]).
pub const MAX_META: u64 = 16 << 20;

const BLOCK: usize = 512;

/// The tar entry types restore knows (the `typeflag` byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Link,
    Symlink,
    Char,
    Block,
    Directory,
    Fifo,
    Continuous,
    GnuSparse,
    Other(u8),
}

impl Kind {
    fn from_byte(b: u8) -> Self {
        match b {
            b'0' | 0 => Self::Regular,
            b'1' => Self::Link,
            b'2' => Self::Symlink,
            b'3' => Self::Char,
            b'4' => Self::Block,
            b'5' => Self::Directory,
            b'6' => Self::Fifo,
            b'7' => Self::Continuous,
            b'S' => Self::GnuSparse,
            other => Self::Other(other),
        }
    }
}

/// One entry's header, with its pax and GNU records applied.
#[derive(Debug, Default)]
pub struct Header {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Option<Kind>,
    /// `None` when the header's field does not parse.
    pub mode: Option<u32>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub size: u64,
    /// Seconds and nanoseconds (a pax `mtime` record, else the header's seconds).
    pub mtime: Option<(i64, u32)>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `SCHILY.xattr.NAME` records: (NAME, value).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Records that apply to the next entry, and what they have cost so far.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Option<(i64, u32)>>,
    xattrs: Vec<(String, Vec<u8>)>,
    /// Extended headers, their bytes, pax records and xattr bytes so far.
    headers: u64,
    bytes: u64,
    records: u64,
    xattr_bytes: usize,
}

/// Reads entries one after another; after [`TarReader::next_entry`] returns a header, the
/// entry's contents are read with [`TarReader::contents`] (or skipped by the next call).
pub struct TarReader<R> {
    inner: R,
    limits: Limits,
    /// Stream offset of the next unread byte (for messages).
    pos: u64,
    /// Contents of the current entry not read yet, and the padding after them.
    left: u64,
    pad: u64,
    /// Entries returned so far (for messages).
    count: u64,
    done: bool,
}

impl<R: BufRead> TarReader<R> {
    /// A reader with the default [`Limits`].
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, Limits::default())
    }

    pub fn with_limits(inner: R, limits: Limits) -> Self {
        Self { inner, limits, pos: 0, left: 0, pad: 0, count: 0, done: false }
    }

    /// The stream after the end of the archive.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.pos += n as u64;
    }

    /// Skips `n` bytes; the stream must hold them.
    fn skip(&mut self, mut n: u64, what: &'static str) -> Result<(), TarError> {
        while n > 0 {
            let avail = self.inner.fill_buf()?.len();
            if avail == 0 {
                return Err(TarError::Truncated { what, offset: self.pos });
            }
            let k = usize::try_from(n).unwrap_or(usize::MAX).min(avail);
            self.consume(k);
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads one 512-byte block; `None` at a clean end of the stream (nothing at all left).
    fn block(&mut self, out: &mut [u8; BLOCK]) -> Result<Option<()>, TarError> {
        let mut got = 0;
        while got < BLOCK {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                if got == 0 {
                    return Ok(None);
                }
                return Err(TarError::Truncated { what: "a header", offset: self.pos });
            }
            let k = buf.len().min(BLOCK - got);
            out[got..got + k].copy_from_slice(&buf[..k]);
            self.consume(k);
            got += k;
        }
        Ok(Some(()))
    }

    /// Reads an extended header's data (`size` bytes plus padding) into memory, once `p`'s
    /// budget for them allows it. `at` is the header's offset.
    fn record(&mut self, size: u64, p: &mut Pending, at: u64) -> Result<Vec<u8>, TarError> {
        let lim = self.limits;
        let here = || At::of(p.path.as_deref(), at);
        p.headers += 1;
        limits::check(here, Limit::MetaHeaders, p.headers, lim.meta_headers.into())?;
        limits::check(here, Limit::MetaRecord, size, lim.meta_record)?;
        limits::check(here, Limit::MetaBytes, p.bytes.saturating_add(size), lim.meta_bytes)?;
        p.bytes += size;
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(TarError::Truncated { what: "an extended header", offset: self.pos });
            }
            let k = buf.len().min(len - data.len());
            data.extend_from_slice(&buf[..k]);
            self.consume(k);
        }
        self.skip(padding(size), "an extended header's padding")?;
        Ok(data)
    }

    /// The next entry's header, or `None` at the end of the archive (a zero block, or the
    /// stream ending at a header boundary). Contents of the previous entry that were not read
    /// are skipped.
    ///
    /// # Errors
    /// [`TarError`]: a damaged or truncated stream, a limit exceeded, or the stream's own error.
    pub fn next_entry(&mut self) -> Result<Option<Header>, TarError> {
        if self.done {
            return Ok(None);
        }
        let rest = self.left + self.pad;
        (self.left, self.pad) = (0, 0);
        self.skip(rest, "an entry's contents")?;
        let mut pending = Pending::default();
        let mut b = [0u8; BLOCK];
        loop {
            let at = self.pos;
            if self.block(&mut b)?.is_none() || b.iter().all(|&x| x == 0) {
                self.done = true;
                if pending.path.is_some() || pending.size.is_some() || pending.link.is_some() {
                    return Err(TarError::Truncated { what: "an extended header's entry", offset: at });
                }
                return Ok(None);
            }
            let damaged = |reason| TarError::Damaged { at: At::of(pending.path.as_deref(), at), reason };
            if !sum_ok(&b) {
                return Err(damaged("header checksum mismatch (damaged, or not a tar archive)"));
            }
            let Some(size) = num(&b[124..136]) else { return Err(damaged("a header with an unreadable size")) };
            match b[156] {
                b'x' => {
                    let data = self.record(size, &mut pending, at)?;
                    apply_pax(&data, &mut pending, &self.limits, at)?;
                }
                // Global records: read and ignored (as the `tar` crate and most readers).
                b'g' => drop(self.record(size, &mut pending, at)?),
                flag @ (b'L' | b'K') => {
                    let what = At::of(pending.path.as_deref(), at);
                    limits::check(|| what, Limit::Path, size, self.limits.path as u64 + 1)?;
                    let name = trim_nul(self.record(size, &mut pending, at)?);
                    if flag == b'L' { pending.path = Some(name) } else { pending.link = Some(name) }
                }
                flag => {
                    let h = self.header(&b, flag, size, pending);
                    let what = || At::of(Some(&h.path), at);
                    limits::check(what, Limit::Entries, self.count + 1, self.limits.entries)?;
                    self.left = h.size;
                    self.pad = padding(h.size);
                    self.count += 1;
                    return Ok(Some(h));
                }
            }
        }
    }

    fn header(&self, b: &[u8; BLOCK], flag: u8, size: u64, p: Pending) -> Header {
        let ustar = &b[257..263] == b"ustar\0";
        let path = p.path.unwrap_or_else(|| {
            let name = field(&b[0..100]);
            let prefix = if ustar { field(&b[345..500]) } else { &[] };
            if prefix.is_empty() {
                name.to_vec()
            } else {
                let mut v = prefix.to_vec();
                v.push(b'/');
                v.extend_from_slice(name);
                v
            }
        });
        let link = p.link.unwrap_or_else(|| field(&b[157..257]).to_vec());
        let mode = num(&b[100..108]).and_then(|m| u32::try_from(m).ok());
        let header_mtime = num(&b[136..148]).map(|s| (i64::try_from(s).unwrap_or(0), 0u32));
        Header {
            path,
            link,
            kind: Some(Kind::from_byte(flag)),
            mode,
            uid: p.uid.or_else(|| num(&b[108..116])),
            gid: p.gid.or_else(|| num(&b[116..124])),
            size: p.size.unwrap_or(size),
            // An unreadable pax mtime falls back to the header's.
            mtime: p.mtime.flatten().or(header_mtime),
            dev_major: num(&b[329..337]).and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            dev_minor: num(&b[337..345]).and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            xattrs: p.xattrs,
        }
    }

    /// The next part of the current entry's contents, straight out of the stream's buffer
    /// (empty once all are read, or when the stream ended early); [`Self::consume_content`]
    /// marks it read.
    ///
    /// # Errors
    /// The stream's error.
    pub fn content_chunk(&mut self) -> io::Result<&[u8]> {
        if self.left == 0 {
            return Ok(&[]);
        }
        let left = usize::try_from(self.left).unwrap_or(usize::MAX);
        let buf = self.inner.fill_buf()?;
        let n = buf.len().min(left);
        Ok(&buf[..n])
    }

    /// Marks `n` bytes of [`Self::content_chunk`] read.
    pub fn consume_content(&mut self, n: usize) {
        let n = n.min(usize::try_from(self.left).unwrap_or(usize::MAX));
        self.consume(n);
        self.left -= n as u64;
    }

    /// A reader of the current entry's contents (exactly its size; fewer only when the
    /// stream ends early).
    pub fn contents(&mut self) -> Contents<'_, R> {
        Contents { tar: self }
    }

    /// Entries returned so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// The contents of one entry, read straight out of the stream's buffers.
pub struct Contents<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: BufRead> Read for Contents<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.tar.left == 0 || out.is_empty() {
            return Ok(0);
        }
        let buf = self.tar.inner.fill_buf()?;
        let n = buf.len().min(out.len()).min(usize::try_from(self.tar.left).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&buf[..n]);
        self.tar.consume(n);
        self.tar.left -= n as u64;
        Ok(n)
    }
}
