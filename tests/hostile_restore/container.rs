//! The hostile container of tests/hostile_restore.rs: its script, its control files, and what
//! the host undoes of its leftovers before comparing trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{IMAGE, docker_ok, run, text};
use crate::scene::{Canary, Host, Snapshot, Tree, wait_until};

/// The container's script: two loops (see the module docs of tests/hostile_restore.rs), each
/// stopping at the end of a round while /ctl/pause exists (and saying so in /ctl/pausedN).
/// It never reaches the host directory `$C` itself: it only makes links to it, at names that
/// no link of its own is on the way to.
const SCRIPT: &str = r#"
pausepoint() {
  [ -e /ctl/pause ] || return 0
  : > /ctl/paused$1
  while [ -e /ctl/pause ]; do usleep 2000; done
  rm -f /ctl/paused$1
}
stager() {
  n=0
  while :; do
    pausepoint 1
    hit=
    for d in /data/.voltool-restore-* /data/hr-moved-*; do
      [ -d "$d" ] && [ ! -L "$d" ] || continue
      hit=1; n=$((n+1)); echo "hit $d"
      ln -snT "$C/c600" "$d/d7/f39" 2>/dev/null && echo "planted $d/d7/f39"
      [ $((n % 8)) -eq 0 ] && ln -snT "$C" "$d/hr-link-$n" 2>/dev/null
      [ -e /ctl/hostile ] && ln -snT "$C" "$d/zz" 2>/dev/null && echo "planted $d/zz"
      if [ -e /ctl/hostile ] && [ -d "$d/d9/sub" ] && [ ! -L "$d/d9/sub" ] && mv -T "$d/d9/sub" "$d/d9/sub.aside" 2>/dev/null; then
        ln -snT "$C" "$d/d9/sub" 2>/dev/null && echo "split $d/d9/sub"
      fi
      case "$d" in
        /data/.voltool-restore-old-*) ;;
        /data/.voltool-restore-*)
          [ -e /ctl/hostile ] && ln -snT "$C" "/data/.voltool-restore-old-${d#/data/.voltool-restore-}" 2>/dev/null ;;
        *) continue ;;
      esac
      mv -T "$d" "/data/hr-moved-$n" 2>/dev/null && ln -snT "$C" "$d" 2>/dev/null && echo "swapped $d"
    done
    [ -n "$hit" ] || usleep 500
  done
}
swapper() {
  k=0
  while :; do
    pausepoint 2
    k=$((k+1))
    for x in d0 d1 d2 d3 d4; do
      if mv -T "/data/$x" "/data/$x.aside" 2>/dev/null; then
        ln -snT "$C" "/data/$x"; usleep $(( (k % 4) * 300 )); rm -f "/data/$x"; mv -T "/data/$x.aside" "/data/$x" 2>/dev/null
      fi
    done
    for x in onlyA onlyB onlyA.txt onlyB.txt; do ln -snT "$C" "/data/$x" 2>/dev/null; done
    ln -snT "$C/c644" "/data/hr-link-t$k"; rm -f "/data/hr-link-t$((k-3))"
    mkdir -p /data/hr-own && mv -T /data/hr-own /data/hr-own2 && mv -T /data/hr-own2 /data/hr-own
  done
}
stager & swapper & wait
"#;

/// A volume of the host's daemon held by a container running [`SCRIPT`]; the container and
/// the volume are removed on drop, also when the test fails.
pub struct Hostile {
    pub volume: String,
    pub container: String,
    pub canary: Canary,
    ctl: tempfile::TempDir,
    root: PathBuf,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = run(Command::new("docker").args(["rm", "-f", &self.container]));
        let _ = run(Command::new("docker").args(["volume", "rm", "-f", &self.volume]));
    }
}

