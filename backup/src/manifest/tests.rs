use super::*;

fn summary() -> ArchiveSummary {
    ArchiveSummary {
        entries: vec![Entry {
            path: "a/b.txt".into(),
            kind: EntryKind::File,
            mode: 0o640,
            uid: 1000,
            gid: 1000,
            size: 3,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
            sha256: Some("00".repeat(32)),
            target: None,
            ino: 42,
            ctime: 1_700_000_001,
            ctime_nsec: 6,
            level: 0,
            frame_at: 24,
            frame_len: 100,
            frame_skip: 0,
        }]
        .into_iter()
        .collect(),
        files: 1,
        bytes_in: 3,
        archive_size: 99,
        archive_sha256: "ab".repeat(32),
        notes: vec![],
        level: 0,
        parent: None,
        unchanged: 0,
    }
}

#[test]
fn json_round_trip_and_no_password() {
    let opts: BTreeMap<String, String> =
        [("size".to_owned(), "1g".to_owned()), ("Password".to_owned(), "hunter2".to_owned())].into();
    let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
    let m = Manifest::new("v-20240506T070809Z-a1b2c3", "v", &opts, summary(), at).expect("manifest");
    let json = m.to_json_pretty().expect("json");
    assert!(!json.contains("hunter2"), "{json}");
    assert!(json.contains("\"created\": \"2024-05-06T07:08:09Z\""), "{json}");
    assert!(json.contains("\"kind\": \"file\""), "{json}");
    assert_eq!(Manifest::from_json(&json).expect("parse"), m);
    assert_eq!(m.archive_file_name(), "v-20240506T070809Z-a1b2c3.tar.zst");
}

#[test]
fn entry_list_round_trips_every_field() {
    let entries = vec![
        Entry {
            path: "a/b.txt".into(),
            kind: EntryKind::File,
            mode: 0o4755,
            uid: u32::MAX,
            gid: 7,
            size: u64::MAX,
            mtime: -5,
            mtime_nsec: 999_999_999,
            sha256: Some("0f".repeat(32)),
            target: None,
            ino: u64::MAX,
            ctime: i64::MIN,
            ctime_nsec: 999_999_999,
            level: u32::MAX,
            frame_at: u64::MAX,
            frame_len: u64::MAX,
            frame_skip: u32::MAX,
        },
        Entry {
            path: "é/".repeat(200),
            kind: EntryKind::Symlink,
            mode: 0o777,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: i64::MAX,
            mtime_nsec: 0,
            sha256: None,
            target: Some("x".repeat(300)),
            ino: 1,
            ctime: -1,
            ctime_nsec: 0,
            level: 3,
            frame_at: 1,
            frame_len: 2,
            frame_skip: 3,
        },
        Entry {
            path: String::new(),
            kind: EntryKind::Hardlink,
            mode: 0,
            uid: 1,
            gid: 2,
            size: 0,
            mtime: 0,
            mtime_nsec: 1,
            sha256: None,
            target: Some(String::new()),
            ino: 0,
            ctime: 0,
            ctime_nsec: 0,
            level: 0,
            frame_at: 0,
            frame_len: 0,
            frame_skip: 0,
        },
        Entry { kind: EntryKind::Fifo, target: None, ..summary().entries.iter().next().expect("one") },
        Entry { kind: EntryKind::Dir, sha256: None, ..summary().entries.iter().next().expect("one") },
    ];
    let list: EntryList = entries.clone().into_iter().collect();
    assert_eq!(list.len(), entries.len());
    assert_eq!(list.iter().collect::<Vec<_>>(), entries);
    // The heads walk the same entries: each one's start decodes to it.
    let heads: Vec<_> = list.heads().collect();
    assert_eq!(heads.len(), entries.len());
    for (h, e) in heads.iter().zip(&entries) {
        assert_eq!((h.kind, h.ino, h.path), (e.kind, e.ino, e.path.as_bytes()));
        assert_eq!(list.entry_at(h.at).as_ref(), Some(e));
    }
    assert_eq!(list.entry_at(usize::MAX), None);
}

