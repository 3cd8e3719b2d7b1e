//! Incremental backups (SPEC §8): an archive of what changed since the previous link of a
//! chain, which stock GNU tar applies in chain order.
//!
//! An incremental archive is an ordinary pax tar.zst (same frames, same headers) that holds:
//!
//! - every directory, the root first (as `./`), each with a pax `GNU.dumpdir` record: its
//!   complete listing, sorted bytewise, each name prefixed by `D` (a directory), `Y` (in this
//!   archive) or `N` (unchanged since the previous link), each NUL-terminated, the whole ended
//!   by one more NUL. GNU tar's `--listed-incremental=/dev/null -x` (also `-G`) removes from
//!   each directory it extracts what the listing does not name, and what changed type (a `D`
//!   that is not a directory on disk, a `Y` that is one): deletions and renames are carried;
//! - the entries whose content or metadata changed: compared with the previous manifest's
//!   size, mtime (ns), ctime (ns), inode, type, mode and owner. Changing an extended
//!   attribute, a link count or a name changes the ctime, so those are caught by it.
//!
//! The manifest lists the whole tree, each entry with the [`Entry::level`] of the link whose
//! archive holds it, so a restore reads from each link only what the final tree takes from it
//! and a single file is found in the newest link that holds it.
//!
//! Hard links: the paths of one inode share its ctime, so they change together and are always
//! in the same link. An entry read unchanged is not opened at all.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use nix::sys::stat::SFlag;

use crate::header::Stat;
use crate::manifest::{Entry, EntryKind, Manifest, ParentRef};

/// What an entry looked like in the previous link's manifest.
#[derive(Clone)]
struct Was {
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
    ino: u64,
    ctime: i64,
    ctime_nsec: u32,
    level: u32,
    sha256: Option<Box<str>>,
    target: Option<Box<str>>,
    frame: (u64, u64, u32),
}

/// The previous link of a chain, indexed by path: what an incremental compares with.
pub struct Previous {
    parent: ParentRef,
    level: u32,
    by_path: HashMap<Box<str>, Was>,
}

impl fmt::Debug for Previous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Previous").field("parent", &self.parent.id).field("entries", &self.by_path.len()).finish()
    }
}

impl PartialEq for Previous {
    fn eq(&self, other: &Self) -> bool {
        self.parent == other.parent && self.level == other.level
    }
}

impl Eq for Previous {}

impl Previous {
    /// The index of `m`'s entries, or `None` when its manifest cannot be compared with (it was
    /// written before incrementals, without inode numbers and ctimes): the caller makes a new
    /// full backup then.
    pub fn from_manifest(m: &Manifest) -> Option<Self> {
        if m.entries.iter().any(|e| e.kind != EntryKind::Dir && e.ino == 0) {
            return None;
        }
        let by_path = m
            .entries
            .iter()
            .map(|e| {
                let was = Was {
                    kind: e.kind,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    size: e.size,
                    mtime: e.mtime,
                    mtime_nsec: e.mtime_nsec,
                    ino: e.ino,
                    ctime: e.ctime,
                    ctime_nsec: e.ctime_nsec,
                    level: e.level,
                    sha256: e.sha256.as_deref().map(Into::into),
                    target: e.target.as_deref().map(Into::into),
                    frame: (e.frame_at, e.frame_len, e.frame_skip),
                };
                (Box::from(e.path.as_str()), was)
            })
            .collect();
        Some(Self {
            parent: ParentRef { id: m.id.clone(), archive_sha256: m.archive_sha256.clone() },
            level: m.level,
            by_path,
        })
    }

    /// The link this one is taken against.
    pub fn parent(&self) -> &ParentRef {
        &self.parent
    }

    /// The new link's level: one past the parent's.
    pub fn level(&self) -> u32 {
        self.level + 1
    }

    /// The previous entry of `rel` when the entry `st` describes is unchanged since: the
    /// manifest entry to record for it (its content stays in the link that holds it).
    /// Directories are never "unchanged": every one is archived, with its listing.
    pub(crate) fn unchanged(&self, rel: &str, st: &Stat) -> Option<Entry> {
        let was = self.by_path.get(rel)?;
        let same_kind = match st.kind {
            SFlag::S_IFREG => matches!(was.kind, EntryKind::File | EntryKind::Hardlink),
            SFlag::S_IFLNK => was.kind == EntryKind::Symlink,
            SFlag::S_IFIFO => was.kind == EntryKind::Fifo,
            _ => false,
        };
        let regular_size = if st.kind == SFlag::S_IFREG { st.size } else { 0 };
        let same = same_kind
            && (was.mode, was.uid, was.gid) == (st.mode, st.uid, st.gid)
            && (was.kind != EntryKind::File || was.size == regular_size)
            && (was.mtime, was.mtime_nsec) == (st.mtime, st.mtime_nsec)
            && (was.ctime, was.ctime_nsec) == (st.ctime, st.ctime_nsec)
            && was.ino == st.ino;
        same.then(|| Entry {
            path: rel.to_owned(),
            kind: was.kind,
            mode: was.mode,
            uid: was.uid,
            gid: was.gid,
            size: was.size,
            mtime: was.mtime,
            mtime_nsec: was.mtime_nsec,
            sha256: was.sha256.as_deref().map(Into::into),
            target: was.target.as_deref().map(Into::into),
            ino: was.ino,
            ctime: was.ctime,
            ctime_nsec: was.ctime_nsec,
            level: was.level,
            frame_at: was.frame.0,
            frame_len: was.frame.1,
            frame_skip: was.frame.2,
        })
    }
}

