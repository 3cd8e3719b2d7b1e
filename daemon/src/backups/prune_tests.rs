//! Crash orders of a prune (and of the backup before it), on a fake catalog and target that
//! "lose power" after step k: for every k, the state at the crash and after recovery keeps at
//! least what the policy keeps restorable.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use voltool_backup::retention::KeepPolicy;

use super::*;
use crate::backups::names;

/// The power cut: the error every step fails with once the budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Crash;

const CRASH: Crash = Crash;

/// The catalog (id → status) and the target's objects, with a power cut after `budget` steps.
#[derive(Default)]
struct World {
    rows: RefCell<BTreeMap<String, BackupStatus>>,
    objects: RefCell<BTreeSet<String>>,
    budget: Cell<Option<usize>>,
}

impl World {
    fn step(&self) -> std::result::Result<(), Crash> {
        match self.budget.get() {
            Some(0) => Err(CRASH),
            Some(n) => {
                self.budget.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn with_complete(n: usize) -> Self {
        let w = Self::default();
        for i in 0..n {
            let id = id(i);
            w.objects.borrow_mut().extend(names(&id));
            w.rows.borrow_mut().insert(id, BackupStatus::Complete);
        }
        w
    }

    /// A new backup as the engine writes it: row `running`, archive, manifest, checksum, then
    /// the row `complete`.
    fn write_backup(&self, id: &str) -> std::result::Result<(), Crash> {
        self.step()?;
        self.rows.borrow_mut().insert(id.to_owned(), BackupStatus::Running);
        for n in names(id) {
            self.step()?;
            self.objects.borrow_mut().insert(n);
        }
        self.step()?;
        self.rows.borrow_mut().insert(id.to_owned(), BackupStatus::Complete);
        Ok(())
    }

    fn whole(&self, id: &str) -> bool {
        names(id).iter().all(|n| self.objects.borrow().contains(n))
    }

    /// Complete rows whose three objects are all there.
    fn restorable(&self) -> Vec<String> {
        let rows = self.rows.borrow();
        rows.iter()
            .filter(|(id, s)| **s == BackupStatus::Complete && self.whole(id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// What must hold at every instant: a complete row has its three objects, and the
    /// checksum object (the target's mark of a whole backup) exists only beside the other two.
    fn check_consistent(&self, when: &str) {
        for (id, s) in self.rows.borrow().iter() {
            if *s == BackupStatus::Complete {
                assert!(self.whole(id), "{when}: complete {id} lost an object: {:?}", self.objects.borrow());
            }
        }
        for id in (0..20).map(id) {
            let [archive, manifest, sum] = names(&id);
            let o = self.objects.borrow();
            if o.contains(&sum) {
                assert!(o.contains(&archive) && o.contains(&manifest), "{when}: {sum} without its objects: {o:?}");
            }
        }
    }

    /// What the daemon does after the reboot: an interrupted run is kept when its three
    /// objects are there (the engine verifies them), else its objects are removed; `deleting`
    /// rows are finished. No power cut during recovery here (it is idempotent: a cut there is
    /// the same state again).
    fn recover(&self) {
        self.budget.set(None);
        let rows: Vec<(String, BackupStatus)> = self.rows.borrow().iter().map(|(i, s)| (i.clone(), *s)).collect();
        for (id, s) in rows {
            match s {
                BackupStatus::Running if self.whole(&id) => {
                    self.rows.borrow_mut().insert(id, BackupStatus::Complete);
                }
                BackupStatus::Running => {
                    for n in names(&id) {
                        self.objects.borrow_mut().remove(&n);
                    }
                    self.rows.borrow_mut().insert(id, BackupStatus::Failed);
                }
                BackupStatus::Deleting => finish_deleting(self, &id).expect("recovery"),
                _ => {}
            }
        }
    }
}

impl DeleteSteps for World {
    type Error = Crash;

    fn mark_deleting(&self, id: &str) -> std::result::Result<bool, Crash> {
        self.step()?;
        let mut rows = self.rows.borrow_mut();
        match rows.get_mut(id) {
            Some(s) if *s == BackupStatus::Complete => {
                *s = BackupStatus::Deleting;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn delete_object(&self, name: &str) -> std::result::Result<(), Crash> {
        self.step()?;
        self.objects.borrow_mut().remove(name);
        Ok(())
    }

    fn forget(&self, id: &str) -> std::result::Result<(), Crash> {
        self.step()?;
        self.rows.borrow_mut().remove(id);
        Ok(())
    }
}

fn id(i: usize) -> String {
    format!("v-20260101T{:02}0000Z-00000{}", i, i % 10)
}

fn row(id: &str, status: BackupStatus) -> BackupRow {
    let hour = &id[11..13];
    let mut r = BackupRow::running(id, "v", "/b", "file:///b", "manual", &format!("2026-01-01T{hour}:00:00Z"));
    r.status = status;
    r
}

fn catalog(w: &World) -> Vec<BackupRow> {
    w.rows.borrow().iter().map(|(i, s)| row(i, *s)).collect()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).single().expect("time")
}

/// Backup + prune as a run does it, cut after `k` steps; `None` when it finished first.
fn run_until_cut(existing: usize, keep: u32, k: usize) -> Option<World> {
    let w = World::with_complete(existing);
    w.budget.set(Some(k));
    let new = id(existing);
    let policy = KeepPolicy { last: Some(keep), ..KeepPolicy::default() };
    let result = w.write_backup(&new).and_then(|()| {
        let plan = plan_group("v", "file:///b", &policy, &catalog(&w), now());
        for r in &plan.delete {
            delete_one(&w, &r.id)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => None,
        Err(e) => {
            assert_eq!(e, CRASH);
            Some(w)
        }
    }
}

#[test]
fn the_plan_drops_only_what_the_policy_does_not_keep() {
    let rows: Vec<BackupRow> = (0..5)
        .map(id)
        .map(|i| row(&i, BackupStatus::Complete))
        .chain([row(&id(5), BackupStatus::Failed), row(&id(6), BackupStatus::Deleting)])
        .collect();
    let policy = KeepPolicy { last: Some(2), ..KeepPolicy::default() };
    let plan = plan_group("v", "file:///b", &policy, &rows, now());
    let gone: Vec<&str> = plan.delete.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(gone, [id(2), id(1), id(0)]);
    assert_eq!(plan.items.len(), 5, "failed and deleting rows are not candidates");
    assert!(plan_group("v", "t", &KeepPolicy::default(), &rows, now()).delete.is_empty(), "no policy, no deletion");
}

#[test]
fn a_power_cut_at_any_step_of_backup_and_prune_keeps_what_the_policy_keeps() {
    for (existing, keep) in [(3, 3), (5, 2), (1, 1), (4, 4)] {
        let mut cuts = 0;
        for k in 0.. {
            let Some(w) = run_until_cut(existing, keep, k) else { break };
            cuts += 1;
            let when = format!("{existing} backups, keep {keep}, cut after {k} steps");
            w.check_consistent(&when);
            let at_cut = w.restorable().len();
            assert!(at_cut >= (keep as usize).min(existing), "{when}: {at_cut} restorable at the cut");
            w.recover();
            w.check_consistent(&format!("{when}, recovered"));
            let rest = w.restorable();
            assert!(rest.len() >= (keep as usize).min(existing + 1), "{when}: {rest:?} after recovery");
            assert!(!w.rows.borrow().values().any(|s| *s == BackupStatus::Deleting), "{when}: deleting left");
            // Nothing is left on the target that the catalog does not account for.
            let known: BTreeSet<String> = w
                .rows
                .borrow()
                .iter()
                .filter(|(_, s)| **s == BackupStatus::Complete)
                .flat_map(|(i, _)| names(i))
                .collect();
            assert_eq!(*w.objects.borrow(), known, "{when}");
        }
        assert!(cuts > 4, "{existing}/{keep}: only {cuts} cut points");
    }
}

#[test]
fn a_row_that_changed_after_the_plan_is_not_deleted() {
    let w = World::with_complete(2);
    w.rows.borrow_mut().insert(id(0), BackupStatus::Failed);
    assert_eq!(delete_one(&w, &id(0)), Ok(false));
    assert!(w.whole(&id(0)), "objects untouched");
}
