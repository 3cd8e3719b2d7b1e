//! Option parsing tests: names, sizes, tmpfs, backup keys, backing resolution, and the
//! nfs and cifs spellings.

use super::*;

fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn names() {
    for ok in ["a", "A1", "db-data_2.bak", &"x".repeat(128)] {
        assert_eq!(validate_name(ok), Ok(()), "{ok}");
    }
    for bad in ["", "../x", "a/b", ".hidden", "-x", "_x", "a b", "é", &"x".repeat(129), "a\0b"] {
        assert!(validate_name(bad).is_err(), "{bad:?} accepted");
    }
    let e = validate_name(&"y".repeat(300)).expect_err("too long").to_string();
    assert!(e.contains("longer than 128"), "{e}");
}

#[test]
fn sizes() {
    let cases: &[(&str, u64)] = &[
        ("16m", 16 << 20),
        ("512M", 512 << 20),
        ("10G", 10 << 30),
        ("1.5GiB", 3 << 29),
        ("4096", 4096),
        ("1k", 1024),
        ("2KB", 2048),
        ("1t", 1 << 40),
        ("0.5M", 512 << 10),
    ];
    for (s, want) in cases {
        assert_eq!(parse_size(s), Ok(*want), "{s}");
    }
    for bad in ["12Q", "", "M", "0", "-1", "1..5G", ".5G", "5.G", "1e9", "99999999999999999999999P"] {
        assert!(parse_size(bad).is_err(), "{bad} accepted");
    }
    assert!(parse_size("12Q").expect_err("Q").to_string().contains("unknown unit"));
}

#[test]
fn format_sizes() {
    assert_eq!(format_size(16 << 20), "16 MiB");
    assert_eq!(format_size(3 << 29), "1.50 GiB");
    assert_eq!(format_size(100), "100 B");
}

