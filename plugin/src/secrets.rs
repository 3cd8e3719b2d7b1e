//! Secrets (e.g. SMB passwords): one file per secret under `<state dir>/secrets/`, mode
//! 0600 in a 0700 directory, written to a temporary name, fsynced and renamed, and the
//! directory fsynced after the rename, so a reader never sees half a secret and a power cut
//! leaves the old or the new one. Values never appear in any message, log or listing; only
//! names do.
//!
//! **Servers.** Each secret is bound to the servers it may be sent to (`voltool secret add
//! NAME --server HOST`), kept beside it in `.NAME.servers` (a JSON list, 0600, written the
//! same way). [`SecretStore::read_for`] hands a value out only for one of its servers; a
//! secret without servers (made before bindings existed, or added without `--server`) is
//! bound to the first server it is used with, and the log says so. Hosts are compared as
//! written in the volume's options (case-insensitive, IPv6 brackets dropped): voltool does
//! not resolve names for this check, so `srv` and `srv.lan` are different servers.
//!
//! Limitation: replacing a value and its servers at once writes the value first, then the
//! servers; a power cut between the two leaves the new value bound to the old servers.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    #[error(
        "secret {name} already exists with another value; refusing to replace it with the password given in o=password= (use -o secret={name}, or change it with `voltool secret add {name}`)"
    )]
    Exists { name: String },
    #[error("secret {name} may be sent only to {}, not to server {server}; bind it with `voltool secret add {name} --server {server}` if that is intended", servers.join(", "))]
    WrongServer { name: String, server: String, servers: Vec<String> },
    #[error("invalid server {server:?} for secret {name}: expected a host name or IP address")]
    Server { name: String, server: String },
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
    /// The servers it may be sent to; empty: bound to the first server it is used with.
    #[serde(default)]
    pub servers: Vec<String>,
}

/// Whether [`SecretStore::read_for`] found the secret bound already or bound it just now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Bound,
    /// The secret had no servers and is now bound to this one.
    FirstUse,
}

/// The store.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
    /// Serialises read-modify-write of bindings (two creates binding one unbound secret).
    lock: Arc<Mutex<()>>,
}

/// Normalises a server as the binding stores it: lowercase, IPv6 brackets dropped.
fn normalise_server(name: &str, server: &str) -> Result<String, SecretError> {
    let s = server.trim().trim_matches(|c| c == '[' || c == ']').to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
    if ok { Ok(s) } else { Err(SecretError::Server { name: name.into(), server: server.chars().take(260).collect() }) }
}

