//! End-to-end suite against a real dockerd, run in both plugin modes: the managed plugin
//! (`voltool:latest`, installed by deploy/plugin.sh) and the host service on a legacy
//! socket (started by this test process). `bash deploy/test-env/test.sh` sets everything up.

mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Env, IMAGE, Mode, docker_fails, docker_ok, raw_post, run, text};

/// Generates `name::managed` and `name::legacy` tests from one scenario function.
macro_rules! both_modes {
    ($($name:ident => $scenario:ident $(exclusive $ex:tt)?;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn managed() {
                let test = concat!(stringify!($name), "::managed");
                if let Some(env) = both_modes!(@env test, Mode::Managed $(, $ex)?) { $scenario(&env) }
            }
            #[test]
            fn legacy() {
                let test = concat!(stringify!($name), "::legacy");
                if let Some(env) = both_modes!(@env test, Mode::Legacy $(, $ex)?) { $scenario(&env) }
            }
        }
    )*};
    (@env $t:expr, $m:expr) => { harness::env($t, $m) };
    (@env $t:expr, $m:expr, $ex:tt) => { harness::env_exclusive($t, $m) };
}

both_modes! {
    tmpfs_volume_has_hard_size_limit => tmpfs_size_enforced;
    local_volume_shared_between_containers => local_shared;
    twenty_concurrent_containers_one_mount => twenty_concurrent;
    volumes_survive_plugin_restart => survives_restart exclusive (x);
    bad_input_is_refused_and_creates_nothing => bad_input;
    size_limited_local_volume_enforces_and_grows => size_limited_local;
    xfs_volume_grows_while_mounted => xfs_grows_online;
    nfs_volume_shared_through_the_server => nfs_shared;
    network_volume_create_fails_early_with_the_reason => network_create_checks;
    cifs_secret_never_shows => cifs_secret_hidden;
    scheduled_backup_of_container_data_restores_with_tar => scheduled_backup;
    scheduled_backup_to_s3_of_container_data => scheduled_backup_s3;
    seed_recipe_backup_restores_byte_identical => seed_restore;
    restore_test_of_a_backup_runs_its_check => restore_test;
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn tmpfs_size_enforced(env: &Env) {
    let v = env.volume_name("tmpfs16");
    env.create_ok(&v, &["type=tmpfs", "size=16m"]);
    let o = env.run_in(
        &v,
        "df -Pk /data | tail -n 1; stat -f -c %T /data; dd if=/dev/zero of=/data/f bs=1M count=20 2>&1; echo rc=$?",
    );
    let t = text(&o);
    let df: Vec<&str> = t.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(df.get(1), Some(&"16384"), "16 MiB of 1K blocks: {t}");
    assert!(t.lines().any(|l| l == "tmpfs"), "filesystem type: {t}");
    assert!(t.contains("No space left on device"), "20 MiB into 16 MiB: {t}");
    assert!(t.contains("rc=1"), "{t}");
    let st = docker_ok(&["volume", "inspect", "-f", "{{json .Status}}", &v]);
    assert!(st.contains("\"size_limit\":\"16 MiB\""), "{st}");
    docker_ok(&["volume", "rm", &v]);
}

fn local_shared(env: &Env) {
    let v = env.volume_name("shared");
    env.create_ok(&v, &["uid=1234", "gid=2345", "mode=0750"]);
    let a = env.run_in(
        &v,
        "head -c 1048576 /dev/urandom > /data/blob && sha256sum /data/blob | cut -d' ' -f1 && stat -c '%u %g %a' /data",
    );
    assert!(a.status.success(), "writer: {}", text(&a));
    let a = out(&a);
    let mut lines = a.lines();
    let (sum_a, owner) = (lines.next().unwrap_or_default().to_string(), lines.next().unwrap_or_default().to_string());
    assert_eq!(owner, "1234 2345 750", "uid/gid/mode of the volume root");
    let b = env.run_in(&v, "sha256sum /data/blob | cut -d' ' -f1");
    assert!(b.status.success(), "reader: {}", text(&b));
    assert_eq!(out(&b), sum_a, "container B reads the bytes container A wrote");
    assert_eq!(sum_a.len(), 64);
    // Inspect shows exactly what the user passed.
    let opts = docker_ok(&["volume", "inspect", "-f", "{{json .Options}}", &v]);
    assert_eq!(opts, r#"{"gid":"2345","mode":"0750","uid":"1234"}"#);
    let ours = env.voltool(&["volume", "inspect", "--json", &v]);
    let j: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&ours)));
    assert_eq!(j[0]["Options"], serde_json::json!({"gid": "2345", "mode": "0750", "uid": "1234"}));
    assert!(j[0]["Status"]["used_bytes"].as_u64().unwrap_or(0) >= 1 << 20, "{j}");
    docker_ok(&["volume", "rm", &v]);
}

