//! Where a version create reads from: a [`Source`] lists directories and opens files by paths
//! relative to its root. The engine drives any source the same way; [`LocalSource`] is a local
//! directory, and the binary wires others (an NFSv3 export spoken in user space).
//!
//! Paths are byte strings relative to the root, `/`-separated, without a leading slash; the
//! root itself is the empty path.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::format::{Entry, Xattr};
use crate::fsmeta;

/// One entry of a directory listing: its name and its metadata, or why that could not be read.
pub struct Listed {
    pub name: Vec<u8>,
    pub meta: io::Result<Entry>,
}

/// A file system tree to scan.
pub trait Source: Send + Sync {
    /// How `rel` is shown in messages and skipped-file lists (the root is `rel = b""`).
    fn display(&self, rel: &[u8]) -> String;
    /// The root directory's entry (empty name, no content). Errors when the root is missing,
    /// unreadable or not a directory.
    fn root(&self) -> io::Result<Entry>;
    /// The entries of directory `rel` with their metadata (`lstat`-like: symlinks not
    /// followed), in any order. Content, target, subtree and xattrs are left empty.
    fn list(&self, rel: &[u8]) -> io::Result<Vec<Listed>>;
    /// The target of symlink `rel`.
    fn read_link(&self, rel: &[u8]) -> io::Result<Vec<u8>>;
    /// Extended attributes of `rel`, sorted by name; empty where the source has none.
    fn xattrs(&self, rel: &[u8]) -> Vec<Xattr>;
    /// Open regular file `rel` (listed as `e`) for reading.
    fn open(&self, rel: &[u8], e: &Entry) -> io::Result<Box<dyn SourceFile>>;
    /// How long before a scan a file's ctime must lie for an unchanged (size, mtime, ctime,
    /// inode) to prove the file unchanged at the next scan: at least one tick of the clock that
    /// stamps the source's ctimes, plus any skew between that clock and ours. The default,
    /// one second, suits remote file systems whose server clock is not ours.
    fn timestamp_margin_micros(&self) -> u64 {
        1_000_000
    }
}

/// An open file of a source, read front to back (with seeks over holes).
pub trait SourceFile: Read + Send {
    /// Its size now (it may differ from the listing if the file changed since).
    fn size(&self) -> u64;
    /// Whether the file may hold holes worth finding.
    fn sparse(&self) -> bool {
        false
    }
    /// Data extents `[start, end)` when the source can tell them; `None` means all data.
    fn data_extents(&mut self) -> Option<Vec<(u64, u64)>> {
        None
    }
    /// Continue reading at `pos`.
    fn seek_to(&mut self, pos: u64) -> io::Result<()>;
}

/// Whether an error means the file system as a whole is gone (a remote server that stopped
/// answering after the client's retries), not that one entry is unreadable: the operation
/// then fails instead of skipping entry after entry.
pub fn fs_gone(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | TimedOut
            | BrokenPipe
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
    )
}

/// An error opening a source or target: [`Error::FsUnavailable`](crate::Error) when the file
/// system is gone, else a bad argument.
pub fn open_error(what: &str, e: &io::Error) -> crate::Error {
    if fs_gone(e) {
        crate::Error::FsUnavailable(format!("{what}: {e}"))
    } else {
        crate::Error::InvalidArgument(format!("{what}: {e}"))
    }
}

/// Split a relative path into its parent and its last name (`b"a/b/c"` → `(b"a/b", b"c")`;
/// a top-level name has the root, `b""`, as parent).
pub fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// Join a relative path and a name.
pub fn child(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(rel.len() + 1 + name.len());
    p.extend_from_slice(rel);
    if !rel.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A local directory tree.
pub struct LocalSource {
    root: PathBuf,
    /// `lstat` of a directory's entries in parallel: on a cold cache each one waits for the
    /// disk, and a scan of unchanged files is nothing but these waits.
    stat: OnceLock<rayon::ThreadPool>,
}

/// Threads that `lstat` directory entries in parallel.
const STAT_THREADS: usize = 8;

impl LocalSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalSource { root: root.into(), stat: OnceLock::new() }
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(std::ffi::OsStr::from_bytes(rel))
        }
    }

    fn pool(&self) -> &rayon::ThreadPool {
        self.stat.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(STAT_THREADS)
                .thread_name(|i| format!("ccfs-stat-{i}"))
                .build()
                .expect("stat thread pool")
        })
    }
}

impl Source for LocalSource {
    fn display(&self, rel: &[u8]) -> String {
        self.path(rel).display().to_string()
    }

    fn root(&self) -> io::Result<Entry> {
        let md = std::fs::metadata(&self.root)?;
        if !md.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        std::fs::read_dir(&self.root)?;
        Ok(fsmeta::entry_from_metadata(b"", &md))
    }

    fn list(&self, rel: &[u8]) -> io::Result<Vec<Listed>> {
        let dir = self.path(rel);
        let mut names: Vec<Vec<u8>> = Vec::new();
        for ent in std::fs::read_dir(&dir)? {
            names.push(ent?.file_name().as_bytes().to_vec());
        }
        let stat = |name: Vec<u8>| {
            let meta = std::fs::symlink_metadata(dir.join(std::ffi::OsStr::from_bytes(&name)))
                .map(|md| fsmeta::entry_from_metadata(&name, &md));
            Listed { name, meta }
        };
        Ok(if names.len() > 4 {
            self.pool().install(|| names.into_par_iter().map(stat).collect())
        } else {
            names.into_iter().map(stat).collect()
        })
    }

    fn read_link(&self, rel: &[u8]) -> io::Result<Vec<u8>> {
        Ok(std::fs::read_link(self.path(rel))?.as_os_str().as_bytes().to_vec())
    }

    fn xattrs(&self, rel: &[u8]) -> Vec<Xattr> {
        fsmeta::read_xattrs(&self.path(rel))
    }

    /// Linux stamps ctimes from its coarse clock, which advances once per tick (at most 10 ms
    /// at HZ=100; finer with multigrain timestamps), and it is the same clock as ours: 100 ms
    /// is ten ticks. Entries with whole-second times get a wider margin in the engine.
    fn timestamp_margin_micros(&self) -> u64 {
        100_000
    }

    fn open(&self, rel: &[u8], _e: &Entry) -> io::Result<Box<dyn SourceFile>> {
        let file = File::open(self.path(rel))?;
        let md = file.metadata()?;
        use std::os::unix::fs::MetadataExt;
        let sparse = md.blocks() * 512 < md.len();
        Ok(Box::new(LocalFile { file, size: md.len(), sparse }))
    }
}

struct LocalFile {
    file: File,
    size: u64,
    sparse: bool,
}

impl Read for LocalFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.file.read_to_end(buf)
    }
}

impl SourceFile for LocalFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn sparse(&self) -> bool {
        self.sparse
    }

    fn data_extents(&mut self) -> Option<Vec<(u64, u64)>> {
        fsmeta::data_extents(&self.file, self.size)
    }

    fn seek_to(&mut self, pos: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(pos)).map(|_| ())
    }
}
