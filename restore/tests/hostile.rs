//! The hostile-archive corpus: every archive here tries to write outside the staging
//! directory or to overrun it; each must be refused with a clear message, with nothing
//! written outside the directory.

use std::io::Write;
use std::path::Path;

use voltool_restore::{ExtractOptions, RestoreError, extract, open_archive};

fn raw(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) {
    voltool_restore::extract::append_raw_entry(b, name, kind, data, link);
}

fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().expect("finish")
}

/// A scratch tree: `outside/` holds a sentinel, `outside/stage/` is where extraction goes.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("stage")).expect("stage");
        std::fs::write(dir.path().join("sentinel"), "untouched").expect("sentinel");
        Scratch { dir }
    }

    fn stage(&self) -> std::path::PathBuf {
        self.dir.path().join("stage")
    }

    /// Nothing but `stage/` and the sentinel next to it, and the sentinel unchanged.
    fn assert_nothing_outside(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("ls")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["sentinel", "stage"]);
        assert_eq!(std::fs::read_to_string(self.dir.path().join("sentinel")).expect("read"), "untouched");
    }
}

fn run(bytes: &[u8], opts: &ExtractOptions) -> (Scratch, Result<voltool_restore::ExtractReport, RestoreError>) {
    let s = Scratch::new();
    let r = open_archive(bytes).and_then(|(_, r)| extract(r, &s.stage(), opts));
    (s, r)
}

fn refused(bytes: &[u8], want: &str) {
    let (s, r) = run(bytes, &ExtractOptions::default());
    let e = r.expect_err(want).to_string();
    assert!(e.contains(want), "want {want:?} in: {e}");
    s.assert_nothing_outside();
}

#[test]
fn parent_dir_escape_is_refused() {
    refused(&archive(|b| raw(b, b"../../etc/x", tar::EntryType::Regular, b"evil", b"")), "'..'");
    refused(&archive(|b| raw(b, b"ok/../../x", tar::EntryType::Regular, b"evil", b"")), "'..'");
}

#[test]
fn absolute_path_is_refused() {
    refused(&archive(|b| raw(b, b"/etc/x", tar::EntryType::Regular, b"evil", b"")), "absolute path");
}

#[test]
fn write_through_a_symlink_is_refused() {
    let a = archive(|b| {
        raw(b, b"a", tar::EntryType::Symlink, b"", b"/etc");
        raw(b, b"a/passwd", tar::EntryType::Regular, b"root::0:0::/:/bin/sh\n", b"");
    });
    refused(&a, "through the symlink");
    // Also a relative symlink that climbs out, and a directory entry through it.
    let a = archive(|b| {
        raw(b, b"up", tar::EntryType::Symlink, b"", b"../..");
        raw(b, b"up/dir/", tar::EntryType::Directory, b"", b"");
    });
    refused(&a, "through the symlink");
}

#[test]
fn regression_a_directory_entry_over_a_symlink_was_called_a_file() {
    // The symlink may also be one a container planted in the staging directory
    // (tests/hostile_restore.rs): the refusal says what is there.
    let a = archive(|b| {
        raw(b, b"up", tar::EntryType::Symlink, b"", b"../..");
        raw(b, b"up", tar::EntryType::Directory, b"", b"");
    });
    refused(&a, "where a symlink is");
}

#[test]
fn hardlink_outside_is_refused() {
    refused(&archive(|b| raw(b, b"pw", tar::EntryType::Link, b"", b"/etc/passwd")), "hard link");
    refused(&archive(|b| raw(b, b"pw", tar::EntryType::Link, b"", b"../../etc/passwd")), "hard link");
    // A link to a name this archive never extracted (an existing file must not be reachable).
    refused(&archive(|b| raw(b, b"pw", tar::EntryType::Link, b"", b"sentinel")), "not a file extracted earlier");
}

#[test]
fn device_nodes_are_refused_unless_allowed() {
    let a = archive(|b| raw(b, b"null", tar::EntryType::Char, b"", b""));
    refused(&a, "device node");
}

