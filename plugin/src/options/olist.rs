//! The comma-separated `o=` list, with the `,,` escape for a literal comma.
//!
//! Docker's local driver hands `o=` to mount(2) as its data string, and the kernel's CIFS
//! option parser reads `,,` inside a value as one literal comma (`password=a,,b` is the
//! password `a,b`); users of `docker volume create -o o=...` rely on that. voltool parses `o=`
//! itself, so it honours the same escape: a `,,` never splits an option, and options kept
//! for storage or handed on to the kernel are re-escaped with [`escape`].

/// Splits an `o=` value into its options: `,` separates, `,,` is a literal comma. Options
/// are trimmed; empty ones are dropped.
pub fn split(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ',' {
            cur.push(c);
        } else if chars.peek() == Some(&',') {
            chars.next();
            cur.push(',');
        } else {
            out.push(std::mem::take(&mut cur));
        }
    }
    out.push(cur);
    out.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

/// Escapes one option for a comma-separated list (a comma is doubled).
pub fn escape(v: &str) -> String {
    v.replace(',', ",,")
}

/// Joins options into an `o=` value, escaping commas inside them.
pub fn join<S: AsRef<str>>(parts: &[S]) -> String {
    parts.iter().map(|p| escape(p.as_ref())).collect::<Vec<_>>().join(",")
}

/// One option as an error message may show it: a `password=`/`pass=` value is hidden (a
/// message goes back to the caller and into the daemon's log).
pub fn shown(part: &str) -> String {
    match part.split_once('=') {
        Some((k @ ("password" | "pass"), _)) => format!("{k}=…"),
        _ => part.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_comma_is_a_literal_comma() {
        let cases: &[(&str, &[&str])] = &[
            ("username=u,password=a,,b", &["username=u", "password=a,b"]),
            ("password=a,,b,vers=3.0", &["password=a,b", "vers=3.0"]),
            ("password=,,,,", &["password=,,"]),
            ("password=x,,,vers=3", &["password=x,", "vers=3"]),
            ("a,,b,,c", &["a,b,c"]),
            (" rw , hard ,", &["rw", "hard"]),
            ("", &[]),
            (",", &[]),
        ];
        for (input, want) in cases {
            assert_eq!(split(input), *want, "{input:?}");
        }
    }

    #[test]
    fn join_round_trips_through_split() {
        for parts in [vec!["password=a,b", "vers=3.0"], vec!["x"], vec!["a,,b", "c"]] {
            assert_eq!(split(&join(&parts)), parts);
        }
    }
}
