//! Volume names and `-o KEY=VALUE` options: raw strings in, a typed [`VolumeSpec`] out.
//!
//! Parsing follows ripgrep's shape: the raw map is validated once into a typed spec; nothing
//! downstream looks at option strings again. Errors name the option and, for unknown keys,
//! list the valid keys for the volume's type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod cifs;
pub mod nfs;
pub mod olist;
pub use cifs::CifsTarget;
pub use nfs::NfsTarget;

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

/// The kind of storage behind a volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    #[default]
    Local,
    Tmpfs,
    Nfs,
    Cifs,
}

impl std::fmt::Display for VolumeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VolumeType::Local => "local",
            VolumeType::Tmpfs => "tmpfs",
            VolumeType::Nfs => "nfs",
            VolumeType::Cifs => "cifs",
        })
    }
}

/// Owner and mode of a volume's root directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

/// Mount flags a tmpfs volume may ask for through the local-driver `o=` option.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsExtra {
    pub nr_inodes: Option<u64>,
    pub noexec: bool,
    /// `o=exec`/`o=suid`/`o=dev` lift voltool's safe defaults (nosuid, nodev).
    pub suid: bool,
    pub dev: bool,
    pub noatime: bool,
    pub ro: bool,
}

/// How a size limit is enforced (`quota=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaMode {
    /// Project quota where the state dir's filesystem supports it, else an image file.
    #[default]
    Auto,
    Project,
    Image,
    None,
}

/// Filesystem inside an image-backed volume (`fs=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    #[default]
    Ext4,
    Xfs,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// Smallest image mkfs accepts for this filesystem.
    pub fn min_size(self) -> u64 {
        match self {
            FsType::Ext4 => 4 << 20,
            // mkfs.xfs (xfsprogs >= 5.19) refuses filesystems under 300 MiB.
            FsType::Xfs => 300 << 20,
        }
    }
}

/// Where a local volume's bytes live; decided once at create and stored, so a later change
/// of the host (say, quotas enabled) never moves an existing volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backing {
    /// A plain directory, no size limit.
    Dir,
    /// A loop-mounted image file holding a filesystem of exactly `size` bytes.
    Image,
    /// A directory on the state dir's filesystem limited by a project quota.
    Project,
}

/// A validated volume specification: everything the backends need, nothing stringly typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub kind: VolumeType,
    /// Hard size limit in bytes.
    pub size: Option<u64>,
    pub owner: Owner,
    #[serde(default)]
    pub tmpfs: TmpfsExtra,
    #[serde(default)]
    pub quota: QuotaMode,
    /// `Some` when the user asked for a filesystem (image-backed volumes).
    #[serde(default)]
    pub fs: Option<FsType>,
    /// Resolved at create for local volumes (see [`resolve_backing`]).
    #[serde(default)]
    pub backing: Option<Backing>,
    /// The project ID of a `Backing::Project` volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<u32>,
    #[serde(default)]
    pub on_remove: OnRemove,
    /// NFS volumes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsTarget>,
    /// CIFS volumes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cifs: Option<CifsTarget>,
    /// `backup-*` options.
    #[serde(default, skip_serializing_if = "BackupPolicy::is_empty")]
    pub backup: BackupPolicy,
}

/// A volume's `backup-schedule`, `backup-target`, `backup-keep` and `backup-verify`, validated
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
}

