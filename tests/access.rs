//! Who may do what, end to end (issue 12 items 6 and 7): secrets go only to the servers they
//! are bound to, the management socket admits root and the `[api] group` only, and volume
//! options from Docker name only backup targets from the config file.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;
use common::*;

/// `voltool secret add NAME [--server HOST]...` with `value` on stdin.
fn secret_add(d: &Daemon, name: &str, value: &str, servers: &[&str]) -> Output {
    let mut args = vec!["secret", "add", name];
    for s in servers {
        args.extend(["--server", s]);
    }
    d.cli_stdin(&args, value.as_bytes())
}

/// A TCP "server" on loopback that counts the connections made to it and drops each.
fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(c);
        }
    });
    (port, n)
}

/// `volume create VOL -o type=cifs -o share=SHARE -o o=port=PORT[,O] EXTRA...`.
fn cifs_create(d: &Daemon, vol: &str, share: &str, port: u16, o: &str, extra: &[&str]) -> Output {
    let o = if o.is_empty() { format!("o=port={port}") } else { format!("o=port={port},{o}") };
    let mut a = vec!["volume", "create", vol, "-o", "type=cifs", "-o"];
    let share = format!("share={share}");
    a.extend([share.as_str(), "-o", o.as_str()]);
    a.extend(extra);
    d.cli(&a)
}

