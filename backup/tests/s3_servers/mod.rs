//! The S3 servers the suites run against, shared by `backup/tests/s3.rs` and `tests/backup.rs`
//! (there through `#[path]`): s3s-fs and moto, each with and without `checksums=when-required`.
//!
//! - **s3s-fs** (`deploy/test-env/s3/start-s3.sh`): checks SigV4 signatures, stores objects as
//!   plain files under `VOLTOOL_TEST_S3_DATA/BUCKET/KEY` and open multipart uploads as dot
//!   files in `VOLTOOL_TEST_S3_DATA`; it cannot list multipart uploads. Found by
//!   `VOLTOOL_TEST_S3_ENDPOINT` (and `VOLTOOL_TEST_S3_DATA`).
//! - **moto** (`deploy/test-env/s3/start-moto.sh`): an in-memory emulation of AWS S3 that
//!   implements ListMultipartUploads and ListParts; found by `VOLTOOL_TEST_MOTO_ENDPOINT`.
//!
//! [`s3_matrix!`] turns one test body `fn(&Variant)` into four tests, one per server and
//! checksums setting. A server that is not configured fails the test under CI (`CI` set) and
//! otherwise prints a `SKIP:` line past libtest's output capture, so it shows in every run.
//! Each test gets a bucket of its own ([`TestBucket`]) that is emptied and removed when it is
//! dropped, also when the test fails. What a test checks on the server it asks through a
//! client of its own (or s3s-fs's files), never through voltool's.
// Each of the two test binaries uses part of this.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use voltool_backup::target::{Checksums, S3Spec};

/// An S3 implementation the suites know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3sFs,
    Moto,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::S3sFs => "s3s-fs",
            Kind::Moto => "moto",
        }
    }

    /// The running server, or why there is none.
    fn running(self) -> Result<Server, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (endpoint_var, start) = match self {
            Kind::S3sFs => {
                ("VOLTOOL_TEST_S3_ENDPOINT", "eval \"$(deploy/test-env/s3/start-s3.sh /tmp/voltool-test-s3)\"")
            }
            Kind::Moto => {
                ("VOLTOOL_TEST_MOTO_ENDPOINT", "eval \"$(deploy/test-env/s3/start-moto.sh /tmp/voltool-test-moto)\"")
            }
        };
        let missing = |what: &str| format!("{what} is not set; start the server with {start} (test.sh does)");
        let endpoint = var(endpoint_var).ok_or_else(|| missing(endpoint_var))?;
        if var("AWS_ACCESS_KEY_ID").is_none() || var("AWS_SECRET_ACCESS_KEY").is_none() {
            return Err(missing("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (start-s3.sh exports them)"));
        }
        let data = match self {
            Kind::S3sFs => {
                Some(PathBuf::from(var("VOLTOOL_TEST_S3_DATA").ok_or_else(|| missing("VOLTOOL_TEST_S3_DATA"))?))
            }
            Kind::Moto => None,
        };
        Ok(Server { kind: self, endpoint, data })
    }
}

/// Whether this is a CI run (`CI` set to anything but `false` or `0`), where a missing server
/// is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Says that `test` is skipped and why, on stderr past libtest's capture, on a line of its own
/// (test.sh counts these lines). Panics instead under CI.
pub fn skip(test: &str, why: &str) {
    assert!(!in_ci(), "{test}: {why} (required in CI)");
    let _ = writeln!(std::io::stderr(), "\nSKIP: {test}: {why}");
}

/// A running test server.
#[derive(Debug, Clone)]
pub struct Server {
    pub kind: Kind,
    pub endpoint: String,
    /// s3s-fs's data directory.
    pub data: Option<PathBuf>,
}

/// One server with one checksums setting: what a test body of [`s3_matrix!`] runs against.
#[derive(Debug, Clone)]
pub struct Variant {
    pub server: Server,
    /// `Some(WhenRequired)` for the `checksums=when-required` variants; `None` (the default,
    /// when-supported) for the others.
    pub checksums: Option<Checksums>,
}

/// Runs `body` against `kind` with or without `checksums=when-required`, or skips (see
/// [`skip`]) when the server is not there.
pub fn run(kind: Kind, when_required: bool, test: &str, body: fn(&Variant)) {
    let checksums = when_required.then_some(Checksums::WhenRequired);
    match kind.running() {
        Ok(server) => {
            let v = Variant { server, checksums };
            println!("{test}: against {}", v.describe());
            body(&v);
        }
        Err(why) => {
            let c = if when_required { ", checksums=when-required" } else { "" };
            skip(&format!("{test} ({}{c})", kind.name()), &why);
        }
    }
}