impl BackupKey {
    /// The option's name.
    pub fn option(self) -> &'static str {
        match self {
            BackupKey::Schedule => "backup-schedule",
            BackupKey::Keep => "backup-keep",
            BackupKey::TargetUrl => "backup-target",
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

fn parse_backup_key(policy: &mut BackupPolicy, key: &str, v: &str) -> Result<bool, OptionError> {
    let bad = |reason: String| OptionError::Value { key: key.into(), value: v.into(), reason };
    match key {
        "backup-schedule" => policy.schedule = Some(v.trim().to_owned()),
        "backup-keep" => policy.keep = Some(v.trim().to_owned()),
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

/// The result of parsing: the spec, the options as they may be stored and shown (an inline
/// password removed), and that password, which the caller moves into a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub spec: VolumeSpec,
    pub stored: BTreeMap<String, String>,
    pub inline_password: Option<String>,
}

/// What happens to a volume's data when it is removed (`on-remove=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRemove {
    /// Delete the data (the default for local and tmpfs volumes).
    #[default]
    Delete,
    /// Keep the data, moved to `<state dir>/retained/NAME-TIMESTAMP`.
    Retain,
    /// Back the volume up (and verify it) first; remove only if that succeeded. Then like
    /// `delete` (local, tmpfs) or `retain` (network volumes: the remote data stays).
    Archive,
}

/// What the host offers for enforcing local size limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaSupport {
    /// The state dir's filesystem is mounted with project quotas.
    pub project: bool,
    /// `/dev/loop-control` exists.
    pub loop_devices: bool,
}

/// Decides how a local volume stores its bytes, from what the user asked and what the host
/// offers.
///
/// # Errors
/// [`OptionError::Unsupported`] or [`OptionError::Value`] explaining what cannot be done.
pub fn resolve_backing(spec: &VolumeSpec, host: QuotaSupport) -> Result<Backing, OptionError> {
    let Some(size) = spec.size else {
        return match (spec.quota, spec.fs) {
            (QuotaMode::Image | QuotaMode::Project, _) | (_, Some(_)) => Err(OptionError::Unsupported(
                "options quota=image|project and fs= need a size limit; add e.g. -o size=10G".into(),
            )),
            _ => Ok(Backing::Dir),
        };
    };
    let image = |fs: FsType| {
        if !host.loop_devices {
            return Err(OptionError::Unsupported(
                "an image-backed volume needs loop devices, and this host has no /dev/loop-control (modprobe loop)"
                    .into(),
            ));
        }
        if size < fs.min_size() {
            return Err(OptionError::Value {
                key: "size".into(),
                value: format_size(size),
                reason: format!("an {} image needs at least {}", fs.name(), format_size(fs.min_size())),
            });
        }
        Ok(Backing::Image)
    };
    match spec.quota {
        QuotaMode::None => Err(OptionError::Unsupported(
            "quota=none cannot enforce size; drop size= for an unlimited volume, or use quota=auto|image".into(),
        )),
        QuotaMode::Project if spec.fs.is_some() => {
            Err(OptionError::Unsupported("fs= applies to image-backed volumes (quota=image), not quota=project".into()))
        }
        QuotaMode::Project if host.project => Ok(Backing::Project),
        QuotaMode::Project => Err(OptionError::Unsupported(
            "quota=project needs the state dir's filesystem (xfs, or ext4 with the project feature) mounted with prjquota; use quota=image".into(),
        )),
        // auto: a project quota where the state dir has them (no image, no loop device), unless
        // a filesystem was asked for.
        QuotaMode::Auto if host.project && spec.fs.is_none() => Ok(Backing::Project),
        QuotaMode::Image | QuotaMode::Auto => image(spec.fs.unwrap_or_default()),
    }
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

/// Parses a size such as `512M`, `10G`, `1.5GiB`, `16m` or `4096` into bytes. All units are
/// binary (K = 1024); `B`, `iB` suffixes and case are optional.
///
/// # Errors
/// A human-readable reason.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1 {
        return Err("expected a number with an optional unit, e.g. 512M, 10G, 1.5GiB".into());
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(format!("unknown unit {unit:?}; use K, M, G, T or P (binary units)")),
    };
    let bytes = if let Some((int, frac)) = num.split_once('.') {
        if int.len() > 20 || frac.len() > 12 {
            return Err("number too large".into());
        }
        let int: u128 = int.parse().map_err(|_| "number too large".to_string())?;
        let frac_v: u128 = frac.parse().map_err(|_| "number too large".to_string())?;
        let scale = 10u128.checked_pow(frac.len() as u32).ok_or("too many decimals")?;
        (int << shift) + ((frac_v << shift) / scale)
    } else {
        if num.len() > 20 {
            return Err("number too large".into());
        }
        let v: u128 = num.parse().map_err(|_| "number too large".to_string())?;
        v << shift
    };
    if bytes == 0 {
        return Err("the size must be greater than zero".into());
    }
    u64::try_from(bytes).ok().filter(|b| *b <= i64::MAX as u64).ok_or_else(|| "the size is too large".to_string())
}

/// Formats bytes in binary units, e.g. `16 MiB`, `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.2} {}", UNITS[i]).replace(".00 ", " ")
    }
}

fn value_err(key: &str, v: &str, reason: &str) -> OptionError {
    OptionError::Value { key: key.into(), value: v.into(), reason: reason.into() }
}

fn parse_mode(key: &str, v: &str) -> Result<u32, OptionError> {
    u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| OptionError::Value {
        key: key.into(),
        value: v.into(),
        reason: "expected an octal mode such as 0755 or 1777".into(),
    })
}