#[test]
fn a_file_bigger_than_the_limit_is_refused_before_it_is_written() {
    let big = vec![7u8; 3 << 20];
    let a = archive(|b| {
        raw(b, b"small", tar::EntryType::Regular, b"fits", b"");
        raw(b, b"big", tar::EntryType::Regular, &big, b"");
    });
    let (s, r) = run(&a, &ExtractOptions { max_bytes: Some(1 << 20), ..Default::default() });
    let e = r.expect_err("too large").to_string();
    assert!(e.contains("\"big\"") && e.contains("size limit"), "{e}");
    assert!(!s.stage().join("big").exists(), "nothing of the big file was written");
    s.assert_nothing_outside();
}

#[test]
fn truncated_and_corrupt_streams_fail() {
    let data = vec![1u8; 100_000];
    let a = archive(|b| raw(b, b"f", tar::EntryType::Regular, &data, b""));
    // Plain tar cut in the middle of the file.
    let (s, r) = run(&a[..60_000], &ExtractOptions::default());
    let e = r.expect_err("truncated").to_string();
    assert!(e.contains("reading the archive"), "{e}");
    s.assert_nothing_outside();
    // zstd: cut, and one byte flipped in the frame.
    let z = zstd::encode_all(&a[..], 3).expect("zstd");
    let (_, r) = run(&z[..z.len() / 2], &ExtractOptions::default());
    assert!(r.expect_err("truncated zstd").to_string().contains("reading the archive"));
    let mut bad = z.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xFF;
    let (s, r) = run(&bad, &ExtractOptions::default());
    assert!(r.is_err(), "a corrupt zstd frame must fail");
    s.assert_nothing_outside();
    // Not an archive at all.
    let (_, r) = run(b"hello, this is not a tar file at all, just some text that goes on", &ExtractOptions::default());
    assert!(r.expect_err("text").to_string().contains("not a tar"));
}

#[test]
fn plain_gzip_and_zstd_archives_restore_the_same_tree() {
    let src = tempfile::tempdir().expect("src");
    std::fs::create_dir_all(src.path().join("d/e")).expect("mkdir");
    std::fs::write(src.path().join("d/e/f.txt"), "content\n").expect("write");
    std::os::unix::fs::symlink("e/f.txt", src.path().join("d/link")).expect("symlink");
    std::fs::hard_link(src.path().join("d/e/f.txt"), src.path().join("hard")).expect("link");
    // GNU tar, as the seed recipes make them: `tar czf x.tar.gz -C /data .`
    for (flag, name) in [("", "x.tar"), ("z", "x.tar.gz"), ("--zstd", "x.tar.zst")] {
        let out = src.path().parent().expect("parent").join(format!("{}-{name}", std::process::id()));
        let mut cmd = std::process::Command::new("tar");
        cmd.arg("-c");
        if !flag.is_empty() {
            cmd.arg(if flag == "z" { "-z" } else { flag });
        }
        let st = cmd.arg("-f").arg(&out).arg("-C").arg(src.path()).arg(".").status().expect("tar");
        assert!(st.success());
        let bytes = std::fs::read(&out).expect("read");
        let _ = std::fs::remove_file(&out);
        let (s, r) = run(&bytes, &ExtractOptions::default());
        let rep = r.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rep.files, 1, "{name}");
        assert_eq!(std::fs::read_to_string(s.stage().join("d/e/f.txt")).expect("f"), "content\n");
        assert_eq!(std::fs::read_link(s.stage().join("d/link")).expect("l"), Path::new("e/f.txt"));
        assert_eq!(std::fs::read_to_string(s.stage().join("hard")).expect("hard"), "content\n");
        s.assert_nothing_outside();
    }
}

#[test]
fn strip_components_drops_the_leading_directory() {
    let a = archive(|b| {
        raw(b, b"data/", tar::EntryType::Directory, b"", b"");
        raw(b, b"data/f", tar::EntryType::Regular, b"x", b"");
    });
    let (s, r) = run(&a, &ExtractOptions { strip_components: 1, ..Default::default() });
    r.expect("strip");
    assert_eq!(std::fs::read(s.stage().join("f")).expect("f"), b"x");
    let _ = std::io::stdout().flush();
}
