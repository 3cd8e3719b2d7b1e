//! Hostile input at the daemon (SPEC §6, issue 12): archives, manifests and migration streams
//! whose headers claim or repeat far more than any real one, given to a running daemon
//! through the CLI. Each must be refused with an error naming what was wrong, leave the volume
//! as it was, and cost the daemon little memory: its peak RSS (`VmHWM`) stays under
//! [`RSS_BOUND_MIB`] (the attack of issue 12 reached 616 MiB with a 64 KiB archive).

mod common;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The daemon's peak resident memory after any of these inputs.
const RSS_BOUND_MIB: u64 = 256;

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "command failed: {}", stderr(o));
    stdout(o)
}

/// The peak resident set size of process `pid`, in MiB (`VmHWM` in /proc/PID/status).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib >> 10
}

fn assert_rss_bounded(d: &Daemon, case: &str) {
    let peak = peak_rss_mib(d.pid());
    println!("{case}: daemon peak RSS {peak} MiB");
    assert!(peak < RSS_BOUND_MIB, "{case}: the daemon's peak RSS reached {peak} MiB (bound {RSS_BOUND_MIB} MiB)");
}

/// A pax extended header (`x`) holding `recs`, padded to whole blocks.
fn pax_header(recs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let data: Vec<u8> = recs.iter().flat_map(|(k, v)| voltool_backup::tarparse::pax_record(k, v)).collect();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders/x").expect("path");
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A regular file entry, then the end-of-archive blocks.
fn file_and_end(path: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, content).expect("append");
    b.into_inner().expect("finish")
}

/// Writes `parts` (each repeated its count of times) as one zstd stream to `path`.
fn write_zst(path: &Path, parts: &[(&[u8], usize)]) {
    let mut z = zstd::Encoder::new(std::fs::File::create(path).expect("create"), 3).expect("zstd");
    for (bytes, times) in parts {
        for _ in 0..*times {
            z.write_all(bytes).expect("write");
        }
    }
    z.finish().expect("finish").sync_all().expect("sync");
}

/// A volume holding one file, mounted by the test; returns its root and its tree.
fn victim(d: &Daemon, vol: &str) -> (PathBuf, std::collections::BTreeMap<String, Meta>) {
    ok(&d.cli(&["volume", "create", vol]));
    let root = PathBuf::from(ok(&d.cli(&["volume", "mount", vol, "--id", "t"])));
    std::fs::create_dir_all(root.join("keep")).expect("mkdir");
    std::fs::write(root.join("keep/file.txt"), "precious\n").expect("write");
    let before = tree(&root);
    (root, before)
}

/// `voltool restore VOL --from FROM --force` must fail saying each of `want`, and leave the
/// volume as it was.
fn refused(d: &Daemon, vol: &str, from: &str, want: &[&str]) -> String {
    let o = d.cli(&["restore", vol, "--from", from, "--force"]);
    assert!(!o.status.success(), "{from}: must be refused");
    let msg = stderr(&o);
    for w in want {
        assert!(msg.contains(w), "{from}: want {w:?} in: {msg}");
    }
    msg
}

/// 100,000 pax headers in a row before any entry (the issue-12 attack, 100 MiB of headers in
/// a ~100 KiB .tar.zst): refused at the headers-in-a-row limit, naming the header's offset.
#[test]
fn hundred_thousand_pax_headers_are_refused_with_little_memory() {
    let d = Daemon::start();
    let (root, before) = victim(&d, "pax-flood");
    let unit = pax_header(&[("comment".into(), vec![b'c'; 400])]);
    let file = d.dir.path().join("pax-flood.tar.zst");
    write_zst(&file, &[(&unit, 100_000), (&file_and_end("evil.txt", b"evil"), 1)]);
    let msg = refused(&d, "pax-flood", file.to_str().expect("utf8"), &["extended headers in a row", "offset"]);
    println!("pax flood: {msg}");
    assert_eq!(tree(&root), before, "the volume is unchanged");
    assert_rss_bounded(&d, "100k pax headers");
    ok(&d.cli(&["volume", "unmount", "pax-flood", "--id", "t"]));
}

