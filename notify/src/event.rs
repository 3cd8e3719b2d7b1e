//! What happened: [`EventKind`] (the names `on = [...]` lists) and [`Event`] (what a notifier
//! is told; its JSON is the webhook body and the exec hook's stdin).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The kinds of event a `[[notify]]` block can subscribe to (`on = ["backup-failed", ...]`).
///
/// Names are kebab-case in TOML, JSON, the `X-Voltool-Event` header and `VOLTOOL_EVENT`.
/// An unknown name in `on` is refused by serde with the list of valid ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    BackupFailed,
    VerifyFailed,
    RestoreTestFailed,
    MountFailed,
    VolumeNearFull,
    BackupSucceeded,
    ServerDown,
    /// Sent only by [`crate::Notifiers::send_test`], to every notifier whatever its `on`; not
    /// a name `on` accepts (so serde's list of valid names leaves it out).
    #[serde(skip_deserializing)]
    Test,
}

impl EventKind {
    /// Every kind `on` accepts, in the order of SPEC §9.
    pub const SUBSCRIBABLE: [EventKind; 7] = [
        EventKind::BackupFailed,
        EventKind::BackupSucceeded,
        EventKind::VerifyFailed,
        EventKind::RestoreTestFailed,
        EventKind::MountFailed,
        EventKind::VolumeNearFull,
        EventKind::ServerDown,
    ];

    /// What a block without `on` gets: everything an operator must act on — every failure and
    /// `volume-near-full` — but not `backup-succeeded`, which would be one message per backup.
    pub fn defaults() -> Vec<EventKind> {
        Self::SUBSCRIBABLE.into_iter().filter(|k| *k != EventKind::BackupSucceeded).collect()
    }

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BackupFailed => "backup-failed",
            EventKind::VerifyFailed => "verify-failed",
            EventKind::RestoreTestFailed => "restore-test-failed",
            EventKind::MountFailed => "mount-failed",
            EventKind::VolumeNearFull => "volume-near-full",
            EventKind::BackupSucceeded => "backup-succeeded",
            EventKind::ServerDown => "server-down",
            EventKind::Test => "test",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, as the daemon reports it. Fields that do not apply are `None` (JSON `null`);
/// `detail` carries anything else as strings (near-full: `used_bytes`, `limit_bytes`,
/// `percent`, `threshold`).
///
/// JSON: `{"kind":"backup-failed","volume":"db","backup_id":null,"target":"s3-main",
/// "reason":"...","at":"2025-01-02T03:04:05Z","host":"node1","detail":{}}` — the webhook
/// body adds `"text"` (the rendered template or [`Event::summary`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub volume: Option<String>,
    pub backup_id: Option<String>,
    pub target: Option<String>,
    pub reason: Option<String>,
    /// When it happened; RFC 3339 (UTC) in JSON.
    #[serde(serialize_with = "rfc3339")]
    pub at: OffsetDateTime,
    pub host: String,
    pub detail: BTreeMap<String, String>,
}

fn rfc3339<S: serde::Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*at))
}

/// `at` as RFC 3339 in UTC (`2025-01-02T03:04:05Z`), as the JSON, the env and `{at}` show it.
pub(crate) fn format_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

impl Event {
    /// An event of `kind` on `host`, happening now, with nothing else filled in.
    pub fn new(kind: EventKind, host: impl Into<String>) -> Self {
        Event {
            kind,
            volume: None,
            backup_id: None,
            target: None,
            reason: None,
            at: OffsetDateTime::now_utc(),
            host: host.into(),
            detail: BTreeMap::new(),
        }
    }

    pub fn volume(mut self, volume: impl Into<String>) -> Self {
        self.volume = Some(volume.into());
        self
    }

