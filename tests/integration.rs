//! The `voltool` binary end to end without Docker: the daemon on temporary sockets, the CLI
//! against it, the plugin protocol over the real socket, restart and reconciliation.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn help_teaches() {
    let o = Command::new(bin()).arg("--help").output().expect("help");
    let h = stdout(&o);
    for needle in ["Quick start", "docker volume create -d voltool", "serve", "volume", "doctor"] {
        assert!(h.contains(needle), "--help lacks {needle:?}:\n{h}");
    }
    let o = Command::new(bin()).args(["volume", "create", "--help"]).output().expect("help");
    assert!(stdout(&o).contains("KEY=VALUE"));
}

#[test]
fn cli_without_daemon_says_what_to_do() {
    let o = Command::new(bin())
        .args(["volume", "ls"])
        .env("VOLTOOL_API_SOCKET", "/nonexistent/voltool.sock")
        .output()
        .expect("cli");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("cannot reach the voltool daemon at /nonexistent/voltool.sock") && e.contains("voltool serve"),
        "{e}"
    );
}

#[test]
fn cli_manages_volumes_and_refuses_bad_input() {
    let d = Daemon::start();
    let o = d.cli(&["volume", "create", "t1", "-o", "type=tmpfs", "-o", "size=16m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "t1");
    for (args, needle) in [
        (vec!["volume", "create", "../x"], "invalid volume name"),
        (vec!["volume", "create", "ok", "-o", "foo=1"], "valid options: type, size, uid, gid, mode"),
        (vec!["volume", "create", "ok", "-o", "type=tmpfs", "-o", "size=12Q"], "unknown unit"),
        (vec!["volume", "create", "ok", "-o", "novalue"], "must be KEY=VALUE"),
        (vec!["volume", "inspect", "missing"], "volume missing not found"),
        (vec!["volume", "rm", "missing"], "volume missing not found"),
    ] {
        let o = d.cli(&args);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    let o = d.cli(&["volume", "ls", "-q"]);
    assert_eq!(stdout(&o), "t1", "only the good volume exists");
    let o = d.cli(&["volume", "inspect", "--json", "t1"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(j[0]["Name"], "t1");
    assert_eq!(j[0]["Driver"], "plugin");
    assert_eq!(j[0]["Options"], serde_json::json!({"type": "tmpfs", "size": "16m"}));
    assert_eq!(j[0]["Status"]["size_limit"], "16 MiB");
    let o = d.cli(&["volume", "rm", "t1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&d.cli(&["volume", "ls", "-q"])), "");
}

#[test]
fn second_daemon_on_live_socket_is_refused() {
    let d = Daemon::start();
    let (state, plugin, api) = Daemon::paths(d.dir.path());
    // The same state dir (even on other sockets): refused by the state-dir lock.
    let o = Command::new(bin())
        .args(["serve", "--state-dir"])
        .arg(&state)
        .args(["--plugin-socket", "/nonexistent-dir/p.sock", "--api-socket", "/nonexistent-dir/a.sock"])
        .output()
        .expect("second daemon");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("in use by another voltool daemon"), "{}", stderr(&o));
    // Another state dir but the same sockets: refused on the socket.
    let other_dir = tempfile::tempdir().expect("tmp");
    let o = Command::new(bin())
        .args(["serve", "--state-dir"])
        .arg(other_dir.path())
        .arg("--plugin-socket")
        .arg(&plugin)
        .arg("--api-socket")
        .arg(&api)
        .output()
        .expect("second daemon");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("another process is already serving the plugin socket"), "{}", stderr(&o));
    // The first daemon still answers.
    assert!(d.cli(&["volume", "ls"]).status.success());
}

#[test]
fn mounts_refcount_and_survive_crash_restart() {
    if !root_or_skip("mounts_refcount_and_survive_crash_restart", "real mounts") {
        return;
    }
    let mut d = Daemon::start();
    assert_eq!(d.post("/VolumeDriver.Create", r#"{"Name":"v","Opts":{"mode":"0700"}}"#), (200, r#"{"Err":""}"#.into()));
    let mp = d.mountpoint("v");
    let (s, body) = d.post("/VolumeDriver.Mount", r#"{"Name":"v","ID":"a"}"#);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains(&*mp.to_string_lossy()), "{body}");
    d.post("/VolumeDriver.Mount", r#"{"Name":"v","ID":"b"}"#);
    std::fs::write(mp.join("f"), b"data").expect("write through mount");
    assert!(host_mounted(&mp));
    // kill -9: mounts stay in the host namespace; the IDs are persisted and still valid.
    d.restart();
    assert!(host_mounted(&mp));
    assert_eq!(d.post("/VolumeDriver.Unmount", r#"{"Name":"v","ID":"a"}"#).0, 200);
    assert!(host_mounted(&mp), "b still holds it");
    assert_eq!(d.post("/VolumeDriver.Unmount", r#"{"Name":"v","ID":"zzz"}"#), (200, r#"{"Err":""}"#.into()));
    assert_eq!(d.post("/VolumeDriver.Unmount", r#"{"Name":"v","ID":"b"}"#).0, 200);
    assert!(!host_mounted(&mp), "last ID released: unmounted");
    // A mount that vanished while the daemon was down: IDs dropped at start, remount works.
    d.post("/VolumeDriver.Mount", r#"{"Name":"v","ID":"c"}"#);
    if let Some(mut c) = d.child.take() {
        c.kill().expect("kill");
        c.wait().expect("wait");
    }
    assert!(Command::new("umount").arg(&mp).status().expect("umount").success());
    d.restart();
    // The sockets accept before reconciliation ends; requests wait until it has. So the
    // first answer guarantees the reconcile log line is written.
    let o = d.cli(&["volume", "inspect", "--json", "v"]);
    assert!(d.log().contains("mount gone since last run"), "{}", d.log());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!((j[0]["Status"]["mounted"].clone(), j[0]["Status"]["mount_count"].clone()), (false.into(), 0.into()));
    d.post("/VolumeDriver.Mount", r#"{"Name":"v","ID":"d"}"#);
    assert_eq!(std::fs::read(mp.join("f")).expect("data back"), b"data");
    d.post("/VolumeDriver.Unmount", r#"{"Name":"v","ID":"d"}"#);
    assert!(!host_mounted(&mp));
    // The same reference counting without Docker: voltool volume mount/unmount.
    let o = d.cli(&["volume", "mount", "v"]);
    assert_eq!(stdout(&o), mp.display().to_string(), "{}", stderr(&o));
    assert!(host_mounted(&mp));
    assert!(d.cli(&["volume", "unmount", "v"]).status.success());
    assert!(!host_mounted(&mp));
}

#[test]
fn secrets_are_stored_private_and_never_echoed() {
    let d = Daemon::start();
    let secret = "s3cr3t-Value-42";
    let add = |name: &str, input: &str| secret_add(&d, name, input);
    let o = add("smb-pass", &format!("{secret}\n"));
    assert!(o.status.success(), "{}", stderr(&o));
    let file = d.dir.path().join("state/secrets/smb-pass");
    assert_eq!(std::fs::read_to_string(&file).expect("stored"), secret, "one trailing newline dropped");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).expect("md").permissions().mode() & 0o777, 0o600);
    let bad = add("../escape", secret);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid secret name"), "{}", stderr(&bad));
    let empty = add("e", "");
    assert!(!empty.status.success() && stderr(&empty).contains("is empty"), "{}", stderr(&empty));
    let ls = d.cli(&["secret", "ls", "--json"]);
    assert!(stdout(&ls).contains("smb-pass"));
    let rm = d.cli(&["secret", "rm", "smb-pass", "nope"]);
    assert!(!rm.status.success() && stderr(&rm).contains("secret nope not found"), "{}", stderr(&rm));
    assert!(!file.exists());
    for (what, text) in
        [("outputs", format!("{}{}{}{}", stdout(&o), stderr(&bad), stdout(&ls), stderr(&rm))), ("log", d.log())]
    {
        assert!(!text.contains(secret), "secret leaked into {what}");
    }
}

/// The export directory of the test NFS server (deploy/test-env/nfs/start-ganesha.sh), as
/// exported by test.sh in VOLTOOL_TEST_NFS_EXPORT.
fn nfs_export(test: &str) -> Option<PathBuf> {
    match std::env::var("VOLTOOL_TEST_NFS_EXPORT") {
        Ok(p) if Path::new(&p).is_dir() => Some(PathBuf::from(p)),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: CI must provide the NFS server (test.sh)");
            println!("SKIP {test}: no test NFS server (run deploy/test-env/test.sh, or set VOLTOOL_TEST_NFS_EXPORT)");
            None
        }
    }
}

/// `voltool volume create VOL` of an nfs volume on the test server's export, in the seed
/// recipe's spelling plus the test server's ports, with `extra` options.
fn create_nfs_volume(d: &Daemon, vol: &str, export: &Path, extra: &[&str]) -> Output {
    let device = format!("device=:{}", export.display());
    let mut args =
        vec!["volume", "create", vol, "-o", "type=nfs", "-o", "o=addr=127.0.0.1,rw,port=18049,mountport=18048"];
    args.extend(["-o", device.as_str()]);
    for e in extra {
        args.extend(["-o", e]);
    }
    d.cli(&args)
}

/// Tests that use (and may stop) the shared NFS server run one at a time.
static NFS_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn nfs_create_checks_the_server_and_prepares_the_subdir() {
    let Some(export) = nfs_export("nfs_create_checks_the_server_and_prepares_the_subdir") else { return };
    let _server = NFS_SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let d = Daemon::start();
    let ex = export.display().to_string();
    // A name of this run only: the server may cache a directory of an earlier run that was
    // removed behind its back, and answer NFS3ERR_STALE for it.
    let vol = format!("it-nfs1-{}", std::process::id());
    let vol = vol.as_str();
    let o = create_nfs_volume(&d, vol, &export, &["mode=0750", "uid=4321"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::metadata(export.join(vol)).expect("subdir made on the server");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!((md.permissions().mode() & 0o7777, md.uid()), (0o750, 4321));
    assert_eq!(std::fs::read_dir(export.join(vol)).expect("dir").count(), 0, "probe file removed");
    let j: serde_json::Value =
        serde_json::from_slice(&d.cli(&["volume", "inspect", "--json", vol]).stdout).expect("json");
    assert_eq!(j[0]["Status"]["type"], "nfs");
    let good_export = format!("export={ex}");
    for (args, needle) in [
        (vec!["o=addr=127.0.0.1,port=18049,mountport=18048", "export=/no/such/export"], "the export does not exist"),
        (vec!["addr=no-such-host.invalid", "export=/x"], "name lookup failed"),
        (vec!["o=addr=127.0.0.1,port=18999,mountport=18998", good_export.as_str()], "refused the connection"),
    ] {
        let t0 = Instant::now();
        let mut full = vec!["volume", "create", "it-nfs-bad", "-o", "type=nfs"];
        for a in &args {
            full.extend(["-o", a]);
        }
        let o = d.cli(&full);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(t0.elapsed() < Duration::from_secs(15), "{args:?} took {:?}", t0.elapsed());
    }
    assert_eq!(stdout(&d.cli(&["volume", "ls", "-q"])), vol, "failed creates leave nothing");
    // Removing keeps the remote data (on-remove defaults to retain for nfs).
    std::fs::write(export.join(format!("{vol}/keep")), b"x").expect("write on server");
    assert!(d.cli(&["volume", "rm", vol]).status.success());
    assert!(export.join(format!("{vol}/keep")).exists());
    let _ = std::fs::remove_dir_all(export.join(vol));
}

/// The share directory of the test Samba server (deploy/test-env/smb/start-samba.sh):
/// share `data` on 127.0.0.1:18445, user smbtest, password in VOLTOOL_TEST_SMB_PASSWORD.
fn smb_share(test: &str) -> Option<(PathBuf, String)> {
    match (std::env::var("VOLTOOL_TEST_SMB_SHARE"), std::env::var("VOLTOOL_TEST_SMB_PASSWORD")) {
        (Ok(p), Ok(pw)) if Path::new(&p).is_dir() => Some((PathBuf::from(p), pw)),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: CI must provide the SMB server (test.sh)");
            println!("SKIP {test}: no test SMB server (run deploy/test-env/test.sh)");
            None
        }
    }
}

fn add_secret(d: &Daemon, name: &str, value: &str) {
    let o = secret_add(d, name, value);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `voltool secret add NAME` with `value` on stdin.
fn secret_add(d: &Daemon, name: &str, value: &str) -> Output {
    d.cli_stdin(&["secret", "add", name], value.as_bytes())
}

#[test]
fn cifs_create_checks_the_share_and_never_leaks_the_password() {
    let Some((share, password)) = smb_share("cifs_create_checks_the_share_and_never_leaks_the_password") else {
        return;
    };
    let d = Daemon::start();
    for v in ["it-cifs1", "it-cifs2"] {
        let _ = std::fs::remove_dir_all(share.join(v));
    }
    add_secret(&d, "smbpw", &password);
    add_secret(&d, "wrongpw", "not-the-password");
    let base = ["-o", "type=cifs", "-o", "share=//127.0.0.1/data", "-o", "username=smbtest", "-o", "o=port=18445"];
    let create = |name: &str, extra: &[&str]| {
        let mut a = vec!["volume", "create", name];
        a.extend(base);
        a.extend(extra);
        d.cli(&a)
    };
    let o = create("it-cifs1", &["-o", "secret=smbpw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(share.join("it-cifs1").is_dir(), "volume directory made on the share");
    assert_eq!(std::fs::read_dir(share.join("it-cifs1")).expect("dir").count(), 0, "probe removed");
    // The local driver's spelling: the password is moved into a secret, with a warning.
    let seed_o = format!("o=username=smbtest,password={password},port=18445");
    let o = d.cli(&["volume", "create", "it-cifs2", "-o", "type=cifs", "-o", "device=//127.0.0.1/data", "-o", &seed_o]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("moved into secret it-cifs2-password"), "{}", stderr(&o));
    for (name, extra, needle) in [
        ("it-cifs-bad1", vec!["-o", "secret=wrongpw"], "wrong username or password"),
        ("it-cifs-bad2", vec!["-o", "secret=nosuch"], "secret nosuch not found"),
    ] {
        let t0 = Instant::now();
        let o = create(name, &extra);
        assert!(!o.status.success() && stderr(&o).contains(needle), "{name}: {}", stderr(&o));
        assert!(t0.elapsed() < Duration::from_secs(15));
    }
    let o = d.cli(&[
        "volume",
        "create",
        "it-cifs-bad3",
        "-o",
        "type=cifs",
        "-o",
        "share=//127.0.0.1/nosuchshare",
        "-o",
        "username=smbtest",
        "-o",
        "secret=smbpw",
        "-o",
        "o=port=18445",
    ]);
    assert!(!o.status.success() && stderr(&o).contains("share nosuchshare not found"), "{}", stderr(&o));
    // The password appears nowhere: inspect, listings, the log, the state files.
    let mut seen = String::new();
    for args in [
        vec!["volume", "inspect", "--json", "it-cifs1", "it-cifs2"],
        vec!["volume", "ls", "--json"],
        vec!["secret", "ls", "--json"],
    ] {
        let o = d.cli(&args);
        seen.push_str(&stdout(&o));
        seen.push_str(&stderr(&o));
    }
    seen.push_str(&d.log());
    assert!(!seen.contains(&password), "password leaked into output or log");
    for f in std::fs::read_dir(d.dir.path().join("state")).expect("state").flatten() {
        if f.file_name().to_string_lossy().starts_with("voltool.db") {
            let bytes = std::fs::read(f.path()).expect("read db");
            assert!(
                !bytes.windows(password.len()).any(|w| w == password.as_bytes()),
                "password in {}",
                f.path().display()
            );
        }
    }
    let j: serde_json::Value =
        serde_json::from_slice(&d.cli(&["volume", "inspect", "--json", "it-cifs2"]).stdout).expect("json");
    assert_eq!(j[0]["Options"]["o"], "username=smbtest,port=18445");
    let o = d.cli(&["secret", "rm", "smbpw"]);
    assert!(!o.status.success() && stderr(&o).contains("used by volume(s) it-cifs1"), "{}", stderr(&o));
    for v in ["it-cifs1", "it-cifs2"] {
        assert!(d.cli(&["volume", "rm", v]).status.success());
        let _ = std::fs::remove_dir_all(share.join(v));
    }
}

/// Resumes a SIGSTOPped process when dropped, so a failing test never leaves the shared
/// server stopped.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

#[test]
fn stopped_nfs_server_fails_its_mount_in_time_and_blocks_nothing_else() {
    let test = "stopped_nfs_server_fails_its_mount_in_time_and_blocks_nothing_else";
    let Some(export) = nfs_export(test) else { return };
    if !root_or_skip(test, "real mounts") {
        return;
    }
    let _server = NFS_SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let pidfile = std::env::var("VOLTOOL_TEST_NFS_PIDFILE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| export.parent().expect("nfs dir").join("ganesha.pid"));
    let pid =
        std::fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("{}: {e}", pidfile.display())).trim().to_string();
    let d = Daemon::start();
    let vol = format!("it-hung-{}", std::process::id());
    let vol = vol.as_str();
    let o = create_nfs_volume(&d, vol, &export, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.cli(&["volume", "create", "it-local"]).status.success());
    // The server stops answering (not refusing: hanging).
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    let resume = Resume(pid);
    let hung = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let t0 = Instant::now();
            let r = d.post("/VolumeDriver.Mount", &format!(r#"{{"Name":"{vol}","ID":"h1"}}"#));
            (r, t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        // Meanwhile a local volume mounts and unmounts at full speed.
        let mut worst = Duration::ZERO;
        for i in 0..20 {
            let t0 = Instant::now();
            let (s1, b1) = d.post("/VolumeDriver.Mount", &format!(r#"{{"Name":"it-local","ID":"l{i}"}}"#));
            let (s2, b2) = d.post("/VolumeDriver.Unmount", &format!(r#"{{"Name":"it-local","ID":"l{i}"}}"#));
            assert_eq!((s1, s2), (200, 200), "{b1} {b2}");
            worst = worst.max(t0.elapsed());
        }
        assert!(worst < Duration::from_millis(50), "local Mount+Unmount took {worst:?} while the nfs server hung");
        h.join().expect("join")
    });
    let ((status, body), took) = hung;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains(vol), "{body}");
    assert!(took < Duration::from_secs(16), "the hung mount failed only after {took:?}");
    drop(resume);
    // The server is back: the volume mounts and its data is the server's.
    std::fs::write(export.join(format!("{vol}/back.txt")), b"ok").expect("write on server");
    let (s, body) = d.post("/VolumeDriver.Mount", &format!(r#"{{"Name":"{vol}","ID":"h2"}}"#));
    assert_eq!(s, 200, "{body}");
    assert_eq!(std::fs::read(d.mountpoint(vol).join("back.txt")).expect("through the mount"), b"ok");
    assert_eq!(d.post("/VolumeDriver.Unmount", &format!(r#"{{"Name":"{vol}","ID":"h2"}}"#)).0, 200);
    let _ = std::fs::remove_dir_all(export.join(vol));
}
