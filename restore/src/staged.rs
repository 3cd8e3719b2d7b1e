//! Staged restores: extract into a staging directory inside the volume, check, then swap.
//!
//! ## Why this shape
//! The volume may be held by containers while a restore with `--force` runs, and what they
//! run is hostile: any name in the volume can be swapped for a symlink at any moment. So:
//!
//! - everything goes through directory descriptors ([`voltool_runtime::fsat::Dir`]): the
//!   volume's root is opened once from the daemon's own mount point, the staging and old
//!   directories are made in it and held open, and the swap moves entries between those
//!   descriptors with `renameat2(2)`. A container that renames the staging directory away or
//!   puts a symlink under its name changes nothing the restore writes to;
//! - the phase of the swap lives in the daemon's state ([`Journal`], SQLite), never in a file
//!   inside the volume, where a container could replace it (or make it a symlink to a host
//!   file the daemon would then write);
//! - nothing is deleted before the new tree is complete, checked and on disk.
//!
//! ## Phases
//! [`Phase::Extracting`] (the staging directory is filling), [`Phase::SwappingOut`] (the old
//! entries move into `.voltool-restore-old-NONCE`), [`Phase::SwappingIn`] (the staged entries
//! move into the root), [`Phase::CleaningUp`] (the old tree is deleted). Each is recorded
//! before it starts. [`recover`] after a crash: before `SwappingIn` the volume is rolled back to
//! its old entries, from `SwappingIn` on forward to the new ones; either way it ends as
//! exactly one of the two trees.
//!
//! ## Limitations
//! A container writing into the volume during the swap may keep files it creates meanwhile
//! (they are neither old nor new); nothing it does can make the daemon write, chmod or read
//! outside the volume.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::path::Path;

use voltool_runtime::fsat::{Dir, Kind};

use crate::error::RestoreError;
use crate::extract::{ExtractOptions, ExtractReport, extract_archive_into};

mod paths;
mod reserve;

pub use paths::{DirMeta, Selection, restore_paths};
pub use reserve::Reserve;

/// Where a restore is; recorded durably before each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Extracting,
    SwappingOut,
    SwappingIn,
    CleaningUp,
}

impl Phase {
    /// The name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Extracting => "extracting",
            Phase::SwappingOut => "swapping-out",
            Phase::SwappingIn => "swapping-in",
            Phase::CleaningUp => "cleaning-up",
        }
    }

    /// The phase named `s`.
    pub fn parse(s: &str) -> Option<Phase> {
        [Phase::Extracting, Phase::SwappingOut, Phase::SwappingIn, Phase::CleaningUp]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// Why the journal could not record a phase.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JournalError(pub Box<dyn std::error::Error + Send + Sync>);

/// Where one restore's phase is kept: the daemon's state, durable (on disk when `record`
/// returns), outside the volume.
pub trait Journal {
    /// Records that the restore enters `phase`.
    ///
    /// # Errors
    /// [`JournalError`] when it cannot be recorded durably; the restore then stops.
    fn record(&self, phase: Phase) -> Result<(), JournalError>;
}

/// The staging directory's name for restore `nonce`.
pub fn staging_name(nonce: &str) -> OsString {
    format!(".voltool-restore-{nonce}").into()
}

/// The name of the directory the old entries move into.
pub fn old_name(nonce: &str) -> OsString {
    format!(".voltool-restore-old-{nonce}").into()
}

fn werr(action: &'static str) -> impl Fn(io::Error) -> RestoreError {
    move |source| RestoreError::Staging { action, source }
}

fn journal_err(e: JournalError) -> RestoreError {
    RestoreError::Staging { action: "recording the restore's phase", source: io::Error::other(e) }
}

/// What a staged restore extracts: one archive stream, or the links of an incremental chain.
pub enum Source {
    Archive(Box<dyn Read + Send>),
    Chain(Vec<crate::ChainLink>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Archive(_) => f.write_str("Source::Archive"),
            Source::Chain(links) => f.debug_tuple("Source::Chain").field(links).finish(),
        }
    }
}

impl<R: Read + Send + 'static> From<R> for Source {
    fn from(r: R) -> Self {
        Source::Archive(Box::new(r))
    }
}

