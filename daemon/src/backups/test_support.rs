//! An engine for unit tests, without root: the volume service on a tempdir with the
//! recording fakes (a "mount" is recorded, the volume is read from its mountpoint directory),
//! the default target a directory in the same tempdir, and a [`ManualClock`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use voltool_plugin::backend::Host;
use voltool_plugin::store::{BackupRow, BackupStatus};
use voltool_plugin::{Layout, VolumeService};
use voltool_runtime::RecordingMounter;

use super::{BackupSettings, Backups, Catalog, Clock, ManualClock, RunRequest};
use crate::restores::Restores;

/// 2026-01-01 at `h:m` UTC.
pub(super) fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).single().expect("time")
}

pub(super) struct Fixture {
    pub dir: tempfile::TempDir,
    pub svc: VolumeService,
    pub clock: Arc<ManualClock>,
    pub settings: BackupSettings,
    /// The Docker engine the consistency steps talk to (driver name `voltool`).
    pub docker: Arc<voltool_docker::RecordingEngine>,
}

impl Fixture {
    /// A volume service on a fresh tempdir; `settings` get the tempdir's `backups` directory
    /// as their default target.
    pub fn new(settings: BackupSettings, now: DateTime<Utc>) -> Self {
        Self::on_host(settings, now, |_| {})
    }

    /// [`Self::new`] with the recording host changed by `edit` first (e.g. a btrfs state dir).
    pub fn on_host(mut settings: BackupSettings, now: DateTime<Utc>, edit: impl FnOnce(&mut Host)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout { state_dir: dir.path().join("state"), mount_root: dir.path().join("mnt") };
        let mut host = Host::recording(&Arc::new(RecordingMounter::new()));
        edit(&mut host);
        let svc = VolumeService::open(layout, host)
            .expect("volume service")
            .with_backup_grammar(Arc::new(crate::grammar::EngineGrammar));
        settings.default_target = Some(dir.path().join("backups").display().to_string());
        let docker = Arc::new(voltool_docker::RecordingEngine::new());
        Self { dir, svc, clock: Arc::new(ManualClock::new(now)), settings, docker }
    }

    /// An engine on this state, as a daemon (re)start opens it: recovery at start included.
    pub async fn open(&self) -> Backups {
        let catalog = Catalog::new(self.svc.clone(), self.settings.clone());
        let restores = Restores::new(self.svc.clone(), catalog);
        let docker = super::DockerLink { engine: self.docker.clone(), driver: "voltool".into() };
        Backups::open_with_clock(self.svc.clone(), self.settings.clone(), restores, self.clock.clone(), docker)
            .await
            .expect("open the engine")
    }

    /// The default target's directory.
    pub fn target_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// The default target as rows record it.
    pub fn target_url(&self) -> String {
        self.settings.resolve(&self.target_ref()).expect("target").describe()
    }

    pub fn target_ref(&self) -> String {
        self.settings.default_target.clone().expect("set in new")
    }

    /// Creates a local volume with these options and a file in what a backup reads.
    pub async fn volume(&self, name: &str, opts: &[(&str, &str)]) {
        let opts: BTreeMap<String, String> = opts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.svc.create(name, opts).await.expect("create volume");
        // The fake mounter records the bind mount and mounts nothing: the run reads the
        // mountpoint directory itself.
        let mp = self.svc.layout().mountpoint(name);
        std::fs::create_dir_all(&mp).expect("mountpoint");
        std::fs::write(mp.join("hello.txt"), b"hello").expect("file");
    }

    /// A catalog row as the engine writes it at a run's start.
    pub fn running_row(&self, id: &str, volume: &str) -> BackupRow {
        let started = self.clock.now_rfc3339();
        BackupRow::running(id, volume, &self.target_ref(), &self.target_url(), "manual", &started)
    }

    pub fn row(&self, id: &str) -> Option<BackupRow> {
        self.svc.store().get_backup(id).expect("store")
    }

    /// The backup's objects in the target directory, in commit order.
    pub fn objects(&self, id: &str) -> [bool; 3] {
        super::plain_names(id).map(|n| self.target_dir().join(n).exists())
    }
}

/// A manual run of `volume`, as `voltool backup run` asks for it.
pub(super) fn manual(volume: &str) -> RunRequest {
    RunRequest {
        volume: volume.to_owned(),
        target: None,
        verify: false,
        keep: None,
        trigger: "manual",
        restore_test: false,
        consistency: None,
        incremental: None,
        rehash: false,
    }
}

/// Waits until no run or verification is in flight (at most 30 s).
pub(super) async fn settled(b: &Backups) -> Vec<BackupRow> {
    for _ in 0..600 {
        let views = b.list(None).await.expect("list");
        if views.iter().all(|v| v.progress.is_none() && v.row.status != BackupStatus::Running) {
            return views.into_iter().map(|v| v.row).collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("runs still in flight after 30 s: {:?}", b.list(None).await);
}
