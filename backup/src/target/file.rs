//! `file://` targets: a directory. Objects are written to a hidden temporary name in the same
//! directory, fsynced, renamed into place and the directory fsynced (deletions too), so a
//! reader (or a crash) never sees a partial object under its final name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::{Listed, ObjectWriter, Target, TargetError, is_object_name};

/// A directory of backups.
#[derive(Debug, Clone)]
pub struct FileTarget {
    dir: PathBuf,
}

impl FileTarget {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, op: &'static str, path: &Path, source: io::Error) -> TargetError {
        TargetError::Io { target: self.describe(), op, path: path.to_path_buf(), source }
    }

    fn check_name(&self, name: &str) -> Result<(), TargetError> {
        if name.is_empty() || name.starts_with('.') || name.contains('/') {
            return Err(TargetError::Config { target: self.describe(), reason: format!("bad object name {name:?}") });
        }
        Ok(())
    }

    /// The temporary name `name` is written under until it is complete.
    pub fn partial_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.partial"))
    }

    fn start(&self, name: &str) -> Result<(File, PathBuf, PathBuf), TargetError> {
        self.check_name(name)?;
        if !self.dir.is_dir() {
            fs::create_dir_all(&self.dir).map_err(|e| self.io("creating directory", &self.dir, e))?;
            // The new directory's entry in its parent must survive a power cut as well.
            if let Some(parent) = self.dir.parent() {
                sync_dir(parent).map_err(|e| self.io("syncing directory", parent, e))?;
            }
        }
        let tmp = self.partial_path(name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| self.io("creating", &tmp, e))?;
        Ok((file, tmp, self.dir.join(name)))
    }

    fn finish(&self, file: &File, tmp: &Path, dest: &Path) -> Result<(), TargetError> {
        file.sync_all().map_err(|e| self.io("syncing", tmp, e))?;
        fs::rename(tmp, dest).map_err(|e| self.io("renaming into place", dest, e))?;
        sync_dir(&self.dir).map_err(|e| self.io("syncing directory", &self.dir, e))
    }
}

/// fsync of a directory: makes the creations, renames and unlinks in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

impl Target for FileTarget {
    fn describe(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, TargetError> {
        let (file, tmp, dest) = self.start(name)?;
        Ok(Box::new(FileWriter {
            target: self.clone(),
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            dest,
            done: false,
        }))
    }

    fn put_small(&self, name: &str, data: &[u8]) -> Result<(), TargetError> {
        let (mut file, tmp, dest) = self.start(name)?;
        let result = file
            .write_all(data)
            .map_err(|e| self.io("writing", &tmp, e))
            .and_then(|()| self.finish(&file, &tmp, &dest));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, TargetError> {
        self.check_name(name)?;
        let path = self.dir.join(name);
        match File::open(&path) {
            Ok(f) => Ok(Box::new(io::BufReader::with_capacity(1 << 20, f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(TargetError::NotFound { target: self.describe(), name: name.to_owned() })
            }
            Err(e) => Err(self.io("opening", &path, e)),
        }
    }

    fn open_range(&self, name: &str, start: u64, len: u64) -> Result<Box<dyn Read + Send>, TargetError> {
        use std::io::{Seek, SeekFrom};
        self.check_name(name)?;
        let path = self.dir.join(name);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TargetError::NotFound { target: self.describe(), name: name.to_owned() });
            }
            Err(e) => return Err(self.io("opening", &path, e)),
        };
        f.seek(SeekFrom::Start(start)).map_err(|e| self.io("seeking in", &path, e))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 16, f.take(len))))
    }

    fn open_stored(&self, name: &str) -> Result<Box<dyn Read + Send>, TargetError> {
        self.check_name(name)?;
        let path = self.dir.join(name);
        match DirectReader::open(&path) {
            Ok(r) => Ok(Box::new(r)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(TargetError::NotFound { target: self.describe(), name: name.to_owned() })
            }
            Err(e) => Err(self.io("opening", &path, e)),
        }
    }

    /// Regular files only: a symlink in the directory is not listed (a restore must not be led
    /// to read a file elsewhere on this host), nor a subdirectory or a non-UTF-8 name.
    fn list(&self, limit: usize) -> Result<Vec<Listed>, TargetError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io("listing", &self.dir, e)),
        };
        let mut out = Vec::new();
        for (seen, entry) in entries.enumerate() {
            if seen >= limit {
                return Err(TargetError::TooManyObjects { target: self.describe(), limit });
            }
            let entry = entry.map_err(|e| self.io("listing", &self.dir, e))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if !is_object_name(&name) {
                continue;
            }
            // lstat(2): the entry itself, a symlink as a symlink.
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted since the directory was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("checking", &entry.path(), e)),
            };
            if meta.is_file() {
                out.push(Listed { name, size: meta.len() });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn exists(&self, name: &str) -> Result<bool, TargetError> {
        self.check_name(name)?;
        let path = self.dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("checking", &path, e)),
        }
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        self.check_name(name)?;
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            // Durable before the caller's next step: a prune deletes the checksum object first
            // so that a half-deleted backup never looks whole, and relies on that order.
            Ok(()) => sync_dir(&self.dir).map_err(|e| self.io("syncing directory", &self.dir, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("deleting", &path, e)),
        }
    }

    fn cleanup(&self, name: &str, _token: Option<&str>) -> Result<(), TargetError> {
        self.check_name(name)?;
        let tmp = self.partial_path(name);
        match fs::remove_file(&tmp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("deleting", &tmp, e)),
        }
    }
}

