//! The filesystem tools an image-backed volume needs (mkfs, grow), behind a seam.
//!
//! Creating and growing filesystems is the job of the standard tools (mkfs.ext4, mkfs.xfs,
//! resize2fs, xfs_growfs), which the managed plugin's rootfs carries. They run as child
//! processes with a deadline (120 s by default: mkfs of a 1 TiB image takes a few seconds).
//!
//! A failure is data, not text: [`ToolErrorKind`] says whether the tool could not start,
//! ran out of time, or exited with an [`ExitStatus`] (and its stderr, which becomes the
//! message). Callers decide on the kind and the exit code — e2fsck's status 1 ("errors
//! corrected", e2fsck(8)) is a success before a resize — never on the tool's words.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::options::FsType;

/// A failed tool run: which tool, what happened, and what to do about it where that is known.
#[derive(Debug, thiserror::Error)]
#[error("{tool}: {kind}{}", .hint.map(|h| format!(": {h}")).unwrap_or_default())]
pub struct ToolError {
    pub tool: String,
    pub kind: ToolErrorKind,
    /// What to do next, appended to the message.
    pub hint: Option<&'static str>,
}

/// What happened to a tool run.
#[derive(Debug, thiserror::Error)]
pub enum ToolErrorKind {
    /// It could not be started (not installed, not executable).
    #[error("cannot run it ({0}); is it installed?")]
    Spawn(std::io::Error),
    /// Waiting for it failed.
    #[error("{0}")]
    Wait(std::io::Error),
    /// It ran longer than the deadline and was killed.
    #[error("no result after {0:?}; killed")]
    TimedOut(Duration),
    /// It exited unsuccessfully. `output` is its stderr (its stdout when stderr was empty),
    /// trimmed; the message shows its last line.
    #[error("{} ({status})", .output.lines().last().unwrap_or("failed"))]
    Exited { status: ExitStatus, output: String },
}

impl ToolError {
    fn new(tool: &str, kind: ToolErrorKind) -> Self {
        Self { tool: tool.to_string(), kind, hint: None }
    }

    /// The exit code of a tool that exited on its own (`None`: it did not run, was killed by
    /// a signal, or timed out).
    pub fn exit_code(&self) -> Option<i32> {
        match &self.kind {
            ToolErrorKind::Exited { status, .. } => status.code(),
            ToolErrorKind::Spawn(_) | ToolErrorKind::Wait(_) | ToolErrorKind::TimedOut(_) => None,
        }
    }
}

/// Filesystem tools.
pub trait FsTools: Send + Sync {
    /// Makes a filesystem in `image`.
    ///
    /// # Errors
    /// [`ToolError`] with the tool's own words.
    fn mkfs(&self, fs: FsType, image: &Path) -> Result<(), ToolError>;

    /// Grows the filesystem on `device`, mounted at `mountpoint`, to its device's size.
    ///
    /// # Errors
    /// [`ToolError`]; for ext4 without `CAP_SYS_RESOURCE`, with a hint saying what to do.
    fn grow_online(&self, fs: FsType, device: &Path, mountpoint: &Path) -> Result<(), ToolError>;

    /// Grows an unmounted ext4 image to the file's size (e2fsck first, as resize2fs demands).
    ///
    /// # Errors
    /// [`ToolError`].
    fn grow_offline_ext4(&self, image: &Path) -> Result<(), ToolError>;
}

/// Runs the real tools from `PATH` (plus /sbin and /usr/sbin).
#[derive(Debug, Clone)]
pub struct SystemFsTools {
    pub timeout: Duration,
}

impl Default for SystemFsTools {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(120) }
    }
}

impl SystemFsTools {
    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<String, ToolError> {
        let err = |kind| ToolError::new(tool, kind);
        // A managed plugin may start with no PATH at all.
        let path = match std::env::var("PATH") {
            Ok(p) if !p.is_empty() => format!("{p}:/usr/sbin:/sbin"),
            _ => "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        };
        let mut child = Command::new(tool)
            .args(args)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(ToolErrorKind::Spawn(e)))?;
        let t0 = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if t0.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err(ToolErrorKind::TimedOut(self.timeout)));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(err(ToolErrorKind::Wait(e))),
            }
        }
        let out = child.wait_with_output().map_err(|e| err(ToolErrorKind::Wait(e)))?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            let output = [text(&out.stderr), text(&out.stdout)].into_iter().find(|s| !s.is_empty()).unwrap_or_default();
            Err(err(ToolErrorKind::Exited { status: out.status, output }))
        }
    }
}

