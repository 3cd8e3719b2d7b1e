//! The volume watcher: every interval, each volume's usage, mounts and (network volumes) its
//! server's reachability, measured off the request path, into the metrics; a server that
//! stops answering is a `server-down` event, once per outage.
//!
//! Every measurement is bounded: usage within the volume service's own budget, and only for
//! volumes where it is cheap (a size limit, tmpfs); a server check within [`SERVER_DEADLINE`].
//! A pass never overlaps the next one.

use std::collections::HashMap;
use std::time::Duration;

use voltool_plugin::VolumeService;
use voltool_plugin::options::{VolumeSpec, VolumeType};

use super::{EventKind, Observer, VolumeSample};

/// How long a server has to accept a TCP connection.
pub const SERVER_DEADLINE: Duration = Duration::from_secs(3);

/// What one pass measured of a volume, beyond the metrics: for the near-full check.
#[derive(Debug, Clone)]
pub struct Usage {
    pub volume: String,
    pub used: u64,
    pub limit: u64,
}

/// The (host, port) a network volume's server is checked at.
fn server_of(spec: &VolumeSpec) -> Option<(String, u16)> {
    match spec.kind {
        VolumeType::Nfs => spec.nfs.as_ref().map(|t| (t.addr.clone(), t.port.unwrap_or(2049))),
        VolumeType::Cifs => spec.cifs.as_ref().map(|t| (t.host.clone(), t.port.unwrap_or(445))),
        _ => None,
    }
}

/// Whether `host:port` accepts a TCP connection within [`SERVER_DEADLINE`] (the name
/// resolution included).
async fn reachable(host: &str, port: u16) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    matches!(tokio::time::timeout(SERVER_DEADLINE, tokio::net::TcpStream::connect((h.as_str(), port))).await, Ok(Ok(_)))
}

/// How the size limit is enforced, from the volume's backing description.
fn quota_of(spec: &VolumeSpec, backing: &str) -> &'static str {
    if spec.size.is_none() {
        "none"
    } else if backing.starts_with("image") {
        "image"
    } else if backing.starts_with("project") {
        "project"
    } else if backing.starts_with("tmpfs") {
        "tmpfs"
    } else {
        "none"
    }
}

/// The watcher's memory between passes.
#[derive(Debug, Default)]
pub struct Watcher {
    /// Servers found down at the last pass, by volume (an event only when it goes down).
    down: HashMap<String, bool>,
}

impl Watcher {
    /// One pass over every volume: sets the volume metrics and returns the usage of volumes
    /// with a size limit.
    pub async fn pass(&mut self, svc: &VolumeService, observer: &Observer) -> Vec<Usage> {
        let Ok(views) = svc.list().await else { return Vec::new() };
        let mut samples = Vec::with_capacity(views.len());
        let mut usage = Vec::new();
        for v in views {
            // Usage where it is cheap to know (a size limit: the kernel's quota count or the
            // image's statfs; tmpfs): a directory volume without a limit would be walked, at
            // every pass, for a number nothing depends on.
            let cheap = v.spec.size.is_some() || v.spec.kind == VolumeType::Tmpfs;
            let status = if cheap { svc.get(&v.name).await.ok().flatten().and_then(|full| full.status) } else { None };
            let backing = status.as_ref().map_or("", |s| s.backing.as_str());
            let used = status.as_ref().and_then(|s| s.used_bytes);
            let server_up = match server_of(&v.spec) {
                Some((host, port)) => {
                    let up = reachable(&host, port).await;
                    let was_down = self.down.insert(v.name.clone(), !up).unwrap_or(false);
                    if !up && !was_down {
                        observer.emit(observer.event(EventKind::ServerDown).volume(&v.name).reason(format!(
                            "server {host} port {port} did not accept a connection within {SERVER_DEADLINE:?}"
                        )));
                    }
                    Some(up)
                }
                None => None,
            };
            if let (Some(used), Some(limit)) = (used, v.spec.size) {
                usage.push(Usage { volume: v.name.clone(), used, limit });
            }
            samples.push(VolumeSample {
                quota: quota_of(&v.spec, backing).to_owned(),
                kind: v.spec.kind.to_string(),
                size_limit: v.spec.size,
                used,
                mounts: v.mount_count,
                mounted: v.mounted,
                server_up,
                name: v.name,
            });
        }
        self.down.retain(|name, _| samples.iter().any(|s| &s.name == name));
        observer.metrics().set_volumes(&samples);
        observer.set_measured(samples);
        usage
    }
}
