//! Who may do what.
//!
//! **The management socket** ([`ApiAccess`]): the daemon asks the kernel who is on the other
//! end of each connection (`SO_PEERCRED`, unix(7), through tokio's `UnixStream::peer_cred`)
//! and serves root and, when the config file names one (`[api] group = "NAME"`), members of
//! that group: the peer's gid, or any of its supplementary groups as its
//! `/proc/PID/status` `Groups:` line shows them (the process's real credentials), else
//! getgrouplist(3) of the peer's user. Everybody else gets `403` and
//! `permission denied: ...`. The credentials are the connecting process's at connect(2)
//! time; the check is made per request. A peer the kernel gives no credentials for is
//! refused.
//!
//! **Volume options given through Docker** ([`DockerGate`]): whoever may call Docker's API
//! may create volumes, so a `backup-target=` from Docker may name only a target defined in
//! the config file (`[targets.NAME]`) or a directory under `[backup] allowed-dirs` (default:
//! the default target's directory); S3 URLs (and so their endpoints) only come from the
//! config file. Paths are compared lexically, component by component, and a path with `.`
//! or `..` components is refused; the allowed directories are the administrator's, so a
//! symlink inside them is theirs too. The management API (root or the group) may still give
//! any target; Docker repeating the create of such a volume with exactly its options is
//! accepted (it names nothing new, and is how Docker learns of the volume).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use serde_json::json;
use tokio::net::UnixListener;
use voltool_backup::{TargetConfig, TargetSpec};

use crate::options::{OptionError, is_target_url};
use crate::protocol::{DockerVolume, VolumeDriver};
use crate::service::VolumeService;

/// Errors setting up the access policy (at daemon start).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("[api] group {group:?}: no such group on this host (getent group {group})")]
    NoGroup { group: String },
    #[error("[api] group {group:?}: cannot look the group up: {source}")]
    GroupLookup {
        group: String,
        #[source]
        source: nix::Error,
    },
    #[error("[backup] allowed-dirs: {path:?} is not an absolute path without . or .. components")]
    AllowedDir { path: PathBuf },
}

/// The credentials of the process at the other end of a management-socket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => Peer { uid: c.uid(), gid: c.gid(), pid: c.pid() },
            // No credentials: nobody (refused unless that is root, which it is not).
            Err(_) => Peer { uid: u32::MAX, gid: u32::MAX, pid: None },
        }
    }
}

/// Who may use the management socket: root, and the members of `group`.
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    group: Option<(String, u32)>,
}

impl ApiAccess {
    /// Root only, or root and the members of the named group (looked up now).
    ///
    /// # Errors
    /// [`AccessError::NoGroup`], [`AccessError::GroupLookup`].
    pub fn new(group: Option<&str>) -> Result<Self, AccessError> {
        let Some(name) = group else { return Ok(Self::default()) };
        let g = nix::unistd::Group::from_name(name)
            .map_err(|source| AccessError::GroupLookup { group: name.into(), source })?
            .ok_or_else(|| AccessError::NoGroup { group: name.into() })?;
        Ok(Self { group: Some((name.to_string(), g.gid.as_raw())) })
    }

    /// The group's ID, for the socket file's group.
    pub fn gid(&self) -> Option<u32> {
        self.group.as_ref().map(|(_, gid)| *gid)
    }

    /// Whether `peer` may use the API.
    pub fn allows(&self, peer: &Peer) -> bool {
        if peer.uid == 0 {
            return true;
        }
        let Some((_, gid)) = &self.group else { return false };
        peer.gid == *gid || peer_groups(peer).contains(gid)
    }

    /// The refusal message for `peer`.
    pub fn refusal(&self, peer: &Peer) -> String {
        match &self.group {
            Some((name, _)) => format!(
                "permission denied: uid {} may not use the voltool management API (root or group {name})",
                peer.uid
            ),
            None => format!(
                "permission denied: uid {} may not use the voltool management API (root only; [api] group in the daemon's config file admits a group)",
                peer.uid
            ),
        }
    }
}

/// The peer's supplementary groups: its `/proc/PID/status` `Groups:` line while that process
/// still has the peer's uid, else getgrouplist(3) of the peer's user name.
fn peer_groups(peer: &Peer) -> Vec<u32> {
    if let Some(pid) = peer.pid
        && let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
        && let Some(groups) = status_groups(&status, peer.uid)
    {
        return groups;
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid)).ok().flatten();
    let Some(user) = user else { return Vec::new() };
    let Ok(name) = std::ffi::CString::new(user.name) else { return Vec::new() };
    nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(peer.gid))
        .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default()
}