struct FileWriter {
    target: FileTarget,
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl FileWriter {
    fn wrap(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.target.describe()))
    }
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self.out.as_mut().ok_or_else(|| io::Error::other("object already finished"))?;
        out.write(buf).map_err(|e| self.wrap(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        let out = self.out.as_mut().ok_or_else(|| io::Error::other("object already finished"))?;
        out.flush().map_err(|e| self.wrap(e))
    }
}

impl ObjectWriter for FileWriter {
    fn token(&self) -> Option<String> {
        None
    }

    fn commit(mut self: Box<Self>) -> Result<u64, TargetError> {
        let out = self.out.take().ok_or_else(|| TargetError::Config {
            target: self.target.describe(),
            reason: "object already finished".into(),
        })?;
        let file = out.into_inner().map_err(|e| self.target.io("writing", &self.tmp, e.into_error()))?;
        let size = file.metadata().map_err(|e| self.target.io("checking", &self.tmp, e))?.len();
        self.target.finish(&file, &self.tmp, &self.dest)?;
        self.done = true;
        Ok(size)
    }

    fn abort(self: Box<Self>) {
        // Drop removes the temporary file.
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.done {
            self.out = None;
            if let Err(e) = fs::remove_file(&self.tmp)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %self.tmp.display(), error = %e, "could not remove a partial backup object");
            }
        }
    }
}

/// The alignment `O_DIRECT` asks of buffers, file offsets and lengths (the largest logical
/// block size in use).
const DIRECT_ALIGN: usize = 4096;
/// Bytes asked of the storage per read (a multiple of [`DIRECT_ALIGN`]).
const DIRECT_CHUNK: usize = 2 << 20;

/// Reads a file with `O_DIRECT`: from the storage, not the page cache. A verification then
/// checks what the disk holds even right after the backup was written (the kernel writes any
/// cached changes out first), and the page cache is neither filled nor copied from. Direct
/// reads get no read-ahead from the kernel, so a thread of its own reads ahead (a few
/// [`DIRECT_CHUNK`]s, recycled): the reader's caller never waits for the disk while there is
/// something read. Where the filesystem refuses `O_DIRECT` (at open or at a read), it reads
/// buffered instead, from the same position.
struct DirectReader {
    /// Chunks read ahead: (buffer, where its aligned part starts, bytes read), or the error.
    ready: mpsc::Receiver<io::Result<(Vec<u8>, usize, usize)>>,
    free: mpsc::Sender<Vec<u8>>,
    /// The chunk being handed out, and what of it is not yet.
    current: Option<(Vec<u8>, std::ops::Range<usize>)>,
    done: bool,
}

/// Chunks read ahead at most.
const DIRECT_AHEAD: usize = 3;

impl DirectReader {
    fn open(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_DIRECT.bits()).open(path);
        let (file, direct) = match direct {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => (File::open(path)?, false),
            Err(e) => return Err(e),
        };
        let (ready_tx, ready) = mpsc::sync_channel(DIRECT_AHEAD);
        let (free, free_rx) = mpsc::channel();
        for _ in 0..DIRECT_AHEAD {
            let _ = free.send(vec![0u8; DIRECT_CHUNK + DIRECT_ALIGN]);
        }
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("direct-read".into())
            .spawn(move || read_ahead(file, direct, &path, &free_rx, &ready_tx))?;
        Ok(Self { ready, free, current: None, done: false })
    }
}

