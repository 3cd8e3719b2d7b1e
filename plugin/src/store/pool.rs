//! The store's readers: a small pool of read-only connections. In WAL mode a reader sees the
//! last commit and never waits for the writer (not even for its fsync), so the lookups of
//! every Mount, Unmount, Get and List no longer queue behind other volumes' commits on the
//! writer connection.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

/// At most this many read connections are open; a reader holds one for a statement or two
/// (microseconds), so a caller that finds them all busy waits briefly instead of opening more.
pub(super) const MAX_READERS: usize = 4;

/// The pool. Connections are opened on first use, so a store that is only written (or opened
/// just to be migrated) never opens one.
#[derive(Debug)]
pub(super) struct Readers {
    path: PathBuf,
    state: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<Connection>,
    /// Connections in existence: idle or lent out.
    open: usize,
    /// Callers waiting for a connection (only then does a return wake anyone: a wake-up is
    /// a syscall even when nobody sleeps).
    waiting: usize,
}

/// A connection lent out by [`Readers::get`]; goes back to the pool when dropped.
pub(super) struct Reader<'a> {
    conn: Option<Connection>,
    pool: &'a Readers,
}

impl Readers {
    pub(super) fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf(), state: Mutex::default(), freed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection, a new one while fewer than [`MAX_READERS`] are open, or else the
    /// next one given back.
    ///
    /// # Errors
    /// Opening a connection failed.
    pub(super) fn get(&self) -> rusqlite::Result<Reader<'_>> {
        let mut st = self.lock();
        loop {
            if let Some(conn) = st.idle.pop() {
                return Ok(Reader { conn: Some(conn), pool: self });
            }
            if st.open < MAX_READERS {
                st.open += 1;
                drop(st);
                return match open_reader(&self.path) {
                    Ok(conn) => Ok(Reader { conn: Some(conn), pool: self }),
                    Err(e) => {
                        let mut st = self.lock();
                        st.open -= 1;
                        if st.waiting > 0 {
                            self.freed.notify_one();
                        }
                        Err(e)
                    }
                };
            }
            st.waiting += 1;
            st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting -= 1;
        }
    }

    /// How many connections are open (for tests).
    #[cfg(test)]
    pub(super) fn open_count(&self) -> usize {
        self.lock().open
    }
}

/// Read-only (`query_only` as well: a write is refused even through a statement that would
/// bypass the open flags), waiting up to 5 s for a lock like the writer. No memory map: an I/O
/// error on a mapped page is a SIGBUS for the whole daemon instead of an error for one call.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.execute_batch("PRAGMA query_only=ON; PRAGMA busy_timeout=5000;")?;
    Ok(conn)
}

impl Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Only `drop` takes it out.
        self.conn.as_ref().unwrap_or_else(|| unreachable!("a lent reader always holds its connection"))
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut st = self.pool.lock();
        // A connection left inside a transaction (a statement still stepping after a panic)
        // would pin an old snapshot: close it instead of lending it again.
        if conn.is_autocommit() {
            st.idle.push(conn);
        } else {
            st.open -= 1;
        }
        if st.waiting > 0 {
            self.pool.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::Store;
    use super::*;

    #[test]
    fn readers_see_commits_are_reused_and_bounded() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(Store::open(&dir.path().join("state.db")).expect("open"));
        assert_eq!(store.readers.open_count(), 0, "opened lazily");
        store.insert_volume(&super::super::tests::rec("v")).expect("insert");
        store.add_mount_id("v", "m1").expect("add");
        assert_eq!(store.mount_ids("v").expect("ids"), ["m1"], "a reader sees the last commit");
        assert_eq!(store.readers.open_count(), 1);
        assert_eq!(store.mount_ids("v").expect("ids"), ["m1"]);
        assert_eq!(store.readers.open_count(), 1, "the idle connection was reused");

        // Hold every connection: the next reader waits for one to come back.
        let held: Vec<_> = (0..MAX_READERS).map(|_| store.readers.get().expect("get")).collect();
        assert_eq!(store.readers.open_count(), MAX_READERS);
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = store.clone();
        let waiter = std::thread::spawn(move || {
            let r = s2.mount_ids("v");
            let _ = tx.send(());
            r
        });
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "no fifth connection is opened");
        drop(held);
        rx.recv_timeout(Duration::from_secs(5)).expect("the waiter got a connection");
        assert_eq!(waiter.join().expect("join").expect("ids"), ["m1"]);
        assert_eq!(store.readers.open_count(), MAX_READERS);
    }

    #[test]
    fn a_reader_cannot_write() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("state.db")).expect("open");
        let r = store.readers.get().expect("get");
        assert!(r.execute("DELETE FROM mount_ids", []).is_err(), "read-only");
    }
}
