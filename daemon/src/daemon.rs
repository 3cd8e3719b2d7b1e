//! [`Daemon`]: the volume service, the backup engine and the restores, opened together from
//! one [`DaemonConfig`], and the driver Docker's plugin API calls.
//!
//! ## Opening
//! Order matters ([`Daemon::open`]): first make sure no other daemon owns this state dir or
//! these sockets (the state dir's lock, then binding both sockets, which refuses a live
//! daemon's), then touch state (reconciling would unmount another daemon's mounts). Only
//! local work happens before listening: the sockets must answer within a second of start.
//! Restores and backups a killed daemon left half-done are recovered before serving.
//!
//! ## The driver
//! The Docker router calls [`Daemon`] ([`VolumeDriver`]): volume options from Docker pass
//! the [`TargetPolicy`] first, and the removal of an `on-remove=archive` volume backs it up
//! (verified) before the volume service deletes it. The management API's removal takes the
//! same path ([`Daemon::remove_volume`]).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::UnixListener;
use voltool_plugin::backend::Host;
use voltool_plugin::backend::tools::SystemFsTools;
use voltool_plugin::options::{OnRemove, QuotaSupport};
use voltool_plugin::protocol::{DockerVolume, VolumeDriver};
use voltool_plugin::{Layout, VolumeService};
use voltool_runtime::loopdev::LinuxLoopDevices;
use voltool_runtime::{LinuxMounter, probe};

use crate::access::{AccessError, ApiAccess};
use crate::backups::{Backups, Catalog, DockerLink};
use crate::config::{DaemonConfig, HttpListen};
use crate::error::{Error, Result};
use crate::grammar::EngineGrammar;
use crate::observe::{EventKind, MetricsError, Observer};
use crate::policy::TargetPolicy;
use crate::restores::Restores;

/// How many events the catalog gives the status page at start.
const KEPT_PAST_EVENTS: usize = 200;

/// How long the volume watcher waits after a volume was created, resized or removed before
/// its pass: a burst of changes (a compose project's volumes) makes one pass.
pub const WATCH_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// What opening the daemon failed with; nothing was served, the sockets were removed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("create state dir {}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] voltool_runtime::lock::LockError),
    #[error("create directory {} for the {what} socket", path.display())]
    SocketDir {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another process is already serving the {what} socket {}; stop it or choose another path", path.display())]
    SocketBusy { what: &'static str, path: PathBuf },
    #[error("{action} {what} socket {}", path.display())]
    Socket {
        what: &'static str,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file")]
    Access(#[from] AccessError),
    #[error("open state in {}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: Box<voltool_plugin::Error>,
    },
    #[error("open the backup catalog")]
    Catalog(#[source] Box<Error>),
    #[error(transparent)]
    Metrics(MetricsError),
    #[error("config file: [[notify]]")]
    Notify(#[source] voltool_notify::NotifyError),
    #[error("listen on {addr} for --http")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the `--http` address (non-blocking, for tokio).
fn bind_tcp(h: &HttpListen) -> Result<std::net::TcpListener, OpenError> {
    let l = std::net::TcpListener::bind(h.addr).map_err(|source| OpenError::Http { addr: h.addr, source })?;
    l.set_nonblocking(true).map_err(|source| OpenError::Http { addr: h.addr, source })?;
    Ok(l)
}

/// The last attempt and success per (volume, target) from the catalog, so the metrics are
/// right from the first scrape after a restart; and the events the catalog recorded (backups
/// that ended, verifications and restore tests that failed) for the status page.
fn seed_from_catalog(svc: &VolumeService, observer: &Observer) {
    let rows = match svc.store().list_backups(None) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the catalog for the metrics");
            return;
        }
    };
    let unix = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| t.timestamp());
    let mut sized = std::collections::HashSet::new();
    observer.remember(crate::status::past_events(&rows, observer, KEPT_PAST_EVENTS));
    // Newest first: the first complete row of a volume is its last complete backup.
    for r in rows {
        if r.status == voltool_plugin::store::BackupStatus::Complete && sized.insert(r.volume.clone()) {
            observer.metrics().seed_bytes(&r.volume, r.bytes_in.unwrap_or(0), r.bytes_out.unwrap_or(0));
        }
        let succeeded = match r.status {
            voltool_plugin::store::BackupStatus::Complete => r.finished_at.as_deref().and_then(unix),
            _ => None,
        };
        observer.metrics().seed_last(&r.volume, &r.target_ref, unix(&r.started_at), succeeded);
    }
}

/// The sockets and the state dir's lock, held from [`Daemon::open`] until serving ends.
struct Serving {
    listeners: Mutex<Option<(UnixListener, UnixListener)>>,
    /// `--http`: bound at open, served by [`Daemon::serve`].
    http: Mutex<Option<(std::net::TcpListener, HttpListen)>>,
    /// How often the volume watcher measures every volume.
    monitor_interval: std::time::Duration,
    plugin_socket: PathBuf,
    api_socket: PathBuf,
    access: Arc<ApiAccess>,
    _lock: voltool_runtime::lock::DirLock,
}

impl Drop for Serving {
    fn drop(&mut self) {
        for sock in [&self.plugin_socket, &self.api_socket] {
            let _ = std::fs::remove_file(sock);
        }
    }
}

/// The daemon; cheap to clone.
#[derive(Clone)]
pub struct Daemon {
    svc: VolumeService,
    backups: Backups,
    restores: Restores,
    policy: Arc<TargetPolicy>,
    driver: Arc<str>,
    serving: Arc<Serving>,
    observer: Observer,
    notifiers: Arc<voltool_notify::Notifiers>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("driver", &self.driver).field("svc", &self.svc).finish_non_exhaustive()
    }
}

/// Binds a unix socket, replacing a stale socket file but never a live daemon's.
fn bind_unix(path: &Path, what: &'static str) -> Result<UnixListener, OpenError> {
    let io = |action: &'static str| move |source| OpenError::Socket { what, action, path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::SocketDir { what, path: dir.into(), source })?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(OpenError::SocketBusy { what, path: path.into() });
        }
        std::fs::remove_file(path).map_err(io("remove stale"))?;
    }
    let l = UnixListener::bind(path).map_err(io("listen on"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io("chmod"))?;
    Ok(l)
}

