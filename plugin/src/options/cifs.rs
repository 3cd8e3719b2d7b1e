//! CIFS/SMB volume options: `share=//host/share[/path]`, `username`, `domain`, `secret`,
//! `vers`, `subdir`, `o=`; and Docker's local-driver spelling `device=//host/share` +
//! `o=username=..,password=..`. A password given inline is taken out of the options (so it
//! is never stored or shown) and handed to the caller to move into a secret.

use serde::{Deserialize, Serialize};

use super::OptionError;
use super::nfs::validate_subdir;

/// Where a CIFS volume lives and how to mount it. Never holds a password.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CifsTarget {
    pub host: String,
    pub share: String,
    /// Path inside the share given with `share=//host/share/path` (may be empty).
    pub base: String,
    /// Per-volume directory under `base`; filled with the volume name at create.
    pub subdir: Option<String>,
    pub username: Option<String>,
    pub domain: Option<String>,
    /// Name of the secret holding the password.
    pub secret: Option<String>,
    pub vers: Option<String>,
    pub port: Option<u16>,
    /// Other mount options passed to the kernel unchanged.
    pub extra: Vec<String>,
    /// `o=suid` / `o=dev` lift voltool's safe defaults (`nosuid`, `nodev`: a file the server
    /// serves never gains privileges or reaches a device on this host).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suid: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev: bool,
}

impl CifsTarget {
    /// The path inside the share the volume uses (`base/subdir`, `/`-separated, may be empty).
    pub fn share_path(&self) -> String {
        [self.base.as_str(), self.subdir.as_deref().unwrap_or("")]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    }
}

fn bad(key: &str, v: &str, reason: &str) -> OptionError {
    OptionError::Value { key: key.into(), value: v.into(), reason: reason.into() }
}

fn name_like(key: &str, v: &str) -> Result<String, OptionError> {
    let ok = !v.is_empty() && v.len() <= 256 && v.chars().all(|c| c.is_ascii_alphanumeric() || "._-@$ ".contains(c));
    if ok { Ok(v.to_string()) } else { Err(bad(key, v, "unexpected characters")) }
}

/// Parses `//host/share[/path]` (backslashes accepted too).
fn unc(key: &str, v: &str, t: &mut CifsTarget) -> Result<(), OptionError> {
    let norm = v.replace('\\', "/");
    let rest = norm.strip_prefix("//").ok_or_else(|| bad(key, v, "expected //host/share[/path]"))?;
    let mut parts = rest.splitn(3, '/');
    let host = parts.next().unwrap_or_default();
    let share = parts.next().unwrap_or_default();
    if host.is_empty() || share.is_empty() {
        return Err(bad(key, v, "expected //host/share[/path]"));
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) {
        return Err(bad(key, v, "the host must be a name or an IP address"));
    }
    if !share.chars().all(|c| c.is_ascii_alphanumeric() || "._-$ ".contains(c)) {
        return Err(bad(key, v, "unexpected characters in the share name"));
    }
    t.host = host.trim_matches(|c| c == '[' || c == ']').to_string();
    t.share = share.to_string();
    t.base = match parts.next() {
        Some(p) if !p.trim_matches('/').is_empty() => validate_subdir(p)?,
        _ => String::new(),
    };
    Ok(())
}

