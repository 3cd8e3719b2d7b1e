//! `voltool migrate` between two hosts over the system ssh: a local daemon (host A, this
//! process) and host B of the ssh lab (deploy/test-env/ssh/start-ssh-lab.sh: sshd and B's own
//! daemon in a network namespace, reached with the lab's ssh config; B's state and sockets are
//! on the shared filesystem, so the tests inspect B's daemon directly with --api-socket).
//!
//! The tests share host B, so they take turns (one lock); the first one restarts B's daemon
//! with the binary cargo just built and a fresh, empty state (DIR/restart-daemon.sh).

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// How long one migration may take before the test calls it hung.
const MIGRATE_LIMIT: Duration = Duration::from_secs(180);

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "command failed ({}): {}\nstdout: {}", o.status, stderr(o), stdout(o));
    stdout(o)
}

/// Host B as the lab's export lines describe it.
struct Lab {
    /// `root@10.250.88.2`
    host: String,
    /// `ssh -F DIR/ssh_config`
    ssh: String,
    /// DIR/ssh_config
    config: PathBuf,
    /// A wrapper on B that runs the current voltool against B's daemon.
    remote_voltool: String,
    /// B's management API socket.
    api: PathBuf,
    /// B's daemon's state directory.
    state: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

static TURN: Mutex<()> = Mutex::new(());
static RESTARTED: OnceLock<Result<(), String>> = OnceLock::new();

const LAB_VARS: [&str; 6] = [
    "VOLTOOL_TEST_SSH_HOST",
    "VOLTOOL_TEST_SSH_COMMAND",
    "VOLTOOL_TEST_SSH_CONFIG",
    "VOLTOOL_TEST_REMOTE_VOLTOOL",
    "VOLTOOL_TEST_REMOTE_API",
    "VOLTOOL_TEST_SSH_RESTART",
];

fn skip(test: &str, why: &str, ci_why: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: {ci_why}");
    println!("SKIP {test}: {why}");
}

/// The lab, or None (with a SKIP line) when it is not there; in CI a missing lab fails.
fn lab(test: &str) -> Option<Lab> {
    if !is_root() {
        skip(test, "needs root (the ssh lab, mounts, chown)", "CI runs as root");
        return None;
    }
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let missing: Vec<&str> = LAB_VARS.iter().copied().filter(|k| var(k).is_none()).collect();
    if !missing.is_empty() {
        skip(
            test,
            &format!(
                "no ssh lab ({} unset; run deploy/test-env/test.sh, or eval \"$(deploy/test-env/ssh/start-ssh-lab.sh DIR)\")",
                missing.join(", ")
            ),
            "CI must provide the ssh lab (test.sh runs deploy/test-env/ssh/start-ssh-lab.sh)",
        );
        return None;
    }
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let restarted = RESTARTED.get_or_init(|| {
        let script = var("VOLTOOL_TEST_SSH_RESTART").expect("checked");
        let o = Command::new(&script).arg(bin()).stdin(Stdio::null()).output().expect("run restart-daemon.sh");
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("{script} {} failed: {}{}", bin(), stdout(&o), stderr(&o)))
        }
    });
    if let Err(e) = restarted {
        panic!("{test}: host B's daemon did not start with the current binary: {e}");
    }
    let api = PathBuf::from(var("VOLTOOL_TEST_REMOTE_API").expect("checked"));
    let state = var("VOLTOOL_TEST_REMOTE_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| api.parent().expect("api socket dir").join("state"));
    Some(Lab {
        host: var("VOLTOOL_TEST_SSH_HOST").expect("checked"),
        ssh: var("VOLTOOL_TEST_SSH_COMMAND").expect("checked"),
        config: PathBuf::from(var("VOLTOOL_TEST_SSH_CONFIG").expect("checked")),
        remote_voltool: var("VOLTOOL_TEST_REMOTE_VOLTOOL").expect("checked"),
        api,
        state,
        _turn: turn,
    })
}

