//! Restoring some paths of a backup into a volume (`restore --path P [--to DIR]`): the entries
//! are extracted into a staging directory in the volume's root, checked, and each requested
//! path is then put in place by descriptors:
//!
//! - where the destination (`DIR/P`, or `P` itself) has nothing, the staged entry is renamed
//!   there; its missing parent directories are moved in from the staging directory with the
//!   modes, owners and times the backup recorded for them;
//! - where something is there, the two are exchanged atomically (`RENAME_EXCHANGE`) and the
//!   old one, now in the staging directory, is removed with it.
//!
//! So a reader of the volume sees each path either as it was or as restored, never half
//! written; a crash leaves at most the staging directory, which the next start removes.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use voltool_runtime::fsat::Dir;

use super::{discard, stage, werr};
use crate::error::RestoreError;
use crate::extract::{ChainLink, ExtractOptions, ExtractReport, extract_chain_into};

/// A directory's recorded mode, owner and mtime, for the parents a restore of some paths
/// creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
}

/// What [`restore_paths`] restores and where.
pub struct Selection<'a> {
    /// The paths asked for, relative to the volume root as the backup has them.
    pub paths: &'a [PathBuf],
    /// A directory in the volume to restore them under (`DIR/P`); `None`: in place.
    pub to: Option<&'a Path>,
    /// The backup's record of a directory (for parents made on the way), by relative path.
    pub dir_meta: &'a (dyn Fn(&Path) -> Option<DirMeta> + Sync),
}

impl std::fmt::Debug for Selection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selection").field("paths", &self.paths).field("to", &self.to).finish()
    }
}

/// Extracts `links` (ranges of the archives that hold the selection) into a staging directory
/// in `root`, runs `check`, and puts every selected path in place (see the module docs).
///
/// # Errors
/// The extraction's or the check's error (nothing was changed then);
/// [`RestoreError::Refused`] for a destination through a symlink or a file;
/// [`RestoreError::Staging`] for the moves.
pub fn restore_paths(
    root: &Dir,
    nonce: &str,
    links: Vec<ChainLink>,
    sel: &Selection<'_>,
    check: &mut dyn FnMut(&ExtractReport) -> Result<(), RestoreError>,
    opts: &ExtractOptions,
) -> Result<ExtractReport, RestoreError> {
    let (sname, staging, result) = stage(root, nonce, check, |d| extract_chain_into(d, links, opts))?;
    let result = result.and_then(|report| {
        for p in sel.paths {
            place(root, &staging, p, sel)?;
        }
        Ok(report)
    });
    discard(root, &sname, &staging);
    if result.is_ok() {
        root.syncfs().map_err(werr("writing the restored paths to disk"))?;
    }
    result
}

fn parts(p: &Path) -> Vec<&OsStr> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn refused(p: &Path, why: &str) -> RestoreError {
    RestoreError::Refused { entry: p.display().to_string(), reason: why.to_owned() }
}

/// The directory `rel` under `root`, every component a real directory (never a symlink).
fn open_under(root: &Dir, rel: &[&OsStr], shown: &Path) -> Result<Option<Dir>, RestoreError> {
    let mut cur = root.try_clone().map_err(werr("opening the volume's root"))?;
    for name in rel {
        match cur.open_dir(name) {
            Ok(d) => cur = d,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV)) => {
                return Err(refused(shown, "a destination through a symlink, a file or a mount point"));
            }
            Err(e) => return Err(RestoreError::Write(format!("{}: {e}", shown.display()))),
        }
    }
    Ok(Some(cur))
}

/// Puts the staged `p` in place: under `sel.to`, or where it was.
fn place(root: &Dir, staging: &Dir, p: &Path, sel: &Selection<'_>) -> Result<(), RestoreError> {
    let src = parts(p);
    let Some((leaf, src_parents)) = src.split_last() else { return Ok(()) };
    let to = sel.to.map(parts).unwrap_or_default();
    let dest: Vec<&OsStr> = to.iter().chain(src_parents).copied().collect();
    // Down the destination's parents, making what is missing: `--to` components as plain
    // directories, the backup's own parents moved in from the staging directory with their
    // recorded metadata (and everything staged below them).
    let mut here = root.try_clone().map_err(werr("opening the volume's root"))?;
    let mut staged = staging.try_clone().map_err(werr("opening the staging directory"))?;
    for (i, name) in dest.iter().enumerate() {
        let in_backup = i >= to.len();
        let shown: PathBuf = dest[..=i].iter().collect();
        if let Some(d) = open_under(&here, &[name], &shown)? {
            here = d;
            if in_backup {
                staged = match staged.open_dir(name) {
                    Ok(s) => s,
                    // Moved in already, with an earlier path of the selection below it.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                    Err(e) => return Err(werr("opening a staged directory")(e)),
                };
            }
            continue;
        }
        if !in_backup {
            match here.mkdir(name, 0o755) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                    return Err(RestoreError::Write(format!("{}: {e}", shown.display())));
                }
                _ => {}
            }
            here = open_under(&here, &[name], &shown)?.ok_or_else(|| refused(&shown, "vanished while made"))?;
            continue;
        }
        // A parent of the backup's that the volume lacks: in with all that is staged below.
        let rel: PathBuf = src[..=i - to.len()].iter().collect();
        set_tree_meta(&staged, name, &rel, sel)?;
        return staged.rename(name, &here, name, true).map_err(werr("moving a restored directory into place"));
    }
    match here.stat_entry(leaf) {
        Ok(_) => {
            staged.exchange(leaf, &here, leaf).map_err(werr("exchanging a restored path with the volume's"))?;
            staged.remove_tree(leaf).map_err(werr("removing the replaced path"))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            staged.rename(leaf, &here, leaf, true).map_err(werr("moving a restored path into place"))
        }
        Err(e) => Err(RestoreError::Write(format!("{}: {e}", p.display()))),
    }
}

/// Gives the staged directory `name` (the backup's `rel`) and the staged parents below it
/// that were made for the selection their recorded metadata.
fn set_tree_meta(parent: &Dir, name: &OsStr, rel: &Path, sel: &Selection<'_>) -> Result<(), RestoreError> {
    let Some(m) = (sel.dir_meta)(rel) else { return Ok(()) };
    if sel.paths.iter().any(|p| p == rel) {
        return Ok(()); // restored itself: the extraction set it
    }
    let d = parent.open_dir(name).map_err(werr("opening a staged directory"))?;
    for child in d.entries().map_err(werr("listing a staged directory"))? {
        if d.stat_entry(&child).is_ok_and(|s| s.kind == voltool_runtime::fsat::Kind::Dir) {
            set_tree_meta(&d, &child, &rel.join(&child), sel)?;
        }
    }
    let w = |e: std::io::Error| RestoreError::Write(format!("{}: {e}", rel.display()));
    if nix::unistd::geteuid().is_root() {
        d.chown(Some(m.uid), Some(m.gid)).map_err(w)?;
    }
    d.chmod(m.mode).map_err(w)?;
    d.set_times(m.mtime.0, m.mtime.1).map_err(w)
}
