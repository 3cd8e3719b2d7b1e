//! The head of a manifest: its fields but the entries, for listing what a target holds
//! without reading every file's line of every backup.
//!
//! voltool writes `entries` last (the field order of [`Manifest`], also when streamed by
//! [`Manifest::write_json`]), so [`ManifestHead::from_reader`] stops reading at `entries`
//! once it has every field it needs: the head of a manifest of a million entries costs one
//! 64 KiB read. What a document has after its entries is not read (no manifest voltool writes
//! has anything there); a manifest that puts `entries` before a needed field is read on, its
//! entries skipped without being kept. Either way the limits of [`Manifest::from_reader`]
//! apply: objects on a target are anybody's input.

use std::fmt;

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::bounded::{Bounded, Over};
use super::{Encryption, MAX_MANIFEST_STRING, Manifest, ManifestLimits, ParentRef};
use crate::error::BackupError;

/// A manifest's fields but its entries, options and notes: what a listing of a target shows
/// and what `backup sync` records in a catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHead {
    pub format_version: u32,
    pub id: String,
    pub volume: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub tool_version: String,
    pub archive_size: u64,
    pub archive_sha256: String,
    pub files: u64,
    pub bytes: u64,
    /// 0 for a full backup, n for the n-th incremental of its chain.
    pub level: u32,
    pub parent: Option<ParentRef>,
    /// How the archive is stored (encrypted), and the stored object's size and sha256 when that
    /// is not the archive itself.
    pub encryption: Option<Encryption>,
    pub stored_size: Option<u64>,
    pub stored_sha256: Option<String>,
}

impl ManifestHead {
    /// The head of a whole manifest.
    pub fn of(m: &Manifest) -> Self {
        Self {
            format_version: m.format_version,
            id: m.id.clone(),
            volume: m.volume.clone(),
            created: m.created.clone(),
            tool_version: m.tool_version.clone(),
            archive_size: m.archive_size,
            archive_sha256: m.archive_sha256.clone(),
            files: m.files,
            bytes: m.bytes,
            level: m.level,
            parent: m.parent.clone(),
            encryption: m.encryption,
            stored_size: m.stored_size,
            stored_sha256: m.stored_sha256.clone(),
        }
    }

    /// Reads the head of the manifest `name` from a stream (see the module docs for where it
    /// stops), within `lim` and [`MAX_MANIFEST_STRING`].
    ///
    /// # Errors
    /// As [`Manifest::from_reader`]: [`BackupError::ManifestTooLarge`],
    /// [`BackupError::ManifestString`], [`BackupError::Manifest`] (not a JSON object of the
    /// manifest's shape, a field missing, or the stream's error),
    /// [`BackupError::ManifestVersion`].
    pub fn from_reader(name: &str, r: impl std::io::Read, lim: ManifestLimits) -> Result<Self, BackupError> {
        let mut input = Bounded::new(r, lim.bytes);
        let mut head = None;
        let parsed = {
            let buffered = std::io::BufReader::with_capacity(1 << 16, &mut input);
            serde_json::Deserializer::from_reader(buffered).deserialize_map(HeadVisitor { out: &mut head })
        };
        if let Some(h) = head {
            // Filled in only once every needed field was read, the visitor's way of stopping
            // early: whatever error came with it is that stop.
            return h.supported();
        }
        match input.over {
            Some(Over::Size) => Err(BackupError::ManifestTooLarge { name: name.to_owned(), limit: lim.bytes }),
            Some(Over::String(at)) => {
                Err(BackupError::ManifestString { name: name.to_owned(), at, limit: MAX_MANIFEST_STRING })
            }
            None => match parsed {
                Err(e) => Err(e.into()),
                Ok(()) => Err(BackupError::Manifest(de::Error::custom("the manifest head was not read"))),
            },
        }
    }

    fn supported(self) -> Result<Self, BackupError> {
        super::check_version(self.format_version)?;
        Ok(self)
    }
}

