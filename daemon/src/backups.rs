//! The backup engine: runs backups of volumes to their targets, keeps the catalog, verifies,
//! applies retention, and schedules all of it (SPEC §3).
//!
//! ## A run
//! 1. The volume is resolved, its target too (a config-file name or a URL); a second run of
//!    the same volume is refused (scheduled: skipped) while one is in flight.
//! 2. A catalog row `running` is written before any byte, then the run waits for one of the
//!    global slots (`[backup] concurrency`, default 2).
//! 3. The daemon mounts the volume itself under an internal Mount ID (`voltool-backup-ID`, so
//!    a container stopping meanwhile does not unmount it) and streams
//!    [`voltool_backup::write_archive_with_progress`] into the target's [`ObjectWriter`]; the
//!    S3 upload id is recorded in the row as soon as it exists.
//! 4. Archive, manifest and checksum are committed in that order; only then is the row
//!    `complete`. Any failure removes what the run wrote and records the reason.
//! 5. With `verify`, the stored archive is read back and checked against the manifest; then
//!    the retention policy of the volume (or schedule) is applied to that target.
//!
//! ## Recovery
//! At start, rows still `running` belong to runs killed with the daemon: they are marked
//! failed; then a run whose three objects are whole and verify is kept as `complete`, the
//! others' objects (and an open multipart upload) are removed, and prunes cut short are
//! finished ([`recover`]). A cleanup that fails (target unreachable) stays pending and is
//! retried by the scheduler. Retention is plan-then-execute ([`prune`]).
//!
//! ## Scheduling
//! Every schedule (a volume's `backup-schedule`, or a `[schedules.NAME]` table of the config
//! file) has its state in SQLite: when it was first seen and the last slot handled. A slot
//! missed while the daemon was down runs once at start ([`voltool_backup::schedule::due`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use voltool_backup::retention::KeepPolicy;
use voltool_backup::schedule::{Due, Schedule};
use voltool_backup::{
    ArchiveOptions, Manifest, ObjectWriter, StreamedPut, Target, TargetConfig, TargetSpec, VerifyReport, open_target,
};

use voltool_plugin::VolumeService;
use voltool_plugin::options::is_target_url;
use voltool_plugin::store::{BackupRow, BackupStatus, ScheduleState};

use crate::error::{Error, Result};
use crate::restores::Restores;

mod catalog;
mod prune;
mod recover;

pub use catalog::{Catalog, Located};

/// The largest manifest the engine reads back (a manifest lists every file: ~200 bytes each).
pub(crate) const MANIFEST_LIMIT: u64 = 1 << 30;
/// Mount IDs the engine holds while it reads a volume start with this.
pub const MOUNT_ID_PREFIX: &str = "voltool-backup-";
/// How often the scheduler looks at its schedules at least (it also wakes when a volume
/// changes).
const TICK: Duration = Duration::from_secs(10);
/// How often pending cleanups of failed backups are retried.
const CLEANUP_RETRY: Duration = Duration::from_secs(15);

/// The `[backup]`, `[targets.*]` and `[schedules.*]` parts of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupSettings {
    /// The target of volumes without `backup-target`: a name or URL. Default:
    /// `<state dir>/backups`.
    #[serde(default)]
    pub default_target: Option<String>,
    /// zstd level (1-19), default 3.
    #[serde(default = "default_level")]
    pub level: i32,
    /// zstd worker threads; 0: one per CPU.
    #[serde(default)]
    pub threads: u32,
    /// Backups that may run at the same time (verifications included).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Directories a `backup-target=` given through Docker may name (and their
    /// subdirectories); default: the default target's directory (see `crate::access`).
    #[serde(default)]
    pub allowed_dirs: Option<Vec<std::path::PathBuf>>,
    #[serde(default, skip)]
    pub targets: BTreeMap<String, TargetConfig>,
    #[serde(default, skip)]
    pub schedules: BTreeMap<String, ConfigSchedule>,
}

fn default_level() -> i32 {
    3
}

fn default_concurrency() -> usize {
    2
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            default_target: None,
            level: default_level(),
            threads: 0,
            concurrency: default_concurrency(),
            allowed_dirs: None,
            targets: BTreeMap::new(),
            schedules: BTreeMap::new(),
        }
    }
}

/// A `[schedules.NAME]` table: back these volumes up on this cron schedule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigSchedule {
    pub volumes: Vec<String>,
    pub cron: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub keep: Option<String>,
    #[serde(default)]
    pub verify: bool,
}

