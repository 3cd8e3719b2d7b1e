use std::os::fd::AsFd;

use super::*;

/// Makes `depth` nested directories `dNNN` under `root` (by descriptors: the paths may be
/// longer than PATH_MAX), with a file `fNNN` at every level; returns the relative paths in
/// walk order.
fn nested(root: &Path, depth: usize, name_len: usize) -> Vec<String> {
    let mut order = Vec::new();
    let mut cur = open_root(root).expect("open root").0;
    let mut rel = String::new();
    for i in 0..depth {
        let d = format!("d{i:03}{}", "x".repeat(name_len.saturating_sub(4)));
        let f = format!("f{i:03}");
        nix::sys::stat::mkdirat(&cur, d.as_str(), Mode::from_bits_truncate(0o755)).expect("mkdirat");
        let flags = OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
        drop(nix::fcntl::openat(&cur, f.as_str(), flags, Mode::from_bits_truncate(0o644)).expect("create"));
        let prefix = if rel.is_empty() { String::new() } else { format!("{rel}/") };
        order.push(format!("{prefix}{d}"));
        rel = format!("{prefix}{d}");
        cur = open_dir_at(cur.as_fd(), OsStr::new(&d)).expect("open");
    }
    // Depth first: each directory's subtree (its dNNN) comes before its file (fNNN sorts after).
    let mut files: Vec<String> = Vec::new();
    let mut dir = String::new();
    for (i, d) in order.iter().enumerate() {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        files.push(format!("{prefix}f{i:03}"));
        dir = d.clone();
    }
    files.reverse();
    order.extend(files);
    order
}

/// Walks like the archiver (enters every directory on the root's device); calls `during`
/// with each entry's path first. Returns the paths visited, the notes and the most
/// descriptors held at once.
fn walk_all(
    root: &Path,
    limits: WalkLimits,
    during: &mut dyn FnMut(&str),
) -> Result<(Vec<String>, Vec<String>, usize), WalkError> {
    let (fd, st) = open_root(root)?;
    let mut walk = TreeWalk::new(root, fd, &st, limits)?;
    let (mut seen, mut notes, mut most) = (Vec::new(), Vec::new(), 0);
    while let Some(item) = walk.next(&mut notes)? {
        let rel = String::from_utf8_lossy(item.rel).into_owned();
        during(&rel);
        seen.push(rel);
        let Ok(st) = stat_at(item.parent, item.name) else { continue };
        if is_dir(&st) {
            let fd = open_dir_at(item.parent, item.name).expect("open dir");
            let now = nix::sys::stat::fstat(&fd).expect("fstat");
            walk.enter(fd, now.st_dev, now.st_ino)?;
        }
        most = most.max(walk.held());
    }
    Ok((seen, notes, most))
}

#[test]
fn deep_tree_walks_in_order_holding_at_most_kept_descriptors() {
    let t = tempfile::tempdir().expect("tempdir");
    let want = nested(t.path(), 300, 4);
    let limits = WalkLimits { kept_fds: 4, ..WalkLimits::default() };
    let (mut seen, notes, most) = walk_all(t.path(), limits, &mut |_| {}).expect("walk");
    assert!(notes.is_empty(), "{notes:?}");
    assert!(most <= 4, "held {most} descriptors");
    // Every directory path before the files of the levels above it, in sorted order.
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    assert_eq!(seen, sorted, "depth-first, names sorted");
    seen.sort();
    let mut want = want;
    want.sort();
    assert_eq!(seen, want);
}

