//! NFS volumes: the create-time server check (userspace NFSv3 client, no kernel needed) and
//! the mount (the kernel client's request, or the userspace client over FUSE where the kernel
//! has none).
//!
//! The check resolves the server name, MOUNTs the export, creates the per-volume subdir
//! (giving it the volume's owner and mode), and writes and removes a probe file — all under
//! one deadline, so a wrong server fails `docker volume create` with the reason instead of
//! failing later at container start.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use nfs3_client::nfs3_types::nfs3::{
    CREATE3args, LOOKUP3args, MKDIR3args, Nfs3Option, Nfs3Result, REMOVE3args, SETATTR3args, WRITE3args, createhow3,
    diropargs3, filename3, nfs_fh3, nfsstat3, sattr3, stable_how,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::TokioConnector;
use nfs3_client::{ConnectError, MountError, Nfs3ConnectionBuilder};
use voltool_runtime::mount::{self, MountRequest};

use super::remote::{ResolveError, no_kernel_client, resolve, resolve_blocking};
use super::{Host, mount_err};
use crate::error::Error;
use crate::options::{NfsTarget, Owner, VolumeSpec};

/// How long the whole create-time check may take.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(12);

/// Why an NFS server check failed; the message names the server and says what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NfsCheckError(pub String);

impl From<ResolveError> for NfsCheckError {
    fn from(e: ResolveError) -> Self {
        NfsCheckError(e.to_string())
    }
}

fn connect_msg(t: &NfsTarget, ip: IpAddr, e: &ConnectError) -> String {
    let server = if ip.to_string() == t.addr { t.addr.clone() } else { format!("{} ({ip})", t.addr) };
    match e {
        ConnectError::Mount(MountError::Denied(stat)) => {
            let code = *stat as u32;
            match code {
                2 => format!(
                    "export {} not found on nfs server {server}: check `showmount -e {}` on the server",
                    t.export, t.addr
                ),
                // Many servers (ganesha among them) answer ACCES for an export they do not have.
                1 | 13 => format!(
                    "nfs server {server} refused to mount {}: the export does not exist or is not open to this host; check `showmount -e {}` and the export's client list",
                    t.export, t.addr
                ),
                _ => format!("nfs server {server} refused to mount {}: {stat}", t.export),
            }
        }
        ConnectError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!(
                "nfs server {server} refused the connection: is an NFS server running there (ports: nfs {}, mount {})?",
                port_desc(t.port),
                port_desc(t.mount_port)
            )
        }
        other => format!("nfs server {server}: {other}"),
    }
}

fn port_desc(p: Option<u16>) -> String {
    p.map_or_else(|| "from portmapper".to_string(), |p| p.to_string())
}

fn stat_msg(t: &NfsTarget, what: &str, stat: nfsstat3) -> NfsCheckError {
    NfsCheckError(format!("nfs server {}: {what} in export {}: {stat:?}", t.addr, t.export))
}

/// Checks the server and prepares the volume's subdir. Runs under [`CHECK_DEADLINE`].
///
/// # Errors
/// [`NfsCheckError`] with a message naming the server and the problem.
pub async fn check_and_prepare(t: &NfsTarget, owner: &Owner) -> Result<(), NfsCheckError> {
    match tokio::time::timeout(CHECK_DEADLINE, check_inner(t, owner)).await {
        Ok(r) => r,
        Err(_) => Err(NfsCheckError(format!(
            "nfs server {} did not answer within {CHECK_DEADLINE:?} (export {}): is it reachable from this host?",
            t.addr, t.export
        ))),
    }
}

