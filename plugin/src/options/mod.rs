//! Volume names and `-o KEY=VALUE` options: raw strings in, a typed [`VolumeSpec`] out.
//!
//! Parsing follows ripgrep's shape: the raw map is validated once into a typed spec; nothing
//! downstream looks at option strings again. Errors name the option and, for unknown keys,
//! list the valid keys for the volume's type.
//!
//! This file has the entry points ([`parse_full`], [`validate_name`]) and the keys every type
//! shares; one file per concern beside it: the spec's types ([`spec`]), sizes, the `backup-*`
//! keys, the local backing decision, the tmpfs `o=` list, and the nfs and cifs spellings.
//! The fuzz targets (fuzz/fuzz_targets/volume_options.rs) compile this directory as it is, so
//! it uses std, serde and thiserror only, and refers to itself through `super::`.

use std::collections::BTreeMap;

pub mod backup;
pub mod cifs;
mod local;
pub mod nfs;
pub mod olist;
mod size;
pub mod spec;
mod tmpfs;
pub use backup::{AnyBackupValue, BackupGrammar, BackupKey, BackupPolicy, check_backup_policy, is_target_url};
pub use cifs::CifsTarget;
pub use local::resolve_backing;
pub use nfs::NfsTarget;
pub use size::{SizeError, format_size, parse_size};
pub use spec::{Backing, FsType, OnRemove, Owner, QuotaMode, QuotaSupport, TmpfsExtra, VolumeSpec, VolumeType};

/// Longest accepted volume name.
pub const MAX_NAME_LEN: usize = 128;

/// Why an option set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("invalid volume name {name:?}: {reason}")]
    Name { name: String, reason: &'static str },
    #[error("unknown option {key:?} for a {kind} volume; valid options: {valid}")]
    Unknown { key: String, kind: VolumeType, valid: String },
    #[error("invalid value {value:?} for option {key}: {reason}")]
    Value { key: String, value: String, reason: String },
    #[error("unknown volume type {0:?}; valid types: local, tmpfs (nfs and cifs are planned)")]
    Type(String),
    #[error("{0}")]
    Unsupported(String),
}

/// The result of parsing: the spec, the options as they may be stored and shown (an inline
/// password removed), and that password, which the caller moves into a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub spec: VolumeSpec,
    pub stored: BTreeMap<String, String>,
    pub inline_password: Option<String>,
}

