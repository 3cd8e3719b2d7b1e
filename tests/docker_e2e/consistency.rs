//! Consistent backups through a real dockerd (SPEC §7): `backup-consistency=stop` stops the
//! volume's containers and its labelled companions and starts them again, leaves a container a
//! user had stopped alone, and a daemon killed while it holds them starts them at its next
//! start; `hooks` runs the labels' commands in the containers.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Env, IMAGE, docker_ok, run, text};
use crate::{out, wait_within};

/// A container's `State.Status` (`running`, `exited`, ...) and `State.StartedAt`.
fn state(id: &str) -> (String, String) {
    let s = docker_ok(&["inspect", "-f", "{{.State.Status}} {{.State.StartedAt}}", id]);
    let mut it = s.split_whitespace().map(str::to_owned);
    (it.next().unwrap_or_default(), it.next().unwrap_or_default())
}

/// Starts a container that keeps writing a counter into `vol` (and stops at once on SIGTERM).
fn writer(vol: &str, labels: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--network", "none", "-v"];
    let mount = format!("{vol}:/data");
    args.push(&mount);
    for l in labels {
        args.extend(["--label", l]);
    }
    args.extend([
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo $i > /data/n.tmp; mv /data/n.tmp /data/n; sleep 0.05; done",
    ]);
    docker_ok(&args).trim().to_owned()
}

fn backup_json(env: &Env, args: &[&str]) -> (bool, serde_json::Value, String) {
    let o = env.voltool(args);
    let j = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status.success(), j, text(&o))
}

pub(crate) fn consistent_stop(env: &Env) {
    let v = env.volume_name("cons-stop");
    let side = env.volume_name("cons-side");
    env.create_ok(&v, &[]);
    env.create_ok(&side, &[]);
    // A project of this test's own (the volume's name is unique per mode): the other mode's
    // daemon, running the same test at the same time, would stop a companion of a project
    // both share.
    let project = format!("com.docker.compose.project=e2e-{v}");
    let db = writer(&v, &[&project]);
    // A companion of the same project labelled to be stopped too; it does not use the volume.
    let web = writer(&side, &[&project, "voltool.backup.stop=true"]);
    // A container that uses the volume but that the user stopped: it must stay stopped.
    let idle = writer(&v, &[]);
    docker_ok(&["stop", "-t", "5", &idle]);
    let (before_db, before_web) = (state(&db), state(&web));
    let (ok, j, all) = backup_json(env, &["backup", "run", &v, "--consistency", "stop", "--json"]);
    assert!(ok, "{all}");
    assert_eq!(j["status"], "complete", "{j}");
    assert_eq!(j["consistency"], "stop", "{j}");
    assert!(j["downtime_ms"].as_u64().is_some(), "downtime recorded: {j}");
    for (id, before) in [(&db, &before_db), (&web, &before_web)] {
        let now = state(id);
        assert_eq!(now.0, "running", "{id} runs again; the backup: {j}");
        assert_ne!(now.1, before.1, "{id} was stopped and started (StartedAt changed)");
    }
    assert_eq!(state(&idle).0, "exited", "a container the user stopped stays stopped");
    let st = crate::status(env, &v);
    assert_eq!(st["last_backup"]["consistency"], "stop", "docker volume inspect shows it: {st}");
}