/// Extracts `input` into a new staging directory in `root`, runs `check` on what was written,
/// and swaps it in (see the module docs). On any error before the swap the staging directory
/// is removed and the volume is as it was; a failed swap is rolled back.
///
/// # Errors
/// The extraction's or the check's error; [`RestoreError::Staging`] for the staging and swap.
pub fn restore_staged(
    root: &Dir,
    nonce: &str,
    journal: &dyn Journal,
    input: impl Into<Source>,
    check: &mut dyn FnMut(&ExtractReport) -> Result<(), RestoreError>,
    opts: &ExtractOptions,
) -> Result<ExtractReport, RestoreError> {
    journal.record(Phase::Extracting).map_err(journal_err)?;
    let (sname, staging, result) = stage(root, nonce, check, |d| match input.into() {
        Source::Archive(r) => extract_archive_into(r, d, opts),
        Source::Chain(links) => crate::extract_chain_into(d, links, opts),
    })?;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            discard(root, &sname, &staging);
            return Err(e);
        }
    };
    swap_in(root, nonce, &staging, journal)?;
    Ok(report)
}

/// Makes the staging directory of `nonce` in `root`, fills it with `extract` (given its
/// descriptor) and runs `check` on the report: the directory's name and descriptor, and the
/// outcome (the caller discards the directory when it failed).
///
/// # Errors
/// [`RestoreError::Staging`] when the directory cannot be made.
#[allow(clippy::type_complexity)]
pub(crate) fn stage(
    root: &Dir,
    nonce: &str,
    check: &mut dyn FnMut(&ExtractReport) -> Result<(), RestoreError>,
    extract: impl FnOnce(Dir) -> Result<ExtractReport, RestoreError>,
) -> Result<(OsString, Dir, Result<ExtractReport, RestoreError>), RestoreError> {
    let sname = staging_name(nonce);
    root.mkdir(&sname, 0o700).map_err(werr("creating the staging directory"))?;
    let staging = root.open_dir(&sname).map_err(werr("opening the staging directory"))?;
    let result = staging
        .try_clone()
        .map_err(werr("reading the staging directory"))
        .and_then(extract)
        .and_then(|report| check(&report).map(|()| report));
    Ok((sname, staging, result))
}

/// [`restore_staged`] into the volume whose root is at `root` (the caller's own mount point,
/// opened once here: everything after goes through that descriptor), the extraction bounded by
/// what `reserve` leaves of the root's filesystem ([`Reserve::space`]; a volume with a size
/// limit of its own, `opts.max_bytes`, is bounded by that instead).
///
/// # Errors
/// [`RestoreError::Write`] when the root or its filesystem cannot be read; as
/// [`restore_staged`].
pub fn restore_into(
    root: &Path,
    nonce: &str,
    journal: &dyn Journal,
    input: impl Into<Source>,
    check: &mut dyn FnMut(&ExtractReport) -> Result<(), RestoreError>,
    opts: &ExtractOptions,
    reserve: Reserve,
) -> Result<ExtractReport, RestoreError> {
    let (dir, opts) = open_with_space(root, opts, reserve)?;
    restore_staged(&dir, nonce, journal, input, check, &opts)
}

/// [`restore_paths`] into the volume whose root is at `root`, bounded as [`restore_into`] is.
///
/// # Errors
/// As [`restore_into`] and [`restore_paths`].
pub fn restore_paths_into(
    root: &Path,
    nonce: &str,
    links: Vec<crate::ChainLink>,
    sel: &Selection<'_>,
    check: &mut dyn FnMut(&ExtractReport) -> Result<(), RestoreError>,
    opts: &ExtractOptions,
    reserve: Reserve,
) -> Result<ExtractReport, RestoreError> {
    let (dir, opts) = open_with_space(root, opts, reserve)?;
    restore_paths(&dir, nonce, links, sel, check, &opts)
}

/// The volume's root, and `opts` bounded by what `reserve` leaves of its filesystem.
fn open_with_space(
    root: &Path,
    opts: &ExtractOptions,
    reserve: Reserve,
) -> Result<(Dir, ExtractOptions), RestoreError> {
    let dir = open_root(root)?;
    let space = reserve
        .space(&dir, opts.max_bytes.is_some())
        .map_err(|e| RestoreError::Write(format!("the free space of the volume's filesystem: {e}")))?;
    Ok((dir, ExtractOptions { space: Some(space), ..opts.clone() }))
}

