//! What the daemon tells the outside world about itself, beyond answering requests: the
//! Prometheus metrics ([`metrics`]), the events an operator is told of (a backup, a
//! verification, a restore test or a mount that failed; a volume nearly full; a server down),
//! kept for the status page, and the watcher that measures volumes in the background
//! ([`watch`]).
//!
//! ## Design
//! One [`Observer`] is made by [`crate::Daemon::open`] and handed to what produces events
//! (the backup engine, the restores, the plugin driver). Producers call [`Observer::emit`]
//! and the `Metrics` methods; both are cheap and never block on the network: notifiers (when
//! configured) get the event on their own tasks.

mod exposition;
pub mod metrics;
pub mod watch;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub use metrics::{Metrics, MetricsError, RunSample, VolumeSample};

pub use voltool_notify::{Event, EventKind, Notifiers};

/// Whether an event reports something that went wrong (listed first on the page).
pub fn is_failure(kind: EventKind) -> bool {
    !matches!(kind, EventKind::BackupSucceeded | EventKind::Test)
}

/// Events kept for the status page (the newest; failures are listed first).
const KEPT_EVENTS: usize = 200;
/// Events the status page shows.
pub const SHOWN_EVENTS: usize = 50;

/// The watcher's last pass: when it ended, and each volume as measured.
pub type Measured = (chrono::DateTime<chrono::Utc>, Arc<Vec<VolumeSample>>);

/// Receives every event (a notifier); must return at once.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// The metrics, the recent events and where events go; cheap to clone.
#[derive(Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: Metrics,
    /// This host's name, in every event.
    host: String,
    /// The watcher's last pass: when, and what it measured.
    measured: Mutex<Option<Measured>>,
    /// Counts of the notifiers' deliveries already added to the metrics.
    notified: Mutex<std::collections::HashMap<(String, &'static str), u64>>,
    events: Mutex<VecDeque<Event>>,
    sinks: Mutex<Vec<EventSink>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

impl Observer {
    /// A fresh observer: empty metrics, no events.
    ///
    /// # Errors
    /// [`MetricsError`] (a bug).
    pub fn new() -> Result<Self, MetricsError> {
        Ok(Self {
            inner: Arc::new(Inner {
                metrics: Metrics::new()?,
                host: voltool_notify::Options::default().host,
                notified: Mutex::default(),
                measured: Mutex::default(),
                events: Mutex::new(VecDeque::with_capacity(KEPT_EVENTS)),
                sinks: Mutex::default(),
            }),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Keeps the watcher's last pass for the status page.
    pub fn set_measured(&self, volumes: Vec<VolumeSample>) {
        *self.inner.measured.lock().unwrap_or_else(|p| p.into_inner()) = Some((chrono::Utc::now(), Arc::new(volumes)));
    }

    /// The watcher's last pass, if there was one.
    pub fn measured(&self) -> Option<Measured> {
        self.inner.measured.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This host's name.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// An event of `kind` on this host, now.
    pub fn event(&self, kind: EventKind) -> Event {
        Event::new(kind, self.inner.host.clone())
    }

    /// Sends every later event to `notifiers` (on their own tasks: never blocks).
    pub fn notify_to(&self, notifiers: Arc<Notifiers>) {
        self.add_sink(Arc::new(move |e: &Event| notifiers.notify(e)));
    }

    /// Adds what the notifiers delivered, failed and dropped since the last call to
    /// `voltool_notifications_total`.
    pub fn count_notifications(&self, notifiers: &Notifiers) {
        let mut seen = self.inner.notified.lock().unwrap_or_else(|p| p.into_inner());
        for s in notifiers.stats() {
            for (outcome, now) in [("delivered", s.delivered), ("failed", s.failed), ("dropped", s.dropped)] {
                let before = seen.entry((s.name.clone(), outcome)).or_insert(0);
                if now > *before {
                    self.inner.metrics.notifications(&s.name, outcome, now - *before);
                    *before = now;
                }
            }
        }
    }

    /// Adds a receiver of every later event.
    pub fn add_sink(&self, sink: EventSink) {
        self.inner.sinks.lock().unwrap_or_else(|p| p.into_inner()).push(sink);
    }

    /// Records `event`, logs it and passes it to the sinks.
    pub fn emit(&self, event: Event) {
        if is_failure(event.kind) {
            tracing::warn!(
                event = %event.kind,
                volume = event.volume.as_deref().unwrap_or(""),
                backup = event.backup_id.as_deref().unwrap_or(""),
                reason = event.reason.as_deref().unwrap_or(""),
                "event"
            );
        }
        let sinks = self.inner.sinks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for s in &sinks {
            s(&event);
        }
        let mut events = self.inner.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == KEPT_EVENTS {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// Keeps past `events` (what the catalog recorded before a restart) as if they had been
    /// emitted in time order, older than any emitted since: not logged, not notified again.
    pub fn remember(&self, mut events: Vec<Event>) {
        events.sort_by_key(|e| e.at);
        let mut kept = self.inner.events.lock().unwrap_or_else(|p| p.into_inner());
        let room = KEPT_EVENTS.saturating_sub(kept.len());
        for e in events.into_iter().rev().take(room) {
            kept.push_front(e);
        }
    }

    /// The last [`SHOWN_EVENTS`] events, failures first, newest first within each.
    pub fn recent(&self) -> Vec<Event> {
        let events = self.inner.events.lock().unwrap_or_else(|p| p.into_inner());
        let (mut bad, good): (Vec<Event>, Vec<Event>) = events.iter().rev().cloned().partition(|e| is_failure(e.kind));
        bad.extend(good);
        bad.truncate(SHOWN_EVENTS);
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_lists_failures_first_newest_first_and_keeps_a_bounded_number() {
        let o = Observer::new().expect("observer");
        let seen = Arc::new(Mutex::new(0));
        let s = seen.clone();
        o.add_sink(Arc::new(move |_| *s.lock().expect("lock") += 1));
        for i in 0..300 {
            let kind = if i % 3 == 0 { EventKind::BackupFailed } else { EventKind::BackupSucceeded };
            o.emit(o.event(kind).volume(format!("v{i}")));
        }
        assert_eq!(*seen.lock().expect("lock"), 300);
        let r = o.recent();
        assert_eq!(r.len(), SHOWN_EVENTS);
        assert_eq!(r[0].volume.as_deref(), Some("v297"));
        assert!(r.iter().take(SHOWN_EVENTS).all(|e| e.kind == EventKind::BackupFailed), "{r:?}");
    }

    #[test]
    fn remembered_events_come_before_new_ones_and_fill_only_the_room_left() {
        let o = Observer::new().expect("observer");
        o.emit(o.event(EventKind::BackupFailed).volume("new"));
        let at = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).expect("time");
        let past: Vec<Event> = (0..KEPT_EVENTS as i64)
            .map(|i| Event { at: at(1_000 + i), ..o.event(EventKind::BackupFailed).volume(format!("old{i}")) })
            .collect();
        o.remember(past);
        let r = o.recent();
        assert_eq!(r[0].volume.as_deref(), Some("new"));
        let last = KEPT_EVENTS as i64 - 1;
        assert_eq!(r[1].volume.as_deref(), Some(format!("old{last}").as_str()), "the newest past one next");
        assert_eq!(o.inner.events.lock().expect("lock").len(), KEPT_EVENTS);
    }
}
