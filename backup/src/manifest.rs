//! The manifest (`ID.manifest.json`) and the `ID.tar.zst.sha256` line.

use std::collections::BTreeMap;

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
    /// `options`.
    pub fn new(
        id: &str,
        volume: &str,
        options: &BTreeMap<String, String>,
        summary: ArchiveSummary,
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
            archive_sha256: summary.archive_sha256,
            files: summary.files,
            bytes: summary.bytes_in,
            notes: summary.notes,
            entries: summary.entries,
        })
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
            }],
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
}