impl Lab {
    /// The CLI against B's daemon.
    fn remote(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--api-socket")
            .arg(&self.api)
            .args(args)
            .env_remove("VOLTOOL_API_SOCKET")
            .output()
            .expect("cli on B")
    }

    fn remote_volumes(&self) -> Vec<String> {
        ok(&self.remote(&["volume", "ls", "-q"])).lines().map(str::to_string).collect()
    }

    /// The address part of `USER@HOST`.
    fn addr(&self) -> &str {
        self.host.rsplit_once('@').map_or(&*self.host, |(_, h)| h)
    }

    /// `voltool migrate ARGS...` from host A (the local daemon `d`), with a time limit.
    fn migrate(&self, d: &Daemon, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(bin());
        c.arg("migrate").args(args).env("VOLTOOL_API_SOCKET", Daemon::paths(d.dir.path()).2);
        c.env_remove("VOLTOOL_SSH_COMMAND");
        c.envs(env.iter().copied());
        run(c, MIGRATE_LIMIT, &format!("voltool migrate {}", args.join(" ")))
    }

    /// Removes a volume on B (unmounting the test's mount first), ignoring failures.
    fn cleanup(&self, vol: &str) {
        let _ = self.remote(&["volume", "unmount", vol, "--id", "t"]);
        let _ = self.remote(&["volume", "rm", vol]);
    }
}

