//! A read-only FUSE file system over a small [`Tree`] trait.
//!
//! This crate knows nothing of CCFS: it turns FUSE requests into calls on a [`Tree`] and their
//! results into replies. Every callback has the same shape (call the tree, reply or map the
//! error to an errno in [`FsError::errno`]). Writes are refused with `EROFS` (the mount is also
//! read-only in the kernel). Several worker threads serve requests on cloned `/dev/fuse` fds.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

pub use fuser::SessionUnmounter;

/// Inode number; 1 is the root.
pub type Ino = u64;
/// The root inode.
pub const ROOT: Ino = 1;

/// Type of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// Attributes of a node, and how long the kernel may cache them.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    /// 512-byte blocks the content would use.
    pub blocks: u64,
    pub mtime: SystemTime,
    /// Permission bits incl. setuid/setgid/sticky.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    /// Kernel cache lifetime of this entry and its attributes.
    pub ttl: Duration,
}

/// One directory entry with its attributes (for `readdirplus`).
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: OsString,
    pub attr: Attr,
}

/// File-system statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Statfs {
    pub blocks: u64,
    pub files: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// Errors a [`Tree`] returns; mapped to errnos in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsError {
    NotFound,
    NotDir,
    IsDir,
    NotSymlink,
    /// No such extended attribute.
    NoAttr,
    /// The caller's buffer is too small (xattrs).
    Range,
    /// The data could not be read (missing or corrupt object, store error); the string says why
    /// and is logged.
    Io(String),
    /// An argument the tree cannot serve.
    Invalid,
}

impl FsError {
    /// The errno for this error.
    pub fn errno(&self) -> Errno {
        match self {
            FsError::NotFound => Errno::ENOENT,
            FsError::NotDir => Errno::ENOTDIR,
            FsError::IsDir => Errno::EISDIR,
            FsError::NotSymlink | FsError::Invalid => Errno::EINVAL,
            FsError::NoAttr => Errno::NO_XATTR,
            FsError::Range => Errno::ERANGE,
            FsError::Io(_) => Errno::EIO,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// A read-only tree of nodes: what the mount serves.
pub trait Tree: Send + Sync + 'static {
    /// The child `name` of directory `parent`.
    fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Attr>;
    /// Attributes of a node.
    fn getattr(&self, ino: Ino) -> FsResult<Attr>;
    /// Up to `max` entries of a directory starting at index `offset` (no `.` and `..`).
    fn readdir(&self, ino: Ino, offset: u64, max: usize) -> FsResult<Vec<DirEntry>>;
    /// Open a file for reading; returns a handle passed to `read` and `release`.
    fn open(&self, ino: Ino) -> FsResult<u64>;
    /// Read up to `size` bytes from `offset` (fewer only at end of file).
    fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> FsResult<Bytes>;
    /// Forget a handle.
    fn release(&self, fh: u64);
    /// Target of a symlink.
    fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>>;
    /// Value of an extended attribute.
    fn getxattr(&self, ino: Ino, name: &OsStr) -> FsResult<Vec<u8>>;
    /// Names of the extended attributes.
    fn listxattr(&self, ino: Ino) -> FsResult<Vec<Vec<u8>>>;
    /// File-system statistics.
    fn statfs(&self) -> Statfs;
}

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Name shown in `mount` output.
    pub fsname: String,
    /// Request worker threads.
    pub threads: usize,
    /// Let other users see the mount (needs `user_allow_other` or root).
    pub allow_other: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { fsname: "ccfs".into(), threads: 4, allow_other: false }
    }
}

