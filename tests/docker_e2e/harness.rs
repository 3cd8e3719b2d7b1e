//! Shared setup for the Docker end-to-end suite: which plugin mode, how to reach it, the
//! busybox image, docker CLI helpers. Outside CI a missing engine prints SKIP; in CI
//! (`CI=true`) it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub const IMAGE: &str = "voltool-e2e-busybox";
const LEGACY_DIR: &str = "/tmp/voltool-e2e-legacy";
pub const LEGACY_DRIVER: &str = "voltool-e2e-legacy";
pub const MANAGED_DRIVER: &str = "voltool:latest";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `docker plugin create/enable` (installed by deploy/plugin.sh).
    Managed,
    /// `voltool serve` on the host with a socket in /run/docker/plugins.
    Legacy,
}

pub struct Env {
    pub mode: Mode,
    pub driver: &'static str,
    pub api_socket: PathBuf,
    /// Held for the whole test: restarts take the write side so they never pull the plugin
    /// from under another test of the same mode.
    _gate: Gate,
}

enum Gate {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

fn gate(mode: Mode) -> &'static RwLock<()> {
    static MANAGED: RwLock<()> = RwLock::new(());
    static LEGACY: RwLock<()> = RwLock::new(());
    match mode {
        Mode::Managed => &MANAGED,
        Mode::Legacy => &LEGACY,
    }
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn skip_or_fail(test: &str, why: &str) -> Option<Env> {
    assert!(!in_ci(), "{test}: {why} (CI must run the Docker suite: bash deploy/test-env/test.sh)");
    println!("SKIP {test}: {why}");
    None
}

pub fn voltool_bin() -> &'static str {
    env!("CARGO_BIN_EXE_voltool")
}

