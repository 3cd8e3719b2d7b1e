//! The NFSv3 side: connecting (MOUNT + subdir + FSINFO), and a small pool of NFS
//! connections through which every call runs under a deadline, with one reconnect when a
//! connection broke.
//!
//! Each call takes a connection out of its pool slot and hands it back when the call
//! completed cleanly. A call cut off by the deadline (or failing on a broken transport) drops
//! its connection: a late reply can never be read as the answer to a later call, and the
//! next call on that slot reconnects.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nfs3_client::nfs3_types::nfs3::{
    FSINFO3args, GETATTR3args, LOOKUP3args, diropargs3, fattr3, filename3, ftype3, nfs_fh3,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::TokioIo;
use nfs3_client::{ConnectError, MountError, Nfs3Client, Nfs3ConnectionBuilder, RpcError};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Mutex, MutexGuard};

use crate::errno::CallError;
use crate::{NfsConfig, NfsFuseError};

/// One NFS connection.
pub(crate) type Conn = Nfs3Client<TokioIo<TcpStream>>;

/// Connections kept open at most (one per concurrently served FUSE request).
pub(crate) const POOL_SIZE: usize = 4;
/// Largest READ/WRITE size used, whatever the server allows.
const MAX_IO: u32 = 1024 * 1024;
/// READ/WRITE size when the server reports none.
const FALLBACK_IO: u32 = 64 * 1024;

/// TCP connector for nfs3_client, optionally from a privileged source port (servers that
/// insist on "secure" ports, the Linux kernel server's default). IPv4 and IPv6.
pub(crate) struct Tcp {
    pub(crate) privileged: bool,
}

