//! The local driver's tmpfs spelling: `-o type=tmpfs -o device=tmpfs -o o=size=100m,uid=1000`,
//! the `o=` list folded into the same spec as voltool's own `size=`/`uid=` keys.

use super::{OptionError, VolumeSpec, olist, parse_id, parse_mode, set_once, size_opt};

/// Parses the local driver's tmpfs `o=size=100m,uid=1000,mode=1777,noexec` list.
pub(super) fn parse_o(o: &str, spec: &mut VolumeSpec) -> Result<(), OptionError> {
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
