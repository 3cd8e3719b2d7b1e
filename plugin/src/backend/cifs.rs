//! CIFS/SMB volumes: the create-time share check (pure-Rust SMB client, no kernel needed)
//! and the mount with the kernel client.
//!
//! The `smb` crate's directory listing has been seen to hang on a multi-threaded tokio
//! runtime, so every SMB call here runs on a dedicated thread with its own current-thread
//! runtime, under one deadline; the caller waits on a channel with the same deadline and
//! never blocks the daemon's workers.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use smb::{Client, ClientConfig, ConnectionConfig, CreateOptions, FileAttributes, FileCreateArgs, UncPath};
use voltool_runtime::mount::{MountFlags, MountRequest};

use super::Host;
use super::remote::{no_kernel_client, resolve_blocking};
use crate::error::Error;
use crate::options::olist::escape;
use crate::options::{CifsTarget, Owner, VolumeSpec};

/// How long the whole create-time check may take.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(12);

const STATUS_LOGON_FAILURE: u32 = 0xC000_006D;
const STATUS_ACCOUNT_DISABLED: u32 = 0xC000_0072;
const STATUS_BAD_NETWORK_NAME: u32 = 0xC000_00CC;
const STATUS_ACCESS_DENIED: u32 = 0xC000_0022;
const STATUS_OBJECT_NAME_COLLISION: u32 = 0xC000_0035;

/// Why a share check failed. The message names the server and share, never the password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CifsCheckError(pub String);

fn status_of(e: &smb::Error) -> Option<u32> {
    match e {
        smb::Error::ReceivedErrorMessage(code, _) | smb::Error::UnexpectedMessageStatus(code) => Some(*code),
        _ => None,
    }
}

/// Checks the share with the given credentials and prepares the volume's directory.
///
/// # Errors
/// [`CifsCheckError`] naming the server and share and what is wrong (unreachable, wrong
/// password, no such share, not writable, too slow).
pub async fn check_and_prepare(t: &CifsTarget, ip: IpAddr, password: Option<String>) -> Result<(), CifsCheckError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let target = t.clone();
    let spawned = std::thread::Builder::new().name("voltool-smb-check".into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let r = match rt {
            Ok(rt) => rt.block_on(async {
                tokio::time::timeout(CHECK_DEADLINE, check_inner(&target, ip, password)).await.unwrap_or_else(|_| {
                    Err(CifsCheckError(format!("smb server {} did not answer within {CHECK_DEADLINE:?}", target.host)))
                })
            }),
            Err(e) => Err(CifsCheckError(format!("cannot start the smb check: {e}"))),
        };
        let _ = tx.send(r);
    });
    if let Err(e) = spawned {
        return Err(CifsCheckError(format!("cannot start the smb check: {e}")));
    }
    match tokio::time::timeout(CHECK_DEADLINE + Duration::from_secs(1), rx).await {
        Ok(Ok(r)) => r,
        _ => Err(CifsCheckError(format!("smb server {} did not answer within {CHECK_DEADLINE:?}", t.host))),
    }
}

async fn check_inner(t: &CifsTarget, ip: IpAddr, password: Option<String>) -> Result<(), CifsCheckError> {
    let server = if ip.to_string() == t.host { t.host.clone() } else { format!("{} ({ip})", t.host) };
    let port = t.port.unwrap_or(445);
    let client = Client::new(ClientConfig {
        connection: ConnectionConfig { port: Some(port), timeout: Some(Duration::from_secs(8)), ..Default::default() },
        ..Default::default()
    });
    let unc = UncPath::new(&ip.to_string())
        .and_then(|u| u.with_share(&t.share))
        .map_err(|e| CifsCheckError(format!("smb share //{}/{}: {e}", t.host, t.share)))?;
    let user = match (&t.domain, &t.username) {
        (Some(d), Some(u)) => format!("{d}\\{u}"),
        (None, Some(u)) => u.clone(),
        (_, None) => "guest".to_string(),
    };
    if let Err(e) = client.share_connect(&unc, &user, password.unwrap_or_default()).await {
        let msg = match status_of(&e) {
            Some(STATUS_LOGON_FAILURE | STATUS_ACCOUNT_DISABLED) => format!(
                "smb server {server} rejected the login of {user}: wrong username or password (check the secret with `voltool secret add`)"
            ),
            Some(STATUS_BAD_NETWORK_NAME) => format!("share {} not found on smb server {server}", t.share),
            Some(STATUS_ACCESS_DENIED) => format!("smb server {server} denied {user} access to share {}", t.share),
            _ => match &e {
                smb::Error::IoError(io) => format!("cannot reach smb server {server} port {port}: {io}"),
                other => format!("smb share //{}/{} on {server}: {other}", t.host, t.share),
            },
        };
        let _ = client.close().await;
        return Err(CifsCheckError(msg));
    }
    let r = prepare(&client, &unc, t, &server).await;
    let _ = client.close().await;
    r
}