fn parse_id(key: &str, v: &str) -> Result<u32, OptionError> {
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
const BACKUP_KEYS: &[&str] = &["backup-schedule", "backup-target", "backup-keep", "backup-verify"];

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

fn size_opt(key: &str, v: &str) -> Result<u64, OptionError> {
    parse_size(v).map_err(|reason| OptionError::Value { key: key.into(), value: v.into(), reason })
}

/// Merges one value into a slot, refusing two different values for the same setting
/// (e.g. `size=16m` and `o=size=32m`).
fn set_once<T: PartialEq + Copy>(slot: &mut Option<T>, key: &str, raw: &str, v: T) -> Result<(), OptionError> {
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
        if parse_backup_key(&mut spec.backup, key, v)? {
            continue;
        }
        match key.as_str() {
            "type" => {}
            "size" if !matches!(kind, VolumeType::Nfs | VolumeType::Cifs) => {
                set_once(&mut spec.size, key, v, size_opt(key, v)?)?
            }
            "uid" => set_once(&mut spec.owner.uid, key, v, parse_id(key, v)?)?,
            "gid" => set_once(&mut spec.owner.gid, key, v, parse_id(key, v)?)?,
            "mode" => set_once(&mut spec.owner.mode, key, v, parse_mode(key, v)?)?,
            "size" if matches!(kind, VolumeType::Nfs | VolumeType::Cifs) => {
                return Err(OptionError::Unsupported(format!(
                    "size on a {kind} volume (an image kept on the share) is not in this version of voltool yet"
                )));
            }
            "quota" if kind == VolumeType::Local => {
                spec.quota = match v.as_str() {
                    "auto" => QuotaMode::Auto,
                    "project" => QuotaMode::Project,
                    "image" => QuotaMode::Image,
                    "none" => QuotaMode::None,
                    _ => return Err(value_err(key, v, "valid values: auto, project, image, none")),
                }
            }
            "fs" if kind == VolumeType::Local => {
                spec.fs = Some(match v.as_str() {
                    "ext4" => FsType::Ext4,
                    "xfs" => FsType::Xfs,
                    _ => return Err(value_err(key, v, "valid values: ext4, xfs")),
                })
            }
            "on-remove" => {
                spec.on_remove = match (v.as_str(), kind) {
                    ("delete", VolumeType::Nfs | VolumeType::Cifs) => {
                        return Err(OptionError::Unsupported(
                            "on-remove=delete for network volumes (deleting the remote directory) is not in this version of voltool yet; they are retained".into(),
                        ));
                    }
                    ("delete", _) => OnRemove::Delete,
                    ("retain", VolumeType::Local | VolumeType::Nfs | VolumeType::Cifs) => OnRemove::Retain,
                    ("retain", VolumeType::Tmpfs) => {
                        return Err(value_err(
                            key,
                            v,
                            "a tmpfs volume has nothing to retain once unmounted; use delete",
                        ));
                    }
                    ("archive", _) => OnRemove::Archive,
                    _ => return Err(value_err(key, v, "valid values: delete, retain, archive")),
                }
            }
            "device" if kind == VolumeType::Tmpfs => {
                // Docker's local driver needs `device=tmpfs`; any name is only cosmetic there.
            }
            "o" if kind == VolumeType::Tmpfs => parse_tmpfs_o(v, &mut spec)?,
            k if PLANNED_KEYS.contains(&k) => {
                return Err(OptionError::Unsupported(format!(
                    "option {k} is not available in this version of voltool yet; valid options for a {kind} volume: {}",
                    valid_keys(kind)
                )));
            }
            _ => return Err(OptionError::Unknown { key: key.clone(), kind, valid: valid_keys(kind) }),
        }
    }
    if kind == VolumeType::Nfs {
        nfs::finish(&mut nfs, opts.get("type").map(String::as_str) == Some("nfs4"))?;
        // Remote data outlives a `docker volume rm` unless asked otherwise.
        if !opts.contains_key("on-remove") {
            spec.on_remove = OnRemove::Retain;
        }
        spec.nfs = Some(nfs);
    }
    if kind == VolumeType::Cifs {
        cifs::finish(&cifs, password.is_some())?;
        if !opts.contains_key("on-remove") {
            spec.on_remove = OnRemove::Retain;
        }
        spec.cifs = Some(cifs);
    }
    Ok(Parsed { spec, stored, inline_password: password })
}

/// Parses the local driver's tmpfs `o=size=100m,uid=1000,mode=1777,noexec` list.
fn parse_tmpfs_o(o: &str, spec: &mut VolumeSpec) -> Result<(), OptionError> {
    for part in olist::split(o) {
        let part = part.as_str();
        let key = format!("o={}", part.split('=').next().unwrap_or(part));
        match part.split_once('=') {
            Some(("size", v)) => set_once(&mut spec.size, &key, v, size_opt(&key, v)?)?,
            Some(("uid", v)) => set_once(&mut spec.owner.uid, &key, v, parse_id(&key, v)?)?,
            Some(("gid", v)) => set_once(&mut spec.owner.gid, &key, v, parse_id(&key, v)?)?,
            Some(("mode", v)) => set_once(&mut spec.owner.mode, &key, v, parse_mode(&key, v)?)?,
            Some(("nr_inodes", v)) => {
                let n = size_opt(&key, v)?;
                set_once(&mut spec.tmpfs.nr_inodes, &key, v, n)?
            }
            None => match part {
                "noexec" => spec.tmpfs.noexec = true,
                "exec" => spec.tmpfs.noexec = false,
                "suid" => spec.tmpfs.suid = true,
                "nosuid" => spec.tmpfs.suid = false,
                "dev" => spec.tmpfs.dev = true,
                "nodev" => spec.tmpfs.dev = false,
                "noatime" => spec.tmpfs.noatime = true,
                "ro" => spec.tmpfs.ro = true,
                "rw" => spec.tmpfs.ro = false,
                _ => return Err(tmpfs_o_error(part)),
            },
            Some(_) => return Err(tmpfs_o_error(part)),
        }
    }
    Ok(())
}

fn tmpfs_o_error(part: &str) -> OptionError {
    OptionError::Value {
        key: "o".into(),
        value: olist::shown(part),
        reason: "valid tmpfs mount options: size=, uid=, gid=, mode=, nr_inodes=, noexec, exec, nosuid, suid, nodev, dev, noatime, ro, rw".into(),
    }
}

#[cfg(test)]
mod tests;
