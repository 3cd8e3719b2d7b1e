//! The scheduler: which schedules there are (a volume's `backup-schedule`, and each volume of
//! a `[schedules.NAME]` table), what is due at a given instant ([`Backups::tick`], callable
//! with any time: the loop passes the engine's clock, tests a fake one), the loop that ticks
//! at least every [`TICK`] and whenever a volume changes, and the background retry of
//! pending cleanups (at most one every [`CLEANUP_RETRY`]).
//!
//! A schedule's state (when it was first seen, the last slot handled) is in SQLite, so a slot
//! missed while the daemon was down is run once when it is back, however many were missed
//! ([`voltool_backup::schedule::due`]); a slot whose volume still has a run in flight is
//! handled by skipping it (it is not retried).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use voltool_backup::schedule::{Due, Schedule};
use voltool_plugin::store::ScheduleState;

use super::{Backups, CLEANUP_RETRY, RunRequest, ScheduleView, TICK, parse_time};
use crate::error::{Error, Result};

/// One schedule of one volume.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub volume: String,
    pub cron: String,
    pub source: String,
    pub target: Option<String>,
    pub keep: Option<String>,
    pub verify: bool,
    pub restore_test: bool,
    /// `None`: the volume's `backup-consistency`.
    pub consistency: Option<String>,
}

impl Entry {
    fn request(&self) -> RunRequest {
        RunRequest {
            volume: self.volume.clone(),
            target: self.target.clone(),
            verify: self.verify,
            keep: self.keep.clone(),
            trigger: "schedule",
            restore_test: self.restore_test,
            consistency: self.consistency.clone(),
            incremental: None,
            rehash: false,
        }
    }
}

fn earliest(next: Option<DateTime<Utc>>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(next.map_or(t, |n| n.min(t)))
}

impl Backups {
    /// Every schedule by its key in the schedule state (`volume:NAME`, `config:NAME:VOLUME`).
    pub(super) async fn schedule_entries(&self) -> Result<Vec<(String, Entry)>> {
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
                        consistency: None,
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
                        consistency: s.consistency.clone(),
                    },
                ));
            }
        }
        Ok(out)
    }

    async fn schedule_state(&self, key: &str) -> Result<Option<ScheduleState>> {
        let k = key.to_owned();
        self.blocking(move |e| Ok(e.svc.store().get_schedule(&k)?)).await
    }

    async fn put_schedule_state(&self, state: &ScheduleState) -> Result<()> {
        let s = state.clone();
        self.blocking(move |e| Ok(e.svc.store().put_schedule(&s)?)).await
    }

    /// Every schedule with its next run.
    ///
    /// # Errors
    /// Store errors.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>> {
        let now = self.e.clock.now();
        let mut out = Vec::new();
        for (key, entry) in self.schedule_entries().await? {
            let state = self.schedule_state(&key).await?;
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
            out.push(ScheduleView {
                target: entry.target.clone().unwrap_or_else(|| self.e.default_target.clone()),
                running: self.e.running_on(&entry.volume),
                volume: entry.volume,
                cron: entry.cron,
                source: entry.source,
                keep: entry.keep,
                verify: entry.verify,
                next_run: next_run.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                last_slot: last.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            });
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
            if let Some(t) = self.tick_one(&key, &entry, &sched, now).await? {
                next = earliest(next, t);
            }
        }
        Ok(next)
    }

    /// The part of [`Self::tick`] for one schedule: its state (made at its first sight, or
    /// when its expression changed), and a run when a slot is due. Returns its next slot.
    async fn tick_one(
        &self,
        key: &str,
        entry: &Entry,
        sched: &Schedule,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let mut state = match self.schedule_state(key).await?.filter(|s| s.expr == entry.cron) {
            Some(s) => s,
            None => {
                let s = ScheduleState {
                    key: key.to_owned(),
                    expr: entry.cron.clone(),
                    anchor: now.to_rfc3339_opts(SecondsFormat::Millis, true),
                    last_slot: None,
                };
                self.put_schedule_state(&s).await?;
                s
            }
        };
        let anchor = parse_time(&state.anchor).unwrap_or(now);
        let last = state.last_slot.as_deref().and_then(parse_time);
        match voltool_backup::schedule::due(sched, last, anchor, now) {
            Due::Now { slot, missed } => {
                // The slot is recorded before the run starts: a slot is handled once, whether
                // it runs, is skipped or fails to start.
                state.last_slot = Some(slot.to_rfc3339_opts(SecondsFormat::Millis, true));
                self.put_schedule_state(&state).await?;
                if missed > 0 {
                    tracing::info!(
                        schedule = key,
                        missed,
                        "slots were missed while the daemon was down; running once now"
                    );
                }
                match self.start(entry.request()).await {
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
                Ok(sched.next_after(slot))
            }
            Due::At(t) => Ok(Some(t)),
            Due::Never => Ok(None),
        }
    }

    /// Tells the scheduler to look at its schedules now (a volume was created or removed).
    pub fn wake(&self) {
        self.e.wake.notify_one();
    }

    /// Starts the scheduler loop on the current runtime.
    pub fn spawn_scheduler(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut changes = me.e.svc.changes();
            loop {
                let next = match me.tick(me.e.clock.now()).await {
                    Ok(next) => next,
                    Err(err) => {
                        tracing::warn!(error = %err, "backup scheduler tick failed");
                        None
                    }
                };
                let wait = next
                    .and_then(|t| (t - me.e.clock.now()).to_std().ok())
                    .map_or(TICK, |d| d.min(TICK))
                    .max(Duration::from_millis(200));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = me.e.wake.notified() => {}
                    Ok(()) = changes.changed() => {}
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
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
