//! The tar header of one archived entry: the `lstat`/`fstat` fields the archiver keeps, and the
//! ustar fields with pax records for what ustar cannot hold.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::stat::{FileStat, SFlag};
use tar::Header;

/// The largest value the ustar octal fields hold without an extension (size: 8 GiB - 1).
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;
/// The largest uid/gid a ustar header holds in octal.
const USTAR_MAX_ID: u32 = 0o7_777_777;

/// The stat fields the archiver uses.
pub(crate) struct Stat {
    pub kind: SFlag,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
}

impl From<FileStat> for Stat {
    fn from(st: FileStat) -> Self {
        Self {
            kind: SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime,
            mtime_nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
            ctime: st.st_ctime,
            ctime_nsec: u32::try_from(st.st_ctime_nsec).unwrap_or(0),
            dev: st.st_dev,
            ino: st.st_ino,
            nlink: st.st_nlink,
        }
    }
}

/// Sets the ustar fields, moving what does not fit into pax records.
pub(crate) fn fill_header(
    header: &mut Header,
    pax: &mut Vec<(String, Vec<u8>)>,
    rel: &[u8],
    meta: &Stat,
    size: u64,
    link: Option<&[u8]>,
) {
    if header.set_path(Path::new(OsStr::from_bytes(rel))).is_err() {
        pax.push(("path".into(), rel.to_vec()));
        put_truncated(&mut header.as_old_mut().name, rel);
    }
    if let Some(link) = link {
        if link.len() <= 100 && !link.contains(&0) {
            put_truncated(&mut header.as_old_mut().linkname, link);
        } else {
            pax.push(("linkpath".into(), link.to_vec()));
            put_truncated(&mut header.as_old_mut().linkname, link);
        }
    }
    header.set_mode(meta.mode);
    header.set_uid(u64::from(meta.uid));
    header.set_gid(u64::from(meta.gid));
    if meta.uid > USTAR_MAX_ID {
        pax.push(("uid".into(), meta.uid.to_string().into_bytes()));
    }
    if meta.gid > USTAR_MAX_ID {
        pax.push(("gid".into(), meta.gid.to_string().into_bytes()));
    }
    header.set_size(size);
    if size > USTAR_MAX_SIZE {
        pax.push(("size".into(), size.to_string().into_bytes()));
    }
    header.set_mtime(u64::try_from(meta.mtime).unwrap_or(0));
    if meta.mtime < 0 || meta.mtime_nsec != 0 || meta.mtime > USTAR_MAX_SIZE as i64 {
        pax.push(("mtime".into(), pax_time(meta.mtime, meta.mtime_nsec).into_bytes()));
    }
}

/// Copies as much of `src` as fits (leaving room for a NUL) into a header field.
fn put_truncated(dst: &mut [u8], src: &[u8]) {
    dst.fill(0);
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// A pax time value: seconds with an optional 9-digit fraction, correct for negative times.
pub(crate) fn pax_time(sec: i64, nsec: u32) -> String {
    if nsec == 0 {
        sec.to_string()
    } else if sec < 0 {
        // sec + nsec/1e9 lies in (sec, sec + 1): e.g. -2 s + 0.25 s = -1.75.
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(5, 0), "5");
        assert_eq!(pax_time(5, 1), "5.000000001");
        assert_eq!(pax_time(-2, 250_000_000), "-1.750000000");
        assert_eq!(pax_time(-1, 0), "-1");
    }
}
