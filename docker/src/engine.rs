//! [`DockerEngine`]: the [`Engine`] over bollard and the engine's unix socket.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::StartExecResults;
use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum, ExecConfig, MountPoint, TaskState};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, ListTasksOptions, StopContainerOptions, UpdateServiceOptions,
};
use futures_util::StreamExt;

use crate::{
    Container, DockerError, EXEC_OUTPUT_LIMIT, Engine, ExecOutcome, Result, RunState, ServiceScale, VolumeMount,
};

/// How long one plain engine call (list, inspect, start, pause...) may take.
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The engine behind a unix socket (`/var/run/docker.sock` by default).
#[derive(Debug)]
pub struct DockerEngine {
    /// The client, made at the first call that finds the socket (a daemon starts before, or
    /// without, a Docker engine).
    client: std::sync::Mutex<Option<Docker>>,
    socket: String,
}

impl DockerEngine {
    /// A client of the engine at `socket`. Connects nothing: an engine that is not there shows
    /// at each call, as [`DockerError::Unreachable`].
    pub fn new(socket: &std::path::Path) -> Self {
        Self { client: std::sync::Mutex::default(), socket: socket.display().to_string() }
    }

    fn docker(&self) -> Result<Docker> {
        let mut slot = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let d = Docker::connect_with_unix(&self.socket, CALL_DEADLINE.as_secs(), bollard::API_DEFAULT_VERSION)
            .map_err(|e| DockerError::Unreachable { socket: self.socket.clone(), source: Box::new(e) })?;
        *slot = Some(d.clone());
        Ok(d)
    }

    /// Runs one call under `deadline`, its error mapped to a [`DockerError`].
    async fn call<T>(
        &self,
        action: &'static str,
        what: &str,
        deadline: Duration,
        fut: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T> {
        match tokio::time::timeout(deadline, fut).await {
            Err(_) => Err(DockerError::Timeout { action, what: what.to_owned(), secs: deadline.as_secs() }),
            Ok(r) => r.map_err(|e| self.error(action, what, e)),
        }
    }

    /// A call whose "already so" answer (HTTP 304: already started/stopped) is success.
    async fn unit(
        &self,
        action: &'static str,
        what: &str,
        deadline: Duration,
        fut: impl Future<Output = Result<(), BollardError>>,
    ) -> Result<()> {
        match tokio::time::timeout(deadline, fut).await {
            Err(_) => Err(DockerError::Timeout { action, what: what.to_owned(), secs: deadline.as_secs() }),
            Ok(Err(BollardError::DockerResponseServerError { status_code: 304, .. }) | Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(action, what, e)),
        }
    }

    fn error(&self, action: &'static str, what: &str, e: BollardError) -> DockerError {
        match e {
            BollardError::DockerResponseServerError { status_code: 404, .. } => {
                DockerError::NotFound { what: what.to_owned() }
            }
            BollardError::DockerResponseServerError { status_code, message } => DockerError::Refused {
                action,
                what: what.to_owned(),
                status: status_code,
                message: message.chars().take(300).collect(),
            },
            other => DockerError::Unreachable { socket: self.socket.clone(), source: Box::new(other) },
        }
    }
}

fn container_of(
    id: Option<String>,
    name: Option<String>,
    state: RunState,
    labels: Option<HashMap<String, String>>,
    mounts: Option<Vec<MountPoint>>,
    finished_at: Option<String>,
) -> Container {
    let volumes = mounts
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| Some(VolumeMount { name: m.name?, driver: m.driver.unwrap_or_default() }))
        .collect();
    Container {
        id: id.unwrap_or_default(),
        name: name.unwrap_or_default().trim_start_matches('/').to_owned(),
        state,
        labels: labels.unwrap_or_default().into_iter().collect::<BTreeMap<_, _>>(),
        volumes,
        finished_at,
    }
}

/// Keeps the last [`EXEC_OUTPUT_LIMIT`] bytes of a hook's output.
fn keep_tail(buf: &mut Vec<u8>, more: &[u8]) {
    buf.extend_from_slice(more);
    if buf.len() > EXEC_OUTPUT_LIMIT {
        buf.drain(..buf.len() - EXEC_OUTPUT_LIMIT);
    }
}

#[async_trait::async_trait]
impl Engine for DockerEngine {
    async fn ping(&self) -> Result<()> {
        let docker = self.docker()?;
        self.call("answer", "a ping", CALL_DEADLINE, docker.ping()).await.map(drop)
    }