impl FsTools for SystemFsTools {
    fn mkfs(&self, fs: FsType, image: &Path) -> Result<(), ToolError> {
        match fs {
            // -m 0: no blocks reserved for root, the whole limit is the user's. -i 16384: one
            // inode per 16 KiB instead of 4 KiB, which leaves ~90% (64 MiB) to ~93% (1 GiB) of
            // the image usable instead of ~83%.
            FsType::Ext4 => self.run(
                "mkfs.ext4",
                &["-q", "-F", "-m", "0", "-i", "16384"]
                    .map(std::ffi::OsStr::new)
                    .iter()
                    .copied()
                    .chain([image.as_os_str()])
                    .collect::<Vec<_>>(),
            ),
            FsType::Xfs => self.run("mkfs.xfs", &["-q".as_ref(), "-f".as_ref(), image.as_os_str()]),
        }
        .map(drop)
    }

    fn grow_online(&self, fs: FsType, device: &Path, mountpoint: &Path) -> Result<(), ToolError> {
        match fs {
            FsType::Ext4 => self
                .run("resize2fs", &[device.as_os_str()])
                .map_err(|e| online_ext4_hint(e, has_effective_cap(CAP_SYS_RESOURCE))),
            FsType::Xfs => self.run("xfs_growfs", &[mountpoint.as_os_str()]),
        }
        .map(drop)
    }

    fn grow_offline_ext4(&self, image: &Path) -> Result<(), ToolError> {
        fsck_before_resize(self.run("e2fsck", &["-f".as_ref(), "-p".as_ref(), image.as_os_str()]))?;
        self.run("resize2fs", &[image.as_os_str()]).map(drop)
    }
}

/// `e2fsck -p`'s exit status 1 means "file system errors corrected" (e2fsck(8)): fine before
/// a resize. Any other failure stops it.
fn fsck_before_resize(r: Result<String, ToolError>) -> Result<(), ToolError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.exit_code() == Some(1) => Ok(()),
        Err(e) => Err(e),
    }
}

/// capabilities(7): the capability the ext4 online-resize ioctl demands.
const CAP_SYS_RESOURCE: u32 = 24;

const NEEDS_CAP_SYS_RESOURCE: &str = "growing a mounted ext4 filesystem needs CAP_SYS_RESOURCE, which this daemon lacks; stop the containers using the volume and resize it unmounted, or use fs=xfs";

/// resize2fs exits 1 whatever went wrong; whether an online grow failed for want of
/// `CAP_SYS_RESOURCE` (EXT4_IOC_RESIZE_FS answers EPERM without it) is told by this
/// process's capabilities, not by the tool's words.
fn online_ext4_hint(mut e: ToolError, has_cap: bool) -> ToolError {
    if !has_cap && matches!(e.kind, ToolErrorKind::Exited { .. }) {
        e.hint = Some(NEEDS_CAP_SYS_RESOURCE);
    }
    e
}

/// Whether this process has capability `cap` in its effective set (`CapEff` in
/// /proc/self/status, proc(5)). Unknown counts as present: no hint rather than a wrong one.
fn has_effective_cap(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|s| cap_in_status(&s, cap)).unwrap_or(true)
}

/// `cap`'s bit in the `CapEff:` line of a /proc/PID/status text.
fn cap_in_status(status: &str, cap: u32) -> Option<bool> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let set = u64::from_str_radix(hex, 16).ok()?;
    Some(set >> cap & 1 == 1)
}

/// A call seen by [`RecordingFsTools`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolCall {
    Mkfs(FsType, PathBuf),
    GrowOnline(FsType, PathBuf, PathBuf),
    GrowOffline(PathBuf),
}

/// Records calls; can fail the next one.
#[derive(Debug, Default)]
pub struct RecordingFsTools {
    state: Mutex<(Vec<ToolCall>, Option<ToolErrorKind>)>,
}

impl RecordingFsTools {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn calls(&self) -> Vec<ToolCall> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }
    /// Fails the next call as a tool exiting with status 1 and `message` on stderr.
    pub fn fail_next(&self, message: &str) {
        self.fail_next_with(ToolErrorKind::Exited { status: ExitStatus::from_raw(1 << 8), output: message.into() });
    }
    /// Fails the next call with `kind`.
    pub fn fail_next_with(&self, kind: ToolErrorKind) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(kind);
    }
    fn record(&self, c: ToolCall) -> Result<(), ToolError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.push(c);
        match st.1.take() {
            Some(kind) => Err(ToolError::new("fake", kind)),
            None => Ok(()),
        }
    }
}

