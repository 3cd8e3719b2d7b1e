//! The scheduler's `tick(now)` on the engine with a fake clock, the recording mounter and a
//! directory target: what runs, once, and what is skipped.

use voltool_plugin::store::BackupStatus;

use crate::backups::test_support::{Fixture, at, manual, settled};
use crate::backups::{BackupSettings, Clock, ConfigSchedule};

fn hourly(volume: &str) -> ConfigSchedule {
    ConfigSchedule {
        volumes: vec![volume.into()],
        cron: "0 * * * *".into(),
        target: None,
        keep: None,
        verify: false,
        consistency: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_missed_while_the_daemon_was_down_run_once_not_once_per_slot() {
    let mut settings = BackupSettings::default();
    settings.schedules.insert("hourly".into(), hourly("v"));
    let f = Fixture::new(settings, at(0, 30));
    f.volume("v", &[]).await;
    let b = f.open().await;
    // First sight of the schedule: anchored now, so its first slot is 01:00.
    assert_eq!(b.tick(at(0, 30)).await.expect("tick"), Some(at(1, 0)));
    assert!(settled(&b).await.is_empty(), "nothing was due");
    drop(b);

    // The daemon is down from 00:30 to 05:30: the slots 01:00 to 05:00 pass unseen.
    f.clock.set(at(5, 30));
    let b = f.open().await;
    assert_eq!(b.tick(f.clock.now()).await.expect("tick"), Some(at(6, 0)));
    let rows = settled(&b).await;
    assert_eq!(rows.len(), 1, "five missed slots, one run: {rows:?}");
    assert_eq!((rows[0].trigger.as_str(), rows[0].status), ("schedule", BackupStatus::Complete), "{:?}", rows[0]);
    assert_eq!(rows[0].started_at, "2026-01-01T05:30:00Z", "dated by the engine's clock");
    let views = b.schedules().await.expect("schedules");
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].last_slot.as_deref(), Some("2026-01-01T05:00:00Z"), "the latest missed slot is recorded");
    assert_eq!(views[0].next_run.as_deref(), Some("2026-01-01T06:00:00Z"));

    // Ticks before the next slot start nothing (the missed slots are not replayed).
    for m in [31, 45, 59] {
        assert_eq!(b.tick(at(5, m)).await.expect("tick"), Some(at(6, 0)));
    }
    assert_eq!(settled(&b).await.len(), 1);

    // The next slot runs.
    f.clock.set(at(6, 0));
    assert_eq!(b.tick(at(6, 0)).await.expect("tick"), Some(at(7, 0)));
    assert_eq!(settled(&b).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_whose_volume_has_a_run_in_flight_is_skipped() {
    let settings = BackupSettings { concurrency: 1, ..BackupSettings::default() };
    let f = Fixture::new(settings, at(0, 30));
    // A volume option schedule this time (the other source of schedules).
    f.volume("v", &[("backup-schedule", "0 * * * *")]).await;
    let b = f.open().await;
    assert_eq!(b.tick(at(0, 30)).await.expect("tick"), Some(at(1, 0)));

    // A manual run holds the volume: it waits for the only slot, which the test holds.
    let slot = b.e.slots.clone().acquire_owned().await.expect("slot");
    let manual_id = b.start(manual("v")).await.expect("manual run");
    f.clock.set(at(1, 0));
    assert_eq!(b.tick(at(1, 0)).await.expect("tick"), Some(at(2, 0)));
    let rows = b.list(None).await.expect("list");
    assert_eq!(rows.len(), 1, "the 01:00 slot did not start a second run: {rows:?}");
    assert_eq!(rows[0].row.id, manual_id);
    let views = b.schedules().await.expect("schedules");
    assert_eq!(views[0].running.as_deref(), Some(manual_id.as_str()));
    assert_eq!(views[0].last_slot.as_deref(), Some("2026-01-01T01:00:00Z"), "the skipped slot counts as handled");

    drop(slot);
    let rows = settled(&b).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, BackupStatus::Complete, "{:?}", rows[0].reason);

    // The skipped slot is not run late, once the volume is free ...
    assert_eq!(b.tick(at(1, 30)).await.expect("tick"), Some(at(2, 0)));
    assert_eq!(settled(&b).await.len(), 1);
    // ... the next one runs.
    f.clock.set(at(2, 0));
    assert_eq!(b.tick(at(2, 0)).await.expect("tick"), Some(at(3, 0)));
    let rows = settled(&b).await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().any(|r| r.trigger == "schedule" && r.status == BackupStatus::Complete), "{rows:?}");
}
