//! A backup's manifest as a restore reads it: the head at once, the entries on a thread of
//! their own while the archive is extracted (bounded: [`crate::backups::MANIFEST_LIMIT`]).

use std::collections::BTreeMap;
use std::io::Read;

use serde::Deserialize;
use voltool_backup::Manifest;

use crate::error::{Error, Result};

/// A backup's manifest opened, with only its head read and parsed.
///
/// The head (format version, the volume's options) is read at once: creating the volume needs
/// it, and a manifest of a newer format is refused before anything happens. voltool writes
/// the entries last, so the head is what comes before them (a few hundred bytes); the rest
/// (~20 MB of JSON for 100,000 files) is read and parsed by [`PendingManifest::parse`] on a
/// thread of its own, alongside the extraction, and is only needed for the check before the
/// swap. A manifest laid out otherwise is parsed whole at once instead, as it streams in (never
/// held as text).
pub struct PendingManifest {
    name: String,
    /// What was read so far, and the rest of the stream (`None`: all was read).
    read: Vec<u8>,
    rest: Option<Box<dyn Read + Send>>,
    /// A manifest not laid out as voltool writes it, parsed at once.
    parsed: Option<Box<Manifest>>,
    pub options: BTreeMap<String, String>,
    /// The archive sha256 the manifest must record (the catalog's, see [`Self::expect_archive`]).
    expect_archive: Option<String>,
}

impl std::fmt::Debug for PendingManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingManifest")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What [`PendingManifest`] reads at once.
#[derive(Deserialize)]
struct ManifestHead {
    format_version: u32,
    options: BTreeMap<String, String>,
}

/// Where a manifest's entries begin, as voltool writes it (compact JSON, entries last).
const ENTRIES_KEY: &[u8] = b",\"entries\":[";
/// How much is read looking for [`ENTRIES_KEY`] before reading the whole manifest instead.
const HEAD_MAX: usize = 1 << 20;

/// A manifest being parsed: [`ParsingManifest::join`] waits for it.
pub struct ParsingManifest {
    name: String,
    thread: std::thread::JoinHandle<std::result::Result<Manifest, ManifestError>>,
}

/// Why a manifest's entries could not be had; each names the manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// It is not a manifest this voltool reads, or larger than the limit.
    #[error("{name}: {source}")]
    Parse { name: String, source: voltool_backup::BackupError },
    /// It records another archive than the one the catalog recorded for the backup.
    #[error(
        "{name} records archive sha256 {recorded}, the catalog recorded {want} when the backup was made: the backup was changed since"
    )]
    NotTheCatalogs { name: String, recorded: String, want: String },
    /// The parsing thread could not start.
    #[error("starting the thread that parses {name}: {source}")]
    Thread { name: String, source: std::io::Error },
    /// The parsing thread panicked.
    #[error("parsing {name} failed")]
    Panicked { name: String },
}

impl PendingManifest {
    /// Reads and checks the head of the manifest `name` from `input`.
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming the manifest when it cannot be read, the head is not
    /// valid JSON, or the format is newer than this voltool reads.
    pub fn open(name: String, mut input: Box<dyn Read + Send>) -> Result<Self> {
        let mut read = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut ended = false;
        // Searched up to here (a key may straddle two reads).
        let mut from = 0;
        let cut = loop {
            if let Some(i) = read[from..].windows(ENTRIES_KEY.len()).position(|w| w == ENTRIES_KEY) {
                break Some(from + i);
            }
            from = read.len().saturating_sub(ENTRIES_KEY.len() - 1);
            if read.len() >= HEAD_MAX {
                break None;
            }
            let n = input.read(&mut chunk).map_err(|e| Error::BadRequest(format!("reading {name}: {e}")))?;
            if n == 0 {
                ended = true;
                break None;
            }
            read.extend_from_slice(&chunk[..n]);
        };
        let head = cut.and_then(|i| {
            let mut text = read[..i].to_vec();
            text.push(b'}');
            serde_json::from_slice::<ManifestHead>(&text).ok()
        });
        let Some(head) = head else {
            // Not laid out as voltool writes it: parsed whole now, as it streams in, bounded.
            let rest: Box<dyn Read + Send> = if ended { Box::new(std::io::empty()) } else { input };
            let lim = voltool_backup::ManifestLimits { bytes: crate::backups::MANIFEST_LIMIT };
            let m = Manifest::from_reader(&name, std::io::Cursor::new(read).chain(rest), lim)
                .map_err(|e| Error::BadRequest(format!("{name}: {e}")))?;
            let options = m.options.clone();
            return Ok(Self {
                name,
                read: Vec::new(),
                rest: None,
                parsed: Some(Box::new(m)),
                options,
                expect_archive: None,
            });
        };
        if head.format_version == 0 || head.format_version > voltool_backup::FORMAT_VERSION {
            let e = voltool_backup::BackupError::ManifestVersion {
                found: head.format_version,
                supported: voltool_backup::FORMAT_VERSION,
            };
            return Err(Error::BadRequest(format!("{name}: {e}")));
        }
        Ok(Self { name, read, rest: Some(input), parsed: None, options: head.options, expect_archive: None })
    }

