//! `voltool serve`: the daemon.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tokio::net::UnixListener;
use voltool_backup::TargetConfig;
use voltool_plugin::access::{self, ApiAccess, DockerGate, TargetPolicy};
use voltool_plugin::backend::Host;
use voltool_plugin::backend::tools::SystemFsTools;
use voltool_plugin::backups::{BackupSettings, Backups, ConfigSchedule};
use voltool_plugin::options::QuotaSupport;
use voltool_plugin::{Layout, VolumeService, doctor, mgmt, protocol};
use voltool_runtime::loopdev::LinuxLoopDevices;
use voltool_runtime::{LinuxMounter, probe};

use crate::cli::ServeArgs;

const DEFAULT_CONFIG: &str = "/etc/voltool/voltool.toml";

/// The config file. Flags and env vars win over it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    mount_root: Option<PathBuf>,
    driver_name: Option<String>,
    log: Option<String>,
    /// `[backup]`: default target, zstd level, threads, concurrency.
    #[serde(default)]
    backup: Option<BackupSettings>,
    /// `[targets.NAME]`: named backup targets.
    #[serde(default)]
    targets: BTreeMap<String, TargetConfig>,
    /// `[schedules.NAME]`: backup schedules for listed volumes.
    #[serde(default)]
    schedules: BTreeMap<String, ConfigSchedule>,
    /// `[api]`: who may use the management socket besides root.
    #[serde(default)]
    api: ApiConfig,
    /// `[restore]`: what restores leave free.
    #[serde(default)]
    restore: RestoreConfig,
}

/// The `[restore]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RestoreConfig {
    /// What a restore leaves free on the filesystem it writes to: `5%` or a size (`2GiB`).
    /// Default: 5% of the filesystem, at most 1 GiB, and 5% of its inodes.
    reserve: Option<String>,
}

impl RestoreConfig {
    fn reserve(&self) -> Result<voltool_plugin::restores::Reserve> {
        match &self.reserve {
            None => Ok(voltool_plugin::restores::Reserve::default()),
            Some(r) => voltool_plugin::restores::Reserve::parse(r).map_err(|e| anyhow::anyhow!("config file: {e}")),
        }
    }
}

/// The `[api]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ApiConfig {
    /// Members of this group may use the management socket (mode 0660, this group).
    group: Option<String>,
}

impl Config {
    fn backup_settings(&self) -> Result<BackupSettings> {
        let mut s = self.backup.clone().unwrap_or_default();
        s.targets = self.targets.clone();
        s.schedules = self.schedules.clone();
        s.validate().map_err(|e| anyhow::anyhow!("config file: {e}"))?;
        Ok(s)
    }
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Config::default()),
        Err(e) => return Err(e).with_context(|| format!("read config file {}", path.display())),
    };
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

/// Binds a unix socket, replacing a stale socket file but never a live daemon's.
fn bind_unix(path: &Path, what: &str) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create directory {} for the {what} socket", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another process is already serving the {what} socket {}; stop it or choose another path",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("listen on {what} socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod socket {}", path.display()))?;
    Ok(l)
}