/// Defines `mod $name` with one test per server and checksums setting, each running the
/// function `$name(&Variant)` of the same module: `$name::s3s_fs`, `$name::s3s_fs_when_required`,
/// `$name::moto`, `$name::moto_when_required`.
macro_rules! s3_matrix {
    ($name:ident) => {
        mod $name {
            use crate::s3_servers::{Kind, run};
            const TEST: &str = stringify!($name);
            #[test]
            fn s3s_fs() {
                run(Kind::S3sFs, false, TEST, super::$name);
            }
            #[test]
            fn s3s_fs_when_required() {
                run(Kind::S3sFs, true, TEST, super::$name);
            }
            #[test]
            fn moto() {
                run(Kind::Moto, false, TEST, super::$name);
            }
            #[test]
            fn moto_when_required() {
                run(Kind::Moto, true, TEST, super::$name);
            }
        }
    };
}
pub(crate) use s3_matrix;

impl Variant {
    /// `moto, checksums=when-required`.
    pub fn describe(&self) -> String {
        let c = self.checksums.map_or("default", Checksums::as_str);
        format!("{} at {}, checksums={c}", self.server.kind.name(), self.server.endpoint)
    }

    pub fn kind(&self) -> Kind {
        self.server.kind
    }

    /// A new, empty bucket for one test.
    pub fn bucket(&self) -> TestBucket {
        TestBucket::create(self)
    }
}

/// Names no other test (of this or another run) uses.
static BUCKETS: AtomicU32 = AtomicU32::new(0);

