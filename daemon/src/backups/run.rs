//! One backup run, from the request to the catalog's last word (steps 1-5 of the engine's
//! module docs): [`Backups::start`] checks and records it and returns its ID at once; the run
//! goes on in a task that waits for a slot, archives the volume through the blocking engine,
//! records the outcome (removing a failed run's objects), then verifies, runs the restore
//! test and applies retention as asked. [`Backups::archive`] is a run that is waited for
//! (`on-remove=archive`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;
use voltool_backup::incremental::FullEvery;
use voltool_backup::retention::KeepPolicy;
use voltool_backup::{Manifest, Recipients, TargetSpec};
use voltool_plugin::store::{BackupRow, BackupStatus};

use super::consistency::{ConsistencyError, Held, Mode};
use super::engine::EngineError;
use super::progress::Progress;
use super::{Backups, MOUNT_ID_PREFIX, backup_err, random_suffix};
use crate::error::{Error, Result};
use crate::observe::{EventKind, RunSample};

/// What one run is asked to do.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub volume: String,
    /// Target name or URL; `None`: the volume's `backup-target`, else the default.
    pub target: Option<String>,
    pub verify: bool,
    /// Retention applied after success; `None`: the volume's `backup-keep`.
    pub keep: Option<String>,
    /// `manual`, `schedule`.
    pub trigger: &'static str,
    /// After a successful verification, also run the restore test.
    pub restore_test: bool,
    /// `backup-consistency` for this run; `None`: the volume's, else `none`.
    pub consistency: Option<String>,
    /// An incremental link (`Some(true)`) or a full backup; `None`: the volume's `backup-mode`.
    pub incremental: Option<bool>,
    /// An incremental compares the content of files whose metadata is unchanged too.
    pub rehash: bool,
}

