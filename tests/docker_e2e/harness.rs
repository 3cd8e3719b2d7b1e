//! Shared setup for the Docker end-to-end suite: which plugin mode, how to reach it, the
//! busybox image, docker CLI helpers. Outside CI a missing engine prints SKIP; in CI
//! (`CI=true`) it fails.
//!
//! The suite keeps to its own state. This process installs its own managed plugin
//! (`voltool-e2e-PID:latest`, built by deploy/plugin.sh from the voltool binary under test,
//! its state and API socket in /tmp/voltool-e2e-managed-PID) and starts its own host daemon
//! (driver `voltool-e2e-legacy`, state in /tmp/voltool-e2e-legacy-PID, an empty config file
//! so the targets of the host's /etc/voltool/voltool.toml are not used). One process at a
//! time: a new one waits for the teardown of the one before. Nothing reaches
//! the host's /var/lib/voltool or /run/voltool, and an installed voltool:latest is left alone.
//!
//! What the suite makes it removes, also when a test fails: a test's volumes (and the
//! containers using them), secrets and files on the test servers when its [`Env`] drops;
//! the plugin, the daemon and their dirs once this process has ended, however it ends
//! (teardown.sh, started by a helper that waits for the end of a pipe only this process
//! writes to); what a killed run left behind is swept at the next start. After a failed run
//! the host daemon's log stays as /tmp/voltool-e2e-legacy-PID.log. The busybox test image
//! stays cached in Docker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use suite::{Suite, suite};

#[path = "suite.rs"]
mod suite;

pub const IMAGE: &str = "voltool-e2e-busybox";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `docker plugin create/enable`, installed by this process with deploy/plugin.sh.
    Managed,
    /// `voltool serve` on the host with a socket in /run/docker/plugins.
    Legacy,
}

impl Mode {
    fn tag(self) -> &'static str {
        match self {
            Mode::Managed => "managed",
            Mode::Legacy => "legacy",
        }
    }

    /// The Docker driver name the suite of process `pid` serves in this mode. The host
    /// daemon's is the same for every process: dockerd remembers each legacy plugin it has
    /// used until it restarts, and asks every one it remembers on each `docker volume ls`
    /// (15 s of retries for one whose socket is gone), so names must not pile up.
    fn driver(self, pid: u32) -> String {
        match self {
            Mode::Managed => format!("voltool-e2e-{pid}:latest"),
            Mode::Legacy => "voltool-e2e-legacy".into(),
        }
    }

    /// The dir of the suite of process `pid` in this mode.
    fn dir(self, pid: u32) -> PathBuf {
        PathBuf::from(format!("/tmp/voltool-e2e-{}-{pid}", self.tag()))
    }
}

pub struct Env {
    pub mode: Mode,
    pub driver: String,
    pub api_socket: PathBuf,
    suite: &'static Suite,
    /// What this test made, removed on drop.
    made: Mutex<Vec<Made>>,
    /// Held for the whole test: restarts take the write side so they never pull the plugin
    /// from under another test of the same mode.
    _gate: Gate,
}

/// Something a test made that its [`Env`] removes when it drops.
enum Made {
    Volume(String),
    Secret(String),
    Path(PathBuf),
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

/// Runs a command for cleanup: whether it succeeded, never a panic (a drop may run while a
/// test panics, and a second panic would abort the whole test binary).
fn quietly(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
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
    if mode == Mode::Legacy && !nix::unistd::geteuid().is_root() {
        return skip_or_fail(test, "host-mode daemon needs root");
    }
    let suite = match suite(mode) {
        Ok(s) => s,
        Err(e) => return skip_or_fail(test, e),
    };
    let g = if exclusive {
        Gate::Exclusive(gate(mode).write().unwrap_or_else(|p| p.into_inner()))
    } else {
        Gate::Shared(gate(mode).read().unwrap_or_else(|p| p.into_inner()))
    };
    Some(Env {
        mode,
        driver: suite.driver.clone(),
        api_socket: suite.api_socket(),
        suite,
        made: Mutex::default(),
        _gate: g,
    })
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
    /// A volume name unique to this test and mode; removes a leftover of an earlier run, and
    /// the volume (with the containers using it) when this test ends.
    pub fn volume_name(&self, base: &str) -> String {
        let name = format!("e2e-{}-{base}", if self.mode == Mode::Managed { "m" } else { "l" });
        // Leftovers of an earlier, failed run: containers still holding the volume, then it.
        let users = run(Command::new("docker").args(["ps", "-aq", "--filter", &format!("volume={name}")]));
        for id in String::from_utf8_lossy(&users.stdout).split_whitespace() {
            let _ = run(Command::new("docker").args(["rm", "-f", id]));
        }
        let _ = run(Command::new("docker").args(["volume", "rm", "-f", &name]));
        self.made(Made::Volume(name.clone()));
        name
    }

    /// Removes `path` (a directory a test made on a test server) when this test ends.
    pub fn remove_on_drop(&self, path: impl Into<PathBuf>) {
        self.made(Made::Path(path.into()));
    }

    fn made(&self, m: Made) {
        self.made.lock().unwrap_or_else(|p| p.into_inner()).push(m);
    }

    /// The daemon's state dir as the host sees it (never the host's /var/lib/voltool).
    pub fn state_dir(&self) -> PathBuf {
        self.suite.state_dir()
    }

    /// Where a path the daemon names is on the host: inside the managed plugin the state dir
    /// is /var/lib/voltool, bound from [`Self::state_dir`].
    pub fn host_path(&self, daemon_path: &str) -> PathBuf {
        match (self.mode, Path::new(daemon_path).strip_prefix("/var/lib/voltool")) {
            (Mode::Managed, Ok(rest)) => self.state_dir().join(rest),
            _ => PathBuf::from(daemon_path),
        }
    }

    /// The host daemon's log (host mode; the managed plugin logs to dockerd's log).
    pub fn daemon_log(&self) -> Option<PathBuf> {
        (self.mode == Mode::Legacy).then(|| self.suite.dir.join("daemon.log"))
    }

    pub fn create(&self, name: &str, opts: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.args(["volume", "create", "-d", &self.driver]);
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
        run(&mut self.voltool_cmd(args))
    }

    fn voltool_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(voltool_bin());
        cmd.args(args).env("VOLTOOL_API_SOCKET", &self.api_socket);
        cmd
    }

