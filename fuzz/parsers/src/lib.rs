//! The parsers of `voltool-backup` that read outside input, compiled from the backup crate's
//! own source files (`#[path]`), without its S3 client, tokio or zstd: fuzz builds stay small
//! and fast. Only [`archive::ArchiveSummary`] and [`target::TargetError`] are stand-ins,
//! declared as the real ones are (a change there that the parsers see breaks this build).
#![allow(dead_code, unused_imports, rustdoc::broken_intra_doc_links)]

#[path = "../../../backup/src/error.rs"]
pub mod error;
#[path = "../../../backup/src/manifest/mod.rs"]
pub mod manifest;
#[path = "../../../backup/src/retention.rs"]
pub mod retention;
#[path = "../../../backup/src/schedule/mod.rs"]
pub mod schedule;
#[path = "../../../backup/src/tarparse/mod.rs"]
pub mod tarparse;

pub use error::BackupError;
pub use manifest::{Entry, EntryKind, EntryList, FORMAT_VERSION, Manifest, ManifestLimits};
pub use target::TargetSpec;

pub mod archive {
    /// Stand-in for `voltool_backup::archive::ArchiveSummary` (the fields the manifest reads).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ArchiveSummary {
        pub entries: crate::EntryList,
        pub files: u64,
        pub bytes_in: u64,
        pub archive_size: u64,
        pub archive_sha256: String,
        pub notes: Vec<String>,
        pub level: u32,
        pub parent: Option<crate::manifest::ParentRef>,
        pub unchanged: u64,
    }
}

/// Stand-in for `voltool_backup::target::TargetError` (the variant the URL parser makes); at
/// the root because the URL parser names it `super::TargetError`.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("backup target {target:?}: {reason}")]
    Config { target: String, reason: String },
}

#[path = "../../../backup/src/target/spec.rs"]
mod spec;

pub mod target {
    pub use super::TargetError;
    pub use super::spec::{S3Spec, TargetConfig, TargetSpec};
}