pub async fn run(args: ServeArgs, api_socket: PathBuf) -> Result<ExitCode> {
    let config = load_config(args.config.as_deref())?;
    let backup_settings = config.backup_settings()?;
    let reserve = config.restore.reserve()?;
    // Volume options from Docker may name only the config's targets and allowed dirs (the
    // default target is `<state dir>/backups` unless the config names one, as Backups::open).
    let default_target =
        backup_settings.default_target.clone().unwrap_or_else(|| args.state_dir.join("backups").display().to_string());
    let policy = TargetPolicy::new(&backup_settings.targets, backup_settings.allowed_dirs.as_deref(), &default_target)
        .context("config file")?;
    let filter = args.log.or(config.log).unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).with_context(|| format!("log filter {filter:?}"))?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mount_root = args.mount_root.or(config.mount_root).unwrap_or_else(|| args.state_dir.join("mounts"));
    let driver = args.driver_name.or(config.driver_name).unwrap_or_else(|| {
        args.plugin_socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "voltool".into())
    });
    let layout = Layout { state_dir: args.state_dir.clone(), mount_root };

    // Order matters: first make sure no other daemon owns this state dir or these sockets,
    // then touch state (reconciling would unmount another daemon's mounts). Only local work
    // happens before listening: the sockets must answer within a second of start.
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("create state dir {}", args.state_dir.display()))?;
    let _lock = voltool_runtime::lock::lock_dir(&args.state_dir)?;
    let plugin_listener = bind_unix(&args.plugin_socket, "plugin")?;
    let api_listener = bind_unix(&api_socket, "management API")?;
    let access = match ApiAccess::new(config.api.group.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            for sock in [&args.plugin_socket, &api_socket] {
                let _ = std::fs::remove_file(sock);
            }
            return Err(e).context("config file");
        }
    };
    // The group may connect (0660 root:GROUP); the peer check below is what admits it.
    if let Some(gid) = access.gid() {
        std::os::unix::fs::chown(&api_socket, None, Some(gid))
            .with_context(|| format!("chgrp the management API socket {}", api_socket.display()))?;
    }
    let kernel = probe::kernel_report(&args.state_dir);
    let host = Host {
        mounter: Arc::new(LinuxMounter),
        loops: Arc::new(LinuxLoopDevices::new()),
        tools: Arc::new(SystemFsTools::default()),
        projects: Arc::new(voltool_runtime::quota::LinuxProjectQuota),
        quota: QuotaSupport { project: kernel.state_dir_project_quota, loop_devices: kernel.loop_devices },
        // No kernel NFS client (this host, many containers): the userspace client over FUSE.
        nfs_userspace: !kernel.kernel_nfs && kernel.fuse,
        fuse: Arc::default(),
    };
    let svc = match VolumeService::open(layout.clone(), host) {
        Ok(s) => s,
        Err(e) => {
            for sock in [&args.plugin_socket, &api_socket] {
                let _ = std::fs::remove_file(sock);
            }
            return Err(e).with_context(|| format!("open state in {}", args.state_dir.display()));
        }
    };
    let backups = match Backups::open(svc.clone(), backup_settings).await {
        Ok(b) => b,
        Err(e) => {
            for sock in [&args.plugin_socket, &api_socket] {
                let _ = std::fs::remove_file(sock);
            }
            return Err(e).context("open the backup catalog");
        }
    };
    // Restores and exports a killed daemon left mounted.
    if let Err(e) = svc.release_mounts_with_prefix(voltool_plugin::restores::MOUNT_ID_PREFIX).await {
        tracing::warn!(error = %e, "could not release mounts left by interrupted restores");
    }
    let scheduler = backups.spawn_scheduler();
    tracing::info!(
        plugin_socket = %args.plugin_socket.display(),
        api_socket = %api_socket.display(),
        state_dir = %layout.state_dir.display(),
        mount_root = %layout.mount_root.display(),
        driver,
        default_backup_target = backups.default_target(),
        "voltool {} serving",
        env!("CARGO_PKG_VERSION")
    );

    let state_dir = layout.state_dir.clone();
    let doctor = move || doctor::assess(probe::kernel_report(&state_dir));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let plugin = axum::serve(plugin_listener, protocol::router(Arc::new(DockerGate::new(svc.clone(), policy))))
        .with_graceful_shutdown(stop(rx.clone()));
    let archiving = backups.clone();
    svc.set_archiver(std::sync::Arc::new(move |volume: String| {
        let b = archiving.clone();
        Box::pin(async move { b.archive(&volume).await.map_err(|e| e.to_string()) })
    }));
    let restores = voltool_plugin::restores::Restores::new(svc.clone(), backups.clone()).with_reserve(reserve);
    // Restores a killed daemon left half-done: finish or undo them before serving.
    if let Err(e) = restores.recover_interrupted().await {
        tracing::error!(error = %e, "could not recover interrupted restores");
    }
    let tester = restores.clone();
    backups.set_restore_tester(std::sync::Arc::new(move |id: String| {
        let r = tester.clone();
        Box::pin(async move {
            match r.restore_test(&id, None).await {
                Ok(o) if o.ok => tracing::info!(backup = id, "restore test passed"),
                Ok(o) => tracing::warn!(backup = id, status = ?o.status, error = ?o.error, "restore test failed"),
                Err(e) => tracing::warn!(backup = id, error = %e, "restore test could not run"),
            }
        })
    }));
    let api_routes = mgmt::router(svc, driver, doctor)
        .merge(voltool_plugin::backup_api::router(backups))
        .merge(voltool_plugin::restore_api::router(restores))
        .layer(axum::middleware::from_fn_with_state(Arc::new(access), access::check_peer));
    let api = axum::serve(api_listener, api_routes.into_make_service_with_connect_info::<access::Peer>())
        .with_graceful_shutdown(stop(rx));

    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down; volumes stay mounted for running containers");
        let _ = tx.send(true);
    });

    let (p, a) = tokio::join!(plugin.into_future(), api.into_future());
    scheduler.abort();
    for sock in [&args.plugin_socket, &api_socket] {
        let _ = std::fs::remove_file(sock);
    }
    p.context("plugin API server")?;
    a.context("management API server")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_rejects_unknown_keys() {
        let c: Config = toml::from_str("mount-root = \"/mnt/volumes\"\ndriver-name = \"voltool\"\n").expect("parse");
        assert_eq!(c.mount_root.as_deref(), Some(Path::new("/mnt/volumes")));
        assert!(toml::from_str::<Config>("mountroot = 1").is_err());
        assert!(load_config(Some(Path::new("/nonexistent/voltool.toml"))).is_err());
        let c: Config = toml::from_str(
            r#"
[backup]
default-target = "offsite"
level = 5
[targets.offsite]
url = "s3://bkt/pfx"
endpoint = "http://127.0.0.1:18014"
path-style = true
max-parts = 1000
[schedules.nightly]
volumes = ["db", "web"]
cron = "0 3 * * *"
keep = "daily=7"
verify = true
"#,
        )
        .expect("backup config");
        let s = c.backup_settings().expect("valid");
        assert_eq!(s.level, 5);
        assert_eq!(s.targets["offsite"].max_parts, Some(1000));
        assert_eq!(s.schedules["nightly"].volumes, ["db", "web"]);
        let bad: Config = toml::from_str("[backup]\ndefault-target = \"nowhere\"\n").expect("parse");
        let e = bad.backup_settings().expect_err("unknown target").to_string();
        assert!(e.contains("\"nowhere\" is not defined"), "{e}");
        let bad: Config = toml::from_str("[schedules.x]\nvolumes = [\"a\"]\ncron = \"bad\"\n").expect("parse");
        assert!(bad.backup_settings().is_err());
        let c: Config =
            toml::from_str("[api]\ngroup = \"voltool\"\n[backup]\nallowed-dirs = [\"/srv/b\"]\n").expect("access keys");
        assert_eq!(c.api.group.as_deref(), Some("voltool"));
        assert_eq!(c.backup_settings().expect("valid").allowed_dirs, Some(vec![PathBuf::from("/srv/b")]));
        assert!(toml::from_str::<Config>("[api]\nowner = \"x\"\n").is_err());
        let c: Config = toml::from_str("[restore]\nreserve = \"10%\"\n").expect("restore");
        assert!(c.restore.reserve().is_ok());
        let c: Config = toml::from_str("[restore]\nreserve = \"lots\"\n").expect("parse");
        assert!(c.restore.reserve().is_err());
    }
}
