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
//! Everything is untrusted: every header's checksum is checked, a pax or GNU name record is
//! at most [`MAX_META`] bytes, and a stream that ends inside a header, a record or the padding
//! is an error; the caller decides what entries mean (see `extract`).

use std::io::{self, BufRead, Read};

/// The largest pax or GNU long-name record accepted (GNU tar's own limit is far lower in
/// practice; this stops a hostile header from asking for gigabytes of memory).
pub const MAX_META: u64 = 1 << 20;

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

/// Records that apply to the next entry.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Option<(i64, u32)>>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Reads entries one after another; after [`TarReader::next_entry`] returns a header, the
/// entry's contents are read with [`TarReader::contents`] (or skipped by the next call).
pub struct TarReader<R> {
    inner: R,
    /// Contents of the current entry not read yet, and the padding after them.
    left: u64,
    pad: u64,
    /// Entries returned so far (for messages).
    count: u64,
    done: bool,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: BufRead> TarReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, left: 0, pad: 0, count: 0, done: false }
    }

    /// The stream after the end of the archive.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Skips `n` bytes; the stream must hold them.
    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let avail = self.inner.fill_buf()?.len();
            if avail == 0 {
                return Err(bad("the archive ends in the middle of an entry"));
            }
            let k = usize::try_from(n).unwrap_or(usize::MAX).min(avail);
            self.inner.consume(k);
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads one 512-byte block; `None` at a clean end of the stream (nothing at all left).
    fn block(&mut self, out: &mut [u8; BLOCK]) -> io::Result<Option<()>> {
        let mut got = 0;
        while got < BLOCK {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                if got == 0 {
                    return Ok(None);
                }
                return Err(bad("the archive ends inside a header"));
            }
            let k = buf.len().min(BLOCK - got);
            out[got..got + k].copy_from_slice(&buf[..k]);
            self.inner.consume(k);
            got += k;
        }
        Ok(Some(()))
    }

    /// Reads a record's data (`size` bytes plus padding) into memory.
    fn record(&mut self, size: u64, what: &str) -> io::Result<Vec<u8>> {
        if size > MAX_META {
            return Err(bad(format!("a {what} of {size} bytes (at most {MAX_META} are accepted)")));
        }
        let mut data = vec![0u8; usize::try_from(size).unwrap_or(0)];
        self.inner.read_exact(&mut data).map_err(|_| bad(format!("the archive ends inside a {what}")))?;
        self.skip(padding(size))?;
        Ok(data)
    }

    /// The next entry's header, or `None` at the end of the archive (a zero block, or the
    /// stream ending at a header boundary). Contents of the previous entry that were not read
    /// are skipped.
    ///
    /// # Errors
    /// A damaged or truncated stream (`InvalidData`), or the stream's own error.
    pub fn next_entry(&mut self) -> io::Result<Option<Header>> {
        if self.done {
            return Ok(None);
        }
        let rest = self.left + self.pad;
        (self.left, self.pad) = (0, 0);
        self.skip(rest)?;
        let mut pending = Pending::default();
        let mut b = [0u8; BLOCK];
        loop {
            if self.block(&mut b)?.is_none() || b.iter().all(|&x| x == 0) {
                self.done = true;
                if pending.path.is_some() || pending.size.is_some() || pending.link.is_some() {
                    return Err(bad("the archive ends after an extended header, without its entry"));
                }
                return Ok(None);
            }
            check_sum(&b)?;
            let size = num(&b[124..136]).ok_or_else(|| bad("a header with an unreadable size"))?;
            match b[156] {
                b'x' => {
                    let data = self.record(size, "pax header")?;
                    apply_pax(&data, &mut pending);
                }
                b'g' => {
                    // Global records: read and ignored (as the `tar` crate and most readers).
                    self.record(size, "pax global header")?;
                }
                b'L' => pending.path = Some(trim_nul(self.record(size, "GNU long name")?)),
                b'K' => pending.link = Some(trim_nul(self.record(size, "GNU long link name")?)),
                flag => {
                    let h = self.header(&b, flag, size, pending)?;
                    self.left = h.size;
                    self.pad = padding(h.size);
                    self.count += 1;
                    return Ok(Some(h));
                }
            }
        }
    }

    fn header(&self, b: &[u8; BLOCK], flag: u8, size: u64, p: Pending) -> io::Result<Header> {
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
        Ok(Header {
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
        })
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
        self.inner.consume(n);
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
        self.tar.inner.consume(n);
        self.tar.left -= n as u64;
        Ok(n)
    }
}

