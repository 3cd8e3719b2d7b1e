//! Loop devices: attach a backing file with autoclear, refresh capacity after growing it.
//!
//! The ioctl sequence follows loop(4) (and containerd's `mount_linux.rs`):
//! `LOOP_CTL_GET_FREE` on `/dev/loop-control` → open `/dev/loopN` → `LOOP_CONFIGURE` with the
//! backing fd and `LO_FLAGS_AUTOCLEAR`. Another process may grab the same free device
//! between the two calls; that shows as `EBUSY` and is retried (matched by errno). Kernels
//! before 5.8 lack `LOOP_CONFIGURE` (`EINVAL`): then `LOOP_SET_FD` + `LOOP_SET_STATUS64`.
//!
//! With autoclear the kernel detaches the device when its last user goes away: the caller
//! mounts the device and then drops the [`AttachedLoop`]; unmounting later frees the device.
//! If the mount fails, dropping the handle frees it at once — no leak on error paths.
//!
//! In a managed plugin `/dev` holds only what config.json lists, so a missing `/dev/loopN`
//! node is created with mknod(2) (block major 7).

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::error::{Error, Result};

const LOOP_MAJOR: u64 = 7;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
/// How often to retry when another process takes the free device first.
const ATTACH_RETRIES: usize = 16;

/// `struct loop_info64` from linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` from linux/loop.h.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, LoopInfo64);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
nix::ioctl_none_bad!(loop_set_capacity, 0x4C07);

fn info(backing: &Path, flags: u32) -> LoopInfo64 {
    let mut name = [0u8; LO_NAME_SIZE];
    let b = backing.as_os_str().as_encoded_bytes();
    let n = b.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&b[..n]);
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: flags,
        lo_file_name: name,
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; LO_KEY_SIZE],
        lo_init: [0; 2],
    }
}

/// A configured loop device. Keep it until the device is mounted, then drop it: autoclear
/// detaches the device when the mount goes away.
#[derive(Debug)]
pub struct AttachedLoop {
    pub device: PathBuf,
    /// Holds the device open; `None` in the recording fake.
    _file: Option<File>,
}

/// The loop-device seam.
pub trait LoopDevices: Send + Sync {
    /// Attaches `backing` to a free loop device with autoclear.
    ///
    /// # Errors
    /// [`Error::Loop`] naming the device and the failed operation.
    fn attach(&self, backing: &Path) -> Result<AttachedLoop>;

    /// Tells the kernel the backing file of `device` has grown (`LOOP_SET_CAPACITY`).
    ///
    /// # Errors
    /// [`Error::Loop`].
    fn refresh_capacity(&self, device: &Path) -> Result<()>;

    /// The loop devices whose backing file is `backing` (none once every filesystem on it is
    /// gone and autoclear freed them). A filesystem unmounted from the host can still be live
    /// in another mount namespace (a container that is exiting): its loop device stays until
    /// then.
    ///
    /// # Errors
    /// [`Error::Loop`] when `/sys/block` cannot be read.
    fn holders(&self, backing: &Path) -> Result<Vec<PathBuf>>;
}

fn loop_err<'a>(op: &'static str, device: &'a Path) -> impl Fn(Errno) -> Error + 'a {
    move |errno| Error::Loop { op, device: device.to_path_buf(), errno }
}

/// The real implementation.
#[derive(Debug, Default, Clone)]
pub struct LinuxLoopDevices {
    /// Where device nodes live (`/dev`; tests may point elsewhere).
    pub dev_dir: PathBuf,
}

impl LinuxLoopDevices {
    pub fn new() -> Self {
        Self { dev_dir: PathBuf::from("/dev") }
    }

    fn node(&self, index: u32) -> Result<PathBuf> {
        let path = self.dev_dir.join(format!("loop{index}"));
        if !path.exists() {
            // mknod(2): only present devices appear in a managed plugin's /dev.
            match mknod(&path, SFlag::S_IFBLK, Mode::from_bits_truncate(0o660), makedev(LOOP_MAJOR, u64::from(index))) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(errno) => return Err(Error::Loop { op: "mknod", device: path, errno }),
            }
        }
        Ok(path)
    }

    fn configure(dev: &File, device: &Path, backing: &File, backing_path: &Path) -> Result<()> {
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: info(backing_path, LO_FLAGS_AUTOCLEAR),
            reserved: [0; 8],
        };
        // SAFETY: `dev` is an open loop device; `cfg` is a fully initialised repr(C) struct
        // matching linux/loop.h that outlives the call.
        match unsafe { loop_configure(dev.as_raw_fd(), &cfg) } {
            Ok(_) => Ok(()),
            Err(Errno::EINVAL) | Err(Errno::ENOTTY) => {
                // Kernel < 5.8: the two-step form.
                // SAFETY: both fds are open for the duration of the calls.
                unsafe { loop_set_fd(dev.as_raw_fd(), backing.as_raw_fd()) }
                    .map_err(loop_err("LOOP_SET_FD", device))?;
                let inf = info(backing_path, LO_FLAGS_AUTOCLEAR);
                // SAFETY: as above; `inf` outlives the call.
                if let Err(errno) = unsafe { loop_set_status64(dev.as_raw_fd(), &inf) } {
                    // SAFETY: undo LOOP_SET_FD on the same open device.
                    let _ = unsafe { loop_clr_fd(dev.as_raw_fd()) };
                    return Err(Error::Loop { op: "LOOP_SET_STATUS64", device: device.to_path_buf(), errno });
                }
                Ok(())
            }
            Err(errno) => Err(Error::Loop { op: "LOOP_CONFIGURE", device: device.to_path_buf(), errno }),
        }
    }
}

