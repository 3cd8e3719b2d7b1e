//! Backups and exports of a volume that a hostile container rewrites while they read it (issue
//! 12, item 1, the reading side), against a real dockerd and the host-mode daemon of the Docker
//! suite's harness (tests/docker_e2e/harness.rs: its plugin socket is in /run/docker/plugins,
//! so `docker run -v VOL:/data` uses it).
//!
//! The container holds a volume with a 200-level-deep tree and loops swapping levels (and
//! files) for symlinks into a host directory: a mirror of the volume's tree whose every file is
//! a mode-600 canary of unique content, bind-mounted read-only into the container at the same
//! path so the links resolve there too. The daemon resolves such a link on the host, so a walk
//! that followed one would archive the canary. Every archive is decompressed and searched for
//! the canary; the mirror is compared (names, content, mode, mtime) before and after.

#[path = "docker_e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use harness::{Env, IMAGE, Mode, docker_ok, run, text};

const DEPTH: usize = 200;
const RUNS: usize = 20;

/// `d000/d001/.../dLLL`: the directory of level `level`, relative to the volume's root.
fn rel(level: usize) -> String {
    (0..=level).map(|i| format!("d{i:03}")).collect::<Vec<_>>().join("/")
}

/// One entry of the mirror: relative path, mode, mtime (s, ns), content of a file.
type Seen = (String, u32, i64, i64, Option<Vec<u8>>);

/// The host directory the container's links point into: the volume's tree mirrored, every
/// file in it (`f.txt` and `b1.bin`..`b4.bin` at each level, as in the volume, and `canary.txt`
/// at its top) the canary, mode 0600.
struct Mirror {
    _dir: tempfile::TempDir,
    root: PathBuf,
    canary: Vec<u8>,
    /// Every entry of the mirror as it was made.
    before: Vec<Seen>,
}

impl Mirror {
    fn new(test: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("h-walker-mirror-").tempdir().expect("tempdir");
        let root = dir.path().join("host");
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let canary = format!("HOST-ONLY canary of {test}, pid {}, {nanos}", std::process::id()).into_bytes();
        let mut p = root.clone();
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::write(p.join("canary.txt"), &canary).expect("write");
        for i in 0..DEPTH {
            p.push(format!("d{i:03}"));
            std::fs::create_dir(&p).expect("mkdir");
            for f in ["f.txt", "b1.bin", "b2.bin", "b3.bin", "b4.bin"] {
                std::fs::write(p.join(f), &canary).expect("write");
            }
        }
        let mut m = Self { _dir: dir, root, canary, before: Vec::new() };
        for (path, ..) in m.entries() {
            if std::fs::symlink_metadata(&path).expect("lstat").is_file() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            }
        }
        m.before = m.state();
        m
    }

    /// Every path under the mirror with its metadata, sorted.
    fn entries(&self) -> Vec<(PathBuf, std::fs::Metadata)> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let md = e.metadata().expect("lstat");
                if md.is_dir() {
                    stack.push(e.path());
                }
                out.push((e.path(), md));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn state(&self) -> Vec<Seen> {
        let rel = |p: &Path| p.strip_prefix(&self.root).expect("under the mirror").display().to_string();
        self.entries()
            .into_iter()
            .map(|(p, md)| {
                let content = md.is_file().then(|| std::fs::read(&p).expect("read"));
                (rel(&p), md.mode(), md.mtime(), md.mtime_nsec(), content)
            })
            .collect()
    }

    /// The host side is exactly as it was: no entry added, removed, written, chmodded.
    fn assert_unchanged(&self) {
        assert!(self.before.len() > DEPTH, "the mirror was listed");
        assert_eq!(self.state(), self.before, "the host directory the links point to changed");
    }
}

/// A volume of the harness's daemon holding the 200-level tree, and the container rewriting
/// it; both removed on drop (also when the test fails).
struct Scene {
    volume: String,
    container: String,
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = run(Command::new("docker").args(["rm", "-f", &self.container]));
        let _ = run(Command::new("docker").args(["volume", "rm", "-f", &self.volume]));
    }
}

