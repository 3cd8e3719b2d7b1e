//! `GET /v1/status` and the status page: the host at a glance, put together from what is
//! already known — the store's volumes, the watcher's last pass (usage, mounts, servers), the
//! catalog (one query), the schedules and the recent events. Nothing is measured here, so it answers fast whatever
//! the volumes (500 volumes and 10,000 backups: `bench/metrics`).

use std::collections::HashMap;

use voltool_api::status::{BackupPoint, CheckPoint, EventView, HISTORY, StatusView, VolumeRow};
use voltool_plugin::store::{BackupRow, BackupStatus, VolumeRecord};

use crate::Daemon;
use crate::error::Result;
use crate::observe::{Event, EventKind, Observer, VolumeSample};

fn point(r: &BackupRow) -> BackupPoint {
    BackupPoint {
        id: r.id.clone(),
        at: r.started_at.clone(),
        status: r.status.as_str().to_owned(),
        stored_bytes: r.bytes_out,
        duration_ms: r.duration_ms,
        reason: r.reason.clone(),
    }
}

/// What the catalog says of one volume: its last [`HISTORY`] backups (oldest first), its
/// newest verification and its newest restore test.
#[derive(Debug, Default)]
struct Checked {
    history: Vec<BackupPoint>,
    verify: Option<CheckPoint>,
    test: Option<CheckPoint>,
}

/// Keeps `(at, status, reason)` of backup `r` in `slot` if it is newer than what is there.
fn newest(slot: &mut Option<CheckPoint>, r: &BackupRow, check: (Option<&str>, Option<&str>, Option<&String>)) {
    let (Some(at), Some(status), reason) = check else { return };
    if slot.as_ref().is_none_or(|seen| at > seen.at.as_str()) {
        *slot =
            Some(CheckPoint { backup: r.id.clone(), at: at.to_owned(), ok: status == "ok", reason: reason.cloned() });
    }
}

/// [`Checked`] per volume, from the catalog's rows (newest first).
fn by_volume(rows: &[BackupRow]) -> HashMap<&str, Checked> {
    let mut out: HashMap<&str, Checked> = HashMap::new();
    for r in rows {
        let c = out.entry(r.volume.as_str()).or_default();
        if c.history.len() < HISTORY {
            c.history.push(point(r));
        }
        newest(&mut c.verify, r, (r.verify_at.as_deref(), r.verify_status.as_deref(), r.verify_reason.as_ref()));
        newest(&mut c.test, r, (r.test_at.as_deref(), r.test_status.as_deref(), r.test_reason.as_ref()));
    }
    for c in out.values_mut() {
        c.history.reverse();
    }
    out
}

/// The events the catalog recorded, newest `n`: each backup that ended, each verification and
/// restore test that failed (a restore test's verdict is its backup's verification too: one
/// event).
pub(crate) fn past_events(rows: &[BackupRow], o: &Observer, n: usize) -> Vec<Event> {
    let parse = |t: Option<&str>| {
        t.and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
    };
    let mut out = Vec::new();
    for r in rows {
        let mut add = |kind, at: Option<&str>, reason: Option<&String>| {
            if let Some(at) = parse(at) {
                let mut e = o.event(kind).volume(&r.volume).backup_id(&r.id).target(&r.target_ref);
                e.at = at;
                e.reason = reason.cloned();
                out.push(e);
            }
        };
        match r.status {
            BackupStatus::Complete => add(EventKind::BackupSucceeded, r.finished_at.as_deref(), None),
            BackupStatus::Failed => add(EventKind::BackupFailed, r.finished_at.as_deref(), r.reason.as_ref()),
            _ => {}
        }
        let tested = r.test_at.is_some() && r.test_at == r.verify_at;
        if r.verify_status.as_deref() == Some("failed") && !tested {
            add(EventKind::VerifyFailed, r.verify_at.as_deref(), r.verify_reason.as_ref());
        }
        if r.test_status.as_deref() == Some("failed") {
            add(EventKind::RestoreTestFailed, r.test_at.as_deref(), r.test_reason.as_ref());
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.at));
    out.truncate(n);
    out
}

/// A volume's row: what the store says of it (type, size limit), what the watcher last
/// measured (mounts, usage, server; nothing for a volume made since), and its backups.
fn row_of(r: &VolumeRecord, sample: Option<&VolumeSample>, checked: Checked, next_backup: Option<String>) -> VolumeRow {
    let Checked { history, verify, test } = checked;
    VolumeRow {
        name: r.name.clone(),
        kind: r.spec.kind.to_string(),
        mounted: sample.is_some_and(|v| v.mounted),
        mounts: sample.map_or(0, |v| v.mounts),
        size_limit_bytes: r.spec.size,
        used_bytes: sample.and_then(|v| v.used),
        server_up: sample.and_then(|v| v.server_up),
        next_backup,
        last_backup: history.last().cloned(),
        last_verify: verify,
        last_restore_test: test,
        history,
    }
}

