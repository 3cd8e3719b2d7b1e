//! Removing a tree by descriptors ([`Dir::remove_tree`]): depth first, iteratively, holding at
//! most [`KEPT_FDS`] descriptors; a level dropped to stay under that is re-opened from the
//! nearest kept ancestor, checking its device and inode, never through a path.

use std::ffi::{OsStr, OsString};
use std::io;

use super::{Dir, KEPT_FDS};

impl Dir {
    /// Removes the entry `name` and, for a directory, everything below it, depth first, by
    /// descriptors: a symlink is removed as a link, a directory swapped for a symlink while
    /// this runs is removed as the link, and no path is ever followed. Missing is fine.
    ///
    /// # Errors
    /// The first error that is not `ENOENT`.
    pub fn remove_tree(&self, name: &OsStr) -> io::Result<()> {
        match self.unlink(name) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
            Err(e) => return Err(e),
        }
        let mut walk = TreeRemoval::new(self, name)?;
        walk.run()?;
        match self.rmdir(name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }
}

/// One level of a [`TreeRemoval`]: the directory's name in its parent, its identity, and its
/// descriptor while kept.
struct Level {
    name: OsString,
    dev: u64,
    ino: u64,
    dir: Option<Dir>,
    /// Names still to look at.
    pending: Vec<OsString>,
}

/// An iterative depth-first removal holding at most [`KEPT_FDS`] descriptors.
struct TreeRemoval<'a> {
    top: &'a Dir,
    levels: Vec<Level>,
}

impl<'a> TreeRemoval<'a> {
    fn new(top: &'a Dir, name: &OsStr) -> io::Result<Self> {
        let mut t = TreeRemoval { top, levels: Vec::new() };
        // A directory swapped for something else after the unlink said EISDIR: nothing to
        // descend into; the caller's rmdir/unlink decides.
        if let Some(l) = enter(top, name)? {
            t.levels.push(l);
        }
        Ok(t)
    }

    /// The descriptor of level `i`, re-opened from the nearest kept ancestor when it was
    /// dropped (checking each level is still the directory it was).
    fn dir_of(&mut self, i: usize) -> io::Result<&Dir> {
        if self.levels[i].dir.is_none() {
            let kept = (0..i).rev().find(|&j| self.levels[j].dir.is_some());
            let mut cur: Option<Dir> = None;
            let start = kept.map_or(0, |j| j + 1);
            for j in start..=i {
                let parent = match (&cur, kept) {
                    (Some(d), _) => d,
                    (None, Some(k)) => self.levels[k].dir.as_ref().unwrap_or(self.top),
                    (None, None) => self.top,
                };
                let d = parent.open_dir(&self.levels[j].name)?;
                let st = d.stat()?;
                if (st.dev, st.ino) != (self.levels[j].dev, self.levels[j].ino) {
                    return Err(io::Error::other(format!(
                        "{:?} was replaced while it was being removed",
                        self.levels[j].name
                    )));
                }
                cur = Some(d);
            }
            self.levels[i].dir = cur;
        }
        self.levels[i].dir.as_ref().ok_or_else(|| io::Error::other("no descriptor"))
    }

    fn run(&mut self) -> io::Result<()> {
        while let Some(i) = self.levels.len().checked_sub(1) {
            let Some(name) = self.levels[i].pending.pop() else {
                // Done with this level: remove it from its parent.
                let l = self.levels.pop().ok_or_else(|| io::Error::other("empty walk"))?;
                drop(l.dir);
                if let Some(p) = self.levels.len().checked_sub(1) {
                    let parent = self.dir_of(p)?;
                    match parent.rmdir(&l.name) {
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        r => r?,
                    }
                }
                continue;
            };
            let dir = self.dir_of(i)?;
            match dir.unlink(&name) {
                Ok(()) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
                Err(e) => return Err(e),
            }
            let Some(next) = enter(self.dir_of(i)?, &name)? else { continue };
            self.levels.push(next);
            let n = self.levels.len();
            if n > KEPT_FDS {
                // Keep the deepest ones: the one just above them is re-opened when needed.
                self.levels[n - KEPT_FDS - 1].dir = None;
            }
        }
        Ok(())
    }
}

/// Opens `name` in `from` as a new level; `None` when it is no longer a
/// directory (it was swapped: it is then removed as what it is).
fn enter(from: &Dir, name: &OsStr) -> io::Result<Option<Level>> {
    match from.open_dir(name) {
        Ok(dir) => {
            let st = dir.stat()?;
            let pending = dir.entries()?;
            Ok(Some(Level { name: name.to_owned(), dev: st.dev, ino: st.ino, dir: Some(dir), pending }))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR | libc::ENOENT | libc::EXDEV)) => {
            match from.unlink(name) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Ok(None),
                r => r.map(|()| None),
            }
        }
        Err(e) => Err(e),
    }
}