    /// [`Self::open`] over a manifest already in memory.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn new(name: String, text: String) -> Result<Self> {
        Self::open(name, Box::new(std::io::Cursor::new(text.into_bytes())))
    }

    /// Holds the manifest to the archive sha256 the catalog recorded when the backup was made:
    /// an archive and manifest rewritten together on the target (consistent with each other)
    /// are then refused too.
    #[must_use]
    pub fn expect_archive(mut self, sha256: Option<String>) -> Self {
        self.expect_archive = sha256;
        self
    }

    /// Starts reading the rest of the manifest and parsing it whole on its own thread.
    ///
    /// # Errors
    /// [`ManifestError::Thread`] when the thread cannot start.
    pub fn parse(self) -> std::result::Result<ParsingManifest, ManifestError> {
        let Self { name, read, rest, parsed, expect_archive, .. } = self;
        let n2 = name.clone();
        let thread = std::thread::Builder::new()
            .name("manifest-parse".into())
            .spawn(move || {
                // Parsed as it is read, never held whole as text, and stopped at the limit.
                let m = match parsed {
                    Some(m) => *m,
                    None => {
                        let rest: Box<dyn Read + Send> = rest.unwrap_or_else(|| Box::new(std::io::empty()));
                        let lim = voltool_backup::ManifestLimits { bytes: crate::backups::MANIFEST_LIMIT };
                        Manifest::from_reader(&n2, std::io::Cursor::new(read).chain(rest), lim)
                            .map_err(|source| ManifestError::Parse { name: n2.clone(), source })?
                    }
                };
                match expect_archive {
                    Some(want) if want != m.archive_sha256 => {
                        Err(ManifestError::NotTheCatalogs { name: n2, recorded: m.archive_sha256, want })
                    }
                    _ => Ok(m),
                }
            })
            .map_err(|source| ManifestError::Thread { name: name.clone(), source })?;
        Ok(ParsingManifest { name, thread })
    }
}

impl ParsingManifest {
    /// The parsed manifest.
    ///
    /// # Errors
    /// The manifest's [`ManifestError`], naming it.
    pub fn join(self) -> std::result::Result<Manifest, ManifestError> {
        self.thread.join().map_err(|_| ManifestError::Panicked { name: self.name })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_head_is_read_at_once_and_its_entries_alongside() {
        let newer =
            format!(r#"{{"format_version":{},"options":{{}},"entries":[]}}"#, voltool_backup::FORMAT_VERSION + 1);
        let e = PendingManifest::new("x.manifest.json".into(), newer).unwrap_err().to_string();
        assert!(e.contains("x.manifest.json"), "names the manifest: {e}");
        assert!(PendingManifest::new("x.manifest.json".into(), "{".into()).is_err(), "not JSON");
        // A head that reads but entries that do not: the parse (joined before the swap) fails.
        let bad = r#"{"format_version":1,"options":{"size":"1g"},"entries":[7]}"#;
        let p = PendingManifest::new("y.manifest.json".into(), bad.into()).unwrap();
        assert_eq!(p.options.get("size").map(String::as_str), Some("1g"));
        let e = p.parse().unwrap().join().unwrap_err().to_string();
        assert!(e.contains("y.manifest.json"), "names the manifest: {e}");
        // Laid out otherwise (no `,"entries":[`): parsed whole at once, so refused at once.
        let other = r#"{"format_version":1,"options":{"size":"1g"},"entries":7}"#;
        let e = PendingManifest::new("w.manifest.json".into(), other.into()).unwrap_err().to_string();
        assert!(e.contains("w.manifest.json"), "names the manifest: {e}");
        // A valid manifest in another layout (entries first) is read and kept parsed.
        let first = r#"{"entries":[],"format_version":1,"id":"v-20260101T000000Z-abcdef","volume":"v","options":{"size":"2g"},"created":"2026-01-01T00:00:00Z","tool_version":"0","archive_size":1,"archive_sha256":"x","files":0,"bytes":0}"#;
        let p = PendingManifest::new("v.manifest.json".into(), first.into()).unwrap();
        assert_eq!(p.options.get("size").map(String::as_str), Some("2g"));
        assert_eq!(p.parse().unwrap().join().unwrap().archive_sha256, "x");
    }

    /// A reader that hands out `text` 1000 bytes at a time.
    struct Trickle {
        text: Vec<u8>,
        at: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(1000).min(self.text.len() - self.at);
            out[..n].copy_from_slice(&self.text[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn only_the_head_is_read_at_once_and_the_rest_on_the_parsing_thread() {
        let entries: Vec<String> = (0..20_000)
            .map(|i| {
                format!(
                    r#"{{"path":"f{i}","kind":"file","mode":420,"uid":0,"gid":0,"mtime":1,"size":1,"sha256":"{}"}}"#,
                    "a".repeat(64)
                )
            })
            .collect();
        let text = format!(
            r#"{{"format_version":1,"id":"v-20260101T000000Z-abcdef","volume":"v","options":{{"size":"1g"}},"created":"2026-01-01T00:00:00Z","tool_version":"0","archive_size":1,"archive_sha256":"x","files":20000,"bytes":20000,"entries":[{}]}}"#,
            entries.join(",")
        );
        assert!(text.len() > 2 * HEAD_MAX, "bigger than what the head read may take");
        let p = PendingManifest::open(
            "z.manifest.json".into(),
            Box::new(Trickle { text: text.clone().into_bytes(), at: 0 }),
        )
        .unwrap();
        assert_eq!(p.options.get("size").map(String::as_str), Some("1g"));
        assert!(p.read.len() < 64 * 1024, "read {} bytes for the head", p.read.len());
        let m = p.parse().unwrap().join().unwrap();
        assert_eq!(m.entries.len(), 20_000);
        assert_eq!(m.entries[19_999].path, "f19999");
        // Held to the catalog's archive sha256: the same passes, another is refused.
        let held = |sha: &str| {
            PendingManifest::new("z.manifest.json".into(), text.clone())
                .unwrap()
                .expect_archive(Some(sha.into()))
                .parse()
                .unwrap()
                .join()
        };
        assert!(held("x").is_ok());
        let e = held("y").unwrap_err().to_string();
        assert!(e.contains("catalog") && e.contains("z.manifest.json"), "{e}");
    }
}