async fn check_inner(t: &NfsTarget, owner: &Owner) -> Result<(), NfsCheckError> {
    let ip = resolve("nfs", &t.addr, Duration::from_secs(5)).await?;
    if !t.is_v3() {
        // No v4 client here: check that something listens on the NFS port.
        let port = t.port.unwrap_or(2049);
        return match tokio::net::TcpStream::connect((ip, port)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(NfsCheckError(format!("nfs server {} ({ip}:{port}): {e}", t.addr))),
        };
    }
    // AUTH_UNIX as root: AUTH_NULL mounts but servers refuse the first NFS call.
    let cred = opaque_auth::auth_unix(&auth_unix { machinename: Opaque::borrowed(b"voltool"), ..Default::default() });
    let mut b = Nfs3ConnectionBuilder::new(TokioConnector, ip.to_string(), &t.export)
        .connect_from_privileged_port(false)
        .credential(cred);
    if let Some(p) = t.mount_port {
        b = b.mount_port(p);
    }
    if let Some(p) = t.port {
        b = b.nfs3_port(p);
    }
    let mut conn = b.mount().await.map_err(|e| NfsCheckError(connect_msg(t, ip, &e)))?;
    let dir = make_subdir(&mut conn, t, owner).await?;
    set_owner(&mut conn, t, &dir, owner).await?;
    probe_write(&mut conn, t, dir).await?;
    let _ = conn.unmount().await;
    Ok(())
}

fn rpc_err(t: &NfsTarget) -> impl Fn(nfs3_client::RpcError) -> NfsCheckError + '_ {
    move |e| NfsCheckError(format!("nfs server {}: {e}", t.addr))
}

/// Looks up (and creates where missing, with the volume's mode) each component of the
/// volume's subdir; returns the subdir's handle.
async fn make_subdir<IO>(
    conn: &mut nfs3_client::Nfs3Connection<IO>,
    t: &NfsTarget,
    owner: &Owner,
) -> Result<nfs_fh3, NfsCheckError>
where
    IO: nfs3_client::io::AsyncRead + nfs3_client::io::AsyncWrite + Send,
{
    let rpc = rpc_err(t);
    let mut dir = conn.root_nfs_fh3();
    for comp in t.subdir.as_deref().unwrap_or("").split('/').filter(|c| !c.is_empty()) {
        let name = || filename3(Opaque::owned(comp.as_bytes().to_vec()));
        let found =
            conn.lookup(&LOOKUP3args { what: diropargs3 { dir: dir.clone(), name: name() } }).await.map_err(&rpc)?;
        dir = match found {
            Nfs3Result::Ok(ok) => ok.object,
            Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) => {
                let attrs = sattr3 { mode: Nfs3Option::Some(owner.mode.unwrap_or(0o755)), ..Default::default() };
                let made = conn
                    .mkdir(&MKDIR3args { where_: diropargs3 { dir: dir.clone(), name: name() }, attributes: attrs })
                    .await
                    .map_err(&rpc)?;
                match made {
                    Nfs3Result::Ok(ok) => match ok.obj {
                        Nfs3Option::Some(fh) => fh,
                        Nfs3Option::None => lookup(conn, t, &dir, comp).await?,
                    },
                    Nfs3Result::Err((stat, _)) => {
                        return Err(stat_msg(t, &format!("cannot create directory {comp}"), stat));
                    }
                }
            }
            Nfs3Result::Err((stat, _)) => return Err(stat_msg(t, &format!("cannot look up {comp}"), stat)),
        };
    }
    Ok(dir)
}

/// Gives the volume's directory the owner and mode asked for, if any.
async fn set_owner<IO>(
    conn: &mut nfs3_client::Nfs3Connection<IO>,
    t: &NfsTarget,
    dir: &nfs_fh3,
    owner: &Owner,
) -> Result<(), NfsCheckError>
where
    IO: nfs3_client::io::AsyncRead + nfs3_client::io::AsyncWrite + Send,
{
    if owner.uid.is_none() && owner.gid.is_none() && owner.mode.is_none() {
        return Ok(());
    }
    let attrs = sattr3 {
        mode: owner.mode.map_or(Nfs3Option::None, Nfs3Option::Some),
        uid: owner.uid.map_or(Nfs3Option::None, Nfs3Option::Some),
        gid: owner.gid.map_or(Nfs3Option::None, Nfs3Option::Some),
        ..Default::default()
    };
    let r = conn
        .setattr(&SETATTR3args { object: dir.clone(), new_attributes: attrs, guard: Nfs3Option::None })
        .await
        .map_err(rpc_err(t))?;
    match r {
        Nfs3Result::Err((stat, _)) => Err(stat_msg(t, "cannot set owner/mode of the volume directory", stat)),
        Nfs3Result::Ok(_) => Ok(()),
    }
}

