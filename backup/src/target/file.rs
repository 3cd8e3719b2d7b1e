//! `file://` targets: a directory. Objects are written to a hidden temporary name in the same
//! directory, fsynced, renamed into place and the directory fsynced, so a reader (or a crash)
//! never sees a partial object under its final name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{ObjectWriter, Target, TargetError};

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
        fs::create_dir_all(&self.dir).map_err(|e| self.io("creating directory", &self.dir, e))?;
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
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| self.io("syncing directory", &self.dir, e))
    }
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
            Ok(()) => Ok(()),
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
}