impl LoopDevices for LinuxLoopDevices {
    fn attach(&self, backing: &Path) -> Result<AttachedLoop> {
        let ctl_path = self.dev_dir.join("loop-control");
        let ctl = File::open(&ctl_path).map_err(|e| Error::Loop {
            op: "open",
            device: ctl_path.clone(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        let backing_file = OpenOptions::new().read(true).write(true).open(backing).map_err(|e| Error::Loop {
            op: "open backing file",
            device: backing.to_path_buf(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        let mut last = Errno::EBUSY;
        for _ in 0..ATTACH_RETRIES {
            // SAFETY: `ctl` is an open /dev/loop-control.
            let index =
                unsafe { loop_ctl_get_free(ctl.as_raw_fd()) }.map_err(loop_err("LOOP_CTL_GET_FREE", &ctl_path))?;
            let device = self.node(index as u32)?;
            let dev = match OpenOptions::new().read(true).write(true).open(&device) {
                Ok(f) => f,
                Err(e) => {
                    return Err(Error::Loop {
                        op: "open",
                        device,
                        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                    });
                }
            };
            match Self::configure(&dev, &device, &backing_file, backing) {
                Ok(()) => return Ok(AttachedLoop { device, _file: Some(dev) }),
                // Raced with another attacher for the same free device: ask again.
                Err(Error::Loop { errno: Errno::EBUSY, .. }) => last = Errno::EBUSY,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Loop {
            op: "attach (no free loop device after retries)",
            device: backing.to_path_buf(),
            errno: last,
        })
    }

    fn refresh_capacity(&self, device: &Path) -> Result<()> {
        let f = File::open(device).map_err(|e| Error::Loop {
            op: "open",
            device: device.to_path_buf(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        // SAFETY: `f` is an open loop device.
        unsafe { loop_set_capacity(f.as_raw_fd()) }.map(drop).map_err(loop_err("LOOP_SET_CAPACITY", device))
    }

    fn holders(&self, backing: &Path) -> Result<Vec<PathBuf>> {
        let want = std::fs::canonicalize(backing).unwrap_or_else(|_| backing.to_path_buf());
        let sys = Path::new("/sys/block");
        let entries = std::fs::read_dir(sys).map_err(|e| Error::Loop {
            op: "list /sys/block",
            device: backing.to_path_buf(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        let mut held = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with("loop") {
                continue;
            }
            // Only attached devices have the file; the kernel appends " (deleted)" when the
            // backing file was unlinked.
            let Ok(file) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
            let file = file.trim_end_matches('\n');
            if Path::new(file.strip_suffix(" (deleted)").unwrap_or(file)) == want {
                held.push(self.dev_dir.join(name));
            }
        }
        held.sort();
        Ok(held)
    }
}

/// A call seen by [`RecordingLoopDevices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopCall {
    Attach(PathBuf),
    RefreshCapacity(PathBuf),
    Holders(PathBuf),
}

/// Recording fake: hands out `/dev/loop0`, `/dev/loop1`, ...; can fail the next attach;
/// [`LoopDevices::holders`] answers from [`RecordingLoopDevices::held_for`] (nothing by
/// default).
#[derive(Debug, Default)]
pub struct RecordingLoopDevices {
    state: Mutex<(Vec<LoopCall>, u32, Option<Errno>)>,
    /// How many more `holders` calls see a holder.
    held: Mutex<u32>,
}

impl RecordingLoopDevices {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn calls(&self) -> Vec<LoopCall> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }
    pub fn fail_next_attach(&self, errno: Errno) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).2 = Some(errno);
    }
    /// The next `calls` calls of `holders` find `/dev/loop9` still backed by the file.
    pub fn held_for(&self, calls: u32) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = calls;
    }
}

impl LoopDevices for RecordingLoopDevices {
    fn attach(&self, backing: &Path) -> Result<AttachedLoop> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.push(LoopCall::Attach(backing.to_path_buf()));
        if let Some(errno) = st.2.take() {
            return Err(Error::Loop { op: "LOOP_CONFIGURE", device: backing.to_path_buf(), errno });
        }
        let n = st.1;
        st.1 += 1;
        Ok(AttachedLoop { device: PathBuf::from(format!("/dev/loop{n}")), _file: None })
    }

    fn refresh_capacity(&self, device: &Path) -> Result<()> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0.push(LoopCall::RefreshCapacity(device.to_path_buf()));
        Ok(())
    }

    fn holders(&self, backing: &Path) -> Result<Vec<PathBuf>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0.push(LoopCall::Holders(backing.to_path_buf()));
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if *held == 0 {
            return Ok(Vec::new());
        }
        *held -= 1;
        Ok(vec![PathBuf::from("/dev/loop9")])
    }
}