impl Daemon {
    /// The host's summary.
    ///
    /// # Errors
    /// Store errors.
    pub async fn status(&self) -> Result<StatusView> {
        let svc = self.volumes().clone();
        let (rows, records) = tokio::task::spawn_blocking(move || {
            Ok::<_, voltool_plugin::store::StoreError>((svc.store().list_backups(None)?, svc.store().list_volumes()?))
        })
        .await
        .map_err(|e| crate::Error::Internal(e.to_string()))??;
        let mut backups = by_volume(&rows);
        let mut next: HashMap<String, String> = HashMap::new();
        for s in self.backups().schedules().await? {
            if let Some(t) = s.next_run {
                let slot = next.entry(s.volume).or_insert_with(|| t.clone());
                if t < *slot {
                    *slot = t;
                }
            }
        }
        let measured = self.observer().measured();
        let samples: HashMap<&str, &VolumeSample> =
            measured.as_ref().map(|(_, vols)| vols.iter().map(|v| (v.name.as_str(), v)).collect()).unwrap_or_default();
        // Every volume the store has, as the watcher last measured it; one made since its last
        // pass shows at once, not measured yet.
        let volumes = records
            .iter()
            .map(|r| {
                let checked = backups.remove(r.name.as_str()).unwrap_or_default();
                row_of(r, samples.get(r.name.as_str()).copied(), checked, next.remove(&r.name))
            })
            .collect();
        let events = self
            .observer()
            .recent()
            .into_iter()
            .map(|e| EventView {
                kind: e.kind.to_string(),
                at: e.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                volume: e.volume,
                backup_id: e.backup_id,
                reason: e.reason,
            })
            .collect();
        Ok(StatusView {
            host: self.observer().host().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            measured_at: measured.map(|(at, _)| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            volumes,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_verification_and_restore_test_of_each_volume_are_kept_apart() {
        let row =
            |id: &str, vol: &str| BackupRow::running(id, vol, "default", "file:///b", "manual", "2026-12-01T00:00:00Z");
        let mut a1 = row("a1", "a");
        (a1.verify_status, a1.verify_at) = (Some("ok".into()), Some("2026-12-03T00:00:00Z".into()));
        let mut a2 = row("a2", "a");
        (a2.verify_status, a2.verify_at) = (Some("failed".into()), Some("2026-12-02T00:00:00Z".into()));
        (a2.test_status, a2.test_at) = (Some("failed".into()), Some("2026-12-02T00:00:00Z".into()));
        a2.test_reason = Some("the check command exited 2".into());
        let b1 = row("b1", "b");
        let rows = [a1, a2, b1];
        let by = by_volume(&rows);
        let a = &by["a"];
        assert_eq!(a.history.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["a2", "a1"], "oldest first");
        let v = a.verify.as_ref().expect("verified");
        assert_eq!((v.backup.as_str(), v.ok), ("a1", true), "the newest verification");
        let t = a.test.as_ref().expect("tested");
        assert_eq!((t.backup.as_str(), t.ok, t.reason.as_deref()), ("a2", false, Some("the check command exited 2")));
        assert!(by["b"].verify.is_none() && by["b"].test.is_none());
    }

    #[test]
    fn the_catalog_gives_the_events_of_past_runs_and_checks_newest_first() {
        let o = Observer::new().expect("observer");
        let row = |id: &str, status, finished: &str| {
            let mut r = BackupRow::running(id, "v", "default", "file:///b", "manual", "2026-12-01T00:00:00Z");
            r.status = status;
            r.finished_at = Some(finished.into());
            r
        };
        let ok = row("ok", BackupStatus::Complete, "2026-12-01T01:00:00Z");
        let mut bad = row("bad", BackupStatus::Failed, "2026-12-01T02:00:00Z");
        bad.reason = Some("target full".into());
        let mut tested = row("tested", BackupStatus::Complete, "2026-12-01T03:00:00Z");
        for (s, at) in
            [(&mut tested.verify_status, &mut tested.verify_at), (&mut tested.test_status, &mut tested.test_at)]
        {
            (*s, *at) = (Some("failed".into()), Some("2026-12-01T04:00:00Z".into()));
        }
        let running = BackupRow::running("now", "v", "default", "file:///b", "manual", "2026-12-01T05:00:00Z");
        let rows = [running, tested, bad, ok];
        let got: Vec<(EventKind, String)> =
            past_events(&rows, &o, 10).into_iter().map(|e| (e.kind, e.backup_id.unwrap_or_default())).collect();
        let want = [
            (EventKind::RestoreTestFailed, "tested"),
            (EventKind::BackupSucceeded, "tested"),
            (EventKind::BackupFailed, "bad"),
            (EventKind::BackupSucceeded, "ok"),
        ];
        assert_eq!(got, want.map(|(k, id)| (k, id.to_owned())), "one event per restore test, none for a run in flight");
        assert_eq!(past_events(&rows, &o, 2).len(), 2);
    }
}
