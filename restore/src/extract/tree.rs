//! The directories of an extraction, reached by descriptors only.
//!
//! Entries name paths relative to the staging directory; every parent directory on the way is
//! opened from the one above it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! ([`Dir::open_dir`]) and made where it is missing, one component at a time. A symlink on the
//! way is refused, whoever put it there (the archive, or a container writing into the volume
//! while the restore runs): the kernel refuses to follow it, so no check can be raced. The
//! descriptors of the current parent's ancestors are kept (archives list a directory's entries
//! together), at most [`KEPT`]; deeper levels are re-opened from the nearest kept ancestor,
//! never from a path.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};

use voltool_runtime::fsat::Dir;

use crate::error::RestoreError;

/// How many directory descriptors the cursor keeps open.
const KEPT: usize = 256;

/// The chain of open directories from the staging directory down to the current parent.
pub(crate) struct Tree {
    root: Dir,
    /// Component names and, while kept, their descriptors.
    chain: Vec<(OsString, Option<Dir>)>,
}

impl Tree {
    pub(crate) fn new(root: Dir) -> Self {
        Tree { root, chain: Vec::new() }
    }

    /// The directory `rel` (relative to the root; empty for the root), made where missing
    /// (mode 0700 until its own entry or the end of the extraction sets it).
    ///
    /// # Errors
    /// [`RestoreError::Refused`] (for entry `entry`) when a component is a symlink or not a
    /// directory; [`RestoreError::Write`] for other filesystem errors.
    pub(crate) fn dir(&mut self, rel: &Path, entry: &str) -> Result<&Dir, RestoreError> {
        let parts: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s),
                _ => None,
            })
            .collect();
        // Keep the common prefix of the current chain.
        let common = self.chain.iter().zip(&parts).take_while(|((have, _), want)| have.as_os_str() == **want).count();
        self.chain.truncate(common);
        for (i, name) in parts.iter().enumerate().skip(common) {
            let next = {
                let parent = self.kept(i, entry)?;
                open_or_make(parent, name).map_err(|e| step_err(e, entry, &parts[..=i]))?
            };
            self.chain.push(((*name).to_owned(), Some(next)));
            let n = self.chain.len();
            if n > KEPT {
                self.chain[n - KEPT - 1].1 = None;
            }
        }
        self.kept(parts.len(), entry)
    }

    /// The descriptor of the first `depth` components (0: the root), re-opened from the
    /// nearest kept ancestor when it was dropped.
    fn kept(&mut self, depth: usize, entry: &str) -> Result<&Dir, RestoreError> {
        if depth == 0 {
            return Ok(&self.root);
        }
        if self.chain[depth - 1].1.is_none() {
            let from = (0..depth - 1).rev().find(|&j| self.chain[j].1.is_some());
            let mut cur: Option<Dir> = None;
            for j in from.map_or(0, |f| f + 1)..depth {
                let parent = match (&cur, from) {
                    (Some(d), _) => d,
                    (None, Some(f)) => self.chain[f].1.as_ref().unwrap_or(&self.root),
                    (None, None) => &self.root,
                };
                let names: Vec<&OsStr> = self.chain[..=j].iter().map(|(n, _)| n.as_os_str()).collect();
                let name = &self.chain[j].0;
                let d = parent.open_dir(name).map_err(|e| step_err(e, entry, &names))?;
                cur = Some(d);
            }
            self.chain[depth - 1].1 = cur;
        }
        self.chain[depth - 1].1.as_ref().ok_or_else(|| RestoreError::Write(format!("{entry:?}: no directory")))
    }
}

fn open_or_make(parent: &Dir, name: &OsStr) -> io::Result<Dir> {
    match parent.open_dir(name) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            match parent.mkdir(name, 0o700) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                _ => {}
            }
            parent.open_dir(name)
        }
        r => r,
    }
}

/// The error of a step down to `parts`: a symlink or a file in the way is a refused entry.
pub(crate) fn step_err(e: io::Error, entry: &str, parts: &[&OsStr]) -> RestoreError {
    let at: PathBuf = parts.iter().collect();
    match e.raw_os_error() {
        Some(libc::ELOOP) => RestoreError::Refused {
            entry: entry.to_owned(),
            reason: format!("a path through the symlink {at:?} (it could point outside the volume)"),
        },
        Some(libc::ENOTDIR) => {
            RestoreError::Refused { entry: entry.to_owned(), reason: "a path through a file".into() }
        }
        Some(libc::EXDEV) => {
            RestoreError::Refused { entry: entry.to_owned(), reason: format!("a path through the mount point {at:?}") }
        }
        _ => RestoreError::Write(format!("{}: {e}", at.display())),
    }
}