impl FsTools for RecordingFsTools {
    fn mkfs(&self, fs: FsType, image: &Path) -> Result<(), ToolError> {
        self.record(ToolCall::Mkfs(fs, image.to_path_buf()))
    }
    fn grow_online(&self, fs: FsType, device: &Path, mountpoint: &Path) -> Result<(), ToolError> {
        self.record(ToolCall::GrowOnline(fs, device.to_path_buf(), mountpoint.to_path_buf()))
    }
    fn grow_offline_ext4(&self, image: &Path) -> Result<(), ToolError> {
        self.record(ToolCall::GrowOffline(image.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32, output: &str) -> ToolError {
        ToolError::new("t", ToolErrorKind::Exited { status: ExitStatus::from_raw(code << 8), output: output.into() })
    }

    #[test]
    fn a_failed_run_carries_its_exit_status_and_stderr() {
        let tools = SystemFsTools::default();
        let e = tools.run("sh", &["-c".as_ref(), "echo first >&2; echo last >&2; exit 3".as_ref()]).expect_err("fails");
        assert_eq!(e.exit_code(), Some(3));
        assert!(matches!(&e.kind, ToolErrorKind::Exited { output, .. } if output == "first\nlast"), "{e:?}");
        assert_eq!(e.to_string(), "sh: last (exit status: 3)");
        // Nothing on stderr: stdout is the message; nothing at all: "failed".
        let e = tools.run("sh", &["-c".as_ref(), "echo out; exit 2".as_ref()]).expect_err("fails");
        assert_eq!(e.to_string(), "sh: out (exit status: 2)");
        let e = tools.run("false", &[]).expect_err("fails");
        assert_eq!(e.to_string(), "false: failed (exit status: 1)");
        assert_eq!(tools.run("sh", &["-c".as_ref(), "echo ok".as_ref()]).expect("runs"), "ok");
    }

    #[test]
    fn a_missing_tool_and_a_hung_one_are_told_apart() {
        let e = SystemFsTools::default().run("voltool-no-such-tool", &[]).expect_err("missing");
        assert!(matches!(e.kind, ToolErrorKind::Spawn(_)), "{e:?}");
        assert_eq!(e.exit_code(), None);
        assert!(e.to_string().starts_with("voltool-no-such-tool: cannot run it ("), "{e}");
        assert!(e.to_string().ends_with("); is it installed?"), "{e}");
        let slow = SystemFsTools { timeout: Duration::from_millis(100) };
        let e = slow.run("sleep", &["5".as_ref()]).expect_err("killed");
        assert!(matches!(e.kind, ToolErrorKind::TimedOut(_)), "{e:?}");
        assert_eq!(e.to_string(), "sleep: no result after 100ms; killed");
    }

    #[test]
    fn e2fsck_status_1_is_corrected_not_failed() {
        assert!(fsck_before_resize(Ok(String::new())).is_ok());
        assert!(fsck_before_resize(Err(exited(1, "errors corrected"))).is_ok());
        for code in [2, 4, 8, 12] {
            let e = fsck_before_resize(Err(exited(code, "x"))).expect_err("fails");
            assert_eq!(e.exit_code(), Some(code));
        }
        let killed = ToolError::new("e2fsck", ToolErrorKind::TimedOut(Duration::from_secs(1)));
        assert!(fsck_before_resize(Err(killed)).is_err());
    }

    #[test]
    fn online_ext4_grow_without_cap_sys_resource_says_what_to_do() {
        let e = online_ext4_hint(exited(1, "resize2fs: Permission denied to resize filesystem"), false);
        assert_eq!(
            e.to_string(),
            format!("t: resize2fs: Permission denied to resize filesystem (exit status: 1): {NEEDS_CAP_SYS_RESOURCE}")
        );
        assert!(online_ext4_hint(exited(1, "x"), true).hint.is_none(), "the capability is there: no hint");
        let missing = ToolError::new("resize2fs", ToolErrorKind::Spawn(std::io::ErrorKind::NotFound.into()));
        assert!(online_ext4_hint(missing, false).hint.is_none(), "not run at all: no hint");
    }

    #[test]
    fn capabilities_from_proc_status() {
        let st = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t0000000001000000\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(cap_in_status(st, CAP_SYS_RESOURCE), Some(true));
        assert_eq!(cap_in_status(st, 21), Some(false));
        assert_eq!(cap_in_status("CapEff:\t0000000000000000\n", CAP_SYS_RESOURCE), Some(false));
        assert_eq!(cap_in_status("Name: x\n", CAP_SYS_RESOURCE), None);
        assert_eq!(cap_in_status("CapEff:\tzz\n", CAP_SYS_RESOURCE), None);
    }
}
