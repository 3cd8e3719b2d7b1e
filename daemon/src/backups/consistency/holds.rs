//! Taking and releasing a run's holds ([`Held`]); each hold is in the store from before it is
//! taken until after it is released.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use voltool_docker::{Container, DockerError, LABEL_POST, LABEL_PRE, RunState, companions_of, users_of};
use voltool_plugin::VolumeService;
use voltool_plugin::store::{Hold, HoldKind, StoreError};

use super::{ConsistencyError, DockerLink, HOOK_DEADLINE, Mode, SCALE_DEADLINE, STOP_GRACE};

/// What a run holds: containers stopped or paused, services scaled to 0, the filesystem
/// frozen; and the post-hooks still to run. [`Held::release`] gives it all back.
#[derive(Debug, Default)]
pub struct Held {
    backup: String,
    volume: String,
    holds: Vec<Hold>,
    /// (container ID, name, command) of each `voltool.backup.post`.
    post_hooks: Vec<(String, String, String)>,
    /// When the first hold was taken.
    since: Option<Instant>,
    /// The containers that use the volume (names), running when the run began.
    pub users: Vec<String>,
    /// What the run's log should say: hook outputs, post-hook failures.
    pub notes: Vec<String>,
    /// Holds not given back as they were taken (a container that could not be started again,
    /// one left stopped because someone else had meanwhile): the run's record says so.
    pub not_released: Vec<String>,
}

