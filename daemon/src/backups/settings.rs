//! The engine's settings: the `[backup]`, `[targets.*]` and `[schedules.*]` parts of the
//! config file, checked once at start ([`BackupSettings::validate`]) so a bad file stops the
//! daemon, and the one place a target reference (a config name or a URL) becomes a
//! [`TargetSpec`] ([`BackupSettings::resolve`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use voltool_backup::retention::{KeepPolicy, RetentionError};
use voltool_backup::schedule::{Schedule, ScheduleError};
use voltool_backup::{CryptError, Recipients, TargetConfig, TargetError, TargetSpec};
use voltool_plugin::options::{OptionError, is_target_url};

/// The `[backup]`, `[targets.*]` and `[schedules.*]` parts of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupSettings {
    /// The target of volumes without `backup-target`: a name or URL. Default:
    /// `<state dir>/backups`.
    #[serde(default)]
    pub default_target: Option<String>,
    /// zstd level (1-19), default 3.
    #[serde(default = "default_level")]
    pub level: i32,
    /// zstd worker threads; 0: one per CPU.
    #[serde(default)]
    pub threads: u32,
    /// Backups that may run at the same time (verifications included).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Directories a `backup-target=` given through Docker may name (and their
    /// subdirectories); default: the default target's directory (see `crate::access`).
    #[serde(default)]
    pub allowed_dirs: Option<Vec<std::path::PathBuf>>,
    /// Secrets (`voltool secret add NAME`) that hold age identities: the private keys that
    /// decrypt encrypted backups for restores, verifications and manifests.
    #[serde(default)]
    pub identities: Vec<String>,
    #[serde(default, skip)]
    pub targets: BTreeMap<String, TargetConfig>,
    #[serde(default, skip)]
    pub schedules: BTreeMap<String, ConfigSchedule>,
}

fn default_level() -> i32 {
    3
}

fn default_concurrency() -> usize {
    2
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            default_target: None,
            level: default_level(),
            threads: 0,
            concurrency: default_concurrency(),
            allowed_dirs: None,
            identities: Vec::new(),
            targets: BTreeMap::new(),
            schedules: BTreeMap::new(),
        }
    }
}

/// A `[schedules.NAME]` table: back these volumes up on this cron schedule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigSchedule {
    pub volumes: Vec<String>,
    pub cron: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub keep: Option<String>,
    #[serde(default)]
    pub verify: bool,
    /// `backup-consistency` for these runs; `None`: each volume's own.
    #[serde(default)]
    pub consistency: Option<String>,
}

/// A target reference that does not lead to a usable target.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A URL or a `[targets.NAME]` table that cannot be used.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A name the config file does not define; `known` lists the names it does.
    #[error(
        "backup target {reference:?} is not defined in the config file ({}); use a [targets.{reference}] table or a URL",
        defined(.known)
    )]
    Undefined { reference: String, known: Vec<String> },
}

fn defined(known: &[String]) -> String {
    if known.is_empty() { "it defines no targets".to_string() } else { format!("defined: {}", known.join(", ")) }
}

/// A bad setting, named by its place in the config file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("[backup] level = {level}: use 1 to 19")]
    Level { level: i32 },
    #[error("[backup] concurrency must be at least 1")]
    Concurrency,
    #[error("[targets.{name}]: {source}")]
    Target { name: String, source: TargetError },
    #[error("[targets.{name}] encrypt-to: {source}")]
    EncryptTo { name: String, source: CryptError },
    #[error("[backup] identities: {source}")]
    Identity { source: OptionError },
    #[error("[backup] default-target: {source}")]
    DefaultTarget { source: ResolveError },
    #[error("[schedules.{name}]: {source}")]
    Schedule { name: String, source: ScheduleProblem },
}

