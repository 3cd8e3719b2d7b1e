//! Restores check what they restore and stay within bounds (issue 12, items 2 and 3):
//! a backup's archive is held to what the catalog recorded, an archive file to the manifest
//! beside it, and hostile archives (bombs of bytes or of inodes) stop before the filesystem
//! loses its reserve, with the volume unchanged and the daemon's memory bounded.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Daemon, root_or_skip, stderr, stdout};

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "command failed: {}\n{}", stdout(o), stderr(o));
    stdout(o).trim().to_string()
}

/// A volume `name` holding `keep.txt`, backed up; returns the backup ID.
fn backed_up(d: &Daemon, name: &str) -> String {
    ok(&d.cli(&["volume", "create", name]));
    let root = PathBuf::from(ok(&d.cli(&["volume", "mount", name, "--id", "t"])));
    std::fs::write(root.join("keep.txt"), "the real data\n").expect("write");
    ok(&d.cli(&["volume", "unmount", name, "--id", "t"]));
    ok(&d.cli(&["backup", "run", name])).lines().last().expect("id").to_string()
}

/// A `.tar.zst` of one file `name` holding `data`.
fn tarball(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, name, data).expect("append");
    zstd::encode_all(&b.into_inner().expect("tar")[..], 3).expect("zstd")
}

fn volumes(d: &Daemon) -> Vec<String> {
    stdout(&d.cli(&["volume", "ls", "-q"])).lines().map(str::to_owned).collect()
}

#[test]
fn regression_a_replaced_archive_restored_by_id_once_its_manifest_was_deleted() {
    let d = Daemon::start();
    let id = backed_up(&d, "orig");
    let dir = d.state().join("backups");
    // Another tarball in the archive's place, and no manifest to compare it with.
    std::fs::write(dir.join(format!("{id}.tar.zst")), tarball("evil.txt", b"not the backup\n")).expect("replace");
    std::fs::remove_file(dir.join(format!("{id}.manifest.json"))).expect("rm manifest");
    let o = d.cli(&["restore", "copy", "--from", &id]);
    assert!(!o.status.success(), "a replaced archive restored: {}", stdout(&o));
    assert!(stderr(&o).contains("the catalog recorded"), "{}", stderr(&o));
    assert!(!volumes(&d).contains(&"copy".to_string()), "the volume it made is gone");
    // The untouched backup of another volume, its manifest deleted, still restores: checked
    // against the catalog.
    let id2 = backed_up(&d, "second");
    std::fs::remove_file(dir.join(format!("{id2}.manifest.json"))).expect("rm manifest");
    let out = ok(&d.cli(&["restore", "copy2", "--from", &id2]));
    assert!(out.contains("checked against the catalog"), "{out}");
}