/// Runs a store call on the blocking pool.
async fn store<T: Send + 'static>(
    svc: &VolumeService,
    f: impl FnOnce(&voltool_plugin::store::Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let s = svc.clone();
    match tokio::task::spawn_blocking(move || f(s.store())).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl Held {
    /// Runs the pre-hooks and takes the holds `mode` asks for on `volume`'s containers. On
    /// failure everything taken is released again before the error returns.
    ///
    /// # Errors
    /// [`ConsistencyError`]: the engine unreachable, a failing pre-hook, a container that
    /// would not stop, a service that would not scale down.
    pub async fn take(
        link: &DockerLink,
        svc: &VolumeService,
        backup: &str,
        volume: &str,
        mode: Mode,
    ) -> Result<Self, ConsistencyError> {
        let mut held = Held { backup: backup.into(), volume: volume.into(), ..Held::default() };
        if !mode.needs_engine() {
            return Ok(held);
        }
        let engine_err = |source| ConsistencyError::Engine { mode, source };
        let all = link.engine.containers().await.map_err(engine_err)?;
        let users = users_of(&all, volume, &link.driver);
        held.users = users.iter().map(|c| c.name.clone()).collect();
        let mut order = if mode.stop || mode.pause { companions_of(&all, &users) } else { Vec::new() };
        order.extend(users);
        if mode.hooks {
            held.post_hooks = hooks_of(&order, LABEL_POST);
            if let Err(e) = held.pre_hooks(link, &order).await {
                held.release(link, svc).await;
                return Err(e);
            }
        }
        let plan = match plan(link, backup, &order, mode).await {
            Ok(p) => p,
            Err(e) => {
                held.release(link, svc).await;
                return Err(e);
            }
        };
        if let Err(e) = held.take_all(link, svc, plan).await {
            held.release(link, svc).await;
            return Err(e);
        }
        Ok(held)
    }

    async fn pre_hooks(&mut self, link: &DockerLink, order: &[Container]) -> Result<(), ConsistencyError> {
        for (id, name, cmd) in hooks_of(order, LABEL_PRE) {
            let out = link.engine.exec(&id, &cmd, HOOK_DEADLINE).await;
            let how = match &out {
                Ok(o) if o.exit_code == Some(0) => {
                    self.notes.push(format!("pre-hook in {name}: exit 0{}", tail(&o.output)));
                    continue;
                }
                Ok(o) => match o.exit_code {
                    Some(code) => format!("exited with {code}"),
                    None => format!("did not finish within {} s", HOOK_DEADLINE.as_secs()),
                },
                Err(e) => format!("could not run: {e}"),
            };
            let output = out.map(|o| o.output).unwrap_or_default();
            return Err(ConsistencyError::PreHook { container: name, cmd, how, output: tail(&output) });
        }
        Ok(())
    }

    /// Records the plan, then takes the holds in order.
    async fn take_all(
        &mut self,
        link: &DockerLink,
        svc: &VolumeService,
        plan: Vec<Hold>,
    ) -> Result<(), ConsistencyError> {
        let p = plan.clone();
        store(svc, move |s| s.put_holds(&p)).await?;
        self.since.get_or_insert_with(Instant::now);
        for h in plan {
            self.holds.push(h.clone());
            take_one(link, svc, h).await?;
        }
        Ok(())
    }

    /// Freezes the volume's filesystem until release (`freeze` without a snapshot).
    ///
    /// # Errors
    /// [`ConsistencyError::Freeze`] (a volume that cannot freeze), store errors.
    pub async fn freeze(&mut self, svc: &VolumeService) -> Result<(), ConsistencyError> {
        let h = Hold {
            backup: self.backup.clone(),
            seq: u32::try_from(self.holds.len()).unwrap_or(u32::MAX),
            kind: HoldKind::Frozen,
            target: svc.layout().mountpoint(&self.volume).display().to_string(),
            name: self.volume.clone(),
            replicas: None,
            marker: None,
        };
        let row = h.clone();
        store(svc, move |s| s.put_holds(std::slice::from_ref(&row))).await?;
        self.since.get_or_insert_with(Instant::now);
        self.holds.push(h.clone());
        match svc.set_frozen(&self.volume, true).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.holds.pop();
                let _ = store(svc, move |s| s.drop_hold(&h.backup, h.seq)).await;
                Err(ConsistencyError::Freeze(e))
            }
        }
    }

    /// Whether anything is held (containers, services, the filesystem).
    pub fn holds_anything(&self) -> bool {
        !self.holds.is_empty()
    }

    /// Releases every hold in reverse order and runs the post-hooks. Returns the downtime
    /// (first hold to last release), `None` when nothing was held. A hold that cannot be
    /// released stays in the store (released at the next start) and is noted.
    pub async fn release(&mut self, link: &DockerLink, svc: &VolumeService) -> Option<Duration> {
        for h in std::mem::take(&mut self.holds).into_iter().rev() {
            match release_one(link, svc, &h).await {
                Ok(note) => {
                    if let Some(n) = note {
                        self.not_released.push(n);
                    }
                    let (b, seq) = (h.backup.clone(), h.seq);
                    if let Err(e) = store(svc, move |s| s.drop_hold(&b, seq)).await {
                        tracing::warn!(backup = h.backup, error = %e, "could not record a released hold");
                    }
                }
                Err(e) => {
                    tracing::error!(backup = h.backup, hold = h.name, error = %e, "could not release a hold; retried at the next start");
                    self.not_released
                        .push(format!("could not release {} ({e}); the daemon retries at its next start", h.name));
                }
            }
        }
        let downtime = self.since.take().map(|t| t.elapsed());
        for (id, name, cmd) in std::mem::take(&mut self.post_hooks) {
            match link.engine.exec(&id, &cmd, HOOK_DEADLINE).await {
                Ok(o) if o.exit_code == Some(0) => {
                    self.notes.push(format!("post-hook in {name}: exit 0{}", tail(&o.output)))
                }
                Ok(o) => {
                    self.notes.push(format!("post-hook in {name} failed (exit {:?}){}", o.exit_code, tail(&o.output)))
                }
                Err(e) => self.notes.push(format!("post-hook in {name} could not run: {e}")),
            }
        }
        downtime
    }
}

/// `(ID, name, command)` of the running containers among `order` with the hook `label`.
fn hooks_of(order: &[Container], label: &str) -> Vec<(String, String, String)> {
    order
        .iter()
        .filter(|c| c.state == RunState::Running)
        .filter_map(|c| {
            c.labels.get(label).filter(|v| !v.trim().is_empty()).map(|cmd| (c.id.clone(), c.name.clone(), cmd.clone()))
        })
        .collect()
}

