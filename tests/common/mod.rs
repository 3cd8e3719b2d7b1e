//! The daemon harness shared by the integration test binaries: a `voltool serve` on
//! temporary sockets and state, the CLI pointed at it, and small helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_voltool")
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    /// Extra environment for the daemon (e.g. AWS credentials).
    pub env: Vec<(String, String)>,
    /// A config file for the daemon (`--config`), if any.
    pub config: Option<PathBuf>,
}

impl Daemon {
    pub fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        (dir.join("state"), dir.join("plugin.sock"), dir.join("api.sock"))
    }

    pub fn spawn_in(dir: &Path, env: &[(String, String)], config: Option<&Path>) -> Child {
        let (state, plugin, api) = Self::paths(dir);
        let mut cmd = Command::new(bin());
        cmd.env_remove("VOLTOOL_CONFIG").args(["serve", "--state-dir"]).arg(&state);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--plugin-socket")
            .arg(&plugin)
            .arg("--api-socket")
            .arg(&api)
            .env("VOLTOOL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).expect("log"))
            .spawn()
            .expect("spawn daemon")
    }

    /// Spawns `voltool serve` on `state` with its plugin socket at `socket` (where dockerd
    /// finds a driver) and its API at `api`, logging to `log` (suites with their own driver).
    pub fn spawn_serve(state: &Path, socket: &Path, api: &Path, log: &Path) -> Child {
        Command::new(bin())
            .env_remove("VOLTOOL_CONFIG")
            .args(["serve", "--state-dir"])
            .arg(state)
            .arg("--plugin-socket")
            .arg(socket)
            .arg("--api-socket")
            .arg(api)
            .env("VOLTOOL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("spawn daemon")
    }

    /// Starts a daemon and asserts both sockets accept within one second.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let mut d = Daemon { child: None, dir, env: Vec::new(), config: None };
        d.restart();
        d
    }

    /// Starts a daemon with a config file (TOML text) and extra environment.
    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("voltool.toml");
        std::fs::write(&path, config).expect("write config");
        let env = env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        let mut d = Daemon { child: None, dir, env, config: Some(path) };
        d.restart();
        d
    }

    /// The daemon's process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("daemon running")
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        Self::paths(self.dir.path()).0
    }

    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let t0 = Instant::now();
        self.child = Some(Self::spawn_in(self.dir.path(), &self.env, self.config.as_deref()));
        let (_, plugin, api) = Self::paths(self.dir.path());
        while UnixStream::connect(&plugin).is_err() || UnixStream::connect(&api).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(1), "sockets not accepting within 1 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin()).args(args).env("VOLTOOL_API_SOCKET", Self::paths(self.dir.path()).2).output().expect("cli")
    }

    /// The CLI with `input` on its stdin (written whole, then closed; a CLI that stops
    /// reading early, e.g. on a refusal, ends the write, and its output says why).
    pub fn cli_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut c = Command::new(bin())
            .args(args)
            .env("VOLTOOL_API_SOCKET", Self::paths(self.dir.path()).2)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cli");
        let mut stdin = c.stdin.take().expect("stdin");
        let _ = stdin.write_all(input);
        drop(stdin);
        c.wait_with_output().expect("cli")
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        let mut s = UnixStream::connect(Self::paths(self.dir.path()).1).expect("connect plugin socket");
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    }

    /// `GET path` on the management socket: (status, body).
    pub fn api_get(&self, path: &str) -> (u16, String) {
        let mut s = UnixStream::connect(Self::paths(self.dir.path()).2).expect("connect API socket");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    }

    pub fn mountpoint(&self, vol: &str) -> PathBuf {
        self.dir.path().join("state/mounts").join(vol)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Leave no mounts behind in the host namespace.
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("state/mounts")) {
            for e in entries.flatten() {
                let _ = Command::new("umount").arg("-l").arg(e.path()).output();
            }
        }
    }
}

/// The JSON a successful command printed.
pub fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "command failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not json ({e}): {}", stdout(o)))
}

/// Mounts a volume through the CLI (Mount ID `test`) and returns its path.
pub fn mount(d: &Daemon, vol: &str) -> PathBuf {
    let o = d.cli(&["volume", "mount", vol, "--id", "test"]);
    assert!(o.status.success(), "mount: {}", stderr(&o));
    PathBuf::from(stdout(&o))
}

/// Unmounts what [`mount`] mounted.
pub fn unmount(d: &Daemon, vol: &str) {
    let o = d.cli(&["volume", "unmount", vol, "--id", "test"]);
    assert!(o.status.success(), "unmount: {}", stderr(&o));
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

pub fn host_mounted(p: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*p.to_string_lossy()))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether the test runs as root; if not, prints `SKIP test: needs root (why)` and returns
/// false (outside CI only: in CI, which runs as root, it fails instead).
pub fn root_or_skip(test: &str, why: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: CI runs as root");
    println!("SKIP {test}: needs root ({why})");
    false
}

#[derive(Debug, PartialEq, Eq)]
pub struct Meta {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: Option<(i64, i64)>,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    /// The first path (in sorted order) of the inode, for files with several links.
    hardlink_group: Option<String>,
}

/// Everything under `root` (not the root itself), keyed by relative path.
pub fn tree(root: &Path) -> BTreeMap<String, Meta> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Meta>, inodes: &mut BTreeMap<u64, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for p in entries {
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(root).expect("prefix").to_string_lossy().into_owned();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "other"
            };
            let hardlink_group =
                (ft.is_file() && m.nlink() > 1).then(|| inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone());
            out.insert(
                rel,
                Meta {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    size: if ft.is_dir() { 0 } else { m.len() },
                    mtime: Some((m.mtime(), m.mtime_nsec())),
                    content: ft.is_file().then(|| std::fs::read(&p).expect("read")),
                    link: ft.is_symlink().then(|| std::fs::read_link(&p).expect("readlink")),
                    hardlink_group,
                },
            );
            if ft.is_dir() {
                walk(root, &p, out, inodes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, &mut BTreeMap::new());
    out
}

/// Compares two trees and names the first difference.
pub fn assert_same_tree(want: &Path, got: &Path) {
    let (a, b) = (tree(want), tree(got));
    let ka: Vec<&String> = a.keys().collect();
    let kb: Vec<&String> = b.keys().collect();
    assert_eq!(ka, kb, "different paths");
    for (k, ma) in &a {
        let mb = &b[k];
        assert_eq!(ma, mb, "{k} differs");
    }
}

/// `len` bytes that do not compress (xorshift64 from `seed`, which must not be 0).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
