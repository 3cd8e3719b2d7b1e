//! Backup schedules (cron expressions) and the missed-run rule.
//!
//! ## Expressions
//! The volume option `backup-schedule=...` and the schedules of the configuration file take a
//! cron expression, evaluated in **UTC**:
//!
//! - 5 fields, standard cron: `minute hour day-of-month month day-of-week`, firing at second 0
//!   (`0 3 * * *` is every day at 03:00:00 UTC);
//! - 6 fields: `second minute hour day-of-month month day-of-week`, i.e. a seconds field
//!   *first*, then the 5 standard fields (`30 0 3 * * *` is every day at 03:00:30 UTC);
//! - a macro: `@hourly` (`0 * * * *`), `@daily` or `@midnight` (`0 0 * * *`), `@weekly`
//!   (`0 0 * * 0`, Sunday), `@monthly` (`0 0 1 * *`), `@yearly` or `@annually` (`0 0 1 1 *`).
//!
//! Each field is a comma-separated list of `*`, a value `v`, or a range `a-b`, each optionally
//! followed by a step `/n` (`*/15`, `0-30/10`; `v/n` means `v-max/n`). Ranges do not wrap around
//! (`FRI-MON` is an error). Ranges of values: second and minute 0-59, hour 0-23, day-of-month
//! 1-31, month 1-12 or `JAN`-`DEC`, day-of-week 0-7 or `SUN`-`SAT`, where both 0 and 7 are
//! Sunday (`1-5` is Monday to Friday). Names are case-insensitive and may be written in full
//! (`monday`). `?` is accepted for `*` in the two day fields.
//!
//! As in Vixie cron, when both day fields are restricted (neither starts with `*` or `?`) a day
//! matches if *either* matches: `0 0 13 * FRI` fires on every 13th and on every Friday.
//! Otherwise both must match: `0 0 */2 * MON` fires on Mondays that fall on an odd day.
//!
//! An expression that can never fire (`0 0 30 2 *`) is rejected. Slots are whole seconds; the
//! last slot the underlying calendar search knows of is in the year 2100.
//!
//! ## The missed-run rule
//! [`due`] tells the scheduler what to do at `now`, given the latest slot already handled (run
//! or deliberately skipped), or, for a new schedule, the time it was set up (the `anchor`). It
//! finds the first slot strictly after that point:
//!
//! - if it is later than `now`, the answer is [`Due::At`] that slot;
//! - otherwise one run is due **now**, however many slots passed meanwhile (e.g. while the
//!   daemon was down): [`Due::Now`] carries the latest slot at or before `now`, which the caller
//!   records as its new last slot so that the earlier ones are not replayed, and how many earlier
//!   slots were skipped. Counting stops at [`MISSED_COUNT_CAP`] (so an every-second schedule
//!   after a year of downtime costs at most that many steps); a count at the cap means "at
//!   least that many".
//!
//! A new schedule never fires for slots before or at its anchor, and a last slot later than
//! `now` (a clock that went backwards) makes the scheduler wait for the first slot after it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};

mod fields;

#[cfg(test)]
mod tests;

pub use fields::FieldError;
use fields::{DAY_OF_MONTH, DAY_OF_WEEK, HOUR, MINUTE, MONTH, SECOND, crate_exprs, macro_fields};

/// [`Due::Now`]'s `missed` count stops here: a value equal to the cap means "at least this many".
pub const MISSED_COUNT_CAP: u32 = 10_000;

/// A cron expression that could not be used as a schedule. Every message names the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is empty or blank.
    #[error("schedule {expr:?}: empty cron expression")]
    Empty { expr: String },
    /// An `@word` that is not one of the supported macros.
    #[error(
        "schedule {expr:?}: unknown macro {word:?} (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)"
    )]
    UnknownMacro { expr: String, word: String },
    /// Not 5 or 6 fields.
    #[error(
        "schedule {expr:?}: expected 5 fields (minute hour day-of-month month day-of-week) or 6 (a seconds field first), found {found}"
    )]
    FieldCount { expr: String, found: usize },
    /// One field is malformed or out of range.
    /// (`reason` is boxed to keep the error, and every error holding it, small.)
    #[error("schedule {expr:?}: {field} field {value:?}: {reason}")]
    Field { expr: String, field: &'static str, value: String, reason: Box<FieldError> },
    /// The expression is well-formed but matches no time (e.g. `0 0 30 2 *`).
    #[error("schedule {expr:?}: never fires")]
    NeverFires { expr: String },
    /// The cron library rejected the translated expression (not expected to happen).
    #[error("schedule {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
}

