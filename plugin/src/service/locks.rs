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
    /// How many volumes have work in flight or waiting (for tests).
    #[cfg(test)]
    pub(super) fn busy(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Runs `f` on the blocking pool with the lock of volume `name` held. With a `deadline`,
    /// the caller gives up after it with [`Error::Timeout`]; the work itself, waiting for the
    /// lock included, goes on without the caller and keeps the volume's lock until the
    /// (possibly hung) syscall returns, so no second operation on the volume can start
    /// underneath it, and an Unmount Docker gave up on still releases its ID; other volumes
    /// are not affected. If the work succeeds after the caller gave up (or went away), `undo`
    /// runs on the same thread under the same lock, so a mount Docker was told had failed
    /// does not stay held.
    ///
    /// One hand-off per call when the lock is free (the common case: work on different
    /// volumes): it is taken at once and moved with the work to the blocking thread, which
    /// answers over a oneshot. Only a caller that must wait for the lock spawns a task to do
    /// the waiting.
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
        let entry = Entry { locks: self.map.clone(), key: name.to_string(), lock };
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The caller's span (e.g. a backup run's ID) goes with the work: a span crosses
        // neither `tokio::spawn` nor `spawn_blocking` by itself.
        let work = Work { inner: inner.clone(), f, undo, tx, span: tracing::Span::current() };
        match entry.lock.clone().try_lock_owned() {
            Ok(guard) => work.start(guard, entry),
            Err(_) => {
                let task = async move {
                    let guard = entry.lock.clone().lock_owned().await;
                    work.start(guard, entry);
                };
                tokio::spawn(tracing::Instrument::in_current_span(task));
            }
        }
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

/// The work of one call, waiting for its volume's lock.
struct Work<T, F> {
    inner: Arc<Inner>,
    f: F,
    undo: Option<Undo>,
    tx: tokio::sync::oneshot::Sender<Result<T>>,
    span: tracing::Span,
}

impl<T: Send + 'static, F: FnOnce(&Inner) -> Result<T> + Send + 'static> Work<T, F> {
    /// Runs on the blocking pool with `guard` held; `entry` goes when the work is done.
    fn start(self, guard: tokio::sync::OwnedMutexGuard<()>, entry: Entry) {
        let Work { inner, f, undo, tx, span } = self;
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let result = f(&inner);
                if let Err(Ok(_)) = tx.send(result)
                    && let Some(undo) = undo
                {
                    // The caller timed out and reported failure: take the effect back (the undo
                    // logs what it could not release).
                    tracing::warn!(volume = entry.key, "a mount finished after its deadline; releasing it again");
                    undo(&inner);
                }
            });
            drop(guard);
            drop(entry);
        });
    }
}

/// A volume's entry in the lock map, held by each call from before it waits for the lock
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
