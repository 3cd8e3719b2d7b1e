//! Group commit of Mount-ID changes. Every Mount and Unmount changes a volume's Mount IDs, and
//! each change must be on disk (`synchronous=FULL`: the WAL fsynced) before Docker is
//! answered. One commit per change would make every container start of the host wait its turn
//! for one fsync after another behind the writer connection. Instead, callers queue their
//! changes; whoever finds no commit in progress becomes the leader, applies everything queued
//! in one transaction (each caller's changes under a savepoint of their own, so one caller's
//! failure leaves the others' in), commits once, and hands every caller its result. A caller
//! returns only after the commit that holds its change, so durability is what it was.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, TransactionBehavior};

/// One change to the Mount IDs of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MountIdOp {
    /// Adds an ID; yields 1 when it was new, 0 when it was held already.
    Add { volume: String, id: String },
    /// Removes an ID; yields how many remain on the volume.
    Remove { volume: String, id: String },
    /// Drops every ID of the volume; yields how many there were.
    Clear { volume: String },
}

/// At most this many callers' changes go into one transaction.
const MAX_BATCH: usize = 256;

type Group = Vec<MountIdOp>;
type Outcome = rusqlite::Result<Vec<usize>>;

/// The queue and the leader's state.
#[derive(Debug, Default)]
pub(super) struct Batcher {
    state: Mutex<BatchState>,
    /// Transactions run so far (one per batch).
    batches: AtomicU64,
}

#[derive(Debug, Default)]
struct BatchState {
    queue: Vec<(Group, Arc<Slot>)>,
    leading: bool,
}

/// Where one caller waits: each has its own, so a commit wakes exactly its callers and the
/// next leader, not everyone waiting.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
enum SlotState {
    #[default]
    Queued,
    /// The previous leader handed the next batch to this caller.
    Lead,
    Done(Outcome),
}

impl Slot {
    fn set(&self, to: SlotState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = to;
        self.cv.notify_one();
    }

    /// The leader's own result: nobody sleeps on its slot, so no wake-up.
    fn set_quietly(&self, to: SlotState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Batcher {
    fn lock(&self) -> MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `ops` (all or none of them) in a transaction on `writer` and returns each one's
    /// result once that transaction is committed. Blocks the calling thread.
    ///
    /// # Errors
    /// The first SQLite error of `ops` (none of them is applied), or the commit's.
    pub(super) fn submit(&self, writer: &Mutex<Connection>, ops: Group) -> Outcome {
        let slot = Arc::new(Slot::default());
        let mut lead = {
            let mut st = self.lock();
            st.queue.push((ops, slot.clone()));
            !std::mem::replace(&mut st.leading, true)
        };
        loop {
            if lead {
                self.lead(writer, &slot);
            }
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match std::mem::take(&mut *state) {
                    SlotState::Done(outcome) => return outcome,
                    SlotState::Lead => break,
                    SlotState::Queued => state = slot.cv.wait(state).unwrap_or_else(|p| p.into_inner()),
                }
            }
            lead = true;
        }
    }

    /// One leader's turn: commits the oldest queued changes, wakes their callers, and hands
    /// the next batch (if any is queued) to its oldest caller.
    fn lead(&self, writer: &Mutex<Connection>, own: &Arc<Slot>) {
        let batch: Vec<_> = {
            let mut st = self.lock();
            let take = st.queue.len().min(MAX_BATCH);
            st.queue.drain(..take).collect()
        };
        // Hands on even if the batch panics, failing its callers instead of hanging them and
        // every caller after them.
        let mut turn = Turn { batcher: self, slots: batch.iter().map(|(_, s)| s.clone()).collect() };
        let groups = batch.into_iter().map(|(g, _)| g).collect();
        let outcomes = {
            let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            self.batches.fetch_add(1, Ordering::Relaxed);
            run_batch(&mut conn, groups)
        };
        for (slot, outcome) in turn.slots.drain(..).zip(outcomes) {
            if Arc::ptr_eq(&slot, own) {
                slot.set_quietly(SlotState::Done(outcome));
            } else {
                slot.set(SlotState::Done(outcome));
            }
        }
    }
}

/// A leader's turn: when it ends (or unwinds), the callers of its batch not yet answered fail
/// and the next batch's oldest caller leads.
struct Turn<'a> {
    batcher: &'a Batcher,
    slots: Vec<Arc<Slot>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        for slot in self.slots.drain(..) {
            slot.set(SlotState::Done(Err(failure("the batch of mount id changes was abandoned"))));
        }
        let mut st = self.batcher.lock();
        match st.queue.first() {
            Some((_, next)) => next.set(SlotState::Lead),
            None => st.leading = false,
        }
    }
}

