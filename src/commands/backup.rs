//! `voltool backup run|ls|show|verify|prune|schedule ls`: one function per subcommand, each
//! reading the daemon's answer as its `voltool-api` type (`ls --target` and `sync`, the
//! target's side, in `backup_target.rs`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{BackupCommand, ScheduleCommand};
use crate::client::{Api, segment};
use crate::human::{duration_ms, size, time};
use crate::output;
use crate::table::{self, left, right};
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use voltool_api::{
    BackupStarted, BackupView, PruneBackups, PruneItem, RestoreTestOutcome, RestoreTestRequest, RunBackup,
    ScheduleView, SyncBackups, VerifyBackup, VerifyOutcome,
};

/// Dispatches `voltool backup ...`.
pub async fn run(api: &Api, cmd: BackupCommand) -> Result<ExitCode> {
    let tty = std::io::stderr().is_terminal();
    match cmd {
        BackupCommand::Run { volume, target, verify, consistency, incremental, rehash, json, detach } => {
            let req = RunBackup { volume, target, verify, consistency, incremental, rehash };
            run_backup(api, req, json, detach, tty).await
        }
        BackupCommand::Ls { volume, target: Some(target), json } => {
            super::backup_target::ls(api, volume.as_deref(), &target, json).await
        }
        BackupCommand::Ls { volume, target: None, json } => ls(api, volume.as_deref(), json).await,
        BackupCommand::Sync { target, adopt, json } => {
            super::backup_target::sync(api, SyncBackups { target, adopt }, json).await
        }
        BackupCommand::Cat { id, path } => {
            let mut out = tokio::io::stdout();
            let q = format!("/v1/backups/{}/cat?path={}", segment(&id), segment(&path));
            api.get_stream(&q, &mut out).await?;
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Show { id, json } => show(api, &id, json).await,
        BackupCommand::Verify { id, restore_test, check_cmd, json } => {
            verify(api, &id, restore_test.then_some(RestoreTestRequest { check_cmd }), json, tty).await
        }
        BackupCommand::Prune { volume, keep, dry_run, json } => {
            prune(api, PruneBackups { volume, keep, dry_run }, json).await
        }
        BackupCommand::Schedule(ScheduleCommand::Ls { json }) => schedule_ls(api, json).await,
    }
}

/// An optional value as a table cell or a `show` line: `-` when absent.
fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Follows a run until it is finished (including its verification), showing a progress bar
/// on a terminal. Returns the final catalog entry.
async fn follow(api: &Api, id: &str, show_bar: bool) -> Result<BackupView> {
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
    // The daemon answers when the run ends or after `wait_ms`: the end is seen at once, and
    // the progress bar is updated four times a second.
    let path = format!("{path}?wait_ms={}", if show_bar { 250 } else { 2000 });
    loop {
        let asked = std::time::Instant::now();
        let v: BackupView = api.get(&path).await?;
        if let (Some(bar), Some(p)) = (&bar, &v.progress) {
            bar.set_message(p.phase.clone());
            bar.set_length(p.total_bytes.map_or(p.done_bytes, |t| t.max(p.done_bytes)));
            bar.set_position(p.done_bytes);
        }
        if v.is_finished() {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(v);
        }
        // A daemon that answered at once without the run having ended did not wait (one
        // older than `wait_ms`): do not ask it in a busy loop.
        if asked.elapsed() < Duration::from_millis(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `backup run`: starts a run, follows it unless `detach`, prints the ID last.
async fn run_backup(api: &Api, req: RunBackup, json: bool, detach: bool, tty: bool) -> Result<ExitCode> {
    let (volume, verify) = (req.volume.clone(), req.verify);
    let started: BackupStarted = api.post("/v1/backups", req).await?;
    let id = started.id.clone();
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
    let r = &done.record;
    if r.status != voltool_api::BackupStatus::Complete {
        bail!("backup {id} of volume {volume} failed: {}", or_dash(r.reason.as_deref()));
    }
    if verify && r.verify_status.as_deref() != Some("ok") {
        bail!(
            "backup {id} was written but its verification failed: {}",
            r.verify_reason.as_deref().unwrap_or("not verified")
        );
    }
    if json {
        output::json(&done)?;
    } else {
        let (bin, bout) = (r.bytes_in.unwrap_or(0), r.bytes_out.unwrap_or(0));
        let ms = r.duration_ms.unwrap_or(0).max(1);
        eprintln!(
            "{} files, {} read, {} stored in {} ({}, {}/s){}",
            r.files.unwrap_or(0),
            size(bin),
            size(bout),
            r.target_url,
            duration_ms(ms),
            size(bin.saturating_mul(1000) / ms),
            if verify { ", verified" } else { "" }
        );
        if let Some(line) = consistency_line(r) {
            eprintln!("{line}");
        }
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What the run did for consistency, in one line (`None` for a `none` run nobody was
/// writing to).
fn consistency_line(r: &voltool_api::BackupRecord) -> Option<String> {
    let mode = r.consistency.as_deref().unwrap_or("none");
    let mut parts = Vec::new();
    if let Some(parent) = &r.parent {
        parts.push(format!("incremental level {} after {parent}", r.level));
    }
    if mode != "none" {
        let downtime =
            r.downtime_ms.map_or_else(|| "nothing held".into(), |ms| format!("downtime {}", duration_ms(ms)));
        parts.push(format!("consistency {mode}: {downtime}, snapshot {}", r.snapshot.as_deref().unwrap_or("none")));
    }
    if let Some(note) = &r.consistency_note {
        parts.push(note.clone());
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `backup ls [VOLUME]`: the catalog, newest first.
async fn ls(api: &Api, volume: Option<&str>, json: bool) -> Result<ExitCode> {
    let path = match volume {
        Some(v) => format!("/v1/backups?volume={}", segment(v)),
        None => "/v1/backups".into(),
    };
    let list: Vec<BackupView> = api.get(&path).await?;
    if json {
        output::json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            let r = &b.record;
            vec![
                r.id.clone(),
                r.volume.clone(),
                match &r.vanished_at {
                    // `backup sync` found its objects gone from the target.
                    Some(_) => format!("{} (vanished)", r.status),
                    None => r.status.to_string(),
                },
                or_dash(r.verify_status.as_deref()),
                r.bytes_out.map_or_else(|| "-".into(), size),
                time(&r.started_at),
                r.target_url.clone(),
            ]
        })
        .collect();
    let columns = [
        left("ID"),
        left("VOLUME"),
        left("STATUS"),
        left("VERIFIED"),
        right("SIZE"),
        left("STARTED (UTC)"),
        left("TARGET"),
    ];
    table::print(&columns, &rows)?;
    eprintln!("{}", ls_summary(&list));
    Ok(ExitCode::SUCCESS)
}

/// `backup ls`'s line on stderr: `3 backups (1 failed, 1 running), 12.0 MiB stored`.
fn ls_summary(list: &[BackupView]) -> String {
    use voltool_api::BackupStatus;
    if list.is_empty() {
        return "no backups".into();
    }
    let count = |s: BackupStatus| list.iter().filter(|b| b.record.status == s).count();
    let stored: u64 = list
        .iter()
        .filter(|b| b.record.status == BackupStatus::Complete && b.record.vanished_at.is_none())
        .filter_map(|b| b.record.bytes_out)
        .sum();
    let mut notes: Vec<String> = [(count(BackupStatus::Failed), "failed"), (count(BackupStatus::Running), "running")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    let vanished = list.iter().filter(|b| b.record.vanished_at.is_some()).count();
    if vanished > 0 {
        notes.push(format!("{vanished} vanished from their target"));
    }
    let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) };
    let plural = if list.len() == 1 { "" } else { "s" };
    format!("{} backup{plural}{notes}, {} stored", list.len(), size(stored))
}

/// `backup show ID`: one `key: value` line per field the entry has.
async fn show(api: &Api, id: &str, json: bool) -> Result<ExitCode> {
    let b: BackupView = api.get(&format!("/v1/backups/{}", segment(id))).await?;
    if json {
        output::json(&b)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (key, value) in show_lines(&b) {
        if let Some(value) = value {
            println!("{:<14} {value}", format!("{key}:"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The fields `backup show` prints, in its order; `None` for a field the entry lacks.
fn show_lines(b: &BackupView) -> [(&'static str, Option<String>); 21] {
    let r = &b.record;
    let num = |v: Option<u64>| v.map(|v| v.to_string());
    [
        ("id", Some(r.id.clone())),
        ("volume", Some(r.volume.clone())),
        ("status", Some(r.status.to_string())),
        ("reason", r.reason.clone()),
        ("trigger", Some(r.trigger.clone())),
        ("target_url", Some(r.target_url.clone())),
        ("started_at", Some(r.started_at.clone())),
        ("finished_at", r.finished_at.clone()),
        ("duration_ms", num(r.duration_ms)),
        ("files", num(r.files)),
        ("bytes_in", num(r.bytes_in)),
        ("bytes_out", num(r.bytes_out)),
        ("sha256", r.sha256.clone()),
        ("encrypted", r.encrypted.then(|| "age".to_string())),
        ("verify_status", r.verify_status.clone()),
        ("verify_at", r.verify_at.clone()),
        ("verify_reason", r.verify_reason.clone()),
        ("level", (r.level > 0).then(|| r.level.to_string())),
        ("parent", r.parent.clone()),
        // Backups found on the target by `backup sync`; `own` is every other one.
        ("origin", (r.origin != "own").then(|| r.origin.clone())),
        ("vanished_at", r.vanished_at.clone()),
    ]
}

/// `backup verify --json`: the verification, the restore test when asked for, and whether
/// both passed.
#[derive(Serialize)]
struct VerifyReport {
    verify: VerifyOutcome,
    restore_test: Option<RestoreTestOutcome>,
    ok: bool,
}

/// `backup verify ID [--restore-test]`: exit status 1 when either fails.
async fn verify(
    api: &Api,
    id: &str,
    restore_test: Option<RestoreTestRequest>,
    json: bool,
    tty: bool,
) -> Result<ExitCode> {
    let bar = (tty && !json).then(|| {
        let b = ProgressBar::new_spinner();
        b.set_message(format!("verifying {id}"));
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    let res: VerifyOutcome = api.post_long(&format!("/v1/backups/{}/verify", segment(id)), VerifyBackup {}).await?;
    let test: Option<RestoreTestOutcome> = match restore_test {
        Some(req) if res.ok => {
            if let Some(b) = &bar {
                b.set_message(format!("restore test of {id}"));
            }
            Some(api.post_long(&format!("/v1/backups/{}/restore-test", segment(id)), req).await?)
        }
        _ => None,
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let ok = res.ok && test.as_ref().is_none_or(|t| t.ok);
    if json {
        output::json(&VerifyReport { verify: res, restore_test: test, ok })?;
    } else {
        print_verify(id, &res, test.as_ref());
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_verify(id: &str, res: &VerifyOutcome, test: Option<&RestoreTestOutcome>) {
    if res.ok {
        println!(
            "backup {id}: ok — {} entries, {} files, {} checked, archive {}",
            res.entries.unwrap_or(0),
            res.files.unwrap_or(0),
            size(res.bytes.unwrap_or(0)),
            size(res.archive_bytes.unwrap_or(0))
        );
    } else {
        eprintln!("voltool: {}", or_dash(res.error.as_deref()));
    }
    let Some(t) = test else { return };
    if t.ok {
        println!("backup {id}: restore test ok (check command exited 0)");
        return;
    }
    let why = t.error.clone().unwrap_or_else(|| format!("the check command exited {}", or_null(t.status)));
    let output = Some(t.output.trim_end()).filter(|o| !o.trim().is_empty());
    eprintln!(
        "voltool: backup {id}: restore test failed: {why}{}",
        output.map_or_else(String::new, |o| format!("\n{o}"))
    );
}

/// A status as JSON shows it: the number, or `null`.
fn or_null(v: Option<i32>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

/// `backup prune [VOLUME] [--keep ...] [--dry-run]`: exit status 1 when a delete failed.
async fn prune(api: &Api, req: PruneBackups, json: bool) -> Result<ExitCode> {
    let dry_run = req.dry_run;
    let items: Vec<PruneItem> = api.post_long("/v1/backups/prune", req).await?;
    let failed = items.iter().any(|i| i.error.is_some());
    if json {
        output::json(&items)?;
    } else if items.is_empty() {
        eprintln!("nothing to prune (no volume with a backup-keep policy, or no --keep given)");
    } else {
        let verb = if dry_run { "would delete" } else { "deleted" };
        let (kept, errors) =
            (items.iter().filter(|i| i.keep).count(), items.iter().filter(|i| i.error.is_some()).count());
        let gone = items.len() - kept - errors;
        let rows: Vec<Vec<String>> = items
            .into_iter()
            .map(|i| {
                let action = match i.error {
                    Some(e) => format!("error: {e}"),
                    None if i.keep => "keep".into(),
                    None => verb.into(),
                };
                vec![i.id, i.volume, action, i.reasons.join(", ")]
            })
            .collect();
        table::print(&[left("ID"), left("VOLUME"), left("ACTION"), left("KEPT BY")], &rows)?;
        let failed = if errors > 0 { format!(", {errors} could not be deleted") } else { String::new() };
        eprintln!("{kept} kept, {gone} {verb}{failed}");
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `backup schedule ls`: every schedule with its next run.
async fn schedule_ls(api: &Api, json: bool) -> Result<ExitCode> {
    let list: Vec<ScheduleView> = api.get("/v1/schedules").await?;
    if json {
        output::json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .map(|v| {
            let next = or_dash(v.next_run.as_deref().map(time));
            vec![v.volume, v.cron, next, v.target, or_dash(v.keep), v.verify.to_string(), v.source]
        })
        .collect();
    let columns = [
        left("VOLUME"),
        left("CRON"),
        left("NEXT RUN (UTC)"),
        left("TARGET"),
        left("KEEP"),
        left("VERIFY"),
        left("SOURCE"),
    ];
    table::print(&columns, &rows)?;
    if rows.is_empty() {
        eprintln!("no schedules (volume option backup-schedule, or [schedules.NAME] in the config file)");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed run as the daemon sends it: absent measurements are `null`.
    fn view() -> BackupView {
        serde_json::from_str(
            r#"{"id": "v-1", "volume": "v", "target_ref": "default", "target_url": "file:///b",
                "trigger": "manual", "started_at": "t0", "finished_at": null, "duration_ms": 12,
                "status": "failed", "reason": "disk full", "bytes_in": null, "bytes_out": null,
                "files": null, "sha256": null, "verify_status": null, "verify_at": null,
                "verify_reason": null}"#,
        )
        .expect("a backup view")
    }

    #[test]
    fn show_prints_the_fields_an_entry_has_in_order() {
        let lines: Vec<(&str, String)> = show_lines(&view()).into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        assert_eq!(
            lines,
            [
                ("id", "v-1".to_string()),
                ("volume", "v".into()),
                ("status", "failed".into()),
                ("reason", "disk full".into()),
                ("trigger", "manual".into()),
                ("target_url", "file:///b".into()),
                ("started_at", "t0".into()),
                ("duration_ms", "12".into()),
            ]
        );
    }

    #[test]
    fn absent_values_are_dashes() {
        assert_eq!(or_dash(None::<&str>), "-");
        assert_eq!(or_dash(Some("x")), "x");
        assert_eq!(or_null(None), "null");
        assert_eq!(or_null(Some(3)), "3");
    }
}
