//! What a target holds, read from the target itself (SPEC §8, "the target is the source of
//! truth"): every backup found by its manifest object, checked the way `backup sync` needs
//! before it adds one to a catalog.
//!
//! Objects on a target are anybody's input (another host, a person, an attacker with write
//! access to the bucket). So: the listing is bounded ([`voltool_backup::LIST_LIMIT`]); only
//! the head of each manifest is read ([`ManifestHead`], which stops at the entries), within
//! [`MANIFEST_LIMIT`] and the manifest string limit; the checksum object is read up to
//! [`CHECKSUM_LIMIT`] bytes; every name and field that ends up in a catalog is checked (the
//! ID's shape, the volume name, the time, the chain); and a manifest that cannot be read is
//! one [`Found`] in the answer, never the end of it.
//!
//! A backup is `complete` on a target when its manifest names it, its archive object is there
//! with the size the manifest gives, and its checksum object is there and holds the
//! manifest's archive sha256 — what a run writes last, and a prune deletes first, so a backup
//! being written or deleted is never taken for a whole one.
//!
//! Encrypted backups (`ID.manifest.json.age`, SPEC §8) are found by name; [`read_head`] is the
//! one place a manifest is read for a listing, and where decrypting one with the daemon's
//! identities goes.

use std::collections::BTreeMap;

use voltool_api::FoundState;
use voltool_backup::crypt;
use voltool_backup::{
    BackupError, CryptError, Identities, ManifestHead, ManifestLimits, ObjectNames, Target, TargetError,
};
use voltool_plugin::store::BackupRow;

use super::MANIFEST_LIMIT;

/// The most bytes of a checksum object read (one `sha256sum` line is ~100).
pub(crate) const CHECKSUM_LIMIT: u64 = 4096;
const MANIFEST_SUFFIX: &str = ".manifest.json";
const AGE_SUFFIX: &str = ".age";

/// A backup's three objects on a target, plain or age-encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackupObjects {
    pub id: String,
    pub encrypted: bool,
}

impl BackupObjects {
    /// The backup a manifest object's name is of: `ID.manifest.json` or
    /// `ID.manifest.json.age`; `None` for any other object.
    pub fn from_manifest_name(name: &str) -> Option<Self> {
        let (rest, encrypted) = match name.strip_suffix(AGE_SUFFIX) {
            Some(rest) => (rest, true),
            None => (name, false),
        };
        let id = rest.strip_suffix(MANIFEST_SUFFIX).filter(|id| !id.is_empty())?;
        Some(Self { id: id.to_owned(), encrypted })
    }

    /// The objects a catalog row's backup has.
    pub fn of_row(row: &BackupRow) -> Self {
        Self { id: row.id.clone(), encrypted: row.encrypted }
    }

    /// Archive, manifest, checksum.
    pub fn names(&self) -> [String; 3] {
        let n = ObjectNames::new(&self.id, self.encrypted);
        [n.archive, n.manifest, n.checksum]
    }
}

/// Why a backup found on a target is not one a catalog can take. Which [`FoundState`] it
/// leaves the backup in is decided by the kind ([`Problem::state`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Problem {
    #[error("encrypted (needs the identity)")]
    NeedsIdentity,
    #[error("{name:?} is not a backup's manifest (ID: <volume>-<YYYYmmddTHHMMSSZ>-<6 hex>)")]
    NotAnId { name: String },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{name}: {source}")]
    Manifest { name: String, source: BackupError },
    #[error("{name} describes backup {found:?}, not {id}")]
    OtherBackup { name: String, id: String, found: String },
    #[error(transparent)]
    Crypt(CryptError),
    #[error("{name}: {field} {value:?} {why}")]
    Field { name: String, field: &'static str, value: String, why: &'static str },
    #[error("archive object {name} is missing")]
    NoArchive { name: String },
    #[error("checksum object {name} is missing (the backup is being written or deleted, or was left half)")]
    NoChecksum { name: String },
    #[error("archive object {name} is {stored} bytes, its manifest says {manifest}")]
    Size { name: String, stored: u64, manifest: u64 },
    #[error("checksum object {sum} does not match the archive sha256 in {manifest}")]
    Checksum { sum: String, manifest: String },
}

