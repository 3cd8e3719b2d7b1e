use super::*;

#[test]
fn names_must_be_single_components() {
    for bad in ["", ".", "..", "a/b", "/a", "a\0b"] {
        assert!(check_name(OsStr::new(bad)).is_err(), "{bad:?}");
    }
    assert!(check_name(OsStr::new("...")).is_ok());
}

#[test]
fn open_dir_refuses_a_symlink_and_create_refuses_what_is_there() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), t.path().join("link")).unwrap();
    std::fs::write(t.path().join("f"), b"x").unwrap();
    let d = Dir::open(t.path()).unwrap();
    assert_eq!(d.open_dir(OsStr::new("link")).unwrap_err().raw_os_error(), Some(libc::ELOOP));
    assert_eq!(d.open_dir(OsStr::new("f")).unwrap_err().raw_os_error(), Some(libc::ENOTDIR));
    assert_eq!(d.create_file(OsStr::new("link"), 0o644).unwrap_err().raw_os_error(), Some(libc::EEXIST));
    assert!(d.open_file(OsStr::new("link")).is_err());
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
}

#[test]
fn remove_tree_removes_links_as_links_and_deep_trees() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("canary"), b"keep").unwrap();
    let mut p = t.path().join("top");
    std::fs::create_dir(&p).unwrap();
    std::os::unix::fs::symlink(outside.path(), p.join("out")).unwrap();
    let top = Dir::open(t.path()).unwrap();
    // Deeper than the kept descriptors, made by descriptors (paths would pass PATH_MAX).
    let mut cur = top.open_dir(OsStr::new("top")).unwrap();
    for i in 0..(KEPT_FDS * 3) {
        let n = OsString::from(format!("level-{i:04}-{}", "x".repeat(40)));
        cur.mkdir(&n, 0o755).unwrap();
        cur.create_file(OsStr::new("f"), 0o644).unwrap();
        cur = cur.open_dir(&n).unwrap();
    }
    cur.symlink(outside.path().as_os_str(), OsStr::new("deep-out")).unwrap();
    p.push("out");
    top.remove_tree(OsStr::new("top")).unwrap();
    assert!(!t.path().join("top").exists());
    assert_eq!(std::fs::read(outside.path().join("canary")).unwrap(), b"keep");
    top.remove_tree(OsStr::new("missing")).unwrap();
}
