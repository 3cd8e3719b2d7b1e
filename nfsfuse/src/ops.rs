//! The NFS side of each FUSE operation, as async functions on [`NfsFs`]. The FUSE trait
//! implementation (`fs.rs`) runs them on the runtime and turns their results into replies.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, FileAttr, FileType, INodeNo};
use nfs3_client::nfs3_types::nfs3::{
    CREATE3args, FSSTAT3args, GETATTR3args, LINK3args, LOOKUP3args, MKDIR3args, MKNOD3args, Nfs3Option, READ3args,
    READDIRPLUS3args, READLINK3args, REMOVE3args, RENAME3args, RMDIR3args, SETATTR3args, SYMLINK3args, WRITE3args,
    cookieverf3, createhow3, devicedata3, diropargs3, fattr3, filename3, ftype3, mknoddata3, nfs_fh3, nfspath3,
    nfsstat3, post_op_attr, post_op_fh3, sattr3, specdata3, stable_how, symlinkdata3,
};
use nfs3_client::nfs3_types::xdr_codec::Opaque;

use crate::attr::{self, file_attr};
use crate::client::nfs;
use crate::dir::DirEnt;
use crate::errno::CallError;
use crate::fs::NfsFs;
use crate::inodes::ROOT_INO;

/// `dircount` / `maxcount` of READDIRPLUS calls.
const READDIR_DIRCOUNT: u32 = 32 * 1024;
const READDIR_MAXCOUNT: u32 = 128 * 1024;
const S_IFMT: u32 = 0o170000;
const S_ISGID: u32 = 0o2000;

fn fname(n: &OsStr) -> filename3<'_> {
    filename3(Opaque::borrowed(n.as_bytes()))
}

fn dirop<'a>(dir: &nfs_fh3, n: &'a OsStr) -> diropargs3<'a> {
    diropargs3 { dir: dir.clone(), name: fname(n) }
}

/// Who creates a file: the calling process's uid/gid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// What a FUSE setattr asks to change.
#[derive(Debug, Default)]
pub(crate) struct SetAttr {
    pub(crate) mode: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) size: Option<u64>,
    pub(crate) atime: Option<fuser::TimeOrNow>,
    pub(crate) mtime: Option<fuser::TimeOrNow>,
}

/// FSSTAT numbers in statfs(2) terms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Statfs {
    pub(crate) blocks: u64,
    pub(crate) bfree: u64,
    pub(crate) bavail: u64,
    pub(crate) files: u64,
    pub(crate) ffree: u64,
    pub(crate) bsize: u32,
}

impl NfsFs {
    pub(crate) async fn getattr_fh(&self, fh: &nfs_fh3) -> Result<fattr3, CallError> {
        Ok(nfs!(self.client, getattr, GETATTR3args { object: fh.clone() })?.obj_attributes)
    }

    async fn attrs_or_getattr(&self, fh: &nfs_fh3, post: post_op_attr) -> Result<fattr3, CallError> {
        match post {
            Nfs3Option::Some(a) => Ok(a),
            Nfs3Option::None => self.getattr_fh(fh).await,
        }
    }

    async fn lookup_fh(&self, dir: &nfs_fh3, name: &OsStr) -> Result<(nfs_fh3, fattr3), CallError> {
        let ok = nfs!(self.client, lookup, LOOKUP3args { what: dirop(dir, name) })?;
        let a = self.attrs_or_getattr(&ok.object, ok.obj_attributes).await?;
        Ok((ok.object, a))
    }

    /// The handle a create-like call returned (or a LOOKUP when the server left it out) and
    /// the new file's attributes.
    async fn created(
        &self,
        dir: &nfs_fh3,
        name: &OsStr,
        obj: post_op_fh3,
        attrs: post_op_attr,
    ) -> Result<(nfs_fh3, fattr3), CallError> {
        match obj {
            Nfs3Option::Some(fh) => {
                let a = self.attrs_or_getattr(&fh, attrs).await?;
                Ok((fh, a))
            }
            Nfs3Option::None => self.lookup_fh(dir, name).await,
        }
    }