/// A live mount: wait for it to end.
pub struct Mounted {
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Mounted {
    /// Block until the file system is unmounted (by the [`SessionUnmounter`] or `umount`).
    ///
    /// # Errors
    /// The session's final error.
    pub fn wait(self) -> std::io::Result<()> {
        self.thread.join().map_err(|_| std::io::Error::other("FUSE session thread panicked"))?
    }
}

/// Mount `tree` at `mountpoint` read-only and serve it on background threads. Returns the
/// mount and a handle that unmounts it from any thread (e.g. a signal handler).
///
/// # Errors
/// The mount error (missing `/dev/fuse` or `fusermount3`, a bad mount point, no permission).
pub fn mount(
    tree: Arc<dyn Tree>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> std::io::Result<(Mounted, SessionUnmounter)> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype("ccfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::Dev,
        MountOption::Suid,
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = opts.threads > 1;
    let mut session = fuser::Session::new(Adapter { tree }, mountpoint, &config)?;
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new().name("ccfs-fuse".into()).spawn(move || session.run())?;
    Ok((Mounted { thread }, unmounter))
}

struct Adapter {
    tree: Arc<dyn Tree>,
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 128 * 1024,
        flags: 0,
    }
}

fn fail(op: &str, e: &FsError) -> Errno {
    if let FsError::Io(msg) = e {
        tracing::error!(op, error = %msg, "read failed");
    }
    e.errno()
}

/// Reply to an xattr request: the size when `size` is 0, else the data if it fits.
fn xattr_reply(data: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.tree.lookup(parent.0, name) {
            Ok(a) => reply.entry(&a.ttl, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(fail("lookup", &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.getattr(ino.0) {
            Ok(a) => reply.attr(&a.ttl, &file_attr(&a)),
            Err(e) => reply.error(fail("getattr", &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.tree.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(fail("readlink", &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.tree.open(ino.0) {
            // Versions are immutable: the page cache stays valid across opens.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(fail("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.tree.read(ino.0, fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(fail("read", &e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.tree.release(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.tree.getattr(ino.0) {
            Ok(a) if a.kind == Kind::Dir => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(fail("opendir", &e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        // Offsets: 1 = ".", 2 = "..", n + 3 = entry n.
        if offset < 1 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset < 2 && reply.add(ino, 2, FileType::Directory, "..") {
            return reply.ok();
        }
        let mut next = offset.max(2) - 2;
        loop {
            let batch = match self.tree.readdir(ino.0, next, 512) {
                Ok(b) => b,
                Err(e) => return reply.error(fail("readdir", &e)),
            };
            if batch.is_empty() {
                return reply.ok();
            }
            for d in batch {
                next += 1;
                if reply.add(INodeNo(d.attr.ino), next + 2, file_type(d.attr.kind), &d.name) {
                    return reply.ok();
                }
            }
        }
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let this = match self.tree.getattr(ino.0) {
            Ok(a) => a,
            Err(e) => return reply.error(fail("readdirplus", &e)),
        };
        if offset < 1 && reply.add(ino, 1, ".", &this.ttl, &file_attr(&this), Generation(0)) {
            return reply.ok();
        }
        if offset < 2 && reply.add(ino, 2, "..", &this.ttl, &file_attr(&this), Generation(0)) {
            return reply.ok();
        }
        let mut next = offset.max(2) - 2;
        loop {
            let batch = match self.tree.readdir(ino.0, next, 512) {
                Ok(b) => b,
                Err(e) => return reply.error(fail("readdirplus", &e)),
            };
            if batch.is_empty() {
                return reply.ok();
            }
            for d in batch {
                next += 1;
                let a = file_attr(&d.attr);
                if reply.add(INodeNo(d.attr.ino), next + 2, &d.name, &d.attr.ttl, &a, Generation(0)) {
                    return reply.ok();
                }
            }
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.tree.statfs();
        reply.statfs(s.blocks, 0, 0, s.files, 0, s.bsize, s.namelen, s.bsize);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.tree.getxattr(ino.0, name) {
            Ok(v) => xattr_reply(&v, size, reply),
            Err(e) => reply.error(fail("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.tree.listxattr(ino.0) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                xattr_reply(&buf, size, reply)
            }
            Err(e) => reply.error(fail("listxattr", &e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match self.tree.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(fail("access", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_mapped_in_one_place() {
        assert_eq!(FsError::NotFound.errno(), Errno::ENOENT);
        assert_eq!(FsError::Io("corrupt block".into()).errno(), Errno::EIO);
        assert_eq!(FsError::NoAttr.errno(), Errno::NO_XATTR);
        assert_eq!(FsError::NotDir.errno(), Errno::ENOTDIR);
    }
}