/// When an incremental chain starts over with a full backup (`backup-full`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullEvery {
    /// After this many incrementals.
    Links(u32),
    /// When a slot of the schedule passed since the chain's full backup.
    Schedule(crate::schedule::Schedule),
}

/// Why a `backup-full` value is refused.
#[derive(Debug, thiserror::Error)]
pub enum FullEveryError {
    #[error("expected a number of incrementals from 1, or a cron schedule")]
    Zero,
    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleError),
}

impl Default for FullEvery {
    /// Weekly, at the start of Sunday.
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        Self::Schedule(crate::schedule::Schedule::parse("@weekly").expect("@weekly is a schedule"))
    }
}

impl FullEvery {
    /// `N` (incrementals per chain) or a cron schedule (`@weekly`, `0 3 * * 0`).
    ///
    /// # Errors
    /// [`FullEveryError`] saying what is wrong.
    pub fn parse(s: &str) -> Result<Self, FullEveryError> {
        match s.trim().parse::<u32>() {
            Ok(0) => Err(FullEveryError::Zero),
            Ok(n) => Ok(Self::Links(n)),
            Err(_) => Ok(Self::Schedule(crate::schedule::Schedule::parse(s)?)),
        }
    }

    /// Whether the next backup must be a full one, given the newest link's level and when its
    /// chain's full backup was taken.
    pub fn wants_full(
        &self,
        last_level: u32,
        full_at: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        match self {
            Self::Links(n) => last_level >= *n,
            Self::Schedule(s) => s.next_after(full_at).is_none_or(|slot| slot <= now),
        }
    }
}

/// A directory's children as an incremental sees them when it writes the directory: the
/// `GNU.dumpdir` record, and each child's `lstat` and previous entry when unchanged (used when
/// the walk reaches it, so each child is looked at once and the listing and the archive agree).
pub(crate) struct Listing {
    pub(crate) dumpdir: Vec<u8>,
    pub(crate) children: Vec<(OsString, Option<Entry>)>,
}

/// Lists the open directory `dir` (relative path `rel`, empty for the root) for an incremental
/// against `prev`. Children that vanish while listed are left out; devices and sockets, which
/// are never archived, too.
pub(crate) fn list_dir(dir: BorrowedFd<'_>, rel: &[u8], prev: &Previous) -> nix::Result<Listing> {
    let names = crate::walk::list(dir)?;
    let mut dumpdir = Vec::new();
    let mut children = Vec::with_capacity(names.len());
    for name in names {
        let Ok(st) = crate::walk::stat_at(dir, &name) else { continue };
        let st: Stat = st.into();
        let (flag, unchanged) = match st.kind {
            SFlag::S_IFDIR => (b'D', None),
            SFlag::S_IFREG | SFlag::S_IFLNK | SFlag::S_IFIFO => {
                let mut path = rel.to_vec();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name.as_bytes());
                match prev.unchanged(&String::from_utf8_lossy(&path), &st) {
                    Some(e) => (b'N', Some(e)),
                    None => (b'Y', None),
                }
            }
            _ => continue,
        };
        dumpdir.push(flag);
        dumpdir.extend_from_slice(name.as_bytes());
        dumpdir.push(0);
        children.push((name, unchanged));
    }
    dumpdir.push(0);
    Ok(Listing { dumpdir, children })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn manifest_of(root: &std::path::Path) -> Manifest {
        let summary = crate::write_archive(root, std::io::sink(), &crate::ArchiveOptions::default()).expect("archive");
        Manifest::new("v-1", "v", &BTreeMap::new(), summary, time::OffsetDateTime::UNIX_EPOCH).expect("manifest")
    }

    #[test]
    fn listings_mark_directories_changes_and_unchanged_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("d")).expect("mkdir");
        std::fs::write(root.join("same"), b"1").expect("write");
        std::fs::write(root.join("edited"), b"1").expect("write");
        let prev = Previous::from_manifest(&manifest_of(root)).expect("comparable");
        assert_eq!(prev.level(), 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(root.join("edited"), b"22").expect("write");
        std::fs::write(root.join("new"), b"3").expect("write");
        let fd = std::fs::File::open(root).expect("open");
        let l = list_dir(std::os::fd::AsFd::as_fd(&fd), b"", &prev).expect("list");
        assert_eq!(l.dumpdir, b"Dd\0Yedited\0Ynew\0Nsame\0\0");
        let unchanged: Vec<_> = l.children.iter().filter(|(_, u)| u.is_some()).map(|(n, _)| n.clone()).collect();
        assert_eq!(unchanged, vec![OsString::from("same")]);
    }

    #[test]
    fn full_every_counts_links_or_waits_for_a_slot() {
        use chrono::TimeZone;
        let at = |d: u32, h: u32| chrono::Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).single().expect("time");
        let n = FullEvery::parse("3").expect("3");
        assert!(!n.wants_full(2, at(1, 0), at(1, 1)));
        assert!(n.wants_full(3, at(1, 0), at(1, 1)));
        assert!(FullEvery::parse("0").is_err());
        assert!(FullEvery::parse("weekly").is_err());
        // 2026-12-06 is a Sunday: @weekly fires at its midnight.
        let w = FullEvery::default();
        assert!(!w.wants_full(40, at(1, 0), at(5, 23)), "no Sunday since the full");
        assert!(w.wants_full(1, at(5, 23), at(6, 1)), "Sunday midnight passed");
    }

    #[test]
    fn a_manifest_without_inodes_cannot_be_compared_with() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"1").expect("write");
        let mut m = manifest_of(dir.path());
        assert!(Previous::from_manifest(&m).is_some());
        for e in &mut m.entries {
            e.ino = 0;
        }
        assert!(Previous::from_manifest(&m).is_none(), "written before incrementals");
    }
}
