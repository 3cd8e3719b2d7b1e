//! Parser for `/proc/<pid>/mountinfo` (format: proc(5), "/proc/pid/mountinfo").
//!
//! Each line is
//! `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
//! mount ID, parent ID, major:minor, root, mount point, mount options, zero or more optional
//! fields ended by a single `-`, filesystem type, source, super options. Paths escape space,
//! tab, newline and backslash as `\ooo` octal.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One mount as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u32,
    pub parent_id: u32,
    pub major_minor: String,
    /// Root of the mount inside its filesystem (for bind mounts, the bound subdirectory).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub options: String,
    /// Optional fields such as `shared:1`, `master:2`, `unbindable`.
    pub optional: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

impl MountInfo {
    /// Whether the mount is a shared peer (`shared:N` optional field).
    pub fn is_shared(&self) -> bool {
        self.optional.iter().any(|f| f.starts_with("shared:"))
    }

    /// Whether `opt` is among the per-mount or super-block options.
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.split(',').chain(self.super_options.split(',')).any(|o| o == opt)
    }
}

/// Decodes the `\ooo` octal escapes the kernel uses in mountinfo paths.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line; `None` for a malformed line.
pub fn parse_line(line: &str) -> Option<MountInfo> {
    let mut it = line.split_ascii_whitespace();
    let mount_id = it.next()?.parse().ok()?;
    let parent_id = it.next()?.parse().ok()?;
    let major_minor = it.next()?.to_string();
    let root = PathBuf::from(unescape(it.next()?));
    let mount_point = PathBuf::from(unescape(it.next()?));
    let options = it.next()?.to_string();
    let mut optional = Vec::new();
    loop {
        let f = it.next()?;
        if f == "-" {
            break;
        }
        optional.push(f.to_string());
    }
    let fs_type = it.next()?.to_string();
    let source = unescape(it.next()?);
    let super_options = it.next().unwrap_or("").to_string();
    Some(MountInfo {
        mount_id,
        parent_id,
        major_minor,
        root,
        mount_point,
        options,
        optional,
        fs_type,
        source,
        super_options,
    })
}

/// Parses a whole mountinfo text, skipping malformed lines.
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

/// Whether any line of a mountinfo text has `target` as its mount point (field 5), without
/// parsing the other fields.
pub fn has_mount_point(text: &str, target: &Path) -> bool {
    let want = target.as_os_str().as_encoded_bytes();
    text.lines()
        .filter_map(|l| l.split_ascii_whitespace().nth(4))
        .any(|mp| if mp.contains('\\') { unescape(mp).as_bytes() == want } else { mp.as_bytes() == want })
}

/// Reads and parses a mountinfo file such as `/proc/self/mountinfo`.
///
/// # Errors
/// [`Error::MountTable`] when the file cannot be read.
pub fn read(path: &Path) -> Result<Vec<MountInfo>> {
    Ok(parse(&read_text(path)?))
}

/// The text of a mountinfo file, read into one large buffer. The kernel takes the mount
/// namespace's lock for every read(2) of it, where every mount and unmount must wait; a small
/// buffer grown by doubling (what `read_to_string` does with procfs, which reports size 0)
/// would make that ten calls instead of two.
///
/// # Errors
/// [`Error::MountTable`] when the file cannot be read.
pub fn read_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let err = |source| Error::MountTable { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Whether `path` (not following a final symlink) is the root of a mount, from statx(2)'s
/// `STATX_ATTR_MOUNT_ROOT`; `Ok(None)` when the kernel does not report that attribute (before
/// Linux 5.8). `AT_STATX_DONT_SYNC` and an empty mask ask nothing of the filesystem's server.
///
/// # Errors
/// The errno of statx(2) (`ENOENT` for a missing path).
#[allow(unsafe_code)]
pub fn statx_mount_root(path: &Path) -> std::result::Result<Option<bool>, nix::errno::Errno> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| nix::errno::Errno::EINVAL)?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC | libc::AT_NO_AUTOMOUNT;
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `stx` is a buffer of
    // the size statx(2) writes; it is read only after the call succeeded (it was zeroed, so
    // fields the kernel left alone read as 0).
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), flags, 0, stx.as_mut_ptr()) };
    if rc != 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: statx(2) succeeded and the buffer was zero-initialised.
    let stx = unsafe { stx.assume_init() };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok((stx.stx_attributes_mask & bit != 0).then_some(stx.stx_attributes & bit != 0))
}

/// The mount whose mount point is the longest prefix of `path` (the mount `path` lives on).
pub fn containing<'a>(table: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    table
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| (m.mount_point.as_os_str().len(), m.mount_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
36 22 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue
40 22 0:50 / /var/lib/voltool/mounts/t1 rw,relatime - tmpfs tmpfs rw,size=16384k,mode=755
41 22 8:1 /var/lib/voltool/volumes/v/data /mnt/volumes/v rw shared:7 unbindable - ext4 /dev/sda1 rw,prjquota
garbage line
";

    #[test]
    fn parses_fields_and_escapes() {
        let t = parse(SAMPLE);
        assert_eq!(t.len(), 4);
        assert_eq!(t[1].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(t[1].optional, vec!["master:1"]);
        assert_eq!(t[2].fs_type, "tmpfs");
        assert_eq!(t[2].super_options, "rw,size=16384k,mode=755");
        assert_eq!(t[3].root, PathBuf::from("/var/lib/voltool/volumes/v/data"));
        assert!(t[3].is_shared());
        assert!(t[3].has_option("prjquota"));
        assert!(!t[2].is_shared());
    }

    #[test]
    fn containing_picks_longest_prefix() {
        let t = parse(SAMPLE);
        let m = containing(&t, Path::new("/mnt/volumes/v/sub/file")).map(|m| m.mount_id);
        assert_eq!(m, Some(41));
        let m = containing(&t, Path::new("/etc/passwd")).map(|m| m.mount_id);
        assert_eq!(m, Some(22));
    }

    #[test]
    fn has_mount_point_matches_parse() {
        for (p, want) in [("/mnt/with space", true), ("/var/lib/voltool/mounts/t1", true), ("/mnt", false), ("/", true)]
        {
            assert_eq!(has_mount_point(SAMPLE, Path::new(p)), want, "{p}");
            assert_eq!(parse(SAMPLE).iter().any(|m| m.mount_point == Path::new(p)), want, "{p}");
        }
    }

    #[test]
    fn trailing_backslash_is_kept() {
        assert_eq!(unescape("a\\"), "a\\");
        assert_eq!(unescape("a\\05"), "a\\05");
        assert_eq!(unescape("\\134x"), "\\x");
    }

    #[test]
    fn statx_sees_mount_roots() {
        let root = statx_mount_root(Path::new("/")).expect("statx /");
        // None only on a kernel older than 5.8.
        if let Some(root) = root {
            assert!(root, "/ is a mount root");
            assert_eq!(statx_mount_root(Path::new("/proc/self")).expect("statx"), Some(false), "a symlink");
            assert_eq!(statx_mount_root(Path::new("/proc")).expect("statx"), Some(true));
            assert_eq!(statx_mount_root(Path::new("/proc/self/fd")).expect("statx"), Some(false));
        }
        assert_eq!(statx_mount_root(Path::new("/no/such/path")), Err(nix::errno::Errno::ENOENT));
    }

    #[test]
    fn reads_own_mountinfo() {
        let t = read(Path::new("/proc/self/mountinfo")).expect("mountinfo readable");
        assert!(t.iter().any(|m| m.mount_point == Path::new("/")));
    }
}
