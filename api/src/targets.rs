//! What a target holds and `backup sync` (SPEC §8, "the target is the source of truth"):
//! `GET /v1/targets/backups[?target=T]` answers a [`TargetListing`] (every backup found on the
//! target by its manifest object, with this host's catalog entry for it), `POST
//! /v1/backups/sync` a [`SyncBackups`] with a [`SyncReport`].

use serde::{Deserialize, Serialize};

use crate::BackupStatus;

/// What a backup found on a target is, by its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FoundState {
    /// Manifest, archive and checksum are there and agree: `backup sync` can add it.
    Complete,
    /// The manifest is there, not the archive or the checksum: being written or deleted by
    /// another host, or left half by one.
    Incomplete,
    /// Age-encrypted objects: the manifest needs the identity to be read.
    Encrypted,
    /// The manifest (or the checksum beside it) cannot be read or does not hold together.
    Unreadable,
}

impl FoundState {
    /// The wire name: `complete`, `incomplete`, `encrypted`, `unreadable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Incomplete => "incomplete",
            Self::Encrypted => "encrypted",
            Self::Unreadable => "unreadable",
        }
    }
}

impl std::fmt::Display for FoundState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// This host's catalog entry for a backup found on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogMark {
    /// `own`, `synced` or `adopted`.
    pub origin: String,
    pub status: BackupStatus,
    /// Where the catalog has it: this target's URL, or another one (the same ID copied
    /// between targets).
    pub target_url: String,
    /// When a sync found its objects gone from its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vanished_at: Option<String>,
}

/// One backup on a target, found by its manifest object (`ID.manifest.json`, or
/// `ID.manifest.json.age` encrypted). What could not be read is `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetBackup {
    /// The backup ID, from the manifest object's name.
    pub id: String,
    pub state: FoundState,
    /// Why it is not complete, naming the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub volume: Option<String>,
    /// RFC 3339, UTC.
    pub created: Option<String>,
    /// 0 for a full backup, n for the n-th incremental of its chain.
    #[serde(default)]
    pub level: u32,
    /// The previous link of its chain (incrementals only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The archive object's size as stored (`null` when it is missing).
    pub archive_size: Option<u64>,
    pub files: Option<u64>,
    /// This host's catalog entry for the ID (`null`: not in the catalog).
    pub catalog: Option<CatalogMark>,
}

/// Answer to `GET /v1/targets/backups`: the target (its URL, no credentials) and every
/// backup on it, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetListing {
    pub target: String,
    pub backups: Vec<TargetBackup>,
}

/// Body of `POST /v1/backups/sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBackups {
    /// A target name (config file) or URL; `None`: every `[targets.NAME]` of the config file
    /// and the default target.
    #[serde(default)]
    pub target: Option<String>,
    /// Make what the sync adds (and what earlier syncs added) this host's: retention may then
    /// delete it. Without it, found backups are never deleted by this host's retention.
    #[serde(default)]
    pub adopt: bool,
}

/// A backup a sync did not add, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    pub problem: String,
}

/// What a sync did at one target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSync {
    /// The target's URL.
    pub target: String,
    /// Set when the target could not be listed: nothing was changed for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// IDs added to the catalog (origin `synced`, or `adopted` with `adopt`).
    pub added: Vec<String>,
    /// IDs that were `synced` and are now `adopted`.
    pub adopted: Vec<String>,
    /// IDs whose objects are gone from the target (in whole or in part), marked now.
    pub vanished: Vec<String>,
    /// IDs marked vanished before whose objects are back.
    pub returned: Vec<String>,
    /// Manifests that cannot be read, or backups whose objects do not agree.
    pub unreadable: Vec<Skipped>,
    /// Backups with a manifest but without their archive or checksum object.
    pub incomplete: Vec<Skipped>,
    /// Encrypted backups, left out until their manifests can be read.
    pub encrypted: Vec<String>,
    /// Complete backups the catalog had already.
    pub known: u64,
}

/// Answer to `POST /v1/backups/sync`: one entry per target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub targets: Vec<TargetSync>,
}

impl SyncReport {
    /// Whether every target could be listed.
    pub fn ok(&self) -> bool {
        self.targets.iter().all(|t| t.error.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_shapes_of_a_listing_and_a_sync() {
        let found = TargetBackup {
            id: "junk".into(),
            state: FoundState::Unreadable,
            problem: Some("junk.manifest.json: manifest: expected value".into()),
            volume: None,
            created: None,
            level: 0,
            parent: None,
            archive_size: None,
            files: None,
            catalog: None,
        };
        assert_eq!(
            serde_json::to_string(&found).expect("json"),
            r#"{"id":"junk","state":"unreadable","problem":"junk.manifest.json: manifest: expected value","volume":null,"created":null,"level":0,"archive_size":null,"files":null,"catalog":null}"#
        );
        let back: TargetBackup = serde_json::from_str(&serde_json::to_string(&found).expect("json")).expect("parse");
        assert_eq!(back, found);
        assert_eq!(serde_json::from_str::<SyncBackups>("{}").expect("empty body"), SyncBackups::default());
        let req: SyncBackups = serde_json::from_str(r#"{"target":"offsite","adopt":true}"#).expect("parse");
        assert_eq!(req, SyncBackups { target: Some("offsite".into()), adopt: true });
        assert!(serde_json::from_str::<SyncBackups>(r#"{"adpot":true}"#).is_err(), "a typo is refused");
        let report = SyncReport { targets: vec![TargetSync { error: Some("x".into()), ..TargetSync::default() }] };
        assert!(!report.ok());
        assert!(SyncReport::default().ok());
    }
}