async fn connect_tcp(addr: SocketAddr, privileged: bool) -> std::io::Result<TcpStream> {
    let stream = if privileged {
        // Walk the privileged range from a varying start; busy ports are skipped.
        let start = u16::try_from(std::process::id() % 359).unwrap_or(0);
        let mut last = std::io::Error::other("no free privileged port");
        let mut found = None;
        for i in 0..359u16 {
            let port = 665 + (start + i) % 359;
            match connect_from(addr, port).await {
                Ok(s) => {
                    found = Some(s);
                    break;
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable) => {
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        found.ok_or(last)?
    } else {
        TcpStream::connect(addr).await?
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect_from(addr: SocketAddr, local_port: u16) -> std::io::Result<TcpStream> {
    let (socket, any) = match addr {
        SocketAddr::V4(_) => (TcpSocket::new_v4()?, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        SocketAddr::V6(_) => (TcpSocket::new_v6()?, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
    };
    socket.bind(SocketAddr::new(any, local_port))?;
    socket.connect(addr).await
}

impl nfs3_client::net::Connector for Tcp {
    type Connection = TokioIo<TcpStream>;

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Self::Connection> {
        Ok(TokioIo::new(connect_tcp(addr, self.privileged).await?))
    }

    async fn connect_with_port(&self, addr: SocketAddr, local_port: u16) -> std::io::Result<Self::Connection> {
        Ok(TokioIo::new(connect_from(addr, local_port).await?))
    }
}

/// AUTH_UNIX as root: the daemon acts for every user of the volume (owners are set
/// explicitly on create); AUTH_NULL mounts, but servers refuse the NFS calls.
pub(crate) fn credential() -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix { machinename: Opaque::borrowed(b"voltool"), ..Default::default() })
}

/// Pause between two probes of a server that stopped answering.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Whether the server is considered down (a call timed out and no probe succeeded since).
#[derive(Debug, Default)]
struct Health {
    down: AtomicBool,
    probing: AtomicBool,
}

/// The pool of NFS connections to one server.
///
/// When a call times out the server is marked down: until a background probe (a NULL call
/// on a fresh connection every [`PROBE_INTERVAL`]) gets an answer, calls fail at once with
/// [`CallError::Down`] instead of each waiting for the timeout again — a listing of a
/// large directory on a hung server fails after one timeout, not one per entry.
pub(crate) struct Client {
    addr: SocketAddr,
    privileged: bool,
    timeout: Duration,
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    health: Arc<Health>,
}

impl Client {
    fn new(addr: SocketAddr, privileged: bool, timeout: Duration, first: Conn) -> Self {
        // The first connection sits in slot 0; the others connect on first use.
        let mut slots = vec![Mutex::new(Some(first))];
        slots.extend((1..POOL_SIZE).map(|_| Mutex::new(None)));
        Self { addr, privileged, timeout, slots, next: AtomicUsize::new(0), health: Arc::default() }
    }

    async fn slot(&self) -> MutexGuard<'_, Option<Conn>> {
        for s in &self.slots {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[i].lock().await
    }

    async fn connect(&self) -> Result<Conn, CallError> {
        let stream = connect_tcp(self.addr, self.privileged).await.map_err(CallError::Connect)?;
        Ok(Nfs3Client::new_with_auth(TokioIo::new(stream), credential(), opaque_auth::default()))
    }

    /// Starts the background probe unless one runs already. Needs the runtime context.
    fn start_probe(&self) {
        if self.health.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (health, addr, privileged, timeout) = (Arc::clone(&self.health), self.addr, self.privileged, self.timeout);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                let probe = async {
                    let stream = connect_tcp(addr, privileged).await.ok()?;
                    let mut c = Nfs3Client::new_with_auth(TokioIo::new(stream), credential(), opaque_auth::default());
                    c.null().await.ok()
                };
                if let Ok(Some(())) = tokio::time::timeout(timeout, probe).await {
                    tracing::info!(server = %addr, "nfs server answers again");
                    health.down.store(false, Ordering::Release);
                    health.probing.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }

    /// Runs one NFS call: `op` gets a connection and must hand it back with the RPC result.
    /// The whole call (waiting for a connection, reconnecting, the RPC itself) runs under
    /// the call timeout; a broken connection is replaced and the call retried once.
    pub(crate) async fn call<T, F, Fut>(&self, what: &'static str, mut op: F) -> Result<T, CallError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = (Conn, Result<T, RpcError>)>,
    {
        if self.health.down.load(Ordering::Acquire) {
            self.start_probe();
            return Err(CallError::Down);
        }
        let attempt = async {
            let mut slot = self.slot().await;
            let mut retried = false;
            loop {
                let conn = match slot.take() {
                    Some(c) => c,
                    None => self.connect().await?,
                };
                let (conn, res) = op(conn).await;
                match res {
                    Ok(v) => {
                        *slot = Some(conn);
                        return Ok(v);
                    }
                    Err(e) if e.is_connection_reusable() => {
                        *slot = Some(conn);
                        return Err(CallError::Rpc(e));
                    }
                    Err(e) if retried => return Err(CallError::Rpc(e)),
                    Err(e) => {
                        tracing::debug!(server = %self.addr, call = what, error = %e, "nfs connection broke; reconnecting");
                        drop(conn);
                        retried = true;
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => {
                if !self.health.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(server = %self.addr, call = what, timeout = ?self.timeout, "nfs server did not answer in time; failing calls until it answers again");
                }
                self.start_probe();
                Err(CallError::Timeout(self.timeout))
            }
        }
    }
}

/// Runs `$method` of the NFS client with `$args` (borrowed) through [`Client::call`];
/// evaluates to `Result<T, CallError>` where `T` is the call's `Ok` body (an NFS error status
/// becomes [`CallError::Status`]).
macro_rules! nfs {
    ($client:expr, $method:ident, $args:expr) => {{
        let args = &$args;
        let r = $client
            .call(stringify!($method), move |mut c| async move {
                let r = c.$method(args).await;
                (c, r)
            })
            .await;
        match r {
            Ok(nfs3_client::nfs3_types::nfs3::Nfs3Result::Ok(ok)) => Ok(ok),
            Ok(nfs3_client::nfs3_types::nfs3::Nfs3Result::Err((stat, _))) => {
                Err($crate::errno::CallError::Status(stat))
            }
            Err(e) => Err(e),
        }
    }};
}
pub(crate) use nfs;

/// READ/WRITE sizes agreed with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IoSizes {
    pub(crate) read: u32,
    pub(crate) write: u32,
}

impl IoSizes {
    /// Sizes from FSINFO's `rtmax`/`wtmax`: capped at 1 MiB, 64 KiB when the server gives 0.
    pub(crate) fn from_fsinfo(rtmax: u32, wtmax: u32) -> Self {
        let pick = |m: u32| if m == 0 { FALLBACK_IO } else { m.min(MAX_IO) };
        Self { read: pick(rtmax), write: pick(wtmax) }
    }
}

/// What [`connect`] found: the pool, the volume root and its attributes, the I/O sizes.
pub(crate) struct Connected {
    pub(crate) client: Client,
    pub(crate) root: nfs_fh3,
    pub(crate) root_attr: fattr3,
    pub(crate) io: IoSizes,
}

fn mount_reason(e: &ConnectError) -> String {
    match e {
        // Many servers (ganesha among them) answer ACCES for an export they do not have.
        ConnectError::Mount(MountError::Denied(stat)) => {
            format!("the server refused the mount ({stat:?}): the export does not exist or is not open to this host")
        }
        ConnectError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused: is an NFS server running there? ({io})")
        }
        other => other.to_string(),
    }
}

/// MOUNTs the export, resolves the subdir and reads FSINFO. The caller bounds it in time.
pub(crate) async fn connect(cfg: &NfsConfig) -> Result<Connected, NfsFuseError> {
    let server = cfg.server;
    let mut b = Nfs3ConnectionBuilder::new(Tcp { privileged: cfg.privileged_port }, server.to_string(), &cfg.export)
        .connect_from_privileged_port(false)
        .credential(credential());
    if let Some(p) = cfg.mount_port {
        b = b.mount_port(p);
    }
    if let Some(p) = cfg.nfs_port {
        b = b.nfs3_port(p);
    }
    let conn = b.mount().await.map_err(|e| NfsFuseError::Mount {
        server,
        export: cfg.export.clone(),
        reason: mount_reason(&e),
    })?;
    let addr = SocketAddr::new(server, conn.nfs3_port);
    let mut dir = conn.root_nfs_fh3();
    // The MOUNT connection is not needed any more: file handles stay valid without it.
    let client = Client::new(addr, cfg.privileged_port, cfg.call_timeout, conn.into_nfs3_client());
    // Errors name the whole subdir asked for; the reason says which part failed.
    let path_err = |reason: String| NfsFuseError::Path {
        server,
        export: cfg.export.clone(),
        path: if cfg.subdir.trim_matches('/').is_empty() {
            "/".into()
        } else {
            cfg.subdir.trim_matches('/').to_string()
        },
        reason,
    };
    let mut walked = String::new();
    for comp in cfg.subdir.split('/').filter(|c| !c.is_empty()) {
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(comp);
        let args = LOOKUP3args { what: diropargs3 { dir, name: filename3(Opaque::borrowed(comp.as_bytes())) } };
        dir = nfs!(client, lookup, args).map_err(|e| path_err(format!("looking up {walked}: {e}")))?.object;
    }
    let root_attr = nfs!(client, getattr, GETATTR3args { object: dir.clone() })
        .map_err(|e| path_err(format!("getattr: {e}")))?
        .obj_attributes;
    if root_attr.type_ != ftype3::NF3DIR {
        return Err(path_err("not a directory".into()));
    }
    let io = match nfs!(client, fsinfo, FSINFO3args { fsroot: dir.clone() }) {
        Ok(fi) => IoSizes::from_fsinfo(fi.rtmax, fi.wtmax),
        Err(e) => {
            tracing::debug!(%server, error = %e, "FSINFO failed; using default I/O sizes");
            IoSizes::from_fsinfo(0, 0)
        }
    };
    Ok(Connected { client, root: dir, root_attr, io })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_sizes_follow_fsinfo_with_cap_and_fallback() {
        assert_eq!(IoSizes::from_fsinfo(0, 0), IoSizes { read: 64 * 1024, write: 64 * 1024 });
        assert_eq!(IoSizes::from_fsinfo(32768, 65536), IoSizes { read: 32768, write: 65536 });
        assert_eq!(IoSizes::from_fsinfo(4 << 20, 8 << 20), IoSizes { read: 1 << 20, write: 1 << 20 });
    }

    /// Answers every RPC on `l` with an accepted, successful, empty reply (a NULL answer).
    async fn answer_nulls(l: tokio::net::TcpListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut hdr = [0u8; 4];
                    if s.read_exact(&mut hdr).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; (u32::from_be_bytes(hdr) & 0x7fff_ffff) as usize];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    // xid, REPLY, MSG_ACCEPTED, verifier AUTH_NONE (flavor, length), SUCCESS.
                    let mut reply = (0x8000_0000u32 | 24).to_be_bytes().to_vec();
                    reply.extend_from_slice(&body[..4]);
                    for word in [1u32, 0, 0, 0, 0] {
                        reply.extend_from_slice(&word.to_be_bytes());
                    }
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    async fn null_call(c: &Client) -> Result<(), CallError> {
        c.call("null", |mut conn| async move {
            let r = conn.null().await;
            (conn, r)
        })
        .await
    }

    #[test]
    fn a_silent_server_times_out_then_fails_fast_until_it_answers_again() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            // A listener nobody accepts on: the kernel completes connections, nothing answers.
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let first = Nfs3Client::new_with_auth(
                TokioIo::new(TcpStream::connect(addr).await.expect("connect")),
                credential(),
                opaque_auth::default(),
            );
            let c = Client::new(addr, false, Duration::from_millis(300), first);
            let t0 = std::time::Instant::now();
            let r = nfs!(c, getattr, GETATTR3args { object: nfs_fh3::default() });
            assert!(matches!(r, Err(CallError::Timeout(_))), "{r:?}");
            assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
            // The timed-out connection was dropped: the next call on slot 0 reconnects.
            assert!(c.slots[0].lock().await.is_none());
            // Down: further calls fail at once instead of waiting for the timeout again.
            let t1 = std::time::Instant::now();
            assert!(matches!(null_call(&c).await, Err(CallError::Down)));
            assert!(t1.elapsed() < Duration::from_millis(100), "{:?}", t1.elapsed());
            // The server comes back: the probe notices and calls go through again.
            tokio::spawn(answer_nulls(l));
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match null_call(&c).await {
                    Ok(()) => break,
                    Err(e) => assert!(std::time::Instant::now() < deadline, "still failing: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
}
