//! End-to-end: build a tree, archive it, verify it, restore it with stock zstd + GNU tar.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use voltool_backup::{
    ArchiveOptions, BackupError, EntryKind, Manifest, sha256sum_line, verify_archive, verify_archive_loading,
    write_archive,
};

mod walk;

const FIXED_MTIME: i64 = 1_600_000_000;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Deterministic pseudo-random bytes (xorshift64), so no rand dependency is needed.
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn set_mtime(p: &Path, secs: i64, nsec: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nsec);
    filetime::set_symlink_file_times(p, t, t).expect("set mtime");
}

/// The tree the brief asks for, plus long names, an xattr and (as root) a device and a socket.
fn build_tree(root: &Path) {
    let deep = root.join("a/b/c");
    fs::create_dir_all(&deep).expect("mkdir");
    fs::write(deep.join("deep.txt"), b"hello from deep\n").expect("write");
    fs::write(root.join("a/big.bin"), random_bytes(3 << 20, 0x9e37_79b9_7f4a_7c15)).expect("write big");
    File::create(root.join("a/empty")).expect("empty");
    fs::set_permissions(root.join("a/empty"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o750)).expect("chmod");
    symlink("a/big.bin", root.join("link")).expect("symlink");
    symlink("does/not/exist", root.join("dangling")).expect("symlink");
    fs::hard_link(deep.join("deep.txt"), root.join("hard")).expect("hard link");
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).expect("mkfifo");
    fs::create_dir(root.join("emptydir")).expect("mkdir");
    let long_dir = root.join("l".repeat(120));
    fs::create_dir(&long_dir).expect("mkdir long");
    let long_file = long_dir.join("f".repeat(150));
    fs::write(&long_file, b"long name").expect("write long");
    symlink(format!("../{}", "t".repeat(180)), root.join("longtarget")).expect("symlink long");
    fs::write(root.join("exec.sh"), b"#!/bin/sh\n").expect("write");
    fs::set_permissions(root.join("exec.sh"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    let _ = xattr::set(root.join("exec.sh"), "user.voltool", b"yes");
    if is_root() {
        let own = |p: &Path| {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                p,
                Some(nix::unistd::Uid::from_raw(1234)),
                Some(nix::unistd::Gid::from_raw(5678)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .expect("chown")
        };
        own(&root.join("a"));
        own(&root.join("a/empty"));
        own(&root.join("link"));
        own(&deep.join("deep.txt"));
        let dev = root.join("null-dev");
        nix::sys::stat::mknod(
            &dev,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 3),
        )
        .expect("mknod");
        std::os::unix::net::UnixListener::bind(root.join("sock")).expect("socket");
    }
    // mtimes last, deepest first, so creating children does not move them again.
    set_mtime(&root.join("a/big.bin"), FIXED_MTIME, 0);
    set_mtime(&deep.join("deep.txt"), FIXED_MTIME + 1, 123_456_789);
    set_mtime(&root.join("link"), FIXED_MTIME + 2, 0);
    set_mtime(&long_file, FIXED_MTIME + 3, 1);
    for d in ["a/b/c", "a/b", "a", "emptydir"] {
        set_mtime(&root.join(d), FIXED_MTIME + 10, 500);
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    target: Option<PathBuf>,
    sha: Option<String>,
    ino: u64,
}

/// Everything a restore must reproduce, keyed by relative path. Devices and sockets are left
/// out (the archive skips them); `ino` is replaced by the first path sharing it.
fn snapshot(root: &Path) -> BTreeMap<String, (Node, String)> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
        names.sort();
        for p in names {
            let m = fs::symlink_metadata(&p).expect("stat");
            let ft = m.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_fifo() {
                "fifo"
            } else if ft.is_file() {
                "file"
            } else {
                continue;
            };
            let rel = p.strip_prefix(root).expect("prefix").to_string_lossy().into_owned();
            let sha = (kind == "file").then(|| {
                let mut h = Sha256::new();
                let mut f = File::open(&p).expect("open");
                let mut buf = vec![0; 1 << 16];
                loop {
                    let n = f.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                hex::encode(h.finalize())
            });
            let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
            let node = Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if kind == "dir" || kind == "symlink" { 0 } else { m.size() },
                // GNU tar does not restore a symlink's own mtime everywhere; compare it elsewhere.
                mtime: if kind == "symlink" { (0, 0) } else { (m.mtime(), m.mtime_nsec()) },
                target: ft.is_symlink().then(|| fs::read_link(&p).expect("readlink")),
                sha,
                ino: 0,
            };
            if kind == "dir" {
                stack.push(p.clone());
            }
            out.insert(rel, (node, first));
        }
    }
    out
}