    /// The owner to give a new file in directory `parent`: the caller, except that a
    /// setgid directory passes its group on (the server applies that itself). Root's ids
    /// are the server's default for our AUTH_UNIX credential and are not sent.
    fn owner_for(&self, parent: INodeNo, who: Caller) -> (Option<u32>, Option<u32>) {
        let sgid_dir = self.inodes().mode(parent.0).is_some_and(|m| m & S_ISGID != 0);
        let uid = (who.uid != 0).then_some(who.uid);
        let gid = (who.gid != 0 && !sgid_dir).then_some(who.gid);
        (uid, gid)
    }

    /// Sets the owner a server ignored in a create's attributes.
    async fn fix_owner(
        &self,
        fh: &nfs_fh3,
        a: fattr3,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<fattr3, CallError> {
        let uid = uid.filter(|u| *u != a.uid);
        let gid = gid.filter(|g| *g != a.gid);
        if uid.is_none() && gid.is_none() {
            return Ok(a);
        }
        let new_attributes = sattr3 { uid: opt(uid), gid: opt(gid), ..Default::default() };
        let ok =
            nfs!(self.client, setattr, SETATTR3args { object: fh.clone(), new_attributes, guard: Nfs3Option::None })?;
        self.attrs_or_getattr(fh, ok.obj_wcc.after).await
    }

    /// Hands an entry to the kernel: interns the handle (one lookup reference).
    fn entry(&self, fh: &nfs_fh3, a: &fattr3) -> FileAttr {
        let ino = self.inodes().intern(fh, a.fileid, a.mode);
        file_attr(ino, a, self.io.write)
    }

    /// Attributes of a known inode, remembering its mode.
    fn known(&self, ino: INodeNo, a: &fattr3) -> FileAttr {
        self.inodes().set_mode(ino.0, a.mode);
        file_attr(ino.0, a, self.io.write)
    }

    pub(crate) async fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let dir = self.fh(parent)?;
        let (fh, a) = self.lookup_fh(&dir, name).await?;
        Ok(self.entry(&fh, &a))
    }

    pub(crate) async fn do_getattr(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        let fh = self.fh(ino)?;
        let a = self.getattr_fh(&fh).await?;
        Ok(self.known(ino, &a))
    }

    pub(crate) async fn do_setattr(&self, ino: INodeNo, s: SetAttr) -> Result<FileAttr, Errno> {
        let fh = self.fh(ino)?;
        let new_attributes = sattr3 {
            mode: opt(s.mode.map(|m| m & 0o7777)),
            uid: opt(s.uid),
            gid: opt(s.gid),
            size: opt(s.size),
            atime: attr::set_atime_of(s.atime)?,
            mtime: attr::set_mtime_of(s.mtime)?,
        };
        let ok =
            nfs!(self.client, setattr, SETATTR3args { object: fh.clone(), new_attributes, guard: Nfs3Option::None })?;
        let a = self.attrs_or_getattr(&fh, ok.obj_wcc.after).await?;
        Ok(self.known(ino, &a))
    }

    pub(crate) async fn do_readlink(&self, ino: INodeNo) -> Result<Vec<u8>, Errno> {
        let fh = self.fh(ino)?;
        Ok(nfs!(self.client, readlink, READLINK3args { symlink: fh })?.data.0.into_owned())
    }

