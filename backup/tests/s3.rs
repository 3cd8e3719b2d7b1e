//! `s3://` targets against a real S3 server: s3s-fs, started by
//! `eval "$(deploy/test-env/s3/start-s3.sh DIR)"`, which exports VOLTOOL_TEST_S3_ENDPOINT,
//! VOLTOOL_TEST_S3_BUCKET, VOLTOOL_TEST_S3_DATA (the server's data dir, where these tests look
//! for leftover multipart uploads) and the AWS credentials. Without VOLTOOL_TEST_S3_ENDPOINT
//! the tests print `SKIP:` and pass, except under CI=true where they fail.
//!
//! The server-killed test starts its own s3s-fs on a port from 18016-18019 (the binary from
//! VOLTOOL_TEST_S3S_BIN, PATH or ~/.cargo/bin). Tests that need other credentials or a
//! process of their own re-run this test binary as a child (`child_process_helper`).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use voltool_backup::target::S3Spec;
use voltool_backup::target::s3::{S3Target, part_size};
use voltool_backup::{Target, TargetError};

const MIB: u64 = 1 << 20;

struct Env {
    endpoint: String,
    bucket: String,
    /// The s3s-fs data dir, when the server is s3s-fs on this host.
    data: Option<PathBuf>,
}

/// The test server, or `None` (after printing why) when there is none outside CI.
fn s3_env(test: &str) -> Option<Env> {
    match std::env::var("VOLTOOL_TEST_S3_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(Env {
            endpoint,
            bucket: std::env::var("VOLTOOL_TEST_S3_BUCKET").unwrap_or_else(|_| "voltool-test".into()),
            data: std::env::var_os("VOLTOOL_TEST_S3_DATA").map(PathBuf::from),
        }),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "s3 server required in CI: VOLTOOL_TEST_S3_ENDPOINT is not set \
                 (eval \"$(deploy/test-env/s3/start-s3.sh /tmp/voltool-test-s3)\")"
            );
            println!(
                "SKIP: {test}: VOLTOOL_TEST_S3_ENDPOINT is not set; start the test server with \
                 eval \"$(deploy/test-env/s3/start-s3.sh /tmp/voltool-test-s3)\""
            );
            None
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// A prefix no other test (or earlier run) uses.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("tests/{test}-{}-{nanos}", std::process::id())
}

fn spec(env: &Env, prefix: &str, max_parts: u32) -> S3Spec {
    S3Spec {
        bucket: env.bucket.clone(),
        prefix: prefix.to_owned(),
        endpoint: Some(env.endpoint.clone()),
        region: None,
        path_style: true,
        max_parts,
    }
}

/// Deterministic pseudo-random bytes (xorshift64), generated as they are written.
struct Stream {
    state: u64,
    left: u64,
}

impl Stream {
    fn new(seed: u64, len: u64) -> Self {
        Self { state: seed | 1, left: len }
    }

    /// Fills up to `buf.len()` bytes; returns how many (0 at the end).
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = usize::try_from(self.left.min(buf.len() as u64)).expect("fits");
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        n
    }
}

/// Odd write sizes, so that writes straddle part boundaries.
const CHUNKS: [usize; 7] = [1, 4093, 65_537, 1_048_583, 3, 777_777, 2_097_169];

/// Writes `len` pseudo-random bytes in odd-sized chunks; returns their sha256.
fn write_stream(w: &mut dyn Write, seed: u64, len: u64) -> io::Result<String> {
    let mut s = Stream::new(seed, len);
    let mut buf = vec![0u8; CHUNKS.iter().copied().max().unwrap_or(1)];
    let mut h = Sha256::new();
    for i in 0.. {
        let n = s.fill(&mut buf[..CHUNKS[i % CHUNKS.len()]]);
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n])?;
    }
    Ok(hex::encode(h.finalize()))
}