/// Proves the export is writable: creates, writes and removes a probe file in `dir`.
async fn probe_write<IO>(
    conn: &mut nfs3_client::Nfs3Connection<IO>,
    t: &NfsTarget,
    dir: nfs_fh3,
) -> Result<(), NfsCheckError>
where
    IO: nfs3_client::io::AsyncRead + nfs3_client::io::AsyncWrite + Send,
{
    let rpc = rpc_err(t);
    let probe = format!(".voltool-probe-{}", std::process::id());
    let pname = || filename3(Opaque::owned(probe.as_bytes().to_vec()));
    let created = conn
        .create(&CREATE3args {
            where_: diropargs3 { dir: dir.clone(), name: pname() },
            how: createhow3::UNCHECKED(sattr3 { mode: Nfs3Option::Some(0o600), ..Default::default() }),
        })
        .await
        .map_err(&rpc)?;
    let fh = match created {
        Nfs3Result::Ok(ok) => match ok.obj {
            Nfs3Option::Some(fh) => fh,
            Nfs3Option::None => lookup(conn, t, &dir, &probe).await?,
        },
        Nfs3Result::Err((stat, _)) => {
            return Err(NfsCheckError(format!(
                "export {} on nfs server {} is not writable ({stat:?}): check the export is rw and root is not squashed, or set uid/gid",
                t.export, t.addr
            )));
        }
    };
    let w = conn
        .write(&WRITE3args {
            file: fh,
            offset: 0,
            count: 8,
            stable: stable_how::FILE_SYNC,
            data: Opaque::borrowed(b"voltool\n"),
        })
        .await
        .map_err(&rpc)?;
    let _ = conn.remove(&REMOVE3args { object: diropargs3 { dir, name: pname() } }).await;
    match w {
        Nfs3Result::Err((stat, _)) => Err(stat_msg(t, "cannot write", stat)),
        Nfs3Result::Ok(_) => Ok(()),
    }
}

async fn lookup<IO>(
    conn: &mut nfs3_client::Nfs3Connection<IO>,
    t: &NfsTarget,
    dir: &nfs_fh3,
    name: &str,
) -> Result<nfs_fh3, NfsCheckError>
where
    IO: nfs3_client::io::AsyncRead + nfs3_client::io::AsyncWrite + Send,
{
    let r = conn
        .lookup(&LOOKUP3args {
            what: diropargs3 { dir: dir.clone(), name: filename3(Opaque::owned(name.as_bytes().to_vec())) },
        })
        .await
        .map_err(rpc_err(t))?;
    match r {
        Nfs3Result::Ok(ok) => Ok(ok.object),
        Nfs3Result::Err((stat, _)) => Err(stat_msg(t, &format!("cannot look up {name}"), stat)),
    }
}

/// Mounts an NFS volume: with the kernel client where there is one, else through the
/// userspace client over FUSE.
pub(super) fn mount(host: &Host, name: &str, spec: &VolumeSpec, target: &Path) -> crate::Result<()> {
    let t = spec.nfs.as_ref().ok_or_else(|| Error::Internal(format!("volume {name}: nfs volume without a target")))?;
    let ip = resolve_blocking(name, &t.addr)?;
    if !host.nfs_userspace {
        let req = kernel_request(t, ip, target);
        return host.mounter.mount(&req).map_err(|e| no_kernel_client(name, "NFS", e));
    }
    let mut cfg = voltool_nfsfuse::NfsConfig::new(ip, t.export.clone());
    cfg.subdir = t.subdir.clone().unwrap_or_default();
    cfg.nfs_port = t.port;
    cfg.mount_port = t.mount_port;
    let fd = voltool_runtime::fuse::mount_fuse(host.mounter.as_ref(), target, &cfg.source(), true)
        .map_err(mount_err(name))?;
    match voltool_nfsfuse::serve(cfg, fd) {
        Ok(m) => {
            host.fuse.insert(target, m);
            Ok(())
        }
        Err(e) => {
            // Without its server the FUSE mount is dead: take it away again.
            let _ = mount::unmount(host.mounter.as_ref(), target);
            Err(Error::Remote { volume: name.into(), reason: e.to_string() })
        }
    }
}

