//! Command-line syntax. Parsed once here; commands get typed values.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const ABOUT: &str =
    "Docker volume plugin with hard size limits, tmpfs/NFS/CIFS volumes, verified backups and migration";

const LONG_ABOUT: &str = "\
voltool is one daemon (`voltool serve`) that serves the Docker volume plugin API and a
management API; every other subcommand is a thin client of that daemon.

Quick start (plain host service; dockerd discovers the plugin socket by itself):
  voltool serve &                                   # state in /var/lib/voltool
  docker volume create -d voltool -o type=tmpfs -o size=64m scratch
  docker run --rm -v scratch:/data busybox df -h /data
  voltool volume ls

Or as a managed plugin: deploy/plugin.sh build && deploy/plugin.sh install, then
`docker volume create -d voltool:latest ...`.";

#[derive(Debug, Parser)]
#[command(name = "voltool", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Management API socket of the daemon (serve listens there, the other commands connect).
    #[arg(long, env = "VOLTOOL_API_SOCKET", default_value = "/run/voltool/voltool.sock", global = true)]
    pub api_socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: Docker plugin API, management API (and, later, the backup scheduler).
    Serve(ServeArgs),
    /// Create, list, inspect and remove volumes without Docker.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Show what this host supports and what voltool does where something is missing.
    Doctor(DoctorArgs),
    /// Manage secrets (e.g. SMB passwords) that volumes refer to by name (-o secret=NAME).
    #[command(subcommand)]
    Secret(SecretCommand),
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Add or replace a secret, reading its value from stdin (one trailing newline is
    /// dropped): printf %s "$PASS" | voltool secret add smb-pass
    Add { name: String },
    /// List secret names (never values).
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove secrets.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where state (SQLite) and local volume data live.
    #[arg(long, env = "VOLTOOL_STATE_DIR", default_value = "/var/lib/voltool")]
    pub state_dir: PathBuf,

    /// Docker plugin socket. dockerd finds legacy plugins in /run/docker/plugins/NAME.sock and
    /// calls the driver NAME.
    #[arg(long, env = "VOLTOOL_PLUGIN_SOCKET", default_value = "/run/docker/plugins/voltool.sock")]
    pub plugin_socket: PathBuf,

    /// Configuration file (TOML) [default: /etc/voltool/voltool.toml if it exists]. A file
    /// given explicitly must exist. Flags and env vars override it.
    #[arg(long, env = "VOLTOOL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory under which volumes are mounted [default: <state dir>/mounts]. The managed
    /// plugin sets it to its propagatedMount.
    #[arg(long, env = "VOLTOOL_MOUNT_ROOT")]
    pub mount_root: Option<PathBuf>,

    /// Driver name shown in `voltool volume inspect` [default: the plugin socket's file name].
    #[arg(long, env = "VOLTOOL_DRIVER_NAME")]
    pub driver_name: Option<String>,

    /// Log filter (tracing env-filter syntax), e.g. `debug`, `voltool_plugin=debug` [default: info].
    #[arg(long, env = "VOLTOOL_LOG")]
    pub log: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume: voltool volume create NAME -o type=tmpfs -o size=64m
    Create {
        /// Volume name: letters, digits, '_', '.', '-', starting with a letter or digit.
        name: String,
        /// Option KEY=VALUE, repeatable (same keys as `docker volume create -o`).
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
        /// Print the created volume as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Print Docker-shaped JSON.
        #[arg(long)]
        json: bool,
        /// Print names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes in detail (with usage).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        /// Print a JSON array in Docker's `docker volume inspect` shape.
        #[arg(long)]
        json: bool,
    },
    /// Grow a volume's size limit, online while containers use it (image-backed volumes).
    Resize {
        name: String,
        /// New limit, e.g. 128m, 20G, 1.5GiB (binary units); must be larger than the current one.
        size: String,
    },
    /// Mount a volume for use without Docker and print its mountpoint. Counted like a
    /// container's mount under ID (unmount with the same ID).
    Mount {
        name: String,
        #[arg(long, default_value = "voltool-cli")]
        id: String,
    },
    /// Release a mount made with `voltool volume mount` (the volume is unmounted when no
    /// container or other ID holds it).
    Unmount {
        name: String,
        #[arg(long, default_value = "voltool-cli")]
        id: String,
    },
    /// Remove volumes and their data.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// Unmount first if containers still hold the volume (their mounts break).
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// State dir to assess when the daemon is not running.
    #[arg(long, env = "VOLTOOL_STATE_DIR", default_value = "/var/lib/voltool")]
    pub state_dir: PathBuf,
    /// Docker engine socket to check.
    #[arg(long, env = "DOCKER_SOCKET", default_value = "/var/run/docker.sock")]
    pub docker_socket: PathBuf,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
