//! Webhooks against an axum receiver on 127.0.0.1:0 that fails on purpose.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use voltool_notify::{EventKind, Notifiers, NotifyError};

use crate::{build, failed_backup, fast, wait_for};

/// What the receiver saw: every request's headers and body, in order.
#[derive(Default)]
struct Receiver {
    /// Answer 503 to this many requests first, then `then`.
    fail_first: usize,
    then: u16,
    seen: Mutex<Vec<(HeaderMap, Bytes)>>,
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut seen = r.seen.lock().expect("lock");
    seen.push((headers, body));
    if seen.len() <= r.fail_first {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::from_u16(r.then).expect("a status")
    }
}

/// Starts a receiver; returns its URL and state.
async fn receiver(fail_first: usize, then: u16) -> (String, Arc<Receiver>) {
    let state = Arc::new(Receiver { fail_first, then, seen: Mutex::default() });
    let app = axum::Router::new().route("/hooks/T0/secret-token", axum::routing::post(hook)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks/T0/secret-token", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

/// A receiver that accepts connections and never answers.
async fn hanging() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    url
}

#[tokio::test]
async fn down_twice_then_delivered_once_signed() {
    let (url, rx) = receiver(2, 200).await;
    let key = b"hmac-key-0123".to_vec();
    let secrets = move |name: &str, server: &str| (name == "hook-key" && server == "127.0.0.1").then(|| key.clone());
    let cfg = crate::configs(&format!("[[notify]]\nname = \"ops\"\nurl = \"{url}\"\nsecret = \"hook-key\"\n"));
    let n = Notifiers::with_options(&cfg, &secrets, fast()).unwrap();

    n.notify(&failed_backup());
    let mut succeeded = failed_backup();
    succeeded.kind = EventKind::BackupSucceeded;
    n.notify(&succeeded);
    let stats = wait_for(&n, |s| s[0].delivered + s[0].failed > 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((stats[0].delivered, stats[0].failed, stats[0].dropped), (1, 0, 0));

    let seen = rx.seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "two 503s, then one delivery; backup-succeeded is not in `on`");
    let (headers, body) = &seen[2];
    assert_eq!(seen[0].1, *body, "every attempt sends the same body");
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["kind"], "backup-failed");
    assert_eq!(json["volume"], "db");
    assert_eq!(json["backup_id"], "db-20250102");
    assert_eq!(json["reason"], "target s3 full");
    assert_eq!(json["host"], "testhost");
    assert_eq!(json["text"], "voltool on testhost: backup of volume db failed: target s3 full");
    assert_eq!(headers["user-agent"], voltool_notify::USER_AGENT);
    assert!(voltool_notify::USER_AGENT.starts_with("voltool/"));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-voltool-event"], "backup-failed");
    let sig = headers["x-voltool-signature"].to_str().unwrap();
    assert_eq!(sig, voltool_notify::signature(b"hmac-key-0123", body));
    assert_ne!(sig, voltool_notify::signature(b"another-key", body));
}

#[tokio::test]
async fn a_hanging_receiver_never_delays_the_caller_and_is_given_up_on() {
    let url = hanging().await;
    let n = build(&format!("[[notify]]\nurl = \"{url}\"\ntimeout = \"200ms\"\nretries = 1\n"));
    let start = Instant::now();
    n.notify(&failed_backup());
    assert!(start.elapsed() < Duration::from_millis(50), "notify took {:?}", start.elapsed());
    let stats = wait_for(&n, |s| s[0].failed > 0).await;
    let took = start.elapsed();
    assert_eq!((stats[0].delivered, stats[0].failed), (0, 1));
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "gave up after {took:?}");
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let (url, rx) = receiver(0, 404).await;
    let n = build(&format!("[[notify]]\nurl = \"{url}\"\n"));
    n.notify(&failed_backup());
    let stats = wait_for(&n, |s| s[0].failed > 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((stats[0].delivered, stats[0].failed), (0, 1));
    assert_eq!(rx.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn connection_refused_is_retried_then_counted_failed() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let n = build(&format!("[[notify]]\nurl = \"http://127.0.0.1:{port}/x\"\n"));
    n.notify(&failed_backup());
    let stats = wait_for(&n, |s| s[0].failed > 0).await;
    assert_eq!((stats[0].delivered, stats[0].failed), (0, 1));
    let results = n.send_test(None).await.unwrap();
    let msg = results[0].1.as_ref().unwrap_err().to_string();
    assert!(msg.starts_with(&format!("notifier notify-1 (http://127.0.0.1:{port}/…): ")), "{msg}");
    assert!(!msg.contains("/x"), "{msg}");
}

#[tokio::test]
async fn a_flood_is_dropped_past_the_queue() {
    let url = hanging().await;
    let opts = voltool_notify::Options { queue: 2, concurrency: 1, ..fast() };
    let cfg = crate::configs(&format!("[[notify]]\nurl = \"{url}\"\ntimeout = \"300ms\"\nretries = 0\n"));
    let n = Notifiers::with_options(&cfg, &crate::no_secrets, opts).unwrap();
    for _ in 0..10 {
        n.notify(&failed_backup());
    }
    assert_eq!(n.stats()[0].dropped, 8);
    let stats = wait_for(&n, |s| s[0].failed == 2).await;
    assert_eq!((stats[0].failed, stats[0].dropped), (2, 8));
    // The queue drained: the next event is taken again.
    n.notify(&failed_backup());
    assert_eq!(n.stats()[0].dropped, 8);
}

#[test]
fn outside_a_runtime_events_are_dropped_and_counted() {
    let n = build("[[notify]]\nurl = \"http://127.0.0.1:9/\"\n");
    n.notify(&failed_backup());
    assert_eq!(n.stats()[0].dropped, 1);
}

#[tokio::test]
async fn send_test_reaches_the_named_notifier_once_without_retries() {
    let (good, good_rx) = receiver(0, 200).await;
    let (bad, bad_rx) = receiver(5, 200).await;
    let n = build(&format!(
        "[[notify]]\nname = \"good\"\nurl = \"{good}\"\non = [\"server-down\"]\n\
         [[notify]]\nname = \"bad\"\nurl = \"{bad}\"\n"
    ));
    let all = n.send_test(None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].0, "good");
    assert!(all[0].1.is_ok());
    let err = all[1].1.as_ref().unwrap_err();
    assert!(matches!(err, NotifyError::Status { status: 503, .. }), "{err}");
    assert_eq!(bad_rx.seen.lock().unwrap().len(), 1, "no retries in a test");
    let one = n.send_test(Some("good")).await.unwrap();
    assert_eq!(one.len(), 1);
    {
        let seen = good_rx.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0["x-voltool-event"], "test");
        let json: serde_json::Value = serde_json::from_slice(&seen[0].1).unwrap();
        assert_eq!(json["kind"], "test");
    }
    let err = n.send_test(Some("nope")).await.unwrap_err().to_string();
    assert_eq!(err, "no notifier named nope: the configured ones are good, bad");
    assert_eq!(n.stats()[0].delivered, 0, "tests are not counted");
}
