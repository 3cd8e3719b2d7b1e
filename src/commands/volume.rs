//! `voltool volume create|ls|inspect|rm`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use voltool_daemon::routes::volumes::VolumeInspect;

use crate::cli::VolumeCommand;
use crate::client::Api;
use crate::output;

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

fn status_str(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn path_of(name: &str) -> String {
    format!("/v1/volumes/{}", crate::client::segment(name))
}

pub async fn run(api: &Api, cmd: VolumeCommand) -> Result<ExitCode> {
    match cmd {
        VolumeCommand::Create { name, opts, json } => {
            let options = parse_opts(&opts)?;
            let v: VolumeInspect = api.post("/v1/volumes", json!({ "name": name, "options": options })).await?;
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
                            status_str(&v.status, "type"),
                            status_str(&v.status, "size_limit"),
                            status_str(&v.status, "mount_count"),
                            v.created_at.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "TYPE", "SIZE LIMIT", "MOUNTS", "CREATED"], &rows)?;
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
                    for (k, val) in v.status.as_object().into_iter().flatten() {
                        println!(
                            "{:<12} {}",
                            format!("{k}:"),
                            val.as_str().map(str::to_string).unwrap_or_else(|| val.to_string())
                        );
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
            let v: VolumeInspect = api.post(&format!("{}/resize", path_of(&name)), json!({ "size": size })).await?;
            println!("{} {}", v.name, status_str(&v.status, "size_limit"));
        }
        VolumeCommand::Mount { name, id } => {
            let r: serde_json::Value = api.post(&format!("{}/mount", path_of(&name)), json!({ "id": id })).await?;
            println!("{}", r.get("Mountpoint").and_then(|m| m.as_str()).unwrap_or_default());
        }
        VolumeCommand::Unmount { name, id } => {
            let _: serde_json::Value = api.post(&format!("{}/unmount", path_of(&name)), json!({ "id": id })).await?;
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
    fn names_are_escaped_in_paths() {
        assert_eq!(path_of("db-1.x_y"), "/v1/volumes/db-1.x_y");
        assert_eq!(path_of("../x"), "/v1/volumes/..%2Fx");
    }
}
