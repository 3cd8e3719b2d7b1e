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
    #[error("schedule {expr:?}: {field} field {value:?}: {reason}")]
    Field { expr: String, field: &'static str, value: String, reason: String },
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

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
    /// `?` means `*` (the day fields).
    any: bool,
}

const MONTH_NAMES: &[(&str, u32)] = &[
    ("jan", 1),
    ("january", 1),
    ("feb", 2),
    ("february", 2),
    ("mar", 3),
    ("march", 3),
    ("apr", 4),
    ("april", 4),
    ("may", 5),
    ("jun", 6),
    ("june", 6),
    ("jul", 7),
    ("july", 7),
    ("aug", 8),
    ("august", 8),
    ("sep", 9),
    ("september", 9),
    ("oct", 10),
    ("october", 10),
    ("nov", 11),
    ("november", 11),
    ("dec", 12),
    ("december", 12),
];

const DAY_NAMES: &[(&str, u32)] = &[
    ("sun", 0),
    ("sunday", 0),
    ("mon", 1),
    ("monday", 1),
    ("tue", 2),
    ("tuesday", 2),
    ("wed", 3),
    ("wednesday", 3),
    ("thu", 4),
    ("thursday", 4),
    ("fri", 5),
    ("friday", 5),
    ("sat", 6),
    ("saturday", 6),
];

/// The day names the cron crate is given, indexed by standard day-of-week number (0 = Sunday).
/// Names rather than numbers: the crate numbers days 1-7 from Sunday, standard cron 0-6 (or 7).
const CRATE_DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const SECOND: FieldSpec = FieldSpec { name: "second", min: 0, max: 59, names: &[], any: false };
const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, names: &[], any: false };
const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, names: &[], any: false };
const DAY_OF_MONTH: FieldSpec = FieldSpec { name: "day-of-month", min: 1, max: 31, names: &[], any: true };
const MONTH: FieldSpec = FieldSpec { name: "month", min: 1, max: 12, names: MONTH_NAMES, any: false };
const DAY_OF_WEEK: FieldSpec = FieldSpec { name: "day-of-week", min: 0, max: 7, names: DAY_NAMES, any: true };

impl FieldSpec {
    /// The set of values a field matches, as a bit mask (bit `v` for value `v`).
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut mask = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err("empty list item".to_owned());
            }
            let (base, step) = match item.split_once('/') {
                Some((base, step)) => {
                    let n = step
                        .parse::<u32>()
                        .ok()
                        .filter(|&n| n > 0 && step.bytes().all(|b| b.is_ascii_digit()))
                        .ok_or_else(|| format!("step {step:?} must be a positive integer"))?;
                    (base, Some(n))
                }
                None => (item, None),
            };
            let (lo, hi) = if base == "*" || (self.any && base == "?") {
                (self.min, self.max)
            } else if let Some((a, b)) = base.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!("range {base:?} runs backwards (ranges do not wrap around)"));
                }
                (a, b)
            } else {
                let v = self.value(base)?;
                (v, if step.is_some() { self.max } else { v })
            };
            let step = step.unwrap_or(1) as usize;
            for v in (lo..=hi).step_by(step) {
                mask |= 1 << v;
            }
        }
        Ok(mask)
    }

    fn value(&self, s: &str) -> Result<u32, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u32>()
                .ok()
                .filter(|v| (self.min..=self.max).contains(v))
                .ok_or_else(|| format!("{s} is out of range {}-{}", self.min, self.max));
        }
        let lower = s.to_ascii_lowercase();
        if let Some(&(_, v)) = self.names.iter().find(|(n, _)| *n == lower) {
            return Ok(v);
        }
        if self.names.is_empty() {
            Err(format!("{s:?} is not a number"))
        } else {
            Err(format!("{s:?} is not a number or a {} name", self.name))
        }
    }

    /// The field as the cron crate reads it: `*` or an explicit list.
    fn render(&self, mask: u64) -> String {
        let all = (self.min..=self.max).fold(0u64, |m, v| m | 1 << v);
        if mask == all {
            return "*".to_owned();
        }
        let values = (self.min..=self.max).filter(|v| mask & (1 << v) != 0);
        values.map(|v| v.to_string()).collect::<Vec<_>>().join(",")
    }
}

