//! The manifest (`ID.manifest.json`) and the `ID.tar.zst.sha256` line.
//!
//! While archiving, entries are kept in an [`EntryList`], a compact binary log (about 70 bytes
//! plus the path per entry, against ~500 for a `Vec<Entry>` of owned strings), and the backup
//! engine writes the manifest from it as a stream ([`Manifest::write_json`]): the manifest
//! never exists whole in memory, neither as structs nor as text. [`Manifest`] (every entry as
//! a struct) is what readers parse.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::archive::ArchiveSummary;
use crate::error::BackupError;

/// The manifest format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Option keys never copied into a manifest, whatever the caller passes (compared case-insensitively).
const SECRET_KEYS: &[&str] = &["password", "pass", "passwd"];

/// The type of an archive entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A second or later path to an inode already archived; `target` names the first path.
    Hardlink,
    Fifo,
}

/// One archived path, in archive order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the volume root, `/`-separated, no leading `./` (lossy UTF-8 for other names).
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Content bytes in the archive: the file size for files, 0 for everything else.
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtime_nsec: u32,
    /// Lowercase hex sha256 of the content (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The link target (symlinks) or the first path of the inode (hard links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Everything `ID.manifest.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The backup ID, `<volume>-<YYYYmmddTHHMMSSZ>-<6 hex>`.
    pub id: String,
    pub volume: String,
    /// The volume's options (secret values are never stored).
    pub options: BTreeMap<String, String>,
    /// RFC 3339, UTC.
    pub created: String,
    pub tool_version: String,
    /// Size in bytes and lowercase hex sha256 of `ID.tar.zst`.
    pub archive_size: u64,
    pub archive_sha256: String,
    /// Regular files and their total content bytes.
    pub files: u64,
    pub bytes: u64,
    /// What the archiver skipped or noticed (devices, sockets, mount points, files changing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Builds the manifest of a finished archive. Keys that name a password are dropped from
    /// `options`. Errors: [`BackupError::Options`] if `created` cannot be formatted.
    pub fn new(
        id: &str,
        volume: &str,
        options: &BTreeMap<String, String>,
        summary: ArchiveSummary,
        created: OffsetDateTime,
    ) -> Result<Self, BackupError> {
        let mut m = Self::without_entries(id, volume, options, &summary, created)?;
        m.entries = summary.entries.iter().collect();
        Ok(m)
    }

    /// [`Manifest::new`] with `entries` left empty: the backup engine streams them out of
    /// the summary's [`EntryList`] with [`Manifest::write_json`] instead of decoding them all.
    pub fn without_entries(
        id: &str,
        volume: &str,
        options: &BTreeMap<String, String>,
        summary: &ArchiveSummary,
        created: OffsetDateTime,
    ) -> Result<Self, BackupError> {
        let created = created
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(|e| BackupError::Options(format!("created time: {e}")))?;
        let options = options
            .iter()
            .filter(|(k, _)| !SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            format_version: FORMAT_VERSION,
            id: id.to_owned(),
            volume: volume.to_owned(),
            options,
            created,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            archive_size: summary.archive_size,
            archive_sha256: summary.archive_sha256.clone(),
            files: summary.files,
            bytes: summary.bytes_in,
            notes: summary.notes.clone(),
            entries: Vec::new(),
        })
    }

    /// Writes the manifest as compact JSON, its entries being `self.entries` followed by
    /// `more` (decoded one at a time, never all at once), then a newline. The document is
    /// exactly `serde_json::to_string` of the manifest holding all those entries, which
    /// [`Manifest::from_json`] reads. Errors: [`BackupError::Manifest`] (a failed write is a
    /// `serde_json` I/O error).
    pub fn write_json(&self, more: &EntryList, mut out: impl Write) -> Result<(), BackupError> {
        let head = serde_json::to_vec(self)?;
        // The last field is `"entries":[...]`: leave its array open and append to it.
        let open = head
            .strip_suffix(b"]}")
            .ok_or_else(|| serde_json::Error::io(std::io::Error::other("manifest JSON does not end in entries")))?;
        out.write_all(open).map_err(serde_json::Error::io)?;
        let mut first = self.entries.is_empty();
        for e in more.iter() {
            if !first {
                out.write_all(b",").map_err(serde_json::Error::io)?;
            }
            first = false;
            serde_json::to_writer(&mut out, &e)?;
        }
        out.write_all(b"]}\n").map_err(serde_json::Error::io)?;
        out.flush().map_err(serde_json::Error::io)?;
        Ok(())
    }

    /// `ID.tar.zst`, the name errors use for the archive.
    pub fn archive_file_name(&self) -> String {
        format!("{}.tar.zst", self.id)
    }

    pub fn to_json_pretty(&self) -> Result<String, BackupError> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    /// Parses a manifest, refusing a format version newer than this crate's.
    pub fn from_json(s: &str) -> Result<Self, BackupError> {
        let m: Self = serde_json::from_str(s)?;
        if m.format_version == 0 || m.format_version > FORMAT_VERSION {
            return Err(BackupError::ManifestVersion { found: m.format_version, supported: FORMAT_VERSION });
        }
        Ok(m)
    }
}

