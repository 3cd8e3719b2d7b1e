//! Scenarios of backups and restores through a real dockerd: scheduled backups (to the
//! suite's own state dir and to the S3 test server) read back with stock tools, the seed
//! recipe's tarball restored, restore tests, and that all of it stays in the suite's state.

use std::process::Command;
use std::time::Duration;

use crate::harness::{self, Env, IMAGE, docker_ok, run, text};
use crate::{out, status, utc_in, wait_within};

/// A volume with `backup-schedule` written by a container: the scheduler backs it up and
/// verifies it; `docker volume inspect` shows it; stock zstd | tar gets the data back.
pub(crate) fn scheduled_backup(env: &Env) {
    scheduled_backup_to(env, "sched", None);
}

/// The same to the S3 test server (test.sh starts it and passes its credentials to both
/// daemons: the environment, and `docker plugin set` in plugin.sh install).
pub(crate) fn scheduled_backup_s3(env: &Env) {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(endpoint), Some(bucket), Some(data)) =
        (var("VOLTOOL_TEST_S3_ENDPOINT"), var("VOLTOOL_TEST_S3_BUCKET"), var("VOLTOOL_TEST_S3_DATA"))
    else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must provide the S3 server (test.sh)");
        println!("SKIP scheduled_backup_s3: no test S3 server (VOLTOOL_TEST_S3_*)");
        return;
    };
    let prefix = format!("e2e-{}-{}", std::process::id(), if env.mode == harness::Mode::Managed { "m" } else { "l" });
    let url = format!("s3://{bucket}/{prefix}?endpoint={endpoint}&path_style=true");
    let objects = std::path::PathBuf::from(data).join(bucket).join(&prefix);
    env.remove_on_drop(&objects);
    scheduled_backup_to(env, "sched-s3", Some((url, objects)));
}

/// `target`: an S3 URL and the directory where the test server keeps its objects.
fn scheduled_backup_to(env: &Env, base: &str, target: Option<(String, std::path::PathBuf)>) {
    let v = env.volume_name(base);
    let target_opt = target.as_ref().map(|(url, _)| format!("backup-target={url}"));
    // A long keep: retention is tested elsewhere, and here must not delete the backup this
    // test is about to read.
    let mut opts = vec!["backup-schedule=*/3 * * * * *", "backup-verify=true", "backup-keep=last=50"];
    opts.extend(target_opt.as_deref());
    if target.is_some() {
        // An S3 URL given by Docker is refused (S3 targets only from the config file, or
        // from the management API); Docker may repeat the management API's create.
        let o = env.create(&v, &opts);
        assert!(!o.status.success() && text(&o).contains("only from the config file"), "{}", text(&o));
        let mut args = vec!["volume", "create", v.as_str()];
        opts.iter().for_each(|o| args.extend(["-o", o]));
        let o = env.voltool(&args);
        assert!(o.status.success(), "voltool volume create {v}: {}", text(&o));
    }
    env.create_ok(&v, &opts);
    let o = env.run_in(
        &v,
        "mkdir -p /data/app && echo hello > /data/app/a && head -c 524288 /dev/urandom > /data/app/r \
         && ln -s a /data/app/l && chown 1000:1001 /data/app/a && sha256sum /data/app/r | cut -d' ' -f1",
    );
    assert!(o.status.success(), "{}", text(&o));
    let sha = out(&o);
    // Only a run that started after the container finished writing holds all of it.
    let after = utc_in(2);
    let mut found = None;
    wait_within(Duration::from_secs(60), "a complete, verified scheduled backup holding the container's files", || {
        let o = env.voltool(&["backup", "ls", &v, "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        found = list.as_array().into_iter().flatten().find_map(|b| {
            (b["status"] == "complete"
                && b["verify_status"] == "ok"
                && b["started_at"].as_str().is_some_and(|t| t >= after.as_str()))
            .then(|| b.clone())
        });
        found.is_some()
    });
    let b = found.expect("found");
    assert_eq!(b["trigger"], "schedule");
    let id = b["id"].as_str().expect("id");
    let dir = match &target {
        Some((_, objects)) => objects.display().to_string(),
        None => {
            let url = b["target_url"].as_str().and_then(|u| u.strip_prefix("file://")).expect("a directory");
            let dir = env.host_path(url);
            assert!(dir.starts_with(env.state_dir()), "the default target {url} is in the suite's own state");
            dir.display().to_string()
        }
    };
    let status = status(env, &v);
    assert!(status["last_backup"]["status"].is_string(), "docker volume inspect shows the last backup: {status}");
    let restored = tempfile::tempdir().expect("tmp");
    let o = run(Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -d < '{dir}/{id}.tar.zst' | tar -x -C '{}'", restored.path().display())));
    assert!(o.status.success() && o.stderr.is_empty(), "stock zstd | tar: {}", text(&o));
    let a = restored.path().join("app/a");
    assert_eq!(std::fs::read_to_string(&a).expect("a"), "hello\n");
    let meta = std::fs::metadata(&a).expect("meta");
    assert_eq!((std::os::unix::fs::MetadataExt::uid(&meta), std::os::unix::fs::MetadataExt::gid(&meta)), (1000, 1001));
    assert_eq!(std::fs::read_link(restored.path().join("app/l")).expect("link"), std::path::Path::new("a"));
    let o = run(Command::new("sha256sum").arg(restored.path().join("app/r")));
    assert_eq!(out(&o).split_whitespace().next(), Some(sha.as_str()), "random file restored byte for byte");
    // The next scheduled run may hold the volume for a moment.
    wait_within(Duration::from_secs(20), "the volume to be removable", || {
        run(Command::new("docker").args(["volume", "rm", &v])).status.success()
    });
}

/// The seed recipe's backup (`docker run --rm -v vol:/data -v $(pwd):/backup busybox tar czf
/// /backup/backup.tar.gz -C /data .`) restores with `voltool restore --from FILE` into a new
/// voltool volume, byte for byte (the CLI streams the file, so it works with the managed plugin
/// too).
pub(crate) fn seed_restore(env: &Env) {
    let src = env.volume_name("seed-src");
    let dst = env.volume_name("seed-dst");
    docker_ok(&["volume", "create", &src]);
    let fill = run(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{src}:/data"),
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /data/db/base && head -c 3000000 /dev/urandom > /data/db/base/1 && echo conf > /data/db/pg.conf \
         && chmod 600 /data/db/pg.conf && chown -R 70:70 /data/db && ln -s db/pg.conf /data/link",
    ]));
    assert!(fill.status.success(), "{}", text(&fill));
    let backup = tempfile::tempdir().expect("tmp");
    let seed = run(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{src}:/data"),
        "-v",
        &format!("{}:/backup", backup.path().display()),
        IMAGE,
        "tar",
        "czf",
        "/backup/backup.tar.gz",
        "-C",
        "/data",
        ".",
    ]));
    assert!(seed.status.success(), "the seed recipe: {}", text(&seed));
    let file = backup.path().join("backup.tar.gz");
    let o = env.voltool(&["restore", &dst, "--from", file.to_str().expect("utf8")]);
    assert!(o.status.success(), "voltool restore: {}", text(&o));
    let listing = "cd /data && find . | sort | while read f; do stat -c '%n %u:%g %a %F %s' \"$f\"; \
                   [ -f \"$f\" ] && [ ! -L \"$f\" ] && sha256sum \"$f\"; done; readlink link";
    let want = env.run_in(&src, listing);
    let got = env.run_in(&dst, listing);
    assert!(want.status.success() && got.status.success(), "{} {}", text(&want), text(&got));
    // The volume root itself (".") may differ in mode; every entry below it must not.
    let below =
        |o: &std::process::Output| out(o).lines().filter(|l| !l.starts_with(". ")).collect::<Vec<_>>().join("\n");
    assert_eq!(below(&got), below(&want), "restored volume differs from the original");
    assert!(below(&want).contains("./db/base/1 70:70"), "{}", below(&want));
    // While a container has the volume mounted, a restore is refused without --force.
    let holder = docker_ok(&["run", "-d", "--network", "none", "-v", &format!("{dst}:/data"), IMAGE, "sleep", "60"]);
    let o = env.voltool(&["restore", &dst, "--from", file.to_str().expect("utf8")]);
    assert!(!o.status.success(), "restore into a volume a container uses must be refused");
    assert!(text(&o).contains("in use"), "{}", text(&o));
    docker_ok(&["rm", "-f", holder.trim()]);
    docker_ok(&["volume", "rm", &dst]);
    docker_ok(&["volume", "rm", &src]);
}