/// What is wrong with one `[schedules.NAME]` table.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleProblem {
    #[error(transparent)]
    Cron(#[from] ScheduleError),
    #[error(transparent)]
    Keep(#[from] RetentionError),
    #[error(transparent)]
    Target(#[from] ResolveError),
    #[error(transparent)]
    Volume(#[from] OptionError),
    #[error("consistency = {value:?}: {source}")]
    Consistency { value: String, source: super::ModeError },
}

impl BackupSettings {
    /// Checks everything that can be checked without a volume: levels, target URLs and
    /// schedule expressions. Called once at start so a bad config file stops the daemon.
    ///
    /// # Errors
    /// A [`SettingsError`] naming the bad setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=19).contains(&self.level) {
            return Err(SettingsError::Level { level: self.level });
        }
        if self.concurrency == 0 {
            return Err(SettingsError::Concurrency);
        }
        for (name, t) in &self.targets {
            TargetSpec::from_config(t).map_err(|source| SettingsError::Target { name: name.clone(), source })?;
            self.target_recipients(name).map_err(|source| SettingsError::EncryptTo { name: name.clone(), source })?;
        }
        for name in &self.identities {
            voltool_plugin::options::validate_name(name).map_err(|source| SettingsError::Identity { source })?;
        }
        if let Some(t) = &self.default_target {
            self.resolve(t).map_err(|source| SettingsError::DefaultTarget { source })?;
        }
        for (name, s) in &self.schedules {
            self.validate_schedule(s).map_err(|source| SettingsError::Schedule { name: name.clone(), source })?;
        }
        Ok(())
    }

    fn validate_schedule(&self, s: &ConfigSchedule) -> Result<(), ScheduleProblem> {
        Schedule::parse(&s.cron)?;
        if let Some(k) = &s.keep {
            KeepPolicy::parse(k)?;
        }
        if let Some(t) = &s.target {
            self.resolve(t)?;
        }
        for v in &s.volumes {
            voltool_plugin::options::validate_name(v)?;
        }
        if let Some(c) = &s.consistency {
            super::Mode::parse(c).map_err(|source| ScheduleProblem::Consistency { value: c.clone(), source })?;
        }
        Ok(())
    }

    /// The recipients a `[targets.NAME]` table encrypts to (`encrypt-to`); `None` for a URL,
    /// an unknown name or a table without them.
    ///
    /// # Errors
    /// [`CryptError::Recipient`] naming the key that is not one.
    pub fn target_recipients(&self, reference: &str) -> Result<Option<Recipients>, CryptError> {
        match self.targets.get(reference) {
            Some(t) if !t.encrypt_to.is_empty() => Recipients::parse(t.encrypt_to.iter().map(String::as_str)).map(Some),
            _ => Ok(None),
        }
    }

    /// Resolves a target reference (config name or URL) to its spec.
    ///
    /// # Errors
    /// [`ResolveError::Target`] for a URL or table that cannot be used,
    /// [`ResolveError::Undefined`] for a name the config file does not define.
    pub fn resolve(&self, reference: &str) -> Result<TargetSpec, ResolveError> {
        if is_target_url(reference) {
            return Ok(TargetSpec::parse(reference)?);
        }
        match self.targets.get(reference) {
            Some(cfg) => Ok(TargetSpec::from_config(cfg)?),
            None => Err(ResolveError::Undefined {
                reference: reference.to_owned(),
                known: self.targets.keys().cloned().collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are what `voltool serve` prints for a bad config file: they stay as they
    /// were when these were strings.
    #[test]
    fn bad_settings_are_named_by_their_place_in_the_config_file() {
        let bad = |f: &dyn Fn(&mut BackupSettings)| {
            let mut s = BackupSettings::default();
            f(&mut s);
            s.validate().expect_err("must be refused").to_string()
        };
        assert_eq!(bad(&|s| s.level = 20), "[backup] level = 20: use 1 to 19");
        assert_eq!(bad(&|s| s.concurrency = 0), "[backup] concurrency must be at least 1");
        assert_eq!(
            bad(&|s| s.default_target = Some("offsite".into())),
            "[backup] default-target: backup target \"offsite\" is not defined in the config file (it defines no targets); use a [targets.offsite] table or a URL"
        );
        let sched = |cron: &str, volume: &str| ConfigSchedule {
            volumes: vec![volume.into()],
            cron: cron.into(),
            target: None,
            keep: None,
            verify: false,
            consistency: None,
        };
        let e = bad(&|s| {
            s.schedules.insert("nightly".into(), sched("not cron", "v"));
        });
        assert!(e.starts_with("[schedules.nightly]: "), "{e}");
        let e = bad(&|s| {
            s.schedules.insert("nightly".into(), sched("@daily", "../x"));
        });
        assert!(e.starts_with("[schedules.nightly]: "), "{e}");
        let e = bad(&|s| {
            let mut bad_mode = sched("@daily", "v");
            bad_mode.consistency = Some("stop,pause".into());
            s.schedules.insert("nightly".into(), bad_mode);
        });
        assert_eq!(e, "[schedules.nightly]: consistency = \"stop,pause\": stop and pause exclude each other");
        let mut ok = BackupSettings::default();
        ok.schedules.insert("nightly".into(), sched("@daily", "v"));
        let mut stop = sched("@daily", "w");
        stop.consistency = Some("hooks,stop".into());
        ok.schedules.insert("consistent".into(), stop);
        ok.validate().expect("valid");
    }

    #[test]
    fn an_undefined_target_lists_the_defined_ones() {
        let mut s = BackupSettings::default();
        s.targets.insert("a".into(), TargetConfig::default());
        s.targets.insert("b".into(), TargetConfig::default());
        let e = s.resolve("c").expect_err("undefined");
        assert!(matches!(&e, ResolveError::Undefined { known, .. } if known == &["a", "b"]), "{e:?}");
        assert!(e.to_string().contains("(defined: a, b)"), "{e}");
        assert!(s.resolve("/srv/backups").is_ok(), "a path is a URL");
    }

    #[test]
    fn encrypt_to_and_identities_are_checked_at_start() {
        let mut s = BackupSettings::default();
        let key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        s.targets.insert(
            "vault".into(),
            TargetConfig { url: "/srv/b".into(), encrypt_to: vec![key.into()], ..TargetConfig::default() },
        );
        s.validate().expect("valid");
        assert_eq!(s.target_recipients("vault").expect("parses").map(|r| r.len()), Some(1));
        assert!(s.target_recipients("/srv/b").expect("a URL").is_none());
        s.targets.get_mut("vault").expect("vault").encrypt_to.push("age1oops".into());
        let e = s.validate().expect_err("bad key").to_string();
        assert!(e.starts_with("[targets.vault] encrypt-to: recipient \"age1oops\""), "{e}");
        let mut s = BackupSettings { identities: vec!["../key".into()], ..BackupSettings::default() };
        assert!(s.validate().expect_err("bad name").to_string().starts_with("[backup] identities: "));
        s.identities = vec!["backup-key".into()];
        s.validate().expect("valid");
    }
}
