//! The pieces of tests/hostile_restore.rs: a daemon registered with dockerd, the source trees,
//! the canary directory on the host, and the hostile container with its control files.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{Daemon, bin, stderr, stdout};
use crate::harness::{IMAGE, docker_ok, run, text};

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

/// A `voltool serve` of this test whose plugin socket dockerd finds as driver `driver`.
pub struct Host {
    pub d: Daemon,
    pub driver: String,
    socket: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Host {
    pub fn start(tag: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("h-hostile-restore-").tempdir().expect("tmp");
        let driver = format!("hr-{}-{tag}", std::process::id());
        std::fs::create_dir_all("/run/docker/plugins").expect("plugin dir");
        let socket = PathBuf::from(format!("/run/docker/plugins/{driver}.sock"));
        let (state, _, api) = Daemon::paths(dir.path());
        let child = Command::new(bin())
            .env_remove("VOLTOOL_CONFIG")
            .args(["serve", "--state-dir"])
            .arg(&state)
            .arg("--plugin-socket")
            .arg(&socket)
            .arg("--api-socket")
            .arg(&api)
            .env("VOLTOOL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).expect("log"))
            .spawn()
            .expect("spawn daemon");
        let host = Host { d: Daemon { dir, child: Some(child), env: Vec::new(), config: None }, driver, socket };
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
    fn new() -> Self {
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

/// The container's script: two loops (see the module docs of tests/hostile_restore.rs), each
/// stopping at the end of a round while /ctl/pause exists (and saying so in /ctl/pausedN).
/// It never reaches the host directory `$C` itself: it only makes links to it, at names that
/// no link of its own is on the way to.
const SCRIPT: &str = r#"
pausepoint() {
  [ -e /ctl/pause ] || return 0
  : > /ctl/paused$1
  while [ -e /ctl/pause ]; do usleep 2000; done
  rm -f /ctl/paused$1
}
stager() {
  n=0
  while :; do
    pausepoint 1
    hit=
    for d in /data/.voltool-restore-* /data/hr-moved-*; do
      [ -d "$d" ] && [ ! -L "$d" ] || continue
      hit=1; n=$((n+1)); echo "hit $d"
      ln -snT "$C/c600" "$d/d7/f39" 2>/dev/null && echo "planted $d/d7/f39"
      [ $((n % 8)) -eq 0 ] && ln -snT "$C" "$d/hr-link-$n" 2>/dev/null
      [ -e /ctl/hostile ] && ln -snT "$C" "$d/zz" 2>/dev/null && echo "planted $d/zz"
      if [ -e /ctl/hostile ] && [ -d "$d/d9/sub" ] && [ ! -L "$d/d9/sub" ] && mv -T "$d/d9/sub" "$d/d9/sub.aside" 2>/dev/null; then
        ln -snT "$C" "$d/d9/sub" 2>/dev/null && echo "split $d/d9/sub"
      fi
      case "$d" in
        /data/.voltool-restore-old-*) ;;
        /data/.voltool-restore-*)
          [ -e /ctl/hostile ] && ln -snT "$C" "/data/.voltool-restore-old-${d#/data/.voltool-restore-}" 2>/dev/null ;;
        *) continue ;;
      esac
      mv -T "$d" "/data/hr-moved-$n" 2>/dev/null && ln -snT "$C" "$d" 2>/dev/null && echo "swapped $d"
    done
    [ -n "$hit" ] || usleep 500
  done
}
swapper() {
  k=0
  while :; do
    pausepoint 2
    k=$((k+1))
    for x in d0 d1 d2 d3 d4; do
      if mv -T "/data/$x" "/data/$x.aside" 2>/dev/null; then
        ln -snT "$C" "/data/$x"; usleep $(( (k % 4) * 300 )); rm -f "/data/$x"; mv -T "/data/$x.aside" "/data/$x" 2>/dev/null
      fi
    done
    for x in onlyA onlyB onlyA.txt onlyB.txt; do ln -snT "$C" "/data/$x" 2>/dev/null; done
    ln -snT "$C/c644" "/data/hr-link-t$k"; rm -f "/data/hr-link-t$((k-3))"
    mkdir -p /data/hr-own && mv -T /data/hr-own /data/hr-own2 && mv -T /data/hr-own2 /data/hr-own
  done
}
stager & swapper & wait
"#;

/// A volume of the host's daemon held by a container running [`SCRIPT`]; the container and
/// the volume are removed on drop, also when the test fails.
pub struct Hostile {
    pub volume: String,
    pub container: String,
    pub canary: Canary,
    ctl: tempfile::TempDir,
    root: PathBuf,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = run(Command::new("docker").args(["rm", "-f", &self.container]));
        let _ = run(Command::new("docker").args(["volume", "rm", "-f", &self.volume]));
    }
}

impl Hostile {
    /// Creates the volume through Docker, restores `from` into it, and starts the container
    /// (quiesced).
    pub fn start(host: &Host, tag: &str, from: &str) -> Self {
        let volume = format!("{}-vol", host.driver);
        let container = format!("h-hostile-restore-{}-{tag}", std::process::id());
        let _ = run(Command::new("docker").args(["rm", "-f", &container]));
        let ctl = tempfile::Builder::new().prefix("h-hostile-restore-ctl-").tempdir().expect("tmp");
        let root = host.d.mountpoint(&volume);
        let h = Hostile { volume, container, canary: Canary::new(), ctl, root };
        docker_ok(&["volume", "create", "-d", &host.driver, &h.volume]);
        host.ok(&["restore", &h.volume, "--from", from, "--force"]);
        std::fs::write(h.ctl.path().join("pause"), "").expect("pause");
        let c = h.canary.path().display().to_string();
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &h.container,
            "--network",
            "none",
            "-e",
            &format!("C={c}"),
            "-v",
            &format!("{}:/data", h.volume),
            "-v",
            &format!("{c}:{c}"),
            "-v",
            &format!("{}:/ctl", h.ctl.path().display()),
            IMAGE,
            "sh",
            "-c",
            SCRIPT,
        ]);
        h.wait_paused();
        h
    }

    fn ctl(&self, name: &str) -> PathBuf {
        self.ctl.path().join(name)
    }

    fn wait_paused(&self) {
        wait_until(Duration::from_secs(30), "the container to stop at the end of a round", || {
            self.ctl("paused1").exists() && self.ctl("paused2").exists()
        });
    }

    /// Runs the next rounds with (or without) the plants that make a restore refuse.
    pub fn set_hostile(&self, on: bool) {
        if on {
            std::fs::write(self.ctl("hostile"), "").expect("hostile");
        } else {
            let _ = std::fs::remove_file(self.ctl("hostile"));
        }
    }

    /// Lets the container loop again (once both loops have left their pause).
    pub fn resume(&self) {
        std::fs::remove_file(self.ctl("pause")).expect("unpause");
        wait_until(Duration::from_secs(30), "the container to resume", || {
            !self.ctl("paused1").exists() && !self.ctl("paused2").exists()
        });
    }

    /// Stops the container at the end of its current rounds.
    pub fn quiesce(&self) {
        std::fs::write(self.ctl("pause"), "").expect("pause");
        self.wait_paused();
    }

    /// The volume's tree as the host sees it.
    pub fn tree(&self) -> Snapshot {
        Tree::snapshot(&self.root)
    }

    pub fn wait_for_staging(&self) {
        wait_until(Duration::from_secs(30), "a staging directory", || {
            std::fs::read_dir(&self.root)
                .map(|rd| rd.flatten().any(|e| e.file_name().as_encoded_bytes().starts_with(b".voltool-restore-")))
                .unwrap_or(false)
        });
    }

    /// Undoes what the quiesced container left (see [`Undo`]).
    pub fn undo_leftovers(&self) -> Undone {
        let mut u =
            Undo { canary: self.canary.path().to_path_buf(), count: 0, split: Vec::new(), problems: Vec::new() };
        u.dir(&self.root, "");
        Undone { count: u.count, split: u.split, problems: u.problems }
    }

    pub fn assert_running(&self) {
        let state = docker_ok(&["inspect", "-f", "{{.State.Running}}", &self.container]);
        let logs = run(Command::new("docker").args(["logs", "--tail", "20", &self.container]));
        assert_eq!(state, "true", "the hostile container stopped: {}", text(&logs));
    }

    /// What the container's log says it did, by kind (`hit`: found a restore's directory,
    /// `swapped`: swapped one for a link, `planted`: a link landed in one, `split`: moved a
    /// staged directory aside for a link), each place counted once.
    pub fn attacks(&self) -> BTreeMap<String, usize> {
        let o = run(Command::new("docker").args(["logs", &self.container]));
        let out = String::from_utf8_lossy(&o.stdout);
        let lines: std::collections::BTreeSet<&str> = out.lines().collect();
        let mut n = BTreeMap::new();
        for l in lines {
            *n.entry(l.split(' ').next().unwrap_or_default().to_string()).or_insert(0) += 1;
        }
        n
    }
}

