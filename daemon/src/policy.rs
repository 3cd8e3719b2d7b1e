//! Which backup targets volume options given through Docker may name.
//!
//! Whoever may call Docker's API may create volumes, so a `backup-target=` from Docker may name only a target defined in
//! the config file (`[targets.NAME]`) or a directory under `[backup] allowed-dirs` (default:
//! the default target's directory); S3 URLs (and so their endpoints) only come from the
//! config file. Paths are compared lexically, component by component, and a path with `.`
//! or `..` components is refused; the allowed directories are the administrator's, so a
//! symlink inside them is theirs too. The management API (root or the group) may still give
//! any target; Docker repeating the create of such a volume with exactly its options is
//! accepted (it names nothing new, and is how Docker learns of the volume).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use voltool_backup::{TargetConfig, TargetSpec};
use voltool_plugin::options::{OptionError, is_target_url};

use crate::access::AccessError;

/// Which backup targets volume options from Docker may name.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    names: BTreeSet<String>,
    dirs: Vec<PathBuf>,
}

fn plain_absolute(p: &Path) -> bool {
    p.is_absolute() && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

impl TargetPolicy {
    /// The config file's targets, and `allowed_dirs` or (when not set) the directory of the
    /// default target if that is a directory.
    ///
    /// # Errors
    /// [`AccessError::AllowedDir`] for a relative path or one with `.`/`..`.
    pub fn new(
        targets: &BTreeMap<String, TargetConfig>,
        allowed_dirs: Option<&[PathBuf]>,
        default_target: &str,
    ) -> Result<Self, AccessError> {
        let dirs = match allowed_dirs {
            Some(dirs) => {
                for d in dirs {
                    if !plain_absolute(d) {
                        return Err(AccessError::AllowedDir { path: d.clone() });
                    }
                }
                dirs.to_vec()
            }
            None => {
                let spec = if is_target_url(default_target) {
                    TargetSpec::parse(default_target).ok()
                } else {
                    targets.get(default_target).and_then(|c| TargetSpec::from_config(c).ok())
                };
                match spec {
                    Some(TargetSpec::File(p)) if plain_absolute(&p) => vec![p],
                    _ => Vec::new(),
                }
            }
        };
        Ok(Self { names: targets.keys().cloned().collect(), dirs })
    }

    /// Checks the `backup-target` of options given through Docker.
    ///
    /// # Errors
    /// [`OptionError::Value`] saying what Docker may name instead.
    pub fn check(&self, opts: &BTreeMap<String, String>) -> Result<(), OptionError> {
        let Some(v) = opts.get("backup-target") else { return Ok(()) };
        let refuse = |reason: String| OptionError::Value { key: "backup-target".into(), value: v.clone(), reason };
        let allowed = || {
            let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
            let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            format!(
                "through Docker a volume may name a target from the config file ({}) or a directory under [backup] allowed-dirs ({}); the voltool CLI (root or the [api] group) may give any",
                if names.is_empty() { "none defined".into() } else { names.join(", ") },
                if dirs.is_empty() { "none".into() } else { dirs.join(", ") }
            )
        };
        if !is_target_url(v) {
            return if self.names.contains(v) {
                Ok(())
            } else {
                Err(refuse(format!("no target {v:?} in the config file; {}", allowed())))
            };
        }
        match TargetSpec::parse(v) {
            Ok(TargetSpec::File(p)) if plain_absolute(&p) && self.dirs.iter().any(|d| p.starts_with(d)) => Ok(()),
            Ok(TargetSpec::File(_)) => {
                Err(refuse(format!("the directory is not under [backup] allowed-dirs; {}", allowed())))
            }
            Ok(TargetSpec::S3(_)) => Err(refuse(format!(
                "S3 targets (and their endpoints) come only from the config file ([targets.NAME]); {}",
                allowed()
            ))),
            Err(e) => Err(refuse(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(target: &str) -> BTreeMap<String, String> {
        [("backup-target".to_string(), target.to_string())].into()
    }

    #[test]
    fn docker_may_name_config_targets_and_allowed_dirs_only() {
        let mut targets = BTreeMap::new();
        targets.insert(
            "offsite".to_string(),
            TargetConfig { url: "s3://b/p".into(), endpoint: Some("http://127.0.0.1:1".into()), ..Default::default() },
        );
        let p = TargetPolicy::new(&targets, Some(&[PathBuf::from("/srv/backups")]), "offsite").expect("policy");
        for ok in ["offsite", "/srv/backups", "/srv/backups/db", "file:///srv/backups/x"] {
            assert_eq!(p.check(&opts(ok)), Ok(()), "{ok}");
        }
        assert_eq!(p.check(&BTreeMap::new()), Ok(()), "no backup-target: the default");
        for (bad, needle) in [
            ("/somewhere/else", "not under [backup] allowed-dirs"),
            ("/srv/backupsX", "not under"),
            ("s3://evil/p?endpoint=http://10.0.0.1:9000", "only from the config file"),
            ("s3://bucket/p", "only from the config file"),
            ("nosuch", "no target \"nosuch\""),
        ] {
            let e = p.check(&opts(bad)).expect_err(bad).to_string();
            assert!(e.contains(needle) && e.contains("offsite") && e.contains("/srv/backups"), "{bad}: {e}");
        }
        assert!(p.check(&opts("/srv/backups/../../etc")).is_err(), "no way out with ..");
    }

    #[test]
    fn allowed_dirs_default_to_the_default_targets_directory() {
        let p = TargetPolicy::new(&BTreeMap::new(), None, "/var/lib/voltool/backups").expect("policy");
        assert_eq!(p.check(&opts("/var/lib/voltool/backups/x")), Ok(()));
        assert!(p.check(&opts("/var/lib/voltool")).is_err());
        let s3_default = TargetPolicy::new(&BTreeMap::new(), None, "s3://b/p").expect("policy");
        assert!(s3_default.check(&opts("/anything")).is_err(), "no directory allowed");
        assert!(TargetPolicy::new(&BTreeMap::new(), Some(&[PathBuf::from("rel")]), "x").is_err());
        assert!(TargetPolicy::new(&BTreeMap::new(), Some(&[PathBuf::from("/a/../b")]), "x").is_err());
    }
}
