//! `voltool status` (the host at a glance) and `voltool notify test`.

use std::process::ExitCode;

use anyhow::Result;
use voltool_api::status::{NotifyTest, NotifyTestOutcome, StatusView};

use crate::client::Api;
use crate::table::{self, left, right};
use crate::{human, output};

pub async fn status(api: &Api, json: bool) -> Result<ExitCode> {
    let s: StatusView = api.get("/v1/status").await?;
    if json {
        output::json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = s
        .volumes
        .iter()
        .map(|v| {
            let usage = match (v.used_bytes, v.size_limit_bytes) {
                (Some(u), Some(l)) if l > 0 => {
                    format!("{} / {} ({:.0}%)", human::size(u), human::size(l), u as f64 / l as f64 * 100.0)
                }
                (Some(u), _) => human::size(u),
                (None, Some(l)) => format!("? / {}", human::size(l)),
                (None, None) => "-".into(),
            };
            let last = v
                .last_backup
                .as_ref()
                .map_or_else(|| "-".to_owned(), |b| format!("{} {}", b.status, human::time(&b.at)));
            let check = |c: Option<&voltool_api::status::CheckPoint>| {
                c.map_or_else(
                    || "-".to_owned(),
                    |c| format!("{} {}", if c.ok { "ok" } else { "failed" }, human::time(&c.at)),
                )
            };
            let server = match v.server_up {
                Some(true) => "up",
                Some(false) => "DOWN",
                None => "",
            };
            vec![
                v.name.clone(),
                v.kind.clone(),
                v.mounts.to_string(),
                usage,
                last,
                v.next_backup.as_deref().map_or_else(|| "-".to_owned(), human::time),
                check(v.last_verify.as_ref()),
                check(v.last_restore_test.as_ref()),
                server.to_owned(),
            ]
        })
        .collect();
    table::print(
        &[
            left("VOLUME"),
            left("TYPE"),
            right("MOUNTS"),
            right("USAGE"),
            left("LAST BACKUP (UTC)"),
            left("NEXT BACKUP (UTC)"),
            left("VERIFIED (UTC)"),
            left("RESTORE TEST (UTC)"),
            left("SERVER"),
        ],
        &rows,
    )?;
    if !s.events.is_empty() {
        println!();
        let events: Vec<Vec<String>> = s
            .events
            .iter()
            .map(|e| {
                vec![
                    human::time(&e.at),
                    e.kind.clone(),
                    e.volume.clone().unwrap_or_default(),
                    e.backup_id.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        table::print(&[left("WHEN (UTC)"), left("EVENT"), left("VOLUME"), left("BACKUP"), left("REASON")], &events)?;
    }
    let failures = s.events.iter().filter(|e| e.kind != "backup-succeeded").count();
    eprintln!(
        "{} volumes on {} (measured {}); {failures} failure events since the daemon started",
        s.volumes.len(),
        s.host,
        s.measured_at.as_deref().map_or_else(|| "not yet".to_owned(), human::time)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn notify_test(api: &Api, name: Option<String>, json: bool) -> Result<ExitCode> {
    let sent: Vec<NotifyTestOutcome> = api.post_long("/v1/notify/test", NotifyTest { name }).await?;
    if json {
        output::json(&sent)?;
    } else {
        for s in &sent {
            match &s.error {
                None => println!("{}: delivered", s.name),
                Some(e) => println!("{}: failed: {e}", s.name),
            }
        }
    }
    Ok(if sent.iter().all(|s| s.ok) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