#[test]
fn streamed_manifest_parses_like_the_struct() {
    let opts: BTreeMap<String, String> =
        [("size".to_owned(), "1g".to_owned()), ("passwd".to_owned(), "hunter2".to_owned())].into();
    let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
    let mut s = summary();
    s.notes = vec!["x: socket skipped".into()];
    let head = Manifest::without_entries("v-1", "v", &opts, &s, at).expect("head");
    let mut out = Vec::new();
    head.write_json(&s.entries, &mut out).expect("write");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.ends_with("}\n"), "{text}");
    let m = Manifest::new("v-1", "v", &opts, s, at).expect("manifest");
    assert_eq!(Manifest::from_json(&text).expect("parse"), m);
    // The same document as the struct's own serialization, field for field.
    assert_eq!(text.trim_end(), serde_json::to_string(&m).expect("json"));
    // Entries already in the struct come first.
    let mut two = Vec::new();
    m.write_json(&summary().entries, &mut two).expect("write");
    let parsed = Manifest::from_json(std::str::from_utf8(&two).expect("utf-8")).expect("parse");
    assert_eq!(parsed.entries.len(), 2);
    assert_eq!(parsed.entries[0], m.entries[0]);
    // No entries at all.
    let mut none = Vec::new();
    head.write_json(&EntryList::new(), &mut none).expect("write");
    assert!(Manifest::from_json(std::str::from_utf8(&none).expect("utf-8")).expect("parse").entries.is_empty());
}

#[test]
fn newer_format_refused() {
    let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
    let mut m = Manifest::new("x", "v", &BTreeMap::new(), summary(), at).expect("manifest");
    m.format_version = FORMAT_VERSION + 1;
    let json = m.to_json_pretty().expect("json");
    assert!(matches!(Manifest::from_json(&json), Err(BackupError::ManifestVersion { .. })));
}

#[test]
fn encrypted_names_and_the_stored_object_fields_and_old_manifests_still_parse() {
    let plain = ObjectNames::new("v-1", false);
    assert_eq!(plain.all(), ["v-1.tar.zst", "v-1.manifest.json", "v-1.tar.zst.sha256"]);
    let sealed = ObjectNames::new("v-1", true);
    assert_eq!(sealed.all(), ["v-1.tar.zst.age", "v-1.manifest.json.age", "v-1.tar.zst.age.sha256"]);
    assert_eq!(sealed.checksum_line("ff"), "ff  v-1.tar.zst.age\n");
    assert_eq!(ObjectNames::parse_archive("v-1.tar.zst.age"), Some(("v-1", true)));
    assert_eq!(ObjectNames::parse_archive("v-1.tar.zst"), Some(("v-1", false)));
    assert_eq!(ObjectNames::parse_archive("v-1.tgz"), None);
    let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
    let mut m = Manifest::new("v-1", "v", &BTreeMap::new(), summary(), at).expect("manifest");
    let old = serde_json::to_string(&m).expect("json");
    assert!(!old.contains("encryption") && !old.contains("stored_"), "absent when plain: {old}");
    assert_eq!(m.stored_sha256(), m.archive_sha256);
    m.encryption = Some(Encryption::Age);
    m.stored_size = Some(120);
    m.stored_sha256 = Some("cd".repeat(32));
    let json = serde_json::to_string(&m).expect("json");
    assert!(json.contains("\"encryption\":\"age\"") && json.ends_with("]}"), "{json}");
    assert_eq!(Manifest::from_json(&json).expect("parse"), m);
    assert_eq!(m.archive_file_name(), "v-1.tar.zst.age");
    assert_eq!(m.stored_sha256(), "cd".repeat(32));
    // A manifest written before these fields existed.
    let before: Manifest = Manifest::from_json(&old).expect("old manifest");
    assert_eq!((before.encryption, before.stored_size, before.stored_sha256), (None, None, None));
}

#[test]
fn sha256sum_format_and_id() {
    assert_eq!(sha256sum_line("v-1", "abc"), "abc  v-1.tar.zst\n");
    let at = time::macros::datetime!(2024-05-06 07:08:09 +2);
    assert_eq!(backup_id("data", at, [0xa1, 0xb2, 0xc3]), "data-20240506T050809Z-a1b2c3");
}

