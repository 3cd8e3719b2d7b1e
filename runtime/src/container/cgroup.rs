//! Memory and process limits of a check: a cgroup v2 child cgroup where one can be made, else
//! rlimits (and the outcome says which, and why).
//!
//! The check's cgroup is `<parent>/check-<pid>-<n>` with `memory.max`, `memory.swap.max = 0`
//! and `pids.max`; `parent` (default `/sys/fs/cgroup/voltool-checks`) is made if missing and
//! the `memory` and `pids` controllers are enabled in every `cgroup.subtree_control` from the
//! mount's root down to it. A parent inside the daemon's own cgroup would break cgroup v2's
//! "no internal processes" rule (the kernel refuses to enable controllers for the children of a
//! cgroup that holds processes), hence a subtree of its own, like Docker's `cgroupfs` driver.
//! After the check, `cgroup.kill` (Linux 5.14) and `rmdir` remove it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::unistd::Pid;

use super::Confinement;
use crate::error::{Error, Result};

/// Which limits held a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limits {
    /// A cgroup v2 child cgroup (removed after the check).
    Cgroup { path: PathBuf, memory_max: u64, pids_max: u64 },
    /// No usable cgroup v2 (`reason`): `RLIMIT_AS` = `memory_max` per process and
    /// `RLIMIT_NPROC` = `pids_max` for the check's user.
    Rlimits { reason: String, memory_max: u64, pids_max: u64 },
}

impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limits::Cgroup { path, memory_max, pids_max } => {
                write!(f, "cgroup {} (memory.max {memory_max}, pids.max {pids_max})", path.display())
            }
            Limits::Rlimits { reason, memory_max, pids_max } => {
                write!(f, "rlimits (RLIMIT_AS {memory_max} per process, RLIMIT_NPROC {pids_max}): {reason}")
            }
        }
    }
}

/// Why no cgroup limits a check.
#[derive(Debug)]
pub(super) struct Unavailable {
    why: &'static str,
    path: PathBuf,
    errno: Option<Errno>,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.why, self.path.display())?;
        match self.errno {
            Some(e) => write!(f, ": {e}"),
            None => Ok(()),
        }
    }
}

fn unavailable(why: &'static str, path: &Path, e: &std::io::Error) -> Unavailable {
    Unavailable { why, path: path.to_path_buf(), errno: e.raw_os_error().map(Errno::from_raw) }
}

/// A check's cgroup; removed on drop.
#[derive(Debug)]
pub(super) struct Cgroup {
    dir: PathBuf,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Cgroup {
    /// Makes the check's cgroup under `conf.cgroup_parent`, if that is on a cgroup v2 mount
    /// whose root offers the `memory` and `pids` controllers.
    pub(super) fn create(conf: &Confinement) -> std::result::Result<Cgroup, Unavailable> {
        let parent = &conf.cgroup_parent;
        let Some(root) = parent.parent() else {
            return Err(Unavailable { why: "no cgroup mount above", path: parent.clone(), errno: None });
        };
        match nix::sys::statfs::statfs(root) {
            Ok(s) if s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => {}
            Ok(_) => return Err(Unavailable { why: "not a cgroup v2 mount:", path: root.into(), errno: None }),
            Err(e) => return Err(Unavailable { why: "cannot statfs", path: root.into(), errno: Some(e) }),
        }
        Self::create_in(root, conf)
    }

    /// [`Cgroup::create`] once `root` is known to be a cgroup v2 directory (split out so the
    /// file handling is tested on a plain directory).
    pub(super) fn create_in(root: &Path, conf: &Confinement) -> std::result::Result<Cgroup, Unavailable> {
        let parent = &conf.cgroup_parent;
        let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
            .map_err(|e| unavailable("cannot read the controllers of", root, &e))?;
        let offered: Vec<&str> = controllers.split_whitespace().collect();
        if !(offered.contains(&"memory") && offered.contains(&"pids")) {
            return Err(Unavailable { why: "no memory and pids controllers in", path: root.into(), errno: None });
        }
        enable(root)?;
        match std::fs::create_dir(parent) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(unavailable("cannot create", parent, &e));
            }
            _ => {}
        }
        enable(parent)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("check-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| unavailable("cannot create", &dir, &e))?;
        let cg = Cgroup { dir };
        for (file, value) in [
            ("memory.max", conf.memory_max.to_string()),
            ("memory.swap.max", "0".to_string()),
            ("pids.max", conf.pids_max.to_string()),
        ] {
            let path = cg.dir.join(file);
            match std::fs::write(&path, value) {
                // No swap accounting on this kernel: nothing to swap to through it either.
                Err(e) if file == "memory.swap.max" && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable("cannot write", &path, &e)),
                Ok(()) => {}
            }
        }
        Ok(cg)
    }

    pub(super) fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves the check's PID 1 in (before it execs the command: its children follow).
    pub(super) fn add(&self, pid: Pid) -> Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.as_raw().to_string()).map_err(|e| Error::Namespace {
            op: "moving the check into its cgroup",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    }
}

