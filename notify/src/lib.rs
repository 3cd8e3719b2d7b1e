//! # voltool-notify
//!
//! ## Overview
//! Telling operators when something fails (SPEC §9, issue 16). The daemon's TOML file has
//! `[[notify]]` blocks ([`NotifyConfig`]); [`Notifiers::new`] checks them all up front and
//! [`Notifiers::notify`] sends an [`Event`] to every notifier whose `on` lists its
//! [`EventKind`]:
//!
//! - `http://`, `https://` — a JSON POST, optionally HMAC-signed ([`mod@webhook`]);
//! - `smtp://`, `smtps://` — a plain-text mail, STARTTLS required by default ([`mod@mail`]);
//! - `exec:/path/prog args` — a program with the event on stdin and in its env ([`mod@exec`]).
//!
//! ```toml
//! [[notify]]
//! name = "oncall"
//! url = "https://hooks.example.com/voltool"
//! on = ["backup-failed", "verify-failed", "volume-near-full"]
//! secret = "oncall-hmac"
//!
//! [[notify]]
//! url = "smtp://alerts@mail.example.com?from=voltool@example.com&to=ops@example.com"
//! secret = "smtp-password"
//! template = "{kind} on {host}: volume {volume}: {reason}"
//! ```
//!
//! [`NearFull`] decides when `volume-near-full` is due (80% and 95%, once per crossing);
//! [`Notifiers::send_test`] is `voltool notify test [NAME]`; [`Notifiers::stats`] are the
//! delivered / failed / dropped counters the daemon exports as metrics.
//!
//! ## Design
//! - A notifier never blocks or fails what it reports on: `notify` only spawns tasks on the
//!   current tokio runtime and returns (microseconds). Each delivery: up to `retries + 1`
//!   (default 3) attempts, each cut off after `timeout` (default 10 s, also killing an exec
//!   hook), 1 s then 2 s (doubling, [`Options::backoff`]) between them — at most about 33 s by
//!   default, 10 × 5 min + backoff at the configured maxima.
//! - Bounded: per notifier at most [`Options::queue`] (64) deliveries waiting or running and
//!   [`Options::concurrency`] (4) running; beyond, events are dropped, logged and counted. A
//!   flood or a hanging receiver costs a fixed amount of memory.
//! - Transient failures (connection, timeout, HTTP 5xx/408/429, SMTP 4xx, a hook's non-zero
//!   exit) are retried; permanent ones (other HTTP 4xx, 3xx, SMTP 5xx) are not — the same
//!   request would fail the same way (rustic's "retry only what is marked temporary").
//! - Secrets (HMAC key, SMTP password) come from a [`SecretSource`] the daemon passes in, by
//!   name and for the server they go to; values are read once in `new`, wiped on drop, and
//!   never in messages, logs or `Debug`. Messages show URLs as [`shown_url`] does (no path,
//!   query or user: webhook tokens live there).
//! - Everything is checked in `new`: URL and scheme, host, password in a URL (refused),
//!   `from`/`to`, `tls=`, the secret's existence, template placeholders, timeout and retries,
//!   the exec program (absolute, executable), unique names. Unknown event names and fields are
//!   refused by serde (`deny_unknown_fields`), listing the valid ones.
//! - One `reqwest` client (rustls + aws-lc-rs, the system's roots, HTTP/1.1, no redirects)
//!   serves every webhook; each mail notifier has its `lettre` transport (a connection per
//!   mail: notifications are rare).
//!
//! ## Limitations
//! - Deliveries in flight are lost when the daemon stops; there is no persistent outbox.
//! - [`NearFull`] state is in memory: after a restart a volume above a threshold is reported
//!   once more.
//! - An exec hook's background children are not killed at its timeout.
//! - `send_test` is not counted in the stats; an event that matches no notifier is not counted
//!   anywhere.
//! - Secrets are read when the notifiers are built: after `voltool secret add` changes one,
//!   the daemon must rebuild them (reload its configuration).

pub mod config;
pub mod error;
pub mod event;
pub mod exec;
pub mod mail;
pub mod nearfull;
mod notifiers;
pub mod template;
pub mod webhook;

pub use config::{NotifyConfig, SecretSource, shown_url};
pub use error::NotifyError;
pub use event::{Event, EventKind};
pub use nearfull::NearFull;
pub use notifiers::{NotifierStats, Notifiers, Options};
pub use webhook::{USER_AGENT, signature};