/// A 2 GiB manifest (a valid head, then whitespace without end, streamed) stops at the
/// limit with an error naming it, after reading no more than the limit.
#[test]
fn two_gib_manifest_stops_at_the_limit() {
    use std::io::Read;
    let head = br#"{"format_version":1,"id":"v-1","volume":"v","options":{},"created":"x","tool_version":"0","archive_size":0,"archive_sha256":"","files":0,"bytes":0,"entries":["#;
    let body = std::io::repeat(b' ').take(2 << 30);
    let lim = ManifestLimits { bytes: 64 << 20 };
    let e = Manifest::from_reader("v-1.manifest.json", (&head[..]).chain(body), lim).unwrap_err();
    assert!(matches!(&e, BackupError::ManifestTooLarge { limit, .. } if *limit == 64 << 20), "{e}");
    assert!(e.to_string().contains("v-1.manifest.json"), "{e}");
    // Garbage of any size fails at once.
    let zeros = std::io::repeat(0).take(2 << 30);
    assert!(matches!(Manifest::from_reader("z", zeros, ManifestLimits::default()), Err(BackupError::Manifest(_))));
}

#[test]
fn from_reader_reads_what_write_json_writes() {
    let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
    let m = Manifest::new("v-1", "v", &BTreeMap::new(), summary(), at).expect("manifest");
    let json = m.to_json_pretty().expect("json");
    assert_eq!(Manifest::from_reader("m", json.as_bytes(), ManifestLimits::default()).expect("parse"), m);
    let lim = ManifestLimits { bytes: json.len() as u64 - 1 };
    assert!(matches!(Manifest::from_reader("m", json.as_bytes(), lim), Err(BackupError::ManifestTooLarge { .. })));
}

/// A manifest of one endless path string (streamed, 2 GiB) cost memory up to the byte
/// limit (1 GiB), as serde_json gathers a string whole: it stops at the string limit now,
/// naming the manifest and where the string starts.
#[test]
fn endless_string_in_a_manifest_stops_at_the_string_limit() {
    use std::io::Read;
    let head = br#"{"format_version":1,"id":"v-1","volume":"v","options":{},"created":"x","tool_version":"0","archive_size":0,"archive_sha256":"","files":0,"bytes":0,"entries":[{"path":""#;
    let body = std::io::repeat(b'a').take(2 << 30);
    let mut input = Counted((&head[..]).chain(body), 0);
    let e = Manifest::from_reader("v-1.manifest.json", &mut input, ManifestLimits::default()).unwrap_err();
    // `at` is the string's opening quote.
    let quote = head.len() as u64 - 1;
    assert!(
        matches!(&e, BackupError::ManifestString { at, limit, .. } if *at == quote && *limit == MAX_MANIFEST_STRING),
        "{e}"
    );
    assert!(e.to_string().contains("v-1.manifest.json"), "{e}");
    assert!(input.1 < 4 << 20, "read {} bytes before refusing", input.1);
}

/// Strings up to the limit parse, escapes included (an escaped quote does not end one).
#[test]
fn strings_up_to_the_limit_and_escaped_quotes_parse() {
    let at = time::macros::datetime!(2024-05-06 07:08:09 UTC);
    let mut m = Manifest::new("v-1", "v", &BTreeMap::new(), summary(), at).expect("manifest");
    m.entries[0].path = format!("{}\"{}", "p".repeat(1000), "q".repeat(1000));
    m.notes = vec!["n".repeat(MAX_MANIFEST_STRING as usize)];
    let json = serde_json::to_string(&m).expect("json");
    assert_eq!(Manifest::from_reader("m", json.as_bytes(), ManifestLimits::default()).expect("parse"), m);
    m.notes = vec!["n".repeat(MAX_MANIFEST_STRING as usize + 1)];
    let json = serde_json::to_string(&m).expect("json");
    let e = Manifest::from_reader("m", json.as_bytes(), ManifestLimits::default()).unwrap_err();
    assert!(matches!(e, BackupError::ManifestString { .. }), "{e}");
}

/// A reader counting the bytes it gave.
struct Counted<R>(R, u64);

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(out)?;
        self.1 += n as u64;
        Ok(n)
    }
}
