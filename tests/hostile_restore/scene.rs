//! The pieces of tests/hostile_restore.rs: a daemon registered with dockerd, the source trees
//! and the canary directory on the host (the container is in `container.rs`).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{Daemon, bin, stderr, stdout};

fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Polls `f` every 20 ms until it holds; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` (stdout and stderr piped) at most `limit`; kills it and panics after.
pub fn wait_limited(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// The driver name of every daemon of this suite. One fixed name: dockerd keeps every legacy
/// plugin it has used until it restarts and asks each of them on `docker volume ls` (retrying
/// a dead socket for seconds), so a name per test would leave it a growing list of dead ones.
const DRIVER: &str = "voltool-hostile-restore";

/// The tests take turns: they share the driver name (and its socket).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A `voltool serve` of this test whose plugin socket dockerd finds as driver `driver`.
pub struct Host {
    pub d: Daemon,
    pub driver: String,
    socket: PathBuf,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Host {
    pub fn start() -> Self {
        let turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::Builder::new().prefix("h-hostile-restore-").tempdir().expect("tmp");
        let driver = DRIVER.to_string();
        std::fs::create_dir_all("/run/docker/plugins").expect("plugin dir");
        let socket = PathBuf::from(format!("/run/docker/plugins/{driver}.sock"));
        // A socket left by an earlier run that was killed.
        let _ = std::fs::remove_file(&socket);
        let (state, _, api) = Daemon::paths(dir.path());
        let child = Daemon::spawn_serve(&state, &socket, &api, &dir.path().join("daemon.log"));
        let d = Daemon { dir, child: Some(child), env: Vec::new(), config: None };
        let host = Host { d, driver, socket, _turn: turn };
        wait_until(Duration::from_secs(5), "the daemon's sockets", || {
            std::os::unix::net::UnixStream::connect(&host.socket).is_ok()
                && std::os::unix::net::UnixStream::connect(&api).is_ok()
        });
        host
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.d.cli(args)
    }

    /// `voltool ARGS`, asserting success; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(o.status.success(), "voltool {args:?}: {}\n{}", stderr(&o), stdout(&o));
        stdout(&o)
    }

    /// `voltool ARGS` with a time limit (a hung restore fails the test instead of hanging it).
    pub fn limited(&self, args: &[&str]) -> Output {
        let child = Command::new(bin())
            .args(args)
            .env("VOLTOOL_API_SOCKET", Daemon::paths(self.d.dir.path()).2)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn voltool");
        wait_limited(child, Duration::from_secs(90), &format!("voltool {args:?}"))
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.d.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A backup of `tree`'s volume; its ID.
    pub fn backup_of(&self, tree: &Tree) -> String {
        self.ok(&["backup", "run", &tree.volume]).lines().last().expect("backup id").to_string()
    }

    /// Waits until a restore into `volume` has made its staging directory (it is then marked
    /// as being restored).
    pub fn wait_for_staging(&self, volume: &str) {
        let root = self.d.mountpoint(volume);
        wait_until(Duration::from_secs(30), &format!("a staging directory in {}", root.display()), || {
            std::fs::read_dir(&root)
                .map(|rd| rd.flatten().any(|e| e.file_name().as_encoded_bytes().starts_with(b".voltool-restore-")))
                .unwrap_or(false)
        });
    }
}

/// One entry of a tree: kind, mode, owner, file mtime, and the content of a file or the
/// target of a symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    mtime: Option<(i64, i64)>,
    data: Vec<u8>,
}

impl Node {
    pub fn is_file(&self) -> bool {
        self.kind == "file"
    }
}

pub type Snapshot = BTreeMap<String, Node>;

/// A source volume of the daemon, filled by [`fill`], and what it holds.
pub struct Tree {
    pub volume: String,
    pub nodes: Snapshot,
}

/// The source trees: ten directories of 40 files (modes 600 and 644, contents naming the tree
/// and the path), a subdirectory the container swaps in staging (`d9/sub`), one it plants a
/// link at when hostile (`zz`), names only this tree has (the container plants links there),
/// a file and a relative symlink at the top.
fn fill(root: &Path, tag: &str) {
    let salt = nanos();
    let extra = if tag == "a" { 0 } else { 7 };
    let file = |rel: &str, size: usize, mode: u32| {
        let head = format!("tree {tag} {rel} {salt}\n");
        let body: Vec<u8> = head.bytes().cycle().take(size.max(head.len())).collect();
        let p = root.join(rel);
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let dir = |rel: &str, mode: u32| {
        let p = root.join(rel);
        std::fs::create_dir(&p).expect("mkdir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    for i in 0..10 {
        dir(&format!("d{i}"), if i == 3 { 0o750 } else { 0o755 });
        for j in 0..40 {
            file(&format!("d{i}/f{j:02}"), 100 + 53 * j + extra, if j % 5 == 0 { 0o600 } else { 0o644 });
        }
    }
    dir("d9/sub", 0o700);
    dir("zz", 0o755);
    for k in 0..10 {
        file(&format!("d9/sub/s{k}"), 300 + k, 0o640);
        file(&format!("zz/z{k}"), 200 + k + extra, 0o644);
    }
    let only = format!("only{}", tag.to_uppercase());
    dir(&only, 0o755);
    file(&format!("{only}/o0"), 64, 0o644);
    file(&format!("{only}.txt"), 80, 0o644);
    file("top.txt", 120 + extra, 0o644);
    std::os::unix::fs::symlink("d0/f00", root.join("ln")).expect("symlink");
}

impl Tree {
    /// Creates volume `src-TAG`, fills it and takes its snapshot.
    pub fn make(host: &Host, tag: &str) -> Self {
        let volume = format!("src-{tag}");
        host.ok(&["volume", "create", &volume]);
        let root = PathBuf::from(host.ok(&["volume", "mount", &volume, "--id", "hr-fill"]));
        fill(&root, tag);
        let nodes = Self::snapshot(&root);
        host.ok(&["volume", "unmount", &volume, "--id", "hr-fill"]);
        assert!(nodes.len() > 400, "the source tree");
        Tree { volume, nodes }
    }

    /// Everything under `root` (not following symlinks), keyed by relative path.
    pub fn snapshot(root: &Path) -> Snapshot {
        fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
            for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
                let p = e.path();
                let m = std::fs::symlink_metadata(&p).expect("lstat");
                let ft = m.file_type();
                let (kind, data) = if ft.is_dir() {
                    ("dir", Vec::new())
                } else if ft.is_symlink() {
                    ("symlink", std::fs::read_link(&p).expect("readlink").into_os_string().into_encoded_bytes())
                } else if ft.is_file() {
                    ("file", std::fs::read(&p).expect("read"))
                } else {
                    ("other", Vec::new())
                };
                let rel = p.strip_prefix(root).expect("prefix").to_string_lossy().into_owned();
                let mtime = ft.is_file().then(|| (m.mtime(), m.mtime_nsec()));
                out.insert(rel, Node { kind, mode: m.mode() & 0o7777, owner: (m.uid(), m.gid()), mtime, data });
                if ft.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let mut out = Snapshot::new();
        walk(root, root, &mut out);
        out
    }

    /// The content of file `rel`.
    pub fn content(&self, rel: &str) -> Vec<u8> {
        self.nodes.get(rel).map(|n| n.data.clone()).expect("a file of the tree")
    }

    /// Where `got` differs from this tree (directories in `loose` may differ in mode: the
    /// container split them while they were extracted); None when it is the same.
    pub fn diff_loose(&self, got: &Snapshot, loose: &[String]) -> Option<String> {
        let mut out = Vec::new();
        for (k, want) in &self.nodes {
            match got.get(k) {
                None => out.push(format!("{k}: missing")),
                Some(g) if want.kind == "dir" && g.kind == "dir" && loose.contains(k) => {}
                Some(g) if g != want => out.push(format!(
                    "{k}: want {} {:o} {:?} ({} bytes), got {} {:o} {:?} ({} bytes{})",
                    want.kind,
                    want.mode,
                    want.mtime,
                    want.data.len(),
                    g.kind,
                    g.mode,
                    g.mtime,
                    g.data.len(),
                    if g.data.starts_with(b"tree ") {
                        format!(", from {}", String::from_utf8_lossy(&g.data[..g.data.len().min(12)]))
                    } else {
                        String::new()
                    }
                )),
                Some(_) => {}
            }
        }
        out.extend(got.keys().filter(|k| !self.nodes.contains_key(*k)).map(|k| format!("{k}: not in the tree")));
        (!out.is_empty()).then(|| format!("{} differences, first: {}", out.len(), out[..out.len().min(8)].join("; ")))
    }

    pub fn diff(&self, got: &Snapshot) -> Option<String> {
        self.diff_loose(got, &[])
    }
}

/// One entry of the canary directory as `stat` and `read` see it.
type CanaryEntry = (String, u32, u32, u32, u64, (i64, i64), (i64, i64), Vec<u8>);

/// A host directory of canary files, kept out of reach of the daemon: its state is recorded
/// once and compared after every run.
pub struct Canary {
    dir: tempfile::TempDir,
    before: Vec<CanaryEntry>,
}

impl Canary {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("h-hostile-restore-canary-").tempdir().expect("tmp");
        let salt = nanos();
        let put = |rel: &str, mode: u32| {
            let p = dir.path().join(rel);
            std::fs::write(&p, format!("HOST canary {rel} {salt} {}\n", std::process::id())).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        put("c600", 0o600);
        put("c644", 0o644);
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        put("sub/c600", 0o600);
        std::fs::set_permissions(dir.path().join("sub"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut c = Canary { dir, before: Vec::new() };
        c.before = c.state();
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> Vec<CanaryEntry> {
        let mut out = Vec::new();
        let mut todo = vec![self.dir.path().to_path_buf()];
        while let Some(p) = todo.pop() {
            let m = std::fs::symlink_metadata(&p).expect("lstat canary");
            if m.is_dir() {
                todo.extend(std::fs::read_dir(&p).expect("read canary").flatten().map(|e| e.path()));
            }
            let content = if m.is_file() { std::fs::read(&p).expect("read canary") } else { Vec::new() };
            let rel = p.strip_prefix(self.dir.path()).expect("prefix").to_string_lossy().into_owned();
            let (mt, ct) = ((m.mtime(), m.mtime_nsec()), (m.ctime(), m.ctime_nsec()));
            out.push((rel, m.mode(), m.uid(), m.gid(), m.len(), mt, ct, content));
        }
        out.sort();
        out
    }

    /// Nothing in the canary directory was created, removed, written, truncated, chmodded,
    /// chowned or renamed.
    pub fn assert_unchanged(&self, what: &str) {
        assert_eq!(self.before.len(), 5, "the canary directory was listed");
        let now = self.state();
        assert!(now == self.before, "{what}: the host directory changed:\nbefore {:?}\nnow    {now:?}", self.before);
    }
}