/// The last 2 KiB of a hook's output, for a message (empty when there is none).
fn tail(output: &str) -> String {
    let t = output.trim();
    if t.is_empty() {
        return String::new();
    }
    let start = t.len().saturating_sub(2048);
    let start = (start..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
    format!(": {}", &t[start..])
}

/// The holds for `order`: a Swarm task's service scaled to 0 (once per service) instead of
/// stopping the task, which Swarm would replace; other containers stopped or paused.
async fn plan(link: &DockerLink, backup: &str, order: &[Container], mode: Mode) -> Result<Vec<Hold>, ConsistencyError> {
    let mut out: Vec<Hold> = Vec::new();
    let mut services = BTreeSet::new();
    let hold = |seq: usize, kind, target: &str, name: &str, replicas| Hold {
        backup: backup.into(),
        seq: u32::try_from(seq).unwrap_or(u32::MAX),
        kind,
        target: target.into(),
        name: name.into(),
        replicas,
        marker: None,
    };
    for c in order {
        let seq = out.len();
        if mode.stop
            && let Some(sid) = c.service()
        {
            if !services.insert(sid.to_owned()) {
                continue;
            }
            let s = link.engine.service(sid).await.map_err(|source| ConsistencyError::Engine { mode, source })?;
            let Some(replicas) = s.replicas else {
                return Err(ConsistencyError::Hold {
                    action: "stop",
                    container: c.name.clone(),
                    source: DockerError::Refused {
                        action: "scale",
                        what: format!("global service {}", s.name),
                        status: 400,
                        message: "a global service's tasks would be replaced; use pause or hooks".into(),
                    },
                });
            };
            out.push(hold(seq, HoldKind::Scaled, sid, &s.name, Some(replicas)));
        } else if mode.stop && c.state == RunState::Running {
            // A paused container writes nothing, and started again it would not be paused.
            out.push(hold(seq, HoldKind::Stopped, &c.id, &c.name, None));
        } else if mode.pause && c.state == RunState::Running {
            out.push(hold(seq, HoldKind::Paused, &c.id, &c.name, None));
        }
    }
    Ok(out)
}

async fn take_one(link: &DockerLink, svc: &VolumeService, mut h: Hold) -> Result<(), ConsistencyError> {
    let e = &link.engine;
    let name = h.name.clone();
    let held = |action| {
        let container = name.clone();
        move |source| ConsistencyError::Hold { action, container, source }
    };
    match h.kind {
        HoldKind::Stopped => {
            e.stop(&h.target, STOP_GRACE).await.map_err(held("stop"))?;
            // The stop's own FinishedAt: a different one later means someone else restarted
            // and stopped it, and it is then theirs to start.
            if let Ok(Some(c)) = e.inspect(&h.target).await {
                h.marker = c.finished_at;
                let row = h.clone();
                store(svc, move |s| s.put_holds(std::slice::from_ref(&row))).await?;
            }
        }
        HoldKind::Paused => e.pause(&h.target).await.map_err(held("pause"))?,
        HoldKind::Scaled => {
            e.scale(&h.target, 0).await.map_err(held("scale down the service of"))?;
            let t0 = Instant::now();
            loop {
                let live = e.live_tasks(&h.target).await.map_err(held("watch the service of"))?;
                if live == 0 {
                    break;
                }
                if t0.elapsed() > SCALE_DEADLINE {
                    return Err(ConsistencyError::ScaleStuck { service: h.name.clone(), live });
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        HoldKind::Frozen => {}
    }
    Ok(())
}

/// Releases one hold if it is still voltool's: see the module docs of `consistency`.
/// Returns a note when the hold was left alone.
pub(super) async fn release_one(
    link: &DockerLink,
    svc: &VolumeService,
    h: &Hold,
) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
    let e = &link.engine;
    match h.kind {
        HoldKind::Stopped => match e.inspect(&h.target).await? {
            None => return Ok(Some(format!("container {} was removed meanwhile", h.name))),
            Some(c) if c.state != RunState::Other => {}
            Some(c) if h.marker.is_some() && c.finished_at != h.marker => {
                return Ok(Some(format!(
                    "container {} was started and stopped by someone else meanwhile; left stopped",
                    h.name
                )));
            }
            Some(_) => e.start(&h.target).await?,
        },
        HoldKind::Paused => {
            if let Some(c) = e.inspect(&h.target).await?
                && c.state == RunState::Paused
            {
                e.unpause(&h.target).await?;
            }
        }
        HoldKind::Scaled => match e.service(&h.target).await {
            Err(DockerError::NotFound { .. }) => return Ok(Some(format!("service {} was removed meanwhile", h.name))),
            Err(err) => return Err(err.into()),
            Ok(s) if s.replicas == Some(0) => e.scale(&h.target, h.replicas.unwrap_or(1)).await?,
            Ok(_) => {
                return Ok(Some(format!("service {} was rescaled by someone else meanwhile; left as it is", h.name)));
            }
        },
        HoldKind::Frozen => match svc.set_frozen(&h.name, false).await {
            Ok(_) | Err(voltool_plugin::Error::NotFound { .. }) => {}
            Err(err) => return Err(err.into()),
        },
    }
    Ok(None)
}