/// Reads to the end; returns the length and sha256.
fn read_hash(mut r: Box<dyn Read + Send>) -> (u64, String) {
    let mut buf = vec![0u8; 1 << 20];
    let mut h = Sha256::new();
    let mut len = 0;
    loop {
        let n = r.read(&mut buf).expect("read object");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    (len, hex::encode(h.finalize()))
}

fn b64url(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let v =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(char::from(A[((v >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// What s3s-fs keeps of open multipart uploads of `key` (and of upload `token`): the upload
/// record `.upload-ID.json`, its parts `.upload_id-ID.part-N` and the per-key metadata
/// `.bucket-B.object-K.upload-ID.metadata.json`. Empty when nothing is left open.
fn upload_traces(data: &Path, bucket: &str, key: &str, token: Option<&str>) -> Vec<String> {
    let per_key = format!(".bucket-{}.object-{}.upload-", b64url(bucket), b64url(key));
    let mut found = Vec::new();
    for e in std::fs::read_dir(data).expect("read s3s-fs data dir") {
        let name = e.expect("dir entry").file_name().to_string_lossy().into_owned();
        let of_token =
            token.is_some_and(|t| name == format!(".upload-{t}.json") || name.starts_with(&format!(".upload_id-{t}.")));
        if of_token || name.starts_with(&per_key) {
            found.push(name);
        }
    }
    found
}

fn assert_no_upload_left(env: &Env, key: &str, token: Option<&str>) {
    if let Some(data) = &env.data {
        let left = upload_traces(data, &env.bucket, key, token);
        assert!(left.is_empty(), "open multipart upload left for {key}: {left:?}");
    }
}

fn assert_no_object(env: &Env, t: &S3Target, name: &str, key: &str) {
    assert!(!t.exists(name).expect("exists"), "{name} is visible");
    if let Some(data) = &env.data {
        assert!(!data.join(&env.bucket).join(key).exists(), "{key} exists in the data dir");
    }
}

#[test]
fn round_trip_of_a_40_mib_stream_in_odd_chunks() {
    let Some(env) = s3_env("round_trip_of_a_40_mib_stream_in_odd_chunks") else { return };
    let rt = runtime();
    let prefix = unique_prefix("round-trip");
    let sp = spec(&env, &prefix, 10_000);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");
    assert_eq!(t.describe(), format!("s3://{}/{prefix}", env.bucket));

    let len = 40 * MIB + 12_345;
    let mut w = t.create("a.tar.zst").expect("create");
    let token = w.token().expect("an upload id");
    assert!(!token.is_empty());
    let want = write_stream(&mut w, 1, len).expect("write");
    assert!(!t.exists("a.tar.zst").expect("exists"), "visible before commit");
    assert_eq!(w.commit().expect("commit"), len);
    assert!(t.exists("a.tar.zst").expect("exists"));
    assert_eq!(read_hash(t.open("a.tar.zst").expect("open")), (len, want));
    assert_no_upload_left(&env, &sp.key("a.tar.zst"), Some(&token));
    t.delete("a.tar.zst").expect("delete");
    assert!(!t.exists("a.tar.zst").expect("exists"));
}

#[test]
fn a_listing_follows_pages_and_leaves_deeper_prefixes_out() {
    let Some(env) = s3_env("a_listing_follows_pages_and_leaves_deeper_prefixes_out") else { return };
    let rt = runtime();
    let prefix = unique_prefix("list");
    let t = S3Target::new(spec(&env, &prefix, 10_000), rt.handle().clone()).expect("target");
    assert_eq!(t.list(10).expect("empty"), [], "nothing under a new prefix");
    let names: Vec<String> = (0..25).map(|i| format!("b-{i:02}.manifest.json")).collect();
    for (i, n) in names.iter().enumerate() {
        t.put_small(n, &vec![b'x'; i]).expect("put");
    }
    // Another target under this one's prefix, and one next to it sharing its name's start.
    let deeper = S3Target::new(spec(&env, &format!("{prefix}/sub"), 10_000), rt.handle().clone()).expect("target");
    deeper.put_small("c.manifest.json", b"{}").expect("put");
    let beside = S3Target::new(spec(&env, &format!("{prefix}x"), 10_000), rt.handle().clone()).expect("target");
    beside.put_small("d.manifest.json", b"{}").expect("put");
    let got = t.list_paged(1000, 10).expect("three pages");
    assert_eq!(got.iter().map(|l| l.name.clone()).collect::<Vec<_>>(), names);
    assert!(got.iter().enumerate().all(|(i, l)| l.size == i as u64), "{got:?}");
    assert_eq!(t.list(1000).expect("one page"), got);
    // 25 objects and the common prefix `sub/`: 26 entries.
    assert_eq!(t.list_paged(26, 10).expect("at the limit").len(), 25);
    let e = t.list_paged(25, 10).expect_err("over the limit");
    assert!(matches!(e, TargetError::TooManyObjects { limit: 25, .. }), "{e:?}");
    assert_eq!(deeper.list(10).expect("deeper").len(), 1);
}

#[test]
fn small_objects_empty_streams_exists_delete_and_not_found() {
    let Some(env) = s3_env("small_objects_empty_streams_exists_delete_and_not_found") else { return };
    let rt = runtime();
    let prefix = unique_prefix("small");
    let sp = spec(&env, &prefix, 10_000);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");

    t.put_small("m.json", b"{\"v\":1}").expect("put");
    assert!(t.exists("m.json").expect("exists"));
    assert_eq!(t.read_small("m.json", 100).expect("read"), b"{\"v\":1}");
    assert!(matches!(t.read_small("m.json", 3), Err(TargetError::TooLarge { .. })));
    t.put_small("m.json", b"{}").expect("overwrite");
    assert_eq!(t.read_small("m.json", 100).expect("read"), b"{}");
    t.put_small("empty", b"").expect("put empty");
    assert_eq!(t.read_small("empty", 100).expect("read empty"), b"");

    assert!(!t.exists("nope").expect("exists"));
    assert!(matches!(t.open("nope"), Err(TargetError::NotFound { .. })), "missing object is NotFound");
    assert!(matches!(t.read_small("nope", 10), Err(TargetError::NotFound { .. })));
    t.delete("m.json").expect("delete");
    t.delete("m.json").expect("delete again");
    assert!(!t.exists("m.json").expect("exists"));
    assert!(matches!(t.create("../evil"), Err(TargetError::Config { .. })));

    // An empty stream and a stream ending exactly at a part boundary.
    let w = t.create("zero.tar.zst").expect("create");
    let token = w.token();
    assert_eq!(w.commit().expect("commit empty"), 0);
    assert_eq!(read_hash(t.open("zero.tar.zst").expect("open")).0, 0);
    assert_no_upload_left(&env, &sp.key("zero.tar.zst"), token.as_deref());
    let mut w = t.create("eight.tar.zst").expect("create");
    let want = write_stream(&mut w, 8, 8 * MIB).expect("write");
    assert_eq!(w.commit().expect("commit"), 8 * MIB);
    assert_eq!(read_hash(t.open("eight.tar.zst").expect("open")), (8 * MIB, want));
    let mut w = t.create("tiny.tar.zst").expect("create");
    w.write_all(b"hello").expect("write");
    w.flush().expect("flush");
    assert_eq!(w.commit().expect("commit"), 5);
    assert_eq!(t.read_small("tiny.tar.zst", 10).expect("read"), b"hello");
    for n in ["empty", "zero.tar.zst", "eight.tar.zst", "tiny.tar.zst"] {
        t.delete(n).expect("delete");
    }
    t.cleanup("tiny.tar.zst", None).expect("cleanup with nothing to do");
}

#[test]
fn max_parts_10_holds_a_300_mib_stream() {
    let Some(env) = s3_env("max_parts_10_holds_a_300_mib_stream") else { return };
    let rt = runtime();
    let sp = spec(&env, &unique_prefix("max-parts-10"), 10);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");
    let len = 300 * MIB;
    let sizes: Vec<u64> = (0..10).map_while(|i| part_size(i, 10)).collect();
    let mut used = Vec::new();
    let mut left = len;
    for s in &sizes {
        if left == 0 {
            break;
        }
        used.push((*s).min(left) / MIB);
        left = left.saturating_sub(*s);
    }
    println!("max_parts=10: part sizes (MiB) {used:?}");
    let start = Instant::now();
    let mut w = t.create("big.tar.zst").expect("create");
    let want = write_stream(&mut w, 10, len).expect("write");
    assert_eq!(w.commit().expect("commit"), len);
    let up = start.elapsed();
    let got = read_hash(t.open("big.tar.zst").expect("open"));
    println!(
        "max_parts=10: 300 MiB uploaded in {:.1} s, read back in {:.1} s",
        up.as_secs_f64(),
        (start.elapsed() - up).as_secs_f64()
    );
    assert_eq!(got, (len, want));
    if let Some(data) = &env.data {
        // s3s-fs records the multipart ETag ("md5-PARTS") next to the object.
        let info = data.join(format!(
            ".bucket-{}.object-{}.internal.json",
            b64url(&env.bucket),
            b64url(&sp.key("big.tar.zst"))
        ));
        let text = std::fs::read_to_string(&info).unwrap_or_default();
        assert!(text.contains(&format!("-{}", used.len())), "etag of {} parts expected in {text}", used.len());
    }
    t.delete("big.tar.zst").expect("delete");
}

#[test]
fn dropped_and_aborted_writers_leave_nothing() {
    let Some(env) = s3_env("dropped_and_aborted_writers_leave_nothing") else { return };
    let rt = runtime();
    let sp = spec(&env, &unique_prefix("abandon"), 10_000);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");

    let mut w = t.create("dropped.tar.zst").expect("create");
    let dropped = w.token();
    write_stream(&mut w, 2, 21 * MIB).expect("write");
    drop(w);
    let mut w = t.create("aborted.tar.zst").expect("create");
    let aborted = w.token();
    write_stream(&mut w, 3, 13 * MIB).expect("write");
    w.abort();

    for (name, token) in [("dropped.tar.zst", dropped), ("aborted.tar.zst", aborted)] {
        assert_no_object(&env, &t, name, &sp.key(name));
        assert_no_upload_left(&env, &sp.key(name), token.as_deref());
        // Cleaning up after a writer that aborted cleanly is harmless.
        t.cleanup(name, token.as_deref()).expect("cleanup with the token");
        t.cleanup(name, None).expect("cleanup");
    }
}

#[test]
fn cleanup_aborts_an_upload_a_dead_process_left() {
    let Some(env) = s3_env("cleanup_aborts_an_upload_a_dead_process_left") else { return };
    let rt = runtime();
    let sp = spec(&env, &unique_prefix("cleanup"), 10_000);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");
    let key = sp.key("x.tar.zst");

    // A killed process never aborts: the writer is forgotten, not dropped.
    let mut w = t.create("x.tar.zst").expect("create");
    let token = w.token().expect("token");
    write_stream(&mut w, 4, 9 * MIB).expect("write");
    std::mem::forget(w);
    if let Some(data) = &env.data {
        let part = data.join(format!(".upload_id-{token}.part-1"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !part.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !upload_traces(data, &env.bucket, &key, Some(&token)).is_empty(),
            "the abandoned upload should be open"
        );
    }
    t.cleanup("x.tar.zst", Some(&token)).expect("cleanup");
    assert_no_upload_left(&env, &key, Some(&token));
    assert_no_object(&env, &t, "x.tar.zst", &key);
    t.cleanup("x.tar.zst", Some(&token)).expect("cleanup again");
}

#[test]
fn works_from_spawn_blocking_and_plain_threads() {
    let Some(env) = s3_env("works_from_spawn_blocking_and_plain_threads") else { return };
    let rt = runtime();
    let sp = spec(&env, &unique_prefix("threads"), 10_000);
    let handle = rt.handle().clone();
    let in_blocking = rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            let t = S3Target::new(sp, handle).expect("target");
            let mut w = t.create("b.tar.zst").expect("create");
            let want = write_stream(&mut w, 5, 9 * MIB + 1).expect("write");
            assert_eq!(w.commit().expect("commit"), 9 * MIB + 1);
            assert_eq!(read_hash(t.open("b.tar.zst").expect("open")), (9 * MIB + 1, want));
            t
        })
        .await
        .expect("spawn_blocking")
    });
    // The same target from another plain thread.
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(in_blocking.exists("b.tar.zst").expect("exists"));
            in_blocking.delete("b.tar.zst").expect("delete");
        });
    });
    assert!(!in_blocking.exists("b.tar.zst").expect("exists"));
    // Called from async code by mistake: works (through block_in_place) rather than panicking.
    let t = std::sync::Arc::new(in_blocking);
    let from_task = rt.block_on(async move { tokio::spawn(async move { t.exists("b.tar.zst") }).await });
    assert!(!from_task.expect("task").expect("exists"));
}

