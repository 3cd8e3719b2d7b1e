//! `GET /v1/status` and the status page: the host at a glance, put together from what is
//! already known — the watcher's last pass (volumes, usage, mounts), the catalog (one query),
//! the schedules and the recent events. Nothing is measured here, so it answers fast whatever
//! the volumes (500 volumes and 10,000 backups: `bench/metrics`).

use std::collections::HashMap;

use voltool_api::status::{BackupPoint, CheckPoint, EventView, HISTORY, StatusView, VolumeRow};
use voltool_plugin::store::BackupRow;

use crate::Daemon;
use crate::error::Result;

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

/// Per volume: its last [`HISTORY`] backups (oldest first) and its newest verification,
/// from the catalog's rows (newest first).
fn by_volume(rows: &[BackupRow]) -> HashMap<&str, (Vec<BackupPoint>, Option<CheckPoint>)> {
    let mut out: HashMap<&str, (Vec<BackupPoint>, Option<CheckPoint>)> = HashMap::new();
    let mut newest_check: HashMap<&str, &str> = HashMap::new();
    for r in rows {
        let (history, check) = out.entry(r.volume.as_str()).or_default();
        if history.len() < HISTORY {
            history.push(point(r));
        }
        if let (Some(at), Some(status)) = (r.verify_at.as_deref(), r.verify_status.as_deref()) {
            let newer = newest_check.get(r.volume.as_str()).is_none_or(|seen| at > *seen);
            if newer {
                newest_check.insert(r.volume.as_str(), at);
                *check = Some(CheckPoint {
                    backup: r.id.clone(),
                    at: at.to_owned(),
                    ok: status == "ok",
                    reason: r.verify_reason.clone(),
                });
            }
        }
    }
    for (history, _) in out.values_mut() {
        history.reverse();
    }
    out
}

impl Daemon {
    /// The host's summary.
    ///
    /// # Errors
    /// Store errors.
    pub async fn status(&self) -> Result<StatusView> {
        let svc = self.volumes().clone();
        let rows = tokio::task::spawn_blocking(move || svc.store().list_backups(None))
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
        let volumes = measured.as_ref().map_or_else(Vec::new, |(_, vols)| {
            vols.iter()
                .map(|v| {
                    let (history, last_verify) = backups.remove(v.name.as_str()).unwrap_or_default();
                    VolumeRow {
                        name: v.name.clone(),
                        kind: v.kind.clone(),
                        mounted: v.mounted,
                        mounts: v.mounts,
                        size_limit_bytes: v.size_limit,
                        used_bytes: v.used,
                        server_up: v.server_up,
                        next_backup: next.remove(&v.name),
                        last_backup: history.last().cloned(),
                        last_verify,
                        history,
                    }
                })
                .collect()
        });
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
