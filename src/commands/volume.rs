//! `voltool volume create|ls|inspect|rm`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use voltool_api::{CreateVolume, MountId, Mounted, ResizeVolume, Status, Unmounted, VolumeInspect};

use crate::cli::VolumeCommand;
use crate::client::Api;
use crate::human::time;
use crate::output;
use crate::table::{self, left, right};

/// Parses repeated `-o KEY=VALUE` into a map, refusing malformed and repeated keys.
fn parse_opts(opts: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for o in opts {
        let Some((k, v)) = o.split_once('=') else {
            bail!("option {o:?} must be KEY=VALUE, e.g. -o size=64m");
        };
        if k.is_empty() {
            bail!("option {o:?} has an empty key");
        }
        if map.insert(k.to_string(), v.to_string()).is_some() {
            bail!("option {k} is given twice");
        }
    }
    Ok(map)
}

/// A status as `inspect` prints it: one `key: value` line per field, keys in alphabetical
/// order (the last backup as its JSON).
fn status_lines(status: &Status) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    let opt = |key: &'static str, v: Option<u64>| v.map(|v| (key, v.to_string()));
    match status {
        Status::Summary(s) => {
            lines.push(("mount_count", s.mount_count.to_string()));
            lines.push(("mounted", s.mounted.to_string()));
            lines.push(("size_limit", s.size_limit.clone()));
            lines.push(("type", s.kind.clone()));
        }
        Status::Detail(d) => {
            lines.push(("backing", d.backing.clone()));
            lines.extend(opt("capacity_bytes", d.capacity_bytes));
            if let Some(b) = &d.last_backup {
                lines.push(("last_backup", serde_json::to_string(b).unwrap_or_default()));
            }
            lines.push(("mount_count", d.mount_count.to_string()));
            lines.push(("mounted", d.mounted.to_string()));
            lines.push(("size_limit", d.size_limit.clone()));
            lines.extend(opt("size_limit_bytes", d.size_limit_bytes));
            lines.push(("type", d.kind.clone()));
            lines.extend(opt("used_bytes", d.used_bytes));
        }
    }
    lines
}

fn path_of(name: &str) -> String {
    format!("/v1/volumes/{}", crate::client::segment(name))
}

pub async fn run(api: &Api, cmd: VolumeCommand) -> Result<ExitCode> {
    match cmd {
        VolumeCommand::Create { name, opts, json } => {
            let options = parse_opts(&opts)?;
            let v: VolumeInspect = api.post("/v1/volumes", CreateVolume { name, options }).await?;
            for w in &v.warnings {
                eprintln!("voltool: warning: {w}");
            }
            if json { output::json(&v)? } else { println!("{}", v.name) }
        }
        VolumeCommand::Ls { json, quiet } => {
            let vs: Vec<VolumeInspect> = api.get("/v1/volumes").await?;
            if json {
                output::json(&vs)?;
            } else if quiet {
                for v in vs {
                    println!("{}", v.name);
                }
            } else {
                let rows: Vec<Vec<String>> = vs
                    .iter()
                    .map(|v| {
                        vec![
                            v.name.clone(),
                            v.status.kind().to_owned(),
                            v.status.size_limit().to_owned(),
                            v.status.mount_count().to_string(),
                            time(&v.created_at),
                        ]
                    })
                    .collect();
                let columns = [left("NAME"), left("TYPE"), right("SIZE LIMIT"), right("MOUNTS"), left("CREATED (UTC)")];
                table::print(&columns, &rows)?;
                let mounted = vs.iter().filter(|v| v.status.mount_count() > 0).count();
                eprintln!("{} volume{}, {mounted} in use", vs.len(), if vs.len() == 1 { "" } else { "s" });
            }
        }
        VolumeCommand::Inspect { names, json } => {
            let mut found = Vec::new();
            let mut failed = false;
            for n in &names {
                match api.get::<VolumeInspect>(&path_of(n)).await {
                    Ok(v) => found.push(v),
                    Err(e) => {
                        eprintln!("voltool: {e:#}");
                        failed = true;
                    }
                }
            }
            if json {
                output::json(&found)?;
            } else {
                for v in &found {
                    println!("Name:        {}", v.name);
                    println!("Driver:      {}", v.driver);
                    println!("Mountpoint:  {}", v.mountpoint);
                    println!("Created:     {}", v.created_at);
                    for (k, val) in status_lines(&v.status) {
                        println!("{:<12} {val}", format!("{k}:"));
                    }
                    for (k, val) in &v.options {
                        println!("Option:      {k}={val}");
                    }
                    println!();
                }
            }
            return Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS });
        }
        VolumeCommand::Resize { name, size } => {
            let v: VolumeInspect = api.post(&format!("{}/resize", path_of(&name)), ResizeVolume { size }).await?;
            println!("{} {}", v.name, v.status.size_limit());
        }
        VolumeCommand::Mount { name, id } => {
            let r: Mounted = api.post(&format!("{}/mount", path_of(&name)), MountId { id }).await?;
            println!("{}", r.mountpoint);
        }
        VolumeCommand::Unmount { name, id } => {
            let _: Unmounted = api.post(&format!("{}/unmount", path_of(&name)), MountId { id }).await?;
        }
        VolumeCommand::Rm { names, force } => {
            let q = if force { "?force=true" } else { "" };
            return Ok(api.delete_each(&names, |n| format!("{}{q}", path_of(n))).await);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opts_parse_and_refuse_bad_shapes() {
        let m = parse_opts(&["type=tmpfs".into(), "o=size=1m,uid=1".into()]).expect("ok");
        assert_eq!(m["o"], "size=1m,uid=1");
        assert!(parse_opts(&["novalue".into()]).is_err());
        assert!(parse_opts(&["=x".into()]).is_err());
        assert!(parse_opts(&["a=1".into(), "a=2".into()]).is_err());
    }

    #[test]
    fn inspect_prints_the_status_keys_in_alphabetical_order() {
        let d = voltool_api::StatusDetail {
            backing: "directory".into(),
            capacity_bytes: None,
            last_backup: Some(voltool_api::LastBackup {
                id: "v-1".into(),
                reason: None,
                status: voltool_api::BackupStatus::Complete,
                time: "t".into(),
                verified: "ok".into(),
                consistency: None,
                downtime_ms: None,
            }),
            mount_count: 1,
            mounted: true,
            size_limit: "none".into(),
            size_limit_bytes: None,
            kind: "local".into(),
            used_bytes: Some(8),
        };
        let lines = status_lines(&Status::Detail(Box::new(d)));
        let keys: Vec<&str> = lines.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["backing", "last_backup", "mount_count", "mounted", "size_limit", "type", "used_bytes"]);
        assert_eq!(lines[1].1, r#"{"id":"v-1","status":"complete","time":"t","verified":"ok"}"#);
        assert_eq!(lines[3].1, "true");
    }

    #[test]
    fn names_are_escaped_in_paths() {
        assert_eq!(path_of("db-1.x_y"), "/v1/volumes/db-1.x_y");
        assert_eq!(path_of("../x"), "/v1/volumes/..%2Fx");
    }
}