/// A bucket made for one test; emptied (objects, open uploads) and removed when dropped.
pub struct TestBucket {
    pub name: String,
    pub variant: Variant,
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl TestBucket {
    fn create(variant: &Variant) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let n = BUCKETS.fetch_add(1, Ordering::Relaxed);
        let kind = match variant.server.kind {
            Kind::S3sFs => "fs",
            Kind::Moto => "moto",
        };
        let name = format!("vt-{kind}-{}-{n}-{nanos:x}", std::process::id());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let key = std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID");
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY");
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&variant.server.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(key, secret, None, None, "voltool-tests"))
            .build();
        let client = Client::from_conf(conf);
        rt.block_on(client.create_bucket().bucket(&name).send())
            .unwrap_or_else(|e| panic!("create bucket {name} on {}: {e:?}", variant.describe()));
        TestBucket { name, variant: variant.clone(), client, rt }
    }

    /// The target URL of `prefix` in this bucket, with the variant's settings.
    pub fn url(&self, prefix: &str) -> String {
        let mut url = format!("s3://{}/{prefix}?endpoint={}&path_style=true", self.name, self.variant.server.endpoint);
        if let Some(c) = self.variant.checksums {
            url.push_str(&format!("&checksums={}", c.as_str()));
        }
        url
    }

    /// The spec of `prefix` in this bucket, as [`TestBucket::url`] would give it.
    pub fn spec(&self, prefix: &str, max_parts: u32) -> S3Spec {
        S3Spec {
            bucket: self.name.clone(),
            prefix: prefix.to_owned(),
            endpoint: Some(self.variant.server.endpoint.clone()),
            region: None,
            path_style: true,
            max_parts,
            checksums: self.variant.checksums,
        }
    }

    /// The names of the objects under `prefix/` (relative to it), sorted.
    pub fn objects(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .list_keys(&format!("{prefix}/"))
            .into_iter()
            .filter_map(|k| k.strip_prefix(&format!("{prefix}/")).map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    fn list_keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let req = self.client.list_objects_v2().bucket(&self.name).prefix(prefix).set_continuation_token(token);
            let out = self.rt.block_on(req.send()).unwrap_or_else(|e| panic!("list {}/{prefix}: {e:?}", self.name));
            keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            token = out.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return keys;
            }
        }
    }

    /// The object's bytes, `None` if it does not exist.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let out = match self.rt.block_on(self.client.get_object().bucket(&self.name).key(key).send()) {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return None,
            Err(e) => panic!("get {}/{key}: {e:?}", self.name),
        };
        let body = self.rt.block_on(out.body.collect()).unwrap_or_else(|e| panic!("read {}/{key}: {e:?}", self.name));
        Some(body.into_bytes().to_vec())
    }

    /// Writes the object to a file under `dir` and returns its path.
    pub fn download(&self, key: &str, dir: &Path) -> PathBuf {
        let bytes = self.get(key).unwrap_or_else(|| panic!("{}/{key} does not exist", self.name));
        let path = dir.join(key.replace('/', "_"));
        std::fs::write(&path, bytes).expect("write the download");
        path
    }

    /// The object's ETag (quotes removed).
    pub fn etag(&self, key: &str) -> String {
        let out = self
            .rt
            .block_on(self.client.head_object().bucket(&self.name).key(key).send())
            .unwrap_or_else(|e| panic!("head {}/{key}: {e:?}", self.name));
        out.e_tag().unwrap_or_default().trim_matches('"').to_owned()
    }

    /// The object's size in bytes.
    pub fn size(&self, key: &str) -> u64 {
        let out = self
            .rt
            .block_on(self.client.head_object().bucket(&self.name).key(key).send())
            .unwrap_or_else(|e| panic!("head {}/{key}: {e:?}", self.name));
        out.content_length().and_then(|l| u64::try_from(l).ok()).expect("content length")
    }

    /// Flips one bit in the middle of the object, as storage rot would: s3s-fs's file in place;
    /// moto's object by replacing it (its store is in memory).
    pub fn corrupt(&self, key: &str) {
        let flip = |bytes: &mut Vec<u8>| {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x80;
        };
        match &self.variant.server.data {
            Some(data) => {
                let path = data.join(&self.name).join(key);
                let mut bytes = std::fs::read(&path).expect("object file");
                flip(&mut bytes);
                std::fs::write(&path, &bytes).expect("flip");
            }
            None => {
                let mut bytes = self.get(key).unwrap_or_else(|| panic!("{}/{key} does not exist", self.name));
                flip(&mut bytes);
                let put = self.client.put_object().bucket(&self.name).key(key).body(ByteStream::from(bytes));
                self.rt.block_on(put.send()).unwrap_or_else(|e| panic!("replace {}/{key}: {e:?}", self.name));
            }
        }
    }

    /// What the server still holds of multipart uploads of `key`, and of upload `token` (of any
    /// key): s3s-fs's files of them, or moto's `KEY upload ID` for each upload it lists and
    /// `upload ID` when upload `token` still lists its parts. Empty when nothing is open.
    pub fn open_uploads(&self, key: &str, token: Option<&str>) -> Vec<String> {
        if let Some(data) = &self.variant.server.data {
            return s3s_fs_upload_traces(data, &self.name, key, token);
        }
        let mut found = Vec::new();
        let listed = self.client.list_multipart_uploads().bucket(&self.name).prefix(key);
        let out = self.rt.block_on(listed.send()).unwrap_or_else(|e| panic!("list uploads of {key}: {e:?}"));
        assert_ne!(out.is_truncated(), Some(true), "more than 1000 uploads of {key}");
        for up in out.uploads() {
            if up.key() == Some(key) {
                found.push(format!("{key} upload {}", up.upload_id().unwrap_or("?")));
            }
        }
        if let Some(t) = token {
            let parts = self.client.list_parts().bucket(&self.name).key(key).upload_id(t);
            match self.rt.block_on(parts.send()) {
                Ok(_) => found.push(format!("upload {t}")),
                Err(e) if e.as_service_error().is_some_and(|s| s.meta().code() == Some("NoSuchUpload")) => {}
                Err(e) => panic!("list parts of upload {t}: {e:?}"),
            }
        }
        found
    }

    /// How many parts of upload `token` of `key` the server holds.
    pub fn parts(&self, key: &str, token: &str) -> usize {
        if let Some(data) = &self.variant.server.data {
            let prefix = format!(".upload_id-{token}.part-");
            return files_in(data).iter().filter(|f| f.starts_with(&prefix)).count();
        }
        let parts = self.client.list_parts().bucket(&self.name).key(key).upload_id(token);
        match self.rt.block_on(parts.send()) {
            Ok(out) => out.parts().len(),
            Err(e) if e.as_service_error().is_some_and(|s| s.meta().code() == Some("NoSuchUpload")) => 0,
            Err(e) => panic!("list parts of upload {token}: {e:?}"),
        }
    }

    /// Aborts every upload moto lists and deletes every object; s3s-fs's upload files and its
    /// per-object dot files of this bucket are removed from its data dir.
    fn empty(&self) -> Result<(), String> {
        if let Some(data) = &self.variant.server.data {
            let mine = format!(".bucket-{}.", b64url(&self.name));
            for f in files_in(data).into_iter().filter(|f| f.starts_with(&mine)) {
                if let Some(id) = f.split(".upload-").nth(1).and_then(|r| r.strip_suffix(".metadata.json")) {
                    for u in files_in(data).into_iter().filter(|u| upload_file_of(u, id)) {
                        let _ = std::fs::remove_file(data.join(u));
                    }
                }
                let _ = std::fs::remove_file(data.join(&f));
            }
        } else {
            let out = self.rt.block_on(self.client.list_multipart_uploads().bucket(&self.name).send());
            for up in out.map_err(|e| format!("list uploads: {e:?}"))?.uploads() {
                let (Some(k), Some(id)) = (up.key(), up.upload_id()) else { continue };
                let abort = self.client.abort_multipart_upload().bucket(&self.name).key(k).upload_id(id);
                self.rt.block_on(abort.send()).map_err(|e| format!("abort {k} {id}: {e:?}"))?;
            }
        }
        for key in self.list_keys("") {
            let del = self.client.delete_object().bucket(&self.name).key(&key);
            self.rt.block_on(del.send()).map_err(|e| format!("delete {key}: {e:?}"))?;
        }
        Ok(())
    }
}

