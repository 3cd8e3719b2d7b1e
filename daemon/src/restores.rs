//! Restore, export and import (SPEC §3): getting an archive into a volume safely, and a
//! volume out as the same stream a backup stores.
//!
//! ## Restore
//! The archive is extracted by [`voltool_restore::extract`] into a staging directory inside
//! the volume itself (`.voltool-restore-NONCE`, so on the same filesystem and under the same
//! size limit), checked against the backup's manifest when there is one, and only then
//! swapped in: the volume's old entries move into `.voltool-restore-old-NONCE`, the staged
//! ones take their place (renames, so nothing is copied), and the old ones are deleted. Any
//! failure before the swap removes the staging directory and leaves the volume as it was; a
//! failure during the swap moves everything back.
//!
//! A volume that containers hold, or that has data, is refused unless `force`. A missing
//! volume is created, with the options recorded in the manifest when there is one.
//!
//! ## Sources
//! A catalog ID (read from its target and checked against its manifest), a target URL of an
//! archive (`file:///dir/ID.tar.zst`, `s3://bucket/prefix/ID.tar.zst?endpoint=...`, with its
//! manifest next to it if present), or a stream the CLI sends (a local file, stdin: `import`).
//! Plain `.tar`, `.tar.gz` and `.tar.zst` are told apart by their first bytes.
//!
//! ## Where what is
//! [`Restores`] and what its parts share are here; each concern has its file: restoring from a
//! catalog ID, an archive URL or a stream (`restore`), exporting (`export`), receiving a
//! migration (`receive`), restore tests (`test`), the daemon's side of a staged restore —
//! journal, mount, recovery at start (`staging`) — and a backup's manifest as a restore reads
//! it (`manifest`). The staging and swap themselves are [`voltool_restore::staged`].

use std::path::Path;

use crate::backups::Catalog;
use crate::error::{Error, Result};
use voltool_plugin::service::VolumeService;

mod chain;
mod export;
mod manifest;
mod paths;
mod receive;
mod restore;
mod staging;
mod test;

pub use export::ExportStream;
pub(crate) use export::blocking_stream;
pub use manifest::{ManifestError, ParsingManifest, PendingManifest};
pub use staging::parse_reserve;
/// What restores answer is the wire type itself.
pub use voltool_api::{RestoreOutcome, RestoreTestOutcome};
pub use voltool_restore::staged::Reserve;

/// Mount IDs held while restoring or exporting start with this.
pub const MOUNT_ID_PREFIX: &str = "voltool-restore-";

/// How a restore may treat the volume: the API's flags (a restore's body, an import's query),
/// and whether it is a restore test's throwaway restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub flags: voltool_api::RestoreFlags,
    /// A throwaway restore (a restore test's scratch volume): the restored tree is swapped in
    /// without waiting for it to reach the disk.
    pub scratch: bool,
}

/// Restores, exports and imports.
#[derive(Clone, Debug)]
pub struct Restores {
    svc: VolumeService,
    catalog: Catalog,
    /// What restores leave free on the filesystem they write to.
    reserve: Reserve,
    /// Where failed restore tests are counted and told.
    observer: Option<crate::observe::Observer>,
}

fn nonce() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", n, std::process::id())
}

/// The outcome of a zstd restore checked against its manifest (a chain, a migration).
fn verified_outcome(volume: &str, report: &voltool_restore::ExtractReport, created: bool) -> RestoreOutcome {
    RestoreOutcome {
        volume: volume.to_owned(),
        compression: "zstd".into(),
        entries: report.entries,
        files: report.files,
        bytes: report.bytes,
        verified_against_manifest: true,
        verification: "manifest".into(),
        created,
    }
}

fn restore_err(volume: &str, reason: impl std::fmt::Display) -> Error {
    Error::Restore { volume: volume.to_owned(), reason: reason.to_string() }
}

impl Restores {
    pub fn new(svc: VolumeService, catalog: Catalog) -> Self {
        Self { svc, catalog, reserve: Reserve::default(), observer: None }
    }

    /// Counts failed restore tests in `observer`'s metrics and tells its notifiers.
    #[must_use]
    pub fn with_observer(mut self, observer: crate::observe::Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Where failed restore tests are told, when the daemon has one.
    pub fn observer(&self) -> Option<&crate::observe::Observer> {
        self.observer.as_ref()
    }

    /// The catalog restores look backups up in.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Sets what restores leave free on a filesystem (`[restore] reserve`).
    #[must_use]
    pub fn with_reserve(mut self, reserve: Reserve) -> Self {
        self.reserve = reserve;
        self
    }
}

/// Refuses a volume containers hold. `prepare` checked before the restore's own mount; a
/// container's Mount could have come in between. From the `restores` row on, Mounts are
/// refused, so this second look, made after it, closes that window.
fn refuse_if_held(svc: &VolumeService, volume: &str) -> Result<()> {
    let users = svc.store().mount_ids(volume)?.iter().filter(|id| !id.starts_with("voltool-")).count();
    if users > 0 {
        return Err(restore_err(
            volume,
            format!("it is in use by {users} container mount(s); stop them or use --force"),
        ));
    }
    Ok(())
}

/// Whether the volume at `root` holds data (anything but `lost+found` and a restore's own
/// directories).
fn dir_has_entries(root: &Path) -> std::io::Result<bool> {
    let dir = voltool_runtime::fsat::Dir::open(root)?;
    Ok(dir.entries()?.iter().any(|n| voltool_restore::staged::is_user_entry(n)))
}
