//! The receiving end of `voltool migrate`: the offer a sender makes (protocol, options, the
//! secrets they name), whether this daemon can take it, and the stream itself — data frames
//! extracted into staging as they arrive, then the manifest frame every file is checked
//! against before the swap.

use std::io::Read;
use std::sync::{Arc, Mutex};

use voltool_backup::Manifest;
use voltool_migrate::{FrameReader, Offer};
use voltool_restore::{ExtractOptions, ExtractReport, RestoreError};

use super::staging::Landing;
use super::{RestoreOptions, RestoreOutcome, Restores, dir_has_entries, restore_err, verified_outcome};
use crate::error::Result;

impl Restores {
    /// Whether this daemon can take the volume a migration offers: the protocol, the options,
    /// the secrets they name, and the name (free, or an empty volume nobody uses).
    ///
    /// # Errors
    /// [`crate::Error::Restore`] saying why not.
    pub async fn check_offer(&self, name: &str, offer: &Offer) -> Result<()> {
        voltool_plugin::options::validate_name(name)?;
        // A newer sender may send what this one cannot read; an older one (protocol 1: the
        // manifest uncompressed) is still read.
        if !(voltool_migrate::OLDEST_PROTOCOL..=voltool_migrate::PROTOCOL).contains(&offer.protocol) {
            return Err(restore_err(
                name,
                format!(
                    "the sender speaks migration protocol {}, this voltool reads {} to {}: run the same voltool version on both hosts",
                    offer.protocol,
                    voltool_migrate::OLDEST_PROTOCOL,
                    voltool_migrate::PROTOCOL
                ),
            ));
        }
        voltool_plugin::options::parse_full(&offer.options)
            .map_err(|e| restore_err(name, format!("its options: {e}")))?;
        for secret in &offer.secrets {
            if !self.svc.secrets().exists(secret) {
                return Err(restore_err(
                    name,
                    format!(
                        "the volume needs secret {secret}, which this host does not have; add it first: voltool secret add {secret}"
                    ),
                ));
            }
        }
        if self.svc.get(name).await?.is_some() {
            let users = self.svc.store().mount_ids(name)?.len();
            if users > 0 {
                return Err(restore_err(name, format!("a volume {name} exists here and is in use")));
            }
            let (root, id) = self.export_begin(name).await?;
            let empty = !dir_has_entries(&root).unwrap_or(true);
            self.export_end(name, &id).await;
            if !empty {
                return Err(restore_err(name, format!("a volume {name} with data exists here; choose another name")));
            }
        }
        Ok(())
    }

    /// Receives a migration stream: creates the volume (or uses an empty one), extracts the
    /// data frames into staging, reads the manifest frame, checks every file against it and
    /// swaps the data in. On any failure a volume created here is removed again.
    ///
    /// # Errors
    /// [`crate::Error::Restore`] with the reason.
    #[tracing::instrument(name = "receive", skip_all, fields(volume = %name, from = %offer.volume))]
    pub async fn receive(&self, name: &str, offer: Offer, frames: Box<dyn Read + Send>) -> Result<RestoreOutcome> {
        self.check_offer(name, &offer).await?;
        let created = self.prepare(name, Some(&offer.options), &RestoreOptions::default()).await?;
        let report = self.land(name, created, "migration", move |at| extract(at, frames)).await?;
        tracing::info!(volume = name, files = report.files, bytes = report.bytes, "received a migrated volume");
        Ok(verified_outcome(name, &report, created))
    }

    /// The volume's stored options and the secrets they name (for a migration offer).
    ///
    /// # Errors
    /// [`voltool_plugin::Error::NotFound`].
    pub async fn offer(&self, name: &str) -> Result<Offer> {
        let rec = self.svc.record(name).await?;
        let secrets = rec.spec.cifs.as_ref().and_then(|c| c.secret.clone()).into_iter().collect();
        Ok(Offer { protocol: voltool_migrate::PROTOCOL, volume: name.to_owned(), options: rec.options, secrets })
    }
}

/// The blocking part of a receive, in the volume's own mount `at`: the data frames of `frames`
/// extracted into staging, then checked against the manifest frame that follows them.
fn extract(at: &Landing, frames: Box<dyn Read + Send>) -> Result<ExtractReport> {
    let reader = Arc::new(Mutex::new(FrameReader::new(frames)));
    let data = Shared(reader.clone());
    let mut check_manifest = move |rep: &ExtractReport| -> std::result::Result<(), RestoreError> {
        let bad = |e: String| RestoreError::Manifest(e);
        let trailer =
            reader.lock().unwrap_or_else(|p| p.into_inner()).take_manifest().map_err(|e| bad(e.to_string()))?;
        // Parsed as it is decompressed, never held whole as text (a small frame may expand to
        // a gigabyte), and stopped at the limit.
        let input = trailer.into_reader().map_err(|e| bad(e.to_string()))?;
        let lim = voltool_backup::ManifestLimits { bytes: crate::backups::MANIFEST_LIMIT };
        let m = Manifest::from_reader("the migration's manifest", input, lim)
            .map_err(|e| bad(format!("the manifest: {e}")))?;
        voltool_restore::check_manifest(rep, &m)
    };
    at.refuse_if_held()?;
    let xopts = ExtractOptions {
        max_bytes: at.max_bytes,
        same_owner: nix::unistd::geteuid().is_root(),
        // The manifest arrives after the data; it records the sha256 of the stream the sender
        // wrote (these data frames' bytes), so the stream's digest checks every byte against
        // it, as for a restore from a backup.
        hash_archive: true,
        durable: true,
        // A migration is asked for by a caller of this daemon (root-equivalent) and checked
        // against the sender's manifest: the volume moves as it was.
        preserve_privileges: true,
        ..ExtractOptions::default()
    };
    at.restore(Box::new(data), &mut check_manifest, &xopts)
}

/// A frame reader shared between the extraction (data) and the check (manifest).
struct Shared<R: Read>(Arc<Mutex<FrameReader<R>>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).read(buf)
    }
}
