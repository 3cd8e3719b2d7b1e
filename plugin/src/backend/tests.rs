//! Backend tests against the recording fakes: image provisioning, mount and grow (online
//! and offline), a failed mkfs, the tmpfs request, usage of a directory.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use voltool_runtime::RecordingMounter;
use voltool_runtime::loopdev::{LoopCall, RecordingLoopDevices};
use voltool_runtime::mount::{MountFlags, Mounter};

use super::image::wait_released;
use super::local::dir_usage;
use super::tools::{RecordingFsTools, ToolCall};
use super::*;
use crate::options::{Backing, FsType, QuotaSupport, TmpfsExtra, VolumeSpec, VolumeType};

fn fake_host() -> (Host, Arc<RecordingMounter>, Arc<RecordingLoopDevices>, Arc<RecordingFsTools>) {
    let (m, l, t) =
        (Arc::new(RecordingMounter::new()), Arc::new(RecordingLoopDevices::new()), Arc::new(RecordingFsTools::new()));
    let host = Host {
        mounter: m.clone(),
        loops: l.clone(),
        tools: t.clone(),
        projects: Arc::new(voltool_runtime::quota::RecordingProjectQuota::new()),
        snapshots: Arc::new(voltool_runtime::snapshot::RecordingSnapshots::new()),
        subvolumes: false,
        reflinks: false,
        quota: QuotaSupport { project: false, loop_devices: true },
        nfs_userspace: false,
        fuse: Arc::default(),
    };
    (host, m, l, t)
}

#[test]
fn image_provision_mount_and_grow() {
    let d = tempfile::tempdir().expect("tmp");
    let layout = Layout { state_dir: d.path().join("s"), mount_root: d.path().join("m") };
    let (host, m, l, t) = fake_host();
    let spec = VolumeSpec {
        size: Some(64 << 20),
        owner: Owner { mode: Some(0o700), ..Default::default() },
        backing: Some(Backing::Image),
        ..Default::default()
    };
    let b = AnyBackend::for_spec(&spec);
    assert_eq!(b, AnyBackend::Image(FsType::Ext4));
    b.provision(&host, &layout, "v", &spec).expect("provision");
    let md = std::fs::metadata(layout.image("v")).expect("image");
    assert_eq!(md.len(), 64 << 20);
    assert!(md.blocks() * 512 < 1 << 20, "sparse");
    assert_eq!(t.calls(), vec![ToolCall::Mkfs(FsType::Ext4, layout.image("v"))]);
    assert!(!layout.init_dir("v").exists(), "init mount cleaned up");
    assert_eq!(m.mount_table().expect("t").len(), 0);
    b.mount(&host, &layout, "v", &spec, None).expect("mount");
    let mounts = m.mounts();
    assert_eq!(mounts.last().map(|r| (r.source.as_str(), r.fstype.as_deref())), Some(("/dev/loop1", Some("ext4"))));
    b.grow(&host, &layout, "v", &spec, 128 << 20).expect("grow");
    assert_eq!(std::fs::metadata(layout.image("v")).expect("image").len(), 128 << 20);
    assert!(l.calls().contains(&LoopCall::RefreshCapacity("/dev/loop1".into())));
    assert_eq!(
        t.calls().last(),
        Some(&ToolCall::GrowOnline(FsType::Ext4, "/dev/loop1".into(), layout.mountpoint("v")))
    );
    let e = b
        .grow(&host, &layout, "v", &VolumeSpec { size: Some(128 << 20), ..spec.clone() }, 100 << 20)
        .expect_err("shrink");
    assert!(e.to_string().contains("shrinking is not supported"), "{e}");
    b.unmount(&host, &layout, "v").expect("unmount");
    // Unmounted here, still held elsewhere for two looks (a container exiting): the grow
    // waits for the image to be released before checking and growing it.
    l.held_for(2);
    b.grow(&host, &layout, "v", &VolumeSpec { size: Some(128 << 20), ..spec.clone() }, 256 << 20)
        .expect("grow offline");
    assert_eq!(t.calls().last(), Some(&ToolCall::GrowOffline(layout.image("v"))));
    let looks = l.calls().iter().filter(|c| **c == LoopCall::Holders(layout.image("v"))).count();
    assert_eq!(looks, 3, "looked until released");
    // Never released: a clear error, nothing grown.
    l.held_for(u32::MAX);
    let before = t.calls().len();
    let e = wait_released(&host, "v", &layout.image("v"), Duration::from_millis(200)).expect_err("still held");
    assert!(e.to_string().contains("still in use through /dev/loop9"), "{e}");
    assert_eq!(t.calls().len(), before);
}

#[test]
fn failed_mkfs_is_reported_with_the_volume() {
    let d = tempfile::tempdir().expect("tmp");
    let layout = Layout { state_dir: d.path().join("s"), mount_root: d.path().join("m") };
    let (host, _, _, t) = fake_host();
    t.fail_next("mkfs.ext4: no space");
    let spec = VolumeSpec { size: Some(64 << 20), backing: Some(Backing::Image), ..Default::default() };
    let e = AnyBackend::for_spec(&spec).provision(&host, &layout, "v", &spec).expect_err("mkfs fails");
    assert!(e.to_string().starts_with("volume v:"), "{e}");
}

#[test]
fn tmpfs_request_carries_size_owner_and_safe_flags() {
    let spec = VolumeSpec {
        kind: VolumeType::Tmpfs,
        size: Some(16 << 20),
        owner: Owner { uid: Some(1000), gid: Some(1001), mode: Some(0o1777) },
        tmpfs: TmpfsExtra { noexec: true, ..Default::default() },
        ..Default::default()
    };
    let r = tmpfs::request("t1", Path::new("/m/t1"), &spec);
    assert_eq!(r.fstype.as_deref(), Some("tmpfs"));
    assert_eq!(r.data.as_deref(), Some("size=16777216,mode=1777,uid=1000,gid=1001"));
    assert_eq!(r.flags, MountFlags::MS_NOSUID | MountFlags::MS_NODEV | MountFlags::MS_NOEXEC);
}

#[test]
fn usage_counts_allocated_bytes() {
    let d = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(d.path().join("sub")).expect("mkdir");
    std::fs::write(d.path().join("sub/f"), vec![1u8; 100_000]).expect("write");
    let used = dir_usage(d.path(), Duration::from_secs(5)).expect("usage");
    assert!(used >= 100_000, "{used}");
}
