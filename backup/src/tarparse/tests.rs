//! The tar reader's tests: what it reads, and what it refuses.

use super::fields::num;
use super::*;

/// Appends a pax `x` header with these records.
fn pax(b: &mut tar::Builder<Vec<u8>>, recs: &[(&str, &[u8])]) {
    let data: Vec<u8> = recs.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
}

/// Parses what the `tar` crate's builder writes, entry by entry, the same way the `tar`
/// crate reads it.
#[test]
fn reads_what_the_tar_crate_writes_as_the_tar_crate_does() {
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_uid(1000);
    h.set_gid(3_000_000);
    h.set_mtime(1_700_000_000);
    h.set_size(5);
    b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "ln", "x".repeat(150)).unwrap();
    pax(&mut b, &[("mtime", b"12.5"), ("SCHILY.xattr.user.k", b"v\0w")]);
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o600);
    h.set_mtime(1);
    b.append_data(&mut h, "p/q", &b"abc"[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    b.append_data(&mut h, "dir/", &[][..]).unwrap();
    let bytes = b.into_inner().unwrap();

    let mut ours = TarReader::new(&bytes[..]);
    let mut theirs = tar::Archive::new(&bytes[..]);
    for e in theirs.entries().unwrap() {
        let mut e = e.unwrap();
        let h = ours.next_entry().unwrap().expect("an entry");
        assert_eq!(h.path, e.path_bytes().as_ref());
        assert_eq!(Some(&h.link[..]), e.link_name_bytes().as_deref().or(Some(&[][..])));
        assert_eq!(h.size, e.size());
        assert_eq!(h.mode, e.header().mode().ok());
        assert_eq!(h.uid, e.header().uid().ok());
        assert_eq!(h.gid, e.header().gid().ok());
        let mut want = Vec::new();
        e.read_to_end(&mut want).unwrap();
        let mut got = Vec::new();
        ours.contents().read_to_end(&mut got).unwrap();
        assert_eq!(got, want);
    }
    assert!(ours.next_entry().unwrap().is_none());
    assert_eq!(ours.count(), 4);
    // The pax records applied to "p/q" only.
    let mut again = TarReader::new(&bytes[..]);
    let mut seen = Vec::new();
    while let Some(h) = again.next_entry().unwrap() {
        seen.push((String::from_utf8(h.path).unwrap(), h.mtime, h.xattrs));
    }
    assert_eq!(seen[2], ("p/q".into(), Some((12, 500_000_000)), vec![("user.k".into(), b"v\0w".to_vec())]));
    assert_eq!(seen[3].1, Some((0, 0)), "the directory has its own (zero) mtime");
}

#[test]
fn damaged_and_truncated_streams_are_errors() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(1000);
    h.set_mode(0o644);
    b.append_data(&mut h, "f", &[7u8; 1000][..]).unwrap();
    let bytes = b.into_inner().unwrap();
    // A flipped header byte: the checksum catches it.
    let mut flipped = bytes.clone();
    flipped[3] ^= 1;
    let e = TarReader::new(&flipped[..]).next_entry().unwrap_err();
    assert!(matches!(e, TarError::Damaged { at: At::Offset(0), .. }), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
    // Cut inside the header, inside the contents, inside the padding.
    for cut in [100, 700, 1500] {
        let mut t = TarReader::new(&bytes[..cut]);
        let r = t.next_entry().and_then(|h| {
            let mut v = Vec::new();
            t.contents().read_to_end(&mut v)?;
            if h.is_some_and(|h| v.len() as u64 != h.size) {
                return Err(TarError::Truncated { what: "the test's entry", offset: 0 });
            }
            t.next_entry()
        });
        assert!(r.is_err(), "cut at {cut}");
    }
    // A pax record asking for gigabytes is refused before anything is allocated.
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(1 << 40);
    h.set_cksum();
    let mut huge = h.as_bytes().to_vec();
    huge.extend_from_slice(&[0u8; 1024]);
    let e = TarReader::new(&huge[..]).next_entry().unwrap_err();
    assert_eq!(e.limit(), Some(Limit::MetaRecord), "{e}");
    assert!(e.to_string().contains("extended header"), "{e}");
}

#[test]
fn pax_times_parse_with_floor_semantics() {
    assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
    assert_eq!(parse_pax_time("-1.25"), Some((-2, 750_000_000)));
    assert_eq!(parse_pax_time("-0.5"), Some((-1, 500_000_000)));
    assert_eq!(parse_pax_time("-3"), Some((-3, 0)));
    assert_eq!(parse_pax_time("x"), None);
    assert_eq!(parse_pax_time("1.2x"), None);
}

#[test]
fn numbers_in_octal_and_base_256() {
    assert_eq!(num(b"0000644\0"), Some(0o644));
    assert_eq!(num(b"   755 \0"), Some(0o755));
    assert_eq!(num(b"\0\0\0\0"), None);
    assert_eq!(num(b"0\0\0\0"), Some(0));
    assert_eq!(num(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]), Some(2u64 << 32));
    assert_eq!(num(b"12x4"), None);
    assert_eq!(num(&[0xff; 8]), None);
}

