//! The FUSE filesystem: each request runs its NFS work (`ops.rs`) on the tokio runtime the
//! filesystem owns, under the per-call deadline, and replies with attributes valid for
//! [`TTL`].

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nfs3_client::nfs3_types::nfs3::nfs_fh3;

use crate::client::{Client, IoSizes};
use crate::dir::{DirState, Fill};
use crate::inodes::InodeTable;
use crate::ops::{Caller, SetAttr};

/// How long the kernel may cache attributes and names: close-to-open consistency plus at
/// most this much staleness for data changed by other clients.
pub(crate) const TTL: Duration = Duration::from_secs(1);

/// Open count of one inode and, once unlinked while open, where its hidden name is.
#[derive(Debug, Default)]
struct OpenState {
    count: u64,
    hidden: Option<(nfs_fh3, Vec<u8>)>,
}

/// See the module documentation.
pub(crate) struct NfsFs {
    pub(crate) client: Client,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    inodes: Mutex<InodeTable>,
    dirs: Mutex<HashMap<u64, DirState>>,
    open: Mutex<HashMap<u64, OpenState>>,
    next_fh: AtomicU64,
    pub(crate) io: IoSizes,
    /// `server:export/subdir`, for logs.
    pub(crate) label: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NfsFs {
    pub(crate) fn new(
        runtime: tokio::runtime::Runtime,
        client: Client,
        root: nfs_fh3,
        root_mode: u32,
        io: IoSizes,
        label: String,
    ) -> Self {
        Self {
            client,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            inodes: Mutex::new(InodeTable::new(root, root_mode)),
            dirs: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            io,
            label,
        }
    }

    /// Runs NFS work to completion on the runtime (every NFS call in it has a deadline).
    fn block<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    pub(crate) fn inodes(&self) -> MutexGuard<'_, InodeTable> {
        lock(&self.inodes)
    }

    /// The NFS handle of `ino`; `ESTALE` for an inode the kernel should no longer use.
    pub(crate) fn fh(&self, ino: INodeNo) -> Result<nfs_fh3, Errno> {
        self.inodes().fh(ino.0).ok_or(Errno::ESTALE)
    }

    pub(crate) fn any_open(&self) -> bool {
        !lock(&self.open).is_empty()
    }

    pub(crate) fn is_open(&self, ino: u64) -> bool {
        lock(&self.open).get(&ino).is_some_and(|s| s.count > 0 && s.hidden.is_none())
    }

    pub(crate) fn silly_name(&self, ino: u64) -> String {
        format!(".nfsfuse{ino:016x}{:08x}", self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn set_silly(&self, ino: u64, dir: nfs_fh3, name: Vec<u8>) {
        lock(&self.open).entry(ino).or_default().hidden = Some((dir, name));
    }

    fn opened(&self, ino: u64) {
        lock(&self.open).entry(ino).or_default().count += 1;
    }

    fn closed(&self, ino: u64) {
        let hidden = {
            let mut open = lock(&self.open);
            let Some(st) = open.get_mut(&ino) else { return };
            st.count = st.count.saturating_sub(1);
            if st.count > 0 {
                return;
            }
            open.remove(&ino).and_then(|s| s.hidden)
        };
        if let Some((dir, name)) = hidden {
            self.block(self.remove_hidden(dir, name));
        }
    }
}

fn caller(req: &Request) -> Caller {
    Caller { uid: req.uid(), gid: req.gid() }
}

fn reply_entry(reply: ReplyEntry, r: Result<fuser::FileAttr, Errno>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for NfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // One FUSE write becomes one NFS WRITE.
        if let Err(nearest) = config.set_max_write(self.io.write) {
            let _ = config.set_max_write(nearest);
        }
        // Drop cached pages when the server's mtime changes (another client wrote).
        let _ = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA);
        tracing::debug!(volume = %self.label, io = ?self.io, "fuse session initialised");
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.block(self.do_lookup(parent, name)));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.block(self.do_getattr(ino)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let s = SetAttr { mode, uid, gid, size, atime, mtime };
        match self.block(self.do_setattr(ino, s)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.block(self.do_readlink(ino)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        reply_entry(reply, self.block(self.do_mknod(parent, name, mode & !umask, rdev, caller(req))));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        reply_entry(reply, self.block(self.do_mkdir(parent, name, mode & !umask, caller(req))));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.block(self.do_unlink(parent, name)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.block(self.do_rmdir(parent, name)));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        reply_entry(reply, self.block(self.do_symlink(parent, link_name, target, caller(req))));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // NFSv3 has no RENAME_NOREPLACE / RENAME_EXCHANGE.
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        reply_empty(reply, self.block(self.do_rename(parent, name, newparent, newname)));
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.block(self.do_link(ino, newparent, newname)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Stateless on the wire; counted here for unlink-while-open. No FOPEN_KEEP_CACHE:
        // each open drops cached pages (close-to-open consistency).
        self.opened(ino.0);
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.block(self.do_read(ino, offset, size)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.block(self.do_write(ino, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Every WRITE was FILE_SYNC: nothing is pending.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.closed(ino.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, DirState::default());
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        // The state leaves the map while NFS calls run; the kernel serialises readdir per
        // open directory.
        let mut st = lock(&self.dirs).remove(&fh.0).unwrap_or_default();
        let r = self.block(async {
            let mut off = offset;
            loop {
                let fill = st.fill(off, |e| reply.add(INodeNo(e.ino), e.cookie, e.kind, OsStr::from_bytes(&e.name)));
                match fill {
                    Fill::Full | Fill::Eof => return Ok(()),
                    Fill::More(cookie) => {
                        let (entries, verf, eof) = self.readdir_batch(ino, cookie, st.verf).await?;
                        st.refill(cookie, entries, verf, eof);
                        off = cookie;
                    }
                }
            }
        });
        if fh.0 != 0 {
            lock(&self.dirs).insert(fh.0, st);
        }
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.block(self.do_statfs()) {
            Ok(s) => reply.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, 255, s.bsize),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The mount uses default_permissions: the kernel checks mode bits itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.block(self.do_create(parent, name, mode & !umask, flags, caller(req))) {
            Ok(a) => {
                self.opened(a.ino.0);
                reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }
}