#[test]
fn errors_say_what_is_wrong() {
    let Some(env) = s3_env("errors_say_what_is_wrong") else { return };
    let rt = runtime();

    // Nothing listens on a port just released.
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let dead = Env { endpoint: format!("http://127.0.0.1:{port}"), bucket: env.bucket.clone(), data: None };
    let t = S3Target::new(spec(&dead, "x", 10_000), rt.handle().clone()).expect("target");
    let start = Instant::now();
    let e = t.create("a.tar.zst").err().expect("create must fail").to_string();
    println!("connection refused: {e} ({:.1} s)", start.elapsed().as_secs_f64());
    assert!(e.contains(&format!("cannot connect to endpoint http://127.0.0.1:{port}: connection refused")), "{e}");
    assert!(start.elapsed() < Duration::from_secs(60));
    let e = t.exists("a").expect_err("exists must fail").to_string();
    assert!(e.contains("connection refused"), "{e}");

    let missing = Env { endpoint: env.endpoint.clone(), bucket: "voltool-no-such-bucket".into(), data: None };
    let t = S3Target::new(spec(&missing, "x", 10_000), rt.handle().clone()).expect("target");
    // (s3s-fs creates a missing bucket's directory on PutObject; DeleteObject checks it.)
    let e = t.delete("m.json").expect_err("delete must fail").to_string();
    println!("missing bucket: {e}");
    assert!(e.contains("bucket voltool-no-such-bucket does not exist"), "{e}");
}

