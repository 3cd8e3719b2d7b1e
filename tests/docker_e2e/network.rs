//! Scenarios of network volumes against the test servers test.sh starts (NFS, SMB): the
//! seed recipe, create-time checks, the SMB password never showing.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Env, docker_fails, docker_ok, text};
use crate::{out, status};

pub(crate) fn nfs_shared(env: &Env) {
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
    env.remove_on_drop(format!("{export}/{v}"));
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
pub(crate) fn network_create_checks(env: &Env) {
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
pub(crate) fn cifs_secret_hidden(env: &Env) {
    let Some((share, password)) = smb_env() else { return };
    let v = env.volume_name("cifs");
    env.remove_on_drop(format!("{share}/{v}"));
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
    if let Some(log) = env.daemon_log() {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!log.contains(&password), "password in the daemon log");
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
    }
    for f in std::fs::read_dir(env.state_dir()).expect("state").flatten() {
        if f.file_name().to_string_lossy().starts_with("voltool.db") {
            let b = std::fs::read(f.path()).expect("db");
            assert!(!b.windows(password.len()).any(|w| w == password.as_bytes()), "password in {:?}", f.path());
        }
    }
    docker_ok(&["volume", "rm", &v]);
    let _ = std::fs::remove_dir_all(format!("{share}/{v}"));
}