impl BackupSettings {
    /// Checks everything that can be checked without a volume: levels, target URLs and
    /// schedule expressions. Called once at start so a bad config file stops the daemon.
    ///
    /// # Errors
    /// A message naming the bad setting.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=19).contains(&self.level) {
            return Err(format!("[backup] level = {}: use 1 to 19", self.level));
        }
        if self.concurrency == 0 {
            return Err("[backup] concurrency must be at least 1".into());
        }
        for (name, t) in &self.targets {
            TargetSpec::from_config(t).map_err(|e| format!("[targets.{name}]: {e}"))?;
        }
        if let Some(t) = &self.default_target {
            self.resolve(t).map_err(|e| format!("[backup] default-target: {e}"))?;
        }
        for (name, s) in &self.schedules {
            Schedule::parse(&s.cron).map_err(|e| format!("[schedules.{name}]: {e}"))?;
            if let Some(k) = &s.keep {
                KeepPolicy::parse(k).map_err(|e| format!("[schedules.{name}]: {e}"))?;
            }
            if let Some(t) = &s.target {
                self.resolve(t).map_err(|e| format!("[schedules.{name}]: {e}"))?;
            }
            for v in &s.volumes {
                voltool_plugin::options::validate_name(v).map_err(|e| format!("[schedules.{name}]: {e}"))?;
            }
        }
        Ok(())
    }

    /// Resolves a target reference (config name or URL) to its spec.
    fn resolve(&self, reference: &str) -> std::result::Result<TargetSpec, String> {
        if is_target_url(reference) {
            return TargetSpec::parse(reference).map_err(|e| e.to_string());
        }
        match self.targets.get(reference) {
            Some(cfg) => TargetSpec::from_config(cfg).map_err(|e| e.to_string()),
            None => {
                let known: Vec<&str> = self.targets.keys().map(String::as_str).collect();
                Err(format!(
                    "backup target {reference:?} is not defined in the config file ({}); use a [targets.{reference}] table or a URL",
                    if known.is_empty() {
                        "it defines no targets".to_string()
                    } else {
                        format!("defined: {}", known.join(", "))
                    }
                ))
            }
        }
    }
}

/// Live numbers of a run or verification in flight.
#[derive(Debug, Default)]
pub struct Progress {
    phase: Mutex<&'static str>,
    /// File bytes read (backup) or archive bytes read (verify).
    done: Arc<AtomicU64>,
    /// What `done` is heading for, when known.
    total: AtomicU64,
}

impl Progress {
    fn set_phase(&self, p: &'static str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    fn view(&self) -> ProgressView {
        let total = self.total.load(Ordering::Relaxed);
        ProgressView {
            phase: *self.phase.lock().unwrap_or_else(|e| e.into_inner()),
            done_bytes: self.done.load(Ordering::Relaxed),
            total_bytes: (total > 0).then_some(total),
        }
    }
}

/// Progress as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProgressView {
    /// `queued`, `archiving`, `verifying`, `pruning`.
    pub phase: &'static str,
    pub done_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
}

/// A catalog entry with its live progress, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupView {
    #[serde(flatten)]
    pub row: BackupRow,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
}

/// The outcome of `backup verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyOutcome {
    pub id: String,
    pub ok: bool,
    /// The first problem found, naming the file or the archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_bytes: Option<u64>,
}

/// One decision of a prune.
#[derive(Debug, Clone, Serialize)]
pub struct PruneItem {
    pub id: String,
    pub volume: String,
    pub target: String,
    pub keep: bool,
    pub reasons: Vec<String>,
    /// Set when deleting it failed (the backup stays in the catalog).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One schedule as `backup schedule ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub volume: String,
    pub cron: String,
    /// `volume option` or `config schedule NAME`.
    pub source: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
    pub verify: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<String>,
    /// The ID of the backup of this volume in flight, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
}

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
}

struct Engine {
    svc: VolumeService,
    settings: BackupSettings,
    default_target: String,
    rt: tokio::runtime::Handle,
    /// volume → ID of its run in flight.
    running: Mutex<HashMap<String, String>>,
    /// ID → progress of runs and verifications in flight.
    progress: Mutex<HashMap<String, Arc<Progress>>>,
    slots: Arc<Semaphore>,
    wake: Notify,
    catalog: Catalog,
    /// Runs the restore tests of `backup-verify=restore` volumes after their backups.
    restores: Restores,
    /// The background retry of pending cleanups: running, and when it last started.
    cleanup_running: std::sync::atomic::AtomicBool,
    cleanup_last: Mutex<Option<Instant>>,
}