    async fn containers(&self) -> Result<Vec<Container>> {
        let docker = self.docker()?;
        let opts = ListContainersOptions { all: false, ..Default::default() };
        let list = self.call("list", "the containers", CALL_DEADLINE, docker.list_containers(Some(opts))).await?;
        Ok(list
            .into_iter()
            .map(|c| {
                let state = match c.state {
                    Some(ContainerSummaryStateEnum::RUNNING) => RunState::Running,
                    Some(ContainerSummaryStateEnum::PAUSED) => RunState::Paused,
                    _ => RunState::Other,
                };
                let name = c.names.and_then(|n| n.into_iter().next());
                container_of(c.id, name, state, c.labels, c.mounts, None)
            })
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<Container>> {
        let docker = self.docker()?;
        let what = format!("container {id}");
        let got = self
            .call("inspect", &what, CALL_DEADLINE, docker.inspect_container(id, None::<InspectContainerOptions>))
            .await;
        let c = match got {
            Err(DockerError::NotFound { .. }) => return Ok(None),
            other => other?,
        };
        let st = c.state.unwrap_or_default();
        let state = match st.status {
            Some(ContainerStateStatusEnum::RUNNING) => RunState::Running,
            Some(ContainerStateStatusEnum::PAUSED) => RunState::Paused,
            _ => RunState::Other,
        };
        let labels = c.config.and_then(|cfg| cfg.labels);
        Ok(Some(container_of(c.id, c.name, state, labels, c.mounts, st.finished_at)))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let docker = self.docker()?;
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptions { t: Some(secs), signal: None };
        let deadline = grace + CALL_DEADLINE;
        self.unit("stop", &format!("container {id}"), deadline, docker.stop_container(id, Some(opts))).await
    }

    async fn start(&self, id: &str) -> Result<()> {
        let docker = self.docker()?;
        let what = format!("container {id}");
        self.unit("start", &what, CALL_DEADLINE, docker.start_container(id, None)).await
    }

    async fn pause(&self, id: &str) -> Result<()> {
        let docker = self.docker()?;
        self.unit("pause", &format!("container {id}"), CALL_DEADLINE, docker.pause_container(id)).await
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        let docker = self.docker()?;
        self.unit("unpause", &format!("container {id}"), CALL_DEADLINE, docker.unpause_container(id)).await
    }

    async fn exec(&self, id: &str, cmd: &str, deadline: Duration) -> Result<ExecOutcome> {
        let docker = self.docker()?;
        let what = format!("container {id}");
        let until = tokio::time::Instant::now() + deadline;
        let config = ExecConfig {
            cmd: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), cmd.to_owned()]),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self.call("exec in", &what, CALL_DEADLINE, docker.create_exec(id, config)).await?;
        let started = self.call("exec in", &what, CALL_DEADLINE, docker.start_exec(&created.id, None)).await?;
        let mut out = Vec::new();
        let mut finished = true;
        if let StartExecResults::Attached { mut output, .. } = started {
            loop {
                match tokio::time::timeout_at(until, output.next()).await {
                    Err(_) => {
                        finished = false;
                        break;
                    }
                    Ok(None | Some(Err(_))) => break,
                    Ok(Some(Ok(
                        LogOutput::StdOut { message } | LogOutput::StdErr { message } | LogOutput::Console { message },
                    ))) => keep_tail(&mut out, &message),
                    Ok(Some(Ok(LogOutput::StdIn { .. }))) => {}
                }
            }
        }
        let mut exit_code = None;
        if finished {
            loop {
                let info =
                    self.call("inspect an exec in", &what, CALL_DEADLINE, docker.inspect_exec(&created.id)).await?;
                if info.running != Some(true) {
                    exit_code = info.exit_code;
                    break;
                }
                if tokio::time::Instant::now() >= until {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(ExecOutcome { exit_code, output: String::from_utf8_lossy(&out).into_owned() })
    }

    async fn service(&self, id: &str) -> Result<ServiceScale> {
        let docker = self.docker()?;
        let what = format!("service {id}");
        let s = self.call("inspect", &what, CALL_DEADLINE, docker.inspect_service(id, None)).await?;
        let spec = s.spec.unwrap_or_default();
        let replicas =
            spec.mode.and_then(|m| m.replicated).map(|r| u64::try_from(r.replicas.unwrap_or(1)).unwrap_or(0));
        Ok(ServiceScale { id: s.id.unwrap_or_else(|| id.to_owned()), name: spec.name.unwrap_or_default(), replicas })
    }

    async fn scale(&self, id: &str, replicas: u64) -> Result<()> {
        let docker = self.docker()?;
        let what = format!("service {id}");
        let s = self.call("inspect", &what, CALL_DEADLINE, docker.inspect_service(id, None)).await?;
        let version = s.version.and_then(|v| v.index).unwrap_or(0);
        let mut spec = s.spec.unwrap_or_default();
        let Some(rep) = spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) else {
            return Err(DockerError::Refused {
                action: "scale",
                what,
                status: 400,
                message: "the service is not replicated (a global service cannot be scaled)".into(),
            });
        };
        rep.replicas = Some(i64::try_from(replicas).unwrap_or(i64::MAX));
        let opts = UpdateServiceOptions { version: i32::try_from(version).unwrap_or(i32::MAX), ..Default::default() };
        self.call("scale", &what, CALL_DEADLINE, docker.update_service(id, spec, opts, None)).await.map(drop)
    }

    async fn live_tasks(&self, id: &str) -> Result<u64> {
        let docker = self.docker()?;
        let filters = HashMap::from([("service".to_owned(), vec![id.to_owned()])]);
        let opts = ListTasksOptions { filters: Some(filters) };
        let what = format!("the tasks of service {id}");
        let tasks = self.call("list", &what, CALL_DEADLINE, docker.list_tasks(Some(opts))).await?;
        let live = tasks
            .iter()
            .filter(|t| {
                !matches!(
                    t.status.as_ref().and_then(|s| s.state),
                    Some(
                        TaskState::COMPLETE
                            | TaskState::SHUTDOWN
                            | TaskState::FAILED
                            | TaskState::REJECTED
                            | TaskState::REMOVE
                            | TaskState::ORPHANED
                    )
                )
            })
            .count();
        Ok(live as u64)
    }
}
