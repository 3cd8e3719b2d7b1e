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
//! What volume options given through Docker may name is [`crate::policy`]'s.
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::net::UnixListener;

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
    crate::ApiError::new(StatusCode::FORBIDDEN, access.refusal(&peer)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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
