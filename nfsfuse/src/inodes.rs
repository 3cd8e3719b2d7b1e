//! The inode table: FUSE inode numbers ↔ NFS file handles, with the kernel's lookup counts.
//!
//! Inode 1 is the volume root (export + subdir) and is never forgotten. Any other file gets
//! its NFS `fileid` as inode number when that number is free (so `stat` shows the server's
//! inode numbers), or a number from a synthetic range when it is not (0, 1, a collision
//! across server filesystems). Entries are keyed by file handle both ways: two names of one
//! file (hard links) share an inode. An entry lives while the kernel holds lookup references
//! to it: every reply that hands the kernel an entry adds one, `forget` removes them.

use std::collections::HashMap;

use nfs3_client::nfs3_types::nfs3::nfs_fh3;

/// The FUSE inode number of the volume root.
pub(crate) const ROOT_INO: u64 = 1;
/// First inode number handed out when a file's `fileid` cannot be used.
const SYNTHETIC_BASE: u64 = 1 << 63;

#[derive(Debug)]
struct Node {
    fh: nfs_fh3,
    /// Lookup references the kernel holds.
    nlookup: u64,
    /// Last mode bits seen from the server (used for setgid-directory inheritance).
    mode: u32,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct InodeTable {
    by_ino: HashMap<u64, Node>,
    by_fh: HashMap<Vec<u8>, u64>,
    next_synthetic: u64,
}

impl InodeTable {
    /// A table holding only the root.
    pub(crate) fn new(root: nfs_fh3, root_mode: u32) -> Self {
        let mut t = Self { by_ino: HashMap::new(), by_fh: HashMap::new(), next_synthetic: SYNTHETIC_BASE };
        t.by_fh.insert(root.data.to_vec(), ROOT_INO);
        t.by_ino.insert(ROOT_INO, Node { fh: root, nlookup: 1, mode: root_mode });
        t
    }

    /// The file handle of `ino`, if the kernel may still use it.
    pub(crate) fn fh(&self, ino: u64) -> Option<nfs_fh3> {
        self.by_ino.get(&ino).map(|n| n.fh.clone())
    }

    /// The inode number of `fh` without taking a reference, if it is known.
    pub(crate) fn peek(&self, fh: &nfs_fh3) -> Option<u64> {
        self.by_fh.get(fh.data.as_ref()).copied()
    }

    /// The last mode seen for `ino`.
    pub(crate) fn mode(&self, ino: u64) -> Option<u32> {
        self.by_ino.get(&ino).map(|n| n.mode)
    }

    /// Records fresh attributes' mode for a known inode.
    pub(crate) fn set_mode(&mut self, ino: u64, mode: u32) {
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.mode = mode;
        }
    }

    /// The inode for `fh` (with server `fileid`), adding one lookup reference: call it for
    /// every entry handed to the kernel (lookup, create, mkdir, mknod, symlink, link).
    pub(crate) fn intern(&mut self, fh: &nfs_fh3, fileid: u64, mode: u32) -> u64 {
        if let Some(&ino) = self.by_fh.get(fh.data.as_ref()) {
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.mode = mode;
                if ino != ROOT_INO {
                    n.nlookup += 1;
                }
            }
            return ino;
        }
        let ino = if fileid > ROOT_INO && fileid < SYNTHETIC_BASE && !self.by_ino.contains_key(&fileid) {
            fileid
        } else {
            loop {
                let candidate = self.next_synthetic;
                self.next_synthetic = self.next_synthetic.checked_add(1).unwrap_or(SYNTHETIC_BASE);
                if !self.by_ino.contains_key(&candidate) {
                    break candidate;
                }
            }
        };
        self.by_fh.insert(fh.data.to_vec(), ino);
        self.by_ino.insert(ino, Node { fh: fh.clone(), nlookup: 1, mode });
        ino
    }

    /// Drops `n` lookup references; the entry goes when none are left. The root stays.
    pub(crate) fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let gone = match self.by_ino.get_mut(&ino) {
            Some(node) => {
                node.nlookup = node.nlookup.saturating_sub(n);
                node.nlookup == 0
            }
            None => false,
        };
        if gone && let Some(node) = self.by_ino.remove(&ino) {
            self.by_fh.remove(node.fh.data.as_ref());
        }
    }

    /// Number of inodes known (root included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_ino.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfs3_client::nfs3_types::xdr_codec::Opaque;

    fn fh(b: &[u8]) -> nfs_fh3 {
        nfs_fh3 { data: Opaque::owned(b.to_vec()) }
    }

    #[test]
    fn root_is_one_and_never_forgotten() {
        let mut t = InodeTable::new(fh(b"root"), 0o40755);
        assert_eq!(t.fh(ROOT_INO), Some(fh(b"root")));
        assert_eq!(t.intern(&fh(b"root"), 77, 0o40700), ROOT_INO, "the root's handle maps to inode 1");
        assert_eq!(t.mode(ROOT_INO), Some(0o40700));
        t.forget(ROOT_INO, 1_000);
        assert_eq!(t.fh(ROOT_INO), Some(fh(b"root")));
    }

    #[test]
    fn fileid_is_used_when_free_and_synthetic_otherwise() {
        let mut t = InodeTable::new(fh(b"root"), 0o40755);
        assert_eq!(t.intern(&fh(b"a"), 100, 0o100644), 100);
        // Same handle again: same inode (hard links, repeated lookups).
        assert_eq!(t.intern(&fh(b"a"), 100, 0o100644), 100);
        // Another handle claiming a taken fileid (another server fs), fileid 0 and 1.
        let b = t.intern(&fh(b"b"), 100, 0o100644);
        let c = t.intern(&fh(b"c"), 0, 0o100644);
        let d = t.intern(&fh(b"d"), 1, 0o100644);
        assert!(b >= SYNTHETIC_BASE && c >= SYNTHETIC_BASE && d >= SYNTHETIC_BASE);
        assert!(b != c && c != d && b != d);
        assert_eq!(t.peek(&fh(b"c")), Some(c));
        assert_eq!(t.fh(b), Some(fh(b"b")));
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn forget_counts_lookups() {
        let mut t = InodeTable::new(fh(b"root"), 0o40755);
        let a = t.intern(&fh(b"a"), 5, 0o100644);
        t.intern(&fh(b"a"), 5, 0o100600);
        t.intern(&fh(b"a"), 5, 0o100600);
        assert_eq!(t.mode(a), Some(0o100600));
        t.forget(a, 2);
        assert_eq!(t.fh(a), Some(fh(b"a")), "one reference left");
        t.forget(a, 1);
        assert_eq!((t.fh(a), t.peek(&fh(b"a"))), (None, None));
        t.forget(a, 1); // unknown inode: ignored
        // The number is free again; a new file with that fileid gets it.
        assert_eq!(t.intern(&fh(b"z"), 5, 0o100644), 5);
        t.set_mode(5, 0o100444);
        assert_eq!(t.mode(5), Some(0o100444));
        assert_eq!(t.len(), 2);
    }
}
