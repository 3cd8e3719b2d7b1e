//! The manifest (`ID.manifest.json`) and the `ID.tar.zst.sha256` line.
//!
//! While archiving, entries are kept in an [`EntryList`], a compact binary log (about 70 bytes
//! plus the path per entry, against ~500 for a `Vec<Entry>` of owned strings), and the backup
//! engine writes the manifest from it as a stream ([`Manifest::write_json`]): the manifest
//! never exists whole in memory, neither as structs nor as text. [`Manifest`] (every entry as
//! a struct) is what readers parse.
//!
//! Layout: this file holds the manifest's shape and its JSON; `entries` the compact
//! [`EntryList`]; `bounded` the limits a reader of an untrusted manifest enforces while
//! parsing ([`ManifestLimits`], [`MAX_MANIFEST_STRING`]); `head` a manifest without its
//! entries ([`ManifestHead`], for listing a target).

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::archive::ArchiveSummary;
use crate::error::BackupError;

mod bounded;
mod entries;
mod head;

#[cfg(test)]
mod tests;

use bounded::{Bounded, Over};
pub use entries::{EntryIter, EntryList};
pub use head::ManifestHead;

/// The newest manifest format this crate writes and reads: 2 for the links of incremental
/// chains (an older voltool refuses them rather than restore one link as if it were whole);
/// full backups keep writing [`FULL_FORMAT_VERSION`], which every voltool reads.
pub const FORMAT_VERSION: u32 = 2;
/// The format of a full backup's manifest.
pub const FULL_FORMAT_VERSION: u32 = 1;

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
    /// What the next incremental backup compares with (see [`crate::incremental`]): the
    /// inode number and the status change time. 0 in manifests written before incrementals.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub ino: u64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ctime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ctime_nsec: u32,
    /// Which link of the chain holds the entry in its archive: the manifest's own
    /// [`Manifest::level`] when this backup's archive does, an earlier one for an entry an
    /// incremental found unchanged. 0 throughout a full backup.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub level: u32,
    /// Where the entry is in its link's archive, to read it alone: the compressed offset and
    /// length of the zstd frames that hold its header and content (each frame decodes on its
    /// own), and the decoded bytes to skip in the first one. 0 in manifests written before.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub frame_at: u64,
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub frame_len: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frame_skip: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// The link an incremental backup was taken against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub id: String,
    /// The parent's `archive_sha256`, so a chain is checked link by link.
    pub archive_sha256: String,
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
    /// The link's place in its chain: 0 for a full backup, n for the n-th incremental.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub level: u32,
    /// The previous link (incrementals only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// How the archive object is stored: absent for a plain `ID.tar.zst`; `age` for an
    /// encrypted `ID.tar.zst.age` (whose plaintext is what `archive_size`/`archive_sha256`
    /// describe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Size in bytes and lowercase hex sha256 of the archive object as stored, when that is
    /// not the archive itself (encrypted: what `ID.tar.zst.age.sha256` holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_sha256: Option<String>,
    /// Every entry of the tree at the time of the backup, also those an incremental's archive
    /// does not hold (their [`Entry::level`] says which link does).
    /// Always the last field: [`Manifest::write_json`] appends to it (and [`ManifestHead`] stops
    /// there).
    pub entries: Vec<Entry>,
}

/// How a backup's objects are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// age (age-encryption.org/v1): `ID.tar.zst.age`, `ID.manifest.json.age`.
    Age,
}

/// The names of a backup's three objects on its target, in the order they are committed
/// (archive, manifest, checksum): `ID.tar.zst`, `ID.manifest.json`, `ID.tar.zst.sha256`, or
/// for an encrypted backup `ID.tar.zst.age`, `ID.manifest.json.age`, `ID.tar.zst.age.sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectNames {
    /// The backup ID.
    pub id: String,
    /// The `.age` names.
    pub encrypted: bool,
    pub archive: String,
    pub manifest: String,
    pub checksum: String,
}

impl ObjectNames {
    #[must_use]
    pub fn new(id: &str, encrypted: bool) -> Self {
        let age = if encrypted { ".age" } else { "" };
        Self {
            id: id.to_owned(),
            encrypted,
            archive: format!("{id}.tar.zst{age}"),
            manifest: format!("{id}.manifest.json{age}"),
            checksum: format!("{id}.tar.zst{age}.sha256"),
        }
    }

    /// The backup ID and whether it is encrypted, for an archive object's name
    /// (`ID.tar.zst` or `ID.tar.zst.age`); `None` for any other name.
    #[must_use]
    pub fn parse_archive(name: &str) -> Option<(&str, bool)> {
        if let Some(id) = name.strip_suffix(".tar.zst.age") {
            return Some((id, true));
        }
        name.strip_suffix(".tar.zst").map(|id| (id, false))
    }

    /// The three names, archive first.
    #[must_use]
    pub fn all(&self) -> [&str; 3] {
        [&self.archive, &self.manifest, &self.checksum]
    }

    /// The checksum object's one line, as `sha256sum -c` reads it: the sha256 of the archive
    /// object as stored, and its name.
    #[must_use]
    pub fn checksum_line(&self, stored_sha256: &str) -> String {
        format!("{stored_sha256}  {}\n", self.archive)
    }
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
            format_version: if summary.level > 0 { FORMAT_VERSION } else { FULL_FORMAT_VERSION },
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
            level: summary.level,
            parent: summary.parent.clone(),
            encryption: None,
            stored_size: None,
            stored_sha256: None,
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

    /// `ID.tar.zst` (`ID.tar.zst.age` when encrypted), the name errors use for the archive.
    pub fn archive_file_name(&self) -> String {
        self.names().archive
    }

    /// The names of the backup's objects.
    pub fn names(&self) -> ObjectNames {
        ObjectNames::new(&self.id, self.encryption.is_some())
    }

    /// The sha256 the checksum object holds: of the archive object as stored.
    pub fn stored_sha256(&self) -> &str {
        self.stored_sha256.as_deref().unwrap_or(&self.archive_sha256)
    }

    /// Whether this backup's own archive holds `e` (an incremental's holds only what changed).
    pub fn holds(&self, e: &Entry) -> bool {
        e.level == self.level
    }

    pub fn to_json_pretty(&self) -> Result<String, BackupError> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    /// Parses a manifest, refusing a format version newer than this crate's.
    pub fn from_json(s: &str) -> Result<Self, BackupError> {
        serde_json::from_str::<Self>(s)?.supported()
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
        parsed?.supported()
    }

    /// The manifest, unless its format version is one this crate does not read.
    fn supported(self) -> Result<Self, BackupError> {
        check_version(self.format_version)?;
        Ok(self)
    }
}

/// Refuses a format version this crate does not read ([`BackupError::ManifestVersion`]).
fn check_version(found: u32) -> Result<(), BackupError> {
    if found == 0 || found > FORMAT_VERSION {
        return Err(BackupError::ManifestVersion { found, supported: FORMAT_VERSION });
    }
    Ok(())
}

/// One line of `ID.tar.zst.sha256`, as `sha256sum -c` reads it (an unencrypted backup's;
/// [`ObjectNames::checksum_line`] for either kind).
pub fn sha256sum_line(id: &str, sha256: &str) -> String {
    ObjectNames::new(id, false).checksum_line(sha256)
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