    /// `voltool secret add NAME` with `value` on stdin, against this mode's daemon; the secret
    /// is removed when this test ends.
    pub fn add_secret(&self, name: &str, value: &str) {
        self.made(Made::Secret(name.to_owned()));
        let mut add = self
            .voltool_cmd(&["secret", "add", name])
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
            Mode::Legacy => self.suite.plugin_socket(),
            Mode::Managed => {
                let id = docker_ok(&["plugin", "inspect", "--format", "{{.Id}}", &self.driver]);
                PathBuf::from(format!("/run/docker/plugins/{id}/voltool.sock"))
            }
        }
    }

    /// Whether the volume is mounted in the host's mount table (managed mode: through the
    /// plugin's propagated mount).
    pub fn host_mounted(&self, vol: &str) -> bool {
        let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let legacy = self.state_dir().join("mounts").join(vol);
        table.lines().filter_map(|l| l.split(' ').nth(4)).any(|mp| match self.mode {
            Mode::Managed => mp.ends_with(&format!("/propagated-mount/{vol}")),
            Mode::Legacy => Path::new(mp) == legacy,
        })
    }

    /// Restarts the plugin: managed `disable -f` + `enable`; host mode a SIGKILL + start.
    pub fn restart_plugin(&self) {
        match self.mode {
            Mode::Managed => {
                docker_ok(&["plugin", "disable", "-f", &self.driver]);
                docker_ok(&["plugin", "enable", &self.driver]);
            }
            Mode::Legacy => {
                self.suite.kill_daemon();
                self.suite.start_daemon();
            }
        }
    }

    /// Removes a volume this test made: the containers using it, Docker's volume, and the
    /// daemon's (one made through the management API that Docker never knew). A scheduled
    /// backup may hold it for a moment, so it is tried for up to 20 s.
    fn remove_volume(&self, name: &str) {
        let t0 = Instant::now();
        loop {
            let users = Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("volume={name}")])
                .stdin(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in users.split_whitespace() {
                quietly(Command::new("docker").args(["rm", "-f", id]));
            }
            quietly(Command::new("docker").args(["volume", "rm", "-f", name]));
            quietly(&mut self.voltool_cmd(&["volume", "rm", name]));
            let docker_has = quietly(Command::new("docker").args(["volume", "inspect", name]));
            let daemon_has = quietly(&mut self.voltool_cmd(&["volume", "inspect", "--json", name]));
            if !(docker_has || daemon_has) || t0.elapsed() > Duration::from_secs(20) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Env {
    /// Removes what the test made (newest first: a volume before the secret it uses), also
    /// when it panicked; a failed test keeps the host daemon's log for the teardown to save.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::fs::write(self.suite.dir.join("failed"), "");
            if self.daemon_log().is_some() {
                println!("the host daemon's log will be kept at {}.log", self.suite.dir.display());
            }
        }
        let made = std::mem::take(self.made.get_mut().unwrap_or_else(|p| p.into_inner()));
        for m in made.into_iter().rev() {
            match m {
                Made::Volume(v) => self.remove_volume(&v),
                Made::Secret(s) => {
                    quietly(&mut self.voltool_cmd(&["secret", "rm", &s]));
                }
                Made::Path(p) => {
                    let _ = std::fs::remove_dir_all(&p);
                }
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
