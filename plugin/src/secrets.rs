//! Secrets (e.g. SMB passwords): one file per secret under `<state dir>/secrets/`, mode
//! 0600 in a 0700 directory, written to a temporary name, fsynced and renamed so a reader
//! never sees half a secret. Values never appear in any message, log or listing; only names
//! do.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::options::validate_name;

/// Largest accepted secret.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Errors of the secret store. None carries a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "invalid secret name {name:?}: use letters, digits, '_', '.', '-' (at most 128), starting with a letter or digit"
    )]
    Name { name: String },
    #[error("secret {name} not found; add it with `voltool secret add {name}` (reads the value from stdin)")]
    NotFound { name: String },
    #[error("secret {name} is empty")]
    Empty { name: String },
    #[error("secret {name} is larger than {MAX_SECRET_BYTES} bytes")]
    TooLarge { name: String },
    #[error("secret store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A secret as listings show it: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    /// RFC 3339 time of the last write.
    pub updated_at: String,
}

/// The store.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io { path: path.to_path_buf(), source }
}

impl SecretStore {
    /// Opens (creating, 0700) the directory.
    ///
    /// # Errors
    /// [`SecretError::Io`].
    pub fn open(dir: &Path) -> Result<Self, SecretError> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        // An existing directory may have been made with looser permissions.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    fn path(&self, name: &str) -> Result<PathBuf, SecretError> {
        validate_name(name).map_err(|_| SecretError::Name { name: name.chars().take(140).collect() })?;
        Ok(self.dir.join(name))
    }

    /// Adds or replaces a secret; returns whether one was replaced.
    ///
    /// # Errors
    /// [`SecretError::Name`], [`SecretError::Empty`], [`SecretError::TooLarge`],
    /// [`SecretError::Io`].
    pub fn add(&self, name: &str, value: &[u8]) -> Result<bool, SecretError> {
        let path = self.path(name)?;
        if value.is_empty() {
            return Err(SecretError::Empty { name: name.into() });
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge { name: name.into() });
        }
        let existed = path.exists();
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
        let written = f.write_all(value).and_then(|()| f.sync_all());
        drop(f);
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(SecretError::Io { path, source: e });
        }
        Ok(existed)
    }

    /// Reads a secret's value (for handing it to the kernel or a client library).
    ///
    /// # Errors
    /// [`SecretError::NotFound`], [`SecretError::Io`].
    pub fn read(&self, name: &str) -> Result<Vec<u8>, SecretError> {
        let path = self.path(name)?;
        std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SecretError::NotFound { name: name.into() }
            } else {
                io(&path)(e)
            }
        })
    }

    /// Whether a secret exists.
    pub fn exists(&self, name: &str) -> bool {
        self.path(name).map(|p| p.is_file()).unwrap_or(false)
    }

    /// All secrets by name.
    ///
    /// # Errors
    /// [`SecretError::Io`].
    pub fn list(&self) -> Result<Vec<SecretInfo>, SecretError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || validate_name(&name).is_err() {
                continue;
            }
            let updated_at = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(time::OffsetDateTime::from)
                .and_then(|t| t.replace_nanosecond(0).ok())
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_default();
            out.push(SecretInfo { name, updated_at });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a secret.
    ///
    /// # Errors
    /// [`SecretError::NotFound`], [`SecretError::Io`].
    pub fn remove(&self, name: &str) -> Result<(), SecretError> {
        let path = self.path(name)?;
        std::fs::remove_file(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SecretError::NotFound { name: name.into() }
            } else {
                io(&path)(e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_read_list_remove_with_private_permissions() {
        let d = tempfile::tempdir().expect("tmp");
        let s = SecretStore::open(&d.path().join("secrets")).expect("open");
        assert!(!s.add("smb", b"hunter2").expect("add"));
        assert!(s.add("smb", b"hunter3").expect("replace"));
        assert_eq!(s.read("smb").expect("read"), b"hunter3");
        let mode = std::fs::metadata(d.path().join("secrets/smb")).expect("md").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(d.path().join("secrets")).expect("md").permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        let names: Vec<_> = s.list().expect("list").into_iter().map(|i| i.name).collect();
        assert_eq!(names, vec!["smb"]);
        s.remove("smb").expect("rm");
        assert!(matches!(s.read("smb"), Err(SecretError::NotFound { .. })));
        assert!(matches!(s.remove("smb"), Err(SecretError::NotFound { .. })));
    }

    #[test]
    fn bad_input_never_echoes_the_value() {
        let d = tempfile::tempdir().expect("tmp");
        let s = SecretStore::open(d.path()).expect("open");
        for name in ["../etc", "a/b", "", ".hidden"] {
            let e = s.add(name, b"topsecret").expect_err("bad name");
            assert!(!e.to_string().contains("topsecret"), "{e}");
        }
        assert!(matches!(s.add("x", b""), Err(SecretError::Empty { .. })));
        let big = vec![b'a'; MAX_SECRET_BYTES + 1];
        assert!(matches!(s.add("x", &big), Err(SecretError::TooLarge { .. })));
        assert!(s.list().expect("list").is_empty());
    }
}
