//! [`Notifiers`]: the configured notifiers, sending events in the background with retries,
//! and their counters.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::config::{Channel, NotifyConfig, SecretSource, Spec, check};
use crate::error::{Failure, NotifyError};
use crate::event::{Event, EventKind};

/// Tuning that is not part of a `[[notify]]` block.
#[derive(Clone, Debug)]
pub struct Options {
    /// The host test events name (real events carry their own).
    pub host: String,
    /// Wait before the second attempt; doubled before each further one (capped at 60 s).
    pub backoff: Duration,
    /// Deliveries of one notifier waiting or running at once; past it, events are dropped
    /// (counted in [`NotifierStats::dropped`]).
    pub queue: usize,
    /// Deliveries of one notifier running at once.
    pub concurrency: usize,
}

impl Default for Options {
    /// Host from `/proc/sys/kernel/hostname` (`localhost` if unreadable), 1 s backoff, a queue
    /// of 64 and 4 at once per notifier.
    fn default() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        Options { host, backoff: Duration::from_secs(1), queue: 64, concurrency: 4 }
    }
}

/// One notifier's totals since the daemon started (Prometheus counters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierStats {
    pub name: String,
    /// Events the receiver accepted.
    pub delivered: u64,
    /// Events given up on (every attempt failed, or a permanent failure).
    pub failed: u64,
    /// Events not even tried: the notifier's queue was full, or no tokio runtime was running.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

struct Notifier {
    spec: Spec,
    counters: Counters,
    queued: AtomicUsize,
    running: Semaphore,
}

/// What every channel sends: the event, its text, and its JSON with `text` added.
pub(crate) struct Payload {
    pub(crate) event: Event,
    pub(crate) text: String,
    pub(crate) body: Vec<u8>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(flatten)]
    event: &'a Event,
    text: &'a str,
}

/// The configured notifiers. Cheap to clone (shared state); `Debug` shows names and URLs as
/// [`crate::shown_url`] does, never a secret.
#[derive(Clone)]
pub struct Notifiers {
    all: Arc<[Arc<Notifier>]>,
    options: Options,
}

impl fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.all.iter().map(|n| (&n.spec.name, &n.spec.shown_url))).finish()
    }
}

impl Notifiers {
    /// Checks every block and builds the notifiers, with [`Options::default`]. Secrets are
    /// read from `secrets` now, once.
    ///
    /// Errors: [`NotifyError::Config`] naming the first bad notifier and field (bad URL or
    /// scheme, password in a URL, missing secret, unknown placeholder, bad timeout, two
    /// notifiers of one name, ...).
    pub fn new(configs: &[NotifyConfig], secrets: &dyn SecretSource) -> Result<Notifiers, NotifyError> {
        Self::with_options(configs, secrets, Options::default())
    }

    /// [`Notifiers::new`] with explicit [`Options`].
    pub fn with_options(
        configs: &[NotifyConfig],
        secrets: &dyn SecretSource,
        options: Options,
    ) -> Result<Notifiers, NotifyError> {
        let mut http = None;
        let mut all: Vec<Arc<Notifier>> = Vec::with_capacity(configs.len());
        for (i, cfg) in configs.iter().enumerate() {
            let spec = check(i, cfg, secrets, &mut http)?;
            if all.iter().any(|n| n.spec.name == spec.name) {
                return Err(NotifyError::config(&spec.name, "name", "two notifiers have this name"));
            }
            all.push(Arc::new(Notifier {
                spec,
                counters: Counters::default(),
                queued: AtomicUsize::new(0),
                running: Semaphore::new(options.concurrency.max(1)),
            }));
        }
        Ok(Notifiers { all: all.into(), options })
    }

