//! The config file (`/etc/voltool/voltool.toml`, TOML) and what [`crate::Daemon::open`] is
//! given. Flags and env vars win over the file; the binary merges them into [`DaemonConfig`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use voltool_backup::TargetConfig;

use crate::backups::{BackupSettings, ConfigSchedule};
use crate::restores::Reserve;

/// Where the config file is looked for when none is given.
pub const DEFAULT_CONFIG: &str = "/etc/voltool/voltool.toml";

/// What reading or checking the config file failed with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A setting that parses but cannot be used; the reason names it.
    #[error("config file: {reason}")]
    Invalid { reason: String },
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub mount_root: Option<PathBuf>,
    pub driver_name: Option<String>,
    pub log: Option<String>,
    /// `log-format = "text"` (default) or `"json"` (one JSON object per line).
    pub log_format: Option<LogFormat>,
    /// The Docker engine's socket (default `/var/run/docker.sock`).
    pub docker_socket: Option<PathBuf>,
    /// `[backup]`: default target, zstd level, threads, concurrency.
    #[serde(default)]
    pub backup: Option<BackupSettings>,
    /// `[targets.NAME]`: named backup targets.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    /// `[schedules.NAME]`: backup schedules for listed volumes.
    #[serde(default)]
    pub schedules: BTreeMap<String, ConfigSchedule>,
    /// `[api]`: who may use the management socket besides root.
    #[serde(default)]
    pub api: ApiConfig,
    /// `[restore]`: what restores leave free.
    #[serde(default)]
    pub restore: RestoreConfig,
    /// `[http]`: the metrics and the status page over TCP.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[monitor]`: how often volumes are measured for the metrics and the status page.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// `[[notify]]`: who is told of failures (webhooks, mail, commands).
    #[serde(default)]
    pub notify: Vec<voltool_notify::NotifyConfig>,
}

/// The `[http]` table: `listen = "127.0.0.1:9323"`, `token = "..."`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpConfig {
    /// Where `/metrics` and the status page `/` are served over TCP (off when absent).
    pub listen: Option<String>,
    /// A bearer token every request must carry (`Authorization: Bearer TOKEN`); required
    /// when `listen` is not a loopback address.
    pub token: Option<String>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The `[monitor]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MonitorConfig {
    /// Time between two measurements of every volume (usage, mounts, servers): `30s`
    /// (default), `5m`.
    pub interval: Option<String>,
}

/// Where and how the TCP endpoint serves, checked.
#[derive(Clone)]
pub struct HttpListen {
    pub addr: std::net::SocketAddr,
    pub token: Option<String>,
}

impl std::fmt::Debug for HttpListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpListen")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl HttpListen {
    /// `addr` (`--http` or `[http] listen`) with `token`, checked: a non-loopback address
    /// needs a token (the page and the metrics name every volume).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an address that does not parse, or a non-loopback one
    /// without a token.
    pub fn new(addr: &str, token: Option<String>) -> Result<Self, ConfigError> {
        let parsed: std::net::SocketAddr = addr.parse().map_err(|_| ConfigError::Invalid {
            reason: format!("[http] listen {addr:?} is not an address and port like 127.0.0.1:9323"),
        })?;
        let token = token.filter(|t| !t.is_empty());
        if !parsed.ip().is_loopback() && token.is_none() {
            return Err(ConfigError::Invalid {
                reason: format!(
                    "[http] listen {addr} is not a loopback address: set [http] token so that not anyone on the network can read it"
                ),
            });
        }
        Ok(Self { addr: parsed, token })
    }
}

impl MonitorConfig {
    /// The interval, parsed (default 30 s; at least 1 s).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a value that is not a duration.
    pub fn interval(&self) -> Result<std::time::Duration, ConfigError> {
        let Some(text) = &self.interval else { return Ok(std::time::Duration::from_secs(30)) };
        let bad =
            || ConfigError::Invalid { reason: format!("[monitor] interval {text:?} is not a duration like 30s or 5m") };
        let t = text.trim();
        let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
        let n: u64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" | "" => n,
            "m" => n.checked_mul(60).ok_or_else(bad)?,
            "h" => n.checked_mul(3600).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        if secs == 0 {
            return Err(bad());
        }
        Ok(std::time::Duration::from_secs(secs))
    }
}

/// How the daemon writes its log lines (`voltool serve --log-format`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one line per event, span fields in front of it.
    #[default]
    Text,
    /// For journald/Loki: one JSON object per line, with the fields of the spans it is in
    /// (e.g. a backup's `id`).
    Json,
}

/// The `[restore]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestoreConfig {
    /// What a restore leaves free on the filesystem it writes to: `5%` or a size (`2GiB`).
    /// Default: 5% of the filesystem, at most 1 GiB, and 5% of its inodes.
    pub reserve: Option<String>,
}

impl RestoreConfig {
    /// The reserve, parsed.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a value that is neither a percentage nor a size.
    pub fn reserve(&self) -> Result<Reserve, ConfigError> {
        match &self.reserve {
            None => Ok(Reserve::default()),
            Some(r) => crate::restores::parse_reserve(r).map_err(|e| ConfigError::Invalid { reason: e.to_string() }),
        }
    }
}

/// The `[api]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiConfig {
    /// Members of this group may use the management socket (mode 0660, this group).
    pub group: Option<String>,
}