/// The read-ahead thread: fills free buffers until the end of the file, an error, or the
/// reader going away.
fn read_ahead(
    mut file: File,
    mut direct: bool,
    path: &Path,
    free: &mpsc::Receiver<Vec<u8>>,
    ready: &mpsc::SyncSender<io::Result<(Vec<u8>, usize, usize)>>,
) {
    let mut pos = 0u64;
    while let Ok(mut buf) = free.recv() {
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let read = loop {
            match file.read(&mut buf[start..start + DIRECT_CHUNK]) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if direct && e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    // Refused after all (or a short read left the position unaligned):
                    // buffered from here on.
                    let reopened = File::open(path).and_then(|mut f| {
                        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(pos))?;
                        Ok(f)
                    });
                    match reopened {
                        Ok(f) => (file, direct) = (f, false),
                        Err(e) => break Err(e),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let end = matches!(read, Ok(0) | Err(_));
        if let Ok(n) = read {
            pos += n as u64;
        }
        if ready.send(read.map(|n| (buf, start, n))).is_err() || end {
            return;
        }
    }
}

impl Read for DirectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((buf, unread)) = &mut self.current
                && unread.start < unread.end
            {
                let n = out.len().min(unread.len());
                out[..n].copy_from_slice(&buf[unread.start..unread.start + n]);
                unread.start += n;
                return Ok(n);
            }
            if let Some((buf, _)) = self.current.take() {
                let _ = self.free.send(buf);
            }
            if self.done {
                return Ok(0);
            }
            match self.ready.recv() {
                Ok(Ok((_, _, 0))) => self.done = true,
                Ok(Ok((buf, start, n))) => self.current = Some((buf, start..start + n)),
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("the read-ahead thread stopped"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_invisible_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTarget::new(dir.path().join("b"));
        let mut w = t.create("x.tar.zst").unwrap();
        w.write_all(b"hello").unwrap();
        assert!(!t.exists("x.tar.zst").unwrap());
        assert!(t.partial_path("x.tar.zst").exists());
        assert_eq!(w.commit().unwrap(), 5);
        assert!(t.exists("x.tar.zst").unwrap());
        assert!(!t.partial_path("x.tar.zst").exists());
        let mut s = String::new();
        t.open("x.tar.zst").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn stored_reads_give_every_byte_direct_or_not() {
        // On disk (O_DIRECT where the filesystem has it) and on tmpfs (which may refuse it);
        // sizes around the alignment and the read size; files just written (still dirty in
        // the page cache: the kernel writes them out before a direct read).
        let dirs: Vec<tempfile::TempDir> = [std::env::temp_dir(), PathBuf::from("/dev/shm")]
            .iter()
            .filter_map(|base| tempfile::tempdir_in(base).ok())
            .collect();
        for dir in &dirs {
            let t = FileTarget::new(dir.path().to_path_buf());
            for (i, n) in [0usize, 1, 4095, 4096, 4097, DIRECT_CHUNK, DIRECT_CHUNK + 123, 3 * DIRECT_CHUNK - 1]
                .into_iter()
                .enumerate()
            {
                let data: Vec<u8> = (0..n).map(|j| (j * 7 + i) as u8).collect();
                let name = format!("f{i}.tar.zst");
                fs::write(dir.path().join(&name), &data).unwrap();
                let mut r = t.open_stored(&name).unwrap();
                let mut got = Vec::new();
                let mut piece = vec![0u8; 1000 + i * 333];
                loop {
                    let k = r.read(&mut piece).unwrap();
                    if k == 0 {
                        break;
                    }
                    got.extend_from_slice(&piece[..k]);
                }
                assert!(got == data, "{n} bytes in {}", dir.path().display());
            }
            assert!(matches!(t.open_stored("nope"), Err(TargetError::NotFound { .. })));
        }
        assert!(!dirs.is_empty());
    }

    #[test]
    fn a_file_that_refuses_direct_reads_is_read_buffered() {
        // procfs refuses O_DIRECT at open (EINVAL).
        let want = fs::read("/proc/version").unwrap();
        let mut got = Vec::new();
        DirectReader::open(Path::new("/proc/version")).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTarget::new(dir.path().to_path_buf());
        let mut w = t.create("y.tar.zst").unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn small_objects_cleanup_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTarget::new(dir.path().to_path_buf());
        t.put_small("m.json", b"{}").unwrap();
        assert_eq!(t.read_small("m.json", 10).unwrap(), b"{}");
        assert!(matches!(t.read_small("m.json", 1), Err(TargetError::TooLarge { .. })));
        assert!(matches!(t.open("nope"), Err(TargetError::NotFound { .. })));
        fs::write(t.partial_path("z"), b"junk").unwrap();
        t.cleanup("z", None).unwrap();
        assert!(!t.partial_path("z").exists());
        t.delete("m.json").unwrap();
        t.delete("m.json").unwrap();
        assert!(t.create("../evil").is_err());
    }

    #[test]
    fn a_listing_has_the_plain_files_sorted_and_stops_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTarget::new(dir.path().join("b"));
        assert_eq!(t.list(10).unwrap(), [], "a target never written to is empty");
        t.put_small("b.manifest.json", b"{}").unwrap();
        t.put_small("a.tar.zst", b"12345").unwrap();
        fs::write(t.partial_path("c.tar.zst"), b"partial").unwrap();
        fs::create_dir(dir.path().join("b/sub")).unwrap();
        fs::write(dir.path().join("b/sub/d.manifest.json"), b"{}").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("b/e.manifest.json")).unwrap();
        fs::write(dir.path().join("b/f\u{1b}[2J.manifest.json"), b"{}").unwrap();
        let got = t.list(10).unwrap();
        assert_eq!(
            got,
            [Listed { name: "a.tar.zst".into(), size: 5 }, Listed { name: "b.manifest.json".into(), size: 2 }]
        );
        // Six entries: five are too many, whatever is skipped.
        assert!(matches!(t.list(5), Err(TargetError::TooManyObjects { limit: 5, .. })));
        assert_eq!(t.list(6).unwrap().len(), 2);
        let e = t.list(1).unwrap_err().to_string();
        assert!(e.starts_with(&format!("backup target {}: more than 1 entries", t.describe())), "{e}");
    }
}