/// A pax `x` header block and its data, as raw bytes (one unit a hostile stream repeats).
fn pax_unit(recs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    pax(&mut b, recs);
    let mut v = b.into_inner().unwrap();
    v.truncate(v.len() - 1024); // the end-of-archive blocks
    v
}

/// Repeats `unit` forever, counting the bytes handed out.
struct Endless {
    unit: Vec<u8>,
    at: usize,
    given: u64,
}

impl Read for Endless {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(self.unit.len() - self.at);
        out[..n].copy_from_slice(&self.unit[self.at..self.at + n]);
        self.at = (self.at + n) % self.unit.len();
        self.given += n as u64;
        Ok(n)
    }
}

type Records = Vec<(String, Vec<u8>)>;

fn xattr_records(n: usize, value: &[u8]) -> Records {
    (0..n).map(|i| (format!("SCHILY.xattr.user.a{i}"), value.to_vec())).collect()
}

fn as_recs(v: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect()
}

/// The attack of issue 12: consecutive pax headers full of xattr records grew the daemon to
/// 616 MiB. An endless run of them now stops at the headers-in-a-row limit, after at most
/// `meta_bytes` of them were read.
#[test]
fn pax_header_flood_stops_at_the_limit() {
    let recs = xattr_records(40, &[b'v'; 100]);
    let unit = pax_unit(&as_recs(&recs));
    let mut input = io::BufReader::new(Endless { unit, at: 0, given: 0 });
    let mut t = TarReader::new(&mut input);
    let e = t.next_entry().unwrap_err();
    assert!(matches!(e.limit(), Some(Limit::Xattrs | Limit::MetaHeaders)), "{e}");
    assert!(e.to_string().contains("the header at offset"), "{e}");
    let given = input.get_ref().given;
    assert!(given < 4 << 20, "read {given} bytes before refusing");
}

/// 100,000 headers in a row, each without records: refused at the count limit.
#[test]
fn hundred_thousand_pax_headers_are_refused() {
    let unit = pax_unit(&[("comment", b"x")]);
    let stream: Vec<u8> = unit.repeat(100_000);
    let e = TarReader::new(&stream[..]).next_entry().unwrap_err();
    assert_eq!(e.limit(), Some(Limit::MetaHeaders), "{e}");
    assert!(e.to_string().contains("more than 64 extended headers in a row"), "{e}");
}

/// 100,000 xattr records for one entry (in headers within the size limits): refused at the
/// xattr count, naming the entry once a `path` record named it.
#[test]
fn hundred_thousand_xattr_records_are_refused_naming_the_entry() {
    let recs = xattr_records(20_000, b"");
    let mut all: Vec<(&str, &[u8])> = vec![("path", b"victim/file")];
    all.extend(as_recs(&recs));
    let mut stream = pax_unit(&all);
    for _ in 0..4 {
        stream.extend(pax_unit(&as_recs(&recs)));
    }
    let e = TarReader::new(&stream[..]).next_entry().unwrap_err();
    assert_eq!(e.limit(), Some(Limit::Xattrs), "{e}");
    assert!(matches!(&e, TarError::TooLarge { at: At::Entry(p), .. } if p == "victim/file"), "{e}");
}