/// How much of a manifest a reader takes before it refuses it. voltool writes ~200 bytes per
/// entry (a path, a sha256, the metadata), so the default of 1 GiB is ~5 million entries;
/// every entry is at least ~70 bytes of JSON, so the bytes bound the entries too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestLimits {
    pub bytes: u64,
}

impl Default for ManifestLimits {
    fn default() -> Self {
        Self { bytes: 1 << 30 }
    }
}

/// The longest JSON string (path, link target, option, note) a manifest may hold, in bytes as
/// written (escapes included). serde_json gathers a string whole before handing it over, so a
/// manifest of one endless string would otherwise cost memory up to [`ManifestLimits::bytes`];
/// real strings are paths (the archiver takes at most 64 KiB) and short notes.
pub const MAX_MANIFEST_STRING: u64 = 1 << 20;

/// A reader that fails (`InvalidData`) once more than `left` bytes were asked of it, or a JSON
/// string grows past [`MAX_MANIFEST_STRING`], and says which in `over`.
struct Bounded<R> {
    inner: R,
    left: u64,
    over: Option<Over>,
    /// Bytes passed so far, and where the lexer is: in a string (its length so far), after a
    /// backslash in one.
    pos: u64,
    string: Option<u64>,
    escaped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Size,
    /// A string longer than the limit, starting near this byte.
    String(u64),
}

impl<R: std::io::Read> Bounded<R> {
    fn new(inner: R, left: u64) -> Self {
        Self { inner, left, over: None, pos: 0, string: None, escaped: false }
    }

    /// Records the first limit gone over (serde_json may read again after an error).
    fn fail(&mut self, why: Over) -> std::io::Error {
        self.over.get_or_insert(why);
        std::io::Error::new(std::io::ErrorKind::InvalidData, "over a manifest limit")
    }

    /// Follows strings through `bytes`; `Err` with the string's start once one is too long.
    fn lex(&mut self, bytes: &[u8]) -> Result<(), u64> {
        for (i, &b) in bytes.iter().enumerate() {
            let Some(len) = self.string.as_mut() else {
                if b == b'"' {
                    self.string = Some(0);
                }
                continue;
            };
            if self.escaped {
                self.escaped = false;
            } else if b == b'"' {
                self.string = None;
                continue;
            } else if b == b'\\' {
                self.escaped = true;
            }
            *len += 1;
            if *len > MAX_MANIFEST_STRING {
                return Err((self.pos + i as u64).saturating_sub(*len));
            }
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

impl<R: std::io::Read> std::io::Read for Bounded<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if let Some(why) = self.over {
            return Err(self.fail(why));
        }
        if self.left == 0 {
            // One byte more than allowed means the document is over the limit.
            if self.inner.read(&mut [0u8])? == 0 {
                return Ok(0);
            }
            return Err(self.fail(Over::Size));
        }
        let k = out.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut out[..k])?;
        self.left -= n as u64;
        if let Err(at) = self.lex(&out[..n]) {
            return Err(self.fail(Over::String(at)));
        }
        Ok(n)
    }
}