impl ConfigFile {
    /// Reads the file at `path`, or [`DEFAULT_CONFIG`] when `None` (a missing default file is
    /// an empty config; a missing file given explicitly is an error).
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Parse`] (unknown keys included).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Self::default()),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path, source: Box::new(e) })
    }

    /// The backup engine's settings: `[backup]` with the targets and schedules, checked.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad setting.
    pub fn backup_settings(&self) -> Result<BackupSettings, ConfigError> {
        let mut s = self.backup.clone().unwrap_or_default();
        s.targets = self.targets.clone();
        s.schedules = self.schedules.clone();
        s.validate().map_err(|e| ConfigError::Invalid { reason: e.to_string() })?;
        Ok(s)
    }
}

/// Everything [`crate::Daemon::open`] needs: the command line merged over the config file.
#[derive(Debug)]
pub struct DaemonConfig {
    /// Where state (SQLite, secrets) and local volume data live.
    pub state_dir: PathBuf,
    /// Where volumes are mounted.
    pub mount_root: PathBuf,
    /// The Docker plugin socket.
    pub plugin_socket: PathBuf,
    /// The management API socket.
    pub api_socket: PathBuf,
    /// The driver name Docker knows this daemon by (shown by `voltool version`).
    pub driver: String,
    pub backup: BackupSettings,
    pub reserve: Reserve,
    /// `[api] group`.
    pub api_group: Option<String>,
    /// The Docker engine's socket, for consistent backups (`backup-consistency`).
    pub docker_socket: PathBuf,
    /// `--http` / `[http]`: the metrics and the status page over TCP.
    pub http: Option<HttpListen>,
    /// `[monitor] interval`.
    pub monitor_interval: std::time::Duration,
    /// `[[notify]]` blocks.
    pub notify: Vec<voltool_notify::NotifyConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_rejects_unknown_keys() {
        let c: ConfigFile =
            toml::from_str("mount-root = \"/mnt/volumes\"\ndriver-name = \"voltool\"\n").expect("parse");
        assert_eq!(c.mount_root.as_deref(), Some(Path::new("/mnt/volumes")));
        assert!(toml::from_str::<ConfigFile>("mountroot = 1").is_err());
        assert!(ConfigFile::load(Some(Path::new("/nonexistent/voltool.toml"))).is_err());
        let c: ConfigFile = toml::from_str(
            r#"
[backup]
default-target = "offsite"
level = 5
identities = ["backup-key"]
[targets.offsite]
url = "s3://bkt/pfx"
endpoint = "http://127.0.0.1:18014"
path-style = true
max-parts = 1000
encrypt-to = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
[schedules.nightly]
volumes = ["db", "web"]
cron = "0 3 * * *"
keep = "daily=7"
verify = true
"#,
        )
        .expect("backup config");
        let s = c.backup_settings().expect("valid");
        assert_eq!(s.level, 5);
        assert_eq!(s.targets["offsite"].max_parts, Some(1000));
        assert_eq!(s.targets["offsite"].encrypt_to.len(), 1);
        assert_eq!(s.identities, ["backup-key"]);
        assert_eq!(s.schedules["nightly"].volumes, ["db", "web"]);
        let bad: ConfigFile = toml::from_str("[backup]\ndefault-target = \"nowhere\"\n").expect("parse");
        let e = bad.backup_settings().expect_err("unknown target").to_string();
        assert!(e.contains("\"nowhere\" is not defined"), "{e}");
        let bad: ConfigFile = toml::from_str("[schedules.x]\nvolumes = [\"a\"]\ncron = \"bad\"\n").expect("parse");
        assert!(bad.backup_settings().is_err());
        let c: ConfigFile =
            toml::from_str("[api]\ngroup = \"voltool\"\n[backup]\nallowed-dirs = [\"/srv/b\"]\n").expect("access keys");
        assert_eq!(c.api.group.as_deref(), Some("voltool"));
        assert_eq!(c.backup_settings().expect("valid").allowed_dirs, Some(vec![PathBuf::from("/srv/b")]));
        assert!(toml::from_str::<ConfigFile>("[api]\nowner = \"x\"\n").is_err());
        let checksums = |value: &str| {
            let text = format!("[targets.old-minio]\nurl = \"s3://bkt/p\"\nchecksums = \"{value}\"\n");
            toml::from_str::<ConfigFile>(&text).expect("parse").backup_settings()
        };
        let s = checksums("when-required").expect("valid");
        assert_eq!(
            s.resolve("old-minio").expect("resolves"),
            voltool_backup::TargetSpec::parse("s3://bkt/p?checksums=when-required").expect("url")
        );
        let e = checksums("crc32").expect_err("a bad checksums value").to_string();
        assert!(
            e.contains("[targets.old-minio]: backup target \"s3://bkt/p\": checksums \"crc32\" must be when-required"),
            "{e}"
        );
        let c: ConfigFile =
            toml::from_str("[http]\nlisten = \"0.0.0.0:9323\"\n[monitor]\ninterval = \"2m\"\n").expect("http");
        assert_eq!(c.monitor.interval().expect("interval"), std::time::Duration::from_secs(120));
        let e = HttpListen::new(c.http.listen.as_deref().expect("listen"), None).expect_err("no token").to_string();
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(HttpListen::new("0.0.0.0:9323", Some("s3cret".into())).is_ok());
        assert!(HttpListen::new("127.0.0.1:9323", None).is_ok());
        assert!(HttpListen::new("localhost", None).is_err());
        let c: ConfigFile = toml::from_str("[http]\ntoken = \"s3cret\"\n").expect("token");
        assert!(!format!("{c:?}").contains("s3cret"), "the token never shows in Debug output");
        assert!(
            toml::from_str::<ConfigFile>("[monitor]\ninterval = \"soon\"\n")
                .expect("parse")
                .monitor
                .interval()
                .is_err()
        );
        let c: ConfigFile = toml::from_str("[restore]\nreserve = \"10%\"\n").expect("restore");
        assert!(c.restore.reserve().is_ok());
        let c: ConfigFile = toml::from_str("[restore]\nreserve = \"lots\"\n").expect("parse");
        assert!(c.restore.reserve().is_err());
    }
}