/// Enables `memory` and `pids` for the children of `dir` unless they are already.
fn enable(dir: &Path) -> std::result::Result<(), Unavailable> {
    let path = dir.join("cgroup.subtree_control");
    let now = std::fs::read_to_string(&path).map_err(|e| unavailable("cannot read", &path, &e))?;
    let on: Vec<&str> = now.split_whitespace().collect();
    if on.contains(&"memory") && on.contains(&"pids") {
        return Ok(());
    }
    // EBUSY: `dir` holds processes itself (cgroup v2's "no internal processes" rule).
    std::fs::write(&path, "+memory +pids").map_err(|e| unavailable("cannot enable memory and pids in", &path, &e))
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // PID 1 is reaped by now and the kernel has killed the rest of its PID namespace;
        // cgroup.kill catches anything still on its way out. rmdir says EBUSY until empty.
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        let t0 = Instant::now();
        while let Err(e) = std::fs::remove_dir(&self.dir) {
            if e.raw_os_error() != Some(libc::EBUSY) || t0.elapsed() > Duration::from_secs(5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(controllers: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tmp");
        std::fs::write(t.path().join("cgroup.controllers"), controllers).expect("write");
        std::fs::write(t.path().join("cgroup.subtree_control"), "").expect("write");
        t
    }

    #[test]
    fn a_cgroup_is_made_with_the_limits_and_removed() {
        let root = fake_root("cpu io memory pids\n");
        let conf = Confinement {
            memory_max: 64 << 20,
            pids_max: 32,
            cgroup_parent: root.path().join("voltool-checks"),
            ..Confinement::default()
        };
        // A real cgroupfs makes these files itself; a plain directory needs them made first.
        std::fs::create_dir(&conf.cgroup_parent).expect("mkdir");
        std::fs::write(conf.cgroup_parent.join("cgroup.subtree_control"), "memory pids").expect("write");
        let cg = Cgroup::create_in(root.path(), &conf).expect("cgroup");
        assert_eq!(std::fs::read_to_string(root.path().join("cgroup.subtree_control")).expect("read"), "+memory +pids");
        assert_eq!(std::fs::read_to_string(cg.path().join("memory.max")).expect("read"), "67108864");
        assert_eq!(std::fs::read_to_string(cg.path().join("pids.max")).expect("read"), "32");
        assert_eq!(std::fs::read_to_string(cg.path().join("memory.swap.max")).expect("read"), "0");
        assert!(cg.path().starts_with(&conf.cgroup_parent));
        let path = cg.path().to_path_buf();
        // A plain directory with files in it: rmdir fails (ENOTEMPTY), without waiting.
        let t0 = Instant::now();
        drop(cg);
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(path.exists());
    }

    #[test]
    fn no_memory_or_pids_controller_means_rlimits_and_says_why() {
        let root = fake_root("cpu io\n");
        let conf = Confinement { cgroup_parent: root.path().join("voltool-checks"), ..Confinement::default() };
        let why = Cgroup::create_in(root.path(), &conf).expect_err("no controllers").to_string();
        assert!(why.contains("no memory and pids controllers"), "{why}");
        // Not a cgroup v2 mount at all (a tmpfs or ext4 directory): said so.
        let why = Cgroup::create(&conf).expect_err("not cgroup2").to_string();
        assert!(why.contains("not a cgroup v2 mount"), "{why}");
    }
}
