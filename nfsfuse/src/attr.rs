//! NFSv3 attributes ↔ FUSE attributes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};
use nfs3_client::nfs3_types::nfs3::{fattr3, ftype3, nfstime3, set_atime, set_mtime};

/// FUSE file type of an NFS file type.
pub(crate) fn kind(t: ftype3) -> FileType {
    match t {
        ftype3::NF3REG => FileType::RegularFile,
        ftype3::NF3DIR => FileType::Directory,
        ftype3::NF3BLK => FileType::BlockDevice,
        ftype3::NF3CHR => FileType::CharDevice,
        ftype3::NF3LNK => FileType::Symlink,
        ftype3::NF3SOCK => FileType::Socket,
        ftype3::NF3FIFO => FileType::NamedPipe,
    }
}

/// An NFS time as a `SystemTime` (NFSv3 times are unsigned seconds since the epoch).
pub(crate) fn time(t: &nfstime3) -> SystemTime {
    UNIX_EPOCH + Duration::new(u64::from(t.seconds), t.nseconds.min(999_999_999))
}

/// A `SystemTime` as an NFS time; `EINVAL` outside what NFSv3 can carry (before 1970,
/// after 2106).
pub(crate) fn nfs_time(t: SystemTime) -> Result<nfstime3, Errno> {
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| Errno::EINVAL)?;
    let seconds = u32::try_from(d.as_secs()).map_err(|_| Errno::EINVAL)?;
    Ok(nfstime3 { seconds, nseconds: d.subsec_nanos() })
}

/// The atime change a FUSE setattr asks for.
pub(crate) fn set_atime_of(t: Option<TimeOrNow>) -> Result<set_atime, Errno> {
    Ok(match t {
        None => set_atime::DONT_CHANGE,
        Some(TimeOrNow::Now) => set_atime::SET_TO_SERVER_TIME,
        Some(TimeOrNow::SpecificTime(t)) => set_atime::SET_TO_CLIENT_TIME(nfs_time(t)?),
    })
}

/// The mtime change a FUSE setattr asks for.
pub(crate) fn set_mtime_of(t: Option<TimeOrNow>) -> Result<set_mtime, Errno> {
    Ok(match t {
        None => set_mtime::DONT_CHANGE,
        Some(TimeOrNow::Now) => set_mtime::SET_TO_SERVER_TIME,
        Some(TimeOrNow::SpecificTime(t)) => set_mtime::SET_TO_CLIENT_TIME(nfs_time(t)?),
    })
}

/// A device number in the kernel's `new_encode_dev` layout, which FUSE's 32-bit `rdev`
/// carries.
pub(crate) fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The (major, minor) pair of a `new_encode_dev` device number.
pub(crate) fn decode_dev(rdev: u32) -> (u32, u32) {
    ((rdev & 0xfff00) >> 8, (rdev & 0xff) | ((rdev >> 12) & 0xfff00))
}

/// FUSE attributes of inode `ino` from the server's attributes, unchanged: owner, mode,
/// times and size are exactly what the server reports.
pub(crate) fn file_attr(ino: u64, a: &fattr3, blksize: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.used.div_ceil(512),
        atime: time(&a.atime),
        mtime: time(&a.mtime),
        ctime: time(&a.ctime),
        crtime: time(&a.ctime),
        kind: kind(a.type_),
        perm: u16::try_from(a.mode & 0o7777).unwrap_or(0),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: encode_dev(a.rdev.specdata1, a.rdev.specdata2),
        blksize,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfs3_client::nfs3_types::nfs3::specdata3;

    fn sample() -> fattr3 {
        fattr3 {
            type_: ftype3::NF3REG,
            mode: 0o104750,
            nlink: 2,
            uid: 1000,
            gid: 2000,
            size: 5000,
            used: 8192,
            rdev: specdata3 { specdata1: 0, specdata2: 0 },
            fsid: 9,
            fileid: 1234,
            atime: nfstime3 { seconds: 10, nseconds: 5 },
            mtime: nfstime3 { seconds: 1_700_000_000, nseconds: 123_456_789 },
            ctime: nfstime3 { seconds: 30, nseconds: 0 },
        }
    }

    #[test]
    fn attributes_are_passed_through() {
        let a = file_attr(42, &sample(), 1 << 20);
        assert_eq!((a.ino, a.size, a.blocks, a.nlink, a.uid, a.gid), (INodeNo(42), 5000, 16, 2, 1000, 2000));
        assert_eq!((a.kind, a.perm, a.blksize), (FileType::RegularFile, 0o4750, 1 << 20));
        assert_eq!(a.mtime, UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789));
        assert_eq!(nfs_time(a.mtime).expect("representable"), sample().mtime);
        assert_eq!(a.atime, UNIX_EPOCH + Duration::new(10, 5));
    }

    #[test]
    fn times_outside_nfsv3_are_einval() {
        assert_eq!(nfs_time(UNIX_EPOCH - Duration::from_secs(1)), Err(Errno::EINVAL));
        assert_eq!(nfs_time(UNIX_EPOCH + Duration::from_secs(1 << 33)), Err(Errno::EINVAL));
        assert!(matches!(set_mtime_of(Some(TimeOrNow::Now)), Ok(set_mtime::SET_TO_SERVER_TIME)));
        assert!(matches!(set_atime_of(None), Ok(set_atime::DONT_CHANGE)));
    }

    #[test]
    fn device_numbers_round_trip() {
        for (ma, mi) in [(8, 1), (259, 70000), (0, 0), (4095, 0xfffff)] {
            assert_eq!(decode_dev(encode_dev(ma, mi)), (ma, mi));
        }
        let mut s = sample();
        s.type_ = ftype3::NF3CHR;
        s.rdev = specdata3 { specdata1: 1, specdata2: 3 };
        let a = file_attr(3, &s, 4096);
        assert_eq!((a.kind, a.rdev), (FileType::CharDevice, (1 << 8) | 3));
    }
}
