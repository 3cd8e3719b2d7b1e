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
//!    [`voltool_backup::write_archive_with_progress`] into the target's
//!    [`voltool_backup::ObjectWriter`]; the S3 upload id is recorded in the row as soon as it
//!    exists.
//! 4. Archive, manifest and checksum are committed in that order; only then is the row
//!    `complete`. Any failure removes what the run wrote and records the reason.
//! 5. With `verify`, the stored archive is read back and checked against the manifest; then
//!    the retention policy of the volume (or schedule) is applied to that target.
//!
//! ## Recovery
//! At start, rows still `running` belong to runs killed with the daemon: they are marked
//! failed; then a run whose three objects are whole and verify is kept as `complete`, the
//! others' objects (and an open multipart upload) are removed, and prunes cut short are
//! finished (`recover.rs`). A cleanup that fails (target unreachable) stays pending and is
//! retried by the scheduler. Retention is plan-then-execute (`prune.rs`): a pure
//! `PrunePlan` from the catalog, the policies and the clock, then the deletions.
//!
//! ## Scheduling
//! Every schedule (a volume's `backup-schedule`, or a `[schedules.NAME]` table of the config
//! file) has its state in SQLite: when it was first seen and the last slot handled. A slot
//! missed while the daemon was down runs once at start ([`voltool_backup::schedule::due`]).
//!
//! ## Where things are
//! | file | owns |
//! |---|---|
//! | `backups.rs` | [`Backups`], [`Backups::open`], catalog queries, small helpers |
//! | `settings.rs` | [`BackupSettings`], [`ConfigSchedule`], validate/resolve and their errors |
//! | `views.rs` | what the API answers with (plain `Serialize` data) |
//! | `run.rs` | starting a run, the run itself, `on-remove=archive` |
//! | `verify.rs` | `backup verify`, and the verification after a run |
//! | `prune.rs` | retention: the pure plan, then its execution |
//! | `schedule.rs` | schedules, the scheduler's `tick(now)`, the cleanup retry |
//! | `recover.rs` | what a stop interrupted: runs and prunes |
//! | `on_target.rs` | what a target holds: backups found by their manifest objects, checked |
//! | `sync.rs` | `backup ls --target`, `backup sync`: the catalog from the target |
//! | `engine.rs` | the blocking `Engine`: archive, manifest, verify, remove objects |
//! | `consistency/` | `backup-consistency`: hooks, holds on containers, freeze, snapshot, release |
//! | `clock.rs` | the wall-clock seam ([`Clock`]; a [`ManualClock`] in tests) |
//!
//! ## Seams
//! The engine is built on the volume service (whose [`voltool_runtime::Mounter`] may be the
//! recording fake), a [`Clock`], and targets opened from their spec (a directory in a tempdir
//! in tests). The unit tests (`*_tests.rs`) drive all of it without root.

use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};
use voltool_backup::{Manifest, ObjectNames, open_target};
use voltool_plugin::VolumeService;
use voltool_plugin::store::{BackupRow, BackupStatus};

use crate::error::{Error, Result};
use crate::restores::Restores;

mod cat;
mod catalog;
mod clock;
mod consistency;
mod engine;
mod link_index;
mod manifest_cache;
mod on_target;
mod progress;
mod prune;
mod recover;
mod run;
mod schedule;
mod settings;
mod sync;
mod verify;
mod views;

#[cfg(test)]
mod test_support;

pub(crate) use cat::open_frames;
pub use catalog::{Catalog, Located};
pub use clock::{Clock, ManualClock, SystemClock};
pub use consistency::{ConsistencyError, DockerLink, Mode, ModeError};
pub use engine::EngineError;
pub(crate) use engine::read_manifest_from;
pub use progress::Progress;
pub use run::RunRequest;
pub use settings::{BackupSettings, ConfigSchedule, ResolveError, ScheduleProblem, SettingsError};
pub use views::{BackupView, ProgressView, PruneItem, ScheduleView, VerifyOutcome};

use engine::Engine;

/// The largest manifest the engine reads back (a manifest lists every file: ~200 bytes each).
pub(crate) const MANIFEST_LIMIT: u64 = 1 << 30;
/// Mount IDs the engine holds while it reads a volume start with this.
pub const MOUNT_ID_PREFIX: &str = "voltool-backup-";
/// How often the scheduler looks at its schedules at least (it also wakes when a volume
/// changes).
const TICK: Duration = Duration::from_secs(10);
/// How often pending cleanups of failed backups are retried.
const CLEANUP_RETRY: Duration = Duration::from_secs(15);

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