/// Runs `c` in its own process group with stdout/stderr captured; kills the group and
/// panics if it takes longer than `limit`.
fn run(mut c: Command, limit: Duration, what: &str) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
    let pgid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let (out, err) = (reader(child.stdout.take().expect("stdout")), reader(child.stderr.take().expect("stderr")));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if t0.elapsed() > limit {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            let err = String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned();
            panic!("{what}: still running after {limit:?} (killed); stderr so far:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Something it left behind (an ssh) may still hold the pipes: give it a moment, then end it.
    let t1 = Instant::now();
    while !(out.is_finished() && err.is_finished()) && t1.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !(out.is_finished() && err.is_finished()) {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    Output { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

fn mount(cli: impl Fn(&[&str]) -> Output, vol: &str) -> PathBuf {
    let p = PathBuf::from(ok(&cli(&["volume", "mount", vol, "--id", "t"])));
    assert!(p.is_dir(), "mount path {} of {vol} is a directory", p.display());
    p
}

fn unmount(cli: impl Fn(&[&str]) -> Output, vol: &str) {
    ok(&cli(&["volume", "unmount", vol, "--id", "t"]));
}

/// `n` bytes from /dev/urandom (incompressible: every byte crosses the wire).
fn random_file(p: &Path, n: u64) {
    let mut f = std::fs::File::create(p).expect("create");
    let copied = std::io::copy(&mut std::fs::File::open("/dev/urandom").expect("urandom").take(n), &mut f)
        .expect("write random");
    assert_eq!(copied, n);
}

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().expect("sh");
    assert!(o.status.success(), "{script}: {}", stderr(&o));
}

/// Nested dirs, a 20 MiB random file, symlinks, a hard link, odd names, owners, modes, an old
/// mtime. Returns the number of regular files (inodes).
fn fill(root: &Path) -> usize {
    let w = |rel: &str, data: &[u8]| std::fs::write(root.join(rel), data).expect("write");
    std::fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
    std::fs::create_dir_all(root.join("dir with space/sub dir")).expect("mkdir");
    std::fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    std::fs::create_dir_all(root.join("private")).expect("mkdir");
    random_file(&root.join("a/b/big.bin"), 20 << 20);
    w("a/b/c/deep.txt", b"deep\n");
    w("dir with space/sub dir/file with space.txt", b"spaces\n");
    w("\u{fc}n\u{ef}c\u{f6}d\u{e9}-\u{540d}\u{524d}.txt", b"unicode\n");
    w("-leading-dash", b"dash\n");
    w("new\nline", b"newline in the name\n");
    w("quote'\"back\\slash", b"quotes\n");
    w("star*?[x]", b"glob\n");
    w(".hidden", b"hidden\n");
    w("empty", b"");
    w("private/secret.txt", b"only the owner\n");
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("link")).expect("symlink");
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).expect("symlink");
    std::os::unix::fs::symlink("a/b", root.join("dirlink")).expect("symlink");
    std::fs::hard_link(root.join("a/b/c/deep.txt"), root.join("hardlink.txt")).expect("hard link");
    let r = root.display();
    sh(&format!(
        "cd '{r}' && chown 4321:8765 private private/secret.txt && chmod 0700 private && chmod 0600 private/secret.txt \
         && chmod 0640 a/b/big.bin && chown 1234:5678 a/b/big.bin && chmod 2775 'dir with space' \
         && touch -d '2001-02-03 04:05:06.123456789' a/b/c/deep.txt && touch -h -d '2002-03-04 05:06:07' link"
    ));
    11
}

/// Every path under `root` (recursively), the daemon's database files left out.
fn listing(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).expect("prefix").to_string_lossy().into_owned();
            if rel.starts_with("voltool.db") {
                continue;
            }
            out.insert(rel);
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Apparent size of everything under `root`.
fn bytes_under(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// An ssh command (for -e) that counts the bytes migrate sends through it into `count`.
fn counting_ssh(lab: &Lab, dir: &Path) -> (String, PathBuf) {
    let count = dir.join("sent-bytes");
    let script = dir.join("counting-ssh.sh");
    std::fs::write(&script, format!("#!/bin/bash\ntee >(wc -c > '{}') | {} \"$@\"\n", count.display(), lab.ssh))
        .expect("write wrapper");
    sh(&format!("chmod 755 '{}'", script.display()));
    (script.display().to_string(), count)
}

fn sent_bytes(count: &Path) -> u64 {
    let t0 = Instant::now();
    loop {
        if let Some(n) = std::fs::read_to_string(count).ok().and_then(|s| s.trim().parse().ok()) {
            return n;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the counting ssh wrapper wrote no count");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `(N files, B bytes, verified)` of the success line.
fn counts(line: &str) -> (u64, u64) {
    let inner = line.rsplit_once('(').and_then(|(_, r)| r.strip_suffix(')')).unwrap_or_else(|| panic!("{line}"));
    let parts: Vec<&str> = inner.split(", ").collect();
    assert_eq!(parts.len(), 3, "(N files, B bytes, verified): {line}");
    let num = |s: &str, unit: &str| -> u64 {
        s.strip_suffix(unit).and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("{unit} in {line}"))
    };
    assert_eq!(parts[2], "verified", "{line}");
    (num(parts[0], " files"), num(parts[1], " bytes"))
}

#[test]
fn migrates_a_volume_with_its_options_and_identical_data() {
    let test = "migrates_a_volume_with_its_options_and_identical_data";
    let Some(lab) = lab(test) else { return };
    let d = Daemon::start();
    let (vol, new) = ("mig-src", "mig-copy");
    lab.cleanup(new);
    ok(&d.cli(&["volume", "create", vol, "-o", "mode=0750", "-o", "uid=1234"]));
    let src = mount(|a| d.cli(a), vol);
    let files = fill(&src);
    let want = tree(&src);
    unmount(|a| d.cli(a), vol);

    let dest = format!("{}:{new}", lab.host);
    let args =
        [vol, &dest, "-e", &lab.ssh, "--ssh-option", "ConnectTimeout=20", "--remote-voltool", &lab.remote_voltool];
    let o = lab.migrate(&d, &args, &[]);
    let out = ok(&o);
    let line = out.lines().find(|l| l.starts_with("migrated ")).unwrap_or_else(|| panic!("no success line in: {out}"));
    assert!(line.starts_with(&format!("migrated {vol} to ")), "{line}");
    assert!(line.contains(&format!(":{new} (")), "names HOST:NEWNAME: {line}");
    let (n, bytes) = counts(line);
    assert!(n >= files as u64, "at least the {files} regular files: {line}");
    assert!(bytes >= 20 << 20, "the 20 MiB file is counted: {line}");

    // B: the same options, the same data, the same root owner and mode.
    let j: serde_json::Value =
        serde_json::from_str(&ok(&lab.remote(&["volume", "inspect", new, "--json"]))).expect("json");
    assert_eq!(j[0]["Options"]["mode"], "0750", "options carried over: {j}");
    assert_eq!(j[0]["Options"]["uid"], "1234", "options carried over: {j}");
    assert!(
        stdout(&d.cli(&["volume", "ls", "-q"])).lines().any(|l| l == vol),
        "the source stays without --delete-source"
    );
    let src = mount(|a| d.cli(a), vol);
    let got = mount(|a| lab.remote(a), new);
    assert_eq!(tree(&src), want, "the source is unchanged");
    assert_same_tree(&src, &got);
    let (ms, mg) = (std::fs::metadata(&src).expect("stat"), std::fs::metadata(&got).expect("stat"));
    assert_eq!((mg.mode() & 0o7777, mg.uid()), (ms.mode() & 0o7777, ms.uid()), "the volume root");
    assert_eq!((mg.mode() & 0o7777, mg.uid()), (0o750, 1234), "the volume root has the options' owner and mode");
    unmount(|a| d.cli(a), vol);
    unmount(|a| lab.remote(a), new);
    ok(&lab.remote(&["volume", "rm", new]));
}

#[test]
fn delete_source_moves_the_volume_under_its_own_name() {
    let test = "delete_source_moves_the_volume_under_its_own_name";
    let Some(lab) = lab(test) else { return };
    let d = Daemon::start();
    let vol = "mig-move";
    lab.cleanup(vol);
    ok(&d.cli(&["volume", "create", vol]));
    let src = mount(|a| d.cli(a), vol);
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    random_file(&src.join("sub/payload.bin"), 3 << 20);
    std::fs::write(src.join("note.txt"), "moved, not copied\n").expect("write");
    let want = tree(&src);
    unmount(|a| d.cli(a), vol);

    // No :NEWNAME, the ssh command from VOLTOOL_SSH_COMMAND, the remote `voltool` from B's PATH
    // (sshd's SetEnv puts the lab's wrapper first; a shell rc file could put another first).
    let mut which = Command::new("sh");
    which.arg("-c").arg(format!("{} {} 'command -v voltool'", lab.ssh, lab.host));
    let which = ok(&run(which, Duration::from_secs(60), "ssh: command -v voltool"));
    assert_eq!(which, lab.remote_voltool, "`voltool` on B's PATH over ssh is the lab's");
    let o = lab.migrate(&d, &[vol, &lab.host, "--delete-source", "--json"], &[("VOLTOOL_SSH_COMMAND", &lab.ssh)]);
    let out = ok(&o);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json prints a JSON object ({e}): {out}"));
    assert_eq!(v["ok"], true, "{v}");
    assert!(!stdout(&d.cli(&["volume", "ls", "-q"])).lines().any(|l| l == vol), "the source is gone");
    assert!(!d.state().join("volumes").join(vol).exists(), "the source's data is gone");
    assert!(lab.remote_volumes().iter().any(|l| l == vol), "B has {vol} under the same name");
    let got = mount(|a| lab.remote(a), vol);
    assert_eq!(tree(&got), want, "B has the data");
    unmount(|a| lab.remote(a), vol);
    ok(&lab.remote(&["volume", "rm", vol]));
}

#[test]
fn an_existing_volume_with_data_on_the_remote_is_refused_before_data_moves() {
    let test = "an_existing_volume_with_data_on_the_remote_is_refused_before_data_moves";
    let Some(lab) = lab(test) else { return };
    let d = Daemon::start();
    let (vol, new) = ("mig-big-src", "mig-full");
    lab.cleanup(new);
    ok(&lab.remote(&["volume", "create", new, "-o", "mode=0700"]));
    let theirs = mount(|a| lab.remote(a), new);
    std::fs::write(theirs.join("precious.txt"), "B's own data\n").expect("write");
    let before = tree(&theirs);
    unmount(|a| lab.remote(a), new);
    let volumes_before = lab.remote_volumes();
    ok(&d.cli(&["volume", "create", vol]));
    let src = mount(|a| d.cli(a), vol);
    random_file(&src.join("data.bin"), 32 << 20);
    unmount(|a| d.cli(a), vol);

    let tmp = tempfile::tempdir().expect("tmp");
    let (ssh, count) = counting_ssh(&lab, tmp.path());
    let dest = format!("{}:{new}", lab.host);
    let o = lab.migrate(&d, &[vol, &dest, "-e", &ssh, "--remote-voltool", &lab.remote_voltool], &[]);
    let msg = stderr(&o);
    assert!(!o.status.success(), "must be refused: {}", stdout(&o));
    assert!(msg.contains(new), "names the volume: {msg}");
    assert!(msg.contains("not empty") || msg.contains("exist"), "says it exists with data: {msg}");
    println!("{test}: migrate said: {msg}");
    let sent = sent_bytes(&count);
    assert!(sent < 1 << 20, "refused before the data: {sent} bytes of the 32 MiB volume went through ssh");
    assert_eq!(lab.remote_volumes(), volumes_before, "nothing created on B");
    let theirs = mount(|a| lab.remote(a), new);
    assert_eq!(tree(&theirs), before, "B's volume is unchanged");
    unmount(|a| lab.remote(a), new);
    let j: serde_json::Value =
        serde_json::from_str(&ok(&lab.remote(&["volume", "inspect", new, "--json"]))).expect("json");
    assert_eq!(j[0]["Options"]["mode"], "0700", "B's volume keeps its options: {j}");
    assert!(stdout(&d.cli(&["volume", "ls", "-q"])).lines().any(|l| l == vol), "the source stays");
    ok(&lab.remote(&["volume", "rm", new]));
}

#[test]
fn a_secret_the_remote_lacks_is_named_and_nothing_is_created() {
    let test = "a_secret_the_remote_lacks_is_named_and_nothing_is_created";
    let Some(lab) = lab(test) else { return };
    let (share, password) = match (std::env::var("VOLTOOL_TEST_SMB_SHARE"), std::env::var("VOLTOOL_TEST_SMB_PASSWORD"))
    {
        (Ok(p), Ok(pw)) if Path::new(&p).is_dir() => (PathBuf::from(p), pw),
        _ => {
            skip(
                test,
                "no test SMB server for a cifs volume (run deploy/test-env/test.sh, or set VOLTOOL_TEST_SMB_SHARE/VOLTOOL_TEST_SMB_PASSWORD)",
                "CI must provide the SMB server (test.sh)",
            );
            return;
        }
    };
    let d = Daemon::start();
    let (vol, secret) = ("mig-cifs", format!("mig-smbpw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(share.join(vol));
    ok(&d.cli_stdin(&["secret", "add", &secret], password.as_bytes()));
    ok(&d.cli(&[
        "volume",
        "create",
        vol,
        "-o",
        "type=cifs",
        "-o",
        "share=//127.0.0.1/data",
        "-o",
        "username=smbtest",
        "-o",
        "o=port=18445",
        "-o",
        &format!("secret={secret}"),
    ]));
    std::fs::write(share.join(vol).join("hello.txt"), "on the share\n").expect("write on the share");
    let volumes_before = lab.remote_volumes();
    let state_before = listing(&lab.state);

    let tmp = tempfile::tempdir().expect("tmp");
    let (ssh, count) = counting_ssh(&lab, tmp.path());
    let dest = format!("{}:mig-cifs-copy", lab.host);
    let o = lab.migrate(&d, &[vol, &dest, "-e", &ssh, "--remote-voltool", &lab.remote_voltool], &[]);
    let msg = stderr(&o);
    assert!(!o.status.success(), "must be refused: {}", stdout(&o));
    assert!(msg.contains(&secret), "names the missing secret: {msg}");
    println!("{test}: migrate said: {msg}");
    assert!(!msg.contains(&password), "never shows the password: {msg}");
    assert!(sent_bytes(&count) < 64 << 10, "refused before any data");
    assert_eq!(lab.remote_volumes(), volumes_before, "nothing created on B");
    let new: Vec<String> = listing(&lab.state).difference(&state_before).cloned().collect();
    assert!(new.is_empty(), "nothing written to B's state: {new:?}");
    assert!(!stdout(&lab.remote(&["secret", "ls"])).contains(&secret), "no secret made up on B");
    assert!(stdout(&d.cli(&["volume", "ls", "-q"])).lines().any(|l| l == vol), "the source stays");
    ok(&d.cli(&["volume", "rm", vol]));
    let _ = std::fs::remove_dir_all(share.join(vol));
    ok(&d.cli(&["secret", "rm", &secret]));
}

#[test]
fn a_stream_corrupted_in_transit_is_refused_and_leaves_nothing() {
    let test = "a_stream_corrupted_in_transit_is_refused_and_leaves_nothing";
    let Some(lab) = lab(test) else { return };
    let d = Daemon::start();
    let (vol, new) = ("mig-flip", "mig-flipped");
    lab.cleanup(new);
    ok(&d.cli(&["volume", "create", vol]));
    let src = mount(|a| d.cli(a), vol);
    random_file(&src.join("data.bin"), 24 << 20);
    std::fs::write(src.join("small.txt"), "small\n").expect("write");
    unmount(|a| d.cli(a), vol);
    let volumes_before = lab.remote_volumes();
    let state_before = listing(&lab.state);

    // An ssh that passes the first 5,000,000 bytes, adds one to the next byte, passes the rest
    // (dd without fullblock passes each read on at once; head -c would hold the handshake back).
    let tmp = tempfile::tempdir().expect("tmp");
    let wrapper = tmp.path().join("flipping-ssh.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\n{{ dd bs=64K iflag=count_bytes count=5000000 status=none; \
             dd bs=1 count=1 status=none | tr '\\000-\\377' '\\001-\\377\\000'; cat; }} | {} \"$@\"\n",
            lab.ssh
        ),
    )
    .expect("write wrapper");
    sh(&format!("chmod 755 '{}'", wrapper.display()));
    let dest = format!("{}:{new}", lab.host);
    let args = [vol, &dest, "-e", wrapper.to_str().expect("utf8"), "--remote-voltool", &lab.remote_voltool];
    let o = lab.migrate(&d, &args, &[]);
    let msg = stderr(&o);
    assert!(!o.status.success(), "a corrupted stream must not migrate: {}", stdout(&o));
    assert!(msg.contains(vol) || msg.contains(new), "says which migration failed: {msg}");
    println!("{test}: migrate said: {msg}");
    let t0 = Instant::now();
    loop {
        let volumes = lab.remote_volumes();
        let left: Vec<String> = listing(&lab.state).difference(&state_before).cloned().collect();
        if volumes == volumes_before && left.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "B still has: volumes {volumes:?} (before: {volumes_before:?}), new paths in its state dir {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stdout(&d.cli(&["volume", "ls", "-q"])).lines().any(|l| l == vol), "the source stays");
}

/// What the interrupted-migration test kills mid-transfer.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Only the ssh process (the connection drops; migrate lives on and must fail).
    Ssh,
    /// migrate's whole process group (migrate and its ssh).
    Everything,
}

/// Starts `voltool migrate VOL HOST:NEW` (300 MiB), kills per `cut` once data arrives on B,
/// and checks that B is left as it was.
fn interrupt(lab: &Lab, d: &Daemon, vol: &str, new: &str, cut: Cut, test: &str) {
    let volumes_before = lab.remote_volumes();
    let state_before = listing(&lab.state);
    let base = bytes_under(&lab.state);

    // An ssh that tells its PID, so the test can kill it mid-transfer.
    let tmp = tempfile::tempdir().expect("tmp");
    let pidfile = tmp.path().join("ssh.pid");
    let wrapper = tmp.path().join("ssh-with-pid.sh");
    std::fs::write(&wrapper, format!("#!/bin/sh\necho $$ > '{}'\nexec {} \"$@\"\n", pidfile.display(), lab.ssh))
        .expect("write wrapper");
    sh(&format!("chmod 755 '{}'", wrapper.display()));
    let dest = format!("{}:{new}", lab.host);
    let mut child = Command::new(bin())
        .args(["migrate", vol, &dest, "-e", wrapper.to_str().expect("utf8")])
        .args(["--remote-voltool", &lab.remote_voltool])
        .env("VOLTOOL_API_SOCKET", Daemon::paths(d.dir.path()).2)
        .env_remove("VOLTOOL_SSH_COMMAND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn migrate");
    let pgid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let (out, err) = (reader(child.stdout.take().expect("stdout")), reader(child.stderr.take().expect("stderr")));

    // Wait for ssh, then for data to arrive in B's state dir (8 MiB, or 5 s at most).
    let t0 = Instant::now();
    let ssh_pid = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            break p;
        }
        if let Some(s) = child.try_wait().expect("try_wait") {
            let e = String::from_utf8_lossy(&err.join().expect("stderr")).into_owned();
            panic!("{cut:?}: migrate exited ({s}) before starting ssh: {e}");
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = killpg(pgid, Signal::SIGKILL);
            panic!("{cut:?}: migrate did not start its ssh within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let t1 = Instant::now();
    let mut arrived = 0;
    while t1.elapsed() < Duration::from_secs(5) {
        arrived = bytes_under(&lab.state).saturating_sub(base);
        if arrived >= 8 << 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(s) = child.try_wait().expect("try_wait") {
        let e = String::from_utf8_lossy(&err.join().expect("stderr")).into_owned();
        panic!("{cut:?}: migrate of 300 MiB finished ({s}) before it could be interrupted: {e}");
    }
    match cut {
        Cut::Ssh => kill(Pid::from_raw(ssh_pid), Signal::SIGKILL).expect("kill ssh"),
        Cut::Everything => killpg(pgid, Signal::SIGKILL).expect("kill migrate's process group"),
    }
    println!("{test}: {cut:?}: killed after {:?}, {} MiB had reached B's state dir", t1.elapsed(), arrived >> 20);

    // migrate fails (it does not hang, nor claim success) ...
    let t2 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if t2.elapsed() > Duration::from_secs(20) {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            panic!("{cut:?}: migrate still running 20 s after its ssh was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = killpg(pgid, Signal::SIGKILL);
    let (out, err) = (out.join().expect("stdout"), String::from_utf8_lossy(&err.join().expect("stderr")).into_owned());
    assert!(!status.success(), "{cut:?}: an interrupted migration fails: {}", String::from_utf8_lossy(&out));
    if let Cut::Ssh = cut {
        assert!(err.contains(vol), "{cut:?}: says on stderr which migration failed: {err}");
        println!("{test}: {cut:?}: migrate said: {}", err.trim());
    }

    // ... and B is left as it was: no volume, no staging (the daemon gets a few seconds).
    let t3 = Instant::now();
    loop {
        let volumes = lab.remote_volumes();
        let left: Vec<String> = listing(&lab.state).difference(&state_before).cloned().collect();
        if volumes == volumes_before && left.is_empty() {
            break;
        }
        assert!(
            t3.elapsed() < Duration::from_secs(10),
            "{cut:?}: 10 s after the interruption B still has: volumes {volumes:?} (before: {volumes_before:?}), new paths in its state dir {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_interrupted_migration_leaves_nothing_on_the_remote() {
    let test = "an_interrupted_migration_leaves_nothing_on_the_remote";
    let Some(lab) = lab(test) else { return };
    let d = Daemon::start();
    let (vol, new) = ("mig-huge", "mig-cut");
    lab.cleanup(new);
    ok(&d.cli(&["volume", "create", vol]));
    let src = mount(|a| d.cli(a), vol);
    for i in 0..3 {
        random_file(&src.join(format!("part{i}.bin")), 100 << 20);
    }
    unmount(|a| d.cli(a), vol);
    for cut in [Cut::Ssh, Cut::Everything] {
        interrupt(&lab, &d, vol, new, cut, test);
        assert!(stdout(&d.cli(&["volume", "ls", "-q"])).lines().any(|l| l == vol), "{cut:?}: the source stays");
    }
    // And the volume migrates fine afterwards.
    let dest = format!("{}:{new}", lab.host);
    let o = lab.migrate(&d, &[vol, &dest, "-e", &lab.ssh, "--remote-voltool", &lab.remote_voltool], &[]);
    ok(&o);
    let (src, got) = (mount(|a| d.cli(a), vol), mount(|a| lab.remote(a), new));
    assert_same_tree(&src, &got);
    unmount(|a| d.cli(a), vol);
    unmount(|a| lab.remote(a), new);
    ok(&lab.remote(&["volume", "rm", new]));
}

#[test]
fn a_wrong_or_unknown_host_key_stops_the_migration() {
    let test = "a_wrong_or_unknown_host_key_stops_the_migration";
    let Some(lab) = lab(test) else { return };
    let d = Daemon::start();
    let (vol, new) = ("mig-hostkey", "mig-hostkey-copy");
    lab.cleanup(new);
    ok(&d.cli(&["volume", "create", vol]));
    let src = mount(|a| d.cli(a), vol);
    std::fs::write(src.join("file.txt"), "must not arrive\n").expect("write");
    unmount(|a| d.cli(a), vol);
    let volumes_before = lab.remote_volumes();

    // A known_hosts with another key for B's address, and an ssh_config copy that uses it.
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path().display();
    sh(&format!("ssh-keygen -q -t ed25519 -N '' -C wrong -f '{t}/wrongkey'"));
    let key = std::fs::read_to_string(tmp.path().join("wrongkey.pub")).expect("pub");
    let key: Vec<&str> = key.split_whitespace().take(2).collect();
    let wrong = tmp.path().join("known_hosts_wrong");
    std::fs::write(&wrong, format!("{} {}\n", lab.addr(), key.join(" "))).expect("write");
    let config = std::fs::read_to_string(&lab.config).expect("read lab ssh_config");
    assert!(config.contains("UserKnownHostsFile"), "the lab's ssh_config names its known_hosts");
    let config: String = config
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("UserKnownHostsFile") {
                format!("  UserKnownHostsFile {}\n", wrong.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let config_path = tmp.path().join("ssh_config");
    std::fs::write(&config_path, config).expect("write");
    let dest = format!("{}:{new}", lab.host);
    let with_config = format!("ssh -F {}", config_path.display());
    let known = format!("UserKnownHostsFile={}", wrong.display());
    let cases: [(&str, Vec<&str>, &[&str]); 3] = [
        (
            "wrong key (ssh_config)",
            vec!["-e", with_config.as_str()],
            &["REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed"],
        ),
        (
            "wrong key (--ssh-option)",
            vec!["-e", lab.ssh.as_str(), "--ssh-option", known.as_str()],
            &["Host key verification failed"],
        ),
        (
            "unknown host",
            vec!["-e", lab.ssh.as_str(), "--ssh-option", "UserKnownHostsFile=/dev/null"],
            &["Host key verification failed"],
        ),
    ];
    for (what, extra, needles) in cases {
        let mut args = vec![vol, &dest, "--remote-voltool", &lab.remote_voltool];
        args.extend(extra);
        let o = lab.migrate(&d, &args, &[]);
        let msg = stderr(&o);
        assert!(!o.status.success(), "{what}: must fail: {}", stdout(&o));
        for n in needles {
            assert!(msg.contains(n), "{what}: ssh's host key error {n:?} surfaces: {msg}");
        }
        assert_eq!(lab.remote_volumes(), volumes_before, "{what}: nothing created on B");
    }
    assert!(stdout(&d.cli(&["volume", "ls", "-q"])).lines().any(|l| l == vol), "the source stays");
}