impl Drop for TestBucket {
    /// Best effort and without panicking (this runs while a failed test unwinds, too).
    fn drop(&mut self) {
        let emptied = self.empty();
        let removed = self.rt.block_on(self.client.delete_bucket().bucket(&self.name).send());
        if let Some(data) = &self.variant.server.data {
            let _ = std::fs::remove_dir_all(data.join(&self.name));
        }
        if let Err(e) = emptied.and(removed.map(drop).map_err(|e| format!("delete bucket: {e:?}"))) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: cleaning up bucket {} on {}: {e}",
                self.name,
                self.variant.describe()
            );
        }
    }
}

/// The names in a directory.
pub fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// s3s-fs's encoding of bucket names and keys in its dot files (URL-safe base64, no padding).
pub fn b64url(s: &str) -> String {
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

/// Whether `name` is s3s-fs's record (`.upload-ID.json`) or a part (`.upload_id-ID.part-N`) of
/// upload `id`.
fn upload_file_of(name: &str, id: &str) -> bool {
    name == format!(".upload-{id}.json") || name.starts_with(&format!(".upload_id-{id}."))
}

/// What s3s-fs keeps of open multipart uploads of `key` (and of upload `token`): the upload
/// record `.upload-ID.json`, its parts `.upload_id-ID.part-N` and the per-key metadata
/// `.bucket-B.object-K.upload-ID.metadata.json`. Empty when nothing is left open.
pub fn s3s_fs_upload_traces(data: &Path, bucket: &str, key: &str, token: Option<&str>) -> Vec<String> {
    let per_key = format!(".bucket-{}.object-{}.upload-", b64url(bucket), b64url(key));
    files_in(data)
        .into_iter()
        .filter(|name| token.is_some_and(|t| upload_file_of(name, t)) || name.starts_with(&per_key))
        .collect()
}

/// A TCP relay in front of a server that keeps every byte clients send through it, to see
/// which headers reach the server, and counts the bytes the server sends back. Stops (and
/// closes its listener) when dropped.
pub struct Recorder {
    /// `http://127.0.0.1:PORT`, to use as the endpoint.
    pub endpoint: String,
    sent: Arc<Mutex<Vec<u8>>>,
    /// Bytes the server sent to clients (headers and bodies).
    pub received: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Recorder {
    /// Relays `127.0.0.1:PORT` (a free port) to the server at `upstream` (`http://HOST:PORT`).
    pub fn start(upstream: &str) -> Recorder {
        let to = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recorder");
        let port = listener.local_addr().expect("addr").port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (sent2, stop2, received2) = (sent.clone(), stop.clone(), received.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&to) else { continue };
                relay(client, server, sent2.clone(), received2.clone());
            }
        });
        Recorder { endpoint: format!("http://127.0.0.1:{port}"), sent, received, stop, port }
    }

    /// Everything clients sent so far, as text (bodies included, lossily).
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }

    /// The values of header (or trailer) `name` in what clients sent, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let want = format!("{}:", name.to_ascii_lowercase());
        self.sent()
            .split("\r\n")
            .filter(|l| l.to_ascii_lowercase().starts_with(&want))
            .map(|l| l[want.len()..].trim().to_owned())
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies both ways between `client` and `server` on two threads, recording what the client
/// sends.
fn relay(client: TcpStream, server: TcpStream, sent: Arc<Mutex<Vec<u8>>>, received: Arc<std::sync::atomic::AtomicU64>) {
    let (mut c_read, mut s_write) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
    let (mut s_read, mut c_write) = (server, client);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = c_read.read(&mut buf) {
            sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(&buf[..n]);
            if s_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_write.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = s_read.read(&mut buf) {
            received.fetch_add(n as u64, Ordering::SeqCst);
            if c_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c_write.shutdown(std::net::Shutdown::Write);
    });
}