    pub fn backup_id(mut self, id: impl Into<String>) -> Self {
        self.backup_id = Some(id.into());
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.detail.insert(key.into(), value.into());
        self
    }

    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = at;
        self
    }

    /// The default one-line text: `voltool on HOST: backup of volume db failed: REASON`.
    pub fn summary(&self) -> String {
        let vol = self.volume.as_deref().map(|v| format!("volume {v}")).unwrap_or_else(|| "a volume".into());
        let id = self.backup_id.as_deref().map(|i| format!(" {i}")).unwrap_or_default();
        let to = self.target.as_deref().map(|t| format!(" to {t}")).unwrap_or_default();
        let what = match self.kind {
            EventKind::BackupFailed => format!("backup of {vol}{to} failed"),
            EventKind::BackupSucceeded => format!("backup{id} of {vol}{to} succeeded"),
            EventKind::VerifyFailed => format!("verification of backup{id} of {vol} failed"),
            EventKind::RestoreTestFailed => format!("restore test of backup{id} of {vol} failed"),
            EventKind::MountFailed => format!("mount of {vol} failed"),
            EventKind::VolumeNearFull => format!("{vol} is nearly full"),
            EventKind::ServerDown => {
                format!("server {} is down", self.target.as_deref().unwrap_or("(unknown)"))
            }
            EventKind::Test => "test message: this notifier works".to_string(),
        };
        let reason = self.reason.as_deref().map(|r| format!(": {}", one_line(r))).unwrap_or_default();
        crate::template::bounded(format!("voltool on {}: {what}{reason}", self.host))
    }

    /// The mail subject: `[voltool] backup-failed: volume db on HOST`.
    pub fn subject(&self) -> String {
        let about = match (&self.volume, &self.target) {
            (Some(v), _) => format!("volume {v}"),
            (None, Some(t)) => format!("target {t}"),
            (None, None) => "daemon".to_string(),
        };
        one_line(&format!("[voltool] {}: {about} on {}", self.kind, self.host))
    }
}

/// Line breaks and other control characters become spaces: a subject or a log line stays one line.
pub(crate) fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_kebab_case_and_unknown_names_list_the_valid_ones() {
        assert_eq!(serde_json::to_string(&EventKind::RestoreTestFailed).unwrap(), "\"restore-test-failed\"");
        assert_eq!(EventKind::VolumeNearFull.to_string(), "volume-near-full");
        let err = serde_json::from_str::<EventKind>("\"backup-exploded\"").unwrap_err().to_string();
        assert!(err.contains("backup-failed") && err.contains("server-down"), "{err}");
        assert!(serde_json::from_str::<EventKind>("\"test\"").is_err());
        for k in EventKind::SUBSCRIBABLE {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), k);
            assert_eq!(json, format!("\"{k}\""));
        }
    }

    #[test]
    fn defaults_are_the_failures_and_near_full() {
        let d = EventKind::defaults();
        assert_eq!(d.len(), 6);
        assert!(!d.contains(&EventKind::BackupSucceeded));
        assert!(d.contains(&EventKind::VolumeNearFull));
    }

    #[test]
    fn json_has_every_field_and_rfc3339_time() {
        let at = OffsetDateTime::from_unix_timestamp(1_735_787_045).unwrap();
        let e = Event::new(EventKind::BackupFailed, "node1").volume("db").reason("disk full").at(at).detail("k", "v");
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "backup-failed");
        assert_eq!(v["at"], "2025-01-02T03:04:05Z");
        assert_eq!(v["volume"], "db");
        assert!(v["backup_id"].is_null());
        assert_eq!(v["detail"]["k"], "v");
    }

    #[test]
    fn summary_and_subject() {
        let e = Event::new(EventKind::BackupFailed, "node1").volume("db").reason("target s3 down\nretry");
        assert_eq!(e.summary(), "voltool on node1: backup of volume db failed: target s3 down retry");
        assert_eq!(e.subject(), "[voltool] backup-failed: volume db on node1");
        let s = Event::new(EventKind::ServerDown, "n").target("nfs1");
        assert_eq!(s.summary(), "voltool on n: server nfs1 is down");
        assert_eq!(s.subject(), "[voltool] server-down: target nfs1 on n");
        let v = Event::new(EventKind::VerifyFailed, "n").volume("db").backup_id("db-1");
        assert_eq!(v.summary(), "voltool on n: verification of backup db-1 of volume db failed");
    }
}