/// The backup engine; cheap to clone.
#[derive(Clone)]
pub struct Backups {
    e: Arc<Engine>,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups").field("default_target", &self.e.default_target).finish_non_exhaustive()
    }
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

fn random_suffix() -> [u8; 3] {
    let mut b = [0u8; 3];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        b.copy_from_slice(&n.to_le_bytes()[..3]);
    }
    b
}

fn names(id: &str) -> [String; 3] {
    [format!("{id}.tar.zst"), format!("{id}.manifest.json"), format!("{id}.tar.zst.sha256")]
}

fn backup_err(id: &str, reason: impl std::fmt::Display) -> Error {
    Error::Backup { id: id.to_owned(), reason: reason.to_string() }
}

impl Backups {
    /// Creates the engine and recovers from runs a previous daemon did not finish. Call
    /// [`Self::spawn_scheduler`] afterwards to start scheduled backups.
    ///
    /// # Errors
    /// A bad config ([`Error::BadRequest`]), store errors.
    pub async fn open(svc: VolumeService, settings: BackupSettings, restores: Restores) -> Result<Self> {
        settings.validate().map_err(Error::BadRequest)?;
        let catalog = restores.catalog().clone();
        let default_target = settings
            .default_target
            .clone()
            .unwrap_or_else(|| svc.layout().state_dir.join("backups").display().to_string());
        let e = Arc::new(Engine {
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            svc,
            settings,
            default_target,
            rt: tokio::runtime::Handle::current(),
            running: Mutex::default(),
            progress: Mutex::default(),
            wake: Notify::new(),
            catalog,
            restores,
            cleanup_running: std::sync::atomic::AtomicBool::new(false),
            cleanup_last: Mutex::new(None),
        });
        let b = Self { e };
        b.recover(true).await?;
        Ok(b)
    }

    /// The catalog (locate, record verifications) the restores share.
    pub fn catalog(&self) -> &Catalog {
        &self.e.catalog
    }

    /// The restores (restore tests run after a `backup-verify=restore` volume's backups).
    pub fn restores(&self) -> &Restores {
        &self.e.restores
    }

