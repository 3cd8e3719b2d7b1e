//! Live numbers of the runs and verifications in flight: shared between the async side (which
//! shows them, [`Progress::view`]) and the blocking thread that archives or reads (which bumps
//! them with relaxed atomics: a counter read a few bytes late is fine for a progress line).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ProgressView;

/// Live numbers of a run or verification in flight.
#[derive(Debug, Default)]
pub struct Progress {
    phase: Mutex<&'static str>,
    /// File bytes read (backup) or archive bytes read (verify).
    pub(super) done: Arc<AtomicU64>,
    /// What `done` is heading for, when known.
    pub(super) total: AtomicU64,
}

impl Progress {
    /// A progress in `phase`, nothing done yet.
    pub(super) fn in_phase(phase: &'static str) -> Self {
        let p = Self::default();
        p.set_phase(phase);
        p
    }

    pub(super) fn set_phase(&self, p: &'static str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// Starts counting again from 0 towards `total` (0: unknown).
    pub(super) fn restart(&self, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    pub(super) fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub(super) fn view(&self) -> ProgressView {
        let total = self.total.load(Ordering::Relaxed);
        ProgressView {
            phase: (*self.phase.lock().unwrap_or_else(|e| e.into_inner())).to_owned(),
            done_bytes: self.done.load(Ordering::Relaxed),
            total_bytes: (total > 0).then_some(total),
        }
    }
}

/// A reader that adds what it reads to a progress counter.
pub(super) struct CountingReader {
    pub inner: Box<dyn Read + Send>,
    pub count: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