async fn prepare(client: &Client, unc: &UncPath, t: &CifsTarget, server: &str) -> Result<(), CifsCheckError> {
    let path = t.share_path();
    let mut sofar = String::new();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if !sofar.is_empty() {
            sofar.push('\\');
        }
        sofar.push_str(comp);
        let args = FileCreateArgs::make_create_new(
            FileAttributes::new().with_directory(true),
            CreateOptions::new().with_directory_file(true),
        );
        match client.create_file(&unc.clone().with_path(&sofar), &args).await {
            Ok(r) => close(&r).await,
            Err(e) if status_of(&e) == Some(STATUS_OBJECT_NAME_COLLISION) => {}
            Err(e) => {
                return Err(CifsCheckError(format!(
                    "cannot create directory {sofar} in share {} on smb server {server}: {e}",
                    t.share
                )));
            }
        }
    }
    let probe = if sofar.is_empty() { ".voltool-probe".to_string() } else { format!("{sofar}\\.voltool-probe") };
    let probe_path = unc.clone().with_path(&probe);
    let args = FileCreateArgs::make_overwrite(FileAttributes::new(), CreateOptions::new());
    let not_writable = |e: &dyn std::fmt::Display| {
        CifsCheckError(format!("share {} on smb server {server} is not writable: {e}", t.share))
    };
    let file = client.create_file(&probe_path, &args).await.map_err(|e| not_writable(&e))?;
    let written = match file.as_file() {
        Some(f) => f.write_block(b"voltool\n", 0, None).await.map(drop).map_err(|e| not_writable(&e)),
        None => Err(not_writable(&"the probe is not a file")),
    };
    close(&file).await;
    // Remove the probe: open it for DELETE with delete-on-close, then close.
    let del = FileCreateArgs {
        disposition: smb::CreateDisposition::Open,
        attributes: FileAttributes::new(),
        options: CreateOptions::new().with_delete_on_close(true),
        desired_access: smb::FileAccessMask::new().with_delete(true),
    };
    if let Ok(r) = client.create_file(&probe_path, &del).await {
        close(&r).await;
    }
    written
}

async fn close(r: &smb::Resource) {
    let _ = match r {
        smb::Resource::File(f) => f.close().await,
        smb::Resource::Directory(d) => d.close().await,
        smb::Resource::Pipe(_) => Ok(()),
    };
}

/// Mounts a CIFS volume with the kernel client; the password goes only into mount(2)'s data.
pub(super) fn mount(
    host: &Host,
    name: &str,
    spec: &VolumeSpec,
    password: Option<&str>,
    target: &Path,
) -> crate::Result<()> {
    let t =
        spec.cifs.as_ref().ok_or_else(|| Error::Internal(format!("volume {name}: cifs volume without a target")))?;
    let ip = resolve_blocking(name, &t.host)?;
    let req = kernel_request(t, ip, &spec.owner, password, target);
    host.mounter.mount(&req).map_err(|e| no_kernel_client(name, "CIFS", e))
}

/// The kernel mount request for a CIFS volume. The password travels only in mount(2)'s
/// data buffer (a comma in it doubled, which the kernel's cifs parser reads as one literal
/// comma): never in argv, and the kernel does not show it in /proc/mounts. Mounted
/// `nosuid,nodev` (MS_NOSUID | MS_NODEV, mount(2)) unless the volume asked for `o=suid` /
/// `o=dev`: the server's files are not trusted to carry setuid bits or device nodes.
pub fn kernel_request(
    t: &CifsTarget,
    ip: IpAddr,
    owner: &Owner,
    password: Option<&str>,
    target: &Path,
) -> MountRequest {
    let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
    let path = t.share_path();
    let source = if path.is_empty() { format!("//{host}/{}", t.share) } else { format!("//{host}/{}/{path}", t.share) };
    let mut data = vec![format!("ip={ip}")];
    if let Some(p) = t.port {
        data.push(format!("port={p}"));
    }
    if let Some(u) = &t.username {
        data.push(format!("username={}", escape(u)));
    }
    if let Some(d) = &t.domain {
        data.push(format!("domain={}", escape(d)));
    }
    if let Some(v) = &t.vers {
        data.push(format!("vers={v}"));
    }
    if let Some(uid) = owner.uid {
        data.push(format!("uid={uid}"));
    }
    if let Some(gid) = owner.gid {
        data.push(format!("gid={gid}"));
    }
    if let Some(mode) = owner.mode {
        data.push(format!("dir_mode=0{mode:o},file_mode=0{:o}", mode & 0o666));
    }
    data.extend(t.extra.iter().cloned());
    match password {
        Some(p) => data.push(format!("password={}", escape(p))),
        None if t.username.is_none() => data.push("guest".into()),
        None => {}
    }
    MountRequest::filesystem("cifs", &source, target, privilege_flags(t.suid, t.dev), data.join(","))
}

