//! Directory listing state of one open directory: NFS READDIRPLUS batches handed out to
//! FUSE readdir calls.
//!
//! FUSE readdir offsets are NFS cookies: each entry is handed to the kernel with its cookie,
//! and the kernel asks for "what follows offset X" next, so listings of any size resume at
//! the right place. The rest of the last NFS batch is kept to answer the next readdir
//! without another round trip; the cookie verifier from the server goes with it.

use std::collections::VecDeque;

use fuser::FileType;
use nfs3_client::nfs3_types::nfs3::cookieverf3;

/// One directory entry from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirEnt {
    pub(crate) name: Vec<u8>,
    /// The inode number reported in `d_ino`.
    pub(crate) ino: u64,
    pub(crate) kind: FileType,
    /// Where the listing continues after this entry.
    pub(crate) cookie: u64,
}

/// What [`DirState::fill`] needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// The reply buffer is full.
    Full,
    /// The directory has no more entries.
    Eof,
    /// More entries are needed from the server, starting after this cookie.
    More(u64),
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct DirState {
    /// The cookie verifier of the last batch (sent back with non-zero cookies).
    pub(crate) verf: cookieverf3,
    pending: VecDeque<DirEnt>,
    /// The cookie the first pending entry follows.
    after: u64,
    eof: bool,
    fetched: bool,
}

impl DirState {
    /// Hands the buffered entries that follow `offset` to `add` (which returns `true` when
    /// the entry did not fit), and says what is needed next.
    pub(crate) fn fill(&mut self, offset: u64, mut add: impl FnMut(&DirEnt) -> bool) -> Fill {
        if !self.fetched || self.after != offset {
            return Fill::More(offset);
        }
        while let Some(e) = self.pending.front() {
            if add(e) {
                return Fill::Full;
            }
            self.after = e.cookie;
            self.pending.pop_front();
        }
        if self.eof { Fill::Eof } else { Fill::More(self.after) }
    }

    /// Stores a batch fetched after cookie `after`. A batch without entries that does not
    /// claim the end would make no progress; it is treated as the end.
    pub(crate) fn refill(&mut self, after: u64, entries: Vec<DirEnt>, verf: cookieverf3, eof: bool) {
        self.eof = eof || entries.is_empty();
        self.pending = entries.into();
        self.after = after;
        self.verf = verf;
        self.fetched = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(range: std::ops::Range<u64>) -> Vec<DirEnt> {
        range
            .map(|i| DirEnt {
                name: format!("f{i}").into_bytes(),
                ino: i + 100,
                kind: FileType::RegularFile,
                cookie: i + 1,
            })
            .collect()
    }

    /// Simulates the kernel reading a directory of `n` entries with a reply buffer of `cap`
    /// entries and a server batch of `batch` entries; returns the names seen and the number
    /// of server calls.
    fn list(n: u64, cap: usize, batch: u64) -> (Vec<String>, usize) {
        let mut st = DirState::default();
        let (mut seen, mut calls, mut offset) = (Vec::new(), 0, 0u64);
        loop {
            let mut buf: Vec<DirEnt> = Vec::new();
            let mut off = offset;
            loop {
                match st.fill(off, |e| {
                    if buf.len() == cap {
                        return true;
                    }
                    buf.push(e.clone());
                    false
                }) {
                    Fill::Full | Fill::Eof => break,
                    Fill::More(c) => {
                        calls += 1;
                        let end = (c + batch).min(n);
                        st.refill(c, ents(c..end), cookieverf3([7; 8]), end == n);
                        off = c;
                    }
                }
            }
            if buf.is_empty() {
                return (seen, calls);
            }
            offset = buf.last().map(|e| e.cookie).unwrap_or(offset);
            seen.extend(buf.iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()));
        }
    }

    #[test]
    fn large_directories_list_every_entry_once_in_order() {
        for (n, cap, batch) in [(2000, 97, 300), (2000, 300, 97), (5, 10, 10), (0, 10, 10), (10, 1, 3), (300, 100, 300)]
        {
            let (seen, calls) = list(n, cap, batch);
            let want: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
            assert_eq!(seen, want, "n={n} cap={cap} batch={batch}");
            // Each server batch is fetched once (plus the final empty probe at most).
            assert!(calls as u64 <= n / batch + 2, "n={n} cap={cap} batch={batch}: {calls} calls");
        }
    }

    #[test]
    fn a_seek_elsewhere_refetches_and_the_verifier_is_kept() {
        let mut st = DirState::default();
        assert_eq!(st.fill(0, |_| false), Fill::More(0));
        st.refill(0, ents(0..10), cookieverf3([1; 8]), false);
        let mut got = 0;
        assert_eq!(
            st.fill(0, |_| {
                got += 1;
                got > 4
            }),
            Fill::Full
        );
        assert_eq!(st.verf, cookieverf3([1; 8]));
        // Continuing at the last handed-out cookie uses the buffer; another offset refetches.
        assert_eq!(st.fill(2, |_| false), Fill::More(2));
        let mut st2 = DirState::default();
        st2.refill(0, ents(0..3), cookieverf3::default(), false);
        assert_eq!(st2.fill(0, |_| false), Fill::More(3));
        st2.refill(3, vec![], cookieverf3::default(), false);
        assert_eq!(st2.fill(3, |_| false), Fill::Eof, "an empty batch ends the listing");
    }
}