/// Parses a pax time (`[-]SECONDS[.FRACTION]`) into seconds and nanoseconds (floor
/// semantics: `-1.25` is `(-2, 750_000_000)`).
#[must_use]
pub fn parse_pax_time(s: &str) -> Option<(i64, u32)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let whole: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nsec: u32 = digits.parse().ok()?;
    Some(match (neg, nsec) {
        (false, _) => (whole, nsec),
        (true, 0) => (-whole, 0),
        (true, _) => (-whole - 1, 1_000_000_000 - nsec),
    })
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The bytes of a NUL-terminated header field.
fn field(f: &[u8]) -> &[u8] {
    f.iter().position(|&c| c == 0).map_or(f, |i| &f[..i])
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// A numeric header field: octal digits (surrounded by spaces or NULs), or GNU base-256 (the
/// first byte's high bit set). `None` when it does not parse.
fn num(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|&c| c & 0x80 != 0) {
        // Base-256, big-endian; a negative number (0xff first) does not fit.
        if f[0] == 0xff {
            return None;
        }
        let mut v: u64 = u64::from(f[0] & 0x7f);
        for &c in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(c))?;
        }
        return Some(v);
    }
    // An all-blank field has no number (as the `tar` crate reads it).
    let mut v: Option<u64> = None;
    for &c in f.iter().skip_while(|&&c| c == b' ' || c == 0) {
        match c {
            b'0'..=b'7' => v = Some(v.unwrap_or(0).checked_mul(8)?.checked_add(u64::from(c - b'0'))?),
            b' ' | 0 => break,
            _ => return None,
        }
    }
    v
}

/// The header checksum: the sum of its bytes with the checksum field taken as spaces.
fn check_sum(b: &[u8; BLOCK]) -> io::Result<()> {
    let want = num(&b[148..156]).ok_or_else(|| bad("a header with an unreadable checksum"))?;
    // All 512 bytes (one vectorisable loop), then the checksum field's own bytes swapped for
    // spaces.
    let all: u32 = b.iter().map(|&c| u32::from(c)).sum();
    let field: u32 = b[148..156].iter().map(|&c| u32::from(c)).sum();
    let sum = u64::from(all - field + 8 * u32::from(b' '));
    if sum == want { Ok(()) } else { Err(bad("archive header checksum mismatch (damaged, or not a tar archive)")) }
}