/// Runs a command, returning its output (never panics on non-zero exit).
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `docker ARGS`, asserting success; returns stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let o = run(Command::new("docker").args(args));
    assert!(o.status.success(), "docker {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `docker ARGS`, expecting failure; returns the combined output.
pub fn docker_fails(args: &[&str]) -> String {
    let o = run(Command::new("docker").args(args));
    assert!(!o.status.success(), "docker {args:?} unexpectedly succeeded: {}", text(&o));
    text(&o)
}

fn docker_up() -> bool {
    run(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"])).status.success()
}

fn ensure_image() -> Result<(), String> {
    if run(Command::new("docker").args(["image", "inspect", IMAGE])).status.success() {
        return Ok(());
    }
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("busybox-static is not installed")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy(bb, bin.join("busybox")).map_err(|e| e.to_string())?;
    let list = run(Command::new(bb).arg("--list"));
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    let o = run(Command::new("sh")
        .arg("-c")
        .arg(format!("tar -C {} -c . | docker import - {IMAGE}", dir.path().display())));
    if o.status.success() { Ok(()) } else { Err(format!("docker import failed: {}", text(&o))) }
}

static LEGACY_DAEMON: Mutex<Option<Child>> = Mutex::new(None);

fn legacy_api() -> PathBuf {
    Path::new(LEGACY_DIR).join("api.sock")
}

pub fn legacy_plugin_socket() -> PathBuf {
    PathBuf::from(format!("/run/docker/plugins/{LEGACY_DRIVER}.sock"))
}

/// Starts (or restarts) the host-mode daemon this test process owns.
pub fn start_legacy_daemon() {
    let mut slot = LEGACY_DAEMON.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(mut c) = slot.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    // A daemon left by an earlier run of this suite.
    let pidfile = Path::new(LEGACY_DIR).join("pid");
    // Only while that pid is still a voltool: a stale file's pid may belong to anything now.
    let pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
    let pid = pid.trim();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !pid.is_empty() && comm.trim() == "voltool" {
        let _ = run(Command::new("kill").arg("-9").arg(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::create_dir_all(LEGACY_DIR).expect("legacy dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(LEGACY_DIR).join("daemon.log"))
        .expect("log");
    let child = Command::new(voltool_bin())
        .args(["serve", "--state-dir", &format!("{LEGACY_DIR}/state"), "--plugin-socket"])
        .arg(legacy_plugin_socket())
        .arg("--api-socket")
        .arg(legacy_api())
        .env("VOLTOOL_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn voltool serve");
    std::fs::write(&pidfile, child.id().to_string()).expect("pidfile");
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(legacy_api()).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "legacy daemon socket not accepting within 1 s; see {LEGACY_DIR}/daemon.log"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    *slot = Some(child);
}

/// Kills the host-mode daemon with SIGKILL (a crash, not a clean stop).
pub fn kill_legacy_daemon() {
    let mut slot = LEGACY_DAEMON.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(mut c) = slot.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn managed_enabled() -> bool {
    let o = run(Command::new("docker").args(["plugin", "inspect", "--format", "{{.Enabled}}", MANAGED_DRIVER]));
    o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true"
}

/// The engine answers and the test image is there (built once if missing); else why not.
fn engine_and_image() -> Result<(), String> {
    if !docker_up() {
        return Err("docker engine not reachable".into());
    }
    static IMG: OnceLock<Result<(), String>> = OnceLock::new();
    IMG.get_or_init(ensure_image).clone().map_err(|e| format!("cannot build the test image: {e}"))
}

/// For suites that run their own daemon: whether the engine and the test image are there; if
/// not, prints `SKIP test: why` (outside CI; in CI it fails). Used by tests/hostile_restore.rs.
#[allow(dead_code)]
pub fn docker_or_skip(test: &str) -> bool {
    engine_and_image().map_or_else(|e| skip_or_fail(test, &e).is_some(), |()| true)
}

fn setup(test: &str, mode: Mode, exclusive: bool) -> Option<Env> {
    if let Err(e) = engine_and_image() {
        return skip_or_fail(test, &e);
    }
    let g = if exclusive {
        Gate::Exclusive(gate(mode).write().unwrap_or_else(|p| p.into_inner()))
    } else {
        Gate::Shared(gate(mode).read().unwrap_or_else(|p| p.into_inner()))
    };
    match mode {
        Mode::Managed => {
            if !managed_enabled() {
                return skip_or_fail(
                    test,
                    "managed plugin voltool:latest is not enabled (deploy/plugin.sh build && deploy/plugin.sh install)",
                );
            }
            Some(Env { mode, driver: MANAGED_DRIVER, api_socket: "/run/voltool/voltool.sock".into(), _gate: g })
        }
        Mode::Legacy => {
            if !nix::unistd::geteuid().is_root() {
                return skip_or_fail(test, "host-mode daemon needs root");
            }
            static STARTED: OnceLock<()> = OnceLock::new();
            STARTED.get_or_init(start_legacy_daemon);
            Some(Env { mode, driver: LEGACY_DRIVER, api_socket: legacy_api(), _gate: g })
        }
    }
}

/// Environment for an ordinary test.
pub fn env(test: &str, mode: Mode) -> Option<Env> {
    setup(test, mode, false)
}

/// Environment for a test that restarts the plugin: no other test of the mode runs meanwhile.
pub fn env_exclusive(test: &str, mode: Mode) -> Option<Env> {
    setup(test, mode, true)
}

impl Env {
    /// A volume name unique to this test and mode; removes a leftover of an earlier run.
    pub fn volume_name(&self, base: &str) -> String {
        let name = format!("e2e-{}-{base}", if self.mode == Mode::Managed { "m" } else { "l" });
        // Leftovers of an earlier, failed run: containers still holding the volume, then it.
        let users = run(Command::new("docker").args(["ps", "-aq", "--filter", &format!("volume={name}")]));
        for id in String::from_utf8_lossy(&users.stdout).split_whitespace() {
            let _ = run(Command::new("docker").args(["rm", "-f", id]));
        }
        let _ = run(Command::new("docker").args(["volume", "rm", "-f", &name]));
        name
    }

    pub fn create(&self, name: &str, opts: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.args(["volume", "create", "-d", self.driver]);
        for o in opts {
            cmd.args(["-o", o]);
        }
        run(cmd.arg(name))
    }

    pub fn create_ok(&self, name: &str, opts: &[&str]) {
        let o = self.create(name, opts);
        assert!(o.status.success(), "create {name} {opts:?}: {}", text(&o));
    }

    /// `docker run --rm --network none -v VOL:/data IMAGE sh -c SCRIPT`.
    pub fn run_in(&self, vol: &str, script: &str) -> Output {
        run(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{vol}:/data"),
            IMAGE,
            "sh",
            "-c",
            script,
        ]))
    }

    /// `voltool ARGS` against this mode's daemon.
    pub fn voltool(&self, args: &[&str]) -> Output {
        run(Command::new(voltool_bin()).args(args).env("VOLTOOL_API_SOCKET", &self.api_socket))
    }

    /// `voltool secret add NAME` with `value` on stdin, against this mode's daemon.
    pub fn add_secret(&self, name: &str, value: &str) {
        let mut add = Command::new(voltool_bin())
            .args(["secret", "add", name])
            .env("VOLTOOL_API_SOCKET", &self.api_socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("secret add");
        std::io::Write::write_all(&mut add.stdin.take().expect("stdin"), value.as_bytes()).expect("write");
        assert!(add.wait().expect("wait").success(), "secret add {name}");
    }

    /// The plugin's unix socket as seen from the host.
    pub fn plugin_socket(&self) -> PathBuf {
        match self.mode {
            Mode::Legacy => legacy_plugin_socket(),
            Mode::Managed => {
                let id = docker_ok(&["plugin", "inspect", "--format", "{{.Id}}", MANAGED_DRIVER]);
                PathBuf::from(format!("/run/docker/plugins/{id}/voltool.sock"))
            }
        }
    }

    /// Whether the volume is mounted in the host's mount table (managed mode: through the
    /// plugin's propagated mount).
    pub fn host_mounted(&self, vol: &str) -> bool {
        let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        table.lines().filter_map(|l| l.split(' ').nth(4)).any(|mp| match self.mode {
            Mode::Managed => mp.ends_with(&format!("/propagated-mount/{vol}")),
            Mode::Legacy => mp == format!("{LEGACY_DIR}/state/mounts/{vol}"),
        })
    }

    /// Restarts the plugin: managed `disable -f` + `enable`; host mode a SIGKILL + start.
    pub fn restart_plugin(&self) {
        match self.mode {
            Mode::Managed => {
                docker_ok(&["plugin", "disable", "-f", MANAGED_DRIVER]);
                docker_ok(&["plugin", "enable", MANAGED_DRIVER]);
            }
            Mode::Legacy => {
                kill_legacy_daemon();
                start_legacy_daemon();
            }
        }
    }
}

/// Sends one raw HTTP POST to a unix socket (no Content-Type, like dockerd) and returns
/// (status, body).
pub fn raw_post(socket: &Path, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s =
        std::os::unix::net::UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body).expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