impl Scene {
    /// Creates the volume, fills it (in a container: a directory, `f.txt` and four 2 KiB files at
    /// each of 200 levels) and starts the container looping on `script` with the mirror bound in.
    fn start(env: &Env, base: &str, mirror: &Mirror, script: &str) -> Self {
        let volume = env.volume_name(base);
        let container = format!("h-walker-{base}-{}", std::process::id());
        let _ = run(Command::new("docker").args(["rm", "-f", &container]));
        let scene = Self { volume, container };
        env.create_ok(&scene.volume, &[]);
        let fill = format!(
            "set -e; p=/data; i=0; while [ $i -lt {DEPTH} ]; do p=$p/$(printf d%03d $i); mkdir $p; \
             echo \"level $i\" > $p/f.txt; for k in 1 2 3 4; do head -c 2048 /dev/urandom > $p/b$k.bin; done; \
             i=$((i+1)); done; echo top > /data/top.txt"
        );
        let o = env.run_in(&scene.volume, &fill);
        assert!(o.status.success(), "filling {}: {}", scene.volume, text(&o));
        let m = mirror.root.display().to_string();
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &scene.container,
            "--network",
            "none",
            "-v",
            &format!("{}:/data", scene.volume),
            "-v",
            &format!("{m}:{m}:ro"),
            IMAGE,
            "sh",
            "-c",
            script,
        ]);
        scene
    }

    /// The number of rounds the container's loop finished (it prints `round N`).
    fn rounds(&self) -> u64 {
        let o = run(Command::new("docker").args(["logs", &self.container]));
        let out = String::from_utf8_lossy(&o.stdout);
        out.lines().filter_map(|l| l.strip_prefix("round ")).filter_map(|n| n.trim().parse().ok()).max().unwrap_or(0)
    }

    fn assert_running(&self) {
        let state = docker_ok(&["inspect", "-f", "{{.State.Running}}", &self.container]);
        let logs = run(Command::new("docker").args(["logs", "--tail", "20", &self.container]));
        assert_eq!(state, "true", "the swapping container stopped: {}", text(&logs));
    }
}

/// The swap function of the containers' scripts: `swap DIR NAME TARGET USLEEP` moves `NAME` in
/// `DIR` aside, puts a symlink to `TARGET` in its place for `USLEEP` µs, and moves it back.
const SWAP_FN: &str = "swap() { cd \"$1\" 2>/dev/null || return 0; \
    if mv \"$2\" \"$2.aside\" 2>/dev/null; then ln -s \"$3\" \"$2\"; usleep $4; rm -f \"$2\"; mv \"$2.aside\" \"$2\"; fi; cd /; }";

/// The deep scene: levels above, at and below the walk's kept descriptors (64), down to the
/// deepest, each swapped for a link to its mirror; every other round the level's `f.txt` too.
fn deep_script(mirror: &Path) -> String {
    let m = mirror.display();
    let mut body = String::new();
    for (k, level) in [1usize, 63, 64, 65, 100, 128, 129, 150, 199].into_iter().enumerate() {
        let parent = if level == 0 { "/data".to_string() } else { format!("/data/{}", rel(level - 1)) };
        let sleep = [0, 1000, 5000, 20000][k % 4];
        body.push_str(&format!("swap '{parent}' d{level:03} '{m}/{}' {sleep}; ", rel(level)));
        body.push_str(&format!(
            "[ $((n % 2)) -eq 1 ] && swap '/data/{r}' f.txt '{m}/{r}/f.txt' {sleep}; ",
            r = rel(level)
        ));
    }
    format!("{SWAP_FN}; n=0; while :; do {body} n=$((n+1)); echo \"round $n\"; done")
}

/// The top scene: the first levels swapped for links and renamed away and back, links to the
/// mirror (directories and the canary itself) planted at the top and in the first levels
/// under new names and under the names of files, the newest few kept.
fn top_script(mirror: &Path) -> String {
    let m = mirror.display();
    format!(
        "{SWAP_FN}; n=0; while :; do \
         swap /data d000 '{m}/d000' $((n % 4 * 500)); \
         swap /data/d000 d001 '{m}/d000/d001' 200; \
         swap /data top.txt '{m}/canary.txt' 300; \
         swap /data/d000 f.txt '{m}/d000/f.txt' 0; \
         mv /data/d000 /data/d000.moved && mv /data/d000.moved /data/d000; \
         mv /data/d000/d001/d002 /data/d002.up && usleep 500 && mv /data/d002.up /data/d000/d001/d002; \
         ln -s '{m}' /data/a-link-$n; ln -s '{m}/canary.txt' /data/d000/canary-$n; \
         ln -s '{m}/d000/d001' /data/d000/d001/z-link-$n; \
         rm -f /data/a-link-$((n-4)) /data/d000/canary-$((n-4)) /data/d000/d001/z-link-$((n-4)); \
         n=$((n+1)); echo \"round $n\"; done"
    )
}

