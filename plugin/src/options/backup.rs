//! The `backup-*` options of a volume: parsed and kept as written here, their values'
//! grammar (cron schedules, retention policies, target URLs) checked by the backup engine
//! through [`BackupGrammar`], which the daemon passes in: this crate does not know backups.

use serde::{Deserialize, Serialize};

use super::OptionError;

/// A volume's `backup-schedule`, `backup-target`, `backup-keep`, `backup-verify`, `backup-consistency`,
/// `backup-mode`, `backup-full` and `backup-encrypt`, validated
/// and kept as the user wrote them (the backup engine parses them again when it uses them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// A target name from the config file or a target URL; `None`: the default target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
    /// `backup-verify=restore`: after verifying, restore into a scratch volume and check it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore_test: bool,
    /// `backup-consistency`: `none`, or steps around the snapshot (`stop`, `pause`, `hooks`,
    /// `freeze`, comma-combined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// `backup-mode=incremental`: scheduled backups are links of incremental chains.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// `backup-full`: when an incremental chain starts over with a full backup (a cron
    /// schedule, or every N incrementals); `None`: weekly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<String>,
    /// `backup-encrypt`: the public keys (`age1...`, `ssh-ed25519 ...`, comma-separated) the
    /// volume's backups are encrypted to; they win over the target's `encrypt-to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<String>,
}

impl BackupPolicy {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The `backup-*` options whose values have a grammar of the backup engine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKey {
    /// `backup-schedule`: a cron expression or `@daily`-style name.
    Schedule,
    /// `backup-keep`: a retention policy (`last=3,daily=7`).
    Keep,
    /// `backup-target` when it is a URL or path (a name is checked here).
    TargetUrl,
    /// `backup-consistency`: `none|stop|pause|hooks|freeze`, comma-combined.
    Consistency,
    /// `backup-full`: a cron schedule or a number of incrementals.
    Full,
    /// `backup-encrypt`: age recipients, comma-separated.
    Encrypt,
}

impl BackupKey {
    /// The option's name.
    pub fn option(self) -> &'static str {
        match self {
            BackupKey::Schedule => "backup-schedule",
            BackupKey::Keep => "backup-keep",
            BackupKey::TargetUrl => "backup-target",
            BackupKey::Consistency => "backup-consistency",
            BackupKey::Full => "backup-full",
            BackupKey::Encrypt => "backup-encrypt",
        }
    }
}

/// Checks `backup-*` values against the backup engine's grammar. This crate does not know
/// backups: the daemon passes the engine's parsers in ([`crate::VolumeService::with_backup_grammar`]).
pub trait BackupGrammar: Send + Sync {
    /// # Errors
    /// Why `value` is not valid for `key`, shown after `option KEY=VALUE:`.
    fn check(&self, key: BackupKey, value: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Takes every `backup-*` value as written (a volume service without a backup engine).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyBackupValue;

impl BackupGrammar for AnyBackupValue {
    fn check(&self, _: BackupKey, _: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}

/// Checks a parsed [`BackupPolicy`] with `grammar`.
///
/// # Errors
/// [`OptionError::Value`] naming the option, as for any other bad value.
pub fn check_backup_policy(policy: &BackupPolicy, grammar: &dyn BackupGrammar) -> Result<(), OptionError> {
    let values = [
        (BackupKey::Schedule, policy.schedule.as_deref()),
        (BackupKey::Keep, policy.keep.as_deref()),
        (BackupKey::TargetUrl, policy.target.as_deref().filter(|t| is_target_url(t))),
        (BackupKey::Consistency, policy.consistency.as_deref()),
        (BackupKey::Full, policy.full.as_deref()),
        (BackupKey::Encrypt, policy.encrypt.as_deref()),
    ];
    for (key, value) in values {
        if let Some(v) = value {
            grammar.check(key, v).map_err(|e| OptionError::Value {
                key: key.option().into(),
                value: v.into(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// Whether a `backup-target` value is a URL/path (else it names a config-file target).
pub fn is_target_url(v: &str) -> bool {
    v.starts_with('/') || v.contains("://")
}

pub(super) fn parse_key(policy: &mut BackupPolicy, key: &str, v: &str) -> Result<bool, OptionError> {
    let bad = |reason: String| OptionError::Value { key: key.into(), value: v.into(), reason };
    match key {
        "backup-schedule" => policy.schedule = Some(v.trim().to_owned()),
        "backup-keep" => policy.keep = Some(v.trim().to_owned()),
        "backup-consistency" => policy.consistency = Some(v.trim().to_owned()),
        "backup-full" => policy.full = Some(v.trim().to_owned()),
        "backup-mode" => {
            policy.incremental = match v.trim() {
                "full" => false,
                "incremental" => true,
                _ => return Err(bad("valid values: full, incremental".into())),
            }
        }
        "backup-encrypt" => policy.encrypt = Some(v.trim().to_owned()),
        "backup-target" => {
            if !is_target_url(v)
                && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)))
            {
                return Err(bad(
                    "expected a target name from the config file ([targets.NAME]) or a URL: /path, file:///path, s3://bucket/prefix".into(),
                ));
            }
            policy.target = Some(v.to_owned());
        }
        "backup-verify" => {
            policy.verify = match v {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                "restore" => {
                    policy.restore_test = true;
                    true
                }
                _ => return Err(bad("valid values: true, false, restore".into())),
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}
