//! The volume option parser (`plugin/src/options/`, what `docker volume create -o` and
//! `voltool create` feed) on arbitrary option sets: see options_check.rs for what is checked.
//!
//! Input: text lines, `KEY=VALUE` an option; `pw:X` an inline password to add to `o=`;
//! `part:X` one option of an `o=` list for the list's own round trip.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

// Compiled from the plugin's own files (it needs only serde and voltool-backup's parsers).
#[allow(dead_code, unused_imports)]
#[path = "../../plugin/src/options/mod.rs"]
mod options;
mod options_check;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (mut opts, mut password, mut parts) = (BTreeMap::new(), String::new(), Vec::new());
    for line in text.split('\n').take(32) {
        if let Some(p) = line.strip_prefix("pw:") {
            password = p.to_owned();
        } else if let Some(p) = line.strip_prefix("part:") {
            parts.push(p.to_owned());
        } else {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            opts.insert(k.to_owned(), v.to_owned());
        }
    }
    for v in opts.values() {
        let _ = options::parse_size(v);
        let _ = options::validate_name(v);
    }
    options_check::check(opts, &password);
    options_check::olist_roundtrip(&parts);
});