/// Decompressed archive `file`: panics if the canary is in it; the number of the volume's own
/// `f.txt` files in it (fewer than 200 when the walk skipped a level that was swapped away).
fn check_archive(file: &Path, mirror: &Mirror, what: &str) -> usize {
    let tar = zstd::decode_all(std::fs::File::open(file).expect("open archive")).expect("zstd");
    let first = mirror.canary[0];
    let hit = tar.iter().enumerate().any(|(i, &b)| b == first && tar[i..].starts_with(&mirror.canary));
    assert!(!hit, "{what}: the host canary is in the archive");
    let mut archive = tar::Archive::new(tar.as_slice());
    let entries = archive.entries().expect("tar");
    entries
        .map(|e| e.expect("tar entry"))
        .filter(|e| e.header().entry_type().is_file() && e.path_bytes().ends_with(b"/f.txt"))
        .count()
}

/// `RUNS` backups (`voltool backup run`) and `RUNS` exports (`voltool export`) while the scene's
/// container loops: each is made, none holds the canary; the mirror is untouched.
fn archive_while_swapped(env: &Env, base: &str, script: &dyn Fn(&Path) -> String) {
    let mirror = Mirror::new(base);
    let scene = Scene::start(env, base, &mirror, &script(&mirror.root));
    let out = tempfile::Builder::new().prefix("h-walker-out-").tempdir().expect("tempdir");
    let target = out.path().join("backups");
    let t0 = Instant::now();
    let (mut short, mut most) = (0, 0);
    while scene.rounds() < 2 {
        assert!(t0.elapsed().as_secs() < 60, "the container never looped");
        scene.assert_running();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for i in 0..RUNS {
        let o = env.voltool(&["backup", "run", &scene.volume, "--target", target.to_str().expect("utf8"), "--json"]);
        assert!(o.status.success(), "backup {i}: {}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(v["status"], "complete", "backup {i}: {v}");
        let id = v["id"].as_str().expect("id");
        let found = check_archive(&target.join(format!("{id}.tar.zst")), &mirror, &format!("backup {i} ({id})"));
        short += usize::from(found < DEPTH);
        most = most.max(found);
        let file = out.path().join(format!("export-{i}.tar.zst"));
        let o = env.voltool(&["export", &scene.volume, "-o", file.to_str().expect("utf8")]);
        assert!(o.status.success(), "export {i}: {}", text(&o));
        short += usize::from(check_archive(&file, &mirror, &format!("export {i}")) < DEPTH);
        std::fs::remove_file(&file).expect("rm export");
        scene.assert_running();
    }
    let rounds = scene.rounds();
    let log = env.daemon_log().and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
    let said = |what: &str| log.lines().any(|l| l.contains(what) && l.contains(&format!("\"{}\"", scene.volume)));
    assert!(
        short == 0 || said("backup complete with notes") || said("exported with notes"),
        "no log line said the volume changed"
    );
    drop(scene);
    mirror.assert_unchanged();
    println!(
        "{base}: {RUNS} backups + {RUNS} exports in {:.1} s, {rounds} rounds of swaps; {short} archives lacked a level \
         swapped away while walked; no canary",
        t0.elapsed().as_secs_f64()
    );
    assert!(most > 0, "no archive held the volume's tree");
    assert!(rounds >= 2 * RUNS as u64 / 4, "the container hardly swapped: {rounds} rounds");
}

#[test]
fn deep_levels_swapped_for_host_links_never_archive_the_host() {
    let test = "deep_levels_swapped_for_host_links_never_archive_the_host";
    let Some(env) = harness::env(test, Mode::Legacy) else { return };
    archive_while_swapped(&env, "hw-deep", &deep_script);
}

#[test]
fn top_levels_swapped_renamed_and_linked_never_archive_the_host() {
    let test = "top_levels_swapped_renamed_and_linked_never_archive_the_host";
    let Some(env) = harness::env(test, Mode::Legacy) else { return };
    archive_while_swapped(&env, "hw-top", &top_script);
}