/// The `Groups:` of a `/proc/PID/status` text, if its `Uid:` line holds `uid` (the pid was
/// not reused by another user's process since the connect).
fn status_groups(status: &str, uid: u32) -> Option<Vec<u32>> {
    let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).map(str::split_whitespace);
    let uid_ok = field("Uid:")?.any(|u| u.parse() == Ok(uid));
    uid_ok.then(|| field("Groups:").map(|g| g.filter_map(|x| x.parse().ok()).collect()).unwrap_or_default())
}

/// The management router's gate: refuses peers [`ApiAccess`] does not admit with `403`.
/// Serve the router with `into_make_service_with_connect_info::<Peer>()`.
pub async fn check_peer(
    State(access): State<Arc<ApiAccess>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    if access.allows(&peer) {
        return next.run(req).await;
    }
    tracing::warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, path = %req.uri().path(), "management API: peer refused");
    (StatusCode::FORBIDDEN, axum::Json(json!({ "error": access.refusal(&peer) }))).into_response()
}

/// Which backup targets volume options from Docker may name.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    names: BTreeSet<String>,
    dirs: Vec<PathBuf>,
}

fn plain_absolute(p: &Path) -> bool {
    p.is_absolute() && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

impl TargetPolicy {
    /// The config file's targets, and `allowed_dirs` or (when not set) the directory of the
    /// default target if that is a directory.
    ///
    /// # Errors
    /// [`AccessError::AllowedDir`] for a relative path or one with `.`/`..`.
    pub fn new(
        targets: &BTreeMap<String, TargetConfig>,
        allowed_dirs: Option<&[PathBuf]>,
        default_target: &str,
    ) -> Result<Self, AccessError> {
        let dirs = match allowed_dirs {
            Some(dirs) => {
                for d in dirs {
                    if !plain_absolute(d) {
                        return Err(AccessError::AllowedDir { path: d.clone() });
                    }
                }
                dirs.to_vec()
            }
            None => {
                let spec = if is_target_url(default_target) {
                    TargetSpec::parse(default_target).ok()
                } else {
                    targets.get(default_target).and_then(|c| TargetSpec::from_config(c).ok())
                };
                match spec {
                    Some(TargetSpec::File(p)) if plain_absolute(&p) => vec![p],
                    _ => Vec::new(),
                }
            }
        };
        Ok(Self { names: targets.keys().cloned().collect(), dirs })
    }

    /// Checks the `backup-target` of options given through Docker.
    ///
    /// # Errors
    /// [`OptionError::Value`] saying what Docker may name instead.
    pub fn check(&self, opts: &BTreeMap<String, String>) -> Result<(), OptionError> {
        let Some(v) = opts.get("backup-target") else { return Ok(()) };
        let refuse = |reason: String| OptionError::Value { key: "backup-target".into(), value: v.clone(), reason };
        let allowed = || {
            let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
            let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            format!(
                "through Docker a volume may name a target from the config file ({}) or a directory under [backup] allowed-dirs ({}); the voltool CLI (root or the [api] group) may give any",
                if names.is_empty() { "none defined".into() } else { names.join(", ") },
                if dirs.is_empty() { "none".into() } else { dirs.join(", ") }
            )
        };
        if !is_target_url(v) {
            return if self.names.contains(v) {
                Ok(())
            } else {
                Err(refuse(format!("no target {v:?} in the config file; {}", allowed())))
            };
        }
        match TargetSpec::parse(v) {
            Ok(TargetSpec::File(p)) if plain_absolute(&p) && self.dirs.iter().any(|d| p.starts_with(d)) => Ok(()),
            Ok(TargetSpec::File(_)) => {
                Err(refuse(format!("the directory is not under [backup] allowed-dirs; {}", allowed())))
            }
            Ok(TargetSpec::S3(_)) => Err(refuse(format!(
                "S3 targets (and their endpoints) come only from the config file ([targets.NAME]); {}",
                allowed()
            ))),
            Err(e) => Err(refuse(e.to_string())),
        }
    }
}

/// The volume service as Docker's plugin API sees it: volume options pass [`TargetPolicy`]
/// before the service sees them; everything else goes straight through.
#[derive(Debug, Clone)]
pub struct DockerGate {
    svc: VolumeService,
    policy: Arc<TargetPolicy>,
}

impl DockerGate {
    pub fn new(svc: VolumeService, policy: TargetPolicy) -> Self {
        Self { svc, policy: Arc::new(policy) }
    }
}

impl VolumeDriver for DockerGate {
    type Error = crate::Error;

    async fn create(&self, name: String, opts: BTreeMap<String, String>) -> crate::Result<()> {
        if let Err(e) = self.policy.check(&opts) {
            // Docker repeating the create of a volume the management API made with exactly
            // these options changes nothing (and is how Docker learns of such a volume).
            match self.svc.record(&name).await {
                Ok(rec) if rec.options == opts => {}
                _ => return Err(e.into()),
            }
        }
        VolumeDriver::create(&self.svc, name, opts).await
    }

    async fn remove(&self, name: String) -> crate::Result<()> {
        VolumeDriver::remove(&self.svc, name).await
    }

    async fn mount(&self, name: String, id: String) -> crate::Result<PathBuf> {
        VolumeDriver::mount(&self.svc, name, id).await
    }

    async fn unmount(&self, name: String, id: String) -> crate::Result<()> {
        VolumeDriver::unmount(&self.svc, name, id).await
    }

    async fn path(&self, name: String) -> crate::Result<PathBuf> {
        VolumeDriver::path(&self.svc, name).await
    }

    async fn get(&self, name: String) -> crate::Result<Option<DockerVolume>> {
        VolumeDriver::get(&self.svc, name).await
    }

    async fn list(&self) -> crate::Result<Vec<DockerVolume>> {
        VolumeDriver::list(&self.svc).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(target: &str) -> BTreeMap<String, String> {
        [("backup-target".to_string(), target.to_string())].into()
    }

    #[test]
    fn docker_may_name_config_targets_and_allowed_dirs_only() {
        let mut targets = BTreeMap::new();
        targets.insert(
            "offsite".to_string(),
            TargetConfig { url: "s3://b/p".into(), endpoint: Some("http://127.0.0.1:1".into()), ..Default::default() },
        );
        let p = TargetPolicy::new(&targets, Some(&[PathBuf::from("/srv/backups")]), "offsite").expect("policy");
        for ok in ["offsite", "/srv/backups", "/srv/backups/db", "file:///srv/backups/x"] {
            assert_eq!(p.check(&opts(ok)), Ok(()), "{ok}");
        }
        assert_eq!(p.check(&BTreeMap::new()), Ok(()), "no backup-target: the default");
        for (bad, needle) in [
            ("/somewhere/else", "not under [backup] allowed-dirs"),
            ("/srv/backupsX", "not under"),
            ("s3://evil/p?endpoint=http://10.0.0.1:9000", "only from the config file"),
            ("s3://bucket/p", "only from the config file"),
            ("nosuch", "no target \"nosuch\""),
        ] {
            let e = p.check(&opts(bad)).expect_err(bad).to_string();
            assert!(e.contains(needle) && e.contains("offsite") && e.contains("/srv/backups"), "{bad}: {e}");
        }
        assert!(p.check(&opts("/srv/backups/../../etc")).is_err(), "no way out with ..");
    }

    #[test]
    fn allowed_dirs_default_to_the_default_targets_directory() {
        let p = TargetPolicy::new(&BTreeMap::new(), None, "/var/lib/voltool/backups").expect("policy");
        assert_eq!(p.check(&opts("/var/lib/voltool/backups/x")), Ok(()));
        assert!(p.check(&opts("/var/lib/voltool")).is_err());
        let s3_default = TargetPolicy::new(&BTreeMap::new(), None, "s3://b/p").expect("policy");
        assert!(s3_default.check(&opts("/anything")).is_err(), "no directory allowed");
        assert!(TargetPolicy::new(&BTreeMap::new(), Some(&[PathBuf::from("rel")]), "x").is_err());
        assert!(TargetPolicy::new(&BTreeMap::new(), Some(&[PathBuf::from("/a/../b")]), "x").is_err());
    }

    #[test]
    fn root_and_group_members_are_admitted() {
        let root_only = ApiAccess::default();
        assert!(root_only.allows(&Peer { uid: 0, gid: 0, pid: None }));
        let nobody = Peer { uid: 65534, gid: 65534, pid: None };
        assert!(!root_only.allows(&nobody));
        assert!(root_only.refusal(&nobody).starts_with("permission denied: uid 65534"));
        let g = ApiAccess { group: Some(("voltool".into(), 4242)) };
        assert!(g.allows(&Peer { uid: 1000, gid: 4242, pid: None }), "primary gid");
        assert!(!g.allows(&Peer { uid: 65534, gid: 65534, pid: None }));
        assert!(g.refusal(&nobody).ends_with("(root or group voltool)"));
        assert!(ApiAccess::new(Some("no-such-group-voltool-test")).is_err());
    }

    #[test]
    fn supplementary_groups_come_from_proc_status_of_the_same_uid() {
        let status = "Name:\tvoltool\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nGroups:\t4 24 4242 \n";
        assert_eq!(status_groups(status, 1000), Some(vec![4, 24, 4242]));
        assert_eq!(status_groups(status, 1001), None, "pid reused by another user");
        assert_eq!(status_groups("Uid:\t5\t5\t5\t5\nGroups:\n", 5), Some(vec![]));
        // This very process: its own groups, read the same way.
        let me = Peer {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            pid: Some(std::process::id() as i32),
        };
        let want: Vec<u32> = nix::unistd::getgroups().expect("getgroups").into_iter().map(|g| g.as_raw()).collect();
        assert_eq!(peer_groups(&me), want);
    }
}
