//! Restoring into a volume from a catalog ID, an archive URL or a stream (`import`): where the
//! archive and its manifest are, what the result is checked against ([`Verify`]), and the
//! volume made ready (created, or checked that it may be replaced).

use std::collections::BTreeMap;
use std::io::Read;

use std::sync::Arc;

use voltool_backup::crypt;
use voltool_backup::{CryptError, Identities, Manifest, ObjectNames, TargetError, TargetSpec, open_target};
use voltool_restore::{ExtractOptions, ExtractReport, RestoreError};

use super::staging::Landing;
use super::{PendingManifest, RestoreOptions, RestoreOutcome, Restores, dir_has_entries, refuse_if_held, restore_err};
use crate::error::{Error, Result};

/// How a restore's result is checked before the swap.
#[derive(Debug)]
enum Verify {
    /// Against the backup's manifest (every byte through the archive's sha256 it records;
    /// the manifest itself held to the catalog's record when there is one).
    Manifest(PendingManifest),
    /// Against a manifest already read (one the CLI sent ahead of the archive).
    Parsed(Box<Manifest>),
    /// Against the archive sha256 the catalog recorded when the backup was made (its manifest
    /// object is missing).
    Catalog { sha256: String },
}

impl Verify {
    /// What the outcome says the restore was checked against.
    fn name(&self) -> &'static str {
        match self {
            Verify::Manifest(_) | Verify::Parsed(_) => "manifest",
            Verify::Catalog { .. } => "catalog",
        }
    }
}

/// The archive as read must be the one the catalog recorded.
fn check_catalog_digest(rep: &ExtractReport, want: &str) -> std::result::Result<(), RestoreError> {
    match &rep.archive {
        Some(d) if d.sha256 == want => Ok(()),
        Some(d) => Err(RestoreError::Manifest(format!(
            "the archive's sha256 is {}, the catalog recorded {want} when the backup was made: the backup was changed since",
            d.sha256
        ))),
        None => Err(RestoreError::Manifest("the archive's sha256 was not computed".into())),
    }
}

/// Where a restore reads its archive from, opened on the blocking thread that extracts it.
enum Source {
    /// An object on a target, read once start to end: no page cache (O_DIRECT from a
    /// directory target); decrypted with `keys` when it is an encrypted backup's.
    Stored { spec: TargetSpec, name: String, rt: tokio::runtime::Handle, keys: Option<Arc<Identities>> },
    /// A stream the CLI sends (import, a local file); decrypted with the catalog's
    /// identities when it is an age file (a local `ID.tar.zst.age`).
    Stream(Box<dyn Read + Send>, crate::backups::Catalog),
}

/// Why a restore's archive could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Crypt(#[from] CryptError),
}

impl Source {
    fn open(self) -> std::result::Result<Box<dyn Read + Send>, OpenError> {
        match self {
            Source::Stored { spec, name, rt, keys } => {
                let stored = open_target(&spec, &rt)?.open_stored(&name)?;
                match keys {
                    Some(keys) => Ok(crypt::open(stored, &keys, &name)?),
                    None => Ok(stored),
                }
            }
            // Decided at the first read: an import's stream may not have started yet, and the
            // staging directory (what a container start is refused by) comes first.
            Source::Stream(input, catalog) => {
                Ok(crypt::open_if_sealed_lazily(input, move || catalog.identities(), "the archive"))
            }
        }
    }
}

