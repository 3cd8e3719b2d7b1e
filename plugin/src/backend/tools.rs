//! The filesystem tools an image-backed volume needs (mkfs, grow), behind a seam.
//!
//! Creating and growing filesystems is the job of the standard tools (mkfs.ext4, mkfs.xfs,
//! resize2fs, xfs_growfs), which the managed plugin's rootfs carries. They run as child
//! processes with a deadline; their stderr becomes the error message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::options::FsType;

/// A failed tool run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{tool}: {message}")]
pub struct ToolError {
    pub tool: String,
    pub message: String,
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
    /// [`ToolError`].
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
        let err = |message: String| ToolError { tool: tool.to_string(), message };
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
            .map_err(|e| err(format!("cannot run it ({e}); is it installed?")))?;
        let t0 = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if t0.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err(format!("no result after {:?}; killed", self.timeout)));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(err(e.to_string())),
            }
        }
        let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            let msg = [text(&out.stderr), text(&out.stdout)].into_iter().find(|s| !s.is_empty()).unwrap_or_default();
            Err(err(format!("{} ({})", msg.lines().last().unwrap_or("failed"), out.status)))
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
            FsType::Ext4 => self.run("resize2fs", &[device.as_os_str()]).map_err(|mut e| {
                if e.message.contains("Permission denied") {
                    e.message = format!(
                        "{}: growing a mounted ext4 filesystem needs CAP_SYS_RESOURCE, which this daemon lacks; stop the containers using the volume and resize it unmounted, or use fs=xfs",
                        e.message
                    );
                }
                e
            }),
            FsType::Xfs => self.run("xfs_growfs", &[mountpoint.as_os_str()]),
        }
        .map(drop)
    }

    fn grow_offline_ext4(&self, image: &Path) -> Result<(), ToolError> {
        // e2fsck exit 1 means "errors corrected": fine before a resize.
        match self.run("e2fsck", &["-f".as_ref(), "-p".as_ref(), image.as_os_str()]) {
            Ok(_) => {}
            Err(e) if e.message.contains("exit status: 1)") => {}
            Err(e) => return Err(e),
        }
        self.run("resize2fs", &[image.as_os_str()]).map(drop)
    }
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
    state: Mutex<(Vec<ToolCall>, Option<String>)>,
}

impl RecordingFsTools {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn calls(&self) -> Vec<ToolCall> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }
    pub fn fail_next(&self, message: &str) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(message.into());
    }
    fn record(&self, c: ToolCall) -> Result<(), ToolError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.push(c);
        match st.1.take() {
            Some(message) => Err(ToolError { tool: "fake".into(), message }),
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
