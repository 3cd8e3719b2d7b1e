//! The manifest parser (`Manifest::from_reader`, what a restore reads from a target or an
//! import) on arbitrary bytes, with a small byte limit and the default one. What it accepts
//! must be what `from_json` accepts, and must survive the backup engine's own way of writing
//! a manifest (`write_json` from an `EntryList`) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voltool_backup::{BackupError, EntryList, Manifest, ManifestLimits};

fuzz_target!(|data: &[u8]| {
    let small = ManifestLimits { bytes: 4096 };
    match Manifest::from_reader("fuzz", data, small) {
        Ok(_) => assert!(data.len() as u64 <= small.bytes),
        Err(BackupError::ManifestTooLarge { limit, .. }) => assert!(data.len() as u64 > limit),
        Err(_) => {}
    }
    let parsed = Manifest::from_reader("fuzz", data, ManifestLimits::default());
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(Manifest::from_json(text).ok(), parsed.as_ref().ok().cloned());
    }
    if let Ok(m) = parsed {
        roundtrip(m);
    }
});

/// `write_json` + `from_reader` give back the manifest, its hashes as the compact list keeps
/// them (64 hex digits, lowercase; anything else is no hash).
fn roundtrip(mut m: Manifest) {
    let list: EntryList = m.entries.iter().cloned().collect();
    let mut want = m.clone();
    for e in &mut want.entries {
        e.sha256 = e
            .sha256
            .take()
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|h| h.to_ascii_lowercase());
    }
    m.entries.clear();
    let mut out = Vec::new();
    m.write_json(&list, &mut out).unwrap();
    let back = Manifest::from_reader("roundtrip", out.as_slice(), ManifestLimits::default()).unwrap();
    assert_eq!(back, want);
}