/// An environment variable to set (or, with `None`, remove) in a child process.
type EnvChange<'a> = (&'a str, Option<&'a str>);

/// Runs this test binary again as a child doing `mode` (see `child_process_helper`) with
/// environment changes; returns its `RESULT` lines.
fn run_child(mode: &str, env: &[EnvChange]) -> Vec<String> {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args(["child_process_helper", "--exact", "--nocapture", "--test-threads=1"]).env("VOLTOOL_TEST_S3_CHILD", mode);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child {mode} failed:\n{stdout}\n{stderr}");
    // libtest prints "test NAME ... " before the child's first line, on the same line.
    stdout.lines().filter_map(|l| l.split_once("RESULT ")).map(|(_, r)| r.to_owned()).collect()
}

/// Not a test by itself: what `run_child` runs in a child process with other credentials or
/// to measure memory. Does nothing unless VOLTOOL_TEST_S3_CHILD is set.
#[test]
fn child_process_helper() {
    let Ok(mode) = std::env::var("VOLTOOL_TEST_S3_CHILD") else { return };
    let Some(env) = s3_env("child_process_helper") else { return };
    let rt = runtime();
    match mode.as_str() {
        "credentials" => {
            let t = S3Target::new(spec(&env, &unique_prefix("creds"), 10_000), rt.handle().clone()).expect("target");
            println!("RESULT create: {}", t.create("a.tar.zst").err().map(|e| e.to_string()).unwrap_or_default());
            println!("RESULT put: {}", t.put_small("m.json", b"{}").err().map(|e| e.to_string()).unwrap_or_default());
            println!("RESULT exists: {}", t.exists("m.json").err().map(|e| e.to_string()).unwrap_or_default());
            println!("RESULT open: {}", t.open("m.json").err().map(|e| e.to_string()).unwrap_or_default());
        }
        "memory" => {
            let hwm = || {
                std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").to_owned()))
                    })
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let sp = spec(&env, &unique_prefix("memory"), 10_000);
            let t = S3Target::new(sp, rt.handle().clone()).expect("target");
            println!("RESULT before_kib {}", hwm());
            let start = Instant::now();
            let mut w = t.create("gib.tar.zst").expect("create");
            write_stream(&mut w, 6, 1 << 30).expect("write");
            assert_eq!(w.commit().expect("commit"), 1 << 30);
            println!("RESULT secs {:.1}", start.elapsed().as_secs_f64());
            println!("RESULT peak_kib {}", hwm());
            t.delete("gib.tar.zst").expect("delete");
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn wrong_or_missing_credentials_are_explained_without_secrets() {
    if s3_env("wrong_or_missing_credentials_are_explained_without_secrets").is_none() {
        return;
    }
    let secret = "Wr0ng-Secret-Key-9f3a7c1e5b";
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "voltool-test".into());
    let cases: [(&str, Vec<EnvChange>, &str); 3] = [
        (
            "wrong secret",
            vec![
                ("AWS_ACCESS_KEY_ID", Some(key_id.as_str())),
                ("AWS_SECRET_ACCESS_KEY", Some(secret)),
                ("AWS_SESSION_TOKEN", None),
            ],
            "check the AWS credentials given to the daemon",
        ),
        (
            "unknown key id",
            vec![
                ("AWS_ACCESS_KEY_ID", Some("AKIANOSUCHKEY")),
                ("AWS_SECRET_ACCESS_KEY", Some(secret)),
                ("AWS_SESSION_TOKEN", None),
            ],
            "check the AWS credentials given to the daemon",
        ),
        (
            "no credentials",
            vec![
                ("AWS_ACCESS_KEY_ID", None),
                ("AWS_SECRET_ACCESS_KEY", None),
                ("AWS_SESSION_TOKEN", None),
                ("AWS_PROFILE", None),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", None),
                ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", None),
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", None),
                ("AWS_SHARED_CREDENTIALS_FILE", Some("/nonexistent/voltool-credentials")),
                ("AWS_CONFIG_FILE", Some("/nonexistent/voltool-config")),
                ("AWS_EC2_METADATA_DISABLED", Some("true")),
            ],
            "no usable AWS credentials",
        ),
    ];
    for (what, vars, want) in cases {
        let results = run_child("credentials", &vars);
        assert_eq!(results.len(), 4, "{what}: {results:?}");
        for r in &results {
            println!("{what}: {r}");
            assert!(!r.contains(secret), "{what}: the secret leaked: {r}");
            assert!(r.contains(want), "{what}: {r}");
        }
        if what != "no credentials" {
            assert!(results[0].contains("access denied by the server"), "{what}: {}", results[0]);
        }
    }
}

#[test]
fn uploading_1_gib_stays_within_the_memory_budget() {
    if s3_env("uploading_1_gib_stays_within_the_memory_budget").is_none() {
        return;
    }
    let results = run_child("memory", &[]);
    let get = |k: &str| {
        results
            .iter()
            .find_map(|r| r.strip_prefix(k))
            .map(str::trim)
            .and_then(|v| v.parse::<f64>().ok())
            .expect("child result")
    };
    let (before, peak, secs) = (get("before_kib"), get("peak_kib"), get("secs"));
    println!(
        "1 GiB upload (default settings): peak RSS {:.0} MiB (before: {:.0} MiB), {secs:.1} s",
        peak / 1024.0,
        before / 1024.0
    );
    assert!(peak < 128.0 * 1024.0, "peak RSS {peak} KiB");
}

/// A private s3s-fs process, killed when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, sig).expect("signal s3s-fs");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private s3s-fs on a port of 18016-18019 with its own data dir and bucket `private`,
/// using the credentials of the environment; it can be killed, stopped and restarted on
/// the same data.
struct Private {
    bin: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    server: Option<Server>,
}

/// Ports given to private servers (tests run in parallel threads of one process).
static CLAIMED_PORTS: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

impl Private {
    /// `None` (after printing why) when s3s-fs cannot be found outside CI.
    fn start(test: &str) -> Option<Private> {
        let bin = match std::env::var_os("VOLTOOL_TEST_S3S_BIN") {
            Some(p) => Some(PathBuf::from(p)),
            None => {
                let path = std::env::var_os("PATH").unwrap_or_default();
                let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
                std::env::split_paths(&path).chain(home).map(|d| d.join("s3s-fs")).find(|p| p.is_file())
            }
        };
        let Some(bin) = bin else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "s3s-fs required in CI (deploy/test-env/s3/start-s3.sh installs it)"
            );
            println!("SKIP: {test}: s3s-fs not found on PATH or in ~/.cargo/bin (or set VOLTOOL_TEST_S3S_BIN)");
            return None;
        };
        let port = {
            let mut claimed = CLAIMED_PORTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let port = (18016..=18019)
                .find(|p| !claimed.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok())
                .expect("a free port in 18016-18019 for a private s3s-fs");
            claimed.push(port);
            port
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("private")).expect("bucket dir");
        let log = dir.path().join("s3s.log");
        let mut p = Private { bin, port, _dir: dir, data, log, server: None };
        p.restart();
        Some(p)
    }

    /// (Re)starts the server on the same port and data.
    fn restart(&mut self) {
        if let Some(mut old) = self.server.take() {
            old.kill();
        }
        let key = std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID");
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let child = Command::new(&self.bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                &key,
                "--secret-key",
                &secret,
            ])
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start s3s-fs");
        let mut server = Server { child };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("s3s-fs exited ({status}); log: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "s3s-fs did not listen on 127.0.0.1:{}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        self.server = Some(server);
    }

    fn server(&mut self) -> &mut Server {
        self.server.as_mut().expect("server running")
    }

    fn env(&self) -> Env {
        Env {
            endpoint: format!("http://127.0.0.1:{}", self.port),
            bucket: "private".into(),
            data: Some(self.data.clone()),
        }
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        self.server = None;
        let mut claimed = CLAIMED_PORTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        claimed.retain(|p| *p != self.port);
    }
}