/// Writes `bytes` to `dir/name` atomically and durably: a 0600 temporary file, fsynced,
/// renamed over the name, then the directory fsynced so the rename survives a power cut
/// (rename(2) is atomic but not durable until the directory is synced, fsync(2)).
fn write_durable(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SecretError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(SecretError::Io { path, source: e });
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), SecretError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
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
        Ok(Self { dir: dir.to_path_buf(), lock: Arc::default() })
    }

    fn servers_file(name: &str) -> String {
        format!(".{name}.servers")
    }

    /// The servers a secret is bound to (empty: none yet).
    fn servers(&self, name: &str) -> Result<Vec<String>, SecretError> {
        let path = self.dir.join(Self::servers_file(name));
        match std::fs::read(&path) {
            // A damaged binding binds to nothing: better refused than sent anywhere.
            Ok(b) => Ok(serde_json::from_slice(&b).unwrap_or_else(|_| vec![String::new()])),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn set_servers(&self, name: &str, servers: &[String]) -> Result<(), SecretError> {
        let json = serde_json::to_vec(servers).map_err(|e| SecretError::Io {
            path: self.dir.join(Self::servers_file(name)),
            source: std::io::Error::other(e),
        })?;
        write_durable(&self.dir, &Self::servers_file(name), &json)
    }

    /// Adds or replaces a secret and, when `servers` is given, replaces its binding with
    /// them (an empty list unbinds it); returns whether one was replaced.
    ///
    /// # Errors
    /// As [`Self::add`], and [`SecretError::Server`] for a bad host.
    pub fn add_bound(&self, name: &str, value: &[u8], servers: Option<&[String]>) -> Result<bool, SecretError> {
        let servers = match servers {
            Some(list) => {
                let mut v = list.iter().map(|s| normalise_server(name, s)).collect::<Result<Vec<_>, _>>()?;
                v.sort();
                v.dedup();
                Some(v)
            }
            None => None,
        };
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let replaced = self.add(name, value)?;
        if let Some(v) = servers {
            self.set_servers(name, &v)?;
        }
        Ok(replaced)
    }

    /// The password of an inline `o=password=` for `server`: stored under `name` unless a
    /// secret of that name exists with another value (never silently replaced; the same
    /// value is fine). A new secret is bound to `server`; an existing one must allow it.
    /// `dry_run` only checks (before anything is sent to the server).
    ///
    /// # Errors
    /// [`SecretError::Exists`], [`SecretError::WrongServer`], as [`Self::add`].
    pub fn add_inline(&self, name: &str, value: &[u8], server: &str, dry_run: bool) -> Result<(), SecretError> {
        let server = normalise_server(name, server)?;
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.read(name) {
            Ok(old) if old != value => Err(SecretError::Exists { name: name.into() }),
            Ok(_) => self.bind(name, &server, dry_run).map(drop),
            Err(SecretError::NotFound { .. }) if dry_run => Ok(()),
            Err(SecretError::NotFound { .. }) => {
                self.add(name, value)?;
                self.set_servers(name, &[server])
            }
            Err(e) => Err(e),
        }
    }

    /// Checks that `server` may receive secret `name`, binding an unbound secret to it
    /// (unless `dry_run`). Call with the lock held.
    fn bind(&self, name: &str, server: &str, dry_run: bool) -> Result<Binding, SecretError> {
        let servers = self.servers(name)?;
        if servers.iter().any(|s| s == server) {
            return Ok(Binding::Bound);
        }
        if !servers.is_empty() {
            return Err(SecretError::WrongServer {
                name: name.into(),
                server: server.into(),
                servers: servers
                    .into_iter()
                    .map(|s| if s.is_empty() { "(damaged binding)".into() } else { s })
                    .collect(),
            });
        }
        if !dry_run {
            self.set_servers(name, &[server.to_string()])?;
            tracing::info!(
                secret = name,
                server,
                "secret had no servers; bound it to the first server it is used with"
            );
        }
        Ok(Binding::FirstUse)
    }

    /// Reads a secret's value for sending it to `server`: only if the secret is bound to that
    /// server (an unbound secret is bound to it now, said in the log).
    ///
    /// # Errors
    /// [`SecretError::WrongServer`] (nothing is read), [`SecretError::NotFound`],
    /// [`SecretError::Server`], [`SecretError::Io`].
    pub fn read_for(&self, name: &str, server: &str) -> Result<Vec<u8>, SecretError> {
        let server = normalise_server(name, server)?;
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // Exists first: a missing secret is not bound to anything.
        let value = self.read(name)?;
        self.bind(name, &server, false)?;
        Ok(value)
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
        write_durable(&self.dir, name, value)?;
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
            let servers = self.servers(&name)?;
            out.push(SecretInfo { name, updated_at, servers });
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
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::remove_file(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SecretError::NotFound { name: name.into() }
            } else {
                io(&path)(e)
            }
        })?;
        // A later secret of the same name starts unbound, not with this one's servers.
        match std::fs::remove_file(self.dir.join(Self::servers_file(name))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
            _ => {}
        }
        sync_dir(&self.dir)
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

    #[test]
    fn a_bound_secret_is_read_only_for_its_servers() {
        let d = tempfile::tempdir().expect("tmp");
        let s = SecretStore::open(d.path()).expect("open");
        s.add_bound("smb", b"pw", Some(&["SRV.lan".into(), "[fd00::1]".into()])).expect("add");
        assert_eq!(s.read_for("smb", "srv.LAN").expect("bound"), b"pw");
        assert_eq!(s.read_for("smb", "fd00::1").expect("v6"), b"pw");
        let e = s.read_for("smb", "evil.example").expect_err("other server");
        assert!(matches!(&e, SecretError::WrongServer { servers, .. } if servers == &["fd00::1", "srv.lan"]), "{e}");
        // A value replaced without --server keeps its servers; with --server they are replaced.
        s.add_bound("smb", b"pw2", None).expect("replace value");
        assert!(s.read_for("smb", "evil.example").is_err());
        s.add_bound("smb", b"pw2", Some(&["evil.example".into()])).expect("rebind");
        assert!(s.read_for("smb", "srv.lan").is_err());
        assert_eq!(s.list().expect("ls")[0].servers, ["evil.example"]);
        assert!(matches!(s.add_bound("x", b"v", Some(&["a b".into()])), Err(SecretError::Server { .. })));
        // Removing a secret drops its binding too.
        s.remove("smb").expect("rm");
        s.add("smb", b"pw3").expect("add again");
        assert!(s.list().expect("ls")[0].servers.is_empty());
    }

    #[test]
    fn an_unbound_secret_is_bound_to_the_first_server_it_is_used_with() {
        let d = tempfile::tempdir().expect("tmp");
        let s = SecretStore::open(d.path()).expect("open");
        s.add("old", b"pw").expect("add");
        assert_eq!(s.read_for("old", "first.lan").expect("first use"), b"pw");
        assert!(matches!(s.read_for("old", "second.lan"), Err(SecretError::WrongServer { .. })));
        assert_eq!(s.list().expect("ls")[0].servers, ["first.lan"]);
        let mode = std::fs::metadata(d.path().join(".old.servers")).expect("md").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A damaged binding binds to nothing.
        std::fs::write(d.path().join(".old.servers"), b"{not json").expect("damage");
        assert!(matches!(s.read_for("old", "first.lan"), Err(SecretError::WrongServer { .. })));
    }

    #[test]
    fn an_inline_password_never_replaces_another_value() {
        let d = tempfile::tempdir().expect("tmp");
        let s = SecretStore::open(d.path()).expect("open");
        s.add_inline("v-password", b"a,b", "srv", true).expect("dry run of a new one");
        assert!(!s.exists("v-password"), "a dry run writes nothing");
        s.add_inline("v-password", b"a,b", "srv", false).expect("new");
        assert_eq!(s.read_for("v-password", "srv").expect("bound to srv"), b"a,b");
        s.add_inline("v-password", b"a,b", "srv", false).expect("same value is fine");
        let e = s.add_inline("v-password", b"zz-new", "srv", true).expect_err("other value");
        assert!(matches!(e, SecretError::Exists { .. }), "{e}");
        assert!(!e.to_string().contains("zz-new"), "{e}");
        assert!(matches!(s.add_inline("v-password", b"a,b", "evil", true), Err(SecretError::WrongServer { .. })));
        assert_eq!(s.read("v-password").expect("unchanged"), b"a,b");
    }
}