/// The keys of a manifest a head takes (every other one is skipped).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    FormatVersion,
    Id,
    Volume,
    Created,
    ToolVersion,
    ArchiveSize,
    ArchiveSha256,
    Files,
    Bytes,
    Level,
    Parent,
    Encryption,
    StoredSize,
    StoredSha256,
    Entries,
    #[serde(other)]
    Other,
}

/// The head's fields as they are read.
#[derive(Default)]
struct Fields {
    format_version: Option<u32>,
    id: Option<String>,
    volume: Option<String>,
    created: Option<String>,
    tool_version: Option<String>,
    archive_size: Option<u64>,
    archive_sha256: Option<String>,
    files: Option<u64>,
    bytes: Option<u64>,
    level: u32,
    parent: Option<ParentRef>,
    encryption: Option<Encryption>,
    stored_size: Option<u64>,
    stored_sha256: Option<String>,
}

impl Fields {
    /// The head, or the first required field that is missing.
    fn head(self) -> Result<ManifestHead, &'static str> {
        Ok(ManifestHead {
            format_version: self.format_version.ok_or("format_version")?,
            id: self.id.ok_or("id")?,
            volume: self.volume.ok_or("volume")?,
            created: self.created.ok_or("created")?,
            tool_version: self.tool_version.ok_or("tool_version")?,
            archive_size: self.archive_size.ok_or("archive_size")?,
            archive_sha256: self.archive_sha256.ok_or("archive_sha256")?,
            files: self.files.ok_or("files")?,
            bytes: self.bytes.ok_or("bytes")?,
            level: self.level,
            parent: self.parent,
            encryption: self.encryption,
            stored_size: self.stored_size,
            stored_sha256: self.stored_sha256,
        })
    }

    fn has_required(&self) -> bool {
        self.format_version.is_some()
            && self.id.is_some()
            && self.volume.is_some()
            && self.created.is_some()
            && self.tool_version.is_some()
            && self.archive_size.is_some()
            && self.archive_sha256.is_some()
            && self.files.is_some()
            && self.bytes.is_some()
    }
}

/// Reads the manifest object's keys in order; sets `out` when the head is complete.
struct HeadVisitor<'a> {
    out: &'a mut Option<ManifestHead>,
}

