//! The create-time part of network volumes that needs the network: the NFS export or SMB share
//! is checked (and the volume's directory made) before the volume's lock is taken, so a slow
//! server delays only this create. A CIFS volume's secret is checked against its server before
//! anything is sent there; an inline `o=password=` is moved into a secret.

use crate::error::{Error, Result};
use crate::options::VolumeSpec;

use super::VolumeService;

/// How long resolving an SMB server's name may take at create.
const RESOLVE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

impl VolumeService {
    /// Checks the server of a network volume and prepares its directory; the subdir defaults
    /// to the volume's name. Returns warnings for the caller (a moved inline password).
    pub(super) async fn prepare_network(
        &self,
        name: &str,
        spec: &mut VolumeSpec,
        inline_password: Option<&String>,
    ) -> Result<Vec<String>> {
        if let Some(t) = spec.nfs.as_mut() {
            if t.subdir.is_none() {
                t.subdir = Some(name.to_string());
            }
            crate::backend::nfs::check_and_prepare(t, &spec.owner)
                .await
                .map_err(|e| Error::Remote { volume: name.into(), reason: e.0 })?;
        }
        match spec.cifs.as_mut() {
            Some(t) => self.prepare_cifs(name, t, inline_password).await,
            None => Ok(Vec::new()),
        }
    }

    async fn prepare_cifs(
        &self,
        name: &str,
        t: &mut crate::options::CifsTarget,
        inline_password: Option<&String>,
    ) -> Result<Vec<String>> {
        let secrets = &self.inner.secrets;
        if t.subdir.is_none() {
            t.subdir = Some(name.to_string());
        }
        let remote = |reason: String| Error::Remote { volume: name.into(), reason };
        let secret_err = |source| Error::Secret { volume: name.into(), source };
        // The secret's binding is checked before anything reaches the server.
        let inline_name = format!("{name}-password");
        let password = match (inline_password, &t.secret) {
            (Some(pw), _) => {
                secrets.add_inline(&inline_name, pw.as_bytes(), &t.host, true).map_err(secret_err)?;
                Some(pw.clone())
            }
            (None, Some(secret)) => Some(
                String::from_utf8(secrets.read_for(secret, &t.host).map_err(secret_err)?)
                    .map_err(|_| remote(format!("secret {secret} is not UTF-8 text")))?,
            ),
            (None, None) => None,
        };
        let ip = crate::backend::remote::resolve("smb", &t.host, RESOLVE_DEADLINE)
            .await
            .map_err(|e| remote(e.to_string()))?;
        crate::backend::cifs::check_and_prepare(t, ip, password).await.map_err(|e| remote(e.0))?;
        let Some(pw) = inline_password else { return Ok(Vec::new()) };
        // Compatibility with the local driver's o=password=: keep it as a secret bound to this
        // server, never in the volume's options, never replacing another value.
        secrets.add_inline(&inline_name, pw.as_bytes(), &t.host, false).map_err(secret_err)?;
        t.secret = Some(inline_name.clone());
        tracing::warn!(volume = name, secret = inline_name, "inline cifs password moved into a secret");
        Ok(vec![format!(
            "volume {name}: the password given in o=password= was moved into secret {inline_name}; next time use -o secret={inline_name} (Docker itself still keeps the options it was given)"
        )])
    }
}