/// Parses one CIFS option into `t`. Returns `Ok(Some(o))` with the option's value as it
/// may be stored (an `o=` without its `password=`), `Ok(None)` for a key that is not a
/// CIFS option. An inline password lands in `password`.
pub(super) fn parse_key(
    t: &mut CifsTarget,
    password: &mut Option<String>,
    key: &str,
    v: &str,
) -> Result<Option<String>, OptionError> {
    match key {
        "share" | "device" => unc(key, v, t)?,
        "username" => t.username = Some(name_like(key, v)?),
        "domain" => t.domain = Some(name_like(key, v)?),
        "secret" => {
            super::validate_name(v).map_err(|_| bad(key, v, "expected the name of a secret (voltool secret ls)"))?;
            t.secret = Some(v.to_string());
        }
        "subdir" => t.subdir = Some(validate_subdir(v)?),
        "vers" => t.vers = Some(vers(key, v)?),
        "o" => {
            let mut kept = Vec::new();
            for part in super::olist::split(v) {
                let part = part.as_str();
                match part.split_once('=') {
                    Some(("password" | "pass", p)) => {
                        if p.is_empty() {
                            return Err(bad("o", "password=", "the password is empty"));
                        }
                        *password = Some(p.to_string());
                        continue;
                    }
                    Some(("username" | "user", u)) => t.username = Some(name_like("o=username", u)?),
                    Some(("domain" | "dom" | "workgroup", d)) => t.domain = Some(name_like("o=domain", d)?),
                    Some(("vers", x)) => t.vers = Some(vers("o=vers", x)?),
                    Some(("port", p)) => {
                        t.port = Some(
                            p.parse::<u16>()
                                .ok()
                                .filter(|p| *p != 0)
                                .ok_or_else(|| bad("o=port", p, "expected a port number"))?,
                        )
                    }
                    Some(("credentials" | "ip" | "addr", _)) => {
                        return Err(bad(
                            "o",
                            part,
                            "not supported: use secret= for the password; voltool resolves the host itself",
                        ));
                    }
                    None if super::nfs::set_privilege_flag(part, &mut t.suid, &mut t.dev) => {}
                    _ if part.chars().all(|c| c.is_ascii_alphanumeric() || "=_.-:".contains(c)) => {
                        t.extra.push(part.to_string())
                    }
                    _ => return Err(bad("o", &super::olist::shown(part), "unexpected characters in a mount option")),
                }
                kept.push(part.to_string());
            }
            return Ok(Some(super::olist::join(&kept)));
        }
        _ => return Ok(None),
    }
    Ok(Some(v.to_string()))
}

fn vers(key: &str, v: &str) -> Result<String, OptionError> {
    match v {
        "1.0" | "2.0" | "2.1" | "3" | "3.0" | "3.02" | "3.1.1" | "default" => Ok(v.to_string()),
        _ => Err(bad(key, v, "valid versions: 1.0, 2.0, 2.1, 3, 3.0, 3.02, 3.1.1, default")),
    }
}

/// Final checks once all options are read.
pub(super) fn finish(t: &CifsTarget, inline_password: bool) -> Result<(), OptionError> {
    if t.host.is_empty() {
        return Err(OptionError::Unsupported(
            "a cifs volume needs the share: -o share=//host/share (or device=//host/share)".into(),
        ));
    }
    if t.secret.is_some() && inline_password {
        return Err(OptionError::Unsupported(
            "give the password either as secret= or inline in o=password=, not both".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unc_paths() {
        let mut t = CifsTarget::default();
        unc("share", "//srv.lan/data/teams/a", &mut t).expect("ok");
        assert_eq!((t.host.as_str(), t.share.as_str(), t.base.as_str()), ("srv.lan", "data", "teams/a"));
        unc("share", r"\\10.0.0.5\pub", &mut t).expect("ok");
        assert_eq!((t.host.as_str(), t.share.as_str(), t.base.as_str()), ("10.0.0.5", "pub", ""));
        for b in ["srv/data", "//srv", "///data", "//srv/da;ta", "//srv/data/../x"] {
            assert!(unc("share", b, &mut CifsTarget::default()).is_err(), "{b}");
        }
        t.subdir = Some("vol".into());
        assert_eq!(t.share_path(), "vol");
    }

    #[test]
    fn inline_password_is_extracted_from_o() {
        let (mut t, mut pw) = (CifsTarget::default(), None);
        let kept = parse_key(&mut t, &mut pw, "o", "username=bob,password=p4ss,vers=3.0,uid=1000").expect("ok");
        assert_eq!(kept.as_deref(), Some("username=bob,vers=3.0,uid=1000"));
        assert_eq!(pw.as_deref(), Some("p4ss"));
        assert!(!t.suid && !t.dev, "nosuid,nodev unless asked");
        assert_eq!(
            (t.username.as_deref(), t.vers.as_deref(), t.extra.clone()),
            (Some("bob"), Some("3.0"), vec!["uid=1000".to_string()])
        );
    }

    #[test]
    fn docker_double_comma_escape_keeps_a_comma_in_the_password() {
        let (mut t, mut pw) = (CifsTarget::default(), None);
        let kept = parse_key(&mut t, &mut pw, "o", "username=u,password=a,,b,suid,dev").expect("ok");
        assert_eq!(pw.as_deref(), Some("a,b"));
        assert_eq!(kept.as_deref(), Some("username=u,suid,dev"));
        assert!(t.suid && t.dev && t.extra.is_empty(), "{t:?}");
        let e = parse_key(&mut t, &mut pw, "o", "password=").expect_err("empty");
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