/// Checks a volume name against `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 characters.
///
/// # Errors
/// [`OptionError::Name`] saying what is wrong.
pub fn validate_name(name: &str) -> Result<(), OptionError> {
    let bad = |reason| Err(OptionError::Name { name: name.chars().take(MAX_NAME_LEN + 8).collect(), reason });
    let mut chars = name.chars();
    match chars.next() {
        None => return bad("the name is empty"),
        Some(c) if !c.is_ascii_alphanumeric() => return bad("it must start with a letter or digit"),
        Some(_) => {}
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 128 characters");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

pub(super) fn value_err(key: &str, v: &str, reason: &str) -> OptionError {
    OptionError::Value { key: key.into(), value: v.into(), reason: reason.into() }
}

pub(super) fn parse_mode(key: &str, v: &str) -> Result<u32, OptionError> {
    u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| OptionError::Value {
        key: key.into(),
        value: v.into(),
        reason: "expected an octal mode such as 0755 or 1777".into(),
    })
}

pub(super) fn parse_id(key: &str, v: &str) -> Result<u32, OptionError> {
    v.parse::<u32>().ok().filter(|id| *id != u32::MAX).ok_or_else(|| OptionError::Value {
        key: key.into(),
        value: v.into(),
        reason: "expected a numeric id".into(),
    })
}

const COMMON_KEYS: &[&str] = &["type", "size", "uid", "gid", "mode", "on-remove"];
const LOCAL_KEYS: &[&str] = &["quota", "fs"];
const TMPFS_KEYS: &[&str] = &["o", "device"];
const NFS_KEYS: &[&str] = &["addr", "export", "subdir", "vers", "o", "device"];
const CIFS_KEYS: &[&str] = &["share", "username", "domain", "secret", "subdir", "vers", "o", "device"];
/// Keys from the product contract whose features this version does not have yet: refused
/// with a message saying so rather than accepted and silently ignored.
const PLANNED_KEYS: &[&str] = &["share", "username", "domain", "secret"];
const BACKUP_KEYS: &[&str] = &[
    "backup-schedule",
    "backup-target",
    "backup-keep",
    "backup-verify",
    "backup-consistency",
    "backup-mode",
    "backup-full",
    "backup-encrypt",
];

fn valid_keys(kind: VolumeType) -> String {
    let mut keys: Vec<&str> = COMMON_KEYS.to_vec();
    keys.extend_from_slice(match kind {
        VolumeType::Local => LOCAL_KEYS,
        VolumeType::Tmpfs => TMPFS_KEYS,
        VolumeType::Nfs => NFS_KEYS,
        VolumeType::Cifs => CIFS_KEYS,
    });
    keys.extend_from_slice(BACKUP_KEYS);
    keys.join(", ")
}

/// Parses the value `v` of size option `key` (`size`, `o=size`, `o=nr_inodes`).
///
/// # Errors
/// [`OptionError::Value`] naming the option, with the [`SizeError`]'s words.
pub fn size_opt(key: &str, v: &str) -> Result<u64, OptionError> {
    parse_size(v).map_err(|e| OptionError::Value { key: key.into(), value: v.into(), reason: e.to_string() })
}

/// Merges one value into a slot, refusing two different values for the same setting
/// (e.g. `size=16m` and `o=size=32m`).
pub(super) fn set_once<T: PartialEq + Copy>(
    slot: &mut Option<T>,
    key: &str,
    raw: &str,
    v: T,
) -> Result<(), OptionError> {
    match slot {
        Some(old) if *old != v => Err(OptionError::Value {
            key: key.into(),
            value: raw.into(),
            reason: "it conflicts with another option setting the same thing".into(),
        }),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

/// Validates raw `-o` options into a [`VolumeSpec`].
///
/// # Errors
/// [`OptionError`] for an unknown key (listing the valid ones), a bad value, an unknown type
/// or a feature this version does not provide.
pub fn parse_options(opts: &BTreeMap<String, String>) -> Result<VolumeSpec, OptionError> {
    parse_full(opts).map(|p| p.spec)
}

/// Like [`parse_options`], also returning the storable options and an inline password.
///
/// # Errors
/// As [`parse_options`].
pub fn parse_full(opts: &BTreeMap<String, String>) -> Result<Parsed, OptionError> {
    let kind = match opts.get("type").map(|s| s.as_str()) {
        None | Some("local") | Some("") => VolumeType::Local,
        Some("tmpfs") => VolumeType::Tmpfs,
        Some("nfs" | "nfs4") => VolumeType::Nfs,
        Some("cifs" | "smb") => VolumeType::Cifs,
        Some(other) => return Err(OptionError::Type(other.into())),
    };
    let mut spec = VolumeSpec { kind, ..Default::default() };
    let mut nfs = NfsTarget::default();
    let mut cifs = CifsTarget::default();
    let mut password = None;
    let mut stored = opts.clone();
    for (key, v) in opts {
        if kind == VolumeType::Nfs && nfs::parse_key(&mut nfs, key, v)? {
            continue;
        }
        if kind == VolumeType::Cifs
            && let Some(keep) = cifs::parse_key(&mut cifs, &mut password, key, v)?
        {
            stored.insert(key.clone(), keep);
            continue;
        }
        if backup::parse_key(&mut spec.backup, key, v)? {
            continue;
        }
        parse_key(&mut spec, key, v)?;
    }
    if kind == VolumeType::Nfs {
        nfs::finish(&mut nfs, opts.get("type").map(String::as_str) == Some("nfs4"))?;
        spec.nfs = Some(nfs);
    }
    if kind == VolumeType::Cifs {
        cifs::finish(&cifs, password.is_some())?;
        spec.cifs = Some(cifs);
    }
    // Remote data outlives a `docker volume rm` unless asked otherwise.
    if matches!(kind, VolumeType::Nfs | VolumeType::Cifs) && !opts.contains_key("on-remove") {
        spec.on_remove = OnRemove::Retain;
    }
    Ok(Parsed { spec, stored, inline_password: password })
}

/// One key every volume type may have (`size`, `uid`, `on-remove`, ...), or one of the local
/// and tmpfs types; anything else is refused, listing the valid keys for `spec.kind`.
fn parse_key(spec: &mut VolumeSpec, key: &str, v: &str) -> Result<(), OptionError> {
    let kind = spec.kind;
    let network = matches!(kind, VolumeType::Nfs | VolumeType::Cifs);
    match key {
        "type" => {}
        "size" if !network => set_once(&mut spec.size, key, v, size_opt(key, v)?)?,
        "size" => {
            return Err(OptionError::Unsupported(format!(
                "size on a {kind} volume (an image kept on the share) is not in this version of voltool yet"
            )));
        }
        "uid" => set_once(&mut spec.owner.uid, key, v, parse_id(key, v)?)?,
        "gid" => set_once(&mut spec.owner.gid, key, v, parse_id(key, v)?)?,
        "mode" => set_once(&mut spec.owner.mode, key, v, parse_mode(key, v)?)?,
        "quota" if kind == VolumeType::Local => spec.quota = local::parse_quota(key, v)?,
        "fs" if kind == VolumeType::Local => spec.fs = Some(local::parse_fs(key, v)?),
        "on-remove" => spec.on_remove = parse_on_remove(kind, key, v)?,
        "device" if kind == VolumeType::Tmpfs => {
            // Docker's local driver needs `device=tmpfs`; any name is only cosmetic there.
        }
        "o" if kind == VolumeType::Tmpfs => tmpfs::parse_o(v, spec)?,
        k if PLANNED_KEYS.contains(&k) => {
            return Err(OptionError::Unsupported(format!(
                "option {k} is not available in this version of voltool yet; valid options for a {kind} volume: {}",
                valid_keys(kind)
            )));
        }
        _ => return Err(OptionError::Unknown { key: key.to_owned(), kind, valid: valid_keys(kind) }),
    }
    Ok(())
}

/// `on-remove=`: what each volume type can do with its data.
fn parse_on_remove(kind: VolumeType, key: &str, v: &str) -> Result<OnRemove, OptionError> {
    match (v, kind) {
        ("delete", VolumeType::Nfs | VolumeType::Cifs) => Err(OptionError::Unsupported(
            "on-remove=delete for network volumes (deleting the remote directory) is not in this version of voltool yet; they are retained".into(),
        )),
        ("delete", _) => Ok(OnRemove::Delete),
        ("retain", VolumeType::Local | VolumeType::Nfs | VolumeType::Cifs) => Ok(OnRemove::Retain),
        ("retain", VolumeType::Tmpfs) => {
            Err(value_err(key, v, "a tmpfs volume has nothing to retain once unmounted; use delete"))
        }
        ("archive", _) => Ok(OnRemove::Archive),
        _ => Err(value_err(key, v, "valid values: delete, retain, archive")),
    }
}

#[cfg(test)]
mod tests;