impl Problem {
    pub fn state(&self) -> FoundState {
        match self {
            Problem::NeedsIdentity => FoundState::Encrypted,
            Problem::NoArchive { .. } | Problem::NoChecksum { .. } => FoundState::Incomplete,
            Problem::NotAnId { .. }
            | Problem::Target(_)
            | Problem::Manifest { .. }
            | Problem::Crypt(_)
            | Problem::OtherBackup { .. }
            | Problem::Field { .. }
            | Problem::Size { .. }
            | Problem::Checksum { .. } => FoundState::Unreadable,
        }
    }
}

/// One backup on a target.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub objects: BackupObjects,
    pub state: FoundState,
    /// Why it is not complete.
    pub problem: Option<String>,
    /// The manifest's head, when it was read and its fields hold together (`created`
    /// normalised to `YYYY-mm-ddTHH:MM:SSZ`, the catalog's form).
    pub head: Option<ManifestHead>,
    /// The archive object's size as listed.
    pub archive_size: Option<u64>,
}

/// Every backup on `target` by its manifest object, in ID order, each checked
/// ([`inspect`]). `listed` is the target's listing, name → size.
pub(crate) fn scan(target: &dyn Target, listed: &BTreeMap<String, u64>, identities: &Identities) -> Vec<Found> {
    listed
        .keys()
        .filter_map(|n| BackupObjects::from_manifest_name(n))
        .map(|o| inspect(target, listed, o, identities))
        .collect()
}

/// Checks one backup: its manifest's head, its objects in `listed`, its checksum object.
pub(crate) fn inspect(
    target: &dyn Target,
    listed: &BTreeMap<String, u64>,
    objects: BackupObjects,
    identities: &Identities,
) -> Found {
    let archive_size = listed.get(&objects.names()[0]).copied();
    let mut head = None;
    let checked = check(target, listed, &objects, identities, &mut head);
    let (state, problem) = match checked {
        Ok(()) => (FoundState::Complete, None),
        Err(p) => (p.state(), Some(p.to_string())),
    };
    Found { objects, state, problem, head, archive_size }
}

fn check(
    target: &dyn Target,
    listed: &BTreeMap<String, u64>,
    objects: &BackupObjects,
    identities: &Identities,
    head_out: &mut Option<ManifestHead>,
) -> Result<(), Problem> {
    let [archive, manifest, sum] = objects.names();
    let Some(volume) = volume_of_id(&objects.id) else { return Err(Problem::NotAnId { name: manifest }) };
    let mut head = read_head(target, objects, identities)?;
    check_head(&manifest, &objects.id, objects.encrypted, volume, &mut head)?;
    // What the archive object holds as stored: for an encrypted backup, the age stream whose
    // size and sha256 the (authenticated) manifest records.
    let (stored_sha256, archive_bytes) = match (&head.stored_sha256, head.stored_size) {
        (Some(sha), Some(size)) if objects.encrypted => (sha.clone(), size),
        _ => (head.archive_sha256.clone(), head.archive_size),
    };
    let want_sum = ObjectNames::new(&objects.id, objects.encrypted).checksum_line(&stored_sha256);
    *head_out = Some(head);
    let Some(&stored) = listed.get(&archive) else { return Err(Problem::NoArchive { name: archive }) };
    if !listed.contains_key(&sum) {
        return Err(Problem::NoChecksum { name: sum });
    }
    if stored != archive_bytes {
        return Err(Problem::Size { name: archive, stored, manifest: archive_bytes });
    }
    let got = match target.read_small(&sum, CHECKSUM_LIMIT) {
        Err(TargetError::NotFound { .. }) => return Err(Problem::NoChecksum { name: sum }),
        r => r?,
    };
    if got != want_sum.as_bytes() {
        return Err(Problem::Checksum { sum, manifest });
    }
    Ok(())
}