fn archive_to(root: &Path, out: &Path, opts: &ArchiveOptions) -> Manifest {
    let f = File::create(out).expect("create archive");
    let summary = write_archive(root, std::io::BufWriter::new(f), opts).expect("write_archive");
    let at = time::OffsetDateTime::now_utc();
    let id = voltool_backup::backup_id("vol", at, [1, 2, 3]);
    let opts: BTreeMap<String, String> = [("size".to_owned(), "1g".to_owned())].into();
    Manifest::new(&id, "vol", &opts, summary, at).expect("manifest")
}

/// A temporary directory with the test tree in `src` archived (default options) to `name`:
/// (the directory, src, the archive, its manifest).
fn archived_tree(name: &str) -> (tempfile::TempDir, PathBuf, PathBuf, Manifest) {
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    build_tree(&src);
    let archive = work.path().join(name);
    let manifest = archive_to(&src, &archive, &ArchiveOptions::default());
    (work, src, archive, manifest)
}

fn restore_with_gnu_tar(archive: &Path, dest: &Path, extra: &str) {
    let tar_flags = if is_root() { format!("--numeric-owner {extra} -xpf -") } else { format!("{extra} -xf -") };
    let script = format!("zstd -q -d < '{}' | tar {tar_flags} -C '{}'", archive.display(), dest.display());
    let out = Command::new("bash").args(["-o", "pipefail", "-c", &script]).output().expect("run zstd | tar");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "restore failed: {:?} {stderr}", out.status);
}