    /// The notifiers' names, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.all.iter().map(|n| n.spec.name.clone()).collect()
    }

    /// Sends `event` to every notifier whose `on` lists its kind, in the background, and
    /// returns at once: deliveries run as tasks on the current tokio runtime and never fail
    /// or delay the caller. Each is tried up to `retries + 1` times, each attempt at most
    /// `timeout` long, with exponential backoff between; the outcome is logged
    /// (`tracing::warn!` on failure) and counted ([`Notifiers::stats`]). Outside a tokio
    /// runtime, or when a notifier's queue is full, the event is dropped for it and counted.
    pub fn notify(&self, event: &Event) {
        let matching = || self.all.iter().filter(|n| n.spec.on.contains(&event.kind));
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            for n in matching() {
                n.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(notifier = %n.spec.name, event = %event.kind, "notification dropped: no tokio runtime");
            }
            return;
        };
        let mut payloads: Option<Arc<Event>> = None;
        for n in matching() {
            if n.queued.fetch_add(1, Ordering::AcqRel) >= self.options.queue.max(1) {
                n.queued.fetch_sub(1, Ordering::AcqRel);
                n.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(notifier = %n.spec.name, event = %event.kind, queue = self.options.queue,
                    "notification dropped: too many waiting for this notifier");
                continue;
            }
            let event = payloads.get_or_insert_with(|| Arc::new(event.clone())).clone();
            let (n, backoff) = (n.clone(), self.options.backoff);
            rt.spawn(async move {
                let _queued = Queued(&n.queued);
                let Ok(_running) = n.running.acquire().await else { return };
                n.deliver(&event, backoff).await;
            });
        }
    }

    /// Sends a test event ([`EventKind::Test`]) to the notifier `name`, or to every notifier,
    /// whatever their `on`, and waits: one attempt each (no retries), at most its timeout,
    /// all at once. Not counted in [`Notifiers::stats`]. For `voltool notify test [NAME]`.
    ///
    /// Errors: [`NotifyError::UnknownNotifier`], [`NotifyError::NoNotifiers`]; each
    /// notifier's own outcome is in the list, in configuration order.
    pub async fn send_test(&self, name: Option<&str>) -> Result<Vec<(String, Result<(), NotifyError>)>, NotifyError> {
        let chosen: Vec<Arc<Notifier>> = match name {
            Some(name) => {
                let n = self.all.iter().find(|n| n.spec.name == name).ok_or_else(|| NotifyError::UnknownNotifier {
                    name: name.to_string(),
                    known: self.names().join(", "),
                })?;
                vec![n.clone()]
            }
            None if self.all.is_empty() => return Err(NotifyError::NoNotifiers),
            None => self.all.to_vec(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (i, n) in chosen.iter().enumerate() {
            let n = n.clone();
            let event = Event::new(EventKind::Test, self.options.host.clone())
                .reason(format!("`voltool notify test` for notifier {}", n.spec.name));
            tasks.spawn(async move { (i, n.attempt(&n.payload(event)).await.map_err(Failure::into_error)) });
        }
        let mut out: Vec<Option<Result<(), NotifyError>>> = chosen.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, r)) = joined {
                out[i] = Some(r);
            }
        }
        Ok(chosen
            .iter()
            .zip(out)
            .map(|(n, r)| {
                let r = r.unwrap_or_else(|| {
                    Err(NotifyError::Send {
                        notifier: n.spec.name.clone(),
                        url: n.spec.shown_url.clone(),
                        reason: "the sending task panicked".into(),
                    })
                });
                (n.spec.name.clone(), r)
            })
            .collect())
    }

    /// Every notifier's counters, in configuration order.
    pub fn stats(&self) -> Vec<NotifierStats> {
        self.all
            .iter()
            .map(|n| NotifierStats {
                name: n.spec.name.clone(),
                delivered: n.counters.delivered.load(Ordering::Relaxed),
                failed: n.counters.failed.load(Ordering::Relaxed),
                dropped: n.counters.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Gives a queue slot back when the delivery task ends, however it ends.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Notifier {
    fn payload(&self, event: Event) -> Payload {
        let text = match &self.spec.template {
            Some(t) => t.render(&event),
            None => event.summary(),
        };
        // Serialising strings and a map cannot fail; an empty body would be refused downstream.
        let body = serde_json::to_vec(&Body { event: &event, text: &text }).unwrap_or_default();
        Payload { event, text, body }
    }

    /// One attempt, cut off at the timeout (which also kills an exec hook).
    async fn attempt(&self, payload: &Payload) -> Result<(), Failure> {
        let s = &self.spec;
        let send = async {
            match &s.channel {
                Channel::Webhook(w) => w.send(&s.name, &s.shown_url, payload, s.timeout).await,
                Channel::Mail(m) => m.send(&s.name, &s.shown_url, payload).await,
                Channel::Exec(x) => x.send(&s.name, &s.shown_url, payload).await,
            }
        };
        match tokio::time::timeout(s.timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Transient(NotifyError::Timeout {
                notifier: s.name.clone(),
                url: s.shown_url.clone(),
                after: s.timeout,
            })),
        }
    }

    /// Every attempt for one event, then the count and the log line.
    async fn deliver(&self, event: &Event, backoff: Duration) {
        let payload = self.payload(event.clone());
        let s = &self.spec;
        let mut wait = backoff;
        for attempt in 1..=s.attempts {
            let error = match self.attempt(&payload).await {
                Ok(()) => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(notifier = %s.name, event = %event.kind, attempt, "notification delivered");
                    return;
                }
                Err(Failure::Permanent(e)) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(notifier = %s.name, event = %event.kind, attempt, "notification failed, not retried: {e}");
                    return;
                }
                Err(Failure::Transient(e)) => e,
            };
            if attempt == s.attempts {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(notifier = %s.name, event = %event.kind, attempts = s.attempts,
                    "notification not delivered, giving up: {error}");
                return;
            }
            tracing::debug!(notifier = %s.name, event = %event.kind, attempt, "notification attempt failed: {error}");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
}
