//! The floor: a [`VolumeDriver`] that does nothing, served through the real router.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use voltool_plugin::protocol::{DockerVolume, VolumeDriver, router};

/// Every call succeeds immediately; nothing is stored.
#[derive(Debug)]
pub struct NoopDriver;

impl VolumeDriver for NoopDriver {
    type Error = Infallible;
    async fn create(&self, _name: String, _opts: BTreeMap<String, String>) -> Result<(), Infallible> {
        Ok(())
    }
    async fn remove(&self, _name: String) -> Result<(), Infallible> {
        Ok(())
    }
    async fn mount(&self, _name: String, _id: String) -> Result<PathBuf, Infallible> {
        Ok(PathBuf::from("/var/lib/voltool/mounts/floor"))
    }
    async fn unmount(&self, _name: String, _id: String) -> Result<(), Infallible> {
        Ok(())
    }
    async fn path(&self, _name: String) -> Result<PathBuf, Infallible> {
        Ok(PathBuf::from("/var/lib/voltool/mounts/floor"))
    }
    async fn get(&self, _name: String) -> Result<Option<DockerVolume>, Infallible> {
        Ok(None)
    }
    async fn list(&self) -> Result<Vec<DockerVolume>, Infallible> {
        Ok(Vec::new())
    }
}

/// Serves [`NoopDriver`] on `socket` until killed.
pub async fn serve(socket: &Path) -> Result<()> {
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {}", socket.display()));
        }
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(socket).with_context(|| format!("listen on {}", socket.display()))?;
    axum::serve(listener, router(Arc::new(NoopDriver))).await.context("serve the floor router")
}