/// What [`Hostile::undo_leftovers`] did and found.
pub struct Undone {
    pub count: usize,
    pub split: Vec<String>,
    pub problems: Vec<String>,
}

/// Undoing, on the host while the container is quiesced, what it left in the volume: its
/// links to the canary directory go; an `X.aside` goes back to `X` when `X` is free; at the
/// top (old data it moved aside while the new tree came in) it is removed, deeper (a staged
/// directory it moved while files were extracted into it) its entries are merged into `X`;
/// its `hr-*` entries at the top are removed, a staging or old directory it renamed
/// (`hr-moved-*`) only once checked empty (the daemon emptied it through its descriptor).
struct Undo {
    canary: PathBuf,
    count: usize,
    /// Directories that were merged back (their mode may be the other half's).
    split: Vec<String>,
    /// What the daemon should not have left.
    problems: Vec<String>,
}

fn remove_any(p: &Path) {
    let m = std::fs::symlink_metadata(p).expect("lstat leftover");
    if m.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) }.expect("remove leftover");
}

fn merge(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read aside").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        match std::fs::symlink_metadata(&dst) {
            Err(_) => std::fs::rename(&src, &dst).expect("merge"),
            Ok(m) if m.is_dir() && e.file_type().is_ok_and(|t| t.is_dir()) => merge(&src, &dst),
            Ok(_) => {}
        }
    }
}