#[test]
fn a_voltool_archive_restored_by_path_is_checked_against_the_manifest_beside_it() {
    let d = Daemon::start();
    let id = backed_up(&d, "orig");
    let src = d.state().join("backups");
    let copy = d.dir.path().join("copied");
    std::fs::create_dir(&copy).expect("mkdir");
    for suffix in [".tar.zst", ".manifest.json"] {
        std::fs::copy(src.join(format!("{id}{suffix}")), copy.join(format!("{id}{suffix}"))).expect("copy");
    }
    let archive = copy.join(format!("{id}.tar.zst"));
    let path = archive.to_str().expect("utf8");
    // As it is: checked, and says so.
    let out = ok(&d.cli(&["restore", "good", "--from", path]));
    assert!(out.contains("checked against the manifest"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&ok(&d.cli(&["restore", "good2", "--from", path, "--json"]))).expect("json");
    assert_eq!(j["verification"], "manifest");
    // The same by file:// URL.
    let url = format!("file://{path}");
    let out = ok(&d.cli(&["restore", "good3", "--from", &url]));
    assert!(out.contains("checked against the manifest"), "{out}");
    // The archive replaced, the manifest beside it: refused by path and by URL, nothing made.
    std::fs::write(&archive, tarball("keep.txt", b"the fake data\n")).expect("replace");
    for from in [path, url.as_str()] {
        let o = d.cli(&["restore", "bad", "--from", from]);
        assert!(!o.status.success(), "a tampered archive restored from {from}: {}", stdout(&o));
        assert!(stderr(&o).contains("manifest"), "{}", stderr(&o));
        assert!(!volumes(&d).contains(&"bad".to_string()));
    }
    // A plain tarball with no manifest: restored, reported unverified.
    let plain = d.dir.path().join("plain.tar.zst");
    std::fs::write(&plain, tarball("x.txt", b"x\n")).expect("write");
    let out = ok(&d.cli(&["restore", "plain", "--from", plain.to_str().expect("utf8")]));
    assert!(out.contains("unverified (no manifest)"), "{out}");
}

/// A tmpfs of `size` (and `inodes`) over the daemon's volume directory, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(d: &Daemon, size: &str, inodes: u64) -> Self {
        let at = d.state().join("volumes");
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},nr_inodes={inodes}"), "voltool-test"])
            .arg(&at)
            .output()
            .expect("mount");
        assert!(o.status.success(), "mount tmpfs: {}", stderr(&o));
        SmallFs(at)
    }

    /// Whether `path` is on this filesystem (not on the one below it).
    fn holds(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).expect("stat").dev();
        dev(path) == dev(&self.0)
    }

    /// Free bytes and inodes.
    fn free(&self) -> (u64, u64) {
        let st = nix::sys::statvfs::statvfs(&self.0).expect("statvfs");
        (st.blocks_available() * st.fragment_size(), st.files_free())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// The daemon's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(d: &Daemon) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// An unsized volume on the small filesystem, holding `keep.txt`.
fn unsized_volume(d: &Daemon, name: &str) -> PathBuf {
    ok(&d.cli(&["volume", "create", name]));
    let root = PathBuf::from(ok(&d.cli(&["volume", "mount", name, "--id", "t"])));
    std::fs::write(root.join("keep.txt"), "kept\n").expect("write");
    root
}

/// The names in the volume, recursively.
fn names(root: &Path) -> Vec<String> {
    common::tree(root).into_keys().collect()
}

/// A `.tar.zst` holding one file of `size` zero bytes, made from one compressed frame of zeros
/// repeated (zstd decoders read concatenated frames): small on disk whatever `size` is.
fn zero_bomb(path: &Path, size: u64) {
    let mut h = tar::Header::new_gnu();
    h.set_path("zeros").expect("path");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    f.write_all(&zstd::encode_all(h.as_bytes().as_slice(), 3).expect("zstd")).expect("write");
    let chunk: u64 = 64 << 20;
    let frame = zstd::encode_all(std::io::Read::take(std::io::repeat(0), chunk), 3).expect("zstd");
    let mut left = size;
    while left >= chunk {
        f.write_all(&frame).expect("write");
        left -= chunk;
    }
    let tail = size % 512;
    let pad = if tail == 0 { 0 } else { 512 - tail };
    let rest = vec![0u8; usize::try_from(left + pad + 1024).expect("small")];
    f.write_all(&zstd::encode_all(&rest[..], 3).expect("zstd")).expect("write");
    f.flush().expect("flush");
}

#[test]
fn regression_a_zero_bomb_into_an_unsized_volume_filled_the_state_filesystem() {
    if !root_or_skip("regression_a_zero_bomb_into_an_unsized_volume_filled_the_state_filesystem", "mounts a tmpfs") {
        return;
    }
    let d = Daemon::start();
    let fs = SmallFs::mount(&d, "64m", 10_000);
    let root = unsized_volume(&d, "v");
    assert!(fs.holds(&root), "the volume is on the small filesystem");
    let bomb = d.dir.path().join("bomb.tar.zst");
    zero_bomb(&bomb, 100 << 30);
    assert!(std::fs::metadata(&bomb).expect("stat").len() < 8 << 20, "a small archive");
    let before = fs.free();
    let o = d.cli(&["restore", "v", "--from", bomb.to_str().expect("utf8"), "--force"]);
    assert!(!o.status.success(), "100 GiB restored into 64 MiB");
    assert!(stderr(&o).contains("\"zeros\"") && stderr(&o).contains("the reserve"), "{}", stderr(&o));
    // Nothing of it stayed, the filesystem keeps its reserve (and more), the volume as it was.
    let after = fs.free();
    assert!(after.0 + (1 << 20) >= before.0, "free space before {before:?}, after {after:?}");
    assert!(after.0 >= 64 * (1 << 20) / 20, "the 5% reserve is free: {after:?}");
    assert_eq!(names(&root), ["keep.txt"]);
    assert!(peak_rss_kib(&d) < 256 * 1024, "daemon peak RSS {} KiB", peak_rss_kib(&d));
    ok(&d.cli(&["volume", "unmount", "v", "--id", "t"]));
    drop(fs);
}

#[test]
fn a_million_empty_files_into_a_filesystem_with_fewer_free_inodes_stop_at_the_reserve() {
    if !root_or_skip(
        "a_million_empty_files_into_a_filesystem_with_fewer_free_inodes_stop_at_the_reserve",
        "mounts a tmpfs",
    ) {
        return;
    }
    let d = Daemon::start();
    let fs = SmallFs::mount(&d, "256m", 20_000);
    let root = unsized_volume(&d, "v");
    assert!(fs.holds(&root), "the volume is on the small filesystem");
    // Streamed into the compressor: a million headers are 512 MB of tar.
    let archive = d.dir.path().join("inodes.tar.zst");
    {
        let enc = zstd::Encoder::new(std::fs::File::create(&archive).expect("create"), 3).expect("zstd");
        let mut b = tar::Builder::new(enc);
        for i in 0..1_000_000u32 {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            b.append_data(&mut h, format!("d{}/f{i}", i / 1000), std::io::empty()).expect("append");
        }
        b.into_inner().expect("tar").finish().expect("zstd");
    }
    let before = fs.free();
    let o = d.cli(&["restore", "v", "--from", archive.to_str().expect("utf8"), "--force"]);
    assert!(!o.status.success(), "a million files restored into 20,000 inodes");
    assert!(stderr(&o).contains("inodes") && stderr(&o).contains("the reserve"), "{}", stderr(&o));
    let after = fs.free();
    assert!(after.1 + 8 >= before.1, "inodes free before {before:?}, after {after:?}");
    assert!(after.1 >= 20_000 / 20, "the 5% inode reserve is free: {after:?}");
    assert_eq!(names(&root), ["keep.txt"]);
    assert!(peak_rss_kib(&d) < 256 * 1024, "daemon peak RSS {} KiB", peak_rss_kib(&d));
    ok(&d.cli(&["volume", "unmount", "v", "--id", "t"]));
    drop(fs);
}