/// 100,000 xattr records for one entry, spread over headers each within the record limit:
/// refused at the xattrs-per-entry limit, naming the entry; an import of it creates nothing.
#[test]
fn hundred_thousand_xattr_records_are_refused_naming_the_entry() {
    let d = Daemon::start();
    let (root, before) = victim(&d, "xattr-flood");
    let recs = |from: usize| -> Vec<(String, Vec<u8>)> {
        (from..from + 20_000).map(|i| (format!("SCHILY.xattr.user.a{i}"), b"v".to_vec())).collect()
    };
    let mut first = vec![("path".to_string(), b"victim/file".to_vec())];
    first.extend(recs(0));
    let mut stream = pax_header(&first);
    for k in 1..5 {
        stream.extend(pax_header(&recs(k * 20_000)));
    }
    let file = d.dir.path().join("xattr-flood.tar.zst");
    write_zst(&file, &[(&stream, 1), (&file_and_end("victim/file", b"x"), 1)]);
    let msg = refused(&d, "xattr-flood", file.to_str().expect("utf8"), &["victim/file", "xattr"]);
    println!("xattr flood (restore): {msg}");
    assert_eq!(tree(&root), before, "the volume is unchanged");

    let o = Command::new(bin())
        .args(["import", "xattr-import"])
        .env("VOLTOOL_API_SOCKET", Daemon::paths(d.dir.path()).2)
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("import");
    assert!(!o.status.success(), "the import must be refused");
    assert!(stderr(&o).contains("victim/file"), "names the entry: {}", stderr(&o));
    let vols = ok(&d.cli(&["volume", "ls", "-q"]));
    assert!(!vols.lines().any(|l| l == "xattr-import"), "a refused import leaves no volume: {vols}");
    assert_rss_bounded(&d, "100k xattr records");
    ok(&d.cli(&["volume", "unmount", "xattr-flood", "--id", "t"]));
}

/// Streams a 2 GiB manifest into the FIFO `fifo` (never stored: written as it is read): a
/// head as voltool writes it, then one path string that never ends. Stops when the reader
/// goes away; returns the bytes written.
fn stream_endless_manifest(fifo: PathBuf) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) else { return 0 };
        let head = "{\"format_version\":1,\"id\":\"m-20260101T000000Z-000000\",\"volume\":\"m\",\"options\":{},\
             \"created\":\"2026-01-01T00:00:00Z\",\"tool_version\":\"0\",\"archive_size\":0,\"archive_sha256\":\"\",\
             \"files\":1,\"bytes\":1,\"entries\":[{\"path\":\"";
        let fill = vec![b'a'; 1 << 20];
        let mut sent = 0u64;
        if f.write_all(head.as_bytes()).is_err() {
            return sent;
        }
        while sent < 2 << 30 {
            if f.write_all(&fill).is_err() {
                break; // EPIPE: the daemon stopped reading
            }
            sent += fill.len() as u64;
        }
        sent
    })
}

/// A restore from an archive URL whose manifest is 2 GiB of one string: serde_json gathers a
/// string whole, so this cost the daemon memory up to the manifest limit (1 GiB). The parser
/// stops at the string limit with an error naming the manifest; the volume is unchanged.
/// (A manifest of valid JSON up to the size limit is `two_gib_manifest_stops_at_the_limit`
/// in voltool-backup: 1 GiB through a debug build's parser takes minutes.)
#[test]
fn two_gib_manifest_of_one_string_is_refused_with_little_memory() {
    let d = Daemon::start();
    let (root, before) = victim(&d, "big-manifest");
    let dir = tempfile::tempdir().expect("tmp");
    let id = "m-20260101T000000Z-000000";
    let archive = dir.path().join(format!("{id}.tar.zst"));
    write_zst(&archive, &[(&file_and_end("f", b"x"), 1)]);
    let fifo = dir.path().join(format!("{id}.manifest.json"));
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let writer = stream_endless_manifest(fifo.clone());
    // As a URL: the daemon reads the archive and the manifest next to it from the target.
    let url = format!("file://{}", archive.display());
    let msg = refused(&d, "big-manifest", &url, &[&format!("{id}.manifest.json"), "a string longer than"]);
    // Release a writer still waiting for a reader (if the daemon never opened the FIFO).
    let _ = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(&fifo);
    let sent = writer.join().expect("writer");
    println!("endless string: {msg} ({} MiB of manifest read)", sent >> 20);
    assert!(sent < 64 << 20, "the daemon read {} MiB of the manifest", sent >> 20);
    assert_eq!(tree(&root), before, "the volume is unchanged");
    assert_rss_bounded(&d, "2 GiB manifest of one string");
    ok(&d.cli(&["volume", "unmount", "big-manifest", "--id", "t"]));
}