#[test]
fn archive_verify_and_restore_with_stock_tools() {
    let (work, src, archive, manifest) = archived_tree("backup.tar.zst");

    // Summary / manifest content.
    let by_path: BTreeMap<&str, _> = manifest.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    assert_eq!(by_path["hard"].kind, EntryKind::Hardlink);
    assert_eq!(by_path["hard"].target.as_deref(), Some("a/b/c/deep.txt"));
    assert_eq!(by_path["fifo"].kind, EntryKind::Fifo);
    assert_eq!(by_path["a"].mode, 0o750);
    assert_eq!(by_path["a/empty"].mode, 0o600);
    assert_eq!(by_path["a/big.bin"].size, 3 << 20);
    assert_eq!(by_path["a/b/c/deep.txt"].mtime_nsec, 123_456_789);
    assert_eq!(by_path["link"].mtime, FIXED_MTIME + 2);
    if is_root() {
        assert_eq!((by_path["a/empty"].uid, by_path["a/empty"].gid), (1234, 5678));
        assert!(!by_path.contains_key("null-dev") && !by_path.contains_key("sock"));
        assert!(manifest.notes.iter().any(|n| n.contains("null-dev")), "{:?}", manifest.notes);
    }
    let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths[..3], ["a", "a/b", "a/b/c"], "sorted depth-first");
    assert_eq!(fs::metadata(&archive).expect("stat").len(), manifest.archive_size);

    // Verify passes, and the manifest survives JSON.
    let manifest = Manifest::from_json(&manifest.to_json_pretty().expect("json")).expect("parse");
    let report = verify_archive(File::open(&archive).expect("open"), &manifest).expect("verify");
    assert_eq!(report.entries, manifest.entries.len() as u64);
    assert_eq!(report.archive_sha256, manifest.archive_sha256);

    // sha256sum -c accepts the .sha256 line.
    fs::rename(&archive, work.path().join(format!("{}.tar.zst", manifest.id))).expect("rename");
    let archive = work.path().join(format!("{}.tar.zst", manifest.id));
    fs::write(work.path().join("sums"), sha256sum_line(&manifest.id, &manifest.archive_sha256)).expect("write");
    let ok =
        Command::new("sha256sum").args(["-c", "--quiet", "sums"]).current_dir(work.path()).status().expect("sha256sum");
    assert!(ok.success());

    // The xattr travels as a pax SCHILY.xattr record (where the filesystem has user xattrs).
    if xattr::get(src.join("exec.sh"), "user.voltool").ok().flatten().is_some() {
        let tar = zstd::stream::decode_all(File::open(&archive).expect("open")).expect("zstd");
        let needle = b"SCHILY.xattr.user.voltool=yes\n";
        assert!(tar.windows(needle.len()).any(|w| w == needle), "xattr record missing");
    }

    // Deterministic: the same tree gives the same bytes.
    let again = archive_to(&src, &work.path().join("again.tar.zst"), &ArchiveOptions::default());
    assert_eq!(again.archive_sha256, manifest.archive_sha256);

    // Stock zstd + GNU tar restore it exactly.
    let dest = work.path().join("restored");
    fs::create_dir(&dest).expect("mkdir");
    restore_with_gnu_tar(&archive, &dest, "");
    let (want, got) = (snapshot(&src), snapshot(&dest));
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>());
    for (path, w) in &want {
        assert_eq!(&got[path], w, "{path}");
    }
    let ino = |p: &str| fs::metadata(dest.join(p)).expect("stat").ino();
    assert_eq!(ino("hard"), ino("a/b/c/deep.txt"), "hard link shares the inode");
}

#[test]
fn multithreaded_archive_verifies_and_restores() {
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    build_tree(&src);
    let archive = work.path().join("mt.tar.zst");
    let manifest = archive_to(
        &src,
        &archive,
        &ArchiveOptions { level: 5, threads: 4, xattrs: true, hash_files: true, previous: None },
    );
    verify_archive(File::open(&archive).expect("open"), &manifest).expect("verify");
    let dest = work.path().join("restored");
    fs::create_dir(&dest).expect("mkdir");
    restore_with_gnu_tar(&archive, &dest, "--xattrs --xattrs-include='user.*'");
    assert_eq!(snapshot(&src), snapshot(&dest));
    assert_eq!(
        xattr::get(src.join("exec.sh"), "user.voltool").ok().flatten(),
        xattr::get(dest.join("exec.sh"), "user.voltool").ok().flatten(),
        "GNU tar --xattrs restores the xattr"
    );
}

#[test]
fn flipped_byte_fails_verify_naming_the_problem() {
    let (_work, _src, archive, manifest) = archived_tree("x.tar.zst");
    let mut bytes = fs::read(&archive).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let err = verify_archive(bytes.as_slice(), &manifest).expect_err("corrupt archive must fail");
    let msg = err.to_string();
    eprintln!("flipped byte at {mid}: {msg}");
    assert!(matches!(err, BackupError::Corrupt { .. } | BackupError::ArchiveCorrupt { .. }), "{msg}");
    assert!(msg.contains(&manifest.archive_file_name()), "names the archive: {msg}");
    if let BackupError::Corrupt { entry, .. } = &err {
        assert_eq!(entry, "a/big.bin", "the random file fills the middle of the archive: {msg}");
    }
}