/// Reads the head of a backup's manifest object: the one place a listing or a sync reads a
/// manifest. It is read up to its entries ([`ManifestHead::from_reader`], within
/// [`MANIFEST_LIMIT`]); an encrypted one (`ID.manifest.json.age`) is decrypted on the way
/// with `identities` (age authenticates every 64 KiB chunk before it is parsed).
///
/// # Errors
/// [`Problem::NeedsIdentity`] for an encrypted manifest none of `identities` opens (not read
/// at all without identities),
/// [`Problem::Target`], [`Problem::Manifest`], [`Problem::Crypt`].
pub(crate) fn read_head(
    target: &dyn Target,
    objects: &BackupObjects,
    identities: &Identities,
) -> Result<ManifestHead, Problem> {
    if objects.encrypted && identities.is_empty() {
        return Err(Problem::NeedsIdentity);
    }
    let [_, name, _] = objects.names();
    let input = target.open(&name)?;
    let lim = ManifestLimits { bytes: MANIFEST_LIMIT };
    let head = if objects.encrypted {
        let plain = crypt::open(input, identities, &name).map_err(|e| match e {
            e if e.is_missing_identity() => Problem::NeedsIdentity,
            e => Problem::Crypt(e),
        })?;
        ManifestHead::from_reader(&name, plain, lim)
    } else {
        ManifestHead::from_reader(&name, input, lim)
    };
    head.map_err(|source| Problem::Manifest { name, source })
}

/// Holds a head to what a catalog needs: it names the backup whose object it is, the volume
/// the ID names, a time, a chain that holds together.
fn check_head(name: &str, id: &str, encrypted: bool, volume: &str, head: &mut ManifestHead) -> Result<(), Problem> {
    let field = |field, value: &str, why| Problem::Field { name: name.to_owned(), field, value: short(value), why };
    if head.id != id {
        return Err(Problem::OtherBackup { name: name.to_owned(), id: id.to_owned(), found: short(&head.id) });
    }
    if head.encryption.is_some() != encrypted
        || (encrypted && !(head.stored_size.is_some() && head.stored_sha256.as_deref().is_some_and(is_sha256)))
    {
        let says = if head.encryption.is_some() { "encrypted" } else { "plain" };
        return Err(field("encryption", says, "is not how its objects are named"));
    }
    if head.volume != volume {
        return Err(field("volume", &head.volume, "is not the volume its ID names"));
    }
    let created = chrono::DateTime::parse_from_rfc3339(&head.created)
        .map_err(|_| field("created", &head.created, "is not an RFC 3339 time"))?;
    head.created = created.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if !is_sha256(&head.archive_sha256) {
        return Err(field("archive_sha256", &head.archive_sha256, "is not a sha256 in hex"));
    }
    match &head.parent {
        None if head.level == 0 => {}
        Some(p) if head.level > 0 && volume_of_id(&p.id) == Some(volume) && p.id != id => {}
        Some(p) => return Err(field("parent", &p.id, "does not fit the backup's level")),
        None => return Err(field("level", &head.level.to_string(), "is an incremental's, without a parent")),
    }
    Ok(())
}

/// A value from a manifest as a message shows it: at most 80 characters.
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The volume a backup ID names (`<volume>-<YYYYmmddTHHMMSSZ>-<6 hex>`, the volume a valid
/// volume name), or `None` for anything else.
pub(crate) fn volume_of_id(id: &str) -> Option<&str> {
    const TAIL: usize = "-20260101T000000Z-abcdef".len();
    let split = id.len().checked_sub(TAIL).filter(|&i| i > 0 && id.is_char_boundary(i))?;
    let (volume, tail) = id.split_at(split);
    let b = tail.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let hex = b[18..].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    let shape = b[0] == b'-' && digits(1..9) && b[9] == b'T' && digits(10..16) && b[16] == b'Z' && b[17] == b'-';
    (shape && hex && voltool_plugin::options::validate_name(volume).is_ok()).then_some(volume)
}
