//! `template = "..."`: the text of a message, with `{kind}`, `{volume}`, `{backup_id}`,
//! `{target}`, `{reason}`, `{host}` and `{at}` replaced by the event's values (`-` where the
//! event has none). No template engine: one pass over the text.
//!
//! A `{word}` made of lowercase letters and `_` that is not one of those names is refused when
//! the configuration is read (a typo such as `{volum}` would otherwise reach operators as
//! literal text on the day something fails); any other brace (`{"json": 1}`, `{}`, `{ x }`) is
//! kept as written. Templates are at most [`MAX_TEMPLATE`] bytes and a rendered text at most
//! [`MAX_TEXT`] bytes (cut at a character boundary, ending in `…`), so a long reason cannot make
//! a message without bound.

use crate::event::{Event, format_time};

/// The longest template accepted, in bytes.
pub const MAX_TEMPLATE: usize = 4096;
/// The longest text sent, in bytes (templates and the default summary alike).
pub const MAX_TEXT: usize = 16 * 1024;

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 7] = ["kind", "volume", "backup_id", "target", "reason", "host", "at"];

/// A checked template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template(String);

/// `{word}` at the start of `s` (which begins with `{`): the word, if it is one.
fn placeholder(s: &str) -> Option<&str> {
    let end = s.find('}')?;
    let word = &s[1..end];
    let is_word = !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    is_word.then_some(word)
}

impl Template {
    /// Checks `text`; the error says what is wrong (the caller names the notifier and field).
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        if text.len() > MAX_TEMPLATE {
            return Err(format!("{} bytes, more than the {MAX_TEMPLATE} allowed", text.len()));
        }
        for (i, _) in text.match_indices('{') {
            if let Some(word) = placeholder(&text[i..])
                && !PLACEHOLDERS.contains(&word)
            {
                let known: Vec<String> = PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect();
                return Err(format!("unknown placeholder {{{word}}}: use {}", known.join(", ")));
            }
        }
        Ok(Template(text.to_string()))
    }

    /// The text for `event`, at most [`MAX_TEXT`] bytes.
    pub(crate) fn render(&self, event: &Event) -> String {
        let mut out = String::with_capacity(self.0.len() + 64);
        let mut rest = self.0.as_str();
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            match placeholder(rest) {
                Some(word) => {
                    out.push_str(&value(event, word));
                    rest = &rest[word.len() + 2..];
                }
                None => {
                    out.push('{');
                    rest = &rest[1..];
                }
            }
            if out.len() > MAX_TEXT {
                break;
            }
        }
        out.push_str(rest);
        bounded(out)
    }
}

fn value(event: &Event, word: &str) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    match word {
        "kind" => event.kind.to_string(),
        "volume" => opt(&event.volume),
        "backup_id" => opt(&event.backup_id),
        "target" => opt(&event.target),
        "reason" => opt(&event.reason),
        "host" => event.host.clone(),
        "at" => format_time(event.at),
        // Refused by `parse`; kept as written should one get here.
        other => format!("{{{other}}}"),
    }
}

/// `s` cut to at most [`MAX_TEXT`] bytes at a character boundary, marked with `…`.
pub(crate) fn bounded(mut s: String) -> String {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn event() -> Event {
        let at = time::OffsetDateTime::from_unix_timestamp(0).unwrap();
        Event::new(EventKind::BackupFailed, "node1").volume("db").reason("no space").at(at)
    }

    #[test]
    fn placeholders_are_replaced_and_missing_values_are_dashes() {
        let t = Template::parse("{kind} {volume}/{backup_id} on {host} at {at}: {reason} [{target}]").unwrap();
        assert_eq!(t.render(&event()), "backup-failed db/- on node1 at 1970-01-01T00:00:00Z: no space [-]");
    }

    #[test]
    fn other_braces_are_kept() {
        let t = Template::parse(r#"{"text": "{volume}"} {} { x } {Volume} {"#).unwrap();
        assert_eq!(t.render(&event()), r#"{"text": "db"} {} { x } {Volume} {"#);
    }

    #[test]
    fn unknown_placeholders_are_refused_naming_them() {
        let err = Template::parse("volume {volum} failed").unwrap_err();
        assert!(err.contains("{volum}") && err.contains("{volume}"), "{err}");
    }

    #[test]
    fn sizes_are_bounded() {
        assert!(Template::parse(&"x".repeat(MAX_TEMPLATE + 1)).is_err());
        let t = Template::parse("{reason}{reason}").unwrap();
        let long = event().reason("é".repeat(MAX_TEXT));
        let out = t.render(&long);
        assert!(out.len() <= MAX_TEXT && out.ends_with('…'), "{}", out.len());
        assert!(long.summary().len() <= MAX_TEXT);
    }
}
