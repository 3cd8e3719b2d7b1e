//! Where a local volume's bytes live: a plain directory, a project quota or an image file,
//! decided once at create from what the user asked (`size=`, `quota=`, `fs=`) and what the
//! host offers.

use super::{Backing, FsType, OptionError, QuotaMode, QuotaSupport, VolumeSpec, format_size, value_err};

/// `quota=`.
pub(super) fn parse_quota(key: &str, v: &str) -> Result<QuotaMode, OptionError> {
    match v {
        "auto" => Ok(QuotaMode::Auto),
        "project" => Ok(QuotaMode::Project),
        "image" => Ok(QuotaMode::Image),
        "none" => Ok(QuotaMode::None),
        _ => Err(value_err(key, v, "valid values: auto, project, image, none")),
    }
}

/// `fs=`.
pub(super) fn parse_fs(key: &str, v: &str) -> Result<FsType, OptionError> {
    match v {
        "ext4" => Ok(FsType::Ext4),
        "xfs" => Ok(FsType::Xfs),
        _ => Err(value_err(key, v, "valid values: ext4, xfs")),
    }
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