    /// Reads up to `size` bytes at `offset` in chunks of at most the server's read size;
    /// short only at end of file.
    pub(crate) async fn do_read(&self, ino: INodeNo, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let fh = self.fh(ino)?;
        let mut out = Vec::with_capacity(size as usize);
        while out.len() < size as usize {
            let left = size - u32::try_from(out.len()).map_err(|_| Errno::EIO)?;
            let args = READ3args { file: fh.clone(), offset: offset + out.len() as u64, count: left.min(self.io.read) };
            let ok = nfs!(self.client, read, args)?;
            let n = ok.data.len();
            out.extend_from_slice(&ok.data);
            if ok.eof || n == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Writes `data` at `offset` with FILE_SYNC writes of at most the server's write size:
    /// when this returns, the data is on the server's stable storage.
    pub(crate) async fn do_write(&self, ino: INodeNo, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let fh = self.fh(ino)?;
        let mut done = 0usize;
        while done < data.len() {
            let chunk = &data[done..data.len().min(done + self.io.write as usize)];
            let count = u32::try_from(chunk.len()).map_err(|_| Errno::EIO)?;
            let args = WRITE3args {
                file: fh.clone(),
                offset: offset + done as u64,
                count,
                stable: stable_how::FILE_SYNC,
                data: Opaque::borrowed(chunk),
            };
            let ok = nfs!(self.client, write, args)?;
            if ok.count == 0 {
                return Err(Errno::EIO);
            }
            done += (ok.count as usize).min(chunk.len());
        }
        u32::try_from(done).map_err(|_| Errno::EIO)
    }

    /// Creates a regular file. An existing file is opened instead unless `O_EXCL` (the
    /// kernel only asks when its cache says the name is free; another client may have been
    /// faster).
    pub(crate) async fn do_create(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
        who: Caller,
    ) -> Result<FileAttr, Errno> {
        let dir = self.fh(parent)?;
        let (uid, gid) = self.owner_for(parent, who);
        let how = createhow3::GUARDED(sattr3 {
            mode: opt(Some(mode & 0o7777)),
            uid: opt(uid),
            gid: opt(gid),
            ..Default::default()
        });
        match nfs!(self.client, create, CREATE3args { where_: dirop(&dir, name), how }) {
            Ok(ok) => {
                let (fh, a) = self.created(&dir, name, ok.obj, ok.obj_attributes).await?;
                let a = self.fix_owner(&fh, a, uid, gid).await?;
                Ok(self.entry(&fh, &a))
            }
            Err(CallError::Status(nfsstat3::NFS3ERR_EXIST)) if flags & nix::libc::O_EXCL == 0 => {
                let (fh, mut a) = self.lookup_fh(&dir, name).await?;
                if a.type_ == ftype3::NF3DIR {
                    return Err(Errno::EISDIR);
                }
                if flags & nix::libc::O_TRUNC != 0 && a.size != 0 {
                    let new_attributes = sattr3 { size: Nfs3Option::Some(0), ..Default::default() };
                    let args = SETATTR3args { object: fh.clone(), new_attributes, guard: Nfs3Option::None };
                    let ok = nfs!(self.client, setattr, args)?;
                    a = self.attrs_or_getattr(&fh, ok.obj_wcc.after).await?;
                }
                Ok(self.entry(&fh, &a))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn do_mkdir(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        who: Caller,
    ) -> Result<FileAttr, Errno> {
        let dir = self.fh(parent)?;
        let (uid, gid) = self.owner_for(parent, who);
        let attributes = sattr3 { mode: opt(Some(mode & 0o7777)), uid: opt(uid), gid: opt(gid), ..Default::default() };
        let ok = nfs!(self.client, mkdir, MKDIR3args { where_: dirop(&dir, name), attributes })?;
        let (fh, a) = self.created(&dir, name, ok.obj, ok.obj_attributes).await?;
        let a = self.fix_owner(&fh, a, uid, gid).await?;
        Ok(self.entry(&fh, &a))
    }

    /// mknod(2): regular files through CREATE, FIFOs, sockets and devices through MKNOD.
    pub(crate) async fn do_mknod(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        who: Caller,
    ) -> Result<FileAttr, Errno> {
        let dir = self.fh(parent)?;
        let (uid, gid) = self.owner_for(parent, who);
        let sattr = sattr3 { mode: opt(Some(mode & 0o7777)), uid: opt(uid), gid: opt(gid), ..Default::default() };
        let (obj, attrs) = match mode & S_IFMT {
            0 | 0o100000 => {
                let ok = nfs!(
                    self.client,
                    create,
                    CREATE3args { where_: dirop(&dir, name), how: createhow3::GUARDED(sattr) }
                )?;
                (ok.obj, ok.obj_attributes)
            }
            kind @ (0o010000 | 0o140000 | 0o020000 | 0o060000) => {
                let (major, minor) = attr::decode_dev(rdev);
                let dev = |sattr| devicedata3 {
                    dev_attributes: sattr,
                    spec: specdata3 { specdata1: major, specdata2: minor },
                };
                let what = match kind {
                    0o010000 => mknoddata3::NF3FIFO(sattr),
                    0o140000 => mknoddata3::NF3SOCK(sattr),
                    0o020000 => mknoddata3::NF3CHR(dev(sattr)),
                    _ => mknoddata3::NF3BLK(dev(sattr)),
                };
                let ok = nfs!(self.client, mknod, MKNOD3args { where_: dirop(&dir, name), what })?;
                (ok.obj, ok.obj_attributes)
            }
            _ => return Err(Errno::EINVAL),
        };
        let (fh, a) = self.created(&dir, name, obj, attrs).await?;
        let a = self.fix_owner(&fh, a, uid, gid).await?;
        Ok(self.entry(&fh, &a))
    }

    pub(crate) async fn do_symlink(
        &self,
        parent: INodeNo,
        name: &OsStr,
        target: &std::path::Path,
        who: Caller,
    ) -> Result<FileAttr, Errno> {
        let dir = self.fh(parent)?;
        let (uid, gid) = self.owner_for(parent, who);
        let symlink = symlinkdata3 {
            symlink_attributes: sattr3 { uid: opt(uid), gid: opt(gid), ..Default::default() },
            symlink_data: nfspath3(Opaque::borrowed(target.as_os_str().as_bytes())),
        };
        let ok = nfs!(self.client, symlink, SYMLINK3args { where_: dirop(&dir, name), symlink })?;
        let (fh, a) = self.created(&dir, name, ok.obj, ok.obj_attributes).await?;
        let a = self.fix_owner(&fh, a, uid, gid).await?;
        Ok(self.entry(&fh, &a))
    }

    pub(crate) async fn do_link(&self, ino: INodeNo, newparent: INodeNo, newname: &OsStr) -> Result<FileAttr, Errno> {
        let fh = self.fh(ino)?;
        let dir = self.fh(newparent)?;
        let ok = nfs!(self.client, link, LINK3args { file: fh.clone(), link: dirop(&dir, newname) })?;
        let a = self.attrs_or_getattr(&fh, ok.file_attributes).await?;
        Ok(self.entry(&fh, &a))
    }

    /// unlink(2). A file some process still has open is renamed to a hidden name instead
    /// and removed at its last close (the NFS client's "silly rename"), so the open file
    /// keeps working.
    pub(crate) async fn do_unlink(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let dir = self.fh(parent)?;
        if self.any_open() {
            let (fh, a) = self.lookup_fh(&dir, name).await?;
            let open_ino = self.inodes().peek(&fh).filter(|ino| self.is_open(*ino));
            if let Some(ino) = open_ino.filter(|_| a.nlink <= 1 && a.type_ != ftype3::NF3DIR) {
                let hidden = self.silly_name(ino);
                let to = OsStr::from_bytes(hidden.as_bytes());
                nfs!(self.client, rename, RENAME3args { from: dirop(&dir, name), to: dirop(&dir, to) })?;
                self.set_silly(ino, dir, hidden.into_bytes());
                return Ok(());
            }
        }
        nfs!(self.client, remove, REMOVE3args { object: dirop(&dir, name) })?;
        Ok(())
    }

    /// Removes a silly-renamed file after its last close; failures are only logged.
    pub(crate) async fn remove_hidden(&self, dir: nfs_fh3, name: Vec<u8>) {
        let n = OsStr::from_bytes(&name);
        if let Err(e) = nfs!(self.client, remove, REMOVE3args { object: dirop(&dir, n) }) {
            tracing::warn!(volume = %self.label, error = %e, "could not remove a deleted-while-open file");
        }
    }

    pub(crate) async fn do_rmdir(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let dir = self.fh(parent)?;
        nfs!(self.client, rmdir, RMDIR3args { object: dirop(&dir, name) })?;
        Ok(())
    }

    pub(crate) async fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> Result<(), Errno> {
        let from = self.fh(parent)?;
        let to = self.fh(newparent)?;
        nfs!(self.client, rename, RENAME3args { from: dirop(&from, name), to: dirop(&to, newname) })?;
        Ok(())
    }

    pub(crate) async fn do_statfs(&self) -> Result<Statfs, Errno> {
        let root = self.fh(INodeNo(ROOT_INO))?;
        let s = nfs!(self.client, fsstat, FSSTAT3args { fsroot: root })?;
        let bsize = 4096u32;
        let b = u64::from(bsize);
        Ok(Statfs {
            blocks: s.tbytes / b,
            bfree: s.fbytes / b,
            bavail: s.abytes / b,
            files: s.tfiles,
            ffree: s.afiles,
            bsize,
        })
    }

    /// One READDIRPLUS batch after `cookie`: the entries (with their file types) and the
    /// verifier and end flag. A stale cookie verifier is retried once without one.
    pub(crate) async fn readdir_batch(
        &self,
        dir_ino: INodeNo,
        cookie: u64,
        verf: cookieverf3,
    ) -> Result<(Vec<DirEnt>, cookieverf3, bool), Errno> {
        let dir = self.fh(dir_ino)?;
        let args = |cookieverf| READDIRPLUS3args {
            dir: dir.clone(),
            cookie,
            cookieverf,
            dircount: READDIR_DIRCOUNT,
            maxcount: READDIR_MAXCOUNT,
        };
        let verf = if cookie == 0 { cookieverf3::default() } else { verf };
        let ok = match nfs!(self.client, readdirplus, args(verf)) {
            Err(CallError::Status(nfsstat3::NFS3ERR_BAD_COOKIE)) if verf != cookieverf3::default() => {
                nfs!(self.client, readdirplus, args(cookieverf3::default()))?
            }
            r => r?,
        };
        let mut out = Vec::with_capacity(ok.reply.entries.0.len());
        for e in ok.reply.entries.0 {
            let name = e.name.0.into_owned();
            let known = match &e.name_handle {
                Nfs3Option::Some(fh) => self.inodes().peek(fh),
                Nfs3Option::None => None,
            };
            let ino = match name.as_slice() {
                b"." => dir_ino.0,
                _ => known.unwrap_or(e.fileid),
            };
            let kind = match e.name_attributes {
                Nfs3Option::Some(a) => attr::kind(a.type_),
                Nfs3Option::None if name == b"." || name == b".." => FileType::Directory,
                // No attributes in the reply: ask for them; an entry gone meanwhile is skipped.
                Nfs3Option::None => match self.lookup_fh(&dir, OsStr::from_bytes(&name)).await {
                    Ok((_, a)) => attr::kind(a.type_),
                    Err(CallError::Status(nfsstat3::NFS3ERR_NOENT)) => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            out.push(DirEnt { name, ino, kind, cookie: e.cookie });
        }
        Ok((out, ok.cookieverf, ok.reply.eof))
    }
}

fn opt<T: nfs3_client::nfs3_types::xdr_codec::Pack + nfs3_client::nfs3_types::xdr_codec::Unpack>(
    v: Option<T>,
) -> Nfs3Option<T> {
    v.map_or(Nfs3Option::None, Nfs3Option::Some)
}
