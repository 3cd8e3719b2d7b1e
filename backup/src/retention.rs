//! Retention: which backups a keep policy keeps and which it deletes.
//!
//! ## The policy
//! A policy is written `last=3,hourly=24,daily=7,weekly=4,monthly=6` (the volume option
//! `backup-keep=...` and `voltool backup prune --keep ...`). Any subset of the keys may be given,
//! in any order, each once, each with a positive integer. The rules mean what restic's
//! `forget --keep-last/--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly` mean:
//!
//! - `last=n` keeps the `n` newest backups.
//! - `hourly=n` keeps, for each of the `n` most recent hours that *have* backups, the newest
//!   backup of that hour. Hours without backups are not counted: with `hourly=3` and backups only
//!   at 09:10, 09:40, 12:05 and 17:30, the ones at 17:30, 12:05 and 09:40 are kept.
//! - `daily=n`, `weekly=n` and `monthly=n` do the same with calendar days, ISO 8601 weeks
//!   (Monday to Sunday; the last days of December can belong to week 1 of the next year) and
//!   calendar months.
//!
//! All buckets are in UTC. A backup is kept if any rule keeps it; each kept backup lists why
//! (`last`, `hourly 2026-11-30 14:00`, `daily 2026-11-30`, `weekly 2026-W48`,
//! `monthly 2026-11`). A rule applied to fewer buckets than it may keep simply keeps them all.
//!
//! ## Guarantees on top of the rules
//! - An empty policy deletes nothing (reason `no keep policy`).
//! - The newest *verified* backup is never deleted, even if no rule keeps it
//!   (reason `newest verified`).
//! - A backup dated after `now` (clock skew between hosts, or a clock that went backwards) is
//!   always kept (reason `newer than now`) and takes no part in the rules, so it does not use
//!   up a `last` slot or a bucket that a correctly dated backup would otherwise get.
//!
//! ## Order and ties
//! [`plan`] is pure: it reads no clock (`now` is passed in) and the order of its input does not
//! matter. Backups are ordered newest first by creation time; backups created at the same
//! instant are ordered by id, the greater id counting as the newer one (backup ids embed their
//! creation time, so this follows creation order whenever it can). Within a bucket the newest
//! backup in that order is the one kept.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// The keys of a keep policy, in the order [`KeepPolicy`]'s `Display` writes them.
pub const KEEP_KEYS: [&str; 5] = ["last", "hourly", "daily", "weekly", "monthly"];

/// A keep policy that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// An entry is empty (e.g. `daily=7,,weekly=4` or a trailing comma).
    #[error("backup-keep {input:?}: empty entry (expected key=value, keys: {keys})", keys = KEEP_KEYS.join(", "))]
    EmptyEntry { input: String },
    /// An entry has no `=`.
    #[error("backup-keep {input:?}: {entry:?} is not key=value (keys: {keys})", keys = KEEP_KEYS.join(", "))]
    NotKeyValue { input: String, entry: String },
    /// A key that is not one of [`KEEP_KEYS`].
    #[error("backup-keep {input:?}: unknown key {key:?} (valid keys: {keys})", keys = KEEP_KEYS.join(", "))]
    UnknownKey { input: String, key: String },
    /// A key given more than once.
    #[error("backup-keep {input:?}: {key} is given more than once")]
    Duplicate { input: String, key: String },
    /// A value that is not a positive integer (zero, negative, not a number, too large).
    #[error("backup-keep {input:?}: {key} must be a positive integer, not {value:?}")]
    NotPositive { input: String, key: String, value: String },
}

/// How many backups to keep, per rule; `None` means the rule is not used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KeepPolicy {
    /// Keep the `n` newest backups.
    pub last: Option<u32>,
    /// Keep the newest backup of each of the `n` most recent UTC hours that have backups.
    pub hourly: Option<u32>,
    /// Keep the newest backup of each of the `n` most recent UTC days that have backups.
    pub daily: Option<u32>,
    /// Keep the newest backup of each of the `n` most recent ISO weeks that have backups.
    pub weekly: Option<u32>,
    /// Keep the newest backup of each of the `n` most recent months that have backups.
    pub monthly: Option<u32>,
}

impl KeepPolicy {
    /// Parses `last=3,hourly=24,daily=7,weekly=4,monthly=6` (any subset, any order; spaces
    /// around entries, keys and values are ignored). An empty or all-blank string is the empty
    /// policy.
    pub fn parse(s: &str) -> Result<Self, RetentionError> {
        let mut policy = KeepPolicy::default();
        if s.trim().is_empty() {
            return Ok(policy);
        }
        let mut seen = HashSet::new();
        for entry in s.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(RetentionError::EmptyEntry { input: s.to_owned() });
            }
            let Some((key, value)) = entry.split_once('=') else {
                return Err(RetentionError::NotKeyValue { input: s.to_owned(), entry: entry.to_owned() });
            };
            let (key, value) = (key.trim(), value.trim());
            let slot = match key {
                "last" => &mut policy.last,
                "hourly" => &mut policy.hourly,
                "daily" => &mut policy.daily,
                "weekly" => &mut policy.weekly,
                "monthly" => &mut policy.monthly,
                _ => return Err(RetentionError::UnknownKey { input: s.to_owned(), key: key.to_owned() }),
            };
            if !seen.insert(key) {
                return Err(RetentionError::Duplicate { input: s.to_owned(), key: key.to_owned() });
            }
            let n = value
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| value.parse::<u32>().ok())
                .flatten()
                .filter(|&n| n > 0)
                .ok_or_else(|| RetentionError::NotPositive {
                    input: s.to_owned(),
                    key: key.to_owned(),
                    value: value.to_owned(),
                })?;
            *slot = Some(n);
        }
        Ok(policy)
    }

    /// True if no rule is set: such a policy deletes nothing.
    pub fn is_empty(&self) -> bool {
        self.rules().iter().all(|(_, n)| n.is_none())
    }

    fn rules(&self) -> [(&'static str, Option<u32>); 5] {
        [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
        ]
    }
}

