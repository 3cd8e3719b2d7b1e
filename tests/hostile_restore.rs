//! Restores, imports and migration receives into a volume that a hostile container holds or
//! wants (issue 12, item 1, the writing side), against a real dockerd and a `voltool serve` of
//! this test whose plugin socket is in /run/docker/plugins (so `docker run -v VOL:/data` with
//! its driver name uses it).
//!
//! The container holds the volume and loops on what a hostile one can do while voltool
//! replaces its data: it swaps the staging and old directories (`.voltool-restore-*`, as soon
//! as it sees them) for symlinks to a host directory, plants symlinks there and at the names
//! the new tree will take, swaps a staged subdirectory and the volume's own directories for
//! symlinks and back, and renames entries. The host directory holds canary files (modes 600
//! and 644, unique contents) and is bind-mounted read-write into the container at its own
//! host path, so a link resolves to it in the daemon's mount namespace as in the container's
//! (a link to `/host-canary-dir` would dangle on the host and prove nothing).
//!
//! After every run the container is quiesced at the end of a round (a control file), what it
//! left (its links, its `*.aside` and `hr-*` entries) is undone on the host, and then: the
//! canary directory is exactly as before (names, contents, modes, owners, mtimes, ctimes), and
//! the volume is exactly the old tree (the run failed) or the new one (it succeeded), file
//! contents compared byte for byte with the source volumes the archives were made from.
//!
//! tests/hostile_restore/scene.rs has the daemon, the trees and the canary, container.rs the
//! container; this file has the runs.

mod common;
#[path = "hostile_restore/container.rs"]
mod container;
#[path = "docker_e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "hostile_restore/scene.rs"]
mod scene;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, bin, stderr, stdout};
use container::Hostile;
use harness::{IMAGE, run, text};
use scene::{Host, Tree};

/// Runs of each operation under the hostile container.
const RUNS: usize = 20;

/// The host has root and a Docker engine (SKIP or, in CI, fail otherwise).
fn ready(test: &str) -> bool {
    common::root_or_skip(test, "the daemon mounts volumes and registers a Docker plugin")
        && harness::docker_or_skip(test)
}

/// What the runs of one operation did, for the summary line.
#[derive(Default)]
struct Tally {
    ok: usize,
    refused: usize,
    /// Container leftovers undone on the host after the runs.
    undone: usize,
}

/// `RUNS` runs of `op(run, source index)` into `h.volume` while the container attacks; after
/// each, the canary and the tree are checked (see the module docs). Odd pairs of runs are
/// "hostile" (the container also plants what makes the restore refuse), the others only
/// swap and rename (the restore should mostly go through).
fn runs_under_attack(
    test: &str,
    host: &Host,
    h: &Hostile,
    trees: &[Tree; 2],
    op: &dyn Fn(usize, usize) -> std::process::Output,
) {
    let t0 = Instant::now();
    let mut old = 0;
    let mut tally = Tally::default();
    let mut gentle_ok = 0;
    for i in 0..RUNS {
        let src = (i + 1) % 2;
        let hostile = (i / 2) % 2 == 1;
        h.set_hostile(hostile);
        h.resume();
        let o = op(i, src);
        h.quiesce();
        let undone = h.undo_leftovers();
        tally.undone += undone.count;
        let got = h.tree();
        let said = || format!("run said: {} {}\ndaemon log (end):\n{}", stdout(&o), stderr(&o), host.log_tail(30));
        assert!(undone.problems.is_empty(), "{test} run {i} (hostile: {hostile}): {:?}\n{}", undone.problems, said());
        let (want, what) = if o.status.success() {
            tally.ok += 1;
            gentle_ok += usize::from(!hostile);
            (&trees[src], "the new tree (the run succeeded)")
        } else {
            tally.refused += 1;
            let e = stderr(&o);
            println!("run {i} (hostile: {hostile}) refused: {e}");
            assert!(!e.is_empty() && !e.contains("panicked"), "run {i}: failed without a reason: {e}");
            (&trees[old], "the old tree (the run failed)")
        };
        if let Some(diff) = want.diff_loose(&got, &undone.split) {
            panic!("{test} run {i} (hostile: {hostile}): the volume is not {what}: {diff}\n{}", said());
        }
        h.canary.assert_unchanged(&format!("{test} run {i}"));
        h.assert_running();
        if o.status.success() {
            old = src;
        }
    }
    let attacks = h.attacks();
    println!(
        "{test}: {RUNS} runs in {:.1} s: {} swapped in, {} refused; the container's attacks: {attacks:?}; \
         {} leftovers of its own undone; canary untouched",
        t0.elapsed().as_secs_f64(),
        tally.ok,
        tally.refused,
        tally.undone
    );
    assert!(gentle_ok > 0, "no run without the refusing plants went through");
    let n = |k: &str| attacks.get(k).copied().unwrap_or(0);
    assert!(
        n("swapped") > 0 && n("planted") + n("split") > 0,
        "the container's attacks never landed: the test proves nothing"
    );
}