/// A parsed cron schedule. It keeps the text it was parsed from ([`Schedule::expr`], `Display`);
/// two schedules are equal when their texts are.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    /// One schedule, or two whose union is meant (both day fields restricted).
    crons: Vec<cron::Schedule>,
}

/// What the scheduler should do now; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Run now, once. `slot` is the latest slot at or before `now` (record it as the new last
    /// slot); `missed` is how many slots before it were skipped (capped at [`MISSED_COUNT_CAP`]).
    Now { slot: DateTime<Utc>, missed: u32 },
    /// Nothing to do until this slot.
    At(DateTime<Utc>),
    /// The schedule has no further slot.
    Never,
}

impl Schedule {
    /// Parses a 5- or 6-field cron expression or a macro (see the module documentation).
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty { expr: expr.to_owned() });
        }
        let text = if trimmed.starts_with('@') {
            macro_fields(trimmed)
                .ok_or_else(|| ScheduleError::UnknownMacro { expr: expr.to_owned(), word: trimmed.to_owned() })?
        } else {
            trimmed
        };
        let mut fields: Vec<&str> = text.split_whitespace().collect();
        match fields.len() {
            5 => fields.insert(0, "0"),
            6 => {}
            found => return Err(ScheduleError::FieldCount { expr: expr.to_owned(), found }),
        }
        let specs = [&SECOND, &MINUTE, &HOUR, &DAY_OF_MONTH, &MONTH, &DAY_OF_WEEK];
        let mut masks = [0u64; 6];
        for ((spec, text), mask) in specs.iter().zip(&fields).zip(&mut masks) {
            *mask = spec.parse(text).map_err(|reason| ScheduleError::Field {
                expr: expr.to_owned(),
                field: spec.name,
                value: (*text).to_owned(),
                reason: Box::new(reason),
            })?;
        }
        let crons = crate_exprs(&fields, masks)
            .iter()
            .map(|e| {
                cron::Schedule::from_str(e).map_err(|err| ScheduleError::Cron {
                    expr: expr.to_owned(),
                    reason: format!("cron library rejected {e:?}: {err}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schedule = Schedule { expr: expr.to_owned(), crons };
        if schedule.next_after(DateTime::UNIX_EPOCH).is_none() {
            return Err(ScheduleError::NeverFires { expr: expr.to_owned() });
        }
        Ok(schedule)
    }

    /// The text the schedule was parsed from.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first slot strictly after `t`, or `None` if there is none (past the year 2100).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.crons.iter().filter_map(|c| c.after(&t).next()).min()
    }

    /// The latest slot at or before `t`.
    fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The crate's backwards search is strictly before its start; slots are whole seconds.
        let from = t.checked_add_signed(TimeDelta::nanoseconds(1)).unwrap_or(t);
        self.crons.iter().filter_map(|c| c.after(&from).next_back()).filter(|s| *s <= t).max()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for Schedule {}

/// What to do at `now`: `last_slot` is the latest slot already handled (run or deliberately
/// skipped), `None` for a new schedule, which then starts after `anchor` (when it was set up).
/// See the module documentation for the rule.
pub fn due(schedule: &Schedule, last_slot: Option<DateTime<Utc>>, anchor: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    let start = last_slot.unwrap_or(anchor);
    let Some(first) = schedule.next_after(start) else {
        return Due::Never;
    };
    if first > now {
        return Due::At(first);
    }
    let slot = schedule.latest_at_or_before(now).map_or(first, |s| s.max(first));
    let mut missed = 0;
    let mut cur = first;
    while cur < slot && missed < MISSED_COUNT_CAP {
        missed += 1;
        match schedule.next_after(cur) {
            Some(next) => cur = next,
            None => break,
        }
    }
    Due::Now { slot, missed }
}