fn open_root(root: &Path) -> Result<Dir, RestoreError> {
    Dir::open(root).map_err(|e| RestoreError::Write(format!("the volume's root: {e}")))
}

/// How many times removing a restore's directory is tried while a container keeps adding
/// entries to it (each entry it plants where one was just removed makes a directory non-empty).
const REMOVE_PASSES: usize = 8;

/// Removes a staging directory by its descriptor (its contents) and then its name, if the
/// name still is that directory (a container may have renamed it away meanwhile: the emptied
/// directory then stays where they put it).
fn discard(root: &Dir, name: &OsStr, dir: &Dir) {
    let mut r = Ok(());
    for _ in 0..REMOVE_PASSES {
        r = clear(dir).and_then(|()| remove_if_same(root, name, dir));
        if !matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY)) {
            break;
        }
    }
    if let Err(e) = r {
        tracing::warn!(dir = ?name, error = %e, "could not remove a restore's directory");
    }
}

/// Removes everything in `dir`, by descriptors. An entry that cannot be removed does not keep
/// the others (a container planting into a directory being removed fails only that one), and
/// the whole is tried again, at most [`REMOVE_PASSES`] times.
fn clear(dir: &Dir) -> io::Result<()> {
    let mut failed = None;
    for _ in 0..REMOVE_PASSES {
        let names = dir.entries()?;
        if names.is_empty() {
            return Ok(());
        }
        for n in &names {
            if let Err(e) = dir.remove_tree(n) {
                failed = Some(e);
            }
        }
    }
    Err(failed.unwrap_or_else(|| io::Error::from_raw_os_error(libc::ENOTEMPTY)))
}

