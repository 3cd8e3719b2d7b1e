//! Consistent backups of live volumes (SPEC §7): what `backup-consistency` asks for
//! ([`Mode`]), and the steps around the snapshot — hooks, stopping or pausing the containers
//! that use the volume (Swarm services scaled to 0 and back), freezing its filesystem — with
//! the downtime of a snapshot rather than of a backup.
//!
//! ## A consistent run
//! 1. The engine lists the running containers; those that mount the volume (for this driver)
//!    and, with `voltool.backup.stop=true`, others of their Compose project or Swarm stack,
//!    are the run's containers. An engine that cannot be reached fails the run (never a
//!    silently inconsistent backup when one was asked for).
//! 2. `hooks`: `voltool.backup.pre` runs in each labelled container (a deadline, its output
//!    logged). A failing pre-hook fails the run; the post-hooks still run.
//! 3. The holds — every container to stop or pause, every service to scale to 0 — are written
//!    to the store *before the first is taken*, then taken in order (companions first).
//! 4. The snapshot (`VolumeService::snapshot`: freeze, reflink, thaw). With one, the holds are
//!    released at once (reverse order) and the backup streams from the copy; without one, the
//!    containers stay held (the filesystem frozen, for `freeze`) for the whole backup, and the
//!    catalog entry says so.
//! 5. `voltool.backup.post` runs; the downtime (first hold to last release) is recorded.
//!
//! ## Safety
//! A hold is removed from the store only once released. A daemon killed in the window finds
//! them at start ([`Backups::release_leftover_holds`]) and releases them, retrying until the
//! engine answers: a container is started only if it is still stopped with the `FinishedAt`
//! of voltool's stop (one a user started and stopped again is left alone), a service scaled
//! back only if it still has 0 replicas, a paused container unpaused only if still paused.

mod holds;
mod mode;
mod recover;

use std::sync::Arc;
use std::time::Duration;

pub use holds::Held;
pub use mode::{Mode, ModeError};

/// How long a hook may run.
pub const HOOK_DEADLINE: Duration = Duration::from_secs(300);
/// How long a container gets between SIGTERM and SIGKILL when stopped for a backup (as
/// `docker stop`).
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long scaling a service to 0 may take until its last task is gone.
pub const SCALE_DEADLINE: Duration = Duration::from_secs(120);

/// The Docker engine and the driver name this daemon serves (how containers name its
/// volumes).
#[derive(Clone)]
pub struct DockerLink {
    pub engine: Arc<dyn voltool_docker::Engine>,
    pub driver: String,
}

impl std::fmt::Debug for DockerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerLink").field("driver", &self.driver).finish_non_exhaustive()
    }
}

/// Why the consistency steps failed the run (their message is the run's reason).
#[derive(Debug, thiserror::Error)]
pub enum ConsistencyError {
    #[error("backup-consistency={mode} needs the docker engine: {source}")]
    Engine {
        mode: Mode,
        #[source]
        source: voltool_docker::DockerError,
    },
    #[error("pre-hook of container {container} ({cmd:?}) {how}; its output: {output}")]
    PreHook { container: String, cmd: String, how: String, output: String },
    #[error("could not {action} container {container}: {source}")]
    Hold {
        action: &'static str,
        container: String,
        #[source]
        source: voltool_docker::DockerError,
    },
    #[error("service {service} did not scale to 0 within {} s (tasks still running: {live})", SCALE_DEADLINE.as_secs())]
    ScaleStuck { service: String, live: u64 },
    #[error("freezing the volume: {0}")]
    Freeze(#[source] voltool_plugin::Error),
    #[error(transparent)]
    Store(#[from] voltool_plugin::store::StoreError),
}

#[cfg(test)]
#[path = "consistency_tests.rs"]
mod tests;
