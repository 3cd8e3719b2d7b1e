//! [`EntryList`]: the archive's entries in a compact append-only log, about 94 bytes plus the
//! path per entry (a `Vec<Entry>` of owned strings takes ~500), so that archiving a volume of
//! millions of files keeps its manifest in memory at a fraction of the cost.

use super::{Entry, EntryKind};

/// Archive entries in a compact append-only encoding: fixed fields little-endian, the sha256
/// as 32 raw bytes, path and target length-prefixed. [`EntryList::iter`] decodes them back
/// into [`Entry`] values in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryList {
    data: Vec<u8>,
    len: usize,
    /// Set once the archive is written ([`EntryList::locate`]): its frames' offsets, their
    /// decoded size and the archive's level. Entries of that level were pushed with their tar
    /// offsets in `frame_at`/`frame_len` (start, end), turned into frame ranges when read.
    frames: Option<(Vec<u64>, u64, u32)>,
}

const HAS_SHA: u8 = 1;
const HAS_TARGET: u8 = 2;

impl EntryList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives back the spare capacity (for a list kept after the archive is written).
    pub fn shrink_to_fit(&mut self) {
        self.data.shrink_to_fit();
    }

    /// The memory the list holds, in bytes (what a cache of lists counts against its budget).
    pub fn heap_bytes(&self) -> usize {
        self.data.capacity() + self.frames.as_ref().map_or(0, |(f, _, _)| f.capacity() * 8)
    }

    /// Appends one entry. Its `sha256`, if any, is stored as 32 raw bytes when it is 64 hex
    /// digits (as the archiver makes it) and read back as lowercase hex; anything else is
    /// stored as no hash.
    pub fn push(&mut self, e: &Entry) {
        let sha256 = e.sha256.as_deref().and_then(unhex32);
        let d = &mut self.data;
        d.push(kind_code(e.kind));
        d.push(if sha256.is_some() { HAS_SHA } else { 0 } | if e.target.is_some() { HAS_TARGET } else { 0 });
        for v in [e.mode, e.uid, e.gid] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&e.size.to_le_bytes());
        d.extend_from_slice(&e.mtime.to_le_bytes());
        d.extend_from_slice(&e.mtime_nsec.to_le_bytes());
        d.extend_from_slice(&e.ino.to_le_bytes());
        d.extend_from_slice(&e.ctime.to_le_bytes());
        d.extend_from_slice(&e.ctime_nsec.to_le_bytes());
        d.extend_from_slice(&e.level.to_le_bytes());
        d.extend_from_slice(&e.frame_at.to_le_bytes());
        d.extend_from_slice(&e.frame_len.to_le_bytes());
        d.extend_from_slice(&e.frame_skip.to_le_bytes());
        if let Some(sha) = &sha256 {
            d.extend_from_slice(sha);
        }
        put_str(d, &e.path);
        if let Some(t) = &e.target {
            put_str(d, t);
        }
        self.len += 1;
    }

    /// Where each entry starts, with its kind, inode number and path, the rest not decoded:
    /// what an index over the list is built from ([`EntryList::entry_at`] decodes one).
    pub fn heads(&self) -> EntryHeads<'_> {
        EntryHeads { data: &self.data, at: 0 }
    }

    /// The entry that starts at `at` (one of [`EntryList::heads`]); `None` past the end.
    pub fn entry_at(&self, at: usize) -> Option<Entry> {
        EntryIter { data: self.data.get(at..)?, frames: self.frames.as_ref() }.next()
    }

    /// The entries in the order they were pushed.
    pub fn iter(&self) -> EntryIter<'_> {
        EntryIter { data: &self.data, frames: self.frames.as_ref() }
    }

    /// Records where the archive's frames are (`offsets`: each frame's start in the compressed
    /// stream and the end of the last; every frame but the last holds `frame` tar bytes), so
    /// that the entries of `level` pushed with tar offsets (start, end) in
    /// `frame_at`/`frame_len` are read back with the frame range that holds them.
    pub fn locate(&mut self, offsets: Vec<u64>, frame: u64, level: u32) {
        self.frames = Some((offsets, frame.max(1), level));
    }
}

#[cfg(test)]
mod range_tests {
    #[test]
    fn hex_digits_round_trip_as_the_hex_crate_spells_them() {
        let raw: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let text = super::hex_lower(&raw);
        assert_eq!(text, hex::encode(raw));
        assert_eq!(super::unhex32(&text), Some(raw));
        assert_eq!(super::unhex32(&text.to_uppercase()), Some(raw), "either case");
        for bad in [&text[..62], "g".repeat(64).as_str(), &format!("{text}00")] {
            assert_eq!(super::unhex32(bad), None, "{bad}");
        }
    }

    #[test]
    fn tar_offsets_become_frame_ranges() {
        // Frames of 10 tar bytes; compressed at 24, 30, 37, 45 (end).
        let offsets = [24, 30, 37, 45];
        assert_eq!(super::frame_range(&offsets, 10, 0, 10), (24, 6, 0));
        assert_eq!(super::frame_range(&offsets, 10, 12, 25), (30, 15, 2));
        assert_eq!(super::frame_range(&offsets, 10, 25, 25), (37, 8, 5), "an empty entry: its frame");
        assert_eq!(super::frame_range(&offsets, 10, 25, 40), (0, 0, 0), "past the table");
    }
}

impl FromIterator<Entry> for EntryList {
    fn from_iter<I: IntoIterator<Item = Entry>>(iter: I) -> Self {
        let mut list = Self::new();
        for e in iter {
            list.push(&e);
        }
        list
    }
}

fn kind_code(k: EntryKind) -> u8 {
    match k {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
        EntryKind::Symlink => 2,
        EntryKind::Hardlink => 3,
        EntryKind::Fifo => 4,
    }
}

