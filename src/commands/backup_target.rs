//! `voltool backup ls --target T` and `voltool backup sync`: what a target holds, and the
//! catalog made to match it. Each reads the daemon's answer as its `voltool-api` type.

use std::process::ExitCode;

use crate::client::{Api, segment};
use crate::human::{size, time};
use crate::output;
use crate::table::{self, left, right};
use anyhow::Result;
use voltool_api::{FoundState, Skipped, SyncBackups, SyncReport, TargetBackup, TargetListing, TargetSync};

/// `backup ls [VOLUME] --target [T]`: every backup on the target (`T` empty: the default
/// target), of one volume or all.
pub async fn ls(api: &Api, volume: Option<&str>, target: &str, json: bool) -> Result<ExitCode> {
    let path = match target {
        "" => "/v1/targets/backups".to_owned(),
        t => format!("/v1/targets/backups?target={}", segment(t)),
    };
    let mut listing: TargetListing = api.get_long(&path).await?;
    if let Some(v) = volume {
        listing.backups.retain(|b| b.volume.as_deref() == Some(v));
    }
    if json {
        output::json(&listing)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = listing.backups.iter().map(listing_row).collect();
    let columns = [
        left("ID"),
        left("VOLUME"),
        left("CREATED (UTC)"),
        left("LEVEL"),
        left("PARENT"),
        right("SIZE"),
        left("CATALOG"),
        left("STATE"),
    ];
    table::print(&columns, &rows)?;
    eprintln!("{}", listing_summary(&listing));
    Ok(ExitCode::SUCCESS)
}

/// One line of the listing's table.
fn listing_row(b: &TargetBackup) -> Vec<String> {
    let dash = || "-".to_owned();
    // Without a readable manifest there is no level to show.
    let level = match (b.level, b.created.is_some()) {
        (_, false) => dash(),
        (0, true) => "full".into(),
        (n, true) => format!("+{n}"),
    };
    let catalog = b.catalog.as_ref().map_or_else(dash, |c| {
        let mut s = c.origin.clone();
        if c.vanished_at.is_some() {
            s.push_str(", vanished");
        }
        if c.status != voltool_api::BackupStatus::Complete {
            s.push_str(&format!(", {}", c.status));
        }
        s
    });
    let state = match (&b.state, &b.problem) {
        (FoundState::Complete, _) | (_, None) => b.state.to_string(),
        (FoundState::Encrypted, Some(p)) => p.clone(),
        (s, Some(p)) => format!("{s}: {p}"),
    };
    vec![
        b.id.clone(),
        b.volume.clone().unwrap_or_else(dash),
        b.created.as_deref().map_or_else(dash, time),
        level,
        b.parent.clone().unwrap_or_else(dash),
        b.archive_size.map_or_else(dash, size),
        catalog,
        state,
    ]
}

/// `N backups on T: a complete (b in this host's catalog), ...`.
fn listing_summary(l: &TargetListing) -> String {
    let count = |s: FoundState| l.backups.iter().filter(|b| b.state == s).count();
    let known = l.backups.iter().filter(|b| b.state == FoundState::Complete && b.catalog.is_some()).count();
    format!(
        "{} backups on {}: {} complete ({known} in this host's catalog), {} incomplete, {} unreadable, {} encrypted",
        l.backups.len(),
        l.target,
        count(FoundState::Complete),
        count(FoundState::Incomplete),
        count(FoundState::Unreadable),
        count(FoundState::Encrypted),
    )
}

/// `backup sync [--target T] [--adopt]`: exit status 1 when a target could not be read.
pub async fn sync(api: &Api, req: SyncBackups, json: bool) -> Result<ExitCode> {
    let report: SyncReport = api.post_long("/v1/backups/sync", req).await?;
    if json {
        output::json(&report)?;
    } else {
        for t in &report.targets {
            print_sync(t);
        }
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One target's summary line, then a line per backup that changed or was left out.
fn print_sync(t: &TargetSync) {
    if let Some(e) = &t.error {
        eprintln!("voltool: {e}");
        return;
    }
    println!("{}", sync_summary(t));
    let ids = |what: &str, ids: &[String]| ids.iter().map(|id| format!("  {what:<10} {id}")).collect::<Vec<_>>();
    let skipped = |what: &str, s: &[Skipped]| {
        s.iter().map(|s| format!("  {what:<10} {}: {}", s.id, s.problem)).collect::<Vec<_>>()
    };
    let lines = [
        ids("added", &t.added),
        ids("adopted", &t.adopted),
        ids("vanished", &t.vanished),
        ids("back", &t.returned),
        skipped("unreadable", &t.unreadable),
        skipped("incomplete", &t.incomplete),
        ids("encrypted", &t.encrypted),
    ];
    for l in lines.iter().flatten() {
        println!("{}", output::printable(l));
    }
}

/// `TARGET: 3 added, 0 adopted, ...`.
fn sync_summary(t: &TargetSync) -> String {
    format!(
        "{}: {} added, {} adopted, {} vanished, {} back, {} unreadable, {} incomplete, {} encrypted (needs the identity), {} already known",
        t.target,
        t.added.len(),
        t.adopted.len(),
        t.vanished.len(),
        t.returned.len(),
        t.unreadable.len(),
        t.incomplete.len(),
        t.encrypted.len(),
        t.known
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(id: &str, state: FoundState) -> TargetBackup {
        TargetBackup {
            id: id.into(),
            state,
            problem: None,
            volume: Some("db".into()),
            created: Some("2026-01-01T00:00:00Z".into()),
            level: 0,
            parent: None,
            archive_size: Some(2048),
            files: Some(3),
            catalog: None,
        }
    }

    #[test]
    fn listing_rows_show_chains_catalog_and_problems() {
        let full = found("db-20260101T000000Z-aaaaaa", FoundState::Complete);
        assert_eq!(
            listing_row(&full),
            ["db-20260101T000000Z-aaaaaa", "db", "2026-01-01 00:00", "full", "-", "2.0 KiB", "-", "complete"]
        );
        let mut link = found("db-20260101T010000Z-bbbbbb", FoundState::Complete);
        link.level = 2;
        link.parent = Some("db-x".into());
        link.catalog = Some(voltool_api::CatalogMark {
            origin: "synced".into(),
            status: voltool_api::BackupStatus::Complete,
            target_url: "file:///b".into(),
            vanished_at: Some("t".into()),
        });
        let row = listing_row(&link);
        assert_eq!((row[3].as_str(), row[4].as_str(), row[6].as_str()), ("+2", "db-x", "synced, vanished"));
        let mut bad = found("junk", FoundState::Unreadable);
        (bad.volume, bad.created, bad.archive_size) = (None, None, None);
        bad.problem = Some("junk.manifest.json: manifest: expected value".into());
        let row = listing_row(&bad);
        assert_eq!(row[1..6], ["-", "-", "-", "-", "-"]);
        assert_eq!(row[7], "unreadable: junk.manifest.json: manifest: expected value");
        let mut enc = found("sec", FoundState::Encrypted);
        enc.problem = Some("encrypted (needs the identity)".into());
        assert_eq!(listing_row(&enc)[7], "encrypted (needs the identity)");
        let l = TargetListing { target: "file:///b".into(), backups: vec![full, link, bad, enc] };
        assert_eq!(
            listing_summary(&l),
            "4 backups on file:///b: 2 complete (1 in this host's catalog), 0 incomplete, 1 unreadable, 1 encrypted"
        );
    }
}