/// One transaction for every group of `batch`, each under its own savepoint.
fn run_batch(conn: &mut Connection, batch: Vec<Group>) -> Vec<Outcome> {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return batch.iter().map(|_| Err(dup(&e))).collect(),
    };
    let mut out = Vec::with_capacity(batch.len());
    for ops in batch {
        // After SQLite rolled the whole transaction back (a full disk, an I/O error) nothing
        // more is tried; the commit below fails every caller.
        let outcome = if tx.is_autocommit() {
            Err(failure("the transaction was rolled back"))
        } else {
            tx.savepoint().and_then(|sp| {
                let results = ops.iter().map(|op| apply(&sp, op)).collect::<rusqlite::Result<Vec<_>>>()?;
                sp.commit()?;
                Ok(results)
            })
        };
        out.push(outcome);
    }
    let committed = if tx.is_autocommit() { Err(failure("the transaction was rolled back")) } else { tx.commit() };
    if let Err(e) = committed {
        // Every caller fails, also those whose group had gone in. Usually nothing of the batch
        // is on disk; after an I/O error of the WAL's fsync it may be after a restart all the
        // same (as for a lone commit before): an ID a failed Mount left behind holds its
        // volume mounted until it is unmounted by hand or the mount is gone at a start.
        for outcome in &mut out {
            *outcome = Err(dup(&e));
        }
    }
    out
}

fn apply(conn: &Connection, op: &MountIdOp) -> rusqlite::Result<usize> {
    match op {
        MountIdOp::Add { volume, id } => {
            conn.prepare_cached("INSERT OR IGNORE INTO mount_ids (volume, id) VALUES (?1, ?2)")?.execute([volume, id])
        }
        MountIdOp::Remove { volume, id } => {
            conn.prepare_cached("DELETE FROM mount_ids WHERE volume = ?1 AND id = ?2")?.execute([volume, id])?;
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM mount_ids WHERE volume = ?1")?
                .query_row([volume], |r| r.get(0))?;
            Ok(usize::try_from(n).unwrap_or(0))
        }
        MountIdOp::Clear { volume } => {
            conn.prepare_cached("DELETE FROM mount_ids WHERE volume = ?1")?.execute([volume])
        }
    }
}

fn failure(msg: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT), Some(msg.into()))
}

/// The same error for another caller (`rusqlite::Error` is not `Clone`).
fn dup(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => rusqlite::Error::SqliteFailure(*code, msg.clone()),
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::super::Store;
    use super::super::tests::rec;
    use super::*;

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn callers_queued_during_a_commit_share_the_next_and_fail_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(Store::open(&dir.path().join("state.db")).expect("open"));
        store.insert_volume(&rec("v")).expect("insert");
        // Hold the writer: the first caller becomes the leader and waits for it.
        let writer = store.conn();
        let spawn = |vol: &'static str, id: &'static str| {
            let s = store.clone();
            std::thread::spawn(move || s.add_mount_id(vol, id))
        };
        let a = spawn("v", "a");
        wait_for("a leader", || store.batch.lock().leading && store.batch.lock().queue.is_empty());
        let b = spawn("nope", "b"); // no such volume: the foreign key refuses it
        let c = spawn("v", "c");
        wait_for("two queued callers", || store.batch.lock().queue.len() == 2);
        drop(writer);
        assert!(a.join().expect("a").expect("a added"));
        assert!(b.join().expect("b").is_err(), "a change the database refuses fails its caller");
        assert!(c.join().expect("c").expect("c added"), "and only its caller");
        assert_eq!(store.batch.batches.load(Ordering::Relaxed), 2, "b and c went into one commit");
        assert_eq!(store.mount_ids("v").expect("ids"), ["a", "c"]);
        assert!(store.mount_ids("nope").expect("ids").is_empty());
    }

    #[test]
    fn concurrent_changes_keep_every_volume_count_right_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.db");
        let store = Arc::new(Store::open(&path).expect("open"));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = store.clone();
                let vol = format!("v{}", t % 2);
                s.insert_volume(&rec(&vol)).ok();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let id = format!("t{t}-{i}");
                        assert!(s.add_mount_id(&vol, &id).expect("add"));
                        if i % 5 != 0 {
                            s.remove_mount_id(&vol, &id).expect("remove");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        // Each thread keeps 5 of its 25 IDs; four threads per volume.
        assert_eq!(store.mount_ids("v0").expect("ids").len(), 20);
        assert_eq!(store.remove_mount_id("v1", "none").expect("count"), 20);
        assert_eq!(store.replace_mount_ids("v1", "fresh").expect("replace"), 20);
        drop(store);
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.mount_ids("v1").expect("ids"), ["fresh"]);
        assert_eq!(store.mount_ids("v0").expect("ids").len(), 20);
    }

    #[test]
    fn a_refused_group_changes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("state.db")).expect("open");
        store.insert_volume(&rec("v")).expect("insert");
        store.add_mount_id("v", "a").expect("add");
        let ops =
            vec![MountIdOp::Clear { volume: "v".into() }, MountIdOp::Add { volume: "nope".into(), id: "b".into() }];
        assert!(store.batch.submit(&store.conn, ops).is_err());
        assert_eq!(store.mount_ids("v").expect("ids"), ["a"], "the clear was rolled back with its group");
    }
}