#[test]
fn xattr_names_values_and_totals_are_bounded() {
    let lim = Limits::default();
    let cases: Vec<(Records, Limit)> = vec![
        (vec![(format!("SCHILY.xattr.user.{}", "n".repeat(300)), b"v".to_vec())], Limit::XattrName),
        (vec![("SCHILY.xattr.user.big".into(), vec![b'v'; (64 << 10) + 1])], Limit::XattrValue),
        (xattr_records(20, &[b'v'; 60 << 10]), Limit::XattrTotal),
    ];
    for (recs, want) in cases {
        let mut stream = Vec::new();
        // The total case needs two headers (each under the 1 MiB record limit).
        let half = recs.len().div_ceil(2);
        for part in recs.chunks(half) {
            stream.extend(pax_unit(&as_recs(part)));
        }
        let e = TarReader::with_limits(&stream[..], lim).next_entry().unwrap_err();
        assert_eq!(e.limit(), Some(want), "{e}");
    }
}

#[test]
fn pax_record_count_is_bounded() {
    let lim = Limits { pax_records: 100, ..Limits::default() };
    let recs: Records = (0..101).map(|i| (format!("comment{i}"), b"x".to_vec())).collect();
    let stream = pax_unit(&as_recs(&recs));
    let e = TarReader::with_limits(&stream[..], lim).next_entry().unwrap_err();
    assert_eq!(e.limit(), Some(Limit::PaxRecords), "{e}");
}

#[test]
fn long_paths_and_link_targets_are_bounded() {
    let lim = Limits { path: 1000, ..Limits::default() };
    let long = "p".repeat(1001);
    // A pax path, a pax linkpath, a GNU long name.
    let pax_path = pax_unit(&[("path", long.as_bytes())]);
    let pax_link = pax_unit(&[("linkpath", long.as_bytes())]);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    b.append_data(&mut h, &long, &[][..]).unwrap();
    let gnu = b.into_inner().unwrap();
    for stream in [pax_path, pax_link, gnu] {
        let e = TarReader::with_limits(&stream[..], lim).next_entry().unwrap_err();
        assert_eq!(e.limit(), Some(Limit::Path), "{e}");
    }
    // At the limit it is read.
    let ok = "q".repeat(1000);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    b.append_data(&mut h, &ok, &[][..]).unwrap();
    let bytes = b.into_inner().unwrap();
    let h = TarReader::with_limits(&bytes[..], lim).next_entry().unwrap().unwrap();
    assert_eq!(h.path, ok.as_bytes());
}

#[test]
fn entry_count_is_bounded() {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..4 {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, format!("f{i}"), &[][..]).unwrap();
    }
    let bytes = b.into_inner().unwrap();
    let mut t = TarReader::with_limits(&bytes[..], Limits { entries: 3, ..Limits::default() });
    for _ in 0..3 {
        t.next_entry().unwrap().unwrap();
    }
    let e = t.next_entry().unwrap_err();
    assert_eq!(e.limit(), Some(Limit::Entries), "{e}");
    assert!(e.to_string().contains("entry \"f3\""), "{e}");
}

/// What real archives carry is well within the defaults: 200 xattrs of 1 KiB, a 4000-byte
/// path, a few extended headers in a row.
#[test]
fn real_archives_are_within_the_default_limits() {
    let mut b = tar::Builder::new(Vec::new());
    let recs = xattr_records(200, &[b'v'; 1024]);
    pax(&mut b, &[("comment", b"made by hand")]);
    pax(&mut b, &as_recs(&recs));
    let long = "d/".repeat(2000);
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    b.append_data(&mut h, format!("{long}f"), &b"hi"[..]).unwrap();
    let bytes = b.into_inner().unwrap();
    let h = TarReader::new(&bytes[..]).next_entry().unwrap().unwrap();
    assert_eq!(h.xattrs.len(), 200);
    assert_eq!(h.path.len(), 4001);
}

/// A record's length counts its own digits, also where adding them adds a digit (9 → 11).
#[test]
fn pax_record_length_counts_itself() {
    for n in 0..1200 {
        let r = pax_record("k", &vec![b'v'; n]);
        let (len, _) = std::str::from_utf8(&r).unwrap().split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), r.len(), "value of {n} bytes");
    }
    let mut b = tar::Builder::new(Vec::new());
    pax(&mut b, &[("path", &[b'p'; 93])]); // a 100-byte record
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_cksum();
    b.append_data(&mut h, "x", &[][..]).unwrap();
    let data = b.into_inner().unwrap();
    let got = TarReader::new(&data[..]).next_entry().unwrap().unwrap();
    assert_eq!(got.path, vec![b'p'; 93]);
}