fn code_kind(c: u8) -> EntryKind {
    match c {
        1 => EntryKind::Dir,
        2 => EntryKind::Symlink,
        3 => EntryKind::Hardlink,
        4 => EntryKind::Fifo,
        _ => EntryKind::File,
    }
}

/// `raw` as lowercase hex digits (per entry on every manifest read and write: the `hex`
/// crate's char iterator cost more than the rest of decoding an entry).
fn hex_lower(raw: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(raw.len() * 2);
    for &b in raw {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The 32 bytes 64 hex digits (either case) spell, or `None` for anything else.
fn unhex32(h: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let h = h.as_bytes();
    if h.len() != 64 {
        return None;
    }
    let mut raw = [0u8; 32];
    for (r, pair) in raw.iter_mut().zip(h.chunks_exact(2)) {
        *r = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(raw)
}

fn put_str(d: &mut Vec<u8>, s: &str) {
    let mut n = s.len();
    // LEB128 length.
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            d.push(byte);
            break;
        }
        d.push(byte | 0x80);
    }
    d.extend_from_slice(s.as_bytes());
}

/// Bytes of an entry's fixed fields: kind, flags, mode, uid, gid, size, mtime (s, ns), inode,
/// ctime (s, ns), level, frame (at, len, skip); the inode number is at [`INO_AT`].
const FIXED: usize = 2 + 3 * 4 + 8 + 8 + 4 + 8 + 8 + 4 + 4 + 8 + 8 + 4;
const INO_AT: usize = 2 + 3 * 4 + 8 + 8 + 4;

/// One entry's start, kind, inode number and path ([`EntryList::heads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHead<'a> {
    pub at: usize,
    pub kind: EntryKind,
    pub ino: u64,
    pub path: &'a [u8],
}

/// Walks an [`EntryList`] entry by entry, decoding only the heads.
#[derive(Debug, Clone)]
pub struct EntryHeads<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Iterator for EntryHeads<'a> {
    type Item = EntryHead<'a>;

    fn next(&mut self) -> Option<EntryHead<'a>> {
        let e = self.data.get(self.at..)?;
        let (&kind, &flags) = (e.first()?, e.get(1)?);
        let ino = u64::from_le_bytes(e.get(INO_AT..INO_AT + 8)?.try_into().ok()?);
        let mut pos = FIXED + if flags & HAS_SHA != 0 { 32 } else { 0 };
        let path = read_str(e, &mut pos)?;
        if flags & HAS_TARGET != 0 {
            read_str(e, &mut pos)?;
        }
        let head = EntryHead { at: self.at, kind: code_kind(kind), ino, path };
        self.at += pos;
        Some(head)
    }
}

/// The length-prefixed string at `*pos` of `d`, moving `*pos` past it.
fn read_str<'a>(d: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let (mut n, mut shift) = (0usize, 0);
    loop {
        let byte = *d.get(*pos)?;
        *pos += 1;
        n |= usize::from(byte & 0x7f).checked_shl(shift)?;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let s = d.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(s)
}

/// Decodes an [`EntryList`]; built only by this module, so the encoding is trusted.
#[derive(Debug, Clone)]
pub struct EntryIter<'a> {
    data: &'a [u8],
    frames: Option<&'a (Vec<u64>, u64, u32)>,
}

/// The frame range (compressed start, length, decoded bytes to skip) holding tar bytes
/// `start..end`, from the frames' offsets; zeros when the offsets do not cover it.
fn frame_range(offsets: &[u64], frame: u64, start: u64, end: u64) -> (u64, u64, u32) {
    let first = usize::try_from(start / frame).unwrap_or(usize::MAX);
    let last = usize::try_from(end.saturating_sub(1).max(start) / frame).unwrap_or(usize::MAX);
    match (offsets.get(first), last.checked_add(1).and_then(|l| offsets.get(l))) {
        (Some(&at), Some(&to)) => (at, to - at, u32::try_from(start % frame).unwrap_or(0)),
        _ => (0, 0, 0),
    }
}

impl EntryIter<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N));
        b
    }

    fn string(&mut self) -> String {
        let mut n = 0usize;
        let mut shift = 0;
        while let Some((&byte, rest)) = self.data.split_first() {
            self.data = rest;
            n |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
}

impl Iterator for EntryIter<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let (&kind, _) = self.data.split_first()?;
        let flags = self.take(2)[1];
        let kind = code_kind(kind);
        let [mode, uid, gid] = std::array::from_fn(|_| u32::from_le_bytes(self.array()));
        let size = u64::from_le_bytes(self.array());
        let mtime = i64::from_le_bytes(self.array());
        let mtime_nsec = u32::from_le_bytes(self.array());
        let ino = u64::from_le_bytes(self.array());
        let ctime = i64::from_le_bytes(self.array());
        let ctime_nsec = u32::from_le_bytes(self.array());
        let level = u32::from_le_bytes(self.array());
        let mut frame_at = u64::from_le_bytes(self.array());
        let mut frame_len = u64::from_le_bytes(self.array());
        let mut frame_skip = u32::from_le_bytes(self.array());
        if let Some((offsets, frame, l)) = self.frames
            && *l == level
        {
            (frame_at, frame_len, frame_skip) = frame_range(offsets, *frame, frame_at, frame_len);
        }
        let sha256 = (flags & HAS_SHA != 0).then(|| hex_lower(self.take(32)));
        let path = self.string();
        let target = (flags & HAS_TARGET != 0).then(|| self.string());
        Some(Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            size,
            mtime,
            mtime_nsec,
            sha256,
            target,
            ino,
            ctime,
            ctime_nsec,
            level,
            frame_at,
            frame_len,
            frame_skip,
        })
    }
}
