//! What a restore leaves free on the filesystem it writes to (`[restore] reserve` in the
//! daemon's config): a share of the filesystem's size or a number of bytes, and always a share
//! of its inodes (5% by default), so that a restore that would fill the disk (or use up every
//! inode with a million empty files) is refused before it does, not after.
//!
//! Reading the setting from text is the caller's (the daemon parses `5%` or `1GiB` with the
//! volume options' size grammar); this is the policy and the `fstatvfs(2)` it is applied to.

use voltool_runtime::fsat::Dir;

use crate::extract::Space;

/// What a restore leaves free on the filesystem it writes to: a share of its size or a number
/// of bytes; inodes always keep the same share (5% by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reserve {
    /// A share of the filesystem's size (and of its inodes), at most `cap` bytes.
    Share {
        fraction: f64,
        cap: Option<u64>,
    },
    Bytes(u64),
}

impl Default for Reserve {
    /// 5% of the filesystem, at most 1 GiB (and 5% of its inodes).
    fn default() -> Self {
        Reserve::Share { fraction: 0.05, cap: Some(1 << 30) }
    }
}

/// The share of inodes kept free when the reserve is a number of bytes.
const INODE_SHARE: f64 = 0.05;

impl Reserve {
    /// The room a restore into `root`'s filesystem may take: its free bytes and inodes less
    /// the reserve. `own_limit`: the volume has a size limit of its own (an image, a project
    /// quota, tmpfs), which bounds its bytes already: then only what is free is counted.
    ///
    /// # Errors
    /// The `fstatvfs(2)` error.
    pub fn space(self, root: &Dir, own_limit: bool) -> std::io::Result<Space> {
        // fstatvfs(2) on the open root: the filesystem the restore writes to, whatever is
        // mounted over the path meanwhile.
        let st = nix::sys::statvfs::fstatvfs(root).map_err(std::io::Error::from)?;
        let frsize = st.fragment_size().max(1);
        let (total, free) = (st.blocks().saturating_mul(frsize), st.blocks_available().saturating_mul(frsize));
        Ok(self.room(Fs { total, free, itotal: st.files(), ifree: st.files_available() }, own_limit))
    }

    /// [`Self::space`] from a filesystem's numbers: pure, for tests.
    fn room(self, fs: Fs, own_limit: bool) -> Space {
        let (keep, ikeep) = match self {
            _ if own_limit => (0, 0),
            Reserve::Share { fraction, cap } => {
                let b = (fs.total as f64 * fraction) as u64;
                (cap.map_or(b, |c| b.min(c)), (fs.itotal as f64 * fraction) as u64)
            }
            Reserve::Bytes(b) => (b, (fs.itotal as f64 * INODE_SHARE) as u64),
        };
        // Filesystems without an inode count (btrfs says 0) are bounded by bytes alone.
        let inodes = if fs.itotal == 0 { u64::MAX } else { fs.ifree.saturating_sub(ikeep) };
        Space { bytes: fs.free.saturating_sub(keep), inodes }
    }
}

/// A filesystem's size and what is free of it: bytes and inodes.
#[derive(Debug, Clone, Copy)]
struct Fs {
    total: u64,
    free: u64,
    itotal: u64,
    ifree: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_reserve_is_taken_from_what_is_free() {
        let fs = Fs { total: 100 * GIB, free: 10 * GIB, itotal: 1000, ifree: 500 };
        // 5% of 100 GiB is 5 GiB, capped at 1 GiB; 5% of the inodes.
        let d = Reserve::default().room(fs, false);
        assert_eq!((d.bytes, d.inodes), (9 * GIB, 450));
        let s = Reserve::Share { fraction: 0.05, cap: None }.room(fs, false);
        assert_eq!((s.bytes, s.inodes), (5 * GIB, 450));
        let b = Reserve::Bytes(GIB / 2).room(fs, false);
        assert_eq!((b.bytes, b.inodes), (10 * GIB - GIB / 2, 450));
        // More reserved than free: nothing may be taken.
        assert_eq!(Reserve::Bytes(20 * GIB).room(fs, false).bytes, 0);
        // A volume with its own size limit: only what is free counts.
        let own = Reserve::default().room(fs, true);
        assert_eq!((own.bytes, own.inodes), (10 * GIB, 500));
        // No inode count (btrfs): bounded by bytes alone.
        let btrfs = Fs { itotal: 0, ifree: 0, ..fs };
        assert_eq!(Reserve::default().room(btrfs, false).inodes, u64::MAX);
    }

    #[test]
    fn the_space_of_a_real_filesystem_is_at_most_what_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let root = Dir::open(dir.path()).unwrap();
        let all = Reserve::Bytes(0).space(&root, true).unwrap();
        let some = Reserve::default().space(&root, false).unwrap();
        assert!(some.bytes <= all.bytes && some.inodes <= all.inodes, "{some:?} {all:?}");
    }
}