/// How the private server goes away mid-upload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outage {
    /// SIGKILL: connections are refused.
    Killed,
    /// SIGSTOP: connections are accepted by the kernel but nothing answers.
    Hung,
}

/// Uploads 40 MiB to a private s3s-fs, then kills or stops the server and writes on until the
/// writer fails; checks the failure is clear and quick, that no object appears once the
/// server is back on the same data, and that `cleanup` with the token closes the upload.
fn upload_through_an_outage(test: &str, outage: Outage) {
    if s3_env(test).is_none() {
        return;
    }
    let Some(mut private) = Private::start(test) else { return };
    let env = private.env();
    let port = private.port;
    let rt = runtime();
    let sp = spec(&env, "p", 10_000);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");
    let mut w = t.create("k.tar.zst").expect("create");
    let token = w.token().expect("token");
    write_stream(&mut w, 7, 40 * MIB).expect("write before the outage");
    match outage {
        Outage::Killed => private.server().kill(),
        Outage::Hung => private.server().signal(nix::sys::signal::Signal::SIGSTOP),
    }
    let since = Instant::now();
    let err = match write_stream(&mut w, 8, 1 << 30) {
        Err(e) => {
            let commit = w.commit().expect_err("commit after a failed write must fail").to_string();
            format!("{e} / commit: {commit}")
        }
        Ok(_) => w.commit().expect_err("commit without a server must fail").to_string(),
    };
    let took = since.elapsed();
    println!("{test}: server {outage:?}: the upload failed after {:.1} s: {err}", took.as_secs_f64());
    assert!(took < Duration::from_secs(90), "took {took:?}");
    assert!(err.contains(&format!("endpoint http://127.0.0.1:{port}")), "{err}");
    match outage {
        Outage::Killed => assert!(err.contains("connection refused") || err.contains("broke"), "{err}"),
        Outage::Hung => assert!(err.contains("stopped answering") || err.contains("timed out"), "{err}"),
    }

    // Back on the same data: no object; the upload the server could not abort is found by
    // its token.
    private.restart();
    assert_no_object(&env, &t, "k.tar.zst", &sp.key("k.tar.zst"));
    let left = upload_traces(&private.data, "private", &sp.key("k.tar.zst"), Some(&token));
    println!("{test}: files of the upload left open after the outage: {}", left.len());
    t.cleanup("k.tar.zst", Some(&token)).expect("cleanup");
    assert_no_upload_left(&env, &sp.key("k.tar.zst"), Some(&token));
}

