//! Where things live on disk: the state dir (database, volume data, retained and orphaned
//! volumes) and the mount root (every volume's mountpoint).

use std::path::PathBuf;

/// Where things live on disk.
#[derive(Debug, Clone)]
pub struct Layout {
    pub state_dir: PathBuf,
    /// Parent of every volume's mountpoint. In managed-plugin mode this is the plugin's
    /// `propagatedMount`, so mounts made here reach dockerd and the containers.
    pub mount_root: PathBuf,
}

impl Layout {
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("voltool.db")
    }
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join("volumes").join(name)
    }
    /// The directory holding a local volume's data.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("data")
    }
    /// The image file of an image-backed volume.
    pub fn image(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("image")
    }
    /// Where a new image is mounted once to set its root's owner and mode.
    pub(super) fn init_dir(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("init")
    }
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.mount_root.join(name)
    }
    pub fn orphans_dir(&self) -> PathBuf {
        self.state_dir.join("orphans")
    }
    /// Where `on-remove=retain` keeps removed volumes.
    pub fn retained_dir(&self) -> PathBuf {
        self.state_dir.join("retained")
    }
}
