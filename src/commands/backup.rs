//! `voltool backup run|ls|show|verify|prune|schedule ls`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::cli::{BackupCommand, ScheduleCommand};
use crate::client::{Api, segment};
use crate::output;

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn u(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// `1.5 GiB`-style sizes.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

fn verified(v: &Value) -> String {
    match v.get("verify_status").and_then(Value::as_str) {
        Some(s) => s.to_string(),
        None => "-".into(),
    }
}

/// Follows a run until it is finished (including its verification), showing a progress bar
/// on a terminal. Returns the final catalog entry.
async fn follow(api: &Api, id: &str, show_bar: bool) -> Result<Value> {
    let path = format!("/v1/backups/{}", segment(id));
    let bar = show_bar.then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:10} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    loop {
        let v: Value = api.get(&path).await?;
        let progress = v.get("progress").filter(|p| !p.is_null());
        if let (Some(bar), Some(p)) = (&bar, progress) {
            bar.set_message(s(p, "phase"));
            match u(p, "total_bytes") {
                Some(t) => bar.set_length(t.max(u(p, "done_bytes").unwrap_or(0))),
                None => bar.set_length(u(p, "done_bytes").unwrap_or(0)),
            }
            bar.set_position(u(p, "done_bytes").unwrap_or(0));
        }
        if progress.is_none() && v.get("status").and_then(Value::as_str) != Some("running") {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn run(api: &Api, cmd: BackupCommand) -> Result<ExitCode> {
    let tty = std::io::stderr().is_terminal();
    match cmd {
        BackupCommand::Run { volume, target, verify, json, detach } => {
            let started: Value =
                api.post("/v1/backups", json!({ "volume": volume, "target": target, "verify": verify })).await?;
            let Some(id) = started.get("id").and_then(Value::as_str).map(str::to_owned) else {
                bail!("the daemon did not return a backup id");
            };
            if detach {
                if json {
                    output::json(&started)?
                } else {
                    println!("{id}")
                }
                return Ok(ExitCode::SUCCESS);
            }
            if tty && !json {
                eprintln!("backing up volume {volume} as {id}");
            }
            let done = follow(api, &id, tty && !json).await?;
            let status = s(&done, "status");
            if status != "complete" {
                bail!("backup {id} of volume {volume} failed: {}", s(&done, "reason"));
            }
            if verify && done.get("verify_status").and_then(Value::as_str) != Some("ok") {
                bail!(
                    "backup {id} was written but its verification failed: {}",
                    done.get("verify_reason").and_then(Value::as_str).unwrap_or("not verified")
                );
            }
            if json {
                output::json(&done)?;
            } else {
                let (bin, bout) = (u(&done, "bytes_in").unwrap_or(0), u(&done, "bytes_out").unwrap_or(0));
                let ms = u(&done, "duration_ms").unwrap_or(0).max(1);
                eprintln!(
                    "{} files, {} read, {} stored in {} ({:.1} s, {}/s){}",
                    u(&done, "files").unwrap_or(0),
                    human(bin),
                    human(bout),
                    s(&done, "target_url"),
                    ms as f64 / 1000.0,
                    human(bin * 1000 / ms),
                    if verify { ", verified" } else { "" }
                );
                println!("{id}");
            }
        }
        BackupCommand::Ls { volume, json } => {
            let path = match &volume {
                Some(v) => format!("/v1/backups?volume={}", segment(v)),
                None => "/v1/backups".into(),
            };
            let list: Vec<Value> = api.get(&path).await?;
            if json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|b| {
                        vec![
                            s(b, "id"),
                            s(b, "volume"),
                            s(b, "status"),
                            verified(b),
                            u(b, "bytes_out").map_or_else(|| "-".into(), human),
                            s(b, "started_at"),
                            s(b, "target_url"),
                        ]
                    })
                    .collect();
                output::table(&["ID", "VOLUME", "STATUS", "VERIFIED", "SIZE", "STARTED", "TARGET"], &rows)?;
            }
        }
        BackupCommand::Show { id, json } => {
            let b: Value = api.get(&format!("/v1/backups/{}", segment(&id))).await?;
            if json {
                output::json(&b)?;
            } else {
                for key in [
                    "id",
                    "volume",
                    "status",
                    "reason",
                    "trigger",
                    "target_url",
                    "started_at",
                    "finished_at",
                    "duration_ms",
                    "files",
                    "bytes_in",
                    "bytes_out",
                    "sha256",
                    "verify_status",
                    "verify_at",
                    "verify_reason",
                ] {
                    if b.get(key).is_some_and(|v| !v.is_null()) {
                        println!("{:<14} {}", format!("{key}:"), s(&b, key));
                    }
                }
            }
        }
        BackupCommand::Verify { id, restore_test, check_cmd, json } => {
            let bar = (tty && !json).then(|| {
                let b = ProgressBar::new_spinner();
                b.set_message(format!("verifying {id}"));
                b.enable_steady_tick(Duration::from_millis(200));
                b
            });
            let res: Value = api.post_long(&format!("/v1/backups/{}/verify", segment(&id)), json!({})).await?;
            let mut ok = res.get("ok").and_then(Value::as_bool) == Some(true);
            let test: Option<Value> = if restore_test && ok {
                if let Some(b) = &bar {
                    b.set_message(format!("restore test of {id}"));
                }
                let body = json!({ "check_cmd": check_cmd });
                let t: Value = api.post_long(&format!("/v1/backups/{}/restore-test", segment(&id)), body).await?;
                ok = t.get("ok").and_then(Value::as_bool) == Some(true);
                Some(t)
            } else {
                None
            };
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if json {
                output::json(&json!({ "verify": res, "restore_test": test, "ok": ok }))?;
            } else {
                if res.get("ok").and_then(Value::as_bool) == Some(true) {
                    println!(
                        "backup {id}: ok — {} entries, {} files, {} checked, archive {}",
                        u(&res, "entries").unwrap_or(0),
                        u(&res, "files").unwrap_or(0),
                        human(u(&res, "bytes").unwrap_or(0)),
                        human(u(&res, "archive_bytes").unwrap_or(0))
                    );
                } else {
                    eprintln!("voltool: {}", s(&res, "error"));
                }
                if let Some(t) = &test {
                    if t.get("ok").and_then(Value::as_bool) == Some(true) {
                        println!("backup {id}: restore test ok (check command exited 0)");
                    } else {
                        eprintln!(
                            "voltool: backup {id}: restore test failed: {}{}",
                            t.get("error")
                                .and_then(Value::as_str)
                                .map_or_else(|| format!("the check command exited {}", t["status"]), str::to_owned),
                            t.get("output")
                                .and_then(Value::as_str)
                                .filter(|o| !o.trim().is_empty())
                                .map_or_else(String::new, |o| format!("\n{}", o.trim_end()))
                        );
                    }
                }
            }
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        BackupCommand::Prune { volume, keep, dry_run, json } => {
            let items: Vec<Value> = api
                .post_long("/v1/backups/prune", json!({ "volume": volume, "keep": keep, "dry_run": dry_run }))
                .await?;
            let failed = items.iter().any(|i| i.get("error").is_some_and(|e| !e.is_null()));
            if json {
                output::json(&items)?;
            } else {
                let verb = if dry_run { "would delete" } else { "deleted" };
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|i| {
                        let keep = i.get("keep").and_then(Value::as_bool) == Some(true);
                        let action = match i.get("error").and_then(Value::as_str) {
                            Some(e) => format!("error: {e}"),
                            None if keep => "keep".into(),
                            None => verb.into(),
                        };
                        let reasons = i
                            .get("reasons")
                            .and_then(Value::as_array)
                            .map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default();
                        vec![s(i, "id"), s(i, "volume"), action, reasons]
                    })
                    .collect();
                if rows.is_empty() {
                    eprintln!("nothing to prune (no volume with a backup-keep policy, or no --keep given)");
                } else {
                    output::table(&["ID", "VOLUME", "ACTION", "KEPT BY"], &rows)?;
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        BackupCommand::Schedule(ScheduleCommand::Ls { json }) => {
            let list: Vec<Value> = api.get("/v1/schedules").await?;
            if json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|v| {
                        vec![
                            s(v, "volume"),
                            s(v, "cron"),
                            s(v, "next_run"),
                            s(v, "target"),
                            s(v, "keep"),
                            s(v, "verify"),
                            s(v, "source"),
                        ]
                    })
                    .collect();
                output::table(&["VOLUME", "CRON", "NEXT RUN", "TARGET", "KEEP", "VERIFY", "SOURCE"], &rows)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
