//! NFS volume options, in voltool's spelling (`addr=`, `export=`, `vers=`, `subdir=`, `o=`)
//! and Docker's local-driver spelling (`o=addr=HOST,...` + `device=:/path`).

use serde::{Deserialize, Serialize};

use super::OptionError;

/// Where an NFS volume lives and how to mount it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NfsTarget {
    /// Server host name or IP as the user gave it (resolved at create and at each mount).
    pub addr: String,
    /// Exported path on the server, e.g. `/export`.
    pub export: String,
    /// Per-volume directory under the export; `None` until create fills in the volume name,
    /// `Some("")` for the export root (`subdir=/`).
    pub subdir: Option<String>,
    /// `3`, `4`, `4.1`, ...; `None` lets the kernel negotiate (voltool checks with v3).
    pub vers: Option<String>,
    /// NFS port (`o=port=`), when the server does not use the portmapper's answer.
    pub port: Option<u16>,
    /// MOUNT protocol port (`o=mountport=`).
    pub mount_port: Option<u16>,
    /// Other mount options passed to the kernel unchanged (`rw`, `hard`, `timeo=600`, ...).
    pub extra: Vec<String>,
    /// `o=suid` / `o=dev` lift voltool's safe defaults (`nosuid`, `nodev`) for the kernel
    /// client; the userspace (FUSE) path is always `nosuid,nodev`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suid: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev: bool,
}

/// Applies `suid`/`nosuid`/`dev`/`nodev` from an `o=` list; `false` for any other option.
pub(super) fn set_privilege_flag(part: &str, suid: &mut bool, dev: &mut bool) -> bool {
    match part {
        "suid" => *suid = true,
        "nosuid" => *suid = false,
        "dev" => *dev = true,
        "nodev" => *dev = false,
        _ => return false,
    }
    true
}

impl NfsTarget {
    /// The export path joined with the subdir, as the kernel mounts it.
    pub fn remote_path(&self) -> String {
        match self.subdir.as_deref() {
            None | Some("") => self.export.clone(),
            Some(sub) => format!("{}/{sub}", self.export.trim_end_matches('/')),
        }
    }

    /// Whether the NFSv3 protocol (and so voltool's create-time check) applies.
    pub fn is_v3(&self) -> bool {
        matches!(self.vers.as_deref(), None | Some("3"))
    }
}

fn bad(key: &str, v: &str, reason: &str) -> OptionError {
    OptionError::Value { key: key.into(), value: v.into(), reason: reason.into() }
}

fn port(key: &str, v: &str) -> Result<u16, OptionError> {
    v.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad(key, v, "expected a port number"))
}

/// Checks a relative directory path: no `..`, no empty or `.` components, no NUL.
pub fn validate_subdir(v: &str) -> Result<String, OptionError> {
    if v == "/" {
        return Ok(String::new());
    }
    let t = v.trim_matches('/');
    if t.is_empty() || t.contains('\0') || t.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(bad("subdir", v, "expected a relative path without '..' (or / for the export root)"));
    }
    Ok(t.to_string())
}

fn export_path(key: &str, v: &str) -> Result<String, OptionError> {
    if !v.starts_with('/') || v.contains('\0') || v.split('/').any(|c| c == "..") {
        return Err(bad(key, v, "expected an absolute path on the server, e.g. /export"));
    }
    Ok(v.to_string())
}

/// Parses one NFS-specific option into `t`; `Ok(false)` when `key` is not an NFS option.
pub(super) fn parse_key(t: &mut NfsTarget, key: &str, v: &str) -> Result<bool, OptionError> {
    match key {
        "addr" => t.addr = host(key, v)?,
        "export" => t.export = export_path(key, v)?,
        "subdir" => t.subdir = Some(validate_subdir(v)?),
        "vers" => t.vers = Some(vers(key, v)?),
        // Docker's local driver: device=:/path or device=host:/path.
        "device" => {
            let (h, path) = v.split_once(':').ok_or_else(|| bad(key, v, "expected :/path or host:/path"))?;
            if !h.is_empty() {
                t.addr = host(key, h)?;
            }
            t.export = export_path(key, path)?;
        }
        "o" => {
            for part in super::olist::split(v) {
                let part = part.as_str();
                match part.split_once('=') {
                    Some(("addr", h)) => t.addr = host("o=addr", h)?,
                    Some(("vers" | "nfsvers", x)) => t.vers = Some(vers("o=vers", x)?),
                    Some(("port", p)) => t.port = Some(port("o=port", p)?),
                    Some(("mountport", p)) => t.mount_port = Some(port("o=mountport", p)?),
                    // voltool resolves the address itself; the kernel's own lookup is not used.
                    Some(("clientaddr" | "mounthost" | "mountaddr", _)) => {
                        return Err(bad(
                            "o",
                            &super::olist::shown(part),
                            "not supported; voltool passes the resolved addr itself",
                        ));
                    }
                    Some(("password", _)) => return Err(bad("o", "password=…", "NFS takes no password")),
                    None if set_privilege_flag(part, &mut t.suid, &mut t.dev) => {}
                    _ if part.chars().all(|c| c.is_ascii_alphanumeric() || "=_.-:".contains(c)) => {
                        t.extra.push(part.to_string())
                    }
                    _ => return Err(bad("o", &super::olist::shown(part), "unexpected characters in a mount option")),
                }
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn host(key: &str, v: &str) -> Result<String, OptionError> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        && !v.starts_with('-');
    if ok {
        Ok(v.trim_matches(|c| c == '[' || c == ']').to_string())
    } else {
        Err(bad(key, v, "expected a host name or IP address"))
    }
}

fn vers(key: &str, v: &str) -> Result<String, OptionError> {
    match v {
        "3" | "4" | "4.0" | "4.1" | "4.2" => Ok(v.to_string()),
        _ => Err(bad(key, v, "valid versions: 3, 4, 4.0, 4.1, 4.2")),
    }
}

/// Final checks once all options are read.
pub(super) fn finish(t: &mut NfsTarget, nfs4: bool) -> Result<(), OptionError> {
    if nfs4 && t.vers.is_none() {
        t.vers = Some("4".into());
    }
    if t.addr.is_empty() {
        return Err(OptionError::Unsupported("an nfs volume needs the server: -o addr=HOST (or o=addr=HOST)".into()));
    }
    if t.export.is_empty() {
        return Err(OptionError::Unsupported(
            "an nfs volume needs the export: -o export=/path (or device=:/path)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdirs() {
        assert_eq!(validate_subdir("a/b").expect("ok"), "a/b");
        assert_eq!(validate_subdir("/").expect("root"), "");
        for bad in ["..", "a/../b", "", "a//b", "./a"] {
            assert!(validate_subdir(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_path_joins_export_and_subdir() {
        let mut t = NfsTarget { export: "/export/".into(), subdir: Some("vol".into()), ..Default::default() };
        assert_eq!(t.remote_path(), "/export/vol");
        t.subdir = Some(String::new());
        assert_eq!(t.remote_path(), "/export/");
    }
}