/// The standard fields of a macro, or `None` if `word` is not one.
fn macro_fields(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        _ => return None,
    })
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
                reason,
            })?;
        }
        let [sec, min, hour, dom, month, dow] = masks;
        let sec = SECOND.render(sec);
        let min = MINUTE.render(min);
        let hour = HOUR.render(hour);
        let dom_text = DAY_OF_MONTH.render(dom);
        let month = MONTH.render(month);
        // Standard day numbers (7 = Sunday = 0) become names, whatever the crate's numbering.
        let dow = if dow & (1 << 7) != 0 { (dow | 1) & !(1 << 7) } else { dow };
        let dow_text = if dow == 0x7f {
            "*".to_owned()
        } else {
            let names = (0..7).filter(|d| dow & (1 << d) != 0).map(|d| CRATE_DAY_NAMES[d]);
            names.collect::<Vec<_>>().join(",")
        };
        let unrestricted = |f: &str| f.starts_with('*') || f.starts_with('?');
        let crate_exprs = if unrestricted(fields[3]) || unrestricted(fields[5]) {
            vec![format!("{sec} {min} {hour} {dom_text} {month} {dow_text}")]
        } else {
            vec![format!("{sec} {min} {hour} {dom_text} {month} *"), format!("{sec} {min} {hour} * {month} {dow_text}")]
        };
        let crons = crate_exprs
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Weekday};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("test time").with_timezone(&Utc)
    }

    fn sched(s: &str) -> Schedule {
        Schedule::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next `n` slots after `from`.
    fn slots(s: &Schedule, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cur = t(from);
        for _ in 0..n {
            cur = s.next_after(cur).expect("next slot");
            out.push(cur);
        }
        out
    }

    // 2026-11-30 is a Monday.
    const MON: &str = "2026-11-30T00:00:00Z";

    #[test]
    fn next_after_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("0 3 * * *", MON, "2026-11-30T03:00:00Z"),
            ("0 3 * * *", "2026-11-30T03:00:00Z", "2026-12-01T03:00:00Z"),
            ("0 3 * * *", "2026-11-30T02:59:59.999Z", "2026-11-30T03:00:00Z"),
            ("0 3 * * *", "2026-11-30T03:00:00.5Z", "2026-12-01T03:00:00Z"),
            ("*/15 * * * *", "2026-11-30T10:07:00Z", "2026-11-30T10:15:00Z"),
            ("5-10/5 * * * *", "2026-11-30T10:06:00Z", "2026-11-30T10:10:00Z"),
            ("30 0 3 * * *", MON, "2026-11-30T03:00:30Z"),
            ("*/10 * * * * *", "2026-11-30T10:00:01Z", "2026-11-30T10:00:10Z"),
            ("0 0 1 JAN *", MON, "2027-01-01T00:00:00Z"),
            ("0 0 29 feb *", MON, "2028-02-29T00:00:00Z"),
            ("0 12 * jan,DEC sat", MON, "2026-12-05T12:00:00Z"),
            ("@hourly", "2026-11-30T10:07:00Z", "2026-11-30T11:00:00Z"),
            ("@daily", "2026-11-30T10:07:00Z", "2026-12-01T00:00:00Z"),
            ("@midnight", "2026-11-30T10:07:00Z", "2026-12-01T00:00:00Z"),
            ("@weekly", MON, "2026-12-06T00:00:00Z"),
            ("@monthly", MON, "2026-12-01T00:00:00Z"),
            ("@yearly", MON, "2027-01-01T00:00:00Z"),
            ("@Annually", MON, "2027-01-01T00:00:00Z"),
            ("  0  3\t* * *  ", MON, "2026-11-30T03:00:00Z"),
        ];
        for (expr, from, want) in cases {
            assert_eq!(sched(expr).next_after(t(from)), Some(t(want)), "{expr:?} after {from}");
        }
    }

    #[test]
    fn day_of_week_uses_standard_numbering() {
        use Weekday::*;
        let cases: &[(&str, &[Weekday])] = &[
            ("0 3 * * 0", &[Sun]),
            ("0 3 * * 7", &[Sun]),
            ("0 3 * * SUN", &[Sun]),
            ("0 3 * * 1", &[Mon]),
            ("0 3 * * 6", &[Sat]),
            ("0 3 * * 1-5", &[Mon, Tue, Wed, Thu, Fri]),
            ("0 3 * * mon-fri", &[Mon, Tue, Wed, Thu, Fri]),
            ("0 3 * * 1,3,5", &[Mon, Wed, Fri]),
            ("0 3 * * 1-5/2", &[Mon, Wed, Fri]),
            ("0 3 * * */2", &[Sun, Tue, Thu, Sat]),
            ("0 3 * * 5-7", &[Fri, Sat, Sun]),
            ("0 3 * * 0,7", &[Sun]),
            ("0 3 * * 4/1", &[Thu, Fri, Sat, Sun]),
            ("0 3 * * sat,sunday", &[Sat, Sun]),
            ("0 3 * * 0-7", &[Mon, Tue, Wed, Thu, Fri, Sat, Sun]),
            ("0 0 3 * * 1-5", &[Mon, Tue, Wed, Thu, Fri]),
        ];
        for (expr, want) in cases {
            let s = sched(expr);
            // Two weeks of slots, starting on a Monday: every slot is at 03:00 on a wanted day and
            // every wanted day comes up.
            let got = slots(&s, MON, want.len() * 2);
            let mut days: Vec<Weekday> = got.iter().map(|d| d.weekday()).collect();
            assert!(got.iter().all(|d| d.format("%H:%M:%S").to_string() == "03:00:00"), "{expr}: {got:?}");
            assert!(got.last().expect("slots") < &t("2026-12-14T00:00:00Z"), "{expr}: {got:?}");
            days.sort_by_key(|d| d.num_days_from_monday());
            days.dedup();
            let mut want = want.to_vec();
            want.sort_by_key(|d| d.num_days_from_monday());
            assert_eq!(days, want, "{expr}");
        }
    }

    #[test]
    fn restricted_day_fields_are_ored() {
        // 13th of the month or a Friday.
        let got = slots(&sched("0 0 13 * FRI"), "2026-11-01T00:00:00Z", 5);
        let want = ["2026-11-06", "2026-11-13", "2026-11-20", "2026-11-27", "2026-12-04"];
        let got: Vec<String> = got.iter().map(|d| d.format("%Y-%m-%d").to_string()).collect();
        assert_eq!(got, want);
        // `*`-led day-of-month: both must match (Vixie cron): odd days that are Mondays.
        let got = slots(&sched("0 0 */2 * MON"), "2026-11-01T00:00:00Z", 3);
        let got: Vec<String> = got.iter().map(|d| d.format("%Y-%m-%d").to_string()).collect();
        assert_eq!(got, ["2026-11-09", "2026-11-23", "2026-12-07"]);
    }

    #[test]
    fn expr_is_kept() {
        for e in ["0 3 * * 7", "@daily", " */5 * * * * * "] {
            let s = sched(e);
            assert_eq!(s.expr(), e);
            assert_eq!(s.to_string(), e);
            assert_eq!(e.parse::<Schedule>().expect("parse"), s);
        }
    }

    #[test]
    fn parse_errors() {
        let fc = "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (a seconds field first)";
        let cases: &[(&str, String)] = &[
            ("", r#"schedule "": empty cron expression"#.into()),
            ("   ", r#"schedule "   ": empty cron expression"#.into()),
            ("0 3 * *", format!(r#"schedule "0 3 * *": {fc}, found 4"#)),
            ("0 0 3 * * * 2030", format!(r#"schedule "0 0 3 * * * 2030": {fc}, found 7"#)),
            (
                "@reboot",
                r#"schedule "@reboot": unknown macro "@reboot" (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)"#
                    .into(),
            ),
            ("61 3 * * *", r#"schedule "61 3 * * *": minute field "61": 61 is out of range 0-59"#.into()),
            ("0 24 * * *", r#"schedule "0 24 * * *": hour field "24": 24 is out of range 0-23"#.into()),
            ("0 3 0 * *", r#"schedule "0 3 0 * *": day-of-month field "0": 0 is out of range 1-31"#.into()),
            ("0 3 * 13 *", r#"schedule "0 3 * 13 *": month field "13": 13 is out of range 1-12"#.into()),
            ("0 3 * * 8", r#"schedule "0 3 * * 8": day-of-week field "8": 8 is out of range 0-7"#.into()),
            ("60 0 3 * * *", r#"schedule "60 0 3 * * *": second field "60": 60 is out of range 0-59"#.into()),
            (
                "0 3 * * FOO",
                r#"schedule "0 3 * * FOO": day-of-week field "FOO": "FOO" is not a number or a day-of-week name"#
                    .into(),
            ),
            (
                "0 3 * * MON/x",
                r#"schedule "0 3 * * MON/x": day-of-week field "MON/x": step "x" must be a positive integer"#.into(),
            ),
            ("x 3 * * *", r#"schedule "x 3 * * *": minute field "x": "x" is not a number"#.into()),
            (
                "0 3 * * FRI-MON",
                r#"schedule "0 3 * * FRI-MON": day-of-week field "FRI-MON": range "FRI-MON" runs backwards (ranges do not wrap around)"#
                    .into(),
            ),
            (
                "*/0 * * * *",
                r#"schedule "*/0 * * * *": minute field "*/0": step "0" must be a positive integer"#.into(),
            ),
            ("1,,2 * * * *", r#"schedule "1,,2 * * * *": minute field "1,,2": empty list item"#.into()),
            ("1-2-3 * * * *", r#"schedule "1-2-3 * * * *": minute field "1-2-3": "2-3" is not a number"#.into()),
            ("0 3 * * ?", String::new()),
            ("0 0 30 2 *", r#"schedule "0 0 30 2 *": never fires"#.into()),
            ("0 0 31 4,6,9,11 *", r#"schedule "0 0 31 4,6,9,11 *": never fires"#.into()),
        ];
        for (expr, want) in cases {
            match Schedule::parse(expr) {
                Ok(_) => assert!(want.is_empty(), "{expr:?} parsed, want {want}"),
                Err(e) => assert_eq!(&e.to_string(), want, "{expr:?}"),
            }
        }
    }

    #[test]
    fn latest_slot_agrees_with_forward_search() {
        // The crate's backwards search (used for `Due::Now`'s slot) against a forward walk.
        let exprs = ["0 3 * * *", "0 3 * * 1-5", "0 0 13 * FRI", "0 0 29 2 *", "*/7 5 1,31 * *", "15 */6 * * 0"];
        let mut now = t("2027-12-25T00:00:00Z");
        let step = TimeDelta::seconds(987_654);
        for _ in 0..200 {
            now += step;
            for e in exprs {
                let s = sched(e);
                let latest = s.latest_at_or_before(now).expect("latest slot");
                assert!(latest <= now && s.next_after(latest).expect("next slot") > now, "{e} at {now}: {latest}");
                // `latest` is itself a slot (and the one after it is past `now`, above).
                assert_eq!(s.next_after(latest - TimeDelta::nanoseconds(1)), Some(latest), "{e} at {now}");
            }
        }
        // Exactly on a slot, and a nanosecond before it.
        let s = sched("0 3 * * *");
        assert_eq!(s.latest_at_or_before(t("2026-11-30T03:00:00Z")), Some(t("2026-11-30T03:00:00Z")));
        assert_eq!(s.latest_at_or_before(t("2026-11-30T02:59:59.999999999Z")), Some(t("2026-11-29T03:00:00Z")));
    }

    #[test]
    fn due_table() {
        let daily = sched("0 3 * * *");
        let at = |s: &str| Due::At(t(s));
        let now = |s: &str, missed: u32| Due::Now { slot: t(s), missed };
        let anchor = t("2026-11-30T01:00:00Z");
        type Case<'a> = (&'a str, Option<&'a str>, &'a str, Due);
        let cases: &[Case] = &[
            // New schedule, before its first slot: wait for it.
            ("new, before first slot", None, "2026-11-30T02:00:00Z", at("2026-11-30T03:00:00Z")),
            // New schedule, first slot reached.
            ("new, first slot", None, "2026-11-30T03:00:00Z", now("2026-11-30T03:00:00Z", 0)),
            ("new, a bit late", None, "2026-11-30T03:00:07Z", now("2026-11-30T03:00:00Z", 0)),
            // Handled today's run; next one tomorrow.
            ("handled", Some("2026-11-30T03:00:00Z"), "2026-11-30T03:00:01Z", at("2026-12-01T03:00:00Z")),
            ("on time", Some("2026-11-30T03:00:00Z"), "2026-12-01T03:00:00Z", now("2026-12-01T03:00:00Z", 0)),
            ("missed one", Some("2026-11-30T03:00:00Z"), "2026-12-02T04:00:00Z", now("2026-12-02T03:00:00Z", 1)),
            ("missed many", Some("2026-11-30T03:00:00Z"), "2026-12-31T02:59:59Z", now("2026-12-30T03:00:00Z", 29)),
            // The clock went backwards below the last slot: wait for the slot after it.
            ("clock backwards", Some("2026-11-30T03:00:00Z"), "2026-11-29T00:00:00Z", at("2026-12-01T03:00:00Z")),
            ("past 2100", Some("2100-12-31T03:00:00Z"), "2101-01-01T00:00:00Z", Due::Never),
        ];
        for (name, last, now_s, want) in cases {
            let got = due(&daily, last.map(t), anchor, t(now_s));
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn due_runs_once_then_waits() {
        // After downtime the caller records the returned slot; the next call waits.
        let s = sched("*/15 * * * *");
        let anchor = t("2026-11-30T00:00:00Z");
        let Due::Now { slot, missed } = due(&s, None, anchor, t("2026-11-30T10:20:00Z")) else { panic!() };
        assert_eq!((slot, missed), (t("2026-11-30T10:15:00Z"), 40));
        assert_eq!(due(&s, Some(slot), anchor, t("2026-11-30T10:20:00Z")), Due::At(t("2026-11-30T10:30:00Z")));
    }

    #[test]
    fn due_six_fields_and_ored_days() {
        let s = sched("30 0 3 * * *");
        let anchor = t("2026-11-30T03:00:00Z");
        assert_eq!(due(&s, None, anchor, t("2026-11-30T03:00:29Z")), Due::At(t("2026-11-30T03:00:30Z")));
        assert_eq!(
            due(&s, None, anchor, t("2026-12-03T03:00:30Z")),
            Due::Now { slot: t("2026-12-03T03:00:30Z"), missed: 3 }
        );
        // 13th or Friday: Fri 11-06, Fri 11-13 (also the 13th, one slot), Fri 11-20.
        let s = sched("0 0 13 * 5");
        assert_eq!(
            due(&s, Some(t("2026-11-01T00:00:00Z")), anchor, t("2026-11-21T00:00:00Z")),
            Due::Now { slot: t("2026-11-20T00:00:00Z"), missed: 2 }
        );
    }

    #[test]
    fn every_second_after_a_year_down_is_fast_and_capped() {
        let s = sched("* * * * * *");
        let started = std::time::Instant::now();
        let got = due(&s, Some(t("2025-11-30T00:00:00Z")), t("2025-01-01T00:00:00Z"), t("2026-11-30T12:34:56.789Z"));
        assert_eq!(got, Due::Now { slot: t("2026-11-30T12:34:56Z"), missed: MISSED_COUNT_CAP });
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
        // Exactly at the cap is still exact.
        let last = t("2026-11-30T12:00:00Z");
        let now = last + TimeDelta::seconds(i64::from(MISSED_COUNT_CAP));
        assert_eq!(due(&s, Some(last), last, now), Due::Now { slot: now, missed: MISSED_COUNT_CAP - 1 });
    }
}
