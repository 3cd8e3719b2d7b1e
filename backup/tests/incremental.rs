//! Incremental chains: what each link holds, verification of each link, and stock GNU tar
//! applying the chain (`--listed-incremental=/dev/null`) to exactly the source tree.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use voltool_backup::{ArchiveOptions, Manifest, Previous, verify_archive, write_archive};

/// One entry of a tree as compared: type, mode, owner, mtime (not for directories, whose
/// mtimes GNU tar sets only where it extracted into them), content or link target, xattrs,
/// and the hard-link group (the first path of its inode).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>, inodes: &mut BTreeMap<u64, String>) {
        let mut names: Vec<_> = fs::read_dir(dir).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let rel = p.strip_prefix(root).expect("rel").to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).expect("stat");
            let ft = m.file_type();
            let mut xattrs: Vec<String> = xattr::list(&p)
                .map(|l| {
                    l.map(|k| format!("{}={:?}", k.to_string_lossy(), xattr::get(&p, &k).ok().flatten())).collect()
                })
                .unwrap_or_default();
            xattrs.sort();
            let what = if ft.is_dir() {
                "dir".to_owned()
            } else if ft.is_symlink() {
                format!("link->{}", fs::read_link(&p).expect("readlink").display())
            } else if ft.is_file() {
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
                format!(
                    "file {} {} inode-of {first}",
                    m.len(),
                    hex::encode(Sha256::digest(fs::read(&p).expect("read")))
                )
            } else {
                "other".to_owned()
            };
            let mtime = if ft.is_dir() { String::new() } else { format!("{}.{}", m.mtime(), m.mtime_nsec()) };
            let line = format!("{what} mode={:o} {}:{} {mtime} {xattrs:?}", m.mode() & 0o7777, m.uid(), m.gid());
            out.insert(rel, line);
            if ft.is_dir() {
                walk(root, &p, out, inodes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, &mut BTreeMap::new());
    out
}

fn archive(src: &Path, out: &Path, previous: Option<&Manifest>, id: &str) -> Manifest {
    let prev = previous.map(|m| Arc::new(Previous::from_manifest(m).expect("comparable manifest")));
    let opts = ArchiveOptions { threads: 2, previous: prev, ..ArchiveOptions::default() };
    let file = fs::File::create(out).expect("create");
    let summary = write_archive(src, file, &opts).expect("archive");
    Manifest::new(id, "v", &BTreeMap::new(), summary, time::OffsetDateTime::UNIX_EPOCH).expect("manifest")
}

fn gnu_chain(archives: &[PathBuf], dest: &Path) {
    for a in archives {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "zstd -dc < {} | tar --listed-incremental=/dev/null --xattrs --xattrs-include='*' --numeric-owner -x -C {}",
                a.display(),
                dest.display()
            ))
            .output()
            .expect("tar");
        assert!(out.status.success(), "GNU tar on {}: {}", a.display(), String::from_utf8_lossy(&out.stderr));
    }
}

/// The changes of one round: modify, add, delete, rename, chmod, a directory replaced by a
/// file and a file by a directory, a new hard link, a symlink retargeted, an xattr changed.
fn change(root: &Path, round: usize) {
    fs::write(root.join("d1/edit.txt"), format!("edited in round {round}\n")).expect("edit");
    fs::write(root.join(format!("new-{round}.txt")), b"new\n").expect("add");
    let _ = fs::remove_file(root.join(format!("d1/gone-{round}.txt")));
    let from = root.join(if round == 1 { "d2/move.txt".to_owned() } else { format!("moved-{}.txt", round - 1) });
    fs::rename(from, root.join(format!("moved-{round}.txt"))).expect("rename");
    fs::set_permissions(root.join("d1/chmod.txt"), fs::Permissions::from_mode(0o600 + round as u32)).expect("chmod");
    let flip = root.join("flip");
    if flip.is_dir() {
        fs::remove_dir_all(&flip).expect("rm dir");
        fs::write(&flip, b"now a file\n").expect("file");
    } else {
        let _ = fs::remove_file(&flip);
        fs::create_dir(&flip).expect("dir");
        fs::write(flip.join("inside"), b"inside\n").expect("inside");
    }
    fs::hard_link(root.join("d1/keep.txt"), root.join(format!("hard-{round}"))).expect("link");
    let _ = fs::remove_file(root.join("sym"));
    symlink(format!("target-{round}"), root.join("sym")).expect("symlink");
    xattr::set(root.join("d1/keep.txt"), "user.round", round.to_string().as_bytes()).expect("xattr");
}