/// Writes the policy as [`KeepPolicy::parse`] reads it, keys in the order of [`KEEP_KEYS`]
/// (the empty policy is the empty string).
impl fmt::Display for KeepPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (key, n) in self.rules() {
            if let Some(n) = n {
                write!(f, "{sep}{key}={n}")?;
                sep = ",";
            }
        }
        Ok(())
    }
}

impl FromStr for KeepPolicy {
    type Err = RetentionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// One existing backup, as far as retention is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The backup's id.
    pub id: String,
    /// When the backup was taken.
    pub created: DateTime<Utc>,
    /// Whether the backup has been verified against its manifest.
    pub verified: bool,
    /// The previous link of an incremental chain: kept whenever this one is.
    pub parent: Option<String>,
}

/// What to do with one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The backup's id.
    pub id: String,
    /// Keep it (`true`) or delete it (`false`).
    pub keep: bool,
    /// Why it is kept, e.g. `last`, `daily 2026-11-30`, `newest verified`, `newer than now`;
    /// empty when it is deleted.
    pub reasons: Vec<String>,
}

/// A bucketing rule: its name and the label of the bucket a time falls into. Two times are in
/// the same bucket exactly when their labels are equal.
type BucketRule = (&'static str, fn(&DateTime<Utc>) -> String);

const BUCKET_RULES: [BucketRule; 4] = [
    ("hourly", |t| format!("{} {:02}:00", t.format("%Y-%m-%d"), t.hour())),
    ("daily", |t| t.format("%Y-%m-%d").to_string()),
    ("weekly", |t| {
        let w = t.iso_week();
        format!("{:04}-W{:02}", w.year(), w.week())
    }),
    ("monthly", |t| format!("{:04}-{:02}", t.year(), t.month())),
];

/// Decides, for every backup, whether `policy` keeps it at time `now`.
///
/// Returns one [`Decision`] per input backup, newest first (see the module documentation for the
/// order and the rules). The order of `backups` does not matter.
pub fn plan(policy: &KeepPolicy, backups: &[Candidate], now: DateTime<Utc>) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));

    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); sorted.len()];

    if policy.is_empty() {
        for r in &mut reasons {
            r.push("no keep policy".to_owned());
        }
    }

    // Backups dated in the future are kept and take no part in the rules.
    let mut current = Vec::with_capacity(sorted.len());
    for (i, c) in sorted.iter().enumerate() {
        if c.created > now {
            reasons[i].push("newer than now".to_owned());
        } else {
            current.push(i);
        }
    }

    if let Some(n) = policy.last {
        for &i in current.iter().take(n as usize) {
            reasons[i].push("last".to_owned());
        }
    }

    let counts = [policy.hourly, policy.daily, policy.weekly, policy.monthly];
    for ((name, bucket_of), count) in BUCKET_RULES.iter().zip(counts) {
        let Some(mut remaining) = count else { continue };
        let mut previous: Option<String> = None;
        for &i in &current {
            if remaining == 0 {
                break;
            }
            let bucket = bucket_of(&sorted[i].created);
            // Newest first, so the first backup seen in a bucket is that bucket's newest.
            if previous.as_deref() != Some(bucket.as_str()) {
                reasons[i].push(format!("{name} {bucket}"));
                remaining -= 1;
                previous = Some(bucket);
            }
        }
    }

    if let Some(i) = sorted.iter().position(|c| c.verified) {
        reasons[i].push("newest verified".to_owned());
    }

    keep_chains(&sorted, &mut reasons);
    sorted
        .iter()
        .zip(reasons)
        .map(|(c, reasons)| Decision { id: c.id.clone(), keep: !reasons.is_empty(), reasons })
        .collect()
}

/// Every link a kept incremental needs is kept too (`needed by ID`), however old: a chain is
/// never cut in the middle. Newest first, so each link is reached from its newest kept child.
fn keep_chains(sorted: &[&Candidate], reasons: &mut [Vec<String>]) {
    let at: std::collections::HashMap<&str, usize> =
        sorted.iter().enumerate().map(|(i, c)| (c.id.as_str(), i)).collect();
    for i in 0..sorted.len() {
        if reasons[i].is_empty() {
            continue;
        }
        let mut child = i;
        while let Some(p) = sorted[child].parent.as_deref().and_then(|p| at.get(p).copied()) {
            let already = !reasons[p].is_empty();
            let by = format!("needed by {}", sorted[child].id);
            if !reasons[p].contains(&by) {
                reasons[p].push(by);
            }
            if already {
                break;
            }
            child = p;
        }
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