fn mount_count(env: &Env, v: &str) -> u64 {
    let o = env.voltool(&["volume", "inspect", "--json", v]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    j[0]["Status"]["mount_count"].as_u64().unwrap_or_else(|| panic!("mount_count in {j}"))
}

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    wait_within(Duration::from_secs(10), what, f);
}

fn wait_within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn twenty_concurrent(env: &Env) {
    let v = env.volume_name("twenty");
    env.create_ok(&v, &[]);
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|i| {
                let v = &v;
                s.spawn(move || {
                    let o = run(Command::new("docker").args([
                        "run",
                        "-d",
                        "--network",
                        "none",
                        "-v",
                        &format!("{v}:/data"),
                        IMAGE,
                        "sh",
                        "-c",
                        &format!("echo {i} > /data/c{i}; exec sleep 600"),
                    ]));
                    assert!(o.status.success(), "container {i}: {}", text(&o));
                    out(&o)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert!(env.host_mounted(&v), "mounted while containers run");
    assert_eq!(mount_count(env, &v), 20);
    wait_until("20 files", || out(&env.run_in(&v, "ls /data | wc -l")) == "20");
    std::thread::scope(|s| {
        for id in &ids[..19] {
            s.spawn(move || docker_ok(&["rm", "-f", id]));
        }
    });
    assert!(env.host_mounted(&v), "the last container still holds the volume");
    assert_eq!(mount_count(env, &v), 1);
    docker_ok(&["rm", "-f", &ids[19]]);
    wait_until("unmount after the last container", || !env.host_mounted(&v));
    assert_eq!(mount_count(env, &v), 0);
    docker_ok(&["volume", "rm", &v]);
}

fn survives_restart(env: &Env) {
    let (lv, tv) = (env.volume_name("keep-local"), env.volume_name("keep-tmpfs"));
    env.create_ok(&lv, &["mode=0700"]);
    env.create_ok(&tv, &["type=tmpfs", "size=8m"]);
    let w = env.run_in(&lv, "echo precious > /data/hello");
    assert!(w.status.success(), "{}", text(&w));
    // A container holds the volume across the restart.
    let holder = docker_ok(&["run", "-d", "--network", "none", "-v", &format!("{lv}:/data"), IMAGE, "sleep", "600"]);
    let before = out(&env.voltool(&["volume", "inspect", "--json", &lv, &tv]));
    env.restart_plugin();
    let ls = docker_ok(&["volume", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    for v in [&lv, &tv] {
        assert!(ls.lines().any(|l| l == format!("{v} {}", env.driver)), "{v} listed after restart: {ls}");
    }
    let after = out(&env.voltool(&["volume", "inspect", "--json", &lv, &tv]));
    let opts = |s: &str| -> Vec<serde_json::Value> {
        let j: serde_json::Value = serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"));
        j.as_array().expect("array").iter().map(|v| v["Options"].clone()).collect()
    };
    assert_eq!(opts(&before), opts(&after), "options survive");
    let r = env.run_in(&lv, "cat /data/hello && stat -c %a /data");
    assert_eq!(out(&r), "precious\n700", "data survives: {}", text(&r));
    let r = env.run_in(&tv, "df -Pk /data | tail -n 1");
    assert_eq!(out(&r).split_whitespace().nth(1), Some("8192"), "tmpfs volume works again: {}", text(&r));
    // The holder's Mount ID may have been dropped at restart; its Unmount must still succeed.
    docker_ok(&["rm", "-f", &holder]);
    wait_until("unmounted once nobody holds it", || !env.host_mounted(&lv));
    docker_ok(&["volume", "rm", &lv, &tv]);
}

fn bad_input(env: &Env) {
    let long = "x".repeat(300);
    let vt = env.volume_name("bad-valid-name");
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        ("../x".into(), vec![], ""),
        ("a/b".into(), vec![], ""),
        (long.clone(), vec![], ""),
        (vt.clone(), vec!["foo=1"], "valid options: type, size, uid, gid, mode"),
        (vt.clone(), vec!["type=tmpfs", "size=12Q"], "unknown unit"),
        (vt.clone(), vec!["type=zfs"], "unknown volume type \"zfs\""),
        (vt.clone(), vec!["size=1G", "quota=none"], "quota=none cannot enforce size"),
        (vt.clone(), vec!["size=64m", "fs=xfs"], "at least 300 MiB"),
        (vt.clone(), vec!["quota=image"], "need a size limit"),
    ];
    for (name, opts, needle) in &cases {
        let o = env.create(name, opts);
        let t = text(&o);
        assert!(!o.status.success(), "create {name:?} {opts:?} must fail: {t}");
        assert!(t.contains(needle), "create {name:?} {opts:?}: message should contain {needle:?}: {t}");
        docker_fails(&["volume", "inspect", name]);
    }
    // Straight to the plugin socket: empty and malformed bodies on every endpoint.
    let sock = env.plugin_socket();
    for ep in ["Create", "Remove", "Mount", "Unmount", "Path", "Get"] {
        for body in [&b""[..], b"{", b"[]", b"\xff\xfe", b"{\"Name\": 7}"] {
            let (status, resp) = raw_post(&sock, &format!("/VolumeDriver.{ep}"), body);
            if ep == "Get" && body.is_empty() {
                assert_eq!(resp, r#"{"Err":"","Volume":null}"#, "Get with empty body");
                continue;
            }
            assert_eq!(status, 500, "{ep} {body:?}: {resp}");
            let j: serde_json::Value =
                serde_json::from_str(&resp).unwrap_or_else(|e| panic!("{ep}: non-JSON reply {resp:?}: {e}"));
            assert!(!j["Err"].as_str().unwrap_or_default().is_empty(), "{ep} {body:?}: {resp}");
        }
    }
    let (_, resp) = raw_post(&sock, "/VolumeDriver.Get", br#"{"Name":"no-such-volume-here"}"#);
    assert_eq!(resp, r#"{"Err":"","Volume":null}"#);
    let ls = out(&env.voltool(&["volume", "ls", "-q"]));
    for (name, _, _) in &cases {
        assert!(!ls.lines().any(|l| l == name), "{name} must not exist: {ls}");
    }
    assert!(!ls.lines().any(|l| l.is_empty() || l.contains('/')), "{ls}");
}

/// Writes `mib` MiB into /data/NAME in a container; returns (MiB written, output).
fn fill(env: &Env, v: &str, file: &str, mib: u32) -> (u64, String) {
    let o = env.run_in(
        v,
        &format!("dd if=/dev/zero of=/data/{file} bs=1M count={mib} 2>&1; echo rc=$?; stat -c %s /data/{file}"),
    );
    let t = text(&o);
    let bytes: u64 = t.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("size in {t}"));
    (bytes >> 20, t)
}

fn status(env: &Env, v: &str) -> serde_json::Value {
    let o = env.voltool(&["volume", "inspect", "--json", v]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    j[0]["Status"].clone()
}

fn host_has_cap_sys_resource() -> bool {
    let st = std::fs::read_to_string("/proc/self/status").expect("status");
    let bnd = st.lines().find_map(|l| l.strip_prefix("CapBnd:")).map(str::trim).expect("CapBnd");
    u64::from_str_radix(bnd, 16).map(|b| b >> 24 & 1 == 1).unwrap_or(false)
}

fn size_limited_local(env: &Env) {
    let v = env.volume_name("quota64");
    env.create_ok(&v, &["size=64m"]);
    let (mib, t) = fill(env, &v, "big", 100);
    assert!(t.contains("No space left on device") && t.contains("rc=1"), "100 MiB into 64 MiB: {t}");
    assert!((50..=64).contains(&mib), "stopped at ~64 MiB, wrote {mib} MiB: {t}");
    let st = status(env, &v);
    assert_eq!(st["size_limit"], "64 MiB", "{st}");
    assert_eq!(st["backing"], "image (ext4)", "{st}");
    assert!(st["used_bytes"].as_u64().unwrap_or(0) >= 50 << 20, "usage reported: {st}");
    // Deleting frees the space again.
    let o = env.run_in(&v, "rm /data/big && dd if=/dev/zero of=/data/small bs=1M count=20 2>&1; echo rc=$?");
    assert!(text(&o).contains("rc=0"), "write after delete: {}", text(&o));
    // Grow while a container holds it: works where the daemon has CAP_SYS_RESOURCE, else a
    // clear error that says what to do.
    let holder = docker_ok(&["run", "-d", "--network", "none", "-v", &format!("{v}:/data"), IMAGE, "sleep", "600"]);
    let o = env.voltool(&["volume", "resize", &v, "128m"]);
    if host_has_cap_sys_resource() {
        assert!(o.status.success(), "online ext4 grow: {}", text(&o));
    } else {
        assert!(!o.status.success());
        assert!(text(&o).contains("CAP_SYS_RESOURCE") && text(&o).contains("resize it unmounted"), "{}", text(&o));
        assert_eq!(status(env, &v)["size_limit"], "64 MiB", "a failed grow changes nothing it reports");
    }
    docker_ok(&["rm", "-f", &holder]);
    wait_until("unmounted", || !env.host_mounted(&v));
    let o = env.voltool(&["volume", "resize", &v, "128m"]);
    assert!(o.status.success(), "grow while unmounted: {}", text(&o));
    assert!(env.run_in(&v, "rm /data/small").status.success());
    let (mib, t) = fill(env, &v, "big", 100);
    assert_eq!(mib, 100, "100 MiB fit after growing to 128 MiB: {t}");
    assert_eq!(status(env, &v)["size_limit"], "128 MiB");
    assert_eq!(
        docker_ok(&["volume", "inspect", "-f", "{{json .Options}}", &v]),
        r#"{"size":"64m"}"#,
        "docker keeps what the user passed"
    );
    let o = env.voltool(&["volume", "resize", &v, "32m"]);
    assert!(!o.status.success() && text(&o).contains("shrinking is not supported"), "{}", text(&o));
    docker_ok(&["volume", "rm", &v]);
}

fn xfs_grows_online(env: &Env) {
    let v = env.volume_name("xfs320");
    env.create_ok(&v, &["size=320m", "fs=xfs", "mode=0777"]);
    let holder = docker_ok(&["run", "-d", "--network", "none", "-v", &format!("{v}:/data"), IMAGE, "sleep", "600"]);
    let (mib, t) = fill(env, &v, "big", 400);
    assert!(t.contains("No space left on device"), "400 MiB into 320 MiB: {t}");
    assert!(mib < 320, "{t}");
    let o = env.voltool(&["volume", "resize", &v, "640m"]);
    assert!(o.status.success(), "grow xfs while mounted: {}", text(&o));
    assert!(env.host_mounted(&v), "stayed mounted");
    let (mib, t) = fill(env, &v, "big", 400);
    assert_eq!(mib, 400, "the write finishes after the grow: {t}");
    assert_eq!(status(env, &v)["backing"], "image (xfs)");
    docker_ok(&["rm", "-f", &holder]);
    docker_ok(&["volume", "rm", &v]);
}

fn nfs_shared(env: &Env) {
    let export = match std::env::var("VOLTOOL_TEST_NFS_EXPORT") {
        Ok(e) if std::path::Path::new(&e).is_dir() => e,
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must provide the NFS server (test.sh)");
            println!("SKIP nfs_volume_shared_through_the_server: no test NFS server (VOLTOOL_TEST_NFS_EXPORT)");
            return;
        }
    };
    let v = env.volume_name("nfs");
    let _ = std::fs::remove_dir_all(format!("{export}/{v}"));
    // The seed recipe as written (test.sh exports /export and runs a portmapper).
    env.create_ok(&v, &["type=nfs", "o=addr=127.0.0.1,rw", &format!("device=:{export}")]);
    let a = env.run_in(&v, "echo from-container-a > /data/a.txt && head -c 3000000 /dev/urandom > /data/blob && sha256sum /data/blob | cut -d' ' -f1");
    assert!(a.status.success(), "writer: {}", text(&a));
    let sum = out(&a);
    // The bytes are on the server's export, in the volume's subdir.
    let on_server = std::fs::read_to_string(format!("{export}/{v}/a.txt")).expect("file on the server");
    assert_eq!(on_server, "from-container-a\n");
    let b = env.run_in(&v, "cat /data/a.txt && sha256sum /data/blob | cut -d' ' -f1");
    assert_eq!(out(&b), format!("from-container-a\n{sum}"), "a second container sees the data: {}", text(&b));
    let st = status(env, &v);
    assert!(st["backing"].as_str().is_some_and(|b| b.starts_with("nfs")), "{st}");
    docker_ok(&["volume", "rm", &v]);
    assert!(std::path::Path::new(&format!("{export}/{v}/a.txt")).exists(), "nfs data is retained on remove");
    let _ = std::fs::remove_dir_all(format!("{export}/{v}"));
}

fn smb_env() -> Option<(String, String)> {
    match (std::env::var("VOLTOOL_TEST_SMB_SHARE"), std::env::var("VOLTOOL_TEST_SMB_PASSWORD")) {
        (Ok(s), Ok(p)) if std::path::Path::new(&s).is_dir() => Some((s, p)),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must provide the SMB server (test.sh)");
            println!("SKIP: no test SMB server (VOLTOOL_TEST_SMB_SHARE)");
            None
        }
    }
}

/// `docker volume create` itself fails, within 15 s, naming the problem.
fn network_create_checks(env: &Env) {
    let v = env.volume_name("netbad");
    let mut cases: Vec<(Vec<String>, &str)> =
        vec![(vec!["type=nfs".into(), "addr=no-such-host.invalid".into(), "export=/x".into()], "name lookup failed")];
    if std::env::var("VOLTOOL_TEST_NFS_EXPORT").is_ok() {
        cases.push((
            vec![
                "type=nfs".into(),
                "o=addr=127.0.0.1,port=18049,mountport=18048".into(),
                "device=:/no/such/export".into(),
            ],
            "the export does not exist",
        ));
    }
    if let Some((_, password)) = smb_env() {
        let (good, bad) = (format!("{v}-pw"), format!("{v}-badpw"));
        env.add_secret(&good, &password);
        env.add_secret(&bad, "definitely-wrong");
        let smb = |share: &str, secret: &str| {
            vec![
                "type=cifs".to_string(),
                format!("share=//127.0.0.1/{share}"),
                "username=smbtest".into(),
                "o=port=18445".into(),
                format!("secret={secret}"),
            ]
        };
        cases.push((smb("nosuchshare", &good), "share nosuchshare not found"));
        cases.push((smb("data", &bad), "wrong username or password"));
    }
    for (opts, needle) in cases {
        let o: Vec<&str> = opts.iter().map(String::as_str).collect();
        let t0 = Instant::now();
        let r = env.create(&v, &o);
        let t = text(&r);
        assert!(!r.status.success(), "{opts:?} must fail at create: {t}");
        assert!(t.contains(needle), "{opts:?}: {t}");
        assert!(t0.elapsed() < Duration::from_secs(15), "{opts:?} took {:?}", t0.elapsed());
        docker_fails(&["volume", "inspect", &v]);
    }
}

/// The SMB password never appears in Docker's or voltool's views, argv of any process,
/// the daemon's files.
fn cifs_secret_hidden(env: &Env) {
    let Some((share, password)) = smb_env() else { return };
    let v = env.volume_name("cifs");
    let secret = format!("{v}-secret");
    env.add_secret(&secret, &password);
    env.create_ok(
        &v,
        &[
            "type=cifs",
            "share=//127.0.0.1/data",
            "username=smbtest",
            &format!("secret={secret}"),
            "o=port=18445,vers=3.0",
        ],
    );
    assert!(std::path::Path::new(&format!("{share}/{v}")).is_dir(), "volume directory made on the share");
    // Try to mount it: on a host without a kernel CIFS client this fails, with a clear reason
    // and still without the password anywhere.
    let m = env.run_in(&v, "true");
    if !m.status.success() {
        assert!(text(&m).contains("CIFS client") || text(&m).contains("cifs"), "{}", text(&m));
    }
    let mut seen = docker_ok(&["volume", "inspect", &v]);
    for args in [
        vec!["volume", "inspect", "--json", v.as_str()],
        vec!["volume", "ls", "--json"],
        vec!["secret", "ls", "--json"],
    ] {
        seen.push_str(&text(&env.voltool(&args)));
    }
    assert!(!seen.contains(&password), "password visible in inspect/ls output");
    for p in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cmd) = std::fs::read(p.path().join("cmdline")) {
            assert!(
                !cmd.windows(password.len()).any(|w| w == password.as_bytes()),
                "password in argv of pid {:?}",
                p.file_name()
            );
        }
    }
    if env.mode == Mode::Legacy {
        let log = std::fs::read_to_string("/tmp/voltool-e2e-legacy/daemon.log").unwrap_or_default();
        assert!(!log.contains(&password), "password in the daemon log");
        for f in std::fs::read_dir("/tmp/voltool-e2e-legacy/state").expect("state").flatten() {
            if f.file_name().to_string_lossy().starts_with("voltool.db") {
                let b = std::fs::read(f.path()).expect("db");
                assert!(!b.windows(password.len()).any(|w| w == password.as_bytes()), "password in {:?}", f.path());
            }
        }
    } else {
        let logs = Command::new("sh")
            .arg("-c")
            .arg("cat /tmp/voltool-dockerd.log /tmp/dockerd.log 2>/dev/null")
            .output()
            .expect("logs");
        assert!(
            !String::from_utf8_lossy(&logs.stdout).contains(&password),
            "password in dockerd's log (plugin output)"
        );
        for f in std::fs::read_dir("/var/lib/voltool").expect("state").flatten() {
            if f.file_name().to_string_lossy().starts_with("voltool.db") {
                let b = std::fs::read(f.path()).expect("db");
                assert!(!b.windows(password.len()).any(|w| w == password.as_bytes()), "password in {:?}", f.path());
            }
        }
    }
    docker_ok(&["volume", "rm", &v]);
    let _ = std::fs::remove_dir_all(format!("{share}/{v}"));
}

/// A volume with `backup-schedule` written by a container: the scheduler backs it up and
/// verifies it; `docker volume inspect` shows it; stock zstd | tar gets the data back.
fn scheduled_backup(env: &Env) {
    scheduled_backup_to(env, "sched", None);
}

/// The same to the S3 test server (test.sh starts it and passes its credentials to both
/// daemons: the environment, and `docker plugin set` in plugin.sh install).
fn scheduled_backup_s3(env: &Env) {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(endpoint), Some(bucket), Some(data)) =
        (var("VOLTOOL_TEST_S3_ENDPOINT"), var("VOLTOOL_TEST_S3_BUCKET"), var("VOLTOOL_TEST_S3_DATA"))
    else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must provide the S3 server (test.sh)");
        println!("SKIP scheduled_backup_s3: no test S3 server (VOLTOOL_TEST_S3_*)");
        return;
    };
    let prefix = format!("e2e-{}-{}", std::process::id(), if env.mode == harness::Mode::Managed { "m" } else { "l" });
    let url = format!("s3://{bucket}/{prefix}?endpoint={endpoint}&path_style=true");
    let objects = std::path::PathBuf::from(data).join(bucket).join(&prefix);
    scheduled_backup_to(env, "sched-s3", Some((url, objects)));
}

/// `target`: an S3 URL and the directory where the test server keeps its objects.
fn scheduled_backup_to(env: &Env, base: &str, target: Option<(String, std::path::PathBuf)>) {
    let v = env.volume_name(base);
    let target_opt = target.as_ref().map(|(url, _)| format!("backup-target={url}"));
    // A long keep: retention is tested elsewhere, and here must not delete the backup this
    // test is about to read.
    let mut opts = vec!["backup-schedule=*/3 * * * * *", "backup-verify=true", "backup-keep=last=50"];
    opts.extend(target_opt.as_deref());
    if target.is_some() {
        // An S3 URL given by Docker is refused (S3 targets only from the config file, or
        // from the management API); Docker may repeat the management API's create.
        let o = env.create(&v, &opts);
        assert!(!o.status.success() && text(&o).contains("only from the config file"), "{}", text(&o));
        let mut args = vec!["volume", "create", v.as_str()];
        opts.iter().for_each(|o| args.extend(["-o", o]));
        let o = env.voltool(&args);
        assert!(o.status.success(), "voltool volume create {v}: {}", text(&o));
    }
    env.create_ok(&v, &opts);
    let o = env.run_in(
        &v,
        "mkdir -p /data/app && echo hello > /data/app/a && head -c 524288 /dev/urandom > /data/app/r \
         && ln -s a /data/app/l && chown 1000:1001 /data/app/a && sha256sum /data/app/r | cut -d' ' -f1",
    );
    assert!(o.status.success(), "{}", text(&o));
    let sha = out(&o);
    // Only a run that started after the container finished writing holds all of it.
    let after = utc_in(2);
    let mut found = None;
    wait_within(Duration::from_secs(60), "a complete, verified scheduled backup holding the container's files", || {
        let o = env.voltool(&["backup", "ls", &v, "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        found = list.as_array().into_iter().flatten().find_map(|b| {
            (b["status"] == "complete"
                && b["verify_status"] == "ok"
                && b["started_at"].as_str().is_some_and(|t| t >= after.as_str()))
            .then(|| b.clone())
        });
        found.is_some()
    });
    let b = found.expect("found");
    assert_eq!(b["trigger"], "schedule");
    let id = b["id"].as_str().expect("id");
    let dir = match &target {
        Some((_, objects)) => objects.display().to_string(),
        None => b["target_url"].as_str().and_then(|u| u.strip_prefix("file://")).expect("a directory").to_string(),
    };
    let status = status(env, &v);
    assert!(status["last_backup"]["status"].is_string(), "docker volume inspect shows the last backup: {status}");
    let restored = tempfile::tempdir().expect("tmp");
    let o = run(Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -d < '{dir}/{id}.tar.zst' | tar -x -C '{}'", restored.path().display())));
    assert!(o.status.success() && o.stderr.is_empty(), "stock zstd | tar: {}", text(&o));
    let a = restored.path().join("app/a");
    assert_eq!(std::fs::read_to_string(&a).expect("a"), "hello\n");
    let meta = std::fs::metadata(&a).expect("meta");
    assert_eq!((std::os::unix::fs::MetadataExt::uid(&meta), std::os::unix::fs::MetadataExt::gid(&meta)), (1000, 1001));
    assert_eq!(std::fs::read_link(restored.path().join("app/l")).expect("link"), std::path::Path::new("a"));
    let o = run(Command::new("sha256sum").arg(restored.path().join("app/r")));
    assert_eq!(out(&o).split_whitespace().next(), Some(sha.as_str()), "random file restored byte for byte");
    // The next scheduled run may hold the volume for a moment.
    wait_within(Duration::from_secs(20), "the volume to be removable", || {
        run(Command::new("docker").args(["volume", "rm", &v])).status.success()
    });
}

/// The seed recipe's backup (`docker run --rm -v vol:/data -v $(pwd):/backup busybox tar czf
/// /backup/backup.tar.gz -C /data .`) restores with `voltool restore --from FILE` into a new
/// voltool volume, byte for byte (the CLI streams the file, so it works with the managed plugin
/// too).
fn seed_restore(env: &Env) {
    let src = env.volume_name("seed-src");
    let dst = env.volume_name("seed-dst");
    docker_ok(&["volume", "create", &src]);
    let fill = run(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{src}:/data"),
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /data/db/base && head -c 3000000 /dev/urandom > /data/db/base/1 && echo conf > /data/db/pg.conf \
         && chmod 600 /data/db/pg.conf && chown -R 70:70 /data/db && ln -s db/pg.conf /data/link",
    ]));
    assert!(fill.status.success(), "{}", text(&fill));
    let backup = tempfile::tempdir().expect("tmp");
    let seed = run(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{src}:/data"),
        "-v",
        &format!("{}:/backup", backup.path().display()),
        IMAGE,
        "tar",
        "czf",
        "/backup/backup.tar.gz",
        "-C",
        "/data",
        ".",
    ]));
    assert!(seed.status.success(), "the seed recipe: {}", text(&seed));
    let file = backup.path().join("backup.tar.gz");
    let o = env.voltool(&["restore", &dst, "--from", file.to_str().expect("utf8")]);
    assert!(o.status.success(), "voltool restore: {}", text(&o));
    let listing = "cd /data && find . | sort | while read f; do stat -c '%n %u:%g %a %F %s' \"$f\"; \
                   [ -f \"$f\" ] && [ ! -L \"$f\" ] && sha256sum \"$f\"; done; readlink link";
    let want = env.run_in(&src, listing);
    let got = env.run_in(&dst, listing);
    assert!(want.status.success() && got.status.success(), "{} {}", text(&want), text(&got));
    // The volume root itself (".") may differ in mode; every entry below it must not.
    let below =
        |o: &std::process::Output| out(o).lines().filter(|l| !l.starts_with(". ")).collect::<Vec<_>>().join("\n");
    assert_eq!(below(&got), below(&want), "restored volume differs from the original");
    assert!(below(&want).contains("./db/base/1 70:70"), "{}", below(&want));
    // While a container has the volume mounted, a restore is refused without --force.
    let holder = docker_ok(&["run", "-d", "--network", "none", "-v", &format!("{dst}:/data"), IMAGE, "sleep", "60"]);
    let o = env.voltool(&["restore", &dst, "--from", file.to_str().expect("utf8")]);
    assert!(!o.status.success(), "restore into a volume a container uses must be refused");
    assert!(text(&o).contains("in use"), "{}", text(&o));
    docker_ok(&["rm", "-f", holder.trim()]);
    docker_ok(&["volume", "rm", &dst]);
    docker_ok(&["volume", "rm", &src]);
}