#[test]
fn secret_bound_to_another_server_is_refused_at_create_and_nothing_is_sent() {
    let (port, conns) = counting_server();
    let d = Daemon::start();
    let o = secret_add(&d, "smb", "s3cret-value", &["nas.example", "NAS2.example"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.cli(&["secret", "ls"]);
    assert!(stdout(&o).contains("nas.example,nas2.example"), "ls shows the servers: {}", stdout(&o));

    let o = cifs_create(&d, "acc-v1", "//127.0.0.1/data", port, "", &["-o", "username=u", "-o", "secret=smb"]);
    assert!(!o.status.success(), "created with a secret bound elsewhere");
    let e = stderr(&o);
    assert!(e.contains("secret smb may be sent only to nas.example, nas2.example, not to server 127.0.0.1"), "{e}");
    assert!(!e.contains("s3cret-value"), "{e}");
    assert_eq!(conns.load(Ordering::SeqCst), 0, "nothing was sent to the server");
    assert!(!stdout(&d.cli(&["volume", "ls"])).contains("acc-v1"));

    // An inline password never replaces another value of the secret it would create.
    let o = secret_add(&d, "acc-v2-password", "old-value", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cifs_create(&d, "acc-v2", "//127.0.0.1/data", port, "username=u,password=new,,value", &[]);
    assert!(!o.status.success(), "an inline password replaced a secret");
    let e = stderr(&o);
    assert!(e.contains("secret acc-v2-password already exists with another value"), "{e}");
    assert!(!e.contains("new,value") && !e.contains("new,,value"), "{e}");
    assert_eq!(conns.load(Ordering::SeqCst), 0, "nothing was sent to the server");
    let file = d.state().join("secrets/acc-v2-password");
    assert_eq!(std::fs::read(&file).expect("secret"), b"old-value", "unchanged");
    assert_eq!(std::fs::metadata(&file).expect("md").mode() & 0o777, 0o600);

    // A secret without servers is bound to the first server it is used with.
    let o =
        cifs_create(&d, "acc-v3", "//127.0.0.1/data", port, "", &["-o", "username=u", "-o", "secret=acc-v2-password"]);
    assert!(!o.status.success(), "the counting server speaks no SMB");
    assert_eq!(conns.load(Ordering::SeqCst), 1, "the first use went to the server");
    assert!(d.log().contains("bound it to the first server it is used with"), "{}", d.log());
    let ls = stdout(&d.cli(&["secret", "ls", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&ls).expect("json");
    let entry = list.as_array().expect("list").iter().find(|s| s["name"] == "acc-v2-password").expect("listed");
    assert_eq!(entry["servers"], serde_json::json!(["127.0.0.1"]));
    let o =
        cifs_create(&d, "acc-v4", "//localhost/data", port, "", &["-o", "username=u", "-o", "secret=acc-v2-password"]);
    assert!(stderr(&o).contains("may be sent only to 127.0.0.1, not to server localhost"), "{}", stderr(&o));
    assert_eq!(conns.load(Ordering::SeqCst), 1, "not sent to the second server");
    assert!(!d.log().contains("s3cret-value") && !d.log().contains("old-value"), "no value in the log");
}

/// `[api] group` for the test: an existing group that `nobody` is not a member of.
fn test_group() -> Option<(String, u32)> {
    for name in ["daemon", "bin", "sys"] {
        if let Ok(Some(g)) = nix::unistd::Group::from_name(name)
            && !g.mem.iter().any(|m| m == "nobody")
        {
            return Some((name.to_string(), g.gid.as_raw()));
        }
    }
    None
}

/// Runs the CLI (a copy every user may execute) as uid 65534 with `gid` and `groups`.
fn cli_as(d: &Daemon, cli: &Path, gid: u32, groups: Option<u32>, args: &[&str]) -> Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", &format!("--regid={gid}")]);
    match groups {
        Some(g) => c.arg(format!("--groups={g}")),
        None => c.arg("--clear-groups"),
    };
    c.arg(cli).args(args).env("VOLTOOL_API_SOCKET", Daemon::paths(d.dir.path()).2).output().expect("setpriv")
}

#[test]
fn management_socket_refuses_users_outside_the_group() {
    if !root_or_skip("management_socket_refuses_users_outside_the_group", "runs the CLI as nobody with setpriv") {
        return;
    }
    let (group, gid) = test_group().expect("a group daemon, bin or sys without nobody");
    let d = Daemon::start_with(&format!("[api]\ngroup = \"{group}\"\n"), &[]);
    // nobody must reach the socket's directory and run the CLI.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let cli = d.dir.path().join("voltool-cli");
    std::fs::copy(bin(), &cli).expect("copy cli");
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).expect("chmod cli");
    let sock = Daemon::paths(d.dir.path()).2;
    let md = std::fs::metadata(&sock).expect("socket");
    assert_eq!((md.mode() & 0o777, md.gid()), (0o660, gid), "socket 0660 root:{group}");

    // Outside the group: the socket's mode keeps nobody out...
    let o = cli_as(&d, &cli, 65534, None, &["volume", "ls"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("permission denied: cannot connect"), "{}", stderr(&o));
    // ...and with the mode opened up (a mistake), the daemon's peer check still does.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod socket");
    for args in [&["volume", "ls"][..], &["secret", "ls"], &["backup", "ls"]] {
        let o = cli_as(&d, &cli, 65534, None, args);
        assert!(!o.status.success(), "{args:?} allowed");
        let want =
            format!("permission denied: uid 65534 may not use the voltool management API (root or group {group})");
        assert!(stderr(&o).contains(&want), "{args:?}: {}", stderr(&o));
    }
    assert!(d.log().contains("management API: peer refused"), "{}", d.log());
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660)).expect("chmod socket back");

    // A member of the group, by a supplementary group or as the primary one: admitted.
    let o = cli_as(&d, &cli, 65534, Some(gid), &["volume", "ls"]);
    assert!(o.status.success(), "supplementary group: {}", stderr(&o));
    let o = cli_as(&d, &cli, gid, None, &["secret", "ls"]);
    assert!(o.status.success(), "primary group: {}", stderr(&o));
    // Root is always admitted.
    assert!(d.cli(&["volume", "ls"]).status.success());
}

#[test]
fn management_socket_without_a_group_admits_root_only() {
    if !root_or_skip("management_socket_without_a_group_admits_root_only", "runs the CLI as nobody with setpriv") {
        return;
    }
    let d = Daemon::start();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let cli = d.dir.path().join("voltool-cli");
    std::fs::copy(bin(), &cli).expect("copy cli");
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).expect("chmod cli");
    let sock = Daemon::paths(d.dir.path()).2;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod socket");
    let o = cli_as(&d, &cli, 0, None, &["volume", "ls"]);
    assert!(!o.status.success(), "gid 0 without uid 0 admitted");
    assert!(stderr(&o).contains("permission denied: uid 65534") && stderr(&o).contains("root only"), "{}", stderr(&o));
    assert!(d.cli(&["volume", "ls"]).status.success());
}

#[test]
fn docker_given_backup_targets_are_limited_to_the_config() {
    let t = tempfile::tempdir().expect("tmp");
    let allowed = t.path().join("allowed");
    let config = format!(
        "[backup]\nallowed-dirs = [\"{}\"]\n[targets.nightly]\nurl = \"{}\"\n[targets.offsite]\nurl = \"s3://bkt/p\"\nendpoint = \"http://127.0.0.1:18014\"\n",
        allowed.display(),
        t.path().join("nightly").display()
    );
    let d = Daemon::start_with(&config, &[]);
    let create = |name: &str, target: &str| {
        let body = serde_json::json!({ "Name": name, "Opts": { "backup-target": target } }).to_string();
        let (status, body) = d.post("/VolumeDriver.Create", &body);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (status, v["Err"].as_str().unwrap_or("no Err").to_string())
    };
    let somewhere = t.path().join("somewhere/else").display().to_string();
    for (vol, target, needle) in [
        ("acc-t1", somewhere.as_str(), "not under [backup] allowed-dirs"),
        ("acc-t2", "s3://evil/p?endpoint=http://10.9.9.9:9000", "only from the config file"),
        ("acc-t3", "s3://bkt/p", "only from the config file"),
        ("acc-t4", "elsewhere", "no target \"elsewhere\" in the config file"),
    ] {
        let (status, err) = create(vol, target);
        assert_ne!(status, 200, "{target} accepted from Docker");
        assert!(err.contains(needle) && err.contains("nightly, offsite"), "{target}: {err}");
        assert!(!stdout(&d.cli(&["volume", "ls"])).contains(vol), "{vol} was created");
    }
    let under = allowed.join("db").display().to_string();
    for (vol, target) in [("acc-t5", "nightly"), ("acc-t6", "offsite"), ("acc-t7", under.as_str())] {
        let (status, err) = create(vol, target);
        assert_eq!((status, err.as_str()), (200, ""), "{target} refused from Docker");
    }
    // The management API (root or the [api] group) may give any target; Docker may then
    // repeat that create with exactly its options (nothing new is named), nothing else.
    let o = d.cli(&["volume", "create", "acc-t8", "-o", &format!("backup-target={somewhere}")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(create("acc-t8", &somewhere), (200, String::new()), "Docker repeating the CLI's create");
    let (status, err) = create("acc-t8", "s3://evil/p");
    assert!(status != 200 && err.contains("only from the config file"), "{err}");
}

/// The share directory and password of the test Samba server (deploy/test-env/smb:
/// share `data` on 127.0.0.1:18445, user smbtest), or SKIP outside CI.
fn smb_share(test: &str) -> Option<(std::path::PathBuf, String)> {
    match (std::env::var("VOLTOOL_TEST_SMB_SHARE"), std::env::var("VOLTOOL_TEST_SMB_PASSWORD")) {
        (Ok(p), Ok(pw)) if Path::new(&p).is_dir() => Some((p.into(), pw)),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: CI must provide the SMB server (test.sh)");
            println!("SKIP {test}: no test SMB server (run deploy/test-env/test.sh)");
            None
        }
    }
}

/// Against the real test Samba server: a right password bound to another host never reaches
/// it (no session made the volume's directory), and the same create with the secret bound to
/// the share's host does (the control: the test would have seen a session).
#[test]
fn secret_bound_elsewhere_never_reaches_the_test_samba_server() {
    let test = "secret_bound_elsewhere_never_reaches_the_test_samba_server";
    let Some((share, password)) = smb_share(test) else { return };
    let d = Daemon::start();
    let vol = "acc-smb1";
    let _ = std::fs::remove_dir_all(share.join(vol));
    let o = secret_add(&d, "acc-smbpw", &password, &["nas.example"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let create =
        || cifs_create(&d, vol, "//127.0.0.1/data", 18445, "", &["-o", "username=smbtest", "-o", "secret=acc-smbpw"]);
    let o = create();
    assert!(!o.status.success(), "created with a secret bound to nas.example");
    assert!(stderr(&o).contains("may be sent only to nas.example, not to server 127.0.0.1"), "{}", stderr(&o));
    assert!(!share.join(vol).exists(), "a session reached the server and made the volume's directory");
    let o = secret_add(&d, "acc-smbpw", &password, &["nas.example", "127.0.0.1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = create();
    assert!(o.status.success(), "bound to the share's host: {}", stderr(&o));
    assert!(share.join(vol).is_dir(), "the control create reached the server");
    assert!(d.cli(&["volume", "rm", vol]).status.success());
    let _ = std::fs::remove_dir_all(share.join(vol));
}