/// The daemon is killed while it holds the containers stopped (a volume big enough that the
/// backup, without a snapshot, takes a while): at its next start they run again within 10 s.
pub(crate) fn killed_while_holding(env: &Env) {
    let v = env.volume_name("cons-kill");
    env.create_ok(&v, &[]);
    let fill = env.run_in(&v, "head -c 600000000 /dev/urandom > /data/big && sync");
    assert!(fill.status.success(), "{}", text(&fill));
    let db = writer(&v, &[]);
    let stopped_by_user = writer(&v, &[]);
    docker_ok(&["stop", "-t", "5", &stopped_by_user]);
    let o = env.voltool(&["backup", "run", &v, "--consistency", "stop", "--detach"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_within(Duration::from_secs(30), "the container to be stopped for the backup", || state(&db).0 == "exited");
    // Host mode: SIGKILL and a new daemon; managed: `docker plugin disable -f` and `enable`.
    env.restart_plugin();
    let t0 = Instant::now();
    wait_within(Duration::from_secs(10), "the container voltool stopped to run again", || state(&db).0 == "running");
    println!("running again {:?} after the restart", t0.elapsed());
    assert!(t0.elapsed() <= Duration::from_secs(10), "running again only {:?} after the restart", t0.elapsed());
    assert_eq!(state(&stopped_by_user).0, "exited", "a container the user stopped is not started");
}

pub(crate) fn consistent_hooks(env: &Env) {
    let v = env.volume_name("cons-hooks");
    env.create_ok(&v, &[]);
    let db =
        writer(&v, &["voltool.backup.pre=echo dumped > /data/dump.sql", "voltool.backup.post=rm -f /data/dump.sql"]);
    let (ok, j, all) = backup_json(env, &["backup", "run", &v, "--consistency", "hooks,stop", "--json"]);
    assert!(ok, "{all}");
    let id = j["id"].as_str().expect("id").to_owned();
    let url = j["target_url"].as_str().and_then(|u| u.strip_prefix("file://")).expect("a directory target");
    let archive = env.host_path(url).join(format!("{id}.tar.zst"));
    let listing = run(Command::new("sh").arg("-c").arg(format!("zstd -dc '{}' | tar -t", archive.display())));
    assert!(out(&listing).lines().any(|l| l.trim_start_matches("./") == "dump.sql"), "the dump is in the backup");
    let gone = run(Command::new("docker").args(["exec", &db, "test", "!", "-e", "/data/dump.sql"]));
    assert!(gone.status.success(), "the post-hook removed the dump");
    assert_eq!(state(&db).0, "running");

    let v2 = env.volume_name("cons-hooks-fail");
    env.create_ok(&v2, &[]);
    let bad =
        writer(&v2, &["voltool.backup.pre=echo cannot dump >&2; exit 3", "voltool.backup.post=touch /data/post-ran"]);
    let (ok, _, all) = backup_json(env, &["backup", "run", &v2, "--consistency", "hooks,stop"]);
    assert!(!ok, "a failing pre-hook fails the backup");
    assert!(all.contains("exited with 3") && all.contains("cannot dump"), "the hook's status and output: {all}");
    let ran = run(Command::new("docker").args(["exec", &bad, "test", "-e", "/data/post-ran"]));
    assert!(ran.status.success(), "the post-hook ran anyway");
    assert_eq!(state(&bad).0, "running", "nothing stopped after a failed pre-hook");
}

/// Leaves the single-node swarm this test made (not one the host had before).
struct SwarmGuard {
    made: bool,
    service: Option<String>,
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        if let Some(s) = &self.service {
            let _ = run(Command::new("docker").args(["service", "rm", s]));
            // Its task containers go before the volume can.
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30)
                && !out(&run(Command::new("docker").args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=com.docker.swarm.service.name={s}"),
                ])))
                .is_empty()
            {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        if self.made {
            let _ = run(Command::new("docker").args(["swarm", "leave", "--force"]));
        }
    }
}

/// A Swarm service with 2 replicas on a voltool volume: `stop` scales it to 0 and back instead
/// of stopping its tasks (which Swarm would replace), never more than 2 tasks run, and the
/// service's spec is the same afterwards.
pub(crate) fn swarm_service(env: &Env) {
    let state = out(&run(Command::new("docker").args(["info", "-f", "{{.Swarm.LocalNodeState}}"])));
    let mut guard = SwarmGuard { made: false, service: None };
    if state != "active" {
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        guard.made = true;
    }
    let v = env.volume_name("cons-swarm");
    env.create_ok(&v, &[]);
    let svc = format!("e2e-cons-swarm-{}", std::process::id());
    guard.service = Some(svc.clone());
    let mount = format!("type=volume,source={v},target=/data,volume-driver={}", env.driver);
    docker_ok(&[
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        &svc,
        "--replicas",
        "2",
        "--mount",
        &mount,
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do date >> /data/$(hostname).log; sleep 0.1; done",
    ]);
    let running = || {
        out(&run(Command::new("docker").args([
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={svc}"),
        ])))
        .lines()
        .count()
    };
    wait_within(Duration::from_secs(60), "2 running tasks", || running() == 2);
    let spec = || docker_ok(&["service", "inspect", "-f", "{{json .Spec}}", &svc]);
    let before = spec();
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (most, stop, svc) = (most.clone(), stop.clone(), svc.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = out(&run(Command::new("docker").args([
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=com.docker.swarm.service.name={svc}"),
                ])))
                .lines()
                .count();
                most.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (ok, j, all) = backup_json(env, &["backup", "run", &v, "--consistency", "stop", "--json"]);
    wait_within(Duration::from_secs(60), "2 running tasks again", || running() == 2);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    assert!(ok, "{all}");
    assert_eq!(j["status"], "complete", "{j}");
    assert!(most.load(std::sync::atomic::Ordering::Relaxed) <= 2, "never more than 2 tasks");
    assert_eq!(spec(), before, "the same service spec afterwards");
}
