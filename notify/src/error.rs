//! [`NotifyError`]: what configuring or sending a notification fails with.
//!
//! Every message names the notifier; delivery errors also show its URL as
//! [`crate::config::shown_url`] makes it — scheme, host and port only, since webhook services
//! (Slack, Discord, Teams) put their token in the path and others in the query. No message,
//! log line or `Debug` output of this crate holds a secret's value.

use std::time::Duration;

/// What a notification fails with.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A `[[notify]]` block cannot be used; names the notifier and the field.
    #[error("notifier {notifier}: {field}: {reason}")]
    Config { notifier: String, field: &'static str, reason: String },
    /// `voltool notify test NAME` named no configured notifier.
    #[error("no notifier named {name}: the configured ones are {known}")]
    UnknownNotifier { name: String, known: String },
    /// `voltool notify test` without any `[[notify]]` block.
    #[error("no notifiers configured: add a [[notify]] block to the daemon's configuration")]
    NoNotifiers,
    /// The webhook answered with a status other than 2xx (4xx are not retried).
    #[error("notifier {notifier} ({url}): the webhook answered HTTP {status}{hint}")]
    Status { notifier: String, url: String, status: u16, hint: &'static str },
    /// An attempt took longer than the notifier's `timeout`.
    #[error("notifier {notifier} ({url}): no answer within {after:?}")]
    Timeout { notifier: String, url: String, after: Duration },
    /// The message could not be sent: connection, TLS, SMTP or hook failure.
    #[error("notifier {notifier} ({url}): {reason}")]
    Send { notifier: String, url: String, reason: String },
}

impl NotifyError {
    pub(crate) fn config(notifier: &str, field: &'static str, reason: impl Into<String>) -> Self {
        NotifyError::Config { notifier: notifier.to_string(), field, reason: reason.into() }
    }
}

/// An attempt's failure, and whether trying again may help.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Connection refused, timeout, 5xx, 408/429, SMTP 4xx, a hook's non-zero exit.
    Transient(NotifyError),
    /// 4xx, 3xx, SMTP 5xx, a message that cannot be built: the same request fails again.
    Permanent(NotifyError),
}

impl Failure {
    pub(crate) fn into_error(self) -> NotifyError {
        match self {
            Failure::Transient(e) | Failure::Permanent(e) => e,
        }
    }
}

/// `e` and its sources, `: `-separated (what `{:#}` shows with anyhow).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}