#[test]
fn altered_manifest_sha_names_the_file() {
    let (_work, src, archive, mut manifest) = archived_tree("x.tar.zst");
    let e = manifest.entries.iter_mut().find(|e| e.path == "a/b/c/deep.txt").expect("entry");
    e.sha256 = Some("0".repeat(64));
    match verify_archive(File::open(&archive).expect("open"), &manifest) {
        Err(BackupError::Corrupt { entry, reason }) => {
            assert_eq!(entry, "a/b/c/deep.txt");
            assert!(reason.contains("sha256"), "{reason}");
        }
        other => panic!("expected Corrupt for the file, got {other:?}"),
    }

    // A missing entry and an extra one are named too.
    let mut manifest = archive_to(&src, &archive, &ArchiveOptions::default());
    let removed = manifest.entries.remove(1);
    match verify_archive(File::open(&archive).expect("open"), &manifest) {
        Err(BackupError::Corrupt { entry, reason }) => {
            assert_eq!(entry, removed.path);
            assert!(reason.contains("not in the manifest"), "{reason}");
        }
        other => panic!("expected Corrupt for the extra entry, got {other:?}"),
    }
    let mut manifest = archive_to(&src, &archive, &ArchiveOptions::default());
    let mut ghost = manifest.entries[0].clone();
    ghost.path = "ghost".into();
    manifest.entries.push(ghost);
    match verify_archive(File::open(&archive).expect("open"), &manifest) {
        Err(BackupError::Corrupt { entry, .. }) => assert_eq!(entry, "ghost"),
        other => panic!("expected Corrupt for the missing entry, got {other:?}"),
    }
}

/// The manifest may come after the archive's first entries (it is parsed alongside): those
/// entries wait for it, checked, and are compared once it is there, in order.
#[test]
fn verify_with_a_manifest_that_comes_late_checks_every_entry_in_order() {
    let (_work, _src, archive, manifest) = archived_tree("x.tar.zst");
    let name = manifest.archive_file_name();
    let late = |m: Manifest| {
        move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok::<_, String>(m)
        }
    };
    // Intact: the whole archive was read before the manifest came.
    let (m, report) =
        verify_archive_loading(File::open(&archive).expect("open"), &name, late(manifest.clone())).expect("verify");
    assert_eq!(report.entries, manifest.entries.len() as u64);
    assert_eq!(m.id, manifest.id);
    // The first file's digest altered: named, although it was hashed before the manifest came.
    let mut altered = manifest.clone();
    let first_file = altered.entries.iter_mut().find(|e| e.kind == EntryKind::File).expect("a file");
    let first = first_file.path.clone();
    first_file.sha256 = Some("0".repeat(64));
    let late_file = altered.entries.iter_mut().rev().find(|e| e.kind == EntryKind::File).expect("a file");
    late_file.sha256 = Some("1".repeat(64));
    match verify_archive_loading(File::open(&archive).expect("open"), &name, late(altered.clone())) {
        Err(BackupError::Corrupt { entry, reason }) => {
            assert_eq!(entry, first, "the first bad entry in archive order");
            assert!(reason.contains("sha256"), "{reason}");
        }
        other => panic!("expected Corrupt for {first}, got {other:?}"),
    }
    // Waiting entries come before a damaged stream after them.
    let bytes = fs::read(&archive).expect("read");
    let cut = &bytes[..bytes.len() - 100];
    match verify_archive_loading(cut, &name, late(altered)) {
        Err(BackupError::Corrupt { entry, .. }) => assert_eq!(entry, first),
        other => panic!("expected Corrupt for {first}, got {other:?}"),
    }
    // A manifest that cannot be had: its loader's message, whatever the archive.
    let err = verify_archive_loading(File::open(&archive).expect("open"), &name, || {
        Err::<Manifest, _>("x.manifest.json: not found")
    })
    .expect_err("no manifest");
    assert!(matches!(err, BackupError::ManifestLoad(_)), "{err:?}");
    assert_eq!(err.to_string(), "x.manifest.json: not found");
    // ... and the rest of the archive is not read for a digest nobody will look at.
    struct Slow<R> {
        inner: R,
        first: bool,
        read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }
    impl<R: std::io::Read> std::io::Read for Slow<R> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if std::mem::take(&mut self.first) {
                // The manifest's failure is there by the first entry.
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            let n = self.inner.read(out)?;
            self.read.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(n)
        }
    }
    let total = bytes.len() as u64 + (256 << 20);
    let read = std::sync::Arc::default();
    let input = Slow {
        inner: std::io::Read::chain(&bytes[..], std::io::repeat(0).take(256 << 20)),
        first: true,
        read: std::sync::Arc::clone(&read),
    };
    let err = verify_archive_loading(input, &name, || Err::<Manifest, _>("gone")).expect_err("no manifest");
    assert_eq!(err.to_string(), "gone");
    let read = read.load(std::sync::atomic::Ordering::Relaxed);
    assert!(read < 64 << 20, "read {read} of {total} bytes");
}

fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).expect("value").parse().expect("number")
}

#[test]
fn large_file_streams_in_bounded_memory() {
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    // 200 MiB, mostly holes, with 1 MiB of random data every 16 MiB.
    let size: u64 = 200 << 20;
    let mut f = File::create(src.join("huge.bin")).expect("create");
    f.set_len(size).expect("set_len");
    let chunk = random_bytes(1 << 20, 42);
    for off in (0..size).step_by(16 << 20) {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(off)).expect("seek");
        f.write_all(&chunk).expect("write");
    }
    drop(f);
    let before = vm_hwm_kib();
    let archive = work.path().join("huge.tar.zst");
    let manifest = archive_to(&src, &archive, &ArchiveOptions::default());
    let report =
        verify_archive(std::io::BufReader::new(File::open(&archive).expect("open")), &manifest).expect("verify");
    let growth_mib = (vm_hwm_kib() - before) / 1024;
    eprintln!("VmHWM before {before} KiB, growth {growth_mib} MiB");
    assert_eq!(report.bytes, size);
    // Other tests in this binary run concurrently and share the process, so this is an upper bound.
    assert!(growth_mib < 64, "peak RSS grew by {growth_mib} MiB");
}

/// Directories deeper than the archiver holds open (it then re-opens them from the root by
/// descriptors, see `voltool_backup::walk`) and many
/// small files across directories (the read-ahead runs ahead of the walk): the archive still
/// holds every entry in order, verifies, and GNU tar restores it exactly.
#[test]
fn deep_and_wide_trees_archive_in_order_and_restore() {
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    let mut deep = src.clone();
    for i in 0..90 {
        deep.push(format!("d{i:02}"));
    }
    fs::create_dir_all(&deep).expect("mkdir deep");
    fs::write(deep.join("bottom.txt"), b"at the bottom").expect("write");
    fs::write(src.join("d00").join("top.txt"), b"near the top").expect("write");
    for d in 0..20 {
        let dir = src.join(format!("w{d:02}"));
        fs::create_dir(&dir).expect("mkdir");
        for f in 0..60 {
            let len = (d * 61 + f * 37) % 3000;
            fs::write(dir.join(format!("f{f:03}")), random_bytes(len, (d * 100 + f) as u64)).expect("write");
        }
    }
    let archive = work.path().join("wide.tar.zst");
    let manifest = archive_to(
        &src,
        &archive,
        &ArchiveOptions { level: 3, threads: 2, xattrs: true, hash_files: true, previous: None },
    );
    assert_eq!(manifest.files, 2 + 20 * 60);
    let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    assert_eq!(paths, sorted, "depth-first, names sorted");
    assert!(paths.iter().any(|p| p.ends_with("/d89/bottom.txt")), "the deepest file is archived");
    verify_archive(File::open(&archive).expect("open"), &manifest).expect("verify");
    let dest = work.path().join("restored");
    fs::create_dir(&dest).expect("mkdir");
    restore_with_gnu_tar(&archive, &dest, "");
    assert_eq!(snapshot(&dest), snapshot(&src));
}

