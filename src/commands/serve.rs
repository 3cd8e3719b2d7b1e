//! `voltool serve`: the daemon. Parse, open, serve, stop on a signal; the daemon itself is
//! `voltool_daemon::Daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use voltool_daemon::config::HttpListen;
use voltool_daemon::{ConfigFile, Daemon, DaemonConfig, LogFormat};

use crate::cli::ServeArgs;

pub async fn run(args: ServeArgs, api_socket: PathBuf, log_format: Option<LogFormat>) -> Result<ExitCode> {
    let file = ConfigFile::load(args.config.as_deref())?;
    let config = DaemonConfig {
        backup: file.backup_settings()?,
        reserve: file.restore.reserve()?,
        mount_root: args.mount_root.or(file.mount_root).unwrap_or_else(|| args.state_dir.join("mounts")),
        driver: args.driver_name.or(file.driver_name).unwrap_or_else(|| {
            args.plugin_socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "voltool".into())
        }),
        api_group: file.api.group,
        docker_socket: args.docker_socket.or(file.docker_socket).unwrap_or_else(|| "/var/run/docker.sock".into()),
        http: match args.http.or(file.http.listen) {
            Some(addr) => Some(HttpListen::new(&addr, file.http.token)?),
            None => None,
        },
        monitor_interval: file.monitor.interval()?,
        notify: file.notify,
        state_dir: args.state_dir,
        plugin_socket: args.plugin_socket,
        api_socket,
    };
    let filter = args.log.or(file.log).unwrap_or_else(|| "info".into());
    init_logs(&filter, log_format.or(file.log_format).unwrap_or_default())?;
    let daemon = Daemon::open(config).await?;
    daemon.serve(signal()).await.context("serving the plugin and management APIs")?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr (journald and `docker plugin` take it from there) as `format` says; `json`
/// is one object per line with the event's fields flattened beside `timestamp`, `level` and
/// `target`, and `spans`: the fields of every span the event is in, outermost first (a
/// backup run's `id` and `volume`, a restore's `volume` and `from`).
fn init_logs(filter: &str, format: LogFormat) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).with_context(|| format!("log filter {filter:?}"))?;
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => fmt.json().with_ansi(false).flatten_event(true).with_current_span(false).init(),
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
