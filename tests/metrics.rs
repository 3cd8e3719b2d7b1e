//! Issue 16: Prometheus metrics, scraped by a real Prometheus (Debian's `prometheus`), and
//! the exposition checked by `promtool check metrics`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, mount, stderr, unmount};
use serde_json::Value;

/// Whether `tool` is installed; if not: a failure in CI, a SKIP line outside.
fn have(test: &str, tool: &str) -> bool {
    if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: {tool} is not installed (test.sh installs it)");
    println!("SKIP {test}: {tool} not installed (apt-get install prometheus)");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// GET over TCP: (status, body).
fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n").expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// A Prometheus server scraping `target` every second, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: voltool\n    authorization:\n      credentials: test-token\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Self { child, port, _dir: dir }
    }

    /// The value of a PromQL instant query with one result, once it has one.
    fn query(&self, promql: &str, limit: Duration) -> f64 {
        let t0 = Instant::now();
        let q: String = promql
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = write!(s, "GET /api/v1/query?query={q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
                // Prometheus answers with a chunked body when it is long; these are short.
                let json =
                    body.find('{').map(|i| &body[i..body.rfind('}').map_or(body.len(), |j| j + 1)]).unwrap_or("");
                if let Ok(v) = serde_json::from_str::<Value>(json)
                    && let Some(r) = v["data"]["result"].as_array()
                    && r.len() == 1
                    && let Some(x) = r[0]["value"][1].as_str().and_then(|x| x.parse().ok())
                {
                    return x;
                }
            }
            assert!(t0.elapsed() < limit, "prometheus has no single result for {promql} after {limit:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A backup run that fails while it runs: its target directory is below a regular file.
fn failed_backup(d: &Daemon, vol: &str) {
    let blocker = d.dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("blocker");
    let target = blocker.join("backups");
    let o = d.cli(&["backup", "run", vol, "--target", target.to_str().expect("utf8")]);
    assert!(!o.status.success(), "a backup below a regular file must fail");
}

#[test]
fn prometheus_scrapes_the_last_success_and_the_failures_and_promtool_accepts_the_exposition() {
    let test = "prometheus_scrapes_the_last_success_and_the_failures";
    if !have(test, "prometheus") || !have(test, "promtool") {
        return;
    }
    let port = free_port();
    let d = Daemon::start_with(
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"test-token\"\n[monitor]\ninterval = \"1s\"\n"),
        &[],
    );
    assert!(d.cli(&["volume", "create", "watched", "-o", "size=64m"]).status.success());
    let root = mount(&d, "watched");
    std::fs::write(root.join("data.txt"), vec![b'v'; 1 << 20]).expect("write");
    unmount(&d, "watched");
    let o = d.cli(&["backup", "run", "watched"]);
    assert!(o.status.success(), "{}", stderr(&o));
    failed_backup(&d, "watched");

    // Docker's requests are timed, and errors counted, by method.
    assert_eq!(d.post("/VolumeDriver.List", "").0, 200);
    assert_eq!(d.post("/VolumeDriver.Mount", r#"{"Name":"nope","ID":"x"}"#).0, 500);
    // The token is required over TCP.
    assert_eq!(http_get(port, "/metrics", None).0, 401);
    assert_eq!(http_get(port, "/metrics", Some("wrong")).0, 401);
    // The volume watcher measures every second ([monitor] interval).
    let t0 = Instant::now();
    let text = loop {
        let (status, text) = http_get(port, "/metrics", Some("test-token"));
        assert_eq!(status, 200, "{text}");
        if text.contains("voltool_volume_info{") || t0.elapsed() > Duration::from_secs(10) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // The same exposition on the management socket.
    let (status, on_socket) = d.api_get("/metrics");
    assert_eq!(status, 200);
    assert!(on_socket.contains("voltool_backup_failures_total"), "{on_socket}");
    for name in [
        "voltool_backup_last_success_timestamp_seconds{target=",
        "voltool_backup_last_attempt_timestamp_seconds{target=",
        "voltool_backup_duration_seconds_bucket{",
        "voltool_backup_bytes{kind=\"stored\",volume=\"watched\"}",
        "voltool_volume_size_limit_bytes{volume=\"watched\"} 67108864",
        "voltool_volume_info{quota=",
        "voltool_volume_mounts{volume=\"watched\"} 0",
        "voltool_plugin_request_duration_seconds_bucket{method=\"List\",le=\"0.00025\"}",
        "voltool_plugin_request_errors_total{method=\"Mount\"} 1",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let prom = Prometheus::start(&format!("127.0.0.1:{port}"));
    let age = prom
        .query("time() - voltool_backup_last_success_timestamp_seconds{volume=\"watched\"}", Duration::from_secs(60));
    assert!((0.0..120.0).contains(&age), "time since the last success: {age}");
    let failures = prom.query("sum(voltool_backup_failures_total{volume=\"watched\"})", Duration::from_secs(30));
    assert!((failures - 1.0).abs() < f64::EPSILON, "failures: {failures}");
    let used = prom.query("voltool_volume_used_bytes{volume=\"watched\"}", Duration::from_secs(30));
    assert!(used >= f64::from(1u32 << 20), "used bytes: {used}");
}

#[test]
fn a_non_loopback_http_address_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("voltool.toml");
    std::fs::write(&config, "[http]\nlisten = \"0.0.0.0:9\"\n").expect("config");
    let o = Command::new(common::bin())
        .args(["serve", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--plugin-socket")
        .arg(dir.path().join("p.sock"))
        .arg("--api-socket")
        .arg(dir.path().join("a.sock"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("serve");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a loopback address") && err.contains("[http] token"), "{err}");
    assert!(!Path::new(&dir.path().join("a.sock")).exists());
}
