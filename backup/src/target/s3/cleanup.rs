//! Removing what an interrupted upload left ([`super::Target::cleanup`]): the multipart upload
//! whose id the engine recorded, then any other upload of the same key the server lists (ids
//! that were never recorded because the process died between starting the upload and saving
//! its id). Nothing of a committed object is touched.

use super::retry::{upload_gone, with_retries};
use super::{Shared, TargetError, block};

impl Shared {
    /// Aborts upload `token` of `key` and every other open upload of exactly `key`.
    ///
    /// # Errors
    /// [`TargetError::S3`] when an abort or the listing fails for a reason other than the
    /// upload being gone already (a server that cannot list uploads, or credentials not
    /// allowed to, only skip the sweep, with a warning).
    pub(super) fn cleanup(&self, key: &str, token: Option<&str>) -> Result<(), TargetError> {
        if let Some(upload_id) = token.filter(|t| !t.is_empty()) {
            self.abort_recorded(key, upload_id)?;
        }
        self.sweep_unrecorded(key, token)
    }

    /// Aborts the upload whose id was recorded.
    fn abort_recorded(&self, key: &str, upload_id: &str) -> Result<(), TargetError> {
        match block(&self.rt, self.abort_upload(key, upload_id)) {
            Ok(()) => {
                tracing::info!(target_url = %self.describe, %key, %upload_id, "aborted a leftover multipart upload");
                Ok(())
            }
            Err(f) if upload_gone(&f) => Ok(()),
            // Some servers (s3s-fs) deny aborting an upload that no longer exists. What
            // matters is that nothing stays stored: no parts left means nothing to do.
            Err(f) if f.status() == Some(403) && block(&self.rt, self.no_parts_left(key, upload_id)) => {
                tracing::debug!(target_url = %self.describe, %key, %upload_id, "upload already gone (abort denied, no parts)");
                Ok(())
            }
            Err(f) => Err(self.error("aborting the upload of", key, &f)),
        }
    }

    /// Uploads whose id was never recorded: finds them by key, where the server can list
    /// them, and aborts them (all but `token`, handled already).
    fn sweep_unrecorded(&self, key: &str, token: Option<&str>) -> Result<(), TargetError> {
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let listed = block(
                &self.rt,
                with_retries(|| {
                    self.client
                        .list_multipart_uploads()
                        .bucket(&self.spec.bucket)
                        .prefix(key)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send()
                }),
            );
            let out = match listed {
                Ok(out) => out,
                Err(f) if f.code() == Some("NotImplemented") || f.status() == Some(501) => {
                    tracing::debug!(target_url = %self.describe, "the server cannot list multipart uploads");
                    return Ok(());
                }
                // Listing is a sweep for uploads whose id was lost; credentials allowed to
                // write but not to list uploads should not fail every cleanup.
                Err(f) if f.status() == Some(403) => {
                    tracing::warn!(
                        target_url = %self.describe, %key, error = %self.error("listing the uploads of", key, &f),
                        "cannot list multipart uploads; only recorded upload ids are cleaned up"
                    );
                    return Ok(());
                }
                Err(f) => return Err(self.error("listing the uploads of", key, &f)),
            };
            for up in out.uploads() {
                let (Some(k), Some(id)) = (up.key(), up.upload_id()) else { continue };
                if k != key || Some(id) == token {
                    continue;
                }
                match block(&self.rt, self.abort_upload(key, id)) {
                    Ok(()) => {
                        tracing::info!(target_url = %self.describe, %key, upload_id = %id, "aborted a leftover multipart upload")
                    }
                    Err(f) if upload_gone(&f) => {}
                    Err(f) => return Err(self.error("aborting the upload of", key, &f)),
                }
            }
            if out.is_truncated() != Some(true)
                || (out.next_key_marker().is_none() && out.next_upload_id_marker().is_none())
            {
                return Ok(());
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
        }
    }
}