impl Daemon {
    /// Opens the daemon: takes the state dir's lock, binds both sockets, opens the volume
    /// state (reconciled with the kernel's mount table), the backup catalog and the restores,
    /// and recovers what a killed daemon left half-done. Nothing is served until
    /// [`Self::serve`].
    ///
    /// # Errors
    /// [`OpenError`] naming what could not be opened; the sockets this call bound are removed.
    pub async fn open(config: DaemonConfig) -> Result<Self, OpenError> {
        let DaemonConfig {
            state_dir,
            mount_root,
            plugin_socket,
            api_socket,
            driver,
            backup,
            reserve,
            api_group,
            docker_socket,
            http,
            monitor_interval,
            notify,
        } = config;
        // Volume options from Docker may name only the config's targets and allowed dirs (the
        // default target is `<state dir>/backups` unless the config names one, as Backups::open).
        let default_target =
            backup.default_target.clone().unwrap_or_else(|| state_dir.join("backups").display().to_string());
        let policy = TargetPolicy::new(&backup.targets, backup.allowed_dirs.as_deref(), &default_target)?;
        std::fs::create_dir_all(&state_dir)
            .map_err(|source| OpenError::StateDir { path: state_dir.clone(), source })?;
        let lock = voltool_runtime::lock::lock_dir(&state_dir)?;
        let plugin_listener = bind_unix(&plugin_socket, "plugin")?;
        let api_listener = match bind_unix(&api_socket, "management API") {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(&plugin_socket);
                return Err(e);
            }
        };
        let http = match http {
            Some(h) => match bind_tcp(&h) {
                Ok(l) => Some((l, h)),
                Err(e) => {
                    let _ = std::fs::remove_file(&plugin_socket);
                    let _ = std::fs::remove_file(&api_socket);
                    return Err(e);
                }
            },
            None => None,
        };
        // From here on, dropping `serving` removes both sockets.
        let mut serving = Serving {
            listeners: Mutex::new(Some((plugin_listener, api_listener))),
            http: Mutex::new(http),
            monitor_interval,
            plugin_socket,
            api_socket,
            access: Arc::new(ApiAccess::default()),
            _lock: lock,
        };
        let access = ApiAccess::new(api_group.as_deref())?;
        // The group may connect (0660 root:GROUP); the peer check is what admits it.
        if let Some(gid) = access.gid() {
            std::os::unix::fs::chown(&serving.api_socket, None, Some(gid)).map_err(|source| OpenError::Socket {
                what: "management API",
                action: "chgrp the",
                path: serving.api_socket.clone(),
                source,
            })?;
        }
        serving.access = Arc::new(access);
        let layout = Layout { state_dir: state_dir.clone(), mount_root };
        let svc = VolumeService::open(layout, host(&state_dir))
            .map_err(|source| OpenError::State { path: state_dir.clone(), source: Box::new(source) })?
            .with_backup_grammar(Arc::new(EngineGrammar));
        let observer = Observer::new().map_err(OpenError::Metrics)?;
        seed_from_catalog(&svc, &observer);
        let secrets = svc.clone();
        let read_secret = move |name: &str, server: &str| secrets.secrets().read_for(name, server).ok();
        let notifiers = Arc::new(voltool_notify::Notifiers::new(&notify, &read_secret).map_err(OpenError::Notify)?);
        observer.notify_to(notifiers.clone());
        let restores = Restores::new(svc.clone(), Catalog::new(svc.clone(), backup.clone()))
            .with_reserve(reserve)
            .with_observer(observer.clone());
        let engine = voltool_docker::DockerEngine::new(&docker_socket);
        let docker = DockerLink { engine: Arc::new(engine), driver: driver.clone() };
        let backups = Backups::open(svc.clone(), backup, restores.clone(), docker)
            .await
            .map_err(|e| OpenError::Catalog(Box::new(e)))?;
        // Restores and exports a killed daemon left mounted.
        if let Err(e) = svc.release_mounts_with_prefix(crate::restores::MOUNT_ID_PREFIX).await {
            tracing::warn!(error = %e, "could not release mounts left by interrupted restores");
        }
        // Restores a killed daemon left half-done: finish or undo them before serving.
        if let Err(e) = restores.recover_interrupted().await {
            tracing::error!(error = %e, "could not recover interrupted restores");
        }
        Ok(Self {
            svc,
            backups,
            restores,
            policy: Arc::new(policy),
            driver: driver.into(),
            serving: Arc::new(serving),
            observer,
            notifiers,
        })
    }

    /// The `[[notify]]` notifiers (none configured: an empty set).
    pub fn notifiers(&self) -> &voltool_notify::Notifiers {
        &self.notifiers
    }

    /// The metrics and events.
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// The volume service.
    pub fn volumes(&self) -> &VolumeService {
        &self.svc
    }

    /// The backup engine.
    pub fn backups(&self) -> &Backups {
        &self.backups
    }

    /// Restores, exports, imports and the migration receiver.
    pub fn restores(&self) -> &Restores {
        &self.restores
    }

    /// The driver name Docker knows this daemon by.
    pub fn driver_name(&self) -> &str {
        &self.driver
    }

    /// Serves the Docker plugin API and the management API, and runs the backup scheduler,
    /// until `shutdown` resolves; then stops accepting, lets requests in flight finish and
    /// removes the sockets. Volumes stay mounted for running containers.
    ///
    /// # Errors
    /// [`std::io::Error`] from a server; serving twice is `AlreadyExists`.
    pub async fn serve(&self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let taken = self.serving.listeners.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((plugin_listener, api_listener)) = taken else {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the daemon is already serving"));
        };
        let scheduler = self.backups.spawn_scheduler();
        tracing::info!(
            plugin_socket = %self.serving.plugin_socket.display(),
            api_socket = %self.serving.api_socket.display(),
            state_dir = %self.svc.layout().state_dir.display(),
            mount_root = %self.svc.layout().mount_root.display(),
            driver = &*self.driver,
            default_backup_target = self.backups.default_target(),
            "voltool {} serving",
            env!("CARGO_PKG_VERSION")
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let plugin_routes = voltool_plugin::protocol::router(Arc::new(self.clone()))
            .layer(axum::middleware::from_fn_with_state(self.observer.clone(), crate::http::time_plugin_request));
        let plugin = axum::serve(plugin_listener, plugin_routes).with_graceful_shutdown(stop(rx.clone()));
        let watcher = self.spawn_watcher();
        let http = self.serving.http.lock().unwrap_or_else(|p| p.into_inner()).take();
        let http = match http {
            Some((listener, h)) => {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                tracing::info!(addr = %h.addr, "serving /metrics and the status page over http");
                let server = axum::serve(listener, crate::http::router(self.clone(), h.token))
                    .with_graceful_shutdown(stop(rx.clone()));
                Some(tokio::spawn(server.into_future()))
            }
            None => None,
        };
        let api_routes = crate::routes::router(self.clone())
            .layer(axum::middleware::from_fn_with_state(self.serving.access.clone(), crate::access::check_peer));
        let api = axum::serve(api_listener, api_routes.into_make_service_with_connect_info::<crate::access::Peer>())
            .with_graceful_shutdown(stop(rx));
        let backups = self.backups.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down; volumes stay mounted for running containers");
            // Containers a backup holds stopped are started while the plugin socket still
            // answers their Mount.
            backups.release_holds_before_stop().await;
            let _ = tx.send(true);
        });
        let (p, a) = tokio::join!(plugin.into_future(), api.into_future());
        scheduler.abort();
        watcher.abort();
        if let Some(h) = http {
            match h.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "the http endpoint failed"),
                Err(e) => tracing::warn!(error = %e, "the http endpoint's task failed"),
                Ok(Ok(())) => {}
            }
        }
        for sock in [&self.serving.plugin_socket, &self.serving.api_socket] {
            let _ = std::fs::remove_file(sock);
        }
        p.and(a)
    }

    /// The volume watcher ([`crate::observe::watch`]): a pass at start, then one per
    /// `[monitor] interval`, and one soon after volumes are created, resized or removed (at
    /// most one per [`WATCH_SETTLE`], however many change).
    fn spawn_watcher(&self) -> tokio::task::JoinHandle<()> {
        let (svc, observer, every) = (self.svc.clone(), self.observer.clone(), self.serving.monitor_interval);
        let notifiers = self.notifiers.clone();
        let mut changes = svc.changes();
        tokio::spawn(async move {
            let mut watcher = crate::observe::watch::Watcher::default();
            let mut near_full = voltool_notify::NearFull::new(voltool_notify::Options::default().host);
            loop {
                for u in watcher.pass(&svc, &observer).await {
                    if let Some(event) = near_full.observe(&u.volume, u.used, u.limit) {
                        observer.emit(event);
                    }
                }
                observer.count_notifications(&notifiers);
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    Ok(()) = changes.changed() => tokio::time::sleep(WATCH_SETTLE).await,
                }
                changes.mark_unchanged();
            }
        })
    }

    /// Removes a volume; an `on-remove=archive` volume is backed up and verified first, and
    /// stays when that fails. `force` first unmounts a volume that still has mounts.
    ///
    /// # Errors
    /// The volume service's errors; [`voltool_plugin::Error::Unsupported`] with the reason
    /// when the backup before removal failed.
    pub async fn remove_volume(&self, name: &str, force: bool) -> Result<()> {
        let rec = self.svc.record(name).await?;
        if rec.spec.on_remove == OnRemove::Archive {
            let held = self.svc.mount_count(name).await?;
            if held > 0 && !force {
                return Err(voltool_plugin::Error::InUse { volume: name.into(), mounts: held }.into());
            }
            let id = self.backups.archive(name).await.map_err(|e| voltool_plugin::Error::Unsupported {
                volume: name.into(),
                reason: format!("not removed: backing it up first (on-remove=archive) failed: {e}"),
            })?;
            tracing::info!(volume = name, backup = id, "archived before removal");
        }
        Ok(self.svc.remove(name, force).await?)
    }
}

