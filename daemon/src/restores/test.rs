//! Restore tests: a backup restored into a scratch volume and a check command run on it in a
//! minimal container (no network, the host's root read-only, the data at `/data`); its exit
//! status says whether the backup restores. The scratch volume is always removed, and the
//! outcome recorded with the backup in the catalog.

use std::collections::BTreeMap;

use super::{MOUNT_ID_PREFIX, RestoreOptions, RestoreTestOutcome, Restores, nonce, restore_err};
use crate::error::{Error, Result};
use crate::observe::EventKind;

/// How long a check command may run.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl Restores {
    /// The restore test of a backup: restores it into a scratch volume and runs `command`
    /// (default: list the data) in a minimal container (the runtime's: no network, the host
    /// root read-only, the scratch volume at `/data`). The command's exit status decides;
    /// the scratch volume is always removed. The result is recorded with the backup.
    ///
    /// # Errors
    /// [`Error::BackupNotFound`], store errors; a failed restore or check is an `Ok` outcome
    /// with `ok: false`.
    pub async fn restore_test(&self, id: &str, command: Option<&str>) -> Result<RestoreTestOutcome> {
        let Some(located) = self.catalog.locate(id).await? else {
            return Err(Error::BackupNotFound { id: id.to_owned() });
        };
        let scratch = format!("voltool-check-{}", nonce());
        let command = command.unwrap_or("ls -la /data >/dev/null").to_owned();
        let outcome = self.restore_test_in(&scratch, id, &command).await;
        if self.svc.get(&scratch).await.ok().flatten().is_some()
            && let Err(e) = self.svc.remove(&scratch, true).await
        {
            tracing::warn!(volume = scratch, error = %e, "could not remove the restore test's scratch volume");
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => RestoreTestOutcome {
                id: id.into(),
                ok: false,
                status: None,
                output: String::new(),
                error: Some(e.to_string()),
            },
        };
        let reason = (!outcome.ok).then(|| {
            outcome.error.clone().unwrap_or_else(|| {
                format!(
                    "restore test: the check command exited {}: {}",
                    outcome.status.unwrap_or(-1),
                    outcome.output.trim()
                )
            })
        });
        self.catalog.record_restore_test(id, outcome.ok, reason.as_deref()).await?;
        if let (Some(o), Some(reason)) = (&self.observer, &reason) {
            o.metrics().restore_test_failed(&located.volume);
            o.emit(o.event(EventKind::RestoreTestFailed).volume(&located.volume).backup_id(id).reason(reason.clone()));
        }
        Ok(outcome)
    }

    async fn restore_test_in(&self, scratch: &str, id: &str, command: &str) -> Result<RestoreTestOutcome> {
        // The scratch volume is a plain directory volume: no network, no image to make.
        self.svc.create(scratch, BTreeMap::new()).await?;
        let opts = RestoreOptions { scratch: true, ..RestoreOptions::default() };
        let restored = self.restore_from(scratch, id, opts).await?;
        let mount_id = format!("{MOUNT_ID_PREFIX}check-{}", nonce());
        let data = self.svc.mount(scratch, &mount_id).await?;
        let workdir = self.svc.layout().state_dir.join("check").join(scratch);
        std::fs::create_dir_all(&workdir).map_err(voltool_plugin::Error::io(scratch, "create", workdir.clone()))?;
        let spec = voltool_runtime::container::ContainerSpec {
            rootfs: None,
            data,
            command: command.to_owned(),
            timeout: CHECK_TIMEOUT,
            workdir: workdir.clone(),
            confinement: voltool_runtime::container::Confinement::default(),
        };
        // The check runs unprivileged (root of its own user namespace = a high host uid):
        // the scratch copy's owners move into that range so it sees them as in the backup.
        let name = scratch.to_owned();
        let ran = tokio::task::spawn_blocking(move || {
            voltool_runtime::container::shift_owners(&spec.data, &spec.confinement.ids)
                .map_err(|e| restore_err(&name, format!("giving the restored data to the check's user: {e}")))?;
            voltool_runtime::container::run(&spec)
                .map_err(|e| restore_err(&name, format!("starting the check container: {e}")))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        let _ = std::fs::remove_dir(&workdir);
        self.svc.unmount(scratch, &mount_id).await?;
        let ran = ran?;
        tracing::info!(backup = id, status = ran.status, files = restored.files, limits = %ran.limits, "restore test ran");
        Ok(RestoreTestOutcome {
            id: id.to_owned(),
            ok: ran.status == 0 && !ran.timed_out,
            status: Some(ran.status),
            output: ran.output,
            error: ran.timed_out.then(|| "restore test: the check command timed out".to_string()),
        })
    }
}