/// Applies pax records (`LEN KEY=VALUE\n`, `LEN` counting the whole record) to `p`. A
/// malformed record ends the parsing; the ones before it count.
fn apply_pax(mut data: &[u8], p: &mut Pending) {
    while !data.is_empty() {
        let Some(sp) = data.iter().position(|&c| c == b' ') else { return };
        let Some(len) = std::str::from_utf8(&data[..sp]).ok().and_then(|s| s.parse::<usize>().ok()) else { return };
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return;
        }
        let rec = &data[sp + 1..len - 1];
        data = &data[len..];
        let Some(eq) = rec.iter().position(|&c| c == b'=') else { continue };
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        let text = || std::str::from_utf8(value).ok();
        match key {
            b"path" => p.path = Some(value.to_vec()),
            b"linkpath" => p.link = Some(value.to_vec()),
            b"size" => p.size = text().and_then(|v| v.parse().ok()),
            b"uid" => p.uid = text().and_then(|v| v.parse().ok()),
            b"gid" => p.gid = text().and_then(|v| v.parse().ok()),
            // The first record counts, even when it does not parse.
            b"mtime" if p.mtime.is_none() => p.mtime = Some(text().and_then(parse_pax_time)),
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.")
                    && let Ok(name) = std::str::from_utf8(name)
                {
                    p.xattrs.push((name.to_owned(), value.to_vec()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a pax `x` header with these records.
    fn pax(b: &mut tar::Builder<Vec<u8>>, recs: &[(&str, &[u8])]) {
        let mut data = Vec::new();
        for (k, v) in recs {
            let body = k.len() + v.len() + 3;
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }

    /// Parses what the `tar` crate's builder writes, entry by entry, the same way the `tar`
    /// crate reads it.
    #[test]
    fn reads_what_the_tar_crate_writes_as_the_tar_crate_does() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o640);
        h.set_uid(1000);
        h.set_gid(3_000_000);
        h.set_mtime(1_700_000_000);
        h.set_size(5);
        b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "ln", "x".repeat(150)).unwrap();
        pax(&mut b, &[("mtime", b"12.5"), ("SCHILY.xattr.user.k", b"v\0w")]);
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o600);
        h.set_mtime(1);
        b.append_data(&mut h, "p/q", &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, "dir/", &[][..]).unwrap();
        let bytes = b.into_inner().unwrap();

        let mut ours = TarReader::new(&bytes[..]);
        let mut theirs = tar::Archive::new(&bytes[..]);
        for e in theirs.entries().unwrap() {
            let mut e = e.unwrap();
            let h = ours.next_entry().unwrap().expect("an entry");
            assert_eq!(h.path, e.path_bytes().as_ref());
            assert_eq!(Some(&h.link[..]), e.link_name_bytes().as_deref().or(Some(&[][..])));
            assert_eq!(h.size, e.size());
            assert_eq!(h.mode, e.header().mode().ok());
            assert_eq!(h.uid, e.header().uid().ok());
            assert_eq!(h.gid, e.header().gid().ok());
            let mut want = Vec::new();
            e.read_to_end(&mut want).unwrap();
            let mut got = Vec::new();
            ours.contents().read_to_end(&mut got).unwrap();
            assert_eq!(got, want);
        }
        assert!(ours.next_entry().unwrap().is_none());
        assert_eq!(ours.count(), 4);
        // The pax records applied to "p/q" only.
        let mut again = TarReader::new(&bytes[..]);
        let mut seen = Vec::new();
        while let Some(h) = again.next_entry().unwrap() {
            seen.push((String::from_utf8(h.path).unwrap(), h.mtime, h.xattrs));
        }
        assert_eq!(seen[2], ("p/q".into(), Some((12, 500_000_000)), vec![("user.k".into(), b"v\0w".to_vec())]));
        assert_eq!(seen[3].1, Some((0, 0)), "the directory has its own (zero) mtime");
    }

    #[test]
    fn damaged_and_truncated_streams_are_errors() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1000);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", &[7u8; 1000][..]).unwrap();
        let bytes = b.into_inner().unwrap();
        // A flipped header byte: the checksum catches it.
        let mut flipped = bytes.clone();
        flipped[3] ^= 1;
        let e = TarReader::new(&flipped[..]).next_entry().unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        // Cut inside the header, inside the contents, inside the padding.
        for cut in [100, 700, 1500] {
            let mut t = TarReader::new(&bytes[..cut]);
            let r = t.next_entry().and_then(|h| {
                let mut v = Vec::new();
                t.contents().read_to_end(&mut v)?;
                if h.is_some_and(|h| v.len() as u64 != h.size) {
                    return Err(bad("short"));
                }
                t.next_entry()
            });
            assert!(r.is_err(), "cut at {cut}");
        }
        // A pax record asking for gigabytes is refused before anything is allocated.
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(1 << 40);
        h.set_cksum();
        let mut huge = h.as_bytes().to_vec();
        huge.extend_from_slice(&[0u8; 1024]);
        let e = TarReader::new(&huge[..]).next_entry().unwrap_err();
        assert!(e.to_string().contains("pax header"), "{e}");
    }

    #[test]
    fn pax_times_parse_with_floor_semantics() {
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time("-0.5"), Some((-1, 500_000_000)));
        assert_eq!(parse_pax_time("-3"), Some((-3, 0)));
        assert_eq!(parse_pax_time("x"), None);
        assert_eq!(parse_pax_time("1.2x"), None);
    }

    #[test]
    fn numbers_in_octal_and_base_256() {
        assert_eq!(num(b"0000644\0"), Some(0o644));
        assert_eq!(num(b"   755 \0"), Some(0o755));
        assert_eq!(num(b"\0\0\0\0"), None);
        assert_eq!(num(b"0\0\0\0"), Some(0));
        assert_eq!(num(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]), Some(2u64 << 32));
        assert_eq!(num(b"12x4"), None);
        assert_eq!(num(&[0xff; 8]), None);
    }
}
