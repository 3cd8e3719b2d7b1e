//! What NFS and CIFS volumes share: finding the server's address (with a deadline at create,
//! with the system resolver at mount: the kernel clients take an IP, never a name) and
//! telling "this kernel has no such client" (ENODEV from mount(2)) from other mount errors.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::Error;

/// Why a server name gave no address. Messages name the protocol and the server.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{proto} server {host}: the name has no address")]
    NoAddress { proto: &'static str, host: String },
    #[error("{proto} server {host}: name lookup failed: {source}")]
    Lookup { proto: &'static str, host: String, source: std::io::Error },
    #[error("{proto} server {host}: name lookup took longer than {after:?}")]
    Timeout { proto: &'static str, host: String, after: Duration },
}

/// Resolves `host`, the server of a `proto` (`nfs`, `smb`) volume, to an IP address (an IP
/// literal is returned as is).
///
/// # Errors
/// [`ResolveError`] when the name does not resolve within `deadline`.
pub async fn resolve(proto: &'static str, host: &str, deadline: Duration) -> Result<IpAddr, ResolveError> {
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    let h = || host.to_owned();
    match tokio::time::timeout(deadline, tokio::net::lookup_host((host, 2049))).await {
        Ok(Ok(mut addrs)) => addrs.next().map(|a| a.ip()).ok_or_else(|| ResolveError::NoAddress { proto, host: h() }),
        Ok(Err(source)) => Err(ResolveError::Lookup { proto, host: h(), source }),
        Err(_) => Err(ResolveError::Timeout { proto, host: h(), after: deadline }),
    }
}

/// Resolves a server name to an IP with the system resolver, at mount.
pub(super) fn resolve_blocking(name: &str, host: &str) -> crate::Result<IpAddr> {
    use std::net::ToSocketAddrs;
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| Error::Unsupported { volume: name.into(), reason: format!("server {host} does not resolve") })
}

/// A mount error of volume `name`; ENODEV (mount(2): the filesystem type is not configured in
/// the kernel) says this host has no `what` (NFS, CIFS) client.
pub(super) fn no_kernel_client(name: &str, what: &str, source: voltool_runtime::Error) -> Error {
    match source.errno() {
        Some(nix::errno::Errno::ENODEV) => Error::Unsupported {
            volume: name.into(),
            reason: format!("this host's kernel has no {what} client (see `voltool doctor`)"),
        },
        _ => Error::Mount { volume: name.into(), source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_message_names_the_protocol_it_was_asked_for() {
        assert_eq!(
            resolve("smb", "10.0.0.5", Duration::from_secs(1)).await.expect("literal"),
            IpAddr::from([10, 0, 0, 5])
        );
        for proto in ["nfs", "smb"] {
            let e = resolve(proto, "no-such-host.invalid", Duration::from_secs(5)).await.expect_err("bad host");
            assert!(matches!(
                e,
                ResolveError::Lookup { .. } | ResolveError::NoAddress { .. } | ResolveError::Timeout { .. }
            ));
            assert!(e.to_string().starts_with(&format!("{proto} server no-such-host.invalid: ")), "{e}");
        }
    }
}