/// The attack of issue 12: a level whose descriptor the walk let go is swapped for a symlink
/// to a directory outside the root that holds the same names and more. Climbing back, the
/// walk must not re-open it by path (which would follow the link): it skips the rest of it.
#[test]
fn level_swapped_for_a_symlink_after_its_descriptor_was_let_go_is_not_followed() {
    let t = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    nested(&root, 20, 4);
    // The outside mirror: the same first levels, plus a canary next to each.
    let mut p = outside.path().to_path_buf();
    for i in 0..20 {
        std::fs::write(p.join("canary"), b"secret").expect("canary");
        p.push(format!("d{i:03}"));
        std::fs::create_dir(&p).expect("mkdir");
    }
    let level3 = root.join("d000/d001/d002/d003");
    let mut swapped = false;
    let limits = WalkLimits { kept_fds: 4, ..WalkLimits::default() };
    let (seen, notes, _) = walk_all(&root, limits, &mut |rel| {
        // Deep below level 3 (its descriptor is gone: only 4 are kept): swap it.
        if !swapped && rel.matches('/').count() == 15 {
            std::fs::rename(&level3, root.join("moved")).expect("rename");
            std::os::unix::fs::symlink(outside.path().join("d000/d001/d002/d003"), &level3).expect("symlink");
            swapped = true;
        }
    })
    .expect("walk");
    assert!(swapped);
    assert!(seen.iter().all(|p| !p.contains("canary")), "followed the symlink: {seen:?}");
    assert!(notes.iter().any(|n| n.starts_with("d000/d001/d002/d003: moved or replaced")), "{notes:?}");
    // What was above the swapped level is still walked.
    assert!(seen.iter().any(|p| p == "d000/d001/f002"), "{seen:?}");
}

/// A level replaced by another directory (same name, another inode) is skipped the same way.
#[test]
fn level_replaced_by_another_directory_is_skipped() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    nested(root, 12, 4);
    let level2 = root.join("d000/d001/d002");
    let mut swapped = false;
    let limits = WalkLimits { kept_fds: 3, ..WalkLimits::default() };
    let (seen, notes, _) = walk_all(root, limits, &mut |rel| {
        if !swapped && rel.matches('/').count() == 9 {
            std::fs::rename(&level2, root.join("moved")).expect("rename");
            std::fs::create_dir(&level2).expect("mkdir");
            std::fs::write(level2.join("intruder"), b"x").expect("write");
            swapped = true;
        }
    })
    .expect("walk");
    assert!(seen.iter().all(|p| !p.ends_with("intruder")), "{seen:?}");
    assert!(notes.iter().any(|n| n.starts_with("d000/d001/d002: moved or replaced")), "{notes:?}");
}

#[test]
fn too_deep_and_too_long_paths_are_errors_naming_the_path() {
    let t = tempfile::tempdir().expect("tempdir");
    nested(t.path(), 30, 4);
    let limits = WalkLimits { max_depth: 25, ..WalkLimits::default() };
    match walk_all(t.path(), limits, &mut |_| {}) {
        Err(e @ WalkError::TooDeep { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("d024/d025") && msg.contains("deeper than 25 levels"), "{msg}");
        }
        other => panic!("expected TooDeep, got {other:?}"),
    }
    let limits = WalkLimits { max_path: 60, ..WalkLimits::default() };
    match walk_all(t.path(), limits, &mut |_| {}) {
        Err(WalkError::PathTooLong { len, limit: 60, .. }) => assert!(len > 60),
        other => panic!("expected PathTooLong, got {other:?}"),
    }
}

#[test]
fn long_paths_are_shown_shortened() {
    let rel = vec![b'a'; 5000];
    let s = shown(Path::new("/r"), &rel).into_os_string().into_vec();
    assert_eq!(s.len(), 3 + 1024 + 3);
    assert!(s.windows(3).any(|w| w == b"..."));
}

#[test]
fn disk_usage_counts_entries_and_stops_at_the_budget() {
    let t = tempfile::tempdir().expect("tempdir");
    nested(t.path(), 70, 4);
    std::fs::write(t.path().join("d000/big"), vec![1u8; 1 << 20]).expect("write");
    let used = disk_usage(t.path(), Duration::from_secs(30)).expect("usage");
    assert!(used >= 1 << 20, "{used}");
    assert_eq!(disk_usage(t.path(), Duration::ZERO), None);
    assert_eq!(disk_usage(&t.path().join("d000/big"), Duration::from_secs(30)), None);
}

use std::os::unix::ffi::OsStringExt;
