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

    /// How `voltool serve` writes its log lines on stderr: `text` for people, or `json` for
    /// journald, Loki and the like (one JSON object per line: `timestamp`, `level`, `target`,
    /// the event's fields, and in `spans` the work it belongs to, e.g. `{"name": "backup",
    /// "id": "db-20261207T140200Z-3f9a1c", "volume": "db"}`, so
    /// `jq 'select(any(.spans[]?; .id == "ID"))'` picks one backup's lines) [default: the
    /// config file's `log-format`, else text]. Only the daemon logs; other commands ignore it.
    #[arg(long, env = "VOLTOOL_LOG_FORMAT", global = true, value_name = "FORMAT", value_parser = log_format())]
    pub log_format: Option<voltool_daemon::LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

/// `text` or `json`, listed in `--help` and in the error for anything else.
fn log_format() -> impl clap::builder::TypedValueParser<Value = voltool_daemon::LogFormat> {
    use clap::builder::TypedValueParser;
    use voltool_daemon::LogFormat;
    clap::builder::PossibleValuesParser::new(["text", "json"])
        .map(|s| if s == "json" { LogFormat::Json } else { LogFormat::Text })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: Docker plugin API, management API and the backup scheduler.
    Serve(ServeArgs),
    /// Create, list, inspect and remove volumes without Docker.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Show what this host supports and what voltool does where something is missing.
    Doctor(DoctorArgs),
    /// The host at a glance: every volume's usage, mounts, last and next backup and last
    /// verification, then the recent events (failures first) — what the status page shows.
    Status {
        /// Print the daemon's JSON (`GET /v1/status`).
        #[arg(long)]
        json: bool,
    },
    /// Notifications ([[notify]] blocks of the config file: webhooks, mail, commands).
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Manage secrets (e.g. SMB passwords) that volumes refer to by name (-o secret=NAME).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Back volumes up (zstd tar + manifest + sha256), list, verify and prune backups.
    #[command(subcommand, long_about = BACKUP_ABOUT)]
    Backup(BackupCommand),
    /// Restore a volume from a backup ID, an archive file or URL (tar, tar.gz, tar.zst).
    #[command(long_about = RESTORE_ABOUT)]
    Restore(RestoreArgs),
    /// Write a volume as a zstd-compressed tar (the stream a backup stores) to a file or stdout.
    Export {
        volume: String,
        /// Output file (written to a temporary name, renamed when complete) [default: stdout].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Move a volume to another host over ssh (the remote runs `voltool receive`).
    #[command(long_about = MIGRATE_ABOUT)]
    Migrate(MigrateArgs),
    /// The remote end of `voltool migrate` (reads the stream on stdin; not for direct use).
    Receive {
        /// The volume to create on this host.
        name: String,
    },
    /// Fill a volume from a tar, tar.gz or tar.zst stream (a file or stdin); same checks as restore.
    Import {
        volume: String,
        /// Input file [default: stdin].
        #[arg(short, long)]
        input: Option<PathBuf>,
        #[command(flatten)]
        opts: RestoreFlags,
    },
}

const RESTORE_ABOUT: &str = "\
Restore a volume from a backup ID in the catalog, an archive file on this host, or a target URL
(file:///dir/ID.tar.zst, s3://bucket/prefix/ID.tar.zst?endpoint=...). Plain .tar, .tar.gz and
.tar.zst archives (e.g. made with `tar czf backup.tgz -C /data .`) are recognised by their
first bytes.

The archive is extracted into a staging directory inside the volume and swapped in only when
it is complete and checked: a backup ID against the sha256 the catalog recorded when it was
made (through its manifest, or directly when the manifest is gone), a file or URL
`DIR/ID.tar.zst` against `ID.manifest.json` beside it. An archive without a manifest (a plain
tarball) restores too, reported as 'unverified (no manifest)', with setuid/setgid bits and
security.* xattrs dropped unless --preserve-privileges. A failed restore leaves the volume as
it was; while a restore runs, containers cannot start on the volume. Nothing is ever written outside the volume: absolute paths, '..',
paths through symlinks, hard links to outside and device nodes are refused, and the data must
fit the volume's size limit. A missing volume is created (with the options recorded in the
backup); a volume that has data or is used by containers is refused unless --force.

An incremental backup restores with every link of its chain before it (checked link by link
before anything is written). With --path, only those paths of a backup come back, into the
volume as it is (containers may keep using it): only the parts of the archive that hold them
are read, every file is checked against its sha256, and each path is replaced atomically, or
put under --to DIR.

Examples:
  voltool restore db --from db-20261201T023000Z-3f9a1c
  voltool restore web --from web-20261201T023000Z-1a2b3c --path conf/nginx.conf
  voltool restore web --from web-20261201T023000Z-1a2b3c --path html --to recovered
  voltool restore db --from ./pgdata-backup.tar.gz --force
  voltool restore web --from backup.tgz --strip-components 1    # archive made of /data/...";

const MIGRATE_ABOUT: &str = "\
Move a volume to another host over ssh: voltool migrate VOLUME [USER@]HOST[:NEWNAME]

Runs the system ssh (your ~/.ssh/config, agent and known_hosts apply; host keys are checked)
and starts `voltool receive NEWNAME` there, which hands the stream to the remote daemon. The
remote first checks it can take the volume (the secrets its options name exist there, no
volume NEWNAME with data) before any data moves; then the volume streams as a zstd tar, the
remote creates NEWNAME with the same options, checks every file against the manifest sent at
the end and only then reports success. An interrupted migration leaves no volume behind on
the remote.

Examples:
  voltool migrate pgdata root@db2
  voltool migrate pgdata admin@db2:pgdata-old -e 'ssh -p 2222' --ssh-option Compression=no
  voltool migrate web root@10.0.0.5 --remote-voltool /usr/local/bin/voltool --delete-source";

#[derive(Debug, Args)]
pub struct MigrateArgs {
    pub volume: String,
    /// [USER@]HOST[:NEWNAME] (NEWNAME defaults to VOLUME).
    pub destination: String,
    /// The ssh command, split on spaces (like rsync -e).
    #[arg(short = 'e', long, env = "VOLTOOL_SSH_COMMAND", default_value = "ssh")]
    pub ssh_command: String,
    /// Extra ssh option, passed as -o KEY=VALUE (repeatable).
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,
    /// The voltool binary on the remote host.
    #[arg(long, default_value = "voltool")]
    pub remote_voltool: String,
    /// Remove the local volume after the remote verified the transfer.
    #[arg(long)]
    pub delete_source: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    pub volume: String,
    /// A backup ID, a local archive file (- for stdin), or an archive URL.
    #[arg(long)]
    pub from: String,
    /// Restore only this path of the backup (relative to the volume root; a directory with
    /// everything below it), into the volume as it is: repeatable. Only the parts of the
    /// archive that hold it are read. Replaces what is at that path (atomically, path by
    /// path) unless --to is given. Needs a backup ID.
    #[arg(long, value_name = "PATH")]
    pub path: Vec<String>,
    /// With --path: restore under this directory of the volume instead (DIR/PATH), leaving
    /// the originals as they are.
    #[arg(long, value_name = "DIR", requires = "path")]
    pub to: Option<String>,
    #[command(flatten)]
    pub opts: RestoreFlags,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreFlags {
    /// Replace a volume that has data or is used by containers.
    #[arg(long)]
    pub force: bool,
    /// Create device nodes found in the archive (refused by default).
    #[arg(long)]
    pub allow_devices: bool,
    /// Drop this many leading path components of every entry.
    #[arg(long, default_value_t = 0)]
    pub strip_components: usize,
    /// Keep setuid/setgid bits and security.* xattrs of an archive that is not a backup of
    /// this daemon (dropped by default; a backup or a file with its manifest keeps them).
    #[arg(long)]
    pub preserve_privileges: bool,
}

impl From<&RestoreFlags> for voltool_api::RestoreFlags {
    fn from(f: &RestoreFlags) -> Self {
        Self {
            force: f.force,
            allow_devices: f.allow_devices,
            strip_components: f.strip_components,
            preserve_privileges: f.preserve_privileges,
        }
    }
}

const BACKUP_ABOUT: &str = "\
Back volumes up, list, verify and prune backups.

Each backup is three objects in its target: ID.tar.zst (zstd-compressed POSIX tar of the
volume; `zstd -d < ID.tar.zst | tar -x -C DIR` restores it without voltool), ID.manifest.json
(every file's path, mode, owner, size and sha256) and ID.tar.zst.sha256 (`sha256sum -c`).
Encrypted (volume option backup-encrypt=age1...,ssh-ed25519 ... or a target's encrypt-to):
ID.tar.zst.age, ID.manifest.json.age, ID.tar.zst.age.sha256; `age -d -i key.txt
ID.tar.zst.age | zstd -d | tar -x` restores it; voltool restores with the private key added by
`voltool secret add NAME` and named in the config file ([backup] identities = [\"NAME\"]).

Targets: a directory (/srv/backups or file:///srv/backups), an S3 bucket
(s3://bucket/prefix?endpoint=http://host:9000&region=us-east-1&path_style=true, credentials
from the daemon's AWS environment), or a name from the config file ([targets.NAME]).
Default: <state dir>/backups.

Scheduled backups: docker volume create -d voltool -o backup-schedule='0 3 * * *' \\
  -o backup-keep=last=3,daily=7,weekly=4 -o backup-verify=true NAME

The target is the source of truth: `backup ls --target T` shows what is on a target (not in
this host's catalog), and `backup sync` adds to the catalog what a target holds, so a new
host pointed at the same bucket can restore every backup by its ID.

Examples:
  voltool backup run db --verify          # prints the backup ID last
  voltool backup run db --incremental     # only what changed since db's newest backup
  voltool backup ls db
  voltool backup ls --target 's3://bkt/voltool?endpoint=https://s3.example.net'
  voltool backup sync --target offsite    # then: voltool restore db --from ID
  voltool backup verify db-20261201T030000Z-1a2b3c
  voltool backup prune db --keep last=3,daily=7 --dry-run
  voltool backup schedule ls";

const LS_ABOUT: &str = "\
List backups, newest first: this host's catalog, or with --target what is on a target.

With --target (a config-file name or a URL; alone: the default target) the target itself is
read: every backup found by its manifest object (ID.manifest.json), oldest first per volume,
with its volume, time, chain (LEVEL full or +N after PARENT), archive size, whether this
host's catalog has it (own, synced, adopted; vanished when sync found it gone) and its state:
complete (manifest, archive and checksum agree), incomplete (being written or deleted, or left
half), unreadable (the reason), or encrypted (needs the identity). Nothing is changed; an
unreadable manifest is one line of the listing, never the end of it. --target takes the word
after it when there is one: give VOLUME before it.

Examples:
  voltool backup ls db
  voltool backup ls --target offsite
  voltool backup ls db --target /srv/backups --json
  voltool backup ls db --target                # the default target";

const SYNC_ABOUT: &str = "\
Make this host's catalog match what its targets hold (the target is the source of truth).

Adds every complete backup on the target that the catalog lacks (manifest, archive and
checksum there and agreeing; volume, time, sizes, chain from the manifest), with origin
`synced`; marks catalog entries whose objects are gone from the target as vanished (they can
no longer be restored from there; cleared when the objects come back). Without --target: every
[targets.NAME] of the config file and the default target.

Retention never deletes synced backups: the host that wrote them prunes them. --adopt makes
them this host's (origin `adopted`), to prune with its backup-keep policies, e.g. when the
old host is gone for good.

Disaster recovery on a new host (same config file, or the target's URL):
  voltool backup sync --target 's3://bkt/voltool?endpoint=https://s3.example.net'
  voltool backup ls --target 's3://bkt/voltool?endpoint=https://s3.example.net'
  voltool restore db --from db-20261201T030000Z-1a2b3c   # incremental chains too
  voltool backup sync --adopt                             # take over retention";

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back a volume up now; prints the backup ID as the last line of stdout.
    Run {
        volume: String,
        /// Target name (config file) or URL [default: the volume's backup-target, else the
        /// daemon's default target].
        #[arg(long)]
        target: Option<String>,
        /// Read the stored backup back and check every file before reporting success.
        #[arg(long)]
        verify: bool,
        /// Consistency steps around the snapshot [default: the volume's backup-consistency,
        /// else none]: none, stop (stop the volume's containers; Swarm: scale to 0),
        /// pause, hooks (run the voltool.backup.pre/post labels' commands), freeze
        /// (FIFREEZE an image-backed volume), comma-combined, e.g. hooks,stop.
        #[arg(long, value_name = "STEPS")]
        consistency: Option<String>,
        /// An incremental link: only what changed since the volume's newest backup on the
        /// target (a full backup when there is none, or the volume's backup-full says a new
        /// chain starts) [default: the volume's backup-mode].
        #[arg(long)]
        incremental: bool,
        /// With an incremental: also read every file whose metadata is unchanged and compare
        /// its sha256 with the chain's, archiving it when the content differs (reads the whole
        /// volume; for content changed behind unchanged times).
        #[arg(long)]
        rehash: bool,
        /// Print the catalog entry ({"id": ..., "status": ...}) as JSON.
        #[arg(long)]
        json: bool,
        /// Print the ID and return at once; follow with `voltool backup show ID`.
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// Write one file of a backup to stdout, reading only the part of the archive that holds
    /// it (a ranged read on S3, a seek on a directory target), checked against its sha256.
    /// For an incremental backup, the file as of that backup, from the link that holds it.
    Cat {
        /// The backup ID.
        id: String,
        /// The file's path relative to the volume root (e.g. `conf/app.ini`).
        path: String,
    },
    /// List backups, newest first (--target: what is on a target, not the catalog).
    #[command(alias = "list", long_about = LS_ABOUT)]
    Ls {
        /// Only this volume's backups.
        volume: Option<String>,
        /// Read the target instead of the catalog: a config-file name or URL (alone: the
        /// default target).
        #[arg(long, value_name = "TARGET", num_args = 0..=1, default_missing_value = "")]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add what a target holds to this host's catalog, mark what is gone from it.
    #[command(long_about = SYNC_ABOUT)]
    Sync {
        /// A config-file name or URL [default: every configured target and the default one].
        #[arg(long)]
        target: Option<String>,
        /// Make the found backups this host's to prune (origin adopted); without it, this
        /// host's retention never deletes them.
        #[arg(long)]
        adopt: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one backup (and its manifest summary).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-read a stored backup and check the archive sha256 and every file against the
    /// manifest (nothing is written to disk). Exit status 1 if it fails.
    Verify {
        id: String,
        /// Also restore it into a scratch volume and run --check-cmd in a minimal container
        /// (no network, host root read-only, the data at /data); the scratch volume is removed.
        #[arg(long)]
        restore_test: bool,
        /// The check (run with /bin/sh -c; exit 0 = good), e.g. 'test -s /data/db/PG_VERSION'
        /// [default: list /data].
        #[arg(long, requires = "restore_test")]
        check_cmd: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete backups a retention policy does not keep (newest verified backup is always kept).
    Prune {
        /// Only this volume's backups [default: every volume with a backup-keep option].
        volume: Option<String>,
        /// Policy, e.g. last=3,hourly=24,daily=7,weekly=4,monthly=6 [default: each volume's
        /// backup-keep].
        #[arg(long)]
        keep: Option<String>,
        /// Show what would be deleted without deleting anything.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Backup schedules.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List schedules (volume options and config-file schedules) with their next run.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Add or replace a secret, reading its value from stdin (one trailing newline is
    /// dropped): printf %s "$PASS" | voltool secret add smb-pass --server nas.lan
    Add {
        name: String,
        /// A server the secret may be sent to (repeatable; the host as volumes name it in
        /// share=//HOST/...). Given: replaces the secret's servers. Not given: a new secret
        /// is bound to the first server it is used with; a replaced one keeps its servers.
        #[arg(long = "server", value_name = "HOST")]
        servers: Vec<String>,
    },
    /// List secret names and their servers (never values).
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

    /// The Docker engine's socket, used by consistent backups (`backup-consistency=stop`,
    /// `pause`, `hooks`) to find, stop and restart the containers of a volume
    /// [default: /var/run/docker.sock]. The managed plugin mounts the host's socket there.
    #[arg(long, env = "VOLTOOL_DOCKER_SOCKET")]
    pub docker_socket: Option<PathBuf>,
    /// Serve Prometheus metrics (`/metrics`) over TCP on this address, e.g. `127.0.0.1:9323`
    /// (overrides `[http] listen`). A non-loopback address needs `[http] token`. The metrics
    /// are also on the management socket: `curl --unix-socket /run/voltool/api.sock http://x/metrics`.
    #[arg(long, value_name = "ADDR", env = "VOLTOOL_HTTP")]
    pub http: Option<String>,
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

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message to one notifier (by its `name`) or to all, and wait for each to
    /// be delivered or to fail (one attempt, within its timeout). Exits 1 when one failed.
    Test {
        /// The notifier's `name` in the config file [default: all of them].
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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

    #[test]
    fn log_format_is_text_or_json_before_or_after_the_subcommand() {
        use clap::Parser;
        use voltool_daemon::LogFormat;
        let parse = |args: &[&str]| super::Cli::try_parse_from(args).map(|c| c.log_format);
        assert_eq!(parse(&["voltool", "serve", "--log-format", "json"]).ok(), Some(Some(LogFormat::Json)));
        assert_eq!(parse(&["voltool", "--log-format=text", "serve"]).ok(), Some(Some(LogFormat::Text)));
        let err = parse(&["voltool", "serve", "--log-format", "yaml"]).expect_err("yaml").to_string();
        assert!(err.contains("text") && err.contains("json"), "{err}");
    }
}