#[test]
fn forced_restores_by_id_under_a_hostile_container_touch_nothing_outside_the_volume() {
    let test = "forced_restores_by_id_under_a_hostile_container_touch_nothing_outside_the_volume";
    if !ready(test) {
        return;
    }
    let host = Host::start();
    let trees = [Tree::make(&host, "a"), Tree::make(&host, "b")];
    let ids: Vec<String> =
        trees.iter().map(|t| host.ok(&["backup", "run", &t.volume]).lines().last().expect("id").into()).collect();
    let h = Hostile::start(&host, "rid", &ids[0]);
    runs_under_attack(test, &host, &h, &trees, &|_, src| {
        host.limited(&["restore", &h.volume, "--from", &ids[src], "--force"])
    });
}

#[test]
fn forced_imports_under_a_hostile_container_touch_nothing_outside_the_volume() {
    let test = "forced_imports_under_a_hostile_container_touch_nothing_outside_the_volume";
    if !ready(test) {
        return;
    }
    let host = Host::start();
    let trees = [Tree::make(&host, "a"), Tree::make(&host, "b")];
    let files: Vec<PathBuf> = trees
        .iter()
        .map(|t| {
            let f = host.d.dir.path().join(format!("{}.tar.zst", t.volume));
            host.ok(&["export", &t.volume, "-o", f.to_str().expect("utf8")]);
            f
        })
        .collect();
    let first = files[0].to_str().expect("utf8").to_string();
    let h = Hostile::start(&host, "imp", &first);
    runs_under_attack(test, &host, &h, &trees, &|i, src| {
        let f = files[src].to_str().expect("utf8");
        // Both ways a file comes in: `import -i FILE` and `restore --from FILE`.
        if i % 4 < 2 {
            host.limited(&["import", &h.volume, "-i", f, "--force"])
        } else {
            host.limited(&["restore", &h.volume, "--from", f, "--force"])
        }
    });
}

/// `voltool import VOL --force` reading a pipe the test holds: the restore waits in its
/// extraction (staging directory made, volume marked as being restored) until it is fed.
fn slow_import(host: &Host, volume: &str) -> std::process::Child {
    Command::new(bin())
        .args(["import", volume, "--force"])
        .env("VOLTOOL_API_SOCKET", Daemon::paths(host.d.dir.path()).2)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import")
}

/// Feeds `bytes` to `child`, closes its stdin and waits (at most a minute); its output.
fn feed_and_wait(mut child: std::process::Child, bytes: &[u8]) -> std::process::Output {
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(bytes).expect("feed");
    drop(stdin);
    scene::wait_limited(child, Duration::from_secs(60), "the fed restore")
}

/// `docker run` of a new container on `volume` (the plugin's driver named), expected to be
/// refused because the volume is being restored.
fn refused_start(host: &Host, volume: &str, name: &str) {
    let o = run(Command::new("docker").args([
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "none",
        "--volume-driver",
        &host.driver,
        "-v",
        &format!("{volume}:/data"),
        IMAGE,
        "true",
    ]));
    let _ = run(Command::new("docker").args(["rm", "-f", name]));
    assert!(!o.status.success(), "a container started on {volume} while it was being restored");
    assert!(text(&o).contains("being restored"), "refusal without the reason: {}", text(&o));
}

#[test]
fn a_container_start_during_a_restore_is_refused_as_being_restored() {
    let test = "a_container_start_during_a_restore_is_refused_as_being_restored";
    if !ready(test) {
        return;
    }
    let host = Host::start();
    let trees = [Tree::make(&host, "a"), Tree::make(&host, "b")];
    let file = host.d.dir.path().join("b.tar.zst");
    host.ok(&["export", &trees[1].volume, "-o", file.to_str().expect("utf8")]);
    let h = Hostile::start(&host, "busy", &host.backup_of(&trees[0]));
    h.set_hostile(false);
    let child = slow_import(&host, &h.volume);
    host.wait_for_staging(&h.volume);
    refused_start(&host, &h.volume, &format!("{}-late", h.container));
    // The container that held the volume before keeps running through it.
    h.assert_running();
    let o = feed_and_wait(child, &std::fs::read(&file).expect("read export"));
    assert!(o.status.success(), "the restore a refused container waited for: {}", text(&o));
    h.quiesce();
    let undone = h.undo_leftovers();
    assert!(undone.problems.is_empty(), "{:?}", undone.problems);
    if let Some(diff) = trees[1].diff(&h.tree()) {
        panic!("after the restore: {diff}");
    }
    h.canary.assert_unchanged(test);
    // Once it has finished, containers start again and see the new data.
    let o = run(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{}:/data", h.volume),
        IMAGE,
        "cat",
        "/data/top.txt",
    ]));
    assert!(o.status.success(), "a container after the restore: {}", text(&o));
    assert_eq!(o.stdout, trees[1].content("top.txt"), "the container sees the restored data");
}