/// An archive of several MiB of tar (more than the verifier's decoded blocks in flight), for
/// the damaged-stream tests below.
fn multi_block_archive(work: &Path) -> (Vec<u8>, Manifest) {
    let src = work.join("src");
    fs::create_dir(&src).expect("mkdir");
    build_tree(&src);
    for i in 0..6u64 {
        fs::write(src.join(format!("r{i}.bin")), random_bytes((1 << 20) + 977 * i as usize, i + 7)).expect("write");
    }
    let archive = work.join("x.tar.zst");
    let manifest = archive_to(&src, &archive, &ArchiveOptions::default());
    (fs::read(&archive).expect("read"), manifest)
}

#[test]
fn truncated_or_extended_streams_fail_naming_the_archive() {
    let work = tempfile::tempdir().expect("tempdir");
    let (bytes, manifest) = multi_block_archive(work.path());
    verify_archive(bytes.as_slice(), &manifest).expect("the intact archive verifies");
    for cut in [bytes.len() / 5, bytes.len() / 2, bytes.len() - 20, bytes.len() - 1] {
        let err = verify_archive(&bytes[..cut], &manifest).expect_err("a truncated archive must fail");
        let msg = err.to_string();
        assert!(matches!(err, BackupError::ArchiveCorrupt { .. }), "cut at {cut}: {msg}");
        let named = msg.contains(&manifest.archive_file_name());
        assert!(named && msg.contains("does not match the manifest's"), "cut at {cut}: {msg}");
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"trailing junk");
    let err = verify_archive(longer.as_slice(), &manifest).expect_err("trailing bytes must fail");
    assert!(matches!(err, BackupError::ArchiveCorrupt { .. }), "{err}");
}

/// The checks stop at the first bad entry, early in the stream; the rest of the archive is
/// still read and hashed, so damage further on is reported with it.
#[test]
fn first_bad_entry_is_named_and_the_rest_still_hashed() {
    let work = tempfile::tempdir().expect("tempdir");
    let (mut bytes, mut manifest) = multi_block_archive(work.path());
    let e = manifest.entries.iter_mut().find(|e| e.path == "a/b/c/deep.txt").expect("entry");
    e.sha256 = Some("0".repeat(64));
    match verify_archive(bytes.as_slice(), &manifest) {
        Err(BackupError::Corrupt { entry, reason }) => {
            assert_eq!(entry, "a/b/c/deep.txt");
            assert!(!reason.contains("archive"), "the archive itself is fine: {reason}");
        }
        other => panic!("expected Corrupt for the file, got {other:?}"),
    }
    let last = bytes.len() - 30;
    bytes[last] ^= 0x10;
    match verify_archive(bytes.as_slice(), &manifest) {
        Err(BackupError::Corrupt { entry, reason }) => {
            assert_eq!(entry, "a/b/c/deep.txt");
            let note = format!("archive {}: sha256", manifest.archive_file_name());
            assert!(reason.contains(&note), "{reason}");
        }
        other => panic!("expected Corrupt for the file, got {other:?}"),
    }
}

/// A reader that fails after `left` bytes.
struct FailingReader<'a> {
    data: &'a [u8],
    left: usize,
}

impl Read for FailingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("connection reset by the test"));
        }
        let n = buf.len().min(self.left).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn a_read_error_mid_stream_is_a_read_error_naming_the_archive() {
    let work = tempfile::tempdir().expect("tempdir");
    let (bytes, manifest) = multi_block_archive(work.path());
    for left in [0, 100, bytes.len() / 2, bytes.len() - 1] {
        match verify_archive(FailingReader { data: &bytes, left }, &manifest) {
            Err(e @ BackupError::Read { .. }) => {
                let msg = e.to_string();
                let named = msg.contains(&manifest.archive_file_name());
                assert!(named && msg.contains("connection reset by the test"), "{msg}");
            }
            other => panic!("failing after {left} bytes: expected Read, got {other:?}"),
        }
    }
}
