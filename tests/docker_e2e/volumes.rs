//! Scenarios of local and tmpfs volumes: size limits, sharing, many containers on one mount,
//! restarts of the plugin, bad input, growing.

use std::process::Command;

use crate::harness::{Env, IMAGE, docker_fails, docker_ok, raw_post, run, text};
use crate::{host_has_cap_sys_resource, mount_count, out, status, wait_until};

pub(crate) fn tmpfs_size_enforced(env: &Env) {
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

pub(crate) fn local_shared(env: &Env) {
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

pub(crate) fn twenty_concurrent(env: &Env) {
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

pub(crate) fn survives_restart(env: &Env) {
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

pub(crate) fn bad_input(env: &Env) {
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

pub(crate) fn size_limited_local(env: &Env) {
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

pub(crate) fn xfs_grows_online(env: &Env) {
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
