//! Holds: what a consistent backup has stopped, paused, scaled down or frozen. The backup
//! engine writes the whole list before it takes the first hold and removes it after the last
//! release, so a daemon killed in between finds at start what it must release.

use rusqlite::params;

use super::{Store, StoreError};

/// What kind of hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldKind {
    /// A container stopped (started again on release).
    Stopped,
    /// A container paused.
    Paused,
    /// A Swarm service scaled to 0 (scaled back to `replicas`).
    Scaled,
    /// A filesystem frozen with `FIFREEZE` (its mountpoint is the target).
    Frozen,
}

impl HoldKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Paused => "paused",
            Self::Scaled => "scaled",
            Self::Frozen => "frozen",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "stopped" => Self::Stopped,
            "paused" => Self::Paused,
            "scaled" => Self::Scaled,
            "frozen" => Self::Frozen,
            _ => return None,
        })
    }
}

/// One hold of one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub backup: String,
    /// Its place in the order holds are taken (released in reverse).
    pub seq: u32,
    pub kind: HoldKind,
    /// Container ID, service ID, or mountpoint.
    pub target: String,
    /// Container or service name, or volume, for messages.
    pub name: String,
    /// `Scaled`: the replicas before.
    pub replicas: Option<u64>,
    /// `Stopped`: the container's `FinishedAt` right after voltool stopped it; a different
    /// one at release means someone else started and stopped it meanwhile.
    pub marker: Option<String>,
}

impl Store {
    /// Records the holds a backup is about to take (all of them, before the first).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn put_holds(&self, holds: &[Hold]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.err())?;
        for h in holds {
            tx.execute(
                "INSERT OR REPLACE INTO holds (backup, seq, kind, target, name, replicas, marker)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    h.backup,
                    h.seq,
                    h.kind.as_str(),
                    h.target,
                    h.name,
                    h.replicas.map(|r| i64::try_from(r).unwrap_or(i64::MAX)),
                    h.marker
                ],
            )
            .map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    /// Every hold in force, by backup and in the order they were taken.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn holds(&self) -> Result<Vec<Hold>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare_cached("SELECT backup, seq, kind, target, name, replicas, marker FROM holds ORDER BY backup, seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (backup, seq, kind, target, name, replicas, marker) = row.map_err(self.err())?;
            // A kind this binary does not know (written by a newer one) is left in place.
            let Some(kind) = HoldKind::parse(&kind) else { continue };
            let replicas = replicas.map(|r| u64::try_from(r).unwrap_or(0));
            out.push(Hold { backup, seq, kind, target, name, replicas, marker });
        }
        Ok(out)
    }

    /// Removes one hold (released).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn drop_hold(&self, backup: &str, seq: u32) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM holds WHERE backup = ?1 AND seq = ?2", params![backup, seq])
            .map_err(self.err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_round_trip_in_order_and_go_one_by_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("db")).expect("open");
        let h = |seq, kind, target: &str| Hold {
            backup: "b1".into(),
            seq,
            kind,
            target: target.into(),
            name: format!("n-{target}"),
            replicas: (kind == HoldKind::Scaled).then_some(2),
            marker: None,
        };
        let all = vec![h(0, HoldKind::Scaled, "svc"), h(1, HoldKind::Stopped, "c1"), h(2, HoldKind::Frozen, "/mnt/v")];
        store.put_holds(&all).expect("put");
        assert_eq!(store.holds().expect("list"), all);
        let mut marked = all[1].clone();
        marked.marker = Some("2026-12-07T03:00:00Z".into());
        store.put_holds(std::slice::from_ref(&marked)).expect("mark");
        assert_eq!(store.holds().expect("list")[1], marked);
        store.drop_hold("b1", 1).expect("drop");
        assert_eq!(store.holds().expect("list"), vec![all[0].clone(), all[2].clone()]);
    }
}