/// `backup verify --restore-test` works in both modes (the managed plugin's check container
/// has the plugin rootfs, with busybox, as its root).
fn restore_test(env: &Env) {
    let v = env.volume_name("rtest");
    env.create_ok(&v, &[]);
    let o = env.run_in(&v, "echo 16 > /data/PG_VERSION");
    assert!(o.status.success(), "{}", text(&o));
    let o = env.voltool(&["backup", "run", &v]);
    assert!(o.status.success(), "{}", text(&o));
    let id = out(&o).lines().last().unwrap_or_default().to_string();
    let o = env.voltool(&["backup", "verify", &id, "--restore-test", "--check-cmd", "grep -qx 16 /data/PG_VERSION"]);
    assert!(o.status.success(), "restore test: {}", text(&o));
    let o = env.voltool(&["backup", "verify", &id, "--restore-test", "--check-cmd", "test -e /data/missing"]);
    assert!(!o.status.success(), "a failing check fails");
    docker_ok(&["volume", "rm", &v]);
}

/// The UTC time `secs` from now as the catalog writes it (`2026-12-01T21:31:24Z`), for
/// comparing with `started_at`.
fn utc_in(secs: u32) -> String {
    let o = run(Command::new("date").args(["-u", "-d", &format!("{secs} seconds"), "+%Y-%m-%dT%H:%M:%SZ"]));
    out(&o)
}
