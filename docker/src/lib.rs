//! # voltool-docker
//!
//! ## Overview
//! The Docker Engine API as voltool's backup engine needs it for consistent backups: which
//! containers use a volume (by mount, for voltool's own driver name), and the steps around a
//! snapshot — stop/start, pause/unpause, `docker exec` of a hook with a deadline, and scaling a
//! Swarm service to 0 and back.
//!
//! ## Design
//! - One narrow trait, [`Engine`], with the real implementation [`DockerEngine`] (bollard over
//!   the engine's unix socket, every call under a deadline) and a recording fake
//!   ([`RecordingEngine`]) that keeps an in-memory set of containers and services, so the
//!   daemon's consistency steps are tested without a dockerd.
//! - Which containers a step touches is decided here, by pure functions over what the engine
//!   reported ([`users_of`], [`companions_of`]): containers that mount the volume, plus the ones
//!   labelled `voltool.backup.stop=true` in the same Compose project or Swarm stack.
//! - Errors are typed ([`DockerError`]): the engine unreachable, an object gone, the engine
//!   refusing a request (its HTTP status), a deadline. Callers decide on the kind.
//!
//! ## Boundaries
//! Knows the Docker Engine API and nothing of volumes, backups or the store: it takes names
//! and IDs and returns what the engine said. It must not depend on another voltool crate.
//!
//! ## Limitations
//! Docker has no API to kill an `exec`: a hook that outlives its deadline is reported as timed
//! out and left to finish (or to the container's stop) on its own.

mod engine;
mod fake;
mod select;

use std::collections::BTreeMap;
use std::time::Duration;

pub use engine::DockerEngine;
pub use fake::{EngineCall, RecordingEngine};
pub use select::{LABEL_POST, LABEL_PRE, LABEL_STOP, companions_of, users_of};

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine's socket does not answer (no dockerd, wrong path, not mounted into the
    /// plugin).
    #[error("the docker engine at {socket} cannot be reached: {source}")]
    Unreachable {
        socket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The container or service is gone.
    #[error("{what} does not exist (any more)")]
    NotFound { what: String },
    /// The engine refused the request.
    #[error("the docker engine refused to {action} {what}: {message} (HTTP {status})")]
    Refused { action: &'static str, what: String, status: u16, message: String },
    /// The engine did not finish the call in time.
    #[error("the docker engine did not {action} {what} within {secs} s")]
    Timeout { action: &'static str, what: String, secs: u64 },
}

pub type Result<T, E = DockerError> = std::result::Result<T, E>;

/// Whether a container runs, is paused, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    /// Created, exited, restarting, dead, being removed.
    Other,
}

/// A volume mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub name: String,
    pub driver: String,
}

/// A container as the consistency steps see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Its name without the leading `/`.
    pub name: String,
    pub state: RunState,
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<VolumeMount>,
    /// When it last stopped (`State.FinishedAt`), as the engine writes it; only from
    /// [`Engine::inspect`]. Used to tell "still stopped by us" from "stopped again by someone".
    pub finished_at: Option<String>,
}

impl Container {
    /// The Swarm service it is a task of.
    pub fn service(&self) -> Option<&str> {
        self.labels.get("com.docker.swarm.service.id").map(String::as_str)
    }

    /// The Compose project or Swarm stack it belongs to.
    pub fn app(&self) -> Option<&str> {
        self.labels
            .get("com.docker.compose.project")
            .or_else(|| self.labels.get("com.docker.stack.namespace"))
            .map(String::as_str)
    }
}

/// What a hook run with [`Engine::exec`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// `None` when it did not finish before the deadline.
    pub exit_code: Option<i64>,
    /// Its stdout and stderr, interleaved, cut to [`EXEC_OUTPUT_LIMIT`] bytes (the end kept).
    pub output: String,
}

/// The most output of one hook that is kept (the last bytes).
pub const EXEC_OUTPUT_LIMIT: usize = 16 * 1024;

/// A replicated Swarm service's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceScale {
    pub id: String,
    pub name: String,
    /// `None` for a global service (it cannot be scaled).
    pub replicas: Option<u64>,
}

/// The engine calls the consistency steps make. Every call is bounded in time.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// Whether the engine answers.
    async fn ping(&self) -> Result<()>;
    /// The running and paused containers, with their labels and volume mounts.
    async fn containers(&self) -> Result<Vec<Container>>;
    /// One container, with `finished_at`; `None` when it is gone.
    async fn inspect(&self, id: &str) -> Result<Option<Container>>;
    /// Stops a container (SIGTERM, then SIGKILL after `grace`).
    async fn stop(&self, id: &str, grace: Duration) -> Result<()>;
    async fn start(&self, id: &str) -> Result<()>;
    async fn pause(&self, id: &str) -> Result<()>;
    async fn unpause(&self, id: &str) -> Result<()>;
    /// Runs `sh -c CMD` in a container and waits at most `deadline` for it.
    async fn exec(&self, id: &str, cmd: &str, deadline: Duration) -> Result<ExecOutcome>;
    async fn service(&self, id: &str) -> Result<ServiceScale>;
    /// Sets a replicated service's replica count (the rest of its spec unchanged).
    async fn scale(&self, id: &str, replicas: u64) -> Result<()>;
    /// How many of the service's tasks are running or starting.
    async fn live_tasks(&self, id: &str) -> Result<u64>;
}
