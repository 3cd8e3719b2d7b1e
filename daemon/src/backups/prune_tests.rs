//! Crash orders of a prune (and of the backup before it), on a fake catalog and target that
//! "lose power" after step k: for every k, the state at the crash and after recovery keeps at
//! least what the policy keeps restorable.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use voltool_backup::retention::KeepPolicy;

use super::*;
use crate::backups::plain_names as names;

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
                BackupStatus::Deleting => finish_deleting(self, &ObjectNames::new(&id, false)).expect("recovery"),
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
            delete_one(&w, &ObjectNames::new(&r.id, false))?;
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
    assert_eq!(delete_one(&w, &ObjectNames::new(&id(0), false)), Ok(false));
    assert!(w.whole(&id(0)), "objects untouched");
}

/// A row of `volume` at `target`, started at `hour`:00 on 2026-01-01.
fn row_at(volume: &str, target: &str, hour: u32, status: BackupStatus) -> BackupRow {
    let id = format!("{volume}-20260101T{hour:02}0000Z-0000{hour:02}");
    let mut r = BackupRow::running(&id, volume, target, target, "manual", &format!("2026-01-01T{hour:02}:00:00Z"));
    r.status = status;
    r
}

fn ids(rows: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
    rows.into_iter().map(|r| r.as_ref().to_owned()).collect()
}

type PlanCase<'a> = (&'a str, Policies, Option<&'a str>, Vec<String>, Vec<String>);

#[test]
fn the_plan_over_the_catalog_groups_by_volume_and_target_and_follows_the_policies() {
    use BackupStatus::{Complete, Deleting, Failed, Running};
    const T1: &str = "file:///t1";
    const T2: &str = "file:///t2";
    let rows = vec![
        row_at("a", T1, 0, Complete),
        row_at("a", T1, 1, Complete),
        row_at("a", T1, 2, Complete),
        row_at("a", T2, 3, Complete),
        row_at("a", T2, 4, Complete),
        row_at("b", T1, 0, Complete),
        row_at("b", T1, 1, Complete),
        row_at("b", T1, 2, Failed),
        row_at("b", T1, 3, Deleting),
        row_at("b", T1, 4, Running),
    ];
    let last = |n| KeepPolicy { last: Some(n), ..KeepPolicy::default() };
    let per_volume =
        |v: &[(&str, KeepPolicy)]| Policies::PerVolume(v.iter().map(|(k, p)| ((*k).to_owned(), *p)).collect());
    let (a, b) = (|h| format!("a-20260101T{h:02}0000Z-0000{h:02}"), |h| format!("b-20260101T{h:02}0000Z-0000{h:02}"));
    // (what, policies, only target, kept (in plan order), deleted (in deletion order))
    let cases: Vec<PlanCase> = vec![
        (
            "--keep last=1: every (volume, target) keeps its newest; failed, deleting and running rows are no candidates",
            Policies::Forced(last(1)),
            None,
            vec![a(2), a(4), b(1)],
            vec![a(1), a(0), a(3), b(0)],
        ),
        (
            "each volume's own policy; b has none and is left alone",
            per_volume(&[("a", last(2))]),
            None,
            vec![a(2), a(1), a(4), a(3)],
            vec![a(0)],
        ),
        ("only the backups at one target", Policies::Forced(last(1)), Some(T2), vec![a(4)], vec![a(3)]),
        ("no volume has a policy", per_volume(&[]), None, vec![], vec![]),
        ("an empty policy deletes nothing", Policies::Forced(KeepPolicy::default()), None, vec![], vec![]),
    ];
    for (what, policies, only, kept, deleted) in cases {
        let plan = PrunePlan::new(&rows, &policies, only, now());
        assert_eq!(ids(plan.items.iter().filter(|i| i.keep).map(|i| &i.id)), kept, "{what}: kept");
        assert_eq!(ids(plan.items.iter().filter(|i| !i.keep).map(|i| &i.id)), deleted, "{what}: dropped items");
        assert_eq!(ids(plan.delete.iter().map(|r| &r.id)), deleted, "{what}: deletions");
        for item in &plan.items {
            let r = rows.iter().find(|r| r.id == item.id).expect("a catalog row");
            assert_eq!(
                (item.volume.as_str(), item.target.as_str()),
                (r.volume.as_str(), r.target_url.as_str()),
                "{what}"
            );
        }
    }
    assert_eq!(volumes_to_prune(&rows, None).into_iter().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(volumes_to_prune(&rows, Some(T2)).into_iter().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn a_prune_cut_between_delete_steps_is_left_to_recovery_which_finishes_it() {
    use BackupStatus::{Complete, Deleting};
    // Steps done before the cut → the row of the backup being deleted, and which of its
    // objects (archive, manifest, checksum) are left.
    let cases: [(usize, BackupStatus, [bool; 3]); 5] = [
        (0, Complete, [true, true, true]),
        (1, Deleting, [true, true, true]),
        (2, Deleting, [true, true, false]),
        (3, Deleting, [true, false, false]),
        (4, Deleting, [false, false, false]),
    ];
    let policy = KeepPolicy { last: Some(2), ..KeepPolicy::default() };
    for (k, status, left) in cases {
        let when = format!("cut after {k} delete steps");
        let w = World::with_complete(3);
        w.budget.set(Some(k));
        assert_eq!(delete_one(&w, &ObjectNames::new(&id(0), false)), Err(CRASH), "{when}");
        w.budget.set(None);
        assert_eq!(w.rows.borrow().get(&id(0)), Some(&status), "{when}");
        assert_eq!(names(&id(0)).map(|n| w.objects.borrow().contains(&n)), left, "{when}");
        w.check_consistent(&when);
        let restorable = w.restorable();
        assert!(restorable.contains(&id(1)) && restorable.contains(&id(2)), "{when}: the kept ones are whole");
        assert_eq!(restorable.contains(&id(0)), status == Complete, "{when}: a deleting row is not restorable");

        // The next prune (before recovery ran): a `deleting` row is no candidate, so it is
        // neither counted as one of the two kept nor chosen again.
        let plan = plan_group("v", "file:///b", &policy, &catalog(&w), now());
        let decided = ids(plan.items.iter().map(|i| &i.id));
        if status == Complete {
            assert_eq!(decided, [id(2), id(1), id(0)], "{when}");
            assert_eq!(ids(plan.delete.iter().map(|r| &r.id)), [id(0)], "{when}: still complete, chosen again");
        } else {
            assert_eq!(decided, [id(2), id(1)], "{when}");
            assert!(plan.delete.is_empty(), "{when}: nothing more to delete");
        }
        for r in &plan.delete {
            assert_eq!(delete_one(&w, &ObjectNames::new(&r.id, false)), Ok(true), "{when}");
        }

        // Recovery finishes the half-deleted backup: its objects and its row go.
        w.recover();
        assert_eq!(w.rows.borrow().keys().cloned().collect::<Vec<_>>(), [id(1), id(2)], "{when}");
        let left: BTreeSet<String> = [id(1), id(2)].iter().flat_map(|i| names(i)).collect();
        assert_eq!(*w.objects.borrow(), left, "{when}");
    }
}