/// Captures the migration stream of `volume` (its offer line, then its frames) with
/// `voltool migrate` through a stand-in for ssh that answers the handshake and saves the
/// stream instead of running `voltool receive` on another host.
fn migration_stream(host: &Host, volume: &str) -> Vec<u8> {
    let dir = host.d.dir.path();
    let (script, out) = (dir.join("fake-ssh.sh"), dir.join("stream"));
    std::fs::write(
        &script,
        "out=$1\nIFS= read -r offer\nprintf '%s\\n' \"$offer\" > \"$out\"\necho '{\"ready\":true}'\n\
         cat >> \"$out\"\necho '{\"ok\":true,\"files\":0,\"bytes\":0}'\n",
    )
    .expect("write fake ssh");
    let ssh = format!("sh {} {}", script.display(), out.display());
    host.ok(&["migrate", volume, "elsewhere:copy", "--ssh-command", &ssh]);
    let stream = std::fs::read(&out).expect("read stream");
    assert!(stream.len() > 1000 && stream.contains(&b'\n'), "a captured stream");
    stream
}

/// `voltool receive NAME` with stdin and stdout piped.
fn receive(host: &Host, name: &str) -> std::process::Child {
    Command::new(bin())
        .args(["receive", name])
        .env("VOLTOOL_API_SOCKET", Daemon::paths(host.d.dir.path()).2)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn receive")
}

#[test]
fn receives_refuse_a_held_volume_and_containers_while_they_run() {
    let test = "receives_refuse_a_held_volume_and_containers_while_they_run";
    if !ready(test) {
        return;
    }
    let host = Host::start();
    let tree = Tree::make(&host, "a");
    let stream = migration_stream(&host, &tree.volume);
    let offer_end = stream.iter().position(|&b| b == b'\n').expect("offer line") + 1;
    // Into a volume a container holds: refused by design before any data moves (so a hostile
    // container can never be inside a volume while a migration writes it).
    let h = Hostile::start(&host, "recv", &host.backup_of(&tree));
    let o = feed_and_wait(receive(&host, &h.volume), &stream);
    assert!(!o.status.success(), "a receive into a held volume went through: {}", text(&o));
    assert!(text(&o).contains("in use"), "{}", text(&o));
    h.canary.assert_unchanged(test);
    // Into a new volume: while the data streams, a container that wants it is refused; the
    // volume ends as the source's tree.
    let t0 = Instant::now();
    let name = format!("{}-recv", host.driver);
    let _ = run(Command::new("docker").args(["volume", "rm", "-f", &name]));
    for i in 0..RUNS {
        let mut child = receive(&host, &name);
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&stream[..offer_end]).expect("offer");
        stdin.flush().expect("flush");
        host.wait_for_staging(&name);
        refused_start(&host, &name, &format!("{name}-{i}"));
        stdin.write_all(&stream[offer_end..]).expect("frames");
        drop(stdin);
        let o = scene::wait_limited(child, Duration::from_secs(60), "receive");
        assert!(o.status.success() && stdout(&o).contains("\"ok\":true"), "receive {i}: {}", text(&o));
        let root = PathBuf::from(host.ok(&["volume", "mount", &name, "--id", "hr-check"]));
        let got = Tree::snapshot(&root);
        host.ok(&["volume", "unmount", &name, "--id", "hr-check"]);
        if let Some(diff) = tree.diff(&got) {
            panic!("receive {i}: {diff}");
        }
        let _ = run(Command::new("docker").args(["volume", "rm", "-f", &name]));
        let _ = host.cli(&["volume", "rm", &name]);
    }
    println!("{test}: {RUNS} receives in {:.1} s, a container refused during each", t0.elapsed().as_secs_f64());
    h.canary.assert_unchanged(test);
}
