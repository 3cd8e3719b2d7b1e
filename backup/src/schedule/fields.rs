//! The fields of a cron expression: each field's values and names, parsing a field into the
//! set of values it matches (a bit mask), and the expressions the cron crate is given (standard
//! day-of-week numbers and Vixie cron's either-day rule translated into what it understands).

/// What is wrong with one field of a cron expression ([`super::ScheduleError::Field`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// `1,,2`.
    #[error("empty list item")]
    EmptyItem,
    /// A step that is not a positive integer (`*/0`, `MON/x`).
    #[error("step {step:?} must be a positive integer")]
    Step { step: String },
    /// A range whose end comes before its start (`FRI-MON`).
    #[error("range {range:?} runs backwards (ranges do not wrap around)")]
    Backwards { range: String },
    /// A number outside the field's range.
    #[error("{value} is out of range {min}-{max}")]
    OutOfRange { value: String, min: u32, max: u32 },
    /// Neither a number nor (the field has none) a name.
    #[error("{value:?} is not a number")]
    NotANumber { value: String },
    /// Neither a number nor one of the field's names.
    #[error("{value:?} is not a number or a {field} name")]
    NotANumberOrName { value: String, field: &'static str },
}

/// One field of a cron expression: its name, range of values, and names for values.
pub(super) struct FieldSpec {
    pub(super) name: &'static str,
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

pub(super) const SECOND: FieldSpec = FieldSpec { name: "second", min: 0, max: 59, names: &[], any: false };
pub(super) const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, names: &[], any: false };
pub(super) const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, names: &[], any: false };
pub(super) const DAY_OF_MONTH: FieldSpec = FieldSpec { name: "day-of-month", min: 1, max: 31, names: &[], any: true };
pub(super) const MONTH: FieldSpec = FieldSpec { name: "month", min: 1, max: 12, names: MONTH_NAMES, any: false };
pub(super) const DAY_OF_WEEK: FieldSpec =
    FieldSpec { name: "day-of-week", min: 0, max: 7, names: DAY_NAMES, any: true };

impl FieldSpec {
    /// The set of values a field matches, as a bit mask (bit `v` for value `v`).
    pub(super) fn parse(&self, text: &str) -> Result<u64, FieldError> {
        let mut mask = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(FieldError::EmptyItem);
            }
            let (base, step) = match item.split_once('/') {
                Some((base, step)) => {
                    let n = step
                        .parse::<u32>()
                        .ok()
                        .filter(|&n| n > 0 && step.bytes().all(|b| b.is_ascii_digit()))
                        .ok_or_else(|| FieldError::Step { step: step.to_owned() })?;
                    (base, Some(n))
                }
                None => (item, None),
            };
            let (lo, hi) = if base == "*" || (self.any && base == "?") {
                (self.min, self.max)
            } else if let Some((a, b)) = base.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(FieldError::Backwards { range: base.to_owned() });
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

    fn value(&self, s: &str) -> Result<u32, FieldError> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u32>()
                .ok()
                .filter(|v| (self.min..=self.max).contains(v))
                .ok_or_else(|| FieldError::OutOfRange { value: s.to_owned(), min: self.min, max: self.max });
        }
        let lower = s.to_ascii_lowercase();
        if let Some(&(_, v)) = self.names.iter().find(|(n, _)| *n == lower) {
            return Ok(v);
        }
        if self.names.is_empty() {
            Err(FieldError::NotANumber { value: s.to_owned() })
        } else {
            Err(FieldError::NotANumberOrName { value: s.to_owned(), field: self.name })
        }
    }

    /// The field as the cron crate reads it: `*` or an explicit list.
    pub(super) fn render(&self, mask: u64) -> String {
        let all = (self.min..=self.max).fold(0u64, |m, v| m | 1 << v);
        if mask == all {
            return "*".to_owned();
        }
        let values = (self.min..=self.max).filter(|v| mask & (1 << v) != 0);
        values.map(|v| v.to_string()).collect::<Vec<_>>().join(",")
    }
}

/// The standard fields of a macro, or `None` if `word` is not one.
pub(super) fn macro_fields(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        _ => return None,
    })
}

/// The expressions the cron crate is given for the six `fields` (seconds first) whose values
/// are `masks`: one, or two whose union is meant when both day fields are restricted (Vixie
/// cron's rule, which the crate does not follow).
pub(super) fn crate_exprs(fields: &[&str], masks: [u64; 6]) -> Vec<String> {
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
    if unrestricted(fields[3]) || unrestricted(fields[5]) {
        vec![format!("{sec} {min} {hour} {dom_text} {month} {dow_text}")]
    } else {
        vec![format!("{sec} {min} {hour} {dom_text} {month} *"), format!("{sec} {min} {hour} * {month} {dow_text}")]
    }
}
