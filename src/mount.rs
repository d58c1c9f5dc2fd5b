//! Wiring of the FUSE adapter: `ccfs_fuse::Tree` over the core's [`FsView`], and the
//! foreground/background mount commands.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use ccfs::format::EntryKind;
use ccfs::fsview::{ttl, FsView, NodeAttr};
use ccfs::Error;
use ccfs_fuse::{Attr, DirEntry, FsError, FsResult, Ino, Kind, Statfs, Tree};

/// The mounted view, as the FUSE adapter sees it.
pub struct FuseTree {
    pub view: FsView,
}

fn kind(k: EntryKind) -> Kind {
    match k {
        EntryKind::File => Kind::File,
        EntryKind::Dir => Kind::Dir,
        EntryKind::Symlink => Kind::Symlink,
        EntryKind::Fifo => Kind::Fifo,
        EntryKind::CharDevice => Kind::CharDevice,
        EntryKind::BlockDevice => Kind::BlockDevice,
        EntryKind::Socket => Kind::Socket,
    }
}

fn attr(a: &NodeAttr) -> Attr {
    let mtime = if a.mtime.sec >= 0 {
        UNIX_EPOCH + Duration::new(a.mtime.sec as u64, a.mtime.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(a.mtime.sec.unsigned_abs())
    };
    Attr {
        ino: a.ino,
        kind: kind(a.kind),
        size: a.size,
        blocks: a.allocated.div_ceil(512),
        mtime: if a.immutable { mtime } else { SystemTime::now() },
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        ttl: ttl(a),
    }
}

/// The one place core errors become file-system errors.
fn fs_err(e: Error) -> FsError {
    match e.root() {
        Error::PathNotFound { .. } | Error::VersionNotFound(_) => FsError::NotFound,
        Error::NotADirectory { .. } => FsError::NotDir,
        Error::InvalidArgument(m) if m == "is a directory" => FsError::IsDir,
        Error::InvalidArgument(m) if m == "not a symlink" => FsError::NotSymlink,
        Error::InvalidArgument(_) => FsError::Invalid,
        other => FsError::Io(other.to_string()),
    }
}

impl Tree for FuseTree {
    fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        self.view.lookup(parent, name.as_bytes()).map(|a| attr(&a)).map_err(fs_err)
    }

    fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        self.view.getattr(ino).map(|a| attr(&a)).map_err(fs_err)
    }

    fn readdir(&self, ino: Ino, offset: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        let entries = self.view.readdir(ino, offset, max).map_err(fs_err)?;
        Ok(entries
            .into_iter()
            .map(|(n, a)| DirEntry { name: OsStr::from_bytes(&n).to_owned(), attr: attr(&a) })
            .collect())
    }

    fn open(&self, ino: Ino) -> FsResult<u64> {
        self.view.open(ino).map_err(fs_err)
    }

    fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        self.view.read(ino, fh, offset, size).map_err(fs_err)
    }

    fn release(&self, fh: u64) {
        self.view.release(fh);
    }

    fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        self.view.readlink(ino).map_err(fs_err)
    }

    fn getxattr(&self, ino: Ino, name: &OsStr) -> FsResult<Vec<u8>> {
        let x = self.view.xattrs(ino).map_err(fs_err)?;
        x.into_iter().find(|x| x.name == name.as_bytes()).map(|x| x.value).ok_or(FsError::NoAttr)
    }

    fn listxattr(&self, ino: Ino) -> FsResult<Vec<Vec<u8>>> {
        Ok(self.view.xattrs(ino).map_err(fs_err)?.into_iter().map(|x| x.name).collect())
    }

    fn statfs(&self) -> Statfs {
        let (bytes, files) = self.view.totals();
        Statfs { blocks: bytes.div_ceil(4096), files, bsize: 4096, namelen: 255 }
    }
}

/// Whether `path` is a mount point now (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(path) else { return false };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines().filter_map(|l| l.split(' ').nth(4)).any(|mp| unescape(mp) == canon.as_os_str().as_bytes())
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Unmount a ccfs mount point (fusermount3 -u, or umount as root).
///
/// # Errors
/// When neither tool succeeds; the message carries their output.
pub fn unmount(path: &Path) -> Result<()> {
    if !is_mounted(path) {
        bail!("{} is not mounted", path.display());
    }
    let out = std::process::Command::new("fusermount3").arg("-u").arg(path).output();
    match out {
        Ok(o) if o.status.success() => return Ok(()),
        Ok(o) => {
            let first = String::from_utf8_lossy(&o.stderr).trim().to_string();
            let um = std::process::Command::new("umount").arg(path).output().context("run umount")?;
            if !um.status.success() {
                bail!(
                    "cannot unmount {}: {first}; umount: {}",
                    path.display(),
                    String::from_utf8_lossy(&um.stderr).trim()
                );
            }
        }
        Err(_) => {
            let um = std::process::Command::new("umount")
                .arg(path)
                .output()
                .context("run umount (fusermount3 is missing)")?;
            if !um.status.success() {
                bail!("cannot unmount {}: {}", path.display(), String::from_utf8_lossy(&um.stderr).trim());
            }
        }
    }
    Ok(())
}

/// Start `ccfs … mount --foreground` as a detached child logging to `log`, and wait until the
/// mount is up.
///
/// # Errors
/// When the child exits before mounting (its log is the message) or mounting takes too long.
pub fn spawn_background(args: Vec<std::ffi::OsString>, mountpoint: &Path, log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("find the ccfs executable")?;
    let log_file = std::fs::File::create(log).with_context(|| format!("create log file {}", log.display()))?;
    let mut child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .context("start the mount process")?;
    let t0 = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let err = std::fs::read_to_string(log).unwrap_or_default();
            bail!("mount process exited ({status}): {}", err.trim());
        }
        if is_mounted(mountpoint) {
            return Ok(child.id());
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            bail!("mount did not come up within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Check a mount point before mounting: an existing empty directory.
///
/// # Errors
/// A clear message when it is missing, not a directory, or already mounted.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let md = std::fs::metadata(path).with_context(|| format!("mount point {}", path.display()))?;
    if !md.is_dir() {
        bail!("mount point {} is not a directory", path.display());
    }
    if is_mounted(path) {
        bail!("{} is already a mount point", path.display());
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module or run where FUSE is available");
    }
    Ok(std::fs::canonicalize(path)?)
}