impl Hostile {
    /// Creates the volume through Docker, restores `from` into it, and starts the container
    /// (quiesced).
    pub fn start(host: &Host, tag: &str, from: &str) -> Self {
        let volume = format!("{}-vol", host.driver);
        let container = format!("h-hostile-restore-{}-{tag}", std::process::id());
        let _ = run(Command::new("docker").args(["rm", "-f", &container]));
        // Leftovers of an earlier run that was killed: containers on the volume, then it.
        let users = run(Command::new("docker").args(["ps", "-aq", "--filter", &format!("volume={volume}")]));
        for id in String::from_utf8_lossy(&users.stdout).split_whitespace() {
            let _ = run(Command::new("docker").args(["rm", "-f", id]));
        }
        let _ = run(Command::new("docker").args(["volume", "rm", "-f", &volume]));
        let ctl = tempfile::Builder::new().prefix("h-hostile-restore-ctl-").tempdir().expect("tmp");
        let root = host.d.mountpoint(&volume);
        let h = Hostile { volume, container, canary: Canary::new(), ctl, root };
        docker_ok(&["volume", "create", "-d", &host.driver, &h.volume]);
        host.ok(&["restore", &h.volume, "--from", from, "--force"]);
        std::fs::write(h.ctl.path().join("pause"), "").expect("pause");
        let c = h.canary.path().display().to_string();
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &h.container,
            "--network",
            "none",
            "-e",
            &format!("C={c}"),
            "-v",
            &format!("{}:/data", h.volume),
            "-v",
            &format!("{c}:{c}"),
            "-v",
            &format!("{}:/ctl", h.ctl.path().display()),
            IMAGE,
            "sh",
            "-c",
            SCRIPT,
        ]);
        h.wait_paused();
        h
    }

    fn ctl(&self, name: &str) -> PathBuf {
        self.ctl.path().join(name)
    }

    fn wait_paused(&self) {
        wait_until(Duration::from_secs(30), "the container to stop at the end of a round", || {
            self.ctl("paused1").exists() && self.ctl("paused2").exists()
        });
    }

    /// Runs the next rounds with (or without) the plants that make a restore refuse.
    pub fn set_hostile(&self, on: bool) {
        if on {
            std::fs::write(self.ctl("hostile"), "").expect("hostile");
        } else {
            let _ = std::fs::remove_file(self.ctl("hostile"));
        }
    }

    /// Lets the container loop again (once both loops have left their pause).
    pub fn resume(&self) {
        std::fs::remove_file(self.ctl("pause")).expect("unpause");
        wait_until(Duration::from_secs(30), "the container to resume", || {
            !self.ctl("paused1").exists() && !self.ctl("paused2").exists()
        });
    }

    /// Stops the container at the end of its current rounds.
    pub fn quiesce(&self) {
        std::fs::write(self.ctl("pause"), "").expect("pause");
        self.wait_paused();
    }

    /// The volume's tree as the host sees it.
    pub fn tree(&self) -> Snapshot {
        Tree::snapshot(&self.root)
    }

    /// Undoes what the quiesced container left (see [`Undo`]).
    pub fn undo_leftovers(&self) -> Undone {
        let mut u =
            Undo { canary: self.canary.path().to_path_buf(), count: 0, split: Vec::new(), problems: Vec::new() };
        u.dir(&self.root, "");
        Undone { count: u.count, split: u.split, problems: u.problems }
    }

    pub fn assert_running(&self) {
        let state = docker_ok(&["inspect", "-f", "{{.State.Running}}", &self.container]);
        let logs = run(Command::new("docker").args(["logs", "--tail", "20", &self.container]));
        assert_eq!(state, "true", "the hostile container stopped: {}", text(&logs));
    }

    /// What the container's log says it did, by kind (`hit`: found a restore's directory,
    /// `swapped`: swapped one for a link, `planted`: a link landed in one, `split`: moved a
    /// staged directory aside for a link), each place counted once.
    pub fn attacks(&self) -> BTreeMap<String, usize> {
        let o = run(Command::new("docker").args(["logs", &self.container]));
        let out = String::from_utf8_lossy(&o.stdout);
        let lines: std::collections::BTreeSet<&str> = out.lines().collect();
        let mut n = BTreeMap::new();
        for l in lines {
            *n.entry(l.split(' ').next().unwrap_or_default().to_string()).or_insert(0) += 1;
        }
        n
    }
}

/// What [`Hostile::undo_leftovers`] did and found.
pub struct Undone {
    pub count: usize,
    pub split: Vec<String>,
    pub problems: Vec<String>,
}

/// Undoing, on the host while the container is quiesced, what it left in the volume: its
/// links to the canary directory go; an `X.aside` goes back to `X` when `X` is free; at the
/// top (old data it moved aside while the new tree came in) it is removed, deeper (a staged
/// directory it moved while files were extracted into it) its entries are merged into `X`;
/// its `hr-*` entries at the top are removed, a staging or old directory it renamed
/// (`hr-moved-*`) only once checked empty (the daemon emptied it through its descriptor).
struct Undo {
    canary: PathBuf,
    count: usize,
    /// Directories that were merged back (their mode may be the other half's).
    split: Vec<String>,
    /// What the daemon should not have left.
    problems: Vec<String>,
}

fn remove_any(p: &Path) {
    let m = std::fs::symlink_metadata(p).expect("lstat leftover");
    if m.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) }.expect("remove leftover");
}

fn merge(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read aside").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        match std::fs::symlink_metadata(&dst) {
            Err(_) => std::fs::rename(&src, &dst).expect("merge"),
            Ok(m) if m.is_dir() && e.file_type().is_ok_and(|t| t.is_dir()) => merge(&src, &dst),
            Ok(_) => {}
        }
    }
}

impl Undo {
    fn dir(&mut self, dir: &Path, rel: &str) {
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .expect("read_dir")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        for n in names(dir) {
            let p = dir.join(&n);
            if std::fs::read_link(&p).is_ok_and(|t| t.starts_with(&self.canary)) {
                std::fs::remove_file(&p).expect("remove link");
                self.count += 1;
            }
        }
        for n in names(dir) {
            let p = dir.join(&n);
            if let Some(x) = n.strip_suffix(".aside") {
                let xp = dir.join(x);
                if std::fs::symlink_metadata(&xp).is_err() {
                    std::fs::rename(&p, &xp).expect("put back");
                } else {
                    if !rel.is_empty() {
                        merge(&p, &xp);
                        self.split.push(format!("{rel}/{x}"));
                    }
                    remove_any(&p);
                }
                self.count += 1;
            } else if rel.is_empty() && n.starts_with("hr-") {
                if n.starts_with("hr-moved-") {
                    let files: Vec<String> =
                        Tree::snapshot(&p).into_iter().filter(|(_, node)| node.is_file()).map(|(k, _)| k).collect();
                    if !files.is_empty() {
                        let shown = files.len().min(12);
                        self.problems.push(format!(
                            "{n} (a restore's directory the container renamed) still holds {} files: {:?}",
                            files.len(),
                            &files[..shown]
                        ));
                    }
                }
                remove_any(&p);
                self.count += 1;
            }
        }
        for n in names(dir) {
            let p = dir.join(&n);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                let r = if rel.is_empty() { n.clone() } else { format!("{rel}/{n}") };
                self.dir(&p, &r);
            }
        }
    }
}