/// Removes `name` from `root` when it is still `dir` (now empty). Anything else under that
/// reserved name (a container's symlink or directory in its place) is removed as what it is,
/// without following it; where the container moved `dir` to, it stays (emptied).
fn remove_if_same(root: &Dir, name: &OsStr, dir: &Dir) -> io::Result<()> {
    let want = dir.stat()?;
    let r = match root.stat_entry(name) {
        Ok(st) if st.kind == Kind::Dir && (st.dev, st.ino) == (want.dev, want.ino) => root.rmdir(name),
        Ok(_) => root.remove_tree(name),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// The name ext4 and others keep in a filesystem's root for fsck; it stays where it is.
const LOST_FOUND: &str = "lost+found";

/// The entries of the root that belong to the volume's data: not a restore's own directories,
/// not `lost+found`.
fn user_entries(root: &Dir) -> io::Result<Vec<OsString>> {
    Ok(root.entries()?.into_iter().filter(|n| is_user_entry(n)).collect())
}

/// Whether `name` in a volume's root is the volume's data (not `lost+found`, not a restore's
/// own directory or leftover).
pub fn is_user_entry(name: &OsStr) -> bool {
    !name.as_encoded_bytes().starts_with(b".voltool-restore-") && name != LOST_FOUND
}

/// The staged entries to move in: all but a `lost+found` when the root has its own.
fn staged_entries(staging: &Dir, root: &Dir) -> io::Result<Vec<OsString>> {
    let root_has_lf = root.stat_entry(OsStr::new(LOST_FOUND)).is_ok();
    Ok(staging.entries()?.into_iter().filter(|n| !(root_has_lf && n == LOST_FOUND)).collect())
}

/// Moves every entry of `from` named in `names` into `to` (never replacing anything there:
/// an entry already at a name in `to` is first moved into `aside` under a fresh name).
/// Returns the names moved, in order.
fn move_entries(from: &Dir, names: &[OsString], to: &Dir, aside: Option<&Dir>) -> io::Result<Vec<OsString>> {
    let mut moved = Vec::with_capacity(names.len());
    for name in names {
        match from.rename(name, to, name, true) {
            Ok(()) => moved.push(name.clone()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && aside.is_some() => {
                // Someone made this name in the root meanwhile (a container): it goes with the
                // old entries.
                if let Some(aside) = aside {
                    let mut fresh = name.clone();
                    fresh.push(format!(".intruder-{}", moved.len()));
                    to.rename(name, aside, &fresh, true)?;
                }
                from.rename(name, to, name, true)?;
                moved.push(name.clone());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}

/// Swaps the staged tree in (phases `SwappingOut`, `SwappingIn`, `CleaningUp`).
fn swap_in(root: &Dir, nonce: &str, staging: &Dir, journal: &dyn Journal) -> Result<(), RestoreError> {
    let (sname, oname) = (staging_name(nonce), old_name(nonce));
    let fail = |e: RestoreError| {
        discard(root, &sname, staging);
        e
    };
    journal.record(Phase::SwappingOut).map_err(journal_err).map_err(fail)?;
    root.mkdir(&oname, 0o700).map_err(werr("creating the directory for the old data")).map_err(fail)?;
    let old = root.open_dir(&oname).map_err(werr("opening the directory for the old data")).map_err(fail)?;
    let out = user_entries(root)
        .and_then(|names| move_entries(root, &names, &old, None))
        .and_then(|_| root.sync().and_then(|()| old.sync()));
    if let Err(e) = out
        .map_err(werr("moving the old data aside"))
        .and_then(|()| journal.record(Phase::SwappingIn).map_err(journal_err))
    {
        roll_back(root, &old, &oname, staging);
        return Err(fail(e));
    }
    let staged = staged_entries(staging, root).map_err(werr("listing the staged data"));
    let moved_in = staged.and_then(|names| {
        move_entries(staging, &names, root, Some(&old))
            .and_then(|m| root.sync().map(|()| m))
            .map_err(werr("moving the restored data in"))
    });
    if let Err(e) = moved_in {
        // Back to the old tree: what came in goes back to staging, the old entries return.
        if let Ok(names) = user_entries(root) {
            let _ = move_entries(root, &names, staging, None);
        }
        roll_back(root, &old, &oname, staging);
        return Err(fail(e));
    }
    journal.record(Phase::CleaningUp).map_err(journal_err)?;
    discard(root, &oname, &old);
    discard(root, &sname, staging);
    root.sync().map_err(werr("syncing the volume's root"))?;
    Ok(())
}

/// Moves the old entries back into the root (what a container made meanwhile under their
/// names goes into `aside`, to be deleted with it) and removes the old directory.
fn roll_back(root: &Dir, old: &Dir, oname: &OsStr, aside: &Dir) {
    let r = old.entries().and_then(|names| move_entries(old, &names, root, Some(aside))).and_then(|_| root.sync());
    if let Err(e) = r {
        tracing::error!(error = %e, "could not roll a failed restore back completely");
    }
    discard(root, oname, old);
}

/// What [`recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// The volume has its old data again.
    RolledBack,
    /// The volume has the restored data.
    RolledForward,
}

/// Finishes or undoes the restore `nonce` that a crash interrupted in `phase`: before
/// `SwappingIn` the old entries go back into the root and the staging tree is removed; from
/// `SwappingIn` on the rest of the staged entries go in and the old tree is removed. Leftover
/// directories are opened by descriptor without following symlinks: one a container replaced
/// by a symlink is removed as the link.
///
/// # Errors
/// [`RestoreError::Staging`].
pub fn recover(root: &Dir, nonce: &str, phase: Phase) -> Result<Recovered, RestoreError> {
    let (sname, oname) = (staging_name(nonce), old_name(nonce));
    let open = |name: &OsStr| match root.open_dir(name) {
        Ok(d) => Ok(Some(d)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT)) => Ok(None),
        // Not the directory the restore made (a symlink or a file in its place): remove it as
        // what it is, never follow it.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => root.unlink(name).map(|()| None),
        Err(e) => Err(e),
    };
    let staging = open(&sname).map_err(werr("reading the staging directory"))?;
    let old = open(&oname).map_err(werr("reading the directory of the old data"))?;
    let done = match phase {
        Phase::Extracting | Phase::SwappingOut => {
            if let Some(old) = &old {
                let names = old.entries().map_err(werr("listing the old data"))?;
                move_entries(old, &names, root, staging.as_ref()).map_err(werr("moving the old data back"))?;
            }
            Recovered::RolledBack
        }
        Phase::SwappingIn | Phase::CleaningUp => {
            if let Some(staging) = &staging {
                let names = staged_entries(staging, root).map_err(werr("listing the staged data"))?;
                let aside = match &old {
                    Some(o) => Some(o.try_clone().map_err(werr("reading the old data"))?),
                    None => None,
                };
                move_entries(staging, &names, root, aside.as_ref()).map_err(werr("moving the restored data in"))?;
            }
            Recovered::RolledForward
        }
    };
    root.sync().map_err(werr("syncing the volume's root"))?;
    root.remove_tree(&sname).map_err(werr("removing the staging directory"))?;
    root.remove_tree(&oname).map_err(werr("removing the old data"))?;
    root.sync().map_err(werr("syncing the volume's root"))?;
    Ok(done)
}

/// At start, in the volume whose root is at `root`: the restore a stop `interrupted` (its
/// nonce and the phase its journal recorded) is finished or undone ([`recover`]), then every
/// other leftover of a restore, also one of an older voltool, removed ([`recover_leftovers`]).
/// A restore whose journal has no phase yet was recorded before it made anything: it is
/// undone as one still extracting. Returns what was done, for the log.
///
/// # Errors
/// [`RestoreError::Write`] when the root cannot be opened, [`RestoreError::Staging`].
pub fn recover_root(root: &Path, interrupted: Option<(&str, Option<Phase>)>) -> Result<Vec<String>, RestoreError> {
    let dir = open_root(root)?;
    let mut did = Vec::new();
    if let Some((nonce, phase)) = interrupted {
        let phase = phase.unwrap_or(Phase::Extracting);
        let r = recover(&dir, nonce, phase)?;
        did.push(format!("{r:?} restore {nonce} (interrupted in phase {})", phase.as_str()));
    }
    did.extend(recover_leftovers(&dir)?);
    Ok(did)
}

/// Most bytes read from a swap marker of an older voltool (it holds "1" or "2").
const LEGACY_MARKER_MAX: u64 = 16;

/// Finishes what a restore of an older voltool left in `root` (its phase was a marker file
/// `.voltool-restore-N.swap` in the volume: read by descriptor, never followed, at most 16
/// bytes), then removes every `.voltool-restore-*` directory no journal row names: staging and
/// old trees of restores that ended before their swap. Call it after [`recover`] has handled
/// the journal's rows. Returns what it did, for the log.
///
/// # Errors
/// [`RestoreError::Staging`].
pub fn recover_leftovers(root: &Dir) -> Result<Vec<String>, RestoreError> {
    let mut did = Vec::new();
    for name in root.entries().map_err(werr("listing the volume's root"))? {
        let b = name.as_encoded_bytes();
        let Some(n) = b.strip_prefix(b".voltool-restore-").and_then(|r| r.strip_suffix(b".swap")) else { continue };
        let nonce = String::from_utf8_lossy(n).into_owned();
        let phase = match read_marker(root, &name) {
            Some(p) if p.trim() == "2" => Phase::SwappingIn,
            _ => Phase::SwappingOut,
        };
        let r = recover(root, &nonce, phase)?;
        root.unlink(&name).map_err(werr("removing an old swap marker"))?;
        did.push(format!("{} restore {nonce} of an older voltool", describe(&r)));
    }
    for name in root.entries().map_err(werr("listing the volume's root"))? {
        if name.as_encoded_bytes().starts_with(b".voltool-restore-") {
            root.remove_tree(&name).map_err(werr("removing a restore's leftover directory"))?;
            did.push(format!("removed {}", name.to_string_lossy()));
        }
    }
    if !did.is_empty() {
        root.sync().map_err(werr("syncing the volume's root"))?;
    }
    Ok(did)
}

fn describe(r: &Recovered) -> &'static str {
    match r {
        Recovered::RolledBack => "rolled back",
        Recovered::RolledForward => "finished swapping in",
    }
}

fn read_marker(root: &Dir, name: &OsStr) -> Option<String> {
    let f = root.open_file(name).ok()?;
    let mut s = String::new();
    f.take(LEGACY_MARKER_MAX).read_to_string(&mut s).ok()?;
    Some(s)
}

#[cfg(test)]
#[path = "staged_tests.rs"]
mod tests;