#[test]
fn server_killed_mid_upload_fails_clearly_and_leaves_no_object() {
    upload_through_an_outage("server_killed_mid_upload_fails_clearly_and_leaves_no_object", Outage::Killed);
}

#[test]
fn server_hung_mid_upload_fails_in_bounded_time() {
    upload_through_an_outage("server_hung_mid_upload_fails_in_bounded_time", Outage::Hung);
}

#[test]
fn download_resumes_after_the_server_restarts() {
    let test = "download_resumes_after_the_server_restarts";
    if s3_env(test).is_none() {
        return;
    }
    let Some(mut private) = Private::start(test) else { return };
    let env = private.env();
    let rt = runtime();
    let t = S3Target::new(spec(&env, "r", 10_000), rt.handle().clone()).expect("target");
    let len = 40 * MIB + 7;
    let mut w = t.create("r.tar.zst").expect("create");
    let want = write_stream(&mut w, 9, len).expect("write");
    assert_eq!(w.commit().expect("commit"), len);

    let mut r = t.open("r.tar.zst").expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    while got < 10 * MIB {
        let n = r.read(&mut buf).expect("read before the restart");
        assert!(n > 0, "early end");
        h.update(&buf[..n]);
        got += n as u64;
    }
    private.restart();
    loop {
        let n = r.read(&mut buf).expect("read after the restart");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n as u64;
    }
    assert_eq!((got, hex::encode(h.finalize())), (len, want));
}
