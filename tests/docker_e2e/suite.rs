//! This process's own daemon for one mode (see harness.rs): its dir, the plugin it installs
//! or the host daemon it starts, the helper that tears it all down when the process ends,
//! and the sweep of what killed runs left.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{Mode, docker_ok, run, text, voltool_bin};

/// Removes what one process made for one mode (see harness.rs).
const TEARDOWN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/docker_e2e/teardown.sh");
const PLUGIN_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/plugin.sh");

/// One mode's daemon as this process runs it.
pub(super) struct Suite {
    mode: Mode,
    pub(super) driver: String,
    /// Everything of this mode's daemon on the host: `state/`, `run/` (managed: the API
    /// socket), `api.sock`, `pid`, `daemon.log`, `voltool.toml` (host mode).
    pub(super) dir: PathBuf,
    /// The host daemon this process started (host mode).
    daemon: Mutex<Option<Child>>,
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs teardown.sh for `mode` once this process has ended, however it ends (a panic, a
/// failed test, SIGKILL): a helper shell blocks reading a pipe whose only writer is this
/// process, and the kernel closes it at our exit. The helper has its own process group, so a
/// Ctrl-C of the tests does not stop it.
fn teardown_at_exit(mode: Mode, dir: &Path, driver: &str) -> Result<(), String> {
    static HELPERS: Mutex<Vec<Child>> = Mutex::new(Vec::new());
    let helper = Command::new("sh")
        .arg("-c")
        .arg(r#"cat >/dev/null; exec sh "$0" "$@""#)
        .arg(TEARDOWN)
        .arg(mode.tag())
        .arg(dir)
        .arg(driver)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the teardown helper: {e}"))?;
    std::fs::write(dir.join("teardown.pid"), helper.id().to_string()).map_err(|e| e.to_string())?;
    // Kept (with its stdin) until the process ends.
    HELPERS.lock().unwrap_or_else(|p| p.into_inner()).push(helper);
    Ok(())
}

/// Waits for the teardown of earlier processes of the suite in `mode` (the host daemon's
/// driver name and plugin socket are shared), and tears down what runs that were killed
/// together with their teardown helper left: the dirs and plugins of processes that are gone.
fn sweep_leftovers(mode: Mode) {
    let prefix = format!("voltool-e2e-{}-", mode.tag());
    let mut pids: Vec<u32> = std::fs::read_dir("/tmp")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok())
        .collect();
    if mode == Mode::Managed {
        let names = run(Command::new("docker").args(["plugin", "ls", "--format", "{{.Name}}"]));
        pids.extend(
            String::from_utf8_lossy(&names.stdout)
                .lines()
                .filter_map(|n| n.strip_prefix("voltool-e2e-")?.strip_suffix(":latest")?.parse::<u32>().ok()),
        );
    }
    pids.sort_unstable();
    pids.dedup();
    for pid in pids.into_iter().filter(|p| *p != std::process::id() && !alive(*p)) {
        let dir = mode.dir(pid);
        let helper = std::fs::read_to_string(dir.join("teardown.pid")).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(helper) = helper {
            // That process's own helper is at it (it has just ended): let it finish.
            let t0 = Instant::now();
            // (Only while that pid is still a shell: a stale file's pid may belong to anything now.)
            let is_helper = || std::fs::read_to_string(format!("/proc/{helper}/comm")).is_ok_and(|c| c.trim() == "sh");
            while is_helper() && t0.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if !dir.exists() {
                continue;
            }
        }
        let _ = run(Command::new("sh").arg(TEARDOWN).arg(mode.tag()).arg(&dir).arg(mode.driver(pid)));
    }
}

impl Suite {
    /// Sweeps leftovers, makes this process's dir with its teardown helper, and installs the
    /// plugin or starts the daemon; `Err` says why it could not (a SKIP outside CI).
    fn start(mode: Mode) -> Result<Suite, String> {
        sweep_leftovers(mode);
        let pid = std::process::id();
        let suite = Suite { mode, driver: mode.driver(pid), dir: mode.dir(pid), daemon: Mutex::new(None) };
        std::fs::create_dir_all(&suite.dir).map_err(|e| format!("create {}: {e}", suite.dir.display()))?;
        teardown_at_exit(mode, &suite.dir, &suite.driver)?;
        match mode {
            Mode::Managed => suite.install_plugin()?,
            Mode::Legacy => {
                // The host's config file would bring its backup targets along.
                std::fs::write(suite.dir.join("voltool.toml"), "# the Docker suite's host daemon: no config\n")
                    .map_err(|e| e.to_string())?;
                suite.start_daemon();
            }
        }
        Ok(suite)
    }

    /// The daemon's state dir as the host sees it.
    pub(super) fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub(super) fn api_socket(&self) -> PathBuf {
        match self.mode {
            Mode::Managed => self.dir.join("run/voltool.sock"),
            Mode::Legacy => self.dir.join("api.sock"),
        }
    }

    pub(super) fn plugin_socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/docker/plugins/{}.sock", self.driver))
    }

    /// Builds the plugin from the binary under test and installs it with this suite's dirs.
    fn install_plugin(&self) -> Result<(), String> {
        let build = self.dir.join("build");
        let plugin_sh = |step: &str| {
            let mut c = Command::new("bash");
            c.arg(PLUGIN_SH).arg(step).env("PLUGIN_NAME", &self.driver).env("PLUGIN_OUT", &build);
            c
        };
        let o = run(plugin_sh("build").env("VOLTOOL_BIN", voltool_bin()).env("PLUGIN_STRIP", "1"));
        if !o.status.success() {
            return Err(format!("deploy/plugin.sh build failed: {}", text(&o).trim()));
        }
        let run_dir = self.dir.join("run");
        let o = run(plugin_sh("install").env("PLUGIN_STATE_DIR", self.state_dir()).env("PLUGIN_RUN_DIR", &run_dir));
        // Docker keeps its own copy of the rootfs.
        let _ = std::fs::remove_dir_all(&build);
        if !o.status.success() {
            return Err(format!("deploy/plugin.sh install failed: {}", text(&o).trim()));
        }
        // Never run against any state but this suite's own.
        let format = "{{range .Settings.Mounts}}{{.Name}}={{.Source}} {{end}}";
        let mounts = docker_ok(&["plugin", "inspect", "--format", format, &self.driver]);
        let want =
            format!("state={} api={} docker=/var/run/docker.sock", self.state_dir().display(), run_dir.display());
        assert_eq!(mounts.trim(), want, "the suite's plugin must bind the suite's own dirs");
        Ok(())
    }

    /// Starts (or restarts) the host daemon of this process.
    pub(super) fn start_daemon(&self) {
        let mut slot = self.daemon.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = slot.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("daemon.log")).expect("log");
        let mut cmd = Command::new(voltool_bin());
        // Settings of the host's own voltool in this environment must not reach it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("VOLTOOL_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg("serve")
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--config")
            .arg(self.dir.join("voltool.toml"))
            .arg("--plugin-socket")
            .arg(self.plugin_socket())
            .arg("--api-socket")
            .arg(self.api_socket())
            .env("VOLTOOL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn voltool serve");
        std::fs::write(self.dir.join("pid"), child.id().to_string()).expect("pidfile");
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.api_socket()).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "host daemon socket not accepting within 1 s; see {}/daemon.log",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        *slot = Some(child);
    }

    /// Kills the host daemon with SIGKILL (a crash, not a clean stop).
    pub(super) fn kill_daemon(&self) {
        if let Some(mut c) = self.daemon.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// This process's suite for `mode`, started on first use.
pub(super) fn suite(mode: Mode) -> &'static Result<Suite, String> {
    static MANAGED: OnceLock<Result<Suite, String>> = OnceLock::new();
    static LEGACY: OnceLock<Result<Suite, String>> = OnceLock::new();
    let cell = match mode {
        Mode::Managed => &MANAGED,
        Mode::Legacy => &LEGACY,
    };
    cell.get_or_init(|| Suite::start(mode))
}