/// Why the archiving part of a run failed; its message is the failed row's `reason`.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("mounting the volume: {0}")]
    Mount(#[source] voltool_plugin::Error),
    /// The volume's record could not be read.
    #[error(transparent)]
    Volume(voltool_plugin::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Consistency(#[from] ConsistencyError),
    /// The blocking task died (a panic): a bug, recorded rather than hidden.
    #[error("internal error: {0}")]
    Internal(#[source] tokio::task::JoinError),
}

impl RunError {
    /// A short, fixed name for the kind of failure: the `reason` label of
    /// `voltool_backup_failures_total` (a message would make a series per message).
    fn category(&self) -> &'static str {
        match self {
            Self::Mount(_) => "mount",
            Self::Volume(_) => "volume",
            Self::Consistency(_) => "consistency",
            Self::Internal(_) => "internal",
            Self::Engine(e) => match e {
                EngineError::Resolve(_) => "config",
                EngineError::Target(_) => "target",
                EngineError::Archive(_) => "archive",
                EngineError::Store(_) => "catalog",
                EngineError::Crypt(_) => "encryption",
                EngineError::Manifest { .. }
                | EngineError::ManifestNotUtf8 { .. }
                | EngineError::ManifestOfOther { .. }
                | EngineError::ChecksumMismatch { .. }
                | EngineError::ManifestEncryption { .. }
                | EngineError::StoredMismatch { .. }
                | EngineError::CatalogMismatch { .. } => "manifest",
                EngineError::Link { .. } | EngineError::Chain(_) => "chain",
            },
        }
    }
}

/// A run that was started: what [`Backups::run`] carries on with.
struct Started {
    row: BackupRow,
    spec: TargetSpec,
    req: RunRequest,
    keep: Option<String>,
    created: time::OffsetDateTime,
    progress: Arc<Progress>,
    mode: Mode,
    /// The keys the backup is encrypted to (`backup-encrypt`, else the target's `encrypt-to`).
    seal: Option<Arc<Recipients>>,
}

impl Backups {
    /// Starts a backup and returns its ID at once; the run continues in the background (poll
    /// [`Self::show`]).
    ///
    /// # Errors
    /// [`voltool_plugin::Error::NotFound`] (volume), [`Error::BadRequest`] (target, keep),
    /// [`Error::BackupBusy`] while the volume has a run in flight, store errors.
    pub async fn start(&self, req: RunRequest) -> Result<String> {
        let vol = self.e.svc.record(&req.volume).await?;
        let target_ref = req
            .target
            .clone()
            .or_else(|| vol.spec.backup.target.clone())
            .unwrap_or_else(|| self.e.default_target.clone());
        let spec = self.e.settings.resolve(&target_ref).map_err(|err| Error::BadRequest(err.to_string()))?;
        let keep = req.keep.clone().or_else(|| vol.spec.backup.keep.clone());
        let mode = match req.consistency.as_deref().or(vol.spec.backup.consistency.as_deref()) {
            Some(m) => Mode::parse(m).map_err(|err| Error::BadRequest(format!("backup-consistency={m}: {err}")))?,
            None => Mode::default(),
        };
        if let Some(k) = &keep {
            KeepPolicy::parse(k).map_err(|err| Error::BadRequest(err.to_string()))?;
        }
        let seal = self.recipients(vol.spec.backup.encrypt.as_deref(), &target_ref)?;
        let now = self.e.clock.now();
        let created = time::OffsetDateTime::from_unix_timestamp(now.timestamp())
            .map_err(|err| Error::Internal(err.to_string()))?;
        let id = voltool_backup::backup_id(&req.volume, created, random_suffix());
        let parent = if req.incremental.unwrap_or(vol.spec.backup.incremental) {
            let full = match vol.spec.backup.full.as_deref() {
                Some(f) => FullEvery::parse(f).map_err(|err| Error::BadRequest(format!("backup-full={f}: {err}")))?,
                None => FullEvery::default(),
            };
            self.chain_parent(&req.volume, &spec.describe(), &full, now).await?
        } else {
            None
        };
        {
            let mut running = self.e.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = running.get(&req.volume) {
                return Err(Error::BackupBusy { volume: req.volume.clone(), id: other.clone() });
            }
            running.insert(req.volume.clone(), id.clone());
        }
        let progress = Arc::new(Progress::in_phase("queued"));
        self.e.progress.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), progress.clone());
        let mut row = BackupRow::running(
            &id,
            &req.volume,
            &target_ref,
            &spec.describe(),
            req.trigger,
            &now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        row.consistency = Some(mode.to_string());
        // The intended parent; the manifest's says what the run made (a full when the parent's
        // manifest cannot be compared with).
        row.parent = parent;
        row.encrypted = seal.is_some();
        let r = row.clone();
        if let Err(err) = self.blocking(move |e| Ok(e.svc.store().insert_backup(&r)?)).await {
            self.e.forget(&req.volume, &id);
            return Err(err);
        }
        // Every line the run logs carries its ID (`--log-format json`: in `spans`); blocking
        // work enters the span itself (`Span::current()`), a span does not cross threads.
        // (No `.await` from here on: the guard is never held across one.)
        let span = tracing::info_span!("backup", id = %id, volume = %req.volume);
        let _in_run = span.enter();
        tracing::info!(
            backup = id,
            volume = req.volume,
            target = row.target_url,
            trigger = req.trigger,
            encrypted = row.encrypted,
            "backup started"
        );
        let me = self.clone();
        tokio::spawn(
            async move {
                me.run(Started { row, spec, req, keep, created, progress, mode, seal }).await;
            }
            .instrument(span.clone()),
        );
        Ok(id)
    }

    /// The recipients of a run: the volume's `backup-encrypt` wins over the target's
    /// `encrypt-to`; `None`: not encrypted.
    fn recipients(&self, volume: Option<&str>, target_ref: &str) -> Result<Option<Arc<Recipients>>> {
        let parsed = match volume {
            Some(list) => Recipients::parse_list(list)
                .map(Some)
                .map_err(|err| Error::BadRequest(format!("backup-encrypt: {err}")))?,
            None => self
                .e
                .settings
                .target_recipients(target_ref)
                .map_err(|err| Error::BadRequest(format!("[targets.{target_ref}] encrypt-to: {err}")))?,
        };
        Ok(parsed.map(Arc::new))
    }

    async fn run(&self, s: Started) {
        let Started { mut row, spec, req, keep, created, progress, mode, seal } = s;
        let started = Instant::now();
        let permit = self.e.slots.clone().acquire_owned().await;
        progress.set_phase("archiving");
        let how = How { seal, rehash: req.rehash };
        let result = self.archive_volume(&mut row, spec, created, &progress, mode, how).await;
        row.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        row.finished_at = Some(self.e.clock.now_rfc3339());
        let failure = match result {
            Ok(m) => {
                record_complete(&mut row, m);
                None
            }
            Err(reason) => {
                let category = reason.category();
                self.record_failed(&mut row, reason).await;
                Some(category)
            }
        };
        let r = row.clone();
        if let Err(err) = self.blocking(move |e| Ok(e.svc.store().finish_backup(&r)?)).await {
            tracing::error!(backup = row.id, error = %err, "could not record the end of a backup");
        }
        self.observe_run(&row, failure, started.elapsed());
        if row.status == BackupStatus::Complete {
            self.after_complete(&row, &req, keep, &progress).await;
        }
        drop(permit);
        self.e.forget(&row.volume, &row.id);
    }

    /// Counts the finished run in the metrics and tells the notifiers.
    fn observe_run(&self, row: &BackupRow, failure: Option<&'static str>, took: Duration) {
        let Some(o) = self.e.restores.observer() else { return };
        let unix = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map_or(0, |t| t.timestamp());
        let finished = row.finished_at.as_deref().map_or_else(|| chrono::Utc::now().timestamp(), unix);
        o.metrics().run_finished(&RunSample {
            volume: &row.volume,
            target: &row.target_ref,
            started: unix(&row.started_at),
            finished,
            seconds: took.as_secs_f64(),
            failure,
            bytes_read: row.bytes_in.unwrap_or(0),
            bytes_stored: row.bytes_out.unwrap_or(0),
            downtime_ms: row.downtime_ms,
        });
        let kind = if failure.is_some() { EventKind::BackupFailed } else { EventKind::BackupSucceeded };
        let mut event = o.event(kind).volume(&row.volume).backup_id(&row.id).target(&row.target_ref);
        event.reason.clone_from(&row.reason);
        o.emit(event);
    }

    /// Mounts the volume under the run's own Mount ID, takes the consistency steps `mode`
    /// asks for (see `consistency`), writes the backup on a blocking thread from the snapshot
    /// (or the live volume), and releases all of it. Records the steps' outcome in `row`.
    async fn archive_volume(
        &self,
        row: &mut BackupRow,
        spec: TargetSpec,
        created: time::OffsetDateTime,
        progress: &Arc<Progress>,
        mode: Mode,
        how: How,
    ) -> std::result::Result<Manifest, RunError> {
        let volume = row.volume.clone();
        let mount_id = format!("{MOUNT_ID_PREFIX}{}", row.id);
        let root = self.e.svc.mount(&volume, &mount_id).await.map_err(RunError::Mount)?;
        // The volume's size is the total of a full backup's progress; an incremental reads what
        // changed, unknown beforehand (and finding the size walks the whole tree once more).
        if row.parent.is_none()
            && let Ok(Some(v)) = self.e.svc.get(&volume).await
            && let Some(used) = v.status.and_then(|s| s.used_bytes)
        {
            progress.set_total(used);
        }
        let out = match self.e.svc.record(&volume).await {
            Ok(vol) => {
                let write = Write { spec, root, options: vol.options, created, how };
                self.consistent_write(row, write, progress, mode).await
            }
            Err(err) => Err(RunError::Volume(err)),
        };
        if let Err(err) = self.e.svc.unmount(&volume, &mount_id).await {
            tracing::warn!(backup = row.id, error = %err, "could not release the backup's mount of the volume");
        }
        out
    }

    /// The consistency steps around the write (the volume is mounted at `w.root`).
    async fn consistent_write(
        &self,
        row: &mut BackupRow,
        w: Write,
        progress: &Arc<Progress>,
        mode: Mode,
    ) -> std::result::Result<Manifest, RunError> {
        let Write { spec, root, options, created, how } = w;
        let (docker, svc) = (&self.e.docker, &self.e.svc);
        if mode.freeze {
            svc.check_freezable(&row.volume).await.map_err(ConsistencyError::Freeze)?;
        }
        if mode.is_none() {
            row.consistency_note = self.writers_note(&row.volume).await;
        } else {
            progress.set_phase("holding");
        }
        let mut held = Held::take(docker, svc, &row.id, &row.volume, mode).await?;
        let mut snap = None;
        if !mode.is_none() {
            match svc.snapshot(&row.volume, &row.id).await {
                Ok(s) => snap = Some(s),
                Err(voltool_plugin::Error::Unsupported { reason, .. }) => {
                    let how = if held.holds_anything() || mode.freeze {
                        "held for the whole backup"
                    } else {
                        "read while its containers ran (only hooks were asked for)"
                    };
                    row.consistency_note = Some(format!("no snapshot ({reason}): {how}"));
                    if mode.freeze
                        && let Err(e) = held.freeze(svc).await
                    {
                        held.release(docker, svc).await;
                        return Err(e.into());
                    }
                }
                Err(e) => {
                    held.release(docker, svc).await;
                    return Err(RunError::Mount(e));
                }
            }
        }
        row.snapshot = Some(snap.as_ref().map_or("none", |s| s.kind).to_owned());
        // A freeze alone holds no container: its downtime is the freeze's.
        let frozen = snap.as_ref().and_then(|s| s.frozen);
        let mut downtime = None;
        if snap.is_some() {
            downtime = held.release(docker, svc).await.or(frozen);
        }
        progress.set_phase("archiving");
        let read_root = snap.as_ref().map_or_else(|| root.clone(), |s| s.root.clone());
        let (e, r, p, span) = (self.e.clone(), row.clone(), progress.clone(), tracing::Span::current());
        let out = tokio::task::spawn_blocking(move || {
            let _run = span.enter();
            e.write_backup(&r, &spec, read_root, &options, created, &p, (how.seal.as_deref(), how.rehash))
        })
        .await
        .map_err(RunError::Internal)
        .and_then(|written| Ok(written?));
        if snap.is_none() {
            downtime = held.release(docker, svc).await;
        }
        if let Some(s) = snap
            && let Err(err) = svc.drop_snapshot(&row.volume, s).await
        {
            tracing::warn!(backup = row.id, error = %err, "could not remove the backup's snapshot (removed at the next start)");
        }
        row.downtime_ms = downtime.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        for n in &held.notes {
            tracing::info!(backup = row.id, volume = row.volume, "{n}");
        }
        if !held.not_released.is_empty() {
            let all = held.not_released.join("; ");
            tracing::warn!(backup = row.id, volume = row.volume, "{all}");
            row.consistency_note = Some(match row.consistency_note.take() {
                Some(n) => format!("{n}; {all}"),
                None => all,
            });
        }
        out
    }

    /// The link a new incremental of `volume` to `target_url` follows: its newest complete
    /// backup there that this host may prune (not one `backup sync` found without `--adopt`),
    /// unless `full` says the chain starts over (or there is none).
    async fn chain_parent(
        &self,
        volume: &str,
        target_url: &str,
        full: &FullEvery,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<String>> {
        let (v, t) = (volume.to_owned(), target_url.to_owned());
        let rows = self.blocking(move |e| Ok(e.svc.store().list_backups(Some(&v))?)).await?;
        // Not a backup another host wrote (`synced`): that host's retention may delete it, and
        // this chain with it.
        let usable = |r: &BackupRow| {
            r.status == BackupStatus::Complete && r.target_url == t && r.vanished_at.is_none() && r.origin != "synced"
        };
        let Some(last) = rows.iter().find(|r| usable(r)) else { return Ok(None) };
        // The chain's full backup: parents, followed through the catalog.
        let mut full_row = last;
        while let Some(p) = &full_row.parent {
            match rows.iter().find(|r| &r.id == p && usable(r)) {
                Some(r) => full_row = r,
                None => return Ok(None),
            }
        }
        let full_at = chrono::DateTime::parse_from_rfc3339(&full_row.started_at)
            .map_or(chrono::DateTime::UNIX_EPOCH, |t| t.with_timezone(&chrono::Utc));
        Ok((!full.wants_full(last.level, full_at, now)).then(|| last.id.clone()))
    }

    /// With `backup-consistency=none`: which containers had the volume in use (best effort,
    /// a short deadline; nothing when the engine does not answer).
    async fn writers_note(&self, volume: &str) -> Option<String> {
        let docker = &self.e.docker;
        let all = tokio::time::timeout(Duration::from_secs(3), docker.engine.containers()).await.ok()?.ok()?;
        let users = voltool_docker::users_of(&all, volume, &docker.driver);
        let running: Vec<&str> =
            users.iter().filter(|c| c.state == voltool_docker::RunState::Running).map(|c| c.name.as_str()).collect();
        (!running.is_empty()).then(|| {
            format!(
                "crash-consistent at best: container(s) {} had the volume in use (set backup-consistency to stop, pause, hooks or freeze)",
                running.join(", ")
            )
        })
    }

    /// A failed run: the reason is recorded and what it wrote is removed (or the removal is
    /// left pending for the cleanup retry).
    async fn record_failed(&self, row: &mut BackupRow, reason: RunError) {
        let reason = reason.to_string();
        tracing::warn!(backup = row.id, volume = row.volume, reason, "backup failed");
        row.status = BackupStatus::Failed;
        row.reason = Some(reason);
        // The upload id was recorded in the catalog by the blocking part.
        let i = row.id.clone();
        if let Ok(Some(stored)) = self.blocking(move |e| Ok(e.svc.store().get_backup(&i)?)).await {
            row.upload_token = stored.upload_token;
        }
        let (e, r, span) = (self.e.clone(), row.clone(), tracing::Span::current());
        let cleaned = tokio::task::spawn_blocking(move || span.in_scope(|| e.remove_objects(&r))).await;
        row.cleanup_pending = !matches!(cleaned, Ok(Ok(())));
        if !row.cleanup_pending {
            row.upload_token = None;
        }
    }

    /// What a complete run goes on with: verification (and the restore test), then retention.
    async fn after_complete(&self, row: &BackupRow, req: &RunRequest, keep: Option<String>, progress: &Arc<Progress>) {
        if req.verify {
            progress.set_phase("verifying");
            progress.restart(row.bytes_out.unwrap_or(0));
            let verified = self.verify_with(&row.id, progress.clone(), false).await;
            if req.restore_test && verified.is_ok_and(|v| v.ok) {
                progress.set_phase("restore test");
                self.restore_test(&row.id).await;
            }
        }
        if let Some(k) = keep {
            progress.set_phase("pruning");
            match self.prune(Some(&row.volume), Some(&k), false, Some(&row.target_url)).await {
                Ok(items) => {
                    let gone = items.iter().filter(|i| !i.keep && i.error.is_none()).count();
                    if gone > 0 {
                        tracing::info!(volume = row.volume, deleted = gone, "retention applied");
                    }
                }
                Err(err) => tracing::warn!(volume = row.volume, error = %err, "retention failed"),
            }
        }
    }

    /// The restore test after a scheduled backup: its verdict is recorded with the backup and
    /// logged; it never fails the run.
    async fn restore_test(&self, id: &str) {
        match self.e.restores.restore_test(id, None).await {
            Ok(o) if o.ok => tracing::info!(backup = id, "restore test passed"),
            Ok(o) => tracing::warn!(backup = id, status = ?o.status, error = ?o.error, "restore test failed"),
            Err(e) => tracing::warn!(backup = id, error = %e, "restore test could not run"),
        }
    }

    /// Backs a volume up to its target, verified, and waits for the result (`on-remove=archive`).
    ///
    /// # Errors
    /// [`Error::Backup`] with the reason when the backup or its verification failed.
    pub async fn archive(&self, volume: &str) -> Result<String> {
        let req = RunRequest {
            volume: volume.to_owned(),
            target: None,
            verify: true,
            keep: None,
            trigger: "archive",
            restore_test: false,
            consistency: None,
            incremental: None,
            rehash: false,
        };
        let id = self.start(req).await?;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let v = self.show(&id).await?;
            if v.progress.is_some() || v.row.status == BackupStatus::Running {
                continue;
            }
            return match (v.row.status, v.row.verify_status.as_deref()) {
                (BackupStatus::Complete, Some("ok")) => Ok(id),
                (BackupStatus::Complete, _) => Err(backup_err(
                    &id,
                    format!("its verification failed: {}", v.row.verify_reason.unwrap_or_default()),
                )),
                _ => Err(backup_err(&id, v.row.reason.unwrap_or_else(|| "failed".into()))),
            };
        }
    }
}

/// What a run writes, once the volume is mounted at `root`.
struct Write {
    spec: TargetSpec,
    root: std::path::PathBuf,
    options: std::collections::BTreeMap<String, String>,
    created: time::OffsetDateTime,
    how: How,
}

/// How a run writes: encrypted to `seal`; `rehash`: an incremental compares the content of
/// files whose metadata is unchanged too.
struct How {
    seal: Option<Arc<Recipients>>,
    rehash: bool,
}

/// A run that wrote its three objects: the row takes the manifest's numbers (`bytes_out`:
/// the archive object as stored, encrypted or not).
fn record_complete(row: &mut BackupRow, m: Manifest) {
    row.status = BackupStatus::Complete;
    row.bytes_in = Some(m.bytes);
    row.bytes_out = Some(m.stored_size.unwrap_or(m.archive_size));
    row.files = Some(m.files);
    row.sha256 = Some(m.archive_sha256);
    row.upload_token = None;
    row.parent = m.parent.map(|p| p.id);
    row.level = m.level;
    tracing::info!(
        backup = row.id,
        volume = row.volume,
        bytes_in = m.bytes,
        bytes_out = m.archive_size,
        ms = row.duration_ms,
        notes = m.notes.len(),
        "backup complete"
    );
    // A volume written during the walk: each note names what was skipped and says the archive
    // is crash-consistent at best (all of them are in the manifest).
    if let Some(first) = m.notes.first() {
        tracing::warn!(backup = row.id, volume = row.volume, notes = m.notes.len(), first = %first, "backup complete with notes (all in its manifest): a volume written during the walk is archived crash-consistent at best");
    }
}