impl Restores {
    /// Restores from a catalog ID or an archive URL.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an unknown source, [`Error::Restore`] naming the problem
    /// (refused entry, mismatch, volume in use); the volume is unchanged on error.
    #[tracing::instrument(name = "restore", skip_all, fields(volume = %volume, from = %from))]
    pub async fn restore_from(&self, volume: &str, from: &str, opts: RestoreOptions) -> Result<RestoreOutcome> {
        voltool_plugin::options::validate_name(volume)?;
        if let Some(rows) = self.catalog.chain(from).await? {
            return self.restore_chain(volume, rows, opts).await;
        }
        let crate::backups::Located { spec, archive: name, manifest: manifest_name, catalog_sha256, encrypted, .. } =
            match self.catalog.locate(from).await? {
                Some(found) => found,
                None => locate_url(from)?,
            };
        // An encrypted backup: the configured identities, read now; one that none of them
        // opens fails at its manifest, before a volume is created for it.
        let keys = if encrypted {
            let c = self.catalog.clone();
            let ids = tokio::task::spawn_blocking(move || c.identities()).await;
            Some(Arc::new(ids.map_err(|e| Error::Internal(e.to_string()))?))
        } else {
            None
        };
        // The manifest's head first: it gives the options of a volume to create. Its entries
        // (~20 MB of JSON for 100,000 files) are read and parsed on a thread of their own
        // while the archive is extracted (see `PendingManifest`), not before.
        let (s2, m2, k2, span) = (spec.clone(), manifest_name.clone(), keys.clone(), tracing::Span::current());
        let manifest = tokio::task::spawn_blocking(move || -> Result<Option<PendingManifest>> {
            let _restore = span.enter();
            let Some(m) = m2 else { return Ok(None) };
            let target =
                open_target(&s2, &tokio::runtime::Handle::current()).map_err(|e| Error::BadRequest(e.to_string()))?;
            if !target.exists(&m).map_err(|e| Error::BadRequest(e.to_string()))? {
                return Ok(None);
            }
            let mut input = target.open(&m).map_err(|e| Error::BadRequest(e.to_string()))?;
            if let Some(k) = &k2 {
                input = crypt::open(input, k, &m).map_err(|e| Error::BadRequest(e.to_string()))?;
            }
            PendingManifest::open(m, input).map(Some)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        // A backup of the catalog is held to the archive sha256 recorded when it was made:
        // through its manifest, or directly when the manifest object is gone.
        let verify = match (manifest, catalog_sha256) {
            (Some(m), sha) => Some(Verify::Manifest(m.expect_archive(sha))),
            (None, Some(sha256)) => Some(Verify::Catalog { sha256 }),
            (None, None) => None,
        };
        let options = match &verify {
            Some(Verify::Manifest(m)) => Some(m.options.clone()),
            _ => None,
        };
        let created = self.prepare(volume, options.as_ref(), &opts).await?;
        let source = Source::Stored { spec, name, rt: tokio::runtime::Handle::current(), keys };
        self.run(volume, source, verify, opts, created).await
    }

    /// Restores from a stream (import, or a local file the CLI sends), checked against
    /// `manifest` when the CLI sent the one beside the file.
    ///
    /// # Errors
    /// As [`Self::restore_from`].
    #[tracing::instrument(name = "import", skip_all, fields(volume = %volume))]
    pub async fn import(
        &self,
        volume: &str,
        input: Box<dyn Read + Send>,
        manifest: Option<Manifest>,
        opts: RestoreOptions,
    ) -> Result<RestoreOutcome> {
        voltool_plugin::options::validate_name(volume)?;
        let created = self.prepare(volume, manifest.as_ref().map(|m| &m.options), &opts).await?;
        let verify = manifest.map(|m| Verify::Parsed(Box::new(m)));
        self.run(volume, Source::Stream(input, self.catalog.clone()), verify, opts, created).await
    }

    /// Creates a missing volume, or checks an existing one may be restored into.
    pub(super) async fn prepare(
        &self,
        volume: &str,
        options: Option<&BTreeMap<String, String>>,
        opts: &RestoreOptions,
    ) -> Result<bool> {
        match self.svc.get(volume).await? {
            None => {
                let options = options.cloned().unwrap_or_default();
                self.svc.create(volume, options).await.map_err(|e| restore_err(volume, format!("creating it: {e}")))?;
                Ok(true)
            }
            Some(_) => {
                if !opts.flags.force {
                    refuse_if_held(&self.svc, volume)?;
                }
                Ok(false)
            }
        }
    }

    /// Extracts `source` into the volume, checked as `verify` says, and swaps it in.
    async fn run(
        &self,
        volume: &str,
        source: Source,
        verify: Option<Verify>,
        opts: RestoreOptions,
        created: bool,
    ) -> Result<RestoreOutcome> {
        let verification = verify.as_ref().map_or("none", Verify::name);
        let report =
            self.land(volume, created, "restore", move |at| extract(at, source, verify, &opts, created)).await?;
        tracing::info!(volume, files = report.files, bytes = report.bytes, "restored");
        Ok(RestoreOutcome {
            volume: volume.to_owned(),
            compression: match report.compression {
                Some(voltool_restore::Compression::Zstd) => "zstd",
                Some(voltool_restore::Compression::Gzip) => "gzip",
                _ => "none",
            }
            .into(),
            entries: report.entries,
            files: report.files,
            bytes: report.bytes,
            verified_against_manifest: verification == "manifest",
            verification: verification.into(),
            created,
        })
    }
}

/// The blocking part of a restore, in the volume's own mount `at`: the last checks of the
/// volume, then the staged extraction with its check before the swap.
fn extract(
    at: &Landing,
    source: Source,
    verify: Option<Verify>,
    opts: &RestoreOptions,
    created: bool,
) -> Result<ExtractReport> {
    let v = at.volume.as_str();
    if !opts.flags.force {
        at.refuse_if_held()?;
    }
    if !opts.flags.force && !created && dir_has_entries(&at.root).map_err(|e| restore_err(v, e))? {
        return Err(restore_err(v, "it is not empty; restore into a new volume or use --force"));
    }
    let input = source.open().map_err(|e| restore_err(v, e))?;
    let xopts = ExtractOptions {
        allow_devices: opts.flags.allow_devices,
        max_bytes: at.max_bytes,
        strip_components: opts.flags.strip_components,
        same_owner: nix::unistd::geteuid().is_root(),
        // With a manifest (or the catalog's record), the archive's sha256 checks every byte
        // against it (less work than hashing every file: the archive is compressed).
        hash_archive: verify.is_some(),
        hash_files: false,
        // On disk before the swap replaces the volume's data.
        durable: !opts.scratch,
        // Only an archive this daemon made (its manifest or its catalog say so) keeps setuid
        // bits and security xattrs, unless the caller asks.
        preserve_privileges: verify.is_some() || opts.flags.preserve_privileges,
        space: None,
    };
    let (mut parsing, mut parsed, catalog) = match verify {
        Some(Verify::Manifest(m)) => (Some(m.parse().map_err(|e| restore_err(v, e))?), None, None),
        Some(Verify::Parsed(m)) => (None, Some(m), None),
        Some(Verify::Catalog { sha256 }) => (None, None, Some(sha256)),
        None => (None, None, None),
    };
    let mut check = |rep: &ExtractReport| -> std::result::Result<(), RestoreError> {
        if let Some(p) = parsing.take() {
            let m = p.join().map_err(|e| RestoreError::Manifest(e.to_string()))?;
            voltool_restore::check_manifest(rep, &m)?;
        }
        if let Some(m) = parsed.take() {
            voltool_restore::check_manifest(rep, &m)?;
        }
        if let Some(want) = &catalog {
            check_catalog_digest(rep, want)?;
        }
        Ok(())
    };
    at.restore(input, &mut check, &xopts)
}

/// Splits an archive URL into its target, object name and the manifest's name next to it.
fn locate_url(from: &str) -> Result<crate::backups::Located> {
    let bad = |m: String| Error::BadRequest(m);
    let (base, query) = match from.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (from, None),
    };
    let neither = || {
        bad(format!(
            "{from:?} is neither a backup ID in the catalog nor an archive URL (file:///dir/ID.tar.zst, s3://bucket/prefix/ID.tar.zst)"
        ))
    };
    let Some((dir, name)) = base.rsplit_once('/') else { return Err(neither()) };
    if name.is_empty() || dir.is_empty() || !(from.starts_with('/') || from.contains("://")) {
        return Err(neither());
    }
    let dir_url = match query {
        Some(q) => format!("{dir}?{q}"),
        None => dir.to_owned(),
    };
    let dir_url = if dir_url.ends_with("://") { format!("{dir_url}/") } else { dir_url };
    let spec = TargetSpec::parse(&dir_url).map_err(|e| bad(e.to_string()))?;
    // `ID.tar.zst` or `ID.tar.zst.age`: the manifest beside it is named the same way.
    let parsed = ObjectNames::parse_archive(name).map(|(id, encrypted)| ObjectNames::new(id, encrypted));
    let encrypted = parsed.as_ref().is_some_and(|n| n.encrypted);
    Ok(crate::backups::Located {
        spec,
        archive: name.to_owned(),
        manifest: parsed.map(|n| n.manifest),
        encrypted,
        catalog_sha256: None,
        volume: String::new(),
    })
}
