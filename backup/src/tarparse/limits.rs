//! What the tar reader accepts from a stream before it refuses it, and its errors.
//!
//! Every length and count in a tar stream comes from whoever made it. Each is checked against
//! [`Limits`] before memory is spent on it: a record's size before it is read, a path's length
//! before it is kept, an xattr before it is stored.

use std::fmt;
use std::io;

/// Bounds on what one archive may ask of the reader. The defaults are generous for real
/// archives (GNU tar and libarchive write far less) and keep a hostile stream's cost to a few
/// MiB per entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Extended headers (pax `x`/`g`, GNU `L`/`K`) in a row before one entry.
    pub meta_headers: u32,
    /// Their total size in bytes (each one's data, without padding).
    pub meta_bytes: u64,
    /// The size of one pax header or GNU long-name record.
    pub meta_record: u64,
    /// pax records (`LEN KEY=VALUE`) applying to one entry.
    pub pax_records: u32,
    /// `SCHILY.xattr.*` records of one entry.
    pub xattrs: u32,
    /// The length of one xattr's name (Linux: 255).
    pub xattr_name: usize,
    /// The size of one xattr's value (Linux: 64 KiB).
    pub xattr_value: usize,
    /// The names and values of one entry's xattrs together.
    pub xattr_total: usize,
    /// The length of a path or link target.
    pub path: usize,
    /// Entries in the whole archive.
    pub entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            meta_headers: 64,
            // An incremental's directory listing (`GNU.dumpdir`) is one record: 16 MiB holds a
            // directory of about a million entries.
            meta_bytes: 18 << 20,
            meta_record: 16 << 20,
            pax_records: 10_000,
            xattrs: 1_024,
            xattr_name: 255,
            xattr_value: 64 << 10,
            xattr_total: 1 << 20,
            path: 64 << 10,
            entries: 100_000_000,
        }
    }
}

/// Which limit a stream went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MetaHeaders,
    MetaBytes,
    MetaRecord,
    PaxRecords,
    Xattrs,
    XattrName,
    XattrValue,
    XattrTotal,
    Path,
    Entries,
}

impl Limit {
    fn what(self) -> &'static str {
        match self {
            Self::MetaHeaders => "extended headers in a row",
            Self::MetaBytes => "bytes of extended headers",
            Self::MetaRecord => "bytes in one extended header",
            Self::PaxRecords => "pax records",
            Self::Xattrs => "xattrs",
            Self::XattrName => "bytes in an xattr name",
            Self::XattrValue => "bytes in an xattr value",
            Self::XattrTotal => "bytes of xattrs",
            Self::Path => "bytes in a path or link target",
            Self::Entries => "entries",
        }
    }
}

/// Where in the stream something went wrong: an entry's path once it is known, else the
/// stream offset of the header being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    Entry(String),
    Offset(u64),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Entry(p) => write!(f, "entry {p:?}"),
            Self::Offset(o) => write!(f, "the header at offset {o}"),
        }
    }
}

impl At {
    /// The entry named by `path` when there is one, else the offset.
    pub(super) fn of(path: Option<&[u8]>, offset: u64) -> Self {
        match path {
            Some(p) if !p.is_empty() => {
                // At most 200 bytes of a (possibly 64 KiB) name in a message.
                let cut = &p[..p.len().min(200)];
                let mut s = String::from_utf8_lossy(cut).into_owned();
                if cut.len() < p.len() {
                    s.push_str("...");
                }
                Self::Entry(s)
            }
            _ => Self::Offset(offset),
        }
    }
}

/// What reading a tar stream can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The stream itself failed (decoder, disk, network).
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
    /// The stream ends inside a header, a record, an entry's contents or its padding.
    #[error("the archive ends inside {what} (at offset {offset})")]
    Truncated { what: &'static str, offset: u64 },
    /// A header that is not a tar header (checksum, unreadable numbers).
    #[error("{at}: {reason}")]
    Damaged { at: At, reason: &'static str },
    /// The stream asks for more than [`Limits`] allows.
    #[error("{at}: more than {max} {} ({found})", .limit.what())]
    TooLarge { at: At, limit: Limit, found: u64, max: u64 },
}

impl TarError {
    /// The limit this error is about, if it is one.
    #[must_use]
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Self::TooLarge { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}

impl From<TarError> for io::Error {
    fn from(e: TarError) -> Self {
        match e {
            TarError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// `Err(TooLarge)` when `found > max`.
pub(super) fn check(at: impl FnOnce() -> At, limit: Limit, found: u64, max: u64) -> Result<(), TarError> {
    if found > max { Err(TarError::TooLarge { at: at(), limit, found, max }) } else { Ok(()) }
}
