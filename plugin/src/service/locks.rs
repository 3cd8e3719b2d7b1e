//! One async lock per volume: work on one volume is serialised, different volumes never wait
//! on each other. The map holds an entry only while some work on the volume is in flight or
//! waiting, so it stays as small as the number of busy volumes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::inner::Inner;
use crate::error::{Error, Result};

/// Takes back the effect of work whose caller gave up waiting.
pub(super) type Undo = Box<dyn FnOnce(&Inner) + Send>;

/// The per-volume locks.
#[derive(Clone, Default)]
pub(super) struct VolumeLocks {
    map: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl VolumeLocks {
    /// Runs `f` on the blocking pool with the lock of volume `name` held. With a `deadline`,
    /// the caller gives up after it with [`Error::Timeout`]; the work itself runs in its own
    /// task that keeps the volume's lock until the (possibly hung) syscall returns, so no
    /// second operation on the volume can start underneath it; other volumes are not
    /// affected. If the work succeeds after the caller gave up, `undo` runs (under the same
    /// lock), so a mount Docker was told had failed does not stay held.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        inner: &Arc<Inner>,
        name: &str,
        deadline: Option<(&'static str, Duration)>,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
        undo: Option<Undo>,
    ) -> Result<T> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(name.to_string()).or_default().clone()
        };
        let (inner, locks, key) = (inner.clone(), self.map.clone(), name.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The caller's span (e.g. a backup run's ID) goes with the work: a span crosses
        // neither `tokio::spawn` nor `spawn_blocking` by itself.
        let task = async move {
            {
                let _guard = lock.lock().await;
                let (work, span) = (inner.clone(), tracing::Span::current());
                let result = tokio::task::spawn_blocking(move || span.in_scope(|| f(&work)))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()));
                let result = result.and_then(|r| r);
                if let Err(Ok(_)) = tx.send(result)
                    && let Some(undo) = undo
                {
                    // The caller timed out and reported failure: take the effect back.
                    let _ = tokio::task::spawn_blocking(move || undo(&inner)).await;
                    tracing::warn!(volume = key, "a mount finished after its deadline; released it again");
                }
            }
            // Drop the map entry when nobody else holds or waits for it, so the map only holds
            // volumes with work in flight.
            let mut map = locks.lock().unwrap_or_else(|p| p.into_inner());
            if Arc::strong_count(&lock) == 2 {
                map.remove(&key);
            }
        };
        tokio::spawn(tracing::Instrument::in_current_span(task));
        let joined = match deadline {
            None => rx.await,
            Some((op, after)) => match tokio::time::timeout(after, rx).await {
                Ok(j) => j,
                Err(_) => return Err(Error::Timeout { volume: name.into(), op, after }),
            },
        };
        joined.map_err(|e| Error::Internal(e.to_string()))?
    }
}
