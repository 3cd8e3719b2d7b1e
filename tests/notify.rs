//! Issue 16: the daemon's notifications end to end — a webhook receiver gets exactly one
//! message per failed backup (volume, backup ID, reason), and a volume written past 80% then
//! 95% of its limit gives two near-full messages, not more. (Retries, timeouts, mail and
//! hooks are tested in the notify crate against real receivers and aiosmtpd.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, mount, unmount};
use serde_json::Value;

/// A webhook receiver on 127.0.0.1: every POSTed body, parsed.
fn receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice::<Value>(&body)
            {
                g.lock().expect("lock").push(v);
            }
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

fn of_kind(got: &Arc<Mutex<Vec<Value>>>, kind: &str) -> Vec<Value> {
    got.lock().expect("lock").iter().filter(|v| v["kind"] == kind).cloned().collect()
}

fn wait_count(got: &Arc<Mutex<Vec<Value>>>, kind: &str, n: usize) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let v = of_kind(got, kind);
        if v.len() >= n || t0.elapsed() > Duration::from_secs(20) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_failed_backup_and_a_filling_volume_are_each_told_once_per_occurrence() {
    if !common::root_or_skip("a_failed_backup_and_a_filling_volume", "tmpfs volumes are mounted") {
        return;
    }
    let (port, got) = receiver();
    let d = Daemon::start_with(
        &format!(
            "[monitor]\ninterval = \"1s\"\n[[notify]]\nname = \"hook\"\nurl = \"http://127.0.0.1:{port}/hook\"\non = [\"backup-failed\", \"volume-near-full\"]\n"
        ),
        &[],
    );
    assert!(d.cli(&["volume", "create", "filling", "-o", "type=tmpfs", "-o", "size=10m"]).status.success());

    // A backup that fails while it runs: its target is below a regular file.
    let blocker = d.dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("blocker");
    let target = blocker.join("backups");
    let o = d.cli(&["backup", "run", "filling", "--target", target.to_str().expect("utf8")]);
    assert!(!o.status.success());
    let failed = wait_count(&got, "backup-failed", 1);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let m = &failed[0];
    assert_eq!(m["volume"], "filling", "{m}");
    assert!(m["backup_id"].as_str().is_some_and(|id| id.starts_with("filling-")), "{m}");
    assert!(m["reason"].as_str().is_some_and(|r| !r.is_empty()), "{m}");
    let id = m["backup_id"].as_str().expect("id").to_string();
    let ls = String::from_utf8_lossy(&d.cli(&["backup", "ls", "filling"]).stdout).to_string();
    assert!(ls.contains(&id), "the message names the catalog's backup: {ls}");

    // 85% of the limit, then 97%: one message each, none while it stays there.
    let root = mount(&d, "filling");
    std::fs::write(root.join("a.bin"), vec![1u8; 8_700_000]).expect("write 85%");
    let near = wait_count(&got, "volume-near-full", 1);
    assert_eq!(near.len(), 1, "{near:?}");
    std::fs::write(root.join("b.bin"), vec![2u8; 1_400_000]).expect("write 97%");
    let near = wait_count(&got, "volume-near-full", 2);
    assert_eq!(near.len(), 2, "{near:?}");
    // Several watcher passes later: still two, and one failure.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(of_kind(&got, "volume-near-full").len(), 2, "{:?}", got.lock().expect("lock"));
    assert_eq!(of_kind(&got, "backup-failed").len(), 1);
    unmount(&d, "filling");
    // Delivered counts show in the metrics.
    let (_, text) = d.api_get("/metrics");
    assert!(text.contains("voltool_notifications_total{notifier=\"hook\",outcome=\"delivered\"} 3"), "{text}");
}

#[test]
fn notify_test_sends_to_the_named_notifier_and_says_which_failed() {
    let (port, got) = receiver();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let d = Daemon::start_with(
        &format!(
            "[[notify]]\nname = \"hook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n[[notify]]\nname = \"gone\"\nurl = \"http://127.0.0.1:{closed}/x\"\ntimeout = \"2s\"\n"
        ),
        &[],
    );
    let o = d.cli(&["notify", "test", "hook"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(common::stdout(&o).contains("hook: delivered"), "{}", common::stdout(&o));
    assert_eq!(wait_count(&got, "test", 1).len(), 1);
    // All of them: one fails, and the exit status says so.
    let o = d.cli(&["notify", "test"]);
    assert!(!o.status.success());
    let out = common::stdout(&o);
    assert!(out.contains("hook: delivered") && out.contains("gone: failed"), "{out}");
    let o = d.cli(&["notify", "test", "nope"]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("nope"), "{}", common::stderr(&o));
}