fn build(root: &Path) {
    fs::create_dir_all(root.join("d1/sub")).expect("mkdir");
    fs::create_dir(root.join("d2")).expect("mkdir");
    for i in 0..50 {
        fs::write(root.join(format!("d1/sub/f{i}")), format!("file {i}\n").repeat(i + 1)).expect("write");
    }
    for (name, body) in [("d1/edit.txt", "v0"), ("d1/keep.txt", "keep"), ("d1/chmod.txt", "c"), ("d2/move.txt", "m")] {
        fs::write(root.join(name), body).expect("write");
    }
    for r in 1..=3 {
        fs::write(root.join(format!("d1/gone-{r}.txt")), b"to be deleted").expect("write");
    }
    fs::write(root.join("flip"), b"a file first\n").expect("write");
    symlink("target-0", root.join("sym")).expect("symlink");
}

#[test]
fn gnu_tar_applies_a_chain_to_exactly_the_source_tree() {
    if Command::new("tar").arg("--version").output().is_err() || Command::new("zstd").arg("-V").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "GNU tar and zstd are installed in CI");
        println!("SKIP gnu_tar_applies_a_chain_to_exactly_the_source_tree: no tar or zstd");
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    build(&src);
    let mut archives = vec![work.path().join("0.tar.zst")];
    let full = archive(&src, &archives[0], None, "v-0");
    assert_eq!((full.level, full.parent.as_ref()), (0, None));
    assert_eq!(full.format_version, 1, "full backups stay readable by every voltool");
    let mut prev = full;
    for round in 1..=3 {
        // Distinct mtimes and ctimes from the previous round.
        std::thread::sleep(std::time::Duration::from_millis(15));
        change(&src, round);
        let path = work.path().join(format!("{round}.tar.zst"));
        let m = archive(&src, &path, Some(&prev), &format!("v-{round}"));
        assert_eq!(m.level, round as u32);
        assert_eq!(m.parent.as_ref().map(|p| p.id.as_str()), Some(prev.id.as_str()));
        assert_eq!(m.format_version, 2);
        // The untouched files are not in this link: they stay in the full.
        let held: Vec<&str> = m.entries.iter().filter(|e| m.holds(e)).map(|e| e.path.as_str()).collect();
        assert!(!held.iter().any(|p| p.starts_with("d1/sub/f")), "unchanged files archived again: {held:?}");
        assert!(held.contains(&"d1/edit.txt") && held.contains(&"sym"), "{held:?}");
        assert_eq!(m.entries.iter().filter(|e| e.path.starts_with("d1/sub/f")).count(), 50);
        assert!(m.entries.iter().filter(|e| e.path.starts_with("d1/sub/f")).all(|e| e.level == 0));
        // Each link verifies against its own manifest.
        verify_archive(fs::File::open(&path).expect("open"), &m).expect("the link verifies");
        archives.push(path);
        prev = m;
        let dest = work.path().join(format!("gnu-{round}"));
        fs::create_dir(&dest).expect("mkdir");
        gnu_chain(&archives, &dest);
        assert_eq!(snapshot(&dest), snapshot(&src), "round {round}: GNU tar's chain differs from the source");
    }
}

#[test]
fn a_link_that_is_tampered_with_fails_its_verification() {
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    build(&src);
    let full = archive(&src, &work.path().join("0.tar.zst"), None, "v-0");
    std::thread::sleep(std::time::Duration::from_millis(15));
    change(&src, 1);
    let path = work.path().join("1.tar.zst");
    let mut m = archive(&src, &path, Some(&full), "v-1");
    // The manifest claims a file this link does not hold.
    let i = m.entries.iter().position(|e| e.path == "d1/sub/f3").expect("f3");
    m.entries[i].level = 1;
    let e = verify_archive(fs::File::open(&path).expect("open"), &m).expect_err("f3 is not in this link");
    assert!(e.to_string().contains("d1/sub/f3"), "{e}");
}
