//! Where a checkout writes: a [`Target`] creates, inspects and replaces entries by paths
//! relative to its root. The engine drives any target the same way; [`LocalTarget`] is a local
//! directory, and the binary wires others (an NFSv3 export spoken in user space).
//!
//! Paths are byte strings relative to the root, `/`-separated, without a leading slash; the
//! root itself is the empty path.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::PathBuf;

use crate::format::Entry;
use crate::fsmeta::{self, ApplyNotes};

/// A file system tree to restore into.
pub trait Target: Send + Sync {
    /// How `rel` is shown in messages and skipped-entry lists (the root is `rel = b""`).
    fn display(&self, rel: &[u8]) -> String;
    /// Make sure the root is a directory, creating it (and its parents) when absent.
    fn prepare_root(&self) -> io::Result<()>;
    /// Whether ownership can be restored (root on a local system, uid 0 credentials on NFS).
    fn can_chown(&self) -> bool;
    /// Metadata of `rel` without following a symlink; `None` when absent.
    fn stat(&self, rel: &[u8]) -> io::Result<Option<Entry>>;
    /// Names in directory `rel`.
    fn list(&self, rel: &[u8]) -> io::Result<Vec<Vec<u8>>>;
    /// Create directory `rel` (private until its metadata is applied).
    fn mkdir(&self, rel: &[u8]) -> io::Result<()>;
    /// Create directory `rel` and its missing parents.
    fn mkdir_all(&self, rel: &[u8]) -> io::Result<()>;
    /// Remove a file, link or whole directory tree; absent is fine.
    fn remove_all(&self, rel: &[u8]) -> io::Result<()>;
    /// Rename `from` to `to`, replacing a file at `to`.
    fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()>;
    fn symlink(&self, target: &[u8], rel: &[u8]) -> io::Result<()>;
    fn read_link(&self, rel: &[u8]) -> io::Result<Vec<u8>>;
    /// Create a fifo, device node or socket for `e`.
    fn mknod(&self, rel: &[u8], e: &Entry) -> io::Result<()>;
    /// Make `new` a hard link to `existing`; [`io::ErrorKind::Unsupported`] when the target
    /// has none (the engine then writes a copy).
    fn hard_link(&self, existing: &[u8], new: &[u8]) -> io::Result<()>;
    /// Apply ownership (when allowed), mode, xattrs and mtime of `e` to `rel`.
    fn apply_metadata(&self, rel: &[u8], e: &Entry, chown: bool) -> io::Result<ApplyNotes>;
    /// Create a new file `rel` (failing if it exists), private until its metadata is applied.
    fn create_new(&self, rel: &[u8]) -> io::Result<Box<dyn TargetFile>>;
    /// Open regular file `rel` to compare it with a version's content.
    fn open_read(&self, rel: &[u8]) -> io::Result<Box<dyn Read + Send>>;
}

/// A file being written by a checkout.
pub trait TargetFile: Send {
    fn write_at(&mut self, data: &[u8], pos: u64) -> io::Result<()>;
    /// Set the final size (extending over trailing holes), apply `e`'s metadata as
    /// [`Target::apply_metadata`] does (through the open file: no lookup by path), and make
    /// the data durable enough that a rename into place publishes it whole.
    fn finish(self: Box<Self>, size: u64, e: &Entry, chown: bool) -> io::Result<ApplyNotes>;
}

/// A local directory.
pub struct LocalTarget {
    root: PathBuf,
}

impl LocalTarget {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalTarget { root: root.into() }
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }
}

impl Target for LocalTarget {
    fn display(&self, rel: &[u8]) -> String {
        self.path(rel).display().to_string()
    }

    fn prepare_root(&self) -> io::Result<()> {
        match std::fs::symlink_metadata(&self.root) {
            Ok(md) if md.is_dir() => Ok(()),
            Ok(_) => Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(&self.root),
            Err(e) => Err(e),
        }
    }

    fn can_chown(&self) -> bool {
        fsmeta::is_root()
    }

    fn stat(&self, rel: &[u8]) -> io::Result<Option<Entry>> {
        match std::fs::symlink_metadata(self.path(rel)) {
            Ok(md) => Ok(Some(fsmeta::entry_from_metadata(crate::source::split(rel).1, &md))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, rel: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        std::fs::read_dir(self.path(rel))?.map(|e| e.map(|e| e.file_name().as_bytes().to_vec())).collect()
    }

    fn mkdir(&self, rel: &[u8]) -> io::Result<()> {
        std::fs::DirBuilder::new().mode(0o700).create(self.path(rel))
    }

    fn mkdir_all(&self, rel: &[u8]) -> io::Result<()> {
        std::fs::create_dir_all(self.path(rel))
    }

    fn remove_all(&self, rel: &[u8]) -> io::Result<()> {
        let path = self.path(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        std::fs::rename(self.path(from), self.path(to))
    }

    fn symlink(&self, target: &[u8], rel: &[u8]) -> io::Result<()> {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), self.path(rel))
    }

    fn read_link(&self, rel: &[u8]) -> io::Result<Vec<u8>> {
        Ok(std::fs::read_link(self.path(rel))?.as_os_str().as_bytes().to_vec())
    }

    fn mknod(&self, rel: &[u8], e: &Entry) -> io::Result<()> {
        fsmeta::make_node(&self.path(rel), e)
    }

    fn hard_link(&self, existing: &[u8], new: &[u8]) -> io::Result<()> {
        std::fs::hard_link(self.path(existing), self.path(new))
    }

    fn apply_metadata(&self, rel: &[u8], e: &Entry, chown: bool) -> io::Result<ApplyNotes> {
        fsmeta::apply_metadata(&self.path(rel), e, chown)
    }

    fn create_new(&self, rel: &[u8]) -> io::Result<Box<dyn TargetFile>> {
        let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(self.path(rel))?;
        Ok(Box::new(LocalFile(f)))
    }

    fn open_read(&self, rel: &[u8]) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(self.path(rel))?))
    }
}

struct LocalFile(File);

impl TargetFile for LocalFile {
    fn write_at(&mut self, data: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(data, pos)
    }

    fn finish(self: Box<Self>, size: u64, e: &Entry, chown: bool) -> io::Result<ApplyNotes> {
        self.0.set_len(size)?;
        fsmeta::apply_metadata_fd(&self.0, e, chown)
    }
}