impl Manifest {
    /// Parses a manifest straight from a stream, never holding more than the parsed structs:
    /// reading stops with [`BackupError::ManifestTooLarge`] at `lim.bytes` (a 2 GiB manifest
    /// is never read whole), and with [`BackupError::ManifestString`] at a string longer than
    /// [`MAX_MANIFEST_STRING`]. `name` is for the error.
    ///
    /// # Errors
    /// [`BackupError::ManifestTooLarge`], [`BackupError::ManifestString`], [`BackupError::Manifest`] (not JSON of the expected
    /// shape, or the stream's error), [`BackupError::ManifestVersion`].
    pub fn from_reader(name: &str, r: impl std::io::Read, lim: ManifestLimits) -> Result<Self, BackupError> {
        let mut input = Bounded::new(r, lim.bytes);
        let parsed = serde_json::from_reader::<_, Self>(std::io::BufReader::with_capacity(1 << 16, &mut input));
        match input.over {
            Some(Over::Size) => return Err(BackupError::ManifestTooLarge { name: name.to_owned(), limit: lim.bytes }),
            Some(Over::String(at)) => {
                return Err(BackupError::ManifestString { name: name.to_owned(), at, limit: MAX_MANIFEST_STRING });
            }
            None => {}
        }
        let m = parsed?;
        if m.format_version == 0 || m.format_version > FORMAT_VERSION {
            return Err(BackupError::ManifestVersion { found: m.format_version, supported: FORMAT_VERSION });
        }
        Ok(m)
    }
}

/// Archive entries in a compact append-only encoding: fixed fields little-endian, the sha256
/// as 32 raw bytes, path and target length-prefixed. [`EntryList::iter`] decodes them back
/// into [`Entry`] values in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryList {
    data: Vec<u8>,
    len: usize,
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

    /// Appends one entry. Its `sha256`, if any, is stored as 32 raw bytes when it is 64 hex
    /// digits (as the archiver makes it) and read back as lowercase hex; anything else is
    /// stored as no hash.
    pub fn push(&mut self, e: &Entry) {
        let sha256 = e.sha256.as_deref().and_then(|h| {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(h, &mut raw).ok().map(|()| raw)
        });
        let d = &mut self.data;
        d.push(kind_code(e.kind));
        d.push(if sha256.is_some() { HAS_SHA } else { 0 } | if e.target.is_some() { HAS_TARGET } else { 0 });
        for v in [e.mode, e.uid, e.gid] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&e.size.to_le_bytes());
        d.extend_from_slice(&e.mtime.to_le_bytes());
        d.extend_from_slice(&e.mtime_nsec.to_le_bytes());
        if let Some(sha) = &sha256 {
            d.extend_from_slice(sha);
        }
        put_str(d, &e.path);
        if let Some(t) = &e.target {
            put_str(d, t);
        }
        self.len += 1;
    }

    /// The entries in the order they were pushed.
    pub fn iter(&self) -> EntryIter<'_> {
        EntryIter { data: &self.data }
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

/// Decodes an [`EntryList`]; built only by this module, so the encoding is trusted.
#[derive(Debug, Clone)]
pub struct EntryIter<'a> {
    data: &'a [u8],
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
        let sha256 = (flags & HAS_SHA != 0).then(|| hex::encode(self.take(32)));
        let path = self.string();
        let target = (flags & HAS_TARGET != 0).then(|| self.string());
        Some(Entry { path, kind, mode, uid, gid, size, mtime, mtime_nsec, sha256, target })
    }
}

/// One line of `ID.tar.zst.sha256`, as `sha256sum -c` reads it.
pub fn sha256sum_line(id: &str, sha256: &str) -> String {
    format!("{sha256}  {id}.tar.zst\n")
}