    /// The target used when neither the run nor the volume names one.
    pub fn default_target(&self) -> &str {
        &self.e.default_target
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Engine) -> Result<T> + Send + 'static) -> Result<T> {
        let e = self.e.clone();
        tokio::task::spawn_blocking(move || f(&e)).await.map_err(|err| Error::Internal(err.to_string()))?
    }

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
        let spec = self.e.settings.resolve(&target_ref).map_err(Error::BadRequest)?;
        let keep = req.keep.clone().or_else(|| vol.spec.backup.keep.clone());
        if let Some(k) = &keep {
            KeepPolicy::parse(k).map_err(|err| Error::BadRequest(err.to_string()))?;
        }
        let now = Utc::now();
        let created = time::OffsetDateTime::from_unix_timestamp(now.timestamp())
            .map_err(|err| Error::Internal(err.to_string()))?;
        let id = voltool_backup::backup_id(&req.volume, created, random_suffix());
        {
            let mut running = self.e.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = running.get(&req.volume) {
                return Err(Error::BackupBusy { volume: req.volume.clone(), id: other.clone() });
            }
            running.insert(req.volume.clone(), id.clone());
        }
        let progress = Arc::new(Progress::default());
        progress.set_phase("queued");
        self.e.progress.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), progress.clone());
        let row = BackupRow::running(
            &id,
            &req.volume,
            &target_ref,
            &spec.describe(),
            req.trigger,
            &now.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
        let r = row.clone();
        if let Err(err) = self.blocking(move |e| Ok(e.svc.store().insert_backup(&r)?)).await {
            self.e.forget(&req.volume, &id);
            return Err(err);
        }
        tracing::info!(
            backup = id,
            volume = req.volume,
            target = row.target_url,
            trigger = req.trigger,
            "backup started"
        );
        let me = self.clone();
        tokio::spawn(async move {
            me.run(row, spec, req, keep, created, progress).await;
        });
        Ok(id)
    }

    async fn run(
        &self,
        mut row: BackupRow,
        spec: TargetSpec,
        req: RunRequest,
        keep: Option<String>,
        created: time::OffsetDateTime,
        progress: Arc<Progress>,
    ) {
        let started = Instant::now();
        let permit = self.e.slots.clone().acquire_owned().await;
        progress.set_phase("archiving");
        let mount_id = format!("{MOUNT_ID_PREFIX}{}", row.id);
        let result = match self.e.svc.mount(&req.volume, &mount_id).await {
            Ok(root) => {
                if let Ok(Some(v)) = self.e.svc.get(&req.volume).await
                    && let Some(used) = v.status.and_then(|s| s.used_bytes)
                {
                    progress.total.store(used, Ordering::Relaxed);
                }
                let (e, r, p) = (self.e.clone(), row.clone(), progress.clone());
                let vol = self.e.svc.record(&req.volume).await;
                let out = match vol {
                    Ok(vol) => {
                        tokio::task::spawn_blocking(move || e.write_backup(&r, &spec, root, &vol.options, created, &p))
                            .await
                            .unwrap_or_else(|err| Err(format!("internal error: {err}")))
                    }
                    Err(err) => Err(err.to_string()),
                };
                if let Err(err) = self.e.svc.unmount(&req.volume, &mount_id).await {
                    tracing::warn!(backup = row.id, error = %err, "could not release the backup's mount of the volume");
                }
                out
            }
            Err(err) => Err(format!("mounting the volume: {err}")),
        };
        row.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        row.finished_at = Some(now_rfc3339());
        match result {
            Ok(m) => {
                row.status = BackupStatus::Complete;
                row.bytes_in = Some(m.bytes);
                row.bytes_out = Some(m.archive_size);
                row.files = Some(m.files);
                row.sha256 = Some(m.archive_sha256);
                row.upload_token = None;
                tracing::info!(
                    backup = row.id,
                    volume = row.volume,
                    bytes_in = m.bytes,
                    bytes_out = m.archive_size,
                    ms = row.duration_ms,
                    notes = m.notes.len(),
                    "backup complete"
                );
                // A volume written during the walk: each note names what was skipped and says
                // the archive is crash-consistent at best (all of them are in the manifest).
                if let Some(first) = m.notes.first() {
                    tracing::warn!(backup = row.id, volume = row.volume, notes = m.notes.len(), first = %first, "backup complete with notes (all in its manifest): a volume written during the walk is archived crash-consistent at best");
                }
            }
            Err(reason) => {
                tracing::warn!(backup = row.id, volume = row.volume, reason, "backup failed");
                row.status = BackupStatus::Failed;
                row.reason = Some(reason);
                // The upload id was recorded in the catalog by the blocking part.
                let i = row.id.clone();
                if let Ok(Some(stored)) = self.blocking(move |e| Ok(e.svc.store().get_backup(&i)?)).await {
                    row.upload_token = stored.upload_token;
                }
                let (e, r) = (self.e.clone(), row.clone());
                let cleaned = tokio::task::spawn_blocking(move || e.remove_objects(&r)).await;
                row.cleanup_pending = !matches!(cleaned, Ok(Ok(())));
                if !row.cleanup_pending {
                    row.upload_token = None;
                }
            }
        }
        let r = row.clone();
        if let Err(err) = self.blocking(move |e| Ok(e.svc.store().finish_backup(&r)?)).await {
            tracing::error!(backup = row.id, error = %err, "could not record the end of a backup");
        }
        if row.status == BackupStatus::Complete {
            if req.verify {
                progress.set_phase("verifying");
                progress.done.store(0, Ordering::Relaxed);
                progress.total.store(row.bytes_out.unwrap_or(0), Ordering::Relaxed);
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
        drop(permit);
        self.e.forget(&row.volume, &row.id);
    }

    /// Re-reads a complete backup from its target and checks it against its manifest; the
    /// result goes to the catalog.
    ///
    /// # Errors
    /// [`Error::BackupNotFound`], [`Error::BadRequest`] for a backup that is not complete;
    /// a failed check is an `Ok` outcome with `ok: false`.
    pub async fn verify(&self, id: &str) -> Result<VerifyOutcome> {
        let progress = Arc::new(Progress::default());
        progress.set_phase("verifying");
        self.verify_with(id, progress, true).await
    }

    /// `take_slot`: wait for one of the global slots (a standalone verify); a run verifying
    /// its own backup already holds one (taking a second could deadlock all slots).
    async fn verify_with(&self, id: &str, progress: Arc<Progress>, take_slot: bool) -> Result<VerifyOutcome> {
        let i = id.to_owned();
        let row = self
            .blocking(move |e| Ok(e.svc.store().get_backup(&i)?))
            .await?
            .ok_or_else(|| Error::BackupNotFound { id: id.to_owned() })?;
        if row.status != BackupStatus::Complete {
            return Err(Error::BadRequest(format!(
                "backup {id} is {}, only complete backups can be verified",
                serde_json::to_value(row.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            )));
        }
        let spec = self.e.resolve_row(&row)?;
        progress.total.store(row.bytes_out.unwrap_or(0), Ordering::Relaxed);
        let registered = {
            let mut map = self.e.progress.lock().unwrap_or_else(|p| p.into_inner());
            map.insert(id.to_owned(), progress.clone()).is_none()
        };
        let permit = if take_slot { Some(self.e.slots.clone().acquire_owned().await) } else { None };
        let (e, r, p) = (self.e.clone(), row.clone(), progress.clone());
        let result = tokio::task::spawn_blocking(move || e.verify_backup(&r, &spec, &p))
            .await
            .unwrap_or_else(|err| Err(format!("internal error: {err}")));
        drop(permit);
        if registered {
            self.e.progress.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        }
        let outcome = match &result {
            Ok(rep) => VerifyOutcome {
                id: id.to_owned(),
                ok: true,
                error: None,
                entries: Some(rep.entries),
                files: Some(rep.files),
                bytes: Some(rep.bytes),
                archive_bytes: Some(rep.archive_size),
            },
            Err(reason) => VerifyOutcome {
                id: id.to_owned(),
                ok: false,
                error: Some(format!("backup {id}: {reason}")),
                entries: None,
                files: None,
                bytes: None,
                archive_bytes: None,
            },
        };
        if outcome.ok {
            tracing::info!(backup = id, "backup verified");
        } else {
            tracing::warn!(backup = id, error = outcome.error.as_deref().unwrap_or(""), "backup verification failed");
        }
        let (i, ok, reason) = (id.to_owned(), outcome.ok, outcome.error.clone());
        self.blocking(move |e| Ok(e.svc.store().set_backup_verified(&i, ok, &now_rfc3339(), reason.as_deref())?))
            .await?;
        Ok(outcome)
    }

    /// The catalog, newest first, with live progress of runs in flight.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(&self, volume: Option<&str>) -> Result<Vec<BackupView>> {
        let v = volume.map(str::to_owned);
        let rows = self.blocking(move |e| Ok(e.svc.store().list_backups(v.as_deref())?)).await?;
        Ok(rows.into_iter().map(|r| self.view(r)).collect())
    }

    /// One backup.
    ///
    /// # Errors
    /// [`Error::BackupNotFound`], store errors.
    pub async fn show(&self, id: &str) -> Result<BackupView> {
        let i = id.to_owned();
        let row = self
            .blocking(move |e| Ok(e.svc.store().get_backup(&i)?))
            .await?
            .ok_or_else(|| Error::BackupNotFound { id: id.to_owned() })?;
        Ok(self.view(row))
    }

    /// The manifest of a complete backup, read from its target.
    ///
    /// # Errors
    /// [`Error::BackupNotFound`], [`Error::Backup`] when the target cannot be read.
    pub async fn manifest(&self, id: &str) -> Result<Manifest> {
        let row = self.show(id).await?.row;
        let spec = self.e.resolve_row(&row)?;
        let i = id.to_owned();
        self.blocking(move |e| {
            let target = open_target(&spec, &e.rt).map_err(|m| backup_err(&i, m))?;
            e.read_manifest(&*target, &i).map_err(|m| backup_err(&i, m))
        })
        .await
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

    fn view(&self, row: BackupRow) -> BackupView {
        // Progress stays while a finished run verifies and prunes.
        let progress = self.e.progress.lock().unwrap_or_else(|p| p.into_inner()).get(&row.id).map(|p| p.view());
        BackupView { row, progress }
    }

    /// Every schedule with its next run.
    ///
    /// # Errors
    /// Store errors.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>> {
        let now = Utc::now();
        let mut out = Vec::new();
        for (key, entry) in self.schedule_entries().await? {
            let k = key.clone();
            let state = self.blocking(move |e| Ok(e.svc.store().get_schedule(&k)?)).await?;
            let Ok(sched) = Schedule::parse(&entry.cron) else { continue };
            let (anchor, last) = match state.filter(|s| s.expr == entry.cron) {
                Some(s) => (parse_time(&s.anchor).unwrap_or(now), s.last_slot.as_deref().and_then(parse_time)),
                None => (now, None),
            };
            let next_run = match voltool_backup::schedule::due(&sched, last, anchor, now) {
                Due::Now { .. } => Some(now),
                Due::At(t) => Some(t),
                Due::Never => None,
            };
            let running = self.e.running.lock().unwrap_or_else(|p| p.into_inner()).get(&entry.volume).cloned();
            out.push(ScheduleView {
                target: entry.target.clone().unwrap_or_else(|| self.e.default_target.clone()),
                volume: entry.volume,
                cron: entry.cron,
                source: entry.source,
                keep: entry.keep,
                verify: entry.verify,
                next_run: next_run.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                last_slot: last.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                running,
            });
        }
        Ok(out)
    }

    /// Tells the scheduler to look at its schedules now (a volume was created or removed).
    pub fn wake(&self) {
        self.e.wake.notify_one();
    }

    /// Starts the scheduler loop on the current runtime.
    pub fn spawn_scheduler(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let next = match me.tick(Utc::now()).await {
                    Ok(next) => next,
                    Err(err) => {
                        tracing::warn!(error = %err, "backup scheduler tick failed");
                        None
                    }
                };
                let wait = next
                    .and_then(|t| (t - Utc::now()).to_std().ok())
                    .map_or(TICK, |d| d.min(TICK))
                    .max(Duration::from_millis(200));
                let changes = me.e.svc.changes();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = me.e.wake.notified() => {}
                    () = changes.notified() => {}
                }
            }
        })
    }

    /// Retries pending cleanups of failed backups in the background: at most one pass at a
    /// time and one every [`CLEANUP_RETRY`] (right away after a start), so an unreachable
    /// target never delays the schedules.
    fn spawn_cleanup_retry(&self) {
        {
            let mut last = self.e.cleanup_last.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < CLEANUP_RETRY) {
                return;
            }
            if self.e.cleanup_running.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(err) = me.recover(false).await {
                tracing::warn!(error = %err, "retrying the cleanup of failed backups failed");
            }
            me.e.cleanup_running.store(false, Ordering::Release);
        });
    }

    async fn schedule_entries(&self) -> Result<Vec<(String, Entry)>> {
        let mut out = Vec::new();
        for v in self.e.svc.list().await? {
            if let Some(cron) = v.spec.backup.schedule.clone() {
                out.push((
                    format!("volume:{}", v.name),
                    Entry {
                        volume: v.name.clone(),
                        cron,
                        source: "volume option".into(),
                        target: v.spec.backup.target.clone(),
                        keep: v.spec.backup.keep.clone(),
                        verify: v.spec.backup.verify,
                        restore_test: v.spec.backup.restore_test,
                    },
                ));
            }
        }
        for (name, s) in &self.e.settings.schedules {
            for vol in &s.volumes {
                out.push((
                    format!("config:{name}:{vol}"),
                    Entry {
                        volume: vol.clone(),
                        cron: s.cron.clone(),
                        source: format!("config schedule {name}"),
                        target: s.target.clone(),
                        keep: s.keep.clone(),
                        verify: s.verify,
                        restore_test: false,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// One pass of the scheduler at `now`: starts what is due and returns when it should look
    /// again.
    ///
    /// # Errors
    /// Store errors.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        self.spawn_cleanup_retry();
        let entries = self.schedule_entries().await?;
        let keys: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
        self.blocking(move |e| Ok(e.svc.store().retain_schedules(&keys)?)).await?;
        let mut next: Option<DateTime<Utc>> = None;
        for (key, entry) in entries {
            let Ok(sched) = Schedule::parse(&entry.cron) else {
                tracing::warn!(schedule = key, cron = entry.cron, "invalid schedule ignored");
                continue;
            };
            let k = key.clone();
            let state = self.blocking(move |e| Ok(e.svc.store().get_schedule(&k)?)).await?;
            let mut state = match state.filter(|s| s.expr == entry.cron) {
                Some(s) => s,
                None => {
                    let s = ScheduleState {
                        key: key.clone(),
                        expr: entry.cron.clone(),
                        anchor: now.to_rfc3339_opts(SecondsFormat::Millis, true),
                        last_slot: None,
                    };
                    let s2 = s.clone();
                    self.blocking(move |e| Ok(e.svc.store().put_schedule(&s2)?)).await?;
                    s
                }
            };
            let anchor = parse_time(&state.anchor).unwrap_or(now);
            let last = state.last_slot.as_deref().and_then(parse_time);
            match voltool_backup::schedule::due(&sched, last, anchor, now) {
                Due::Now { slot, missed } => {
                    state.last_slot = Some(slot.to_rfc3339_opts(SecondsFormat::Millis, true));
                    let s2 = state.clone();
                    self.blocking(move |e| Ok(e.svc.store().put_schedule(&s2)?)).await?;
                    if missed > 0 {
                        tracing::info!(
                            schedule = key,
                            missed,
                            "slots were missed while the daemon was down; running once now"
                        );
                    }
                    let req = RunRequest {
                        volume: entry.volume.clone(),
                        target: entry.target.clone(),
                        verify: entry.verify,
                        keep: entry.keep.clone(),
                        trigger: "schedule",
                        restore_test: entry.restore_test,
                    };
                    match self.start(req).await {
                        Ok(id) => tracing::info!(schedule = key, backup = id, "scheduled backup started"),
                        Err(Error::BackupBusy { id, .. }) => {
                            tracing::info!(
                                schedule = key,
                                running = id,
                                "skipped: a backup of this volume is still running"
                            )
                        }
                        Err(err) => tracing::warn!(schedule = key, error = %err, "scheduled backup could not start"),
                    }
                    if let Some(t) = sched.next_after(slot) {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                }
                Due::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
                Due::Never => {}
            }
        }
        Ok(next)
    }
}

struct Entry {
    volume: String,
    cron: String,
    source: String,
    target: Option<String>,
    keep: Option<String>,
    verify: bool,
    restore_test: bool,
}

impl Engine {
    fn forget(&self, volume: &str, id: &str) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.get(volume).is_some_and(|i| i == id) {
            running.remove(volume);
        }
        self.progress.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn resolve_row(&self, row: &BackupRow) -> Result<TargetSpec> {
        self.catalog.resolve_row(row)
    }

    /// The blocking part of a run: archive → manifest → checksum.
    fn write_backup(
        &self,
        row: &BackupRow,
        spec: &TargetSpec,
        root: PathBuf,
        options: &BTreeMap<String, String>,
        created: time::OffsetDateTime,
        progress: &Progress,
    ) -> std::result::Result<Manifest, String> {
        let target = open_target(spec, &self.rt).map_err(|e| e.to_string())?;
        let [archive, manifest_name, sum_name] = names(&row.id);
        let mut writer: Box<dyn ObjectWriter> = target.create(&archive).map_err(|e| e.to_string())?;
        if let Some(token) = writer.token() {
            self.svc.store().set_backup_token(&row.id, Some(&token)).map_err(|e| e.to_string())?;
        }
        let opts = ArchiveOptions {
            level: self.settings.level,
            threads: if self.settings.threads == 0 {
                std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
            } else {
                self.settings.threads
            },
            xattrs: true,
            // A backup's manifest lists every file's sha256.
            hash_files: true,
        };
        let summary = self.archive_read_only(&root, &mut *writer, &opts, progress).map_err(|e| e.to_string())?;
        writer.commit().map_err(|e| e.to_string())?;
        let m =
            Manifest::without_entries(&row.id, &row.volume, options, &summary, created).map_err(|e| e.to_string())?;
        // Streamed from the archiver's compact entry list: the manifest of a volume with many
        // files is never whole in memory (see `voltool_backup::manifest`).
        let mut out = StreamedPut::new(&*target, &manifest_name);
        m.write_json(&summary.entries, std::io::BufWriter::with_capacity(64 << 10, &mut out))
            .map_err(|e| format!("{manifest_name}: {e}"))?;
        drop(summary);
        out.finish().map_err(|e| e.to_string())?;
        target
            .put_small(&sum_name, voltool_backup::sha256sum_line(&row.id, &m.archive_sha256).as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(m)
    }

    /// Archives `root` through a read-only view of it: a read-only bind mount over it in a
    /// private mount namespace that only the archiving thread sees, so the backup cannot
    /// change the volume whatever happens. Where namespaces are not available (no
    /// CAP_SYS_ADMIN) it reads the volume directly (the archiver only ever opens files
    /// read-only).
    fn archive_read_only(
        &self,
        root: &std::path::Path,
        writer: &mut dyn ObjectWriter,
        opts: &ArchiveOptions,
        progress: &Progress,
    ) -> std::result::Result<voltool_backup::ArchiveSummary, voltool_backup::BackupError> {
        use voltool_runtime::{MountFlags, MountRequest};
        let mounter = self.svc.mounter();
        let inside = voltool_runtime::ns::in_new_mount_ns(|| {
            let ro = MountRequest {
                flags: MountFlags::MS_BIND | MountFlags::MS_REMOUNT | MountFlags::MS_RDONLY,
                ..MountRequest::bind(root, root)
            };
            match mounter.mount(&MountRequest::bind(root, root)).and_then(|()| mounter.mount(&ro)) {
                Ok(()) => {
                    Some(voltool_backup::write_archive_with_progress(root, &mut *writer, opts, progress.done.clone()))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no read-only view of the volume; reading it directly");
                    None
                }
            }
        });
        match inside {
            Ok(Some(result)) => result,
            // The closure never touched the writer: no namespace, or no bind mount.
            Ok(None) | Err(voltool_runtime::Error::Namespace { .. }) => {
                voltool_backup::write_archive_with_progress(root, writer, opts, progress.done.clone())
            }
            Err(e) => Err(voltool_backup::BackupError::Write(std::io::Error::other(e.to_string()))),
        }
    }

    fn read_manifest(&self, target: &dyn Target, id: &str) -> std::result::Result<Manifest, String> {
        let [_, manifest_name, sum_name] = names(id);
        let bytes = target.read_small(&manifest_name, MANIFEST_LIMIT).map_err(|e| e.to_string())?;
        let text = String::from_utf8(bytes).map_err(|_| format!("{manifest_name} is not UTF-8"))?;
        let m = Manifest::from_json(&text).map_err(|e| format!("{manifest_name}: {e}"))?;
        if m.id != id {
            return Err(format!("{manifest_name} describes backup {}, not this one", m.id));
        }
        let sum = target.read_small(&sum_name, 4096).map_err(|e| e.to_string())?;
        if sum != voltool_backup::sha256sum_line(id, &m.archive_sha256).as_bytes() {
            return Err(format!("{sum_name} does not match the archive sha256 in {manifest_name}"));
        }
        Ok(m)
    }

    fn verify_backup(
        &self,
        row: &BackupRow,
        spec: &TargetSpec,
        progress: &Progress,
    ) -> std::result::Result<VerifyReport, String> {
        let target = open_target(spec, &self.rt).map_err(|e| e.to_string())?;
        let [archive, ..] = names(&row.id);
        // As stored, not as cached: a backup verified right after it was written is still
        // whole in the page cache.
        let reader = target.open_stored(&archive).map_err(|e| e.to_string())?;
        let reader = CountingReader { inner: reader, count: progress.done.clone() };
        // The manifest (~20 MB of JSON for 100,000 files) is read and parsed while the archive
        // is already being read and decoded.
        let load = || {
            let m = self.read_manifest(&*target, &row.id)?;
            if let Some(sha) = &row.sha256
                && *sha != m.archive_sha256
            {
                return Err(format!(
                    "the manifest's archive sha256 {} differs from the catalog's {sha}",
                    m.archive_sha256
                ));
            }
            Ok(m)
        };
        voltool_backup::verify_archive_loading(reader, &archive, load)
            .map(|(_, report)| report)
            .map_err(|e| e.to_string())
    }

    /// Removes every object of a failed or interrupted run (and its open upload).
    fn remove_objects(&self, row: &BackupRow) -> std::result::Result<(), String> {
        let spec = self.settings.resolve(&row.target_ref)?;
        let target = open_target(&spec, &self.rt).map_err(|e| e.to_string())?;
        let [archive, manifest, sum] = names(&row.id);
        target.cleanup(&archive, row.upload_token.as_deref()).map_err(|e| e.to_string())?;
        for n in [&sum, &manifest, &archive] {
            target.cleanup(n, None).map_err(|e| e.to_string())?;
            target.delete(n).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

struct CountingReader {
    inner: Box<dyn Read + Send>,
    count: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
