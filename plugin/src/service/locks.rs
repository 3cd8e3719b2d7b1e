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
    /// the caller gives up after it with [`Error::Timeout`] (waiting for the lock counts);
    /// the work itself, once started, runs to its end on its blocking thread and keeps the
    /// volume's lock until the (possibly hung) syscall returns, so no second operation on the
    /// volume can start underneath it; other volumes are not affected. If the work succeeds
    /// after the caller gave up (or went away), `undo` runs on the same thread under the same
    /// lock, so a mount Docker was told had failed does not stay held.
    ///
    /// One hand-off per call: the lock is taken in the caller's task and moved with the work
    /// to the blocking thread, which answers over a oneshot.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        inner: &Arc<Inner>,
        name: &str,
        deadline: Option<(&'static str, Duration)>,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
        undo: Option<Undo>,
    ) -> Result<T> {
        let work = self.start(inner, name, f, undo);
        match deadline {
            None => work.await,
            Some((op, after)) => tokio::time::timeout(after, work)
                .await
                .unwrap_or_else(|_| Err(Error::Timeout { volume: name.into(), op, after })),
        }
    }

    async fn start<T: Send + 'static>(
        &self,
        inner: &Arc<Inner>,
        name: &str,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
        undo: Option<Undo>,
    ) -> Result<T> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(name.to_string()).or_default().clone()
        };
        // Dropped on every path, also when the caller goes away while waiting for the lock.
        let entry = Entry { locks: self.map.clone(), key: name.to_string(), lock };
        let guard = entry.lock.clone().lock_owned().await;
        let (inner, key) = (inner.clone(), name.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The caller's span (e.g. a backup run's ID) goes with the work: a span does not
        // cross `spawn_blocking` by itself.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let result = f(&inner);
                if let Err(Ok(_)) = tx.send(result)
                    && let Some(undo) = undo
                {
                    // The caller timed out and reported failure: take the effect back.
                    undo(&inner);
                    tracing::warn!(volume = key, "a mount finished after its deadline; released it again");
                }
                drop(guard);
                drop(entry);
            });
        });
        rx.await.map_err(|e| Error::Internal(e.to_string()))?
    }
}

/// A volume's entry in the lock map, held by each caller from before it waits for the lock
/// until its work is done. The last one drops the entry, so the map only holds volumes with
/// work in flight or waiting.
struct Entry {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}
