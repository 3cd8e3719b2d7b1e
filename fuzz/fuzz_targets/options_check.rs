//! Checks shared by the `volume_options` and `plugin_request` targets: what every option set
//! `-o KEY=VALUE` (or a Create request's `Opts`) must satisfy, whatever it holds.

use std::collections::BTreeMap;

use super::options::{self, QuotaSupport, olist};

/// Parses `opts` and checks, for the result:
/// - no error message shows an inline password (`o=password=`, whatever the volume type), and
///   nothing a CIFS volume keeps depends on it: another password of the same length gives the
///   same answer;
/// - what is stored parses again to the same spec and the same stored options;
/// - every backing decision is an answer, not a panic.
pub fn check(mut opts: BTreeMap<String, String>, password: &str) {
    let pw = password.chars().filter(char::is_ascii_alphanumeric).take(32).collect::<String>();
    if pw.is_empty() {
        return plain(&opts);
    }
    // A trailing comma would escape the one before `password=` (`,,` is a literal comma).
    let o = opts.remove("o").unwrap_or_default().trim_end_matches(',').to_owned();
    let with = |p: &str| {
        let mut m = opts.clone();
        m.insert("o".into(), if o.is_empty() { format!("password={p}") } else { format!("{o},password={p}") });
        m
    };
    let other = if pw.starts_with('Q') { "R" } else { "Q" }.repeat(pw.len());
    let cifs = matches!(opts.get("type").map(String::as_str), Some("cifs" | "smb"));
    match (options::parse_full(&with(&pw)), options::parse_full(&with(&other))) {
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "an error message shows the password"),
        // A CIFS volume takes the password out: nothing kept may depend on it.
        (Ok(a), Ok(b)) if cifs => {
            assert_eq!((a.spec, a.stored), (b.spec, b.stored), "the password is kept in the options");
            assert_eq!(a.inline_password.as_deref(), Some(pw.as_str()));
        }
        (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "the outcome depends on the password's value"),
    }
    plain(&with(&pw));
}

fn plain(opts: &BTreeMap<String, String>) {
    let Ok(p) = options::parse_full(opts) else { return };
    let again = options::parse_full(&p.stored).expect("stored options parse again");
    assert_eq!(again.spec, p.spec, "stored options give another spec");
    assert_eq!(again.stored, p.stored, "stored options are not a fixed point");
    for (project, loop_devices) in [(false, false), (false, true), (true, false), (true, true)] {
        let _ = options::resolve_backing(&p.spec, QuotaSupport { project, loop_devices });
    }
}

/// `o=` lists: what `join` writes, `split` reads back (options as the parsers keep them:
/// trimmed, non-empty, not starting with a comma — an option always starts with its name).
#[allow(dead_code)] // volume_options only
pub fn olist_roundtrip(parts: &[String]) {
    let parts: Vec<String> = parts
        .iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty() && !p.starts_with(',') && p.trim() == p.as_str())
        .collect();
    assert_eq!(olist::split(&olist::join(&parts)), parts);
}
