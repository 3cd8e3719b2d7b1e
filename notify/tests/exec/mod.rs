//! exec: hooks — shell scripts run through /bin/sh (so the test never executes a file it has
//! just written: no ETXTBSY race with other tests' forks).

use std::path::Path;
use std::time::{Duration, Instant};

use voltool_notify::NotifyError;

use crate::{build, failed_backup, wait_for};

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write the script");
    path.display().to_string()
}

#[tokio::test]
async fn the_hook_gets_the_event_on_stdin_and_in_its_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let hook = script(dir.path(), "hook.sh", "cat > \"$1/stdin.json\"\nenv > \"$1/env.txt\"\n");
    let n = build(&format!("[[notify]]\nurl = \"exec:/bin/sh {hook} {out}\"\n"));
    n.notify(&failed_backup());
    let stats = wait_for(&n, |s| s[0].delivered + s[0].failed > 0).await;
    assert_eq!((stats[0].delivered, stats[0].failed), (1, 0));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("stdin.json")).unwrap()).unwrap();
    assert_eq!(json["kind"], "backup-failed");
    assert_eq!(json["volume"], "db");
    assert_eq!(json["reason"], "target s3 full");
    let env = std::fs::read_to_string(dir.path().join("env.txt")).unwrap();
    for line in [
        "VOLTOOL_EVENT=backup-failed",
        "VOLTOOL_VOLUME=db",
        "VOLTOOL_BACKUP_ID=db-20250102",
        "VOLTOOL_REASON=target s3 full",
        "VOLTOOL_HOST=testhost",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing in\n{env}");
    }
    assert!(!env.contains("VOLTOOL_TARGET="), "no target in this event");
    assert!(!env.contains("CARGO"), "the daemon's environment is not passed on:\n{env}");
}

#[tokio::test]
async fn a_failing_hook_is_retried_and_its_stderr_reported() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count").display().to_string();
    let hook = script(dir.path(), "fail.sh", &format!("echo x >> {count}\necho 'boom: no route' >&2\nexit 3\n"));
    let n = build(&format!("[[notify]]\nname = \"hook\"\nurl = \"exec:/bin/sh {hook}\"\n"));
    n.notify(&failed_backup());
    let stats = wait_for(&n, |s| s[0].failed > 0).await;
    assert_eq!((stats[0].delivered, stats[0].failed), (0, 1));
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3, "3 attempts by default");
    let results = n.send_test(None).await.unwrap();
    let msg = results[0].1.as_ref().unwrap_err().to_string();
    assert_eq!(msg, "notifier hook (exec:/bin/sh): exit status: 3: boom: no route");
}

#[tokio::test]
async fn a_hook_past_its_timeout_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let hook = script(dir.path(), "sleep.sh", &format!("echo $$ > {}\nexec sleep 30\n", pidfile.display()));
    let n = build(&format!("[[notify]]\nurl = \"exec:/bin/sh {hook}\"\ntimeout = \"300ms\"\nretries = 0\n"));
    let start = Instant::now();
    let results = n.send_test(None).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    let err = results[0].1.as_ref().unwrap_err();
    assert!(matches!(err, NotifyError::Timeout { .. }), "{err}");
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
    let stat = format!("/proc/{pid}/stat");
    let dead =
        || std::fs::read_to_string(&stat).map_or(true, |s| s.rsplit(')').next().unwrap().trim().starts_with('Z'));
    let start = Instant::now();
    while !dead() && start.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dead(), "the hook (pid {pid}) still runs");
}
