//! The entry list of each volume's newest backup on each target, kept in memory after the run that wrote it,
//! so that the next incremental compares the tree with it instead of reading the manifest back
//! from the target and parsing it (for 20,000 files, 6 MiB of JSON: most of an incremental's
//! time when little changed).
//!
//! It is only a shortcut: a list is used for the backup it names and only while the catalog
//! still records that backup with the archive sha256 it was written with; the caller also
//! checks that the backup's objects are still on the target. Anything else (a restart, another
//! backup, a list evicted for the budget) reads the target's manifest as before. The lists are
//! compact ([`EntryList`], ~100 bytes plus the path per entry) and held to [`BUDGET`] bytes in
//! all; a volume whose list alone is larger is not kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use voltool_backup::EntryList;

/// The memory all kept lists may take together: ~500,000 entries.
pub(super) const BUDGET: usize = 64 << 20;

/// A volume and a target's URL.
type Key = (String, String);

/// One volume's newest link on one target.
struct Kept {
    id: String,
    archive_sha256: String,
    level: u32,
    entries: Arc<EntryList>,
    /// When it was kept, to evict the oldest first.
    seq: u64,
}

/// What [`LinkIndex::get`] hands back: the link's level and its entries.
pub(super) struct KeptLink {
    pub level: u32,
    pub entries: Arc<EntryList>,
}

#[derive(Default)]
pub(super) struct LinkIndex {
    /// By (volume, target URL), and the last `seq` handed out.
    inner: Mutex<(HashMap<Key, Kept>, u64)>,
}

impl LinkIndex {
    /// Keeps `entries` as `volume`'s newest link `id` on `target` (replacing the one before),
    /// evicting the oldest other lists while the total is over [`BUDGET`].
    pub fn keep(
        &self,
        (volume, target): (&str, &str),
        id: &str,
        archive_sha256: &str,
        level: u32,
        mut entries: EntryList,
    ) {
        entries.shrink_to_fit();
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, seq) = &mut *guard;
        let key = (volume.to_owned(), target.to_owned());
        map.remove(&key);
        if entries.heap_bytes() > BUDGET {
            return;
        }
        *seq += 1;
        let kept = Kept {
            id: id.to_owned(),
            archive_sha256: archive_sha256.to_owned(),
            level,
            entries: Arc::new(entries),
            seq: *seq,
        };
        map.insert(key, kept);
        while map.values().map(|k| k.entries.heap_bytes()).sum::<usize>() > BUDGET {
            let Some(oldest) = map.iter().min_by_key(|(_, k)| k.seq).map(|(v, _)| v.clone()) else { break };
            map.remove(&oldest);
        }
    }

    /// The kept list of backup `id` of `volume` on `target`, if it is the one kept and was
    /// written with `archive_sha256` (what the catalog records for it now).
    pub fn get(&self, (volume, target): (&str, &str), id: &str, archive_sha256: Option<&str>) -> Option<KeptLink> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let k = guard.0.get(&(volume.to_owned(), target.to_owned()))?;
        (k.id == id && archive_sha256 == Some(k.archive_sha256.as_str()))
            .then(|| KeptLink { level: k.level, entries: k.entries.clone() })
    }
}

#[cfg(test)]
mod tests {
    use voltool_backup::{Entry, EntryKind};

    use super::*;

    fn list(n: usize, path_len: usize) -> EntryList {
        let mut l = EntryList::new();
        for i in 0..n {
            l.push(&Entry {
                path: format!("{i:0path_len$}"),
                kind: EntryKind::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: 1,
                mtime: 1,
                mtime_nsec: 0,
                sha256: None,
                target: None,
                ino: 10 + i as u64,
                ctime: 1,
                ctime_nsec: 0,
                level: 0,
                frame_at: 0,
                frame_len: 0,
                frame_skip: 0,
            });
        }
        l
    }

    #[test]
    fn a_kept_list_is_handed_back_only_for_its_backup_and_archive_sha256() {
        let idx = LinkIndex::default();
        idx.keep(("v", "t"), "b1", "aa", 2, list(3, 4));
        let got = idx.get(("v", "t"), "b1", Some("aa")).expect("kept");
        assert_eq!((got.level, got.entries.len()), (2, 3));
        assert!(idx.get(("v", "t"), "b0", Some("aa")).is_none(), "another backup");
        assert!(idx.get(("v", "t"), "b1", Some("bb")).is_none(), "the catalog records another archive");
        assert!(idx.get(("v", "t"), "b1", None).is_none(), "the catalog records no archive sha256");
        assert!(idx.get(("w", "t"), "b1", Some("aa")).is_none(), "another volume");
        assert!(idx.get(("v", "u"), "b1", Some("aa")).is_none(), "another target");
        idx.keep(("v", "u"), "c1", "dd", 0, list(2, 4));
        assert!(idx.get(("v", "t"), "b1", Some("aa")).is_some(), "one list per target");
        idx.keep(("v", "t"), "b2", "cc", 3, list(1, 4));
        assert!(idx.get(("v", "t"), "b1", Some("aa")).is_none(), "replaced by the newer link");
        assert!(idx.get(("v", "t"), "b2", Some("cc")).is_some());
    }

    #[test]
    fn the_lists_stay_within_the_budget_oldest_evicted_first() {
        let idx = LinkIndex::default();
        // Each list a bit over a third of the budget: the third evicts the first.
        let mut probe = list(100, 1000);
        probe.shrink_to_fit();
        let n = BUDGET / 3 / (probe.heap_bytes() / 100) + 10;
        let mut one = list(n, 1000);
        one.shrink_to_fit();
        assert!(3 * one.heap_bytes() > BUDGET && 2 * one.heap_bytes() <= BUDGET, "{}", one.heap_bytes());
        for v in ["a", "b", "c"] {
            idx.keep((v, "t"), "id", "s", 0, one.clone());
        }
        let held = |idx: &LinkIndex| ["a", "b", "c"].map(|v| idx.get((v, "t"), "id", Some("s")).is_some());
        assert_eq!(held(&idx), [false, true, true], "the oldest went first");
        idx.keep(("a", "t"), "id", "s", 0, one);
        assert_eq!(held(&idx), [true, false, true]);
        let total: usize = ["a", "b", "c"]
            .iter()
            .filter_map(|v| idx.get((v, "t"), "id", Some("s")))
            .map(|k| k.entries.heap_bytes())
            .sum();
        assert!(total <= BUDGET, "{total} > {BUDGET}");
        // A list larger than the budget by itself is not kept.
        idx.keep(("c", "t"), "big", "s", 0, list(BUDGET / 1000 + 1, 1000));
        assert!(idx.get(("c", "t"), "big", Some("s")).is_none());
    }
}