/// The time as the catalog stores it, by the system clock (the catalog's verification
/// records; the engine itself asks its [`Clock`]).
fn now_rfc3339() -> String {
    SystemClock.now_rfc3339()
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

/// A backup's three objects (archive, manifest, checksum), by its catalog row: the
/// `.age` names when it is encrypted. Every place that names objects (write, read, verify,
/// restore, prune, cleanup, recovery) goes through this.
fn names(row: &BackupRow) -> ObjectNames {
    ObjectNames::new(&row.id, row.encrypted)
}

/// An unencrypted backup's three object names, in commit order (the tests' shorthand).
#[cfg(test)]
fn plain_names(id: &str) -> [String; 3] {
    let n = ObjectNames::new(id, false);
    [n.archive, n.manifest, n.checksum]
}

/// The longest [`Backups::show_waiting`] holds a request.
pub const MAX_SHOW_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn backup_err(id: &str, reason: impl std::fmt::Display) -> Error {
    Error::Backup { id: id.to_owned(), reason: reason.to_string() }
}

impl Backups {
    /// Creates the engine and recovers from runs a previous daemon did not finish. Call
    /// [`Self::spawn_scheduler`] afterwards to start scheduled backups.
    ///
    /// # Errors
    /// A bad config ([`Error::BadRequest`]), store errors.
    pub async fn open(
        svc: VolumeService,
        settings: BackupSettings,
        restores: Restores,
        docker: DockerLink,
    ) -> Result<Self> {
        Self::open_with_clock(svc, settings, restores, Arc::new(SystemClock), docker).await
    }

    /// [`Self::open`] with the engine's notion of "now" taken from `clock`.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub async fn open_with_clock(
        svc: VolumeService,
        settings: BackupSettings,
        restores: Restores,
        clock: Arc<dyn Clock>,
        docker: DockerLink,
    ) -> Result<Self> {
        settings.validate().map_err(|e| Error::BadRequest(e.to_string()))?;
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
            clock,
            running: Mutex::default(),
            progress: Mutex::default(),
            wake: Notify::new(),
            ended: Notify::new(),
            catalog,
            restores,
            cleanup_running: AtomicBool::new(false),
            cleanup_last: Mutex::new(None),
            docker,
            links: link_index::LinkIndex::default(),
        });
        let b = Self { e };
        b.release_leftover_holds();
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
        let (e, span) = (self.e.clone(), tracing::Span::current());
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&e)))
            .await
            .map_err(|err| Error::Internal(err.to_string()))?
    }

    /// The catalog row of `id`.
    async fn row(&self, id: &str) -> Result<BackupRow> {
        let i = id.to_owned();
        self.blocking(move |e| Ok(e.svc.store().get_backup(&i)?))
            .await?
            .ok_or_else(|| Error::BackupNotFound { id: id.to_owned() })
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
        Ok(self.view(self.row(id).await?))
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
            e.read_manifest(&*target, &ObjectNames::new(&i, row.encrypted)).map_err(|m| backup_err(&i, m))
        })
        .await
    }

    /// [`Self::show`], once the run (or verification) in flight ends or `wait` (at most
    /// [`MAX_SHOW_WAIT`]) passed, whichever is first: a client following a run learns of its
    /// end at once instead of at its next poll.
    ///
    /// # Errors
    /// As [`Self::show`].
    pub async fn show_waiting(&self, id: &str, wait: std::time::Duration) -> Result<BackupView> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_SHOW_WAIT);
        loop {
            // Registered before looking, so an end between the look and the wait is not missed.
            let ended = self.e.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let v = self.show(id).await?;
            let finished = v.progress.is_none() && v.row.status != BackupStatus::Running;
            if finished || tokio::time::Instant::now() >= deadline {
                return Ok(v);
            }
            let _ = tokio::time::timeout_at(deadline, ended).await;
        }
    }

    fn view(&self, row: BackupRow) -> BackupView {
        // Progress stays while a finished run verifies and prunes.
        let progress = self.e.progress.lock().unwrap_or_else(|p| p.into_inner()).get(&row.id).map(|p| p.view());
        BackupView { row, progress }
    }
}