/// `MS_NOSUID | MS_NODEV` unless lifted by `o=suid` / `o=dev` (NFS and CIFS alike).
pub fn privilege_flags(suid: bool, dev: bool) -> MountFlags {
    let mut f = MountFlags::empty();
    if !suid {
        f |= MountFlags::MS_NOSUID;
    }
    if !dev {
        f |= MountFlags::MS_NODEV;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn kernel_options_escape_and_carry_owner() {
        let t = CifsTarget {
            host: "srv".into(),
            share: "data".into(),
            base: "teams".into(),
            subdir: Some("vol".into()),
            username: Some("bob".into()),
            vers: Some("3.0".into()),
            port: Some(18445),
            ..Default::default()
        };
        let owner = Owner { uid: Some(1000), gid: Some(1000), mode: Some(0o750) };
        let r = kernel_request(&t, "10.0.2.100".parse().expect("ip"), &owner, Some("p,w"), std::path::Path::new("/m"));
        assert_eq!(r.source, "//10.0.2.100/data/teams/vol");
        assert_eq!(r.fstype.as_deref(), Some("cifs"));
        assert_eq!(
            r.data.as_deref(),
            Some(
                "ip=10.0.2.100,port=18445,username=bob,vers=3.0,uid=1000,gid=1000,dir_mode=0750,file_mode=0640,password=p,,w"
            )
        );
        let guest = CifsTarget { username: None, ..t };
        let r = kernel_request(
            &guest,
            "10.0.2.100".parse().expect("ip"),
            &Owner::default(),
            None,
            std::path::Path::new("/m"),
        );
        assert!(r.data.as_deref().is_some_and(|d| d.ends_with(",guest")));
        assert_eq!(r.flags, MountFlags::MS_NOSUID | MountFlags::MS_NODEV);
        let lifted = CifsTarget { suid: true, dev: true, ..guest };
        let r = kernel_request(&lifted, "10.0.2.100".parse().expect("ip"), &Owner::default(), None, Path::new("/m"));
        assert_eq!(r.flags, MountFlags::empty());
    }

    /// Docker's `o=password=a,,b` means the password `a,b`: that is the secret's value, and
    /// the kernel gets it escaped again in mount(2)'s data, through the recording mounter.
    #[test]
    fn docker_double_comma_password_is_the_secret_and_the_mount_data() {
        use std::sync::Arc;
        let opts = [("type", "cifs"), ("device", "//127.0.0.1/data"), ("o", "username=u,password=a,,b,port=18445")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let p = crate::options::parse_full(&opts).expect("parse");
        assert_eq!(p.inline_password.as_deref(), Some("a,b"));
        assert_eq!(p.stored["o"], "username=u,port=18445");
        let d = tempfile::tempdir().expect("tmp");
        let store = crate::secrets::SecretStore::open(&d.path().join("secrets")).expect("store");
        store.add_inline("v-password", b"a,b", "127.0.0.1", false).expect("stored");
        let value = store.read_for("v-password", "127.0.0.1").expect("bound to the share's host");
        assert_eq!(value, b"a,b");
        let m = Arc::new(voltool_runtime::RecordingMounter::new());
        let host = crate::backend::Host {
            mounter: m.clone(),
            loops: Arc::new(voltool_runtime::loopdev::RecordingLoopDevices::new()),
            tools: Arc::new(crate::backend::tools::RecordingFsTools::new()),
            projects: Arc::new(voltool_runtime::quota::RecordingProjectQuota::new()),
            snapshots: Arc::new(voltool_runtime::snapshot::RecordingSnapshots::new()),
            subvolumes: false,
            reflinks: false,
            quota: crate::options::QuotaSupport::default(),
            nfs_userspace: false,
            fuse: Arc::default(),
        };
        let layout = crate::backend::Layout { state_dir: d.path().join("s"), mount_root: d.path().join("m") };
        let mut spec = p.spec;
        let t = spec.cifs.as_mut().expect("cifs");
        (t.subdir, t.secret) = (Some("v".into()), Some("v-password".into()));
        let pw = String::from_utf8(value).expect("utf-8");
        crate::backend::AnyBackend::for_spec(&spec).mount(&host, &layout, "v", &spec, Some(&pw)).expect("mount");
        let r = m.mounts().pop().expect("one mount");
        assert_eq!((r.source.as_str(), r.fstype.as_deref()), ("//127.0.0.1/data/v", Some("cifs")));
        assert_eq!(r.data.as_deref(), Some("ip=127.0.0.1,port=18445,username=u,password=a,,b"));
        assert_eq!(r.flags, MountFlags::MS_NOSUID | MountFlags::MS_NODEV);
    }
}