#[test]
fn tmpfs_spec_and_local_driver_spelling() {
    let a = parse_options(&opts(&[("type", "tmpfs"), ("size", "16m"), ("mode", "1777"), ("uid", "1000")])).expect("a");
    let b = parse_options(&opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=16m,mode=1777,uid=1000")]))
        .expect("b");
    assert_eq!(a, b);
    assert_eq!(a.size, Some(16 << 20));
    assert_eq!(a.owner, Owner { uid: Some(1000), gid: None, mode: Some(0o1777) });
    let e = parse_options(&opts(&[("type", "tmpfs"), ("size", "16m"), ("o", "size=32m")])).expect_err("conflict");
    assert!(e.to_string().contains("conflicts"), "{e}");
}

#[test]
fn unknown_keys_list_valid_ones() {
    let e = parse_options(&opts(&[("foo", "1")])).expect_err("foo").to_string();
    assert_eq!(
        e,
        "unknown option \"foo\" for a local volume; valid options: type, size, uid, gid, mode, on-remove, quota, fs, backup-schedule, backup-target, backup-keep, backup-verify, backup-consistency, backup-mode, backup-full, backup-encrypt"
    );
    let e = parse_options(&opts(&[("type", "tmpfs"), ("foo", "1")])).expect_err("foo").to_string();
    assert!(
        e.ends_with(
            "valid options: type, size, uid, gid, mode, on-remove, o, device, backup-schedule, backup-target, backup-keep, backup-verify, backup-consistency, backup-mode, backup-full, backup-encrypt"
        ),
        "{e}"
    );
    // local-driver keys are only valid where they mean something
    assert!(parse_options(&opts(&[("o", "size=1m")])).is_err());
}

#[test]
fn bad_values_and_types() {
    let e = parse_options(&opts(&[("type", "zfs")])).expect_err("zfs").to_string();
    assert!(e.contains("unknown volume type \"zfs\""), "{e}");
    let e = parse_options(&opts(&[("type", "tmpfs"), ("size", "12Q")])).expect_err("12Q").to_string();
    assert!(e.contains("option size") && e.contains("unknown unit"), "{e}");
    assert!(parse_options(&opts(&[("mode", "999")])).is_err());
    assert!(parse_options(&opts(&[("mode", "17777")])).is_err());
    assert!(parse_options(&opts(&[("uid", "-1")])).is_err());
    assert!(parse_options(&opts(&[("type", "tmpfs"), ("o", "size=1m,bogus")])).is_err());
    let e = parse_options(&opts(&[("type", "cifs")])).expect_err("cifs").to_string();
    assert!(e.contains("needs the share"), "{e}");
    let p = parse_options(&opts(&[
        ("backup-schedule", "0 3 * * *"),
        ("backup-keep", "last=3,daily=7"),
        ("backup-target", "offsite"),
        ("backup-verify", "true"),
    ]))
    .expect("backup options");
    assert_eq!(p.backup.schedule.as_deref(), Some("0 3 * * *"));
    assert_eq!(p.backup.keep.as_deref(), Some("last=3,daily=7"));
    assert_eq!(p.backup.target.as_deref(), Some("offsite"));
    assert!(p.backup.verify);
    let p = parse_options(&opts(&[("backup-verify", "restore")])).expect("restore");
    assert!(p.backup.verify && p.backup.restore_test);
    // The grammar of schedules, policies and target URLs is the backup engine's: the
    // daemon's tests check those values (voltool-daemon, `grammar`).
    for (k, v, want) in
        [("backup-target", "a b", "target name"), ("backup-verify", "maybe", "valid values: true, false, restore")]
    {
        let e = parse_options(&opts(&[(k, v)])).expect_err(v).to_string();
        assert!(e.contains(want), "{k}={v}: {e}");
    }
    assert!(parse_options(&opts(&[("quota", "zfs")])).is_err());
    assert_eq!(parse_options(&opts(&[("on-remove", "retain")])).expect("retain").on_remove, OnRemove::Retain);
    assert_eq!(parse_options(&opts(&[("on-remove", "archive")])).expect("archive").on_remove, OnRemove::Archive);
    assert!(parse_options(&opts(&[("type", "tmpfs"), ("on-remove", "retain")])).is_err());
    assert!(parse_options(&opts(&[("on-remove", "keep")])).is_err());
    assert!(parse_options(&opts(&[("fs", "btrfs")])).is_err());
    assert!(parse_options(&opts(&[("type", "tmpfs"), ("fs", "xfs")])).is_err(), "fs is for local volumes");
}

#[test]
fn backing_resolution_table() {
    let host = QuotaSupport { project: false, loop_devices: true };
    let no_loop = QuotaSupport { project: false, loop_devices: false };
    let prj = QuotaSupport { project: true, loop_devices: true };
    type Case<'a> = (&'a [(&'a str, &'a str)], QuotaSupport, Result<Backing, &'a str>);
    let cases: &[Case] = &[
        (&[], host, Ok(Backing::Dir)),
        (&[("quota", "none")], host, Ok(Backing::Dir)),
        (&[("size", "64m")], host, Ok(Backing::Image)),
        (&[("size", "64m"), ("quota", "image")], host, Ok(Backing::Image)),
        (&[("size", "1g"), ("fs", "xfs")], host, Ok(Backing::Image)),
        (&[("size", "64m"), ("fs", "xfs")], host, Err("at least 300 MiB")),
        (&[("size", "1m")], host, Err("at least 4 MiB")),
        (&[("size", "64m")], no_loop, Err("loop devices")),
        (&[("size", "64m"), ("quota", "none")], host, Err("quota=none cannot enforce size")),
        (&[("size", "64m"), ("quota", "project")], host, Err("prjquota")),
        (&[("size", "64m"), ("quota", "project")], prj, Ok(Backing::Project)),
        (&[("size", "64m")], prj, Ok(Backing::Project)),
        (&[("size", "1g"), ("fs", "xfs")], prj, Ok(Backing::Image)),
        (&[("size", "1g"), ("fs", "xfs"), ("quota", "project")], prj, Err("fs= applies to image-backed")),
        (&[("quota", "image")], host, Err("need a size limit")),
        (&[("fs", "xfs")], host, Err("need a size limit")),
    ];
    for (o, h, want) in cases {
        let spec = parse_options(&opts(o)).expect("parses");
        match (resolve_backing(&spec, *h), want) {
            (Ok(b), Ok(w)) => assert_eq!(b, *w, "{o:?}"),
            (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{o:?}: {e}"),
            (got, want) => panic!("{o:?}: got {got:?}, want {want:?}"),
        }
    }
}
mod nfs_option_tests {
    use super::*;

    #[test]
    fn seed_recipe_spelling_and_native_spelling_agree() {
        let seed =
            parse_options(&opts(&[("type", "nfs"), ("o", "addr=127.0.0.1,rw"), ("device", ":/export")])).expect("seed");
        let native =
            parse_options(&opts(&[("type", "nfs"), ("addr", "127.0.0.1"), ("export", "/export"), ("o", "rw")]))
                .expect("native");
        assert_eq!(seed.nfs, native.nfs);
        let t = seed.nfs.expect("nfs");
        assert_eq!(
            (t.addr.as_str(), t.export.as_str(), t.extra.clone()),
            ("127.0.0.1", "/export", vec!["rw".to_string()])
        );
        assert_eq!(seed.on_remove, OnRemove::Retain, "remote data is retained by default");
    }

    #[test]
    fn ports_versions_and_errors() {
        let s = parse_options(&opts(&[
            ("type", "nfs4"),
            ("device", "srv.example:/data"),
            ("o", "port=18049,mountport=18048,hard"),
        ]))
        .expect("ok");
        let t = s.nfs.expect("nfs");
        assert_eq!(
            (t.port, t.mount_port, t.vers.as_deref(), t.addr.as_str()),
            (Some(18049), Some(18048), Some("4"), "srv.example")
        );
        for (o, needle) in [
            (vec![("type", "nfs"), ("export", "/x")], "needs the server"),
            (vec![("type", "nfs"), ("addr", "h")], "needs the export"),
            (vec![("type", "nfs"), ("addr", "h"), ("export", "x")], "absolute path"),
            (vec![("type", "nfs"), ("addr", "h"), ("export", "/x"), ("vers", "2")], "valid versions"),
            (vec![("type", "nfs"), ("addr", "h"), ("export", "/x"), ("subdir", "../up")], "without '..'"),
            (vec![("type", "nfs"), ("addr", "h"), ("export", "/x"), ("size", "1G")], "not in this version"),
            (vec![("type", "nfs"), ("addr", "h;rm"), ("export", "/x")], "host name"),
            (vec![("type", "nfs"), ("addr", "h"), ("export", "/x"), ("o", "port=0")], "port number"),
            (vec![("type", "nfs"), ("addr", "h"), ("export", "/x"), ("share", "//h/s")], "not available"),
            (
                vec![("type", "nfs"), ("addr", "h"), ("export", "/x"), ("fs", "xfs")],
                "valid options: type, size, uid, gid, mode, on-remove, addr",
            ),
        ] {
            let e = parse_options(&opts(&o)).expect_err("must fail").to_string();
            assert!(e.contains(needle), "{o:?}: {e}");
        }
    }
}

mod cifs_option_tests {
    use super::*;

    #[test]
    fn local_driver_spelling_moves_the_password_out() {
        let p = parse_full(&opts(&[
            ("type", "cifs"),
            ("device", "//127.0.0.1/data"),
            ("o", "username=smbtest,password=s3cret,vers=3.0,port=18445"),
        ]))
        .expect("ok");
        assert_eq!(p.inline_password.as_deref(), Some("s3cret"));
        assert_eq!(p.stored["o"], "username=smbtest,vers=3.0,port=18445");
        assert!(!format!("{:?}{:?}", p.stored, p.spec).contains("s3cret"));
        let t = p.spec.cifs.expect("cifs");
        assert_eq!((t.host.as_str(), t.share.as_str(), t.port), ("127.0.0.1", "data", Some(18445)));
    }

    #[test]
    fn native_spelling_and_errors() {
        let s =
            parse_options(&opts(&[("type", "cifs"), ("share", "//h/s/base"), ("username", "u"), ("secret", "smb")]))
                .expect("ok");
        let t = s.cifs.expect("cifs");
        assert_eq!((t.base.as_str(), t.secret.as_deref()), ("base", Some("smb")));
        for (o, needle) in [
            (vec![("type", "cifs"), ("share", "//h/s"), ("secret", "x"), ("o", "password=p")], "not both"),
            (vec![("type", "cifs"), ("share", "h/s")], "//host/share"),
            (vec![("type", "cifs"), ("share", "//h/s"), ("o", "credentials=/etc/x")], "not supported"),
            (
                vec![("type", "cifs"), ("share", "//h/s"), ("addr", "h")],
                "valid options: type, size, uid, gid, mode, on-remove, share",
            ),
        ] {
            let e = parse_options(&opts(&o)).expect_err("must fail").to_string();
            assert!(e.contains(needle), "{o:?}: {e}");
            assert!(!e.contains("password=p"), "{e}");
        }
    }
}

/// Found by fuzzing (fuzz/README.md, volume_options): `-o type=tmpfs -o o=password=...`
/// answered "invalid value \"password=hunter2\" for option o", the password in the message
/// (returned to the caller and logged). Whatever the volume type, a refused `o=` option shows
/// no password.
#[test]
fn an_o_option_error_does_not_show_the_password() {
    let cases = [
        opts(&[("type", "tmpfs"), ("o", "size=16m,password=hunter2")]),
        opts(&[("type", "tmpfs"), ("o", "pass=hunter2")]),
        opts(&[("type", "nfs"), ("device", "h:/x"), ("o", "pass=hunter2 x")]),
        opts(&[("type", "cifs"), ("share", "//h/s"), ("o", "pass=,,hunter2")]),
    ];
    for o in cases {
        let e = parse_options(&o).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!e.contains("hunter2"), "{o:?}: {e}");
    }
    let e = parse_options(&opts(&[("type", "tmpfs"), ("o", "password=hunter2")])).expect_err("refused").to_string();
    assert!(e.contains("password=…") && e.contains("for option o"), "{e}");
}

#[test]
fn size_errors_are_kinds_with_the_same_words() {
    let cases: &[(&str, SizeError, &str)] = &[
        ("", SizeError::Syntax, "expected a number with an optional unit, e.g. 512M, 10G, 1.5GiB"),
        ("1..5G", SizeError::Syntax, "expected a number with an optional unit, e.g. 512M, 10G, 1.5GiB"),
        ("12Q", SizeError::Unit("Q".into()), "unknown unit \"Q\"; use K, M, G, T or P (binary units)"),
        ("0", SizeError::Zero, "the size must be greater than zero"),
        ("0.0000001K", SizeError::Zero, "the size must be greater than zero"),
        ("99999999999999999999999P", SizeError::Digits, "number too large"),
        ("1.0000000000001G", SizeError::Digits, "number too large"),
        ("8192P", SizeError::TooLarge, "the size is too large"),
    ];
    for (input, kind, words) in cases {
        let e = parse_size(input).expect_err(input);
        assert_eq!(&e, kind, "{input:?}");
        assert_eq!(e.to_string(), *words, "{input:?}");
    }
    let e = parse_options(&opts(&[("size", "12Q")])).expect_err("12Q").to_string();
    assert_eq!(e, "invalid value \"12Q\" for option size: unknown unit \"Q\"; use K, M, G, T or P (binary units)");
}