/// One frame: type, 4-byte big-endian length (claimed, not necessarily sent), payload.
fn frame(kind: u8, claimed: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&claimed.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// `voltool receive VOL` (what ssh runs on the remote) fed a stream whose frame header claims
/// far more than it carries: refused as soon as the header is read (over the frame limit) or
/// when the stream ends (within it), holding only the bytes that arrived; nothing is left.
#[test]
fn migration_frames_claiming_huge_lengths_are_refused_with_little_memory() {
    let d = Daemon::start();
    let offer = "{\"protocol\":2,\"volume\":\"src\",\"options\":{},\"secrets\":[]}\n";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("data-4g", frame(b'D', u32::MAX, b"abc"), "larger than allowed"),
        ("manifest-4g", frame(b'M', u32::MAX, b"{}"), "larger than allowed"),
        ("zstd-manifest-4g", frame(b'Z', u32::MAX, b""), "larger than allowed"),
        ("manifest-1g-sent-1k", frame(b'M', 1 << 30, &[b' '; 1024]), "stream ended"),
    ];
    for (name, frames, want) in cases {
        let vol = format!("recv-{name}");
        let o = d.cli_stdin(&["receive", &vol], &[offer.as_bytes(), &frames[..]].concat());
        let said = format!("{}{}", stdout(&o), stderr(&o));
        assert!(!o.status.success(), "{name}: must be refused: {said}");
        assert!(said.contains(want), "{name}: want {want:?} in: {said}");
        println!("{name}: {}", said.trim());
        let vols = ok(&d.cli(&["volume", "ls", "-q"]));
        assert!(!vols.lines().any(|l| l == vol), "{name}: a refused stream leaves no volume: {vols}");
        assert_rss_bounded(&d, name);
    }
}

/// A migration's `Z` manifest frame of ~40 KiB expanding to ~1 GiB of JSON (within the
/// 1 GiB limit): the receiving daemon parses it as it is decompressed
/// (`Trailer::into_reader`, `Manifest::from_reader`) and holds none of it whole. Before, it held
/// all of it (1071 MiB measured).
#[test]
fn regression_zstd_manifest_bomb_in_a_migration_held_a_gigabyte() {
    let d = Daemon::start();
    let offer = "{\"protocol\":2,\"volume\":\"src\",\"options\":{},\"secrets\":[]}\n";
    let archive = zstd::encode_all(&file_and_end("f", b"x")[..], 3).expect("zstd");
    let head = "{\"format_version\":1,\"id\":\"src-20260101T000000Z-000000\",\"volume\":\"src\",\"options\":{},\
        \"created\":\"2026-01-01T00:00:00Z\",\"tool_version\":\"0\",\"archive_size\":0,\"archive_sha256\":\"\",\
        \"files\":1,\"bytes\":1,\"entries\":[";
    let mut z = zstd::Encoder::new(Vec::new(), 19).expect("zstd");
    z.write_all(head.as_bytes()).expect("write");
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..1000 {
        z.write_all(&spaces).expect("write");
    }
    z.write_all(b"]}").expect("write");
    let bomb = z.finish().expect("zstd");
    println!("bomb: {} KiB expanding to ~1000 MiB", bomb.len() >> 10);
    let mut stream = frame(b'D', archive.len() as u32, &archive);
    stream.extend(frame(b'Z', bomb.len() as u32, &bomb));
    let o = d.cli_stdin(&["receive", "recv-bomb"], &[offer.as_bytes(), &stream[..]].concat());
    let said = format!("{}{}", stdout(&o), stderr(&o));
    println!("bomb: {}", said.trim());
    assert!(!o.status.success(), "the manifest does not match the data: {said}");
    assert_rss_bounded(&d, "zstd manifest bomb");
}