/// The kernel mount request for an NFS volume. mount(2) takes text options; the kernel
/// does not resolve names, so `addr=` (and `mountaddr=` for v3) carry the IP. Mounted
/// `nosuid,nodev` unless the volume asked for `o=suid` / `o=dev` (see
/// [`super::cifs::privilege_flags`]).
pub fn kernel_request(t: &NfsTarget, ip: IpAddr, target: &Path) -> MountRequest {
    let v3 = t.is_v3();
    let mut data = vec![format!("addr={ip}")];
    data.push(format!("vers={}", t.vers.as_deref().unwrap_or("3")));
    if let Some(p) = t.port {
        data.push(format!("port={p}"));
    }
    if v3 {
        data.push(format!("mountaddr={ip}"));
        if let Some(p) = t.mount_port {
            data.push(format!("mountport={p}"));
        }
        // No rpc.statd in a plugin: NLM locking would hang. Users who run one ask with o=lock.
        if !t.extra.iter().any(|o| o == "lock") {
            data.push("nolock".into());
        }
    }
    data.extend(t.extra.iter().filter(|o| *o != "lock").cloned());
    let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
    MountRequest::filesystem(
        if v3 { "nfs" } else { "nfs4" },
        &format!("{host}:{}", t.remote_path()),
        target,
        super::cifs::privilege_flags(t.suid, t.dev),
        data.join(","),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use voltool_runtime::mount::MountFlags;

    #[test]
    fn kernel_options() {
        let t = NfsTarget {
            addr: "srv".into(),
            export: "/export".into(),
            subdir: Some("v1".into()),
            port: Some(18049),
            mount_port: Some(18048),
            extra: vec!["rw".into(), "hard".into()],
            ..Default::default()
        };
        let r = kernel_request(&t, "127.0.0.1".parse().expect("ip"), std::path::Path::new("/m/v1"));
        assert_eq!(r.fstype.as_deref(), Some("nfs"));
        assert_eq!(r.source, "127.0.0.1:/export/v1");
        assert_eq!(
            r.data.as_deref(),
            Some("addr=127.0.0.1,vers=3,port=18049,mountaddr=127.0.0.1,mountport=18048,nolock,rw,hard")
        );
        let t4 = NfsTarget { vers: Some("4.1".into()), extra: vec![], ..t };
        let r = kernel_request(&t4, "::1".parse().expect("ip"), std::path::Path::new("/m"));
        assert_eq!((r.fstype.as_deref(), r.source.as_str()), (Some("nfs4"), "[::1]:/export/v1"));
        assert_eq!(r.data.as_deref(), Some("addr=::1,vers=4.1,port=18049"));
        assert_eq!(r.flags, MountFlags::MS_NOSUID | MountFlags::MS_NODEV, "nosuid,nodev by default");
        let lifted = NfsTarget { suid: true, ..t4 };
        let r = kernel_request(&lifted, "::1".parse().expect("ip"), std::path::Path::new("/m"));
        assert_eq!(r.flags, MountFlags::MS_NODEV, "o=suid lifts only nosuid");
    }

    #[tokio::test]
    async fn unresolvable_and_unreachable_servers_fail_fast_with_reason() {
        let t = NfsTarget { addr: "no-such-host.invalid".into(), export: "/x".into(), ..Default::default() };
        let t0 = std::time::Instant::now();
        let e = check_and_prepare(&t, &Owner::default()).await.expect_err("bad host").to_string();
        assert!(e.contains("no-such-host.invalid") && (e.contains("lookup") || e.contains("address")), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(15));
        // A closed port on loopback: refused at once.
        let t = NfsTarget {
            addr: "127.0.0.1".into(),
            export: "/x".into(),
            port: Some(1),
            mount_port: Some(1),
            ..Default::default()
        };
        let e = check_and_prepare(&t, &Owner::default()).await.expect_err("refused").to_string();
        assert!(e.contains("nfs server 127.0.0.1 refused the connection"), "{e}");
    }
}