impl Undo {
    fn dir(&mut self, dir: &Path, rel: &str) {
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .expect("read_dir")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        for n in names(dir) {
            let p = dir.join(&n);
            if std::fs::read_link(&p).is_ok_and(|t| t.starts_with(&self.canary)) {
                std::fs::remove_file(&p).expect("remove link");
                self.count += 1;
            }
        }
        for n in names(dir) {
            let p = dir.join(&n);
            if let Some(x) = n.strip_suffix(".aside") {
                let xp = dir.join(x);
                if std::fs::symlink_metadata(&xp).is_err() {
                    std::fs::rename(&p, &xp).expect("put back");
                } else {
                    if !rel.is_empty() {
                        merge(&p, &xp);
                        self.split.push(format!("{rel}/{x}"));
                    }
                    remove_any(&p);
                }
                self.count += 1;
            } else if rel.is_empty() && n.starts_with("hr-") {
                if n.starts_with("hr-moved-") {
                    let files: Vec<String> = Tree::snapshot(&p)
                        .into_iter()
                        .filter(|(_, node)| node.kind == "file")
                        .map(|(k, _)| k)
                        .collect();
                    if !files.is_empty() {
                        let shown = files.len().min(12);
                        self.problems.push(format!(
                            "{n} (a restore's directory the container renamed) still holds {} files: {:?}",
                            files.len(),
                            &files[..shown]
                        ));
                    }
                }
                remove_any(&p);
                self.count += 1;
            }
        }
        for n in names(dir) {
            let p = dir.join(&n);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                let r = if rel.is_empty() { n.clone() } else { format!("{rel}/{n}") };
                self.dir(&p, &r);
            }
        }
    }
}
