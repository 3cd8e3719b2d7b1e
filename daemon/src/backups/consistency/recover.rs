//! Holds left by a daemon that was killed during a consistent backup: released at start, in
//! the background, retried until the engine answers.

use std::time::Duration;

use super::holds::release_one;
use crate::backups::Backups;

/// How long the retry waits at most between two rounds.
const MAX_WAIT: Duration = Duration::from_secs(30);

impl Backups {
    /// Releases every hold in the store (containers started, unpaused, services scaled back,
    /// filesystems thawed; see the module docs for when one is left alone), newest backup
    /// first and each backup's holds in reverse order, in a background task: starting a
    /// container makes dockerd call this daemon's plugin socket (Mount), which is served only
    /// once the daemon is open. Holds that cannot be released yet (the engine not answering)
    /// are retried with a growing pause.
    pub fn release_leftover_holds(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            while !me.release_holds_once().await {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_WAIT);
            }
        });
    }

    /// At a clean stop, while both sockets are still served (starting a container makes
    /// dockerd call this daemon's Mount): releases what runs in flight hold, within 30 s. The
    /// runs themselves end with the process; their rows are settled at the next start.
    pub async fn release_holds_before_stop(&self) {
        match tokio::time::timeout(Duration::from_secs(30), self.release_holds_once()).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("some holds could not be released before the stop; released at the next start"),
            Err(_) => tracing::warn!("releasing holds took more than 30 s; the rest is released at the next start"),
        }
    }

    /// One round; true when no hold is left.
    async fn release_holds_once(&self) -> bool {
        let svc = self.e.svc.clone();
        let holds = match tokio::task::spawn_blocking(move || svc.store().holds()).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not read the holds of interrupted backups");
                return false;
            }
            Err(_) => return false,
        };
        let mut left = 0;
        for h in holds.iter().rev() {
            match release_one(&self.e.docker, &self.e.svc, h).await {
                Ok(note) => {
                    match note {
                        Some(n) => tracing::warn!(backup = h.backup, "{n}"),
                        None => {
                            tracing::info!(backup = h.backup, hold = h.name, kind = ?h.kind, "released what an interrupted backup held")
                        }
                    }
                    let (svc, b, seq) = (self.e.svc.clone(), h.backup.clone(), h.seq);
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || svc.store().drop_hold(&b, seq)).await {
                        tracing::warn!(backup = h.backup, error = %e, "could not record a released hold");
                    }
                }
                Err(e) => {
                    left += 1;
                    tracing::warn!(backup = h.backup, hold = h.name, error = %e, "could not release what an interrupted backup held yet; trying again");
                }
            }
        }
        left == 0
    }
}