/// A backup ID: `<volume>-<YYYYmmddTHHMMSSZ>-<6 hex>` (the time is converted to UTC).
pub fn backup_id(volume: &str, at: OffsetDateTime, suffix: [u8; 3]) -> String {
    let t = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{volume}-{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        hex::encode(suffix)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> ArchiveSummary {
        ArchiveSummary {
            entries: vec![Entry {
                path: "a/b.txt".into(),
                kind: EntryKind::File,
                mode: 0o640,
                uid: 1000,
                gid: 1000,
                size: 3,
                mtime: 1_700_000_000,
                mtime_nsec: 5,
                sha256: Some("00".repeat(32)),
                target: None,
            }]
            .into_iter()
            .collect(),
            files: 1,
            bytes_in: 3,
            archive_size: 99,
            archive_sha256: "ab".repeat(32),
            notes: vec![],
        }
    }

    #[test]
    fn json_round_trip_and_no_password() {
        let opts: BTreeMap<String, String> =
            [("size".to_owned(), "1g".to_owned()), ("Password".to_owned(), "hunter2".to_owned())].into();
        let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
        let m = Manifest::new("v-20240506T070809Z-a1b2c3", "v", &opts, summary(), at).expect("manifest");
        let json = m.to_json_pretty().expect("json");
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains("\"created\": \"2024-05-06T07:08:09Z\""), "{json}");
        assert!(json.contains("\"kind\": \"file\""), "{json}");
        assert_eq!(Manifest::from_json(&json).expect("parse"), m);
        assert_eq!(m.archive_file_name(), "v-20240506T070809Z-a1b2c3.tar.zst");
    }

    #[test]
    fn entry_list_round_trips_every_field() {
        let entries = vec![
            Entry {
                path: "a/b.txt".into(),
                kind: EntryKind::File,
                mode: 0o4755,
                uid: u32::MAX,
                gid: 7,
                size: u64::MAX,
                mtime: -5,
                mtime_nsec: 999_999_999,
                sha256: Some("0f".repeat(32)),
                target: None,
            },
            Entry {
                path: "é/".repeat(200),
                kind: EntryKind::Symlink,
                mode: 0o777,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: i64::MAX,
                mtime_nsec: 0,
                sha256: None,
                target: Some("x".repeat(300)),
            },
            Entry {
                path: String::new(),
                kind: EntryKind::Hardlink,
                mode: 0,
                uid: 1,
                gid: 2,
                size: 0,
                mtime: 0,
                mtime_nsec: 1,
                sha256: None,
                target: Some(String::new()),
            },
            Entry { kind: EntryKind::Fifo, target: None, ..summary().entries.iter().next().expect("one") },
            Entry { kind: EntryKind::Dir, sha256: None, ..summary().entries.iter().next().expect("one") },
        ];
        let list: EntryList = entries.clone().into_iter().collect();
        assert_eq!(list.len(), entries.len());
        assert_eq!(list.iter().collect::<Vec<_>>(), entries);
    }

    #[test]
    fn streamed_manifest_parses_like_the_struct() {
        let opts: BTreeMap<String, String> =
            [("size".to_owned(), "1g".to_owned()), ("passwd".to_owned(), "hunter2".to_owned())].into();
        let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
        let mut s = summary();
        s.notes = vec!["x: socket skipped".into()];
        let head = Manifest::without_entries("v-1", "v", &opts, &s, at).expect("head");
        let mut out = Vec::new();
        head.write_json(&s.entries, &mut out).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.ends_with("}\n"), "{text}");
        let m = Manifest::new("v-1", "v", &opts, s, at).expect("manifest");
        assert_eq!(Manifest::from_json(&text).expect("parse"), m);
        // The same document as the struct's own serialization, field for field.
        assert_eq!(text.trim_end(), serde_json::to_string(&m).expect("json"));
        // Entries already in the struct come first.
        let mut two = Vec::new();
        m.write_json(&summary().entries, &mut two).expect("write");
        let parsed = Manifest::from_json(std::str::from_utf8(&two).expect("utf-8")).expect("parse");
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.entries[0], m.entries[0]);
        // No entries at all.
        let mut none = Vec::new();
        head.write_json(&EntryList::new(), &mut none).expect("write");
        assert!(Manifest::from_json(std::str::from_utf8(&none).expect("utf-8")).expect("parse").entries.is_empty());
    }

    #[test]
    fn newer_format_refused() {
        let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
        let mut m = Manifest::new("x", "v", &BTreeMap::new(), summary(), at).expect("manifest");
        m.format_version = FORMAT_VERSION + 1;
        let json = m.to_json_pretty().expect("json");
        assert!(matches!(Manifest::from_json(&json), Err(BackupError::ManifestVersion { .. })));
    }

    #[test]
    fn sha256sum_format_and_id() {
        assert_eq!(sha256sum_line("v-1", "abc"), "abc  v-1.tar.zst\n");
        let at = time::macros::datetime!(2024-05-06 07:08:09 +2);
        assert_eq!(backup_id("data", at, [0xa1, 0xb2, 0xc3]), "data-20240506T050809Z-a1b2c3");
    }

    /// A 2 GiB manifest (a valid head, then whitespace without end, streamed) stops at the
    /// limit with an error naming it, after reading no more than the limit.
    #[test]
    fn two_gib_manifest_stops_at_the_limit() {
        use std::io::Read;
        let head = br#"{"format_version":1,"id":"v-1","volume":"v","options":{},"created":"x","tool_version":"0","archive_size":0,"archive_sha256":"","files":0,"bytes":0,"entries":["#;
        let body = std::io::repeat(b' ').take(2 << 30);
        let lim = ManifestLimits { bytes: 64 << 20 };
        let e = Manifest::from_reader("v-1.manifest.json", (&head[..]).chain(body), lim).unwrap_err();
        assert!(matches!(&e, BackupError::ManifestTooLarge { limit, .. } if *limit == 64 << 20), "{e}");
        assert!(e.to_string().contains("v-1.manifest.json"), "{e}");
        // Garbage of any size fails at once.
        let zeros = std::io::repeat(0).take(2 << 30);
        assert!(matches!(Manifest::from_reader("z", zeros, ManifestLimits::default()), Err(BackupError::Manifest(_))));
    }

    #[test]
    fn from_reader_reads_what_write_json_writes() {
        let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
        let m = Manifest::new("v-1", "v", &BTreeMap::new(), summary(), at).expect("manifest");
        let json = m.to_json_pretty().expect("json");
        assert_eq!(Manifest::from_reader("m", json.as_bytes(), ManifestLimits::default()).expect("parse"), m);
        let lim = ManifestLimits { bytes: json.len() as u64 - 1 };
        assert!(matches!(Manifest::from_reader("m", json.as_bytes(), lim), Err(BackupError::ManifestTooLarge { .. })));
    }

    /// A manifest of one endless path string (streamed, 2 GiB) cost memory up to the byte
    /// limit (1 GiB), as serde_json gathers a string whole: it stops at the string limit now,
    /// naming the manifest and where the string starts.
    #[test]
    fn endless_string_in_a_manifest_stops_at_the_string_limit() {
        use std::io::Read;
        let head = br#"{"format_version":1,"id":"v-1","volume":"v","options":{},"created":"x","tool_version":"0","archive_size":0,"archive_sha256":"","files":0,"bytes":0,"entries":[{"path":""#;
        let body = std::io::repeat(b'a').take(2 << 30);
        let mut input = Counted((&head[..]).chain(body), 0);
        let e = Manifest::from_reader("v-1.manifest.json", &mut input, ManifestLimits::default()).unwrap_err();
        // `at` is the string's opening quote.
        let quote = head.len() as u64 - 1;
        assert!(
            matches!(&e, BackupError::ManifestString { at, limit, .. } if *at == quote && *limit == MAX_MANIFEST_STRING),
            "{e}"
        );
        assert!(e.to_string().contains("v-1.manifest.json"), "{e}");
        assert!(input.1 < 4 << 20, "read {} bytes before refusing", input.1);
    }

    /// Strings up to the limit parse, escapes included (an escaped quote does not end one).
    #[test]
    fn strings_up_to_the_limit_and_escaped_quotes_parse() {
        let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
        let mut m = Manifest::new("v-1", "v", &BTreeMap::new(), summary(), at).expect("manifest");
        m.entries[0].path = format!("{}\"{}", "p".repeat(1000), "q".repeat(1000));
        m.notes = vec!["n".repeat(MAX_MANIFEST_STRING as usize)];
        let json = serde_json::to_string(&m).expect("json");
        assert_eq!(Manifest::from_reader("m", json.as_bytes(), ManifestLimits::default()).expect("parse"), m);
        m.notes = vec!["n".repeat(MAX_MANIFEST_STRING as usize + 1)];
        let json = serde_json::to_string(&m).expect("json");
        let e = Manifest::from_reader("m", json.as_bytes(), ManifestLimits::default()).unwrap_err();
        assert!(matches!(e, BackupError::ManifestString { .. }), "{e}");
    }

    /// A reader counting the bytes it gave.
    struct Counted<R>(R, u64);

    impl<R: std::io::Read> std::io::Read for Counted<R> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(out)?;
            self.1 += n as u64;
            Ok(n)
        }
    }
}
