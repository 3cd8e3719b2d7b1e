//! The engine's clock: the one seam through which it learns the wall-clock time.
//!
//! Everything the engine dates or decides by the calendar goes through [`Clock::now`]: a
//! backup's ID and `started_at`, `finished_at`, verification times, retention's "now" (the
//! `keep-daily=7` window) and which schedule slots are due. The daemon uses [`SystemClock`];
//! tests use [`ManualClock`] to stand at any instant (a daemon that was down for five hours is
//! one `set` away), which the scheduler's [`super::Backups::tick`] also takes as an argument.
//!
//! Durations (how long a run took, how often cleanups are retried) use the monotonic
//! `Instant`, not this clock: they must not jump when the wall clock does.

use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// The current time as the catalog stores it (RFC 3339, whole seconds, `Z`).
    fn now_rfc3339(&self) -> String {
        self.now().to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is set or advanced (tests).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self { now: Mutex::new(now) }
    }

    /// Moves the clock to `now` (also backwards).
    pub fn set(&self, now: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}
