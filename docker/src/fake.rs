//! [`RecordingEngine`]: an in-memory engine that records every call, for tests without a
//! dockerd.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::{Container, DockerError, Engine, ExecOutcome, Result, RunState, ServiceScale};

/// One call the fake received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineCall {
    Stop(String),
    Start(String),
    Pause(String),
    Unpause(String),
    Exec { container: String, cmd: String },
    Scale { service: String, replicas: u64 },
}

#[derive(Debug, Default)]
struct State {
    containers: Vec<Container>,
    services: BTreeMap<String, ServiceScale>,
    calls: Vec<EngineCall>,
    unreachable: bool,
    exec: BTreeMap<String, ExecOutcome>,
    stops: u64,
    /// Containers whose start is refused (as dockerd does when a volume cannot be mounted).
    refuse_start: Vec<String>,
}

/// An engine with the containers and services a test gives it. Stopping a container marks it
/// stopped with a new `finished_at`; scaling a service changes its replicas at once (its live
/// tasks follow immediately).
#[derive(Debug, Default)]
pub struct RecordingEngine {
    state: Mutex<State>,
}

impl RecordingEngine {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds (or replaces) a container.
    pub fn add(&self, c: Container) {
        let mut s = self.lock();
        s.containers.retain(|x| x.id != c.id);
        s.containers.push(c);
    }

    /// Adds a replicated service.
    pub fn add_service(&self, id: &str, name: &str, replicas: u64) {
        let svc = ServiceScale { id: id.into(), name: name.into(), replicas: Some(replicas) };
        self.lock().services.insert(id.into(), svc);
    }

    /// What `sh -c CMD` returns (default: exit 0, no output).
    pub fn on_exec(&self, cmd: &str, outcome: ExecOutcome) {
        self.lock().exec.insert(cmd.into(), outcome);
    }

    /// From now on every call fails as if no engine were there (or works again).
    pub fn set_unreachable(&self, yes: bool) {
        self.lock().unreachable = yes;
    }

    /// From now on starting container `id` is refused with HTTP 500.
    pub fn refuse_start(&self, id: &str) {
        self.lock().refuse_start.push(id.into());
    }

    /// Removes a container (a user deleted it).
    pub fn remove(&self, id: &str) {
        self.lock().containers.retain(|c| c.id != id);
    }

    /// Sets a container's state as a user would (`docker stop`/`start`), a new `finished_at`
    /// when it stops.
    pub fn set_state(&self, id: &str, state: RunState) {
        let mut s = self.lock();
        s.stops += 1;
        let n = s.stops;
        if let Some(c) = s.containers.iter_mut().find(|c| c.id == id) {
            if c.state != RunState::Other && state == RunState::Other {
                c.finished_at = Some(format!("user-stop-{n}"));
            }
            c.state = state;
        }
    }

    pub fn calls(&self) -> Vec<EngineCall> {
        self.lock().calls.clone()
    }

    pub fn state_of(&self, id: &str) -> Option<RunState> {
        self.lock().containers.iter().find(|c| c.id == id).map(|c| c.state)
    }

    /// A container's `finished_at` now.
    pub fn finished_at_of(&self, id: &str) -> Option<String> {
        self.lock().containers.iter().find(|c| c.id == id).and_then(|c| c.finished_at.clone())
    }

    pub fn replicas_of(&self, service: &str) -> Option<u64> {
        self.lock().services.get(service).and_then(|s| s.replicas)
    }

    /// Fails when unreachable, else records `call` (if any) and gives the state.
    fn enter(&self, call: Option<EngineCall>) -> Result<MutexGuard<'_, State>> {
        let mut s = self.lock();
        if s.unreachable {
            return Err(DockerError::Unreachable {
                socket: "/fake/docker.sock".into(),
                source: "connection refused (the recording engine is set unreachable)".into(),
            });
        }
        if let Some(c) = call {
            s.calls.push(c);
        }
        Ok(s)
    }

    fn set(&self, call: EngineCall, id: &str, from: &[RunState], to: RunState) -> Result<()> {
        let mut s = self.enter(Some(call))?;
        s.stops += 1;
        let n = s.stops;
        let c = s
            .containers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| DockerError::NotFound { what: format!("container {id}") })?;
        if from.contains(&c.state) {
            if to == RunState::Other {
                c.finished_at = Some(format!("stop-{n}"));
            }
            c.state = to;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Engine for RecordingEngine {
    async fn ping(&self) -> Result<()> {
        self.enter(None).map(drop)
    }

    async fn containers(&self) -> Result<Vec<Container>> {
        let s = self.enter(None)?;
        Ok(s.containers.iter().filter(|c| c.state != RunState::Other).cloned().collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<Container>> {
        Ok(self.enter(None)?.containers.iter().find(|c| c.id == id).cloned())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<()> {
        self.set(EngineCall::Stop(id.into()), id, &[RunState::Running, RunState::Paused], RunState::Other)
    }

    async fn start(&self, id: &str) -> Result<()> {
        if self.lock().refuse_start.iter().any(|r| r == id) {
            drop(self.enter(Some(EngineCall::Start(id.into())))?);
            return Err(DockerError::Refused {
                action: "start",
                what: format!("container {id}"),
                status: 500,
                message: "error while mounting volume".into(),
            });
        }
        self.set(EngineCall::Start(id.into()), id, &[RunState::Other], RunState::Running)
    }

    async fn pause(&self, id: &str) -> Result<()> {
        self.set(EngineCall::Pause(id.into()), id, &[RunState::Running], RunState::Paused)
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        self.set(EngineCall::Unpause(id.into()), id, &[RunState::Paused], RunState::Running)
    }

    async fn exec(&self, id: &str, cmd: &str, _deadline: Duration) -> Result<ExecOutcome> {
        let s = self.enter(Some(EngineCall::Exec { container: id.into(), cmd: cmd.into() }))?;
        if !s.containers.iter().any(|c| c.id == id && c.state == RunState::Running) {
            return Err(DockerError::Refused {
                action: "exec in",
                what: format!("container {id}"),
                status: 409,
                message: "container is not running".into(),
            });
        }
        Ok(s.exec.get(cmd).cloned().unwrap_or(ExecOutcome { exit_code: Some(0), output: String::new() }))
    }

    async fn service(&self, id: &str) -> Result<ServiceScale> {
        let s = self.enter(None)?;
        s.services.get(id).cloned().ok_or_else(|| DockerError::NotFound { what: format!("service {id}") })
    }

    async fn scale(&self, id: &str, replicas: u64) -> Result<()> {
        let mut s = self.enter(Some(EngineCall::Scale { service: id.into(), replicas }))?;
        let svc = s.services.get_mut(id).ok_or_else(|| DockerError::NotFound { what: format!("service {id}") })?;
        svc.replicas = Some(replicas);
        Ok(())
    }

    async fn live_tasks(&self, id: &str) -> Result<u64> {
        let s = self.enter(None)?;
        Ok(s.services.get(id).and_then(|v| v.replicas).unwrap_or(0))
    }
}
