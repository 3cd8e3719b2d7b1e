//! NFSv3 status codes and RPC failures → the errno a FUSE reply carries.

use fuser::Errno;
use nfs3_client::RpcError;
use nfs3_client::nfs3_types::nfs3::nfsstat3;

/// Why one NFS call failed on the client side (as opposed to an NFS status from the server).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// No answer within the call timeout (a hung or unreachable server).
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The server did not answer a recent call and has not answered a probe since.
    #[error("the server is not answering (a call timed out; probing)")]
    Down,
    /// The TCP connection to the NFS port could not be made.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The RPC layer failed (broken connection, garbage reply, auth error).
    #[error("rpc: {0}")]
    Rpc(#[source] RpcError),
    /// The server answered with an NFS error status.
    #[error("{0}")]
    Status(nfsstat3),
}

impl CallError {
    /// The errno reported to the FUSE caller.
    pub(crate) fn errno(&self) -> Errno {
        match self {
            CallError::Timeout(_) | CallError::Down | CallError::Connect(_) => Errno::EIO,
            CallError::Rpc(RpcError::Auth(_)) => Errno::EACCES,
            CallError::Rpc(_) => Errno::EIO,
            CallError::Status(s) => from_nfsstat(*s),
        }
    }
}

impl From<CallError> for Errno {
    fn from(e: CallError) -> Self {
        e.errno()
    }
}

/// Maps an NFSv3 status (RFC 1813 §2.6) to the errno a local filesystem would return.
/// Everything without a close local equivalent is `EIO`.
pub(crate) fn from_nfsstat(s: nfsstat3) -> Errno {
    match s {
        nfsstat3::NFS3ERR_PERM => Errno::EPERM,
        nfsstat3::NFS3ERR_NOENT => Errno::ENOENT,
        nfsstat3::NFS3ERR_NXIO => Errno::ENXIO,
        nfsstat3::NFS3ERR_ACCES => Errno::EACCES,
        nfsstat3::NFS3ERR_EXIST => Errno::EEXIST,
        nfsstat3::NFS3ERR_XDEV => Errno::EXDEV,
        nfsstat3::NFS3ERR_NODEV => Errno::ENODEV,
        nfsstat3::NFS3ERR_NOTDIR => Errno::ENOTDIR,
        nfsstat3::NFS3ERR_ISDIR => Errno::EISDIR,
        nfsstat3::NFS3ERR_INVAL => Errno::EINVAL,
        nfsstat3::NFS3ERR_FBIG => Errno::EFBIG,
        nfsstat3::NFS3ERR_NOSPC => Errno::ENOSPC,
        nfsstat3::NFS3ERR_ROFS => Errno::EROFS,
        nfsstat3::NFS3ERR_MLINK => Errno::EMLINK,
        nfsstat3::NFS3ERR_NAMETOOLONG => Errno::ENAMETOOLONG,
        nfsstat3::NFS3ERR_NOTEMPTY => Errno::ENOTEMPTY,
        nfsstat3::NFS3ERR_DQUOT => Errno::EDQUOT,
        nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE => Errno::ESTALE,
        nfsstat3::NFS3ERR_NOTSUPP => Errno::EOPNOTSUPP,
        nfsstat3::NFS3_OK
        | nfsstat3::NFS3ERR_IO
        | nfsstat3::NFS3ERR_REMOTE
        | nfsstat3::NFS3ERR_NOT_SYNC
        | nfsstat3::NFS3ERR_BAD_COOKIE
        | nfsstat3::NFS3ERR_TOOSMALL
        | nfsstat3::NFS3ERR_SERVERFAULT
        | nfsstat3::NFS3ERR_BADTYPE
        | nfsstat3::NFS3ERR_JUKEBOX => Errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno as E;

    #[test]
    fn nfs_status_maps_to_the_local_errno() {
        for (stat, want) in [
            (nfsstat3::NFS3ERR_NOENT, E::ENOENT),
            (nfsstat3::NFS3ERR_ACCES, E::EACCES),
            (nfsstat3::NFS3ERR_EXIST, E::EEXIST),
            (nfsstat3::NFS3ERR_NOTDIR, E::ENOTDIR),
            (nfsstat3::NFS3ERR_ISDIR, E::EISDIR),
            (nfsstat3::NFS3ERR_NOTEMPTY, E::ENOTEMPTY),
            (nfsstat3::NFS3ERR_NOSPC, E::ENOSPC),
            (nfsstat3::NFS3ERR_DQUOT, E::EDQUOT),
            (nfsstat3::NFS3ERR_ROFS, E::EROFS),
            (nfsstat3::NFS3ERR_NAMETOOLONG, E::ENAMETOOLONG),
            (nfsstat3::NFS3ERR_STALE, E::ESTALE),
            (nfsstat3::NFS3ERR_BADHANDLE, E::ESTALE),
            (nfsstat3::NFS3ERR_PERM, E::EPERM),
            (nfsstat3::NFS3ERR_XDEV, E::EXDEV),
            (nfsstat3::NFS3ERR_FBIG, E::EFBIG),
            (nfsstat3::NFS3ERR_IO, E::EIO),
            (nfsstat3::NFS3ERR_SERVERFAULT, E::EIO),
            (nfsstat3::NFS3ERR_JUKEBOX, E::EIO),
            (nfsstat3::NFS3ERR_BAD_COOKIE, E::EIO),
        ] {
            assert_eq!(from_nfsstat(stat).code(), want as i32, "{stat}");
        }
    }

    #[test]
    fn client_side_failures_are_eio_and_auth_is_eacces() {
        let t = CallError::Timeout(std::time::Duration::from_secs(2));
        assert_eq!(t.errno().code(), E::EIO as i32);
        assert!(t.to_string().contains("2s"), "{t}");
        assert_eq!(CallError::Down.errno().code(), E::EIO as i32);
        let c = CallError::Connect(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(Errno::from(c).code(), E::EIO as i32);
        let broken = CallError::Rpc(RpcError::Io(std::io::ErrorKind::BrokenPipe.into()));
        assert_eq!(broken.errno().code(), E::EIO as i32);
        let auth = CallError::Rpc(RpcError::Auth(nfs3_client::nfs3_types::rpc::auth_stat::AUTH_TOOWEAK));
        assert_eq!(auth.errno().code(), E::EACCES as i32);
        assert_eq!(CallError::Status(nfsstat3::NFS3ERR_NOENT).errno().code(), E::ENOENT as i32);
    }
}
