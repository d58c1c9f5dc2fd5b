//! Local file-system metadata: reading it into entries at scan time and applying it at restore.
//! The only module that calls libc for file metadata.

use std::ffi::{CString, OsStr};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::format::{Entry, EntryKind, Timestamp, Xattr};

/// The entry for `name`, from its `lstat` metadata. Content, target, subtree and xattrs are
/// filled in by the caller.
pub fn entry_from_metadata(name: &[u8], md: &Metadata) -> Entry {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        EntryKind::CharDevice
    } else if ft.is_block_device() {
        EntryKind::BlockDevice
    } else if ft.is_socket() {
        EntryKind::Socket
    } else {
        EntryKind::File
    };
    let nlink = md.nlink().min(u32::MAX as u64) as u32;
    Entry {
        name: name.to_vec(),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: Timestamp { sec: md.mtime(), nsec: md.mtime_nsec() as u32 },
        ctime: Timestamp { sec: md.ctime(), nsec: md.ctime_nsec() as u32 },
        dev: md.dev(),
        inode: md.ino(),
        size: if kind == EntryKind::File || kind == EntryKind::Symlink { md.size() } else { 0 },
        nlink,
        rdev: if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) { md.rdev() } else { 0 },
        target: Vec::new(),
        xattrs: Vec::new(),
        content: Vec::new(),
        subtree: None,
        link_group: (kind == EntryKind::File && nlink > 1).then(|| md.ino() ^ md.dev().rotate_left(40)),
    }
}

/// Extended attributes of `path` (not following symlinks), sorted by name. Attributes that
/// cannot be read are left out with a log line; a file system without xattrs gives none.
pub fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) => {
            if e.raw_os_error() != Some(libc::ENOTSUP) {
                tracing::debug!(path = %path.display(), error = %e, "cannot list xattrs");
            }
            return Vec::new();
        }
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|n| match xattr::get(path, &n) {
            Ok(Some(v)) => Some(Xattr { name: n.as_bytes().to_vec(), value: v }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), name = ?n, error = %e, "cannot read xattr");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn cstr(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Create a fifo, device node or socket placeholder at `path`.
///
/// # Errors
/// The `mknod` error.
pub fn make_node(path: &Path, e: &Entry) -> std::io::Result<()> {
    let ty = match e.kind {
        EntryKind::Fifo => libc::S_IFIFO,
        EntryKind::CharDevice => libc::S_IFCHR,
        EntryKind::BlockDevice => libc::S_IFBLK,
        EntryKind::Socket => libc::S_IFSOCK,
        _ => return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
    };
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), ty | (e.mode & 0o7777), e.rdev as libc::dev_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What applying metadata could not do (reported, never fatal).
#[derive(Debug, Default)]
pub struct ApplyNotes {
    pub ownership_skipped: bool,
    pub xattr_errors: Vec<String>,
}

/// Apply ownership (when root), permissions, xattrs and mtime to `path` (not following
/// symlinks where the system allows it).
///
/// # Errors
/// Errors of chmod or utimensat; ownership and xattr failures go to the returned notes.
pub fn apply_metadata(path: &Path, e: &Entry, as_root: bool) -> std::io::Result<ApplyNotes> {
    apply(Node::Path(path, &cstr(path)?), e, as_root)
}

/// [`apply_metadata`] on an open regular file: no path lookups, and no chance of changing
/// whatever a path might point to by then.
///
/// # Errors
/// As [`apply_metadata`].
pub fn apply_metadata_fd(file: &std::fs::File, e: &Entry, as_root: bool) -> std::io::Result<ApplyNotes> {
    apply(Node::File(file), e, as_root)
}

/// What metadata is applied to.
enum Node<'a> {
    Path(&'a Path, &'a CString),
    File(&'a std::fs::File),
}

fn apply(node: Node<'_>, e: &Entry, as_root: bool) -> std::io::Result<ApplyNotes> {
    use std::os::fd::AsRawFd;
    use xattr::FileExt;
    let check = |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    let mut notes = ApplyNotes { ownership_skipped: !as_root, ..Default::default() };
    if as_root {
        let rc = match node {
            // SAFETY: valid C string; lchown does not follow symlinks.
            Node::Path(_, c) => unsafe { libc::lchown(c.as_ptr(), e.uid, e.gid) },
            // SAFETY: an fd owned by `f` for the duration of the call.
            Node::File(f) => unsafe { libc::fchown(f.as_raw_fd(), e.uid, e.gid) },
        };
        notes.ownership_skipped = rc != 0;
    }
    for x in &e.xattrs {
        let name = OsStr::from_bytes(&x.name);
        let set = match node {
            Node::Path(path, _) => xattr::set(path, name, &x.value),
            Node::File(f) => f.set_xattr(name, &x.value),
        };
        if let Err(err) = set {
            notes.xattr_errors.push(format!("{}: {err}", String::from_utf8_lossy(&x.name)));
        }
    }
    if e.kind != EntryKind::Symlink {
        // chmod after chown: chown clears setuid/setgid bits.
        check(match node {
            // SAFETY: valid C string.
            Node::Path(_, c) => unsafe { libc::chmod(c.as_ptr(), e.mode as libc::mode_t) },
            // SAFETY: an fd owned by `f` for the duration of the call.
            Node::File(f) => unsafe { libc::fchmod(f.as_raw_fd(), e.mode as libc::mode_t) },
        })?;
    }
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: e.mtime.sec as libc::time_t, tv_nsec: e.mtime.nsec as _ },
    ];
    check(match node {
        // SAFETY: valid C string and a two-element timespec array, as utimensat requires.
        Node::Path(_, c) => unsafe {
            libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
        },
        // SAFETY: an fd owned by `f`, and a two-element timespec array, as futimens requires.
        Node::File(f) => unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) },
    })?;
    Ok(notes)
}

/// Whether this process runs as root (and so restores ownership).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Data extents of a file `[start, end)` found with SEEK_DATA/SEEK_HOLE, or `None` when the
/// file system cannot tell (then the whole file is data).
pub fn data_extents(file: &std::fs::File, size: u64) -> Option<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on an fd we own; no memory is touched.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return None;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return None;
        }
        let end = (hole as u64).min(size);
        if end > data as u64 {
            out.push((data as u64, end));
        }
        pos = hole;
    }
    Some(out)
}