impl<'de> Visitor<'de> for HeadVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a backup manifest (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::FormatVersion => f.format_version = Some(map.next_value()?),
                Key::Id => f.id = Some(map.next_value()?),
                Key::Volume => f.volume = Some(map.next_value()?),
                Key::Created => f.created = Some(map.next_value()?),
                Key::ToolVersion => f.tool_version = Some(map.next_value()?),
                Key::ArchiveSize => f.archive_size = Some(map.next_value()?),
                Key::ArchiveSha256 => f.archive_sha256 = Some(map.next_value()?),
                Key::Files => f.files = Some(map.next_value()?),
                Key::Bytes => f.bytes = Some(map.next_value()?),
                Key::Level => f.level = map.next_value()?,
                Key::Parent => f.parent = map.next_value()?,
                Key::Encryption => f.encryption = map.next_value()?,
                Key::StoredSize => f.stored_size = map.next_value()?,
                Key::StoredSha256 => f.stored_sha256 = map.next_value()?,
                Key::Entries if f.has_required() => {
                    // Stop here: the entries are not read (an error is serde's only way out
                    // of a map; `from_reader` knows it by `out` being set).
                    *self.out = f.head().ok();
                    return Err(de::Error::custom("stopped at the entries"));
                }
                Key::Entries | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        *self.out = Some(f.head().map_err(de::Error::missing_field)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;

    use super::*;
    use crate::manifest::{Entry, EntryKind, EntryList};

    fn entry(i: usize) -> Entry {
        Entry {
            path: format!("dir/file-{i:06}.txt"),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            sha256: Some("0f".repeat(32)),
            target: None,
            ino: i as u64 + 1,
            ctime: 0,
            ctime_nsec: 0,
            level: 1,
            frame_at: 0,
            frame_len: 0,
            frame_skip: 0,
        }
    }

    /// An incremental's manifest as the engine streams it: `n` entries.
    fn manifest_json(n: usize) -> (ManifestHead, Vec<u8>) {
        let summary = crate::ArchiveSummary {
            entries: (0..n).map(entry).collect::<EntryList>(),
            files: n as u64,
            bytes_in: n as u64,
            archive_size: 1234,
            archive_sha256: "ab".repeat(32),
            notes: vec!["a note".into()],
            level: 1,
            parent: Some(ParentRef { id: "v-20240506T000000Z-000000".into(), archive_sha256: "cd".repeat(32) }),
            unchanged: 0,
        };
        let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
        let opts: BTreeMap<String, String> = [("size".to_owned(), "1g".to_owned())].into();
        let m = Manifest::without_entries("v-20240506T070809Z-a1b2c3", "v", &opts, &summary, at).expect("manifest");
        let mut out = Vec::new();
        m.write_json(&summary.entries, &mut out).expect("json");
        (ManifestHead::of(&m), out)
    }

    /// Counts the bytes read through it.
    struct Counting<'a>(&'a [u8], usize);

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n;
            Ok(n)
        }
    }

    fn head(json: &[u8], bytes: u64) -> Result<ManifestHead, BackupError> {
        ManifestHead::from_reader("m.json", json, ManifestLimits { bytes })
    }

    #[test]
    fn the_head_of_a_large_manifest_costs_one_read() {
        let (want, json) = manifest_json(50_000);
        assert!(json.len() > 5 << 20, "{} bytes", json.len());
        let mut r = Counting(&json, 0);
        let got = ManifestHead::from_reader("m.json", &mut r, ManifestLimits::default()).expect("head");
        assert_eq!(got, want);
        assert_eq!(got.level, 1);
        assert!(r.1 <= 1 << 16, "read {} bytes", r.1);
        let whole = Manifest::from_json(std::str::from_utf8(&json).expect("utf-8")).expect("manifest");
        assert_eq!(ManifestHead::of(&whole), got);
    }

    #[test]
    fn fields_after_the_entries_are_found_and_the_entries_skipped() {
        let (want, json) = manifest_json(3);
        let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
        let mut reordered = String::from("{\"entries\":");
        reordered.push_str(&v["entries"].to_string());
        for (k, val) in v.as_object().expect("object") {
            if k != "entries" {
                reordered.push_str(&format!(",{}:{val}", serde_json::to_string(k).expect("key")));
            }
        }
        reordered.push('}');
        assert_eq!(head(reordered.as_bytes(), 1 << 20).expect("head"), want);
        // A full backup's manifest has neither level nor parent.
        let full = reordered.replace("\"level\":1,", "").replace(&format!(",\"parent\":{}", v["parent"]), "");
        let h = head(full.as_bytes(), 1 << 20).expect("head");
        assert_eq!((h.level, h.parent), (0, None));
    }

    #[test]
    fn hostile_manifests_are_refused_within_the_limits() {
        let (_, json) = manifest_json(2_000);
        let text = String::from_utf8(json).expect("utf-8");
        // Entries first, a needed field only after them: the size limit stops the reading.
        let late = format!("{{\"entries\":{},\"id\":\"x\"}}", &text[text.find("[{").expect("entries")..text.len() - 2]);
        assert!(matches!(head(late.as_bytes(), 10_000), Err(BackupError::ManifestTooLarge { limit: 10_000, .. })));
        let long = format!("{{\"id\":\"{}\"}}", "x".repeat(MAX_MANIFEST_STRING as usize + 10));
        assert!(matches!(head(long.as_bytes(), 1 << 30), Err(BackupError::ManifestString { .. })));
        for bad in ["", "[]", "\"x\"", "{", "not json", "{\"id\": 5}", "{\"entries\": []}"] {
            let e = head(bad.as_bytes(), 1 << 20).expect_err(bad);
            assert!(matches!(e, BackupError::Manifest(_)), "{bad}: {e:?}");
        }
        let e = head(br#"{"id":"x"}"#, 1 << 20).expect_err("missing fields");
        assert!(e.to_string().contains("missing field `format_version`"), "{e}");
        let newer = text.replacen("\"format_version\":2", "\"format_version\":99", 1);
        assert!(matches!(head(newer.as_bytes(), 1 << 30), Err(BackupError::ManifestVersion { found: 99, .. })));
    }
}