/// The real host: the kernel's mount(2), loop devices, mkfs and quotas, as the probe found
/// them.
fn host(state_dir: &Path) -> Host {
    let kernel = probe::kernel_report(state_dir);
    Host {
        mounter: Arc::new(LinuxMounter),
        loops: Arc::new(LinuxLoopDevices::new()),
        tools: Arc::new(SystemFsTools::default()),
        projects: Arc::new(voltool_runtime::quota::LinuxProjectQuota),
        snapshots: Arc::new(voltool_runtime::snapshot::LinuxSnapshots),
        subvolumes: kernel.state_dir_fs.as_deref() == Some("btrfs"),
        reflinks: kernel.state_dir_reflink,
        quota: QuotaSupport { project: kernel.state_dir_project_quota, loop_devices: kernel.loop_devices },
        // No kernel NFS client (this host, many containers): the userspace client over FUSE.
        nfs_userspace: !kernel.kernel_nfs && kernel.fuse,
        fuse: Arc::default(),
    }
}

impl VolumeDriver for Daemon {
    type Error = Error;

    async fn create(&self, name: String, opts: BTreeMap<String, String>) -> Result<()> {
        if let Err(e) = self.policy.check(&opts) {
            // Docker repeating the create of a volume the management API made with exactly
            // these options changes nothing (and is how Docker learns of such a volume).
            match self.svc.record(&name).await {
                Ok(rec) if rec.options == opts => {}
                _ => return Err(e.into()),
            }
        }
        Ok(VolumeDriver::create(&self.svc, name, opts).await?)
    }

    async fn remove(&self, name: String) -> Result<()> {
        self.remove_volume(&name, false).await
    }

    async fn mount(&self, name: String, id: String) -> Result<PathBuf> {
        match VolumeDriver::mount(&self.svc, name.clone(), id).await {
            Ok(p) => Ok(p),
            Err(e) => {
                self.observer.emit(self.observer.event(EventKind::MountFailed).volume(&name).reason(e.to_string()));
                Err(e.into())
            }
        }
    }

    async fn unmount(&self, name: String, id: String) -> Result<()> {
        Ok(VolumeDriver::unmount(&self.svc, name, id).await?)
    }

    async fn path(&self, name: String) -> Result<PathBuf> {
        Ok(VolumeDriver::path(&self.svc, name).await?)
    }

    async fn get(&self, name: String) -> Result<Option<DockerVolume>> {
        Ok(VolumeDriver::get(&self.svc, name).await?)
    }

    async fn list(&self) -> Result<Vec<DockerVolume>> {
        Ok(VolumeDriver::list(&self.svc).await?)
    }
}