/// `backup verify --restore-test` works in both modes (the managed plugin's check container
/// has the plugin rootfs, with busybox, as its root).
pub(crate) fn restore_test(env: &Env) {
    let (v, id) = backed_up(env, "rtest", "echo 16 > /data/PG_VERSION");
    let o = env.voltool(&["backup", "verify", &id, "--restore-test", "--check-cmd", "grep -qx 16 /data/PG_VERSION"]);
    assert!(o.status.success(), "restore test: {}", text(&o));
    let o = env.voltool(&["backup", "verify", &id, "--restore-test", "--check-cmd", "test -e /data/missing"]);
    assert!(!o.status.success(), "a failing check fails");
    docker_ok(&["volume", "rm", &v]);
}

/// Regression (issue 13): the suite's volumes were backed up into the host's own voltool
/// state (a user who ran the tests found `e2e-*` rows in `voltool backup ls`). The daemon
/// under test keeps its catalog and its default backup target in the suite's own state dir,
/// and the host's /var/lib/voltool is not its state.
pub(crate) fn backups_in_own_state(env: &Env) {
    assert!(!env.state_dir().starts_with("/var/lib/voltool"), "{}", env.state_dir().display());
    let (v, id) = backed_up(env, "own-state", "echo kept > /data/f");
    let o = env.voltool(&["backup", "ls", &v, "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let b = list.as_array().into_iter().flatten().find(|b| b["id"] == id.as_str()).expect("the backup is listed");
    let url = b["target_url"].as_str().and_then(|u| u.strip_prefix("file://")).expect("a directory target");
    let dir = env.host_path(url);
    assert!(dir.starts_with(env.state_dir()), "target {url} ({}) is in {}", dir.display(), env.state_dir().display());
    assert!(dir.join(format!("{id}.tar.zst")).is_file(), "archive {id} in {}", dir.display());
    // The catalog is the suite's own database.
    assert!(env.state_dir().join("voltool.db").is_file());
    docker_ok(&["volume", "rm", &v]);
}

/// A new volume `base` that a container wrote with `script`, backed up once with `voltool
/// backup run`: (volume, backup ID).
fn backed_up(env: &Env, base: &str, script: &str) -> (String, String) {
    let v = env.volume_name(base);
    env.create_ok(&v, &[]);
    let o = env.run_in(&v, script);
    assert!(o.status.success(), "{}", text(&o));
    let o = env.voltool(&["backup", "run", &v]);
    assert!(o.status.success(), "{}", text(&o));
    let id = out(&o).lines().last().unwrap_or_default().to_string();
    (v, id)
}
