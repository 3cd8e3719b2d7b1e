//! The backup engine's grammar for the `backup-*` volume options, given to the volume
//! service so a volume with a bad schedule, policy or target URL is refused at create.

use voltool_backup::retention::KeepPolicy;
use voltool_backup::schedule::Schedule;
use voltool_backup::{Recipients, TargetSpec};
use voltool_plugin::options::{BackupGrammar, BackupKey};

/// Parses values with the engine's own parsers ([`Schedule`], [`KeepPolicy`], [`TargetSpec`],
/// [`Recipients`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineGrammar;

impl BackupGrammar for EngineGrammar {
    fn check(&self, key: BackupKey, value: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match key {
            BackupKey::Schedule => Schedule::parse(value).map(drop).map_err(Into::into),
            BackupKey::Keep => KeepPolicy::parse(value).map(drop).map_err(Into::into),
            BackupKey::TargetUrl => TargetSpec::parse(value).map(drop).map_err(Into::into),
            BackupKey::Consistency => crate::backups::Mode::parse(value).map(drop).map_err(Into::into),
            BackupKey::Full => voltool_backup::incremental::FullEvery::parse(value).map(drop).map_err(Into::into),
            BackupKey::Encrypt => Recipients::parse_list(value).map(drop).map_err(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use voltool_plugin::options::{check_backup_policy, parse_options};

    use super::*;

    fn check(k: &str, v: &str) -> Result<(), voltool_plugin::options::OptionError> {
        let opts: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
        check_backup_policy(&parse_options(&opts)?.backup, &EngineGrammar)
    }

    /// Moved from the plugin's option tests when the grammar moved out of the plugin.
    #[test]
    fn bad_backup_values_are_refused_naming_the_option() {
        for (k, v, want) in [
            ("backup-schedule", "61 * * * *", "option backup-schedule"),
            ("backup-schedule", "* * *", "option backup-schedule"),
            ("backup-keep", "daily=x", "option backup-keep"),
            ("backup-keep", "yearly=1", "option backup-keep"),
            ("backup-target", "gs://b/x", "unsupported scheme"),
            ("backup-consistency", "stop,pause", "stop and pause exclude each other"),
            ("backup-consistency", "snapshot", "valid: none, stop, pause, hooks, freeze"),
            ("backup-full", "0", "a number of incrementals from 1"),
            ("backup-full", "weekly", "option backup-full"),
            ("backup-mode", "differential", "valid values: full, incremental"),
            ("backup-encrypt", "age1notakey", "option backup-encrypt: recipient \"age1notakey\": not a valid age1"),
            ("backup-encrypt", "ssh-rsa AAAA x", "only ssh-ed25519"),
        ] {
            let e = check(k, v).expect_err(v).to_string();
            assert!(e.contains(want), "{k}={v}: {e}");
        }
        for (k, v) in [
            ("backup-schedule", "0 3 * * *"),
            ("backup-keep", "last=3,daily=7"),
            ("backup-target", "offsite"),
            ("backup-target", "/srv/backups"),
            ("backup-target", "s3://bucket/prefix"),
            ("backup-consistency", "hooks,stop"),
            ("backup-consistency", "freeze"),
            ("backup-consistency", "none"),
            ("backup-full", "6"),
            ("backup-full", "@weekly"),
            ("backup-full", "0 3 * * 0"),
            ("backup-mode", "incremental"),
            ("backup-encrypt", "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"),
            (
                "backup-encrypt",
                "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p, ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhPcKjnBnC/SGCOEbjB+T91i9gGOtEE7utxjUuup4qy x",
            ),
        ] {
            assert!(check(k, v).is_ok(), "{k}={v}");
        }
    }
}
