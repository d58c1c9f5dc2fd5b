//! Checkout: restore a version (or a sub-tree of it) into a directory that may already hold
//! data, with the API guide's policies.
//!
//! - Files identical to the version (same size and mtime, or else the same content hash by the
//!   version's own block boundaries) are not rewritten, so a rerun after an interruption is a
//!   resume. Differing entries follow the modified policy; entries the version lacks follow the
//!   absent policy (delete, archive into `<dest>/.ccfs_archive/<UTC time>/<relative path>`, or
//!   preserve).
//! - Files are written by a pool of workers (bounded queue) under a temporary name in their
//!   final directory and renamed when complete: no file is ever visible half-written under its
//!   final name. Holes and all-zero blocks are not written (the file stays sparse). Directory
//!   metadata is applied after their children; hard links are made last.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::catalog::Version;
use crate::error::{Error, Result};
use crate::format::{Entry, EntryKind, Piece};
use crate::fsmeta;
use crate::ids::BlockId;
use crate::progress::{add, Progress};

/// What to do with an entry that exists in the target and differs from the version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModifiedPolicy {
    /// Keep whichever has the newer mtime.
    ModifiedKeepNewer,
    /// Keep the target's entry.
    ModifiedKeepExisting,
    /// Replace it with the version's (the default).
    #[default]
    ModifiedReplace,
}

/// What to do with an entry of the target that the version does not have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbsentPolicy {
    /// Remove it.
    AbsentDelete,
    /// Move it into the dated archive folder under the target.
    AbsentArchive,
    /// Leave it (the default).
    #[default]
    AbsentPreserve,
}

impl std::str::FromStr for ModifiedPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "modified_keep_newer" | "keep-newer" => Ok(Self::ModifiedKeepNewer),
            "modified_keep_existing" | "keep-existing" => Ok(Self::ModifiedKeepExisting),
            "modified_replace" | "replace" => Ok(Self::ModifiedReplace),
            _ => Err(Error::InvalidArgument(format!(
                "modified policy {s:?}: use modified_keep_newer, modified_keep_existing or modified_replace"
            ))),
        }
    }
}

impl std::str::FromStr for AbsentPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "absent_delete" | "delete" => Ok(Self::AbsentDelete),
            "absent_archive" | "archive" => Ok(Self::AbsentArchive),
            "absent_preserve" | "preserve" => Ok(Self::AbsentPreserve),
            _ => Err(Error::InvalidArgument(format!(
                "absent policy {s:?}: use absent_delete, absent_archive or absent_preserve"
            ))),
        }
    }
}

/// Name of the archive folder at the root of a checkout target.
pub const ARCHIVE_DIR: &str = ".ccfs_archive";
const TEMP_PREFIX: &str = ".ccfs-part-";

/// Options of a checkout.
#[derive(Clone, Debug, Default)]
pub struct CheckoutOptions {
    /// Sub-path of the version to restore (`/` when `None`).
    pub path: Option<Vec<u8>>,
    /// Worker threads; 0 means two per CPU (restores wait on storage as much as on CPU).
    pub threads: usize,
    pub modified: ModifiedPolicy,
    pub absent: AbsentPolicy,
}

/// What a checkout did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckoutOutcome {
    /// Entries written or created (files, links, special files).
    pub files: u64,
    pub dirs: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files already identical to the version (not rewritten).
    pub unchanged: u64,
    /// Differing entries kept by the modified policy.
    pub kept: u64,
    /// Absent entries deleted or archived.
    pub deleted: u64,
    pub archived: u64,
    /// Where archived entries went, when any were.
    pub archive_dir: Option<PathBuf>,
    /// Entries that could not be restored, with the reason; everything else was.
    pub skipped: Vec<crate::format::Skipped>,
    /// Ownership was not restored (not running as root).
    pub ownership_skipped: bool,
}

#[derive(Default)]
struct Counts {
    unchanged: u64,
    kept: u64,
    deleted: u64,
    archived: u64,
}

struct Shared {
    version: Version,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    fatal: Mutex<Option<Error>>,
    as_root: bool,
    opts: CheckoutOptions,
    dest: PathBuf,
    archive: PathBuf,
    counts: Mutex<Counts>,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut f = self.fatal.lock().expect("fatal slot poisoned");
        if f.is_none() {
            *f = Some(e);
        }
        self.cancel.cancel();
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().expect("counts poisoned"));
    }

    /// Whether a differing existing entry gives way to the version's.
    fn replaces(&self, existing: &std::fs::Metadata, e: &Entry) -> bool {
        match self.opts.modified {
            ModifiedPolicy::ModifiedReplace => true,
            ModifiedPolicy::ModifiedKeepExisting => false,
            ModifiedPolicy::ModifiedKeepNewer => {
                (existing.mtime(), existing.mtime_nsec() as u32) <= (e.mtime.sec, e.mtime.nsec)
            }
        }
    }
}

/// Restore `opts.path` of `version` into `dest` (created if absent; may hold data).
///
/// # Errors
/// [`Error::InvalidArgument`] for a target that is not a directory; [`Error::Aborted`] when
/// cancelled (every file is then either its previous content or the complete new one); store
/// errors. Files that cannot be written or whose data is corrupt are skipped and listed.
#[tracing::instrument(skip_all, fields(version = %version.manifest.version_id, dest = %dest.display()))]
pub fn checkout(
    version: &Version,
    dest: &Path,
    opts: &CheckoutOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<CheckoutOutcome> {
    let sub = opts.path.clone().unwrap_or_else(|| b"/".to_vec());
    let start = version.lookup(&sub)?;
    match std::fs::symlink_metadata(dest) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => return Err(Error::InvalidArgument(format!("checkout target {} is not a directory", dest.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest).map_err(|e| Error::io("create checkout target", dest, e))?
        }
        Err(e) => return Err(Error::io("open checkout target", dest, e)),
    }
    let version = Version::new(version.repo.with_progress(progress.clone()), version.manifest.clone());
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let shared = Arc::new(Shared {
        version,
        progress: progress.clone(),
        cancel: cancel.clone(),
        fatal: Mutex::new(None),
        as_root: fsmeta::is_root(),
        opts: opts.clone(),
        dest: dest.to_path_buf(),
        archive: dest.join(ARCHIVE_DIR).join(stamp),
        counts: Mutex::new(Counts::default()),
    });
    let threads =
        if opts.threads == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) * 2 } else { opts.threads };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ccfs-checkout-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("thread pool: {e}")))?;
    let (tokens, token_rx) = bounded::<()>(threads * 8);
    let mut r = Restorer {
        shared: &shared,
        pool: &pool,
        tokens: &tokens,
        token_rx: &token_rx,
        dirs: Vec::new(),
        links: HashMap::new(),
        pending_links: Vec::new(),
    };
    let walked = if start.kind == EntryKind::Dir {
        r.dirs.push((dest.to_path_buf(), start.clone()));
        r.walk(dest, &start, &sub)
    } else {
        let target = dest.join(OsStr::from_bytes(&start.name));
        r.entry(&target, &start, &sub)
    };
    // Wait for every file job: take back all tokens.
    for _ in 0..threads * 8 {
        let _ = tokens.send(());
    }
    walked?;
    if let Some(e) = shared.fatal.lock().expect("fatal slot poisoned").take() {
        return Err(e);
    }
    if cancel.is_cancelled() {
        return Err(Error::Aborted);
    }
    let mut outcome = CheckoutOutcome::default();
    for (target, path) in std::mem::take(&mut r.pending_links) {
        if let (Ok(a), Ok(b)) = (std::fs::symlink_metadata(&target), std::fs::symlink_metadata(&path)) {
            if a.ino() == b.ino() && a.dev() == b.dev() {
                shared.count(|c| c.unchanged += 1);
                continue;
            }
            if let Err(err) = remove_any(&path) {
                shared.progress.skip(path.display().to_string(), format!("cannot replace with a hard link: {err}"));
                continue;
            }
        }
        match std::fs::hard_link(&target, &path) {
            Ok(()) => add(&shared.progress.fs.fs_created_files, 1),
            Err(err) => shared.progress.skip(path.display().to_string(), format!("cannot create hard link: {err}")),
        }
    }
    // Directories: children first (reverse creation order).
    for (path, e) in r.dirs.iter().rev() {
        match fsmeta::apply_metadata(path, e, shared.as_root) {
            Ok(n) => outcome.ownership_skipped |= n.ownership_skipped,
            Err(err) => {
                shared.progress.skip(path.display().to_string(), format!("cannot set directory metadata: {err}"))
            }
        }
    }
    let counts = shared.counts.lock().expect("counts poisoned");
    outcome.dirs = r.dirs.len() as u64;
    outcome.bytes = crate::progress::get(&shared.progress.fs.fs_files_bytes_written);
    outcome.files = crate::progress::get(&shared.progress.fs.fs_created_files);
    outcome.unchanged = counts.unchanged;
    outcome.kept = counts.kept;
    outcome.deleted = counts.deleted;
    outcome.archived = counts.archived;
    outcome.archive_dir = (counts.archived > 0).then(|| shared.archive.clone());
    outcome.skipped = shared.progress.skipped();
    outcome.ownership_skipped |= !shared.as_root;
    Ok(outcome)
}

/// Remove a file, link or whole directory tree.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

struct Restorer<'a> {
    shared: &'a Arc<Shared>,
    pool: &'a rayon::ThreadPool,
    tokens: &'a crossbeam_channel::Sender<()>,
    token_rx: &'a crossbeam_channel::Receiver<()>,
    dirs: Vec<(PathBuf, Entry)>,
    /// Hard-link group → first restored path.
    links: HashMap<u64, PathBuf>,
    pending_links: Vec<(PathBuf, PathBuf)>,
}

impl Restorer<'_> {
    fn walk(&mut self, dir: &Path, entry: &Entry, vpath: &[u8]) -> Result<()> {
        let tree = self.shared.version.children(entry, vpath)?;
        // Before any file job of this directory starts: temporary files seen now are leftovers
        // of an interrupted run, not ours.
        let wanted: HashSet<&[u8]> = tree.entries.iter().map(|e| e.name.as_slice()).collect();
        self.absent(dir, &wanted);
        for child in &tree.entries {
            if self.shared.cancel.is_cancelled() {
                return Err(Error::Aborted);
            }
            let path = dir.join(OsStr::from_bytes(&child.name));
            let mut cv = vpath.to_vec();
            if cv.last() != Some(&b'/') {
                cv.push(b'/');
            }
            cv.extend_from_slice(&child.name);
            self.entry(&path, child, &cv)?;
        }
        Ok(())
    }

    /// Entries of `dir` the version does not have: leftovers of an interrupted checkout are
    /// removed; the rest follow the absent policy.
    fn absent(&mut self, dir: &Path, wanted: &HashSet<&[u8]>) {
        let Ok(listing) = std::fs::read_dir(dir) else { return };
        let at_root = dir == self.shared.dest;
        for ent in listing.flatten() {
            let name = ent.file_name();
            let name = name.as_bytes();
            if wanted.contains(name) || (at_root && name == ARCHIVE_DIR.as_bytes()) {
                continue;
            }
            let path = ent.path();
            if name.starts_with(TEMP_PREFIX.as_bytes()) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let s = self.shared;
            match s.opts.absent {
                AbsentPolicy::AbsentPreserve => {}
                AbsentPolicy::AbsentDelete => match remove_any(&path) {
                    Ok(()) => {
                        add(&s.progress.fs.fs_files_deleted, 1);
                        s.count(|c| c.deleted += 1);
                    }
                    Err(err) => {
                        s.progress.skip(path.display().to_string(), format!("cannot delete absent entry: {err}"))
                    }
                },
                AbsentPolicy::AbsentArchive => {
                    let rel = path.strip_prefix(&s.dest).unwrap_or(&path);
                    let to = s.archive.join(rel);
                    let moved = std::fs::create_dir_all(to.parent().unwrap_or(&s.archive))
                        .and_then(|_| std::fs::rename(&path, &to));
                    match moved {
                        Ok(()) => s.count(|c| c.archived += 1),
                        Err(err) => {
                            s.progress.skip(path.display().to_string(), format!("cannot archive absent entry: {err}"))
                        }
                    }
                }
            }
        }
    }

    /// Resolve an existing entry of another kind: `true` when the version's may be created.
    fn clear_conflict(&self, path: &Path, md: &std::fs::Metadata, e: &Entry) -> bool {
        if !self.shared.replaces(md, e) {
            self.shared.count(|c| c.kept += 1);
            return false;
        }
        match remove_any(path) {
            Ok(()) => true,
            Err(err) => {
                self.shared.progress.skip(path.display().to_string(), format!("cannot replace existing entry: {err}"));
                false
            }
        }
    }

    fn entry(&mut self, path: &Path, e: &Entry, vpath: &[u8]) -> Result<()> {
        let progress = &self.shared.progress;
        let skip =
            |what: &str, err: std::io::Error| progress.skip(path.display().to_string(), format!("{what}: {err}"));
        let existing = std::fs::symlink_metadata(path).ok();
        match e.kind {
            EntryKind::Dir => {
                if !existing.as_ref().is_some_and(|md| md.is_dir()) {
                    if let Some(md) = &existing {
                        if !self.clear_conflict(path, md, e) {
                            return Ok(());
                        }
                    }
                    if let Err(err) = std::fs::DirBuilder::new().mode(0o700).create(path) {
                        skip("cannot create directory", err);
                        return Ok(());
                    }
                    add(&progress.fs.fs_created_dirs, 1);
                }
                self.dirs.push((path.to_path_buf(), e.clone()));
                self.walk(path, e, vpath)?;
            }
            EntryKind::Symlink => {
                if let Some(md) = &existing {
                    let same = md.file_type().is_symlink()
                        && std::fs::read_link(path).map(|t| t.as_os_str().as_bytes() == e.target).unwrap_or(false);
                    if same {
                        self.shared.count(|c| c.unchanged += 1);
                        let _ = fsmeta::apply_metadata(path, e, self.shared.as_root);
                        return Ok(());
                    }
                    if !self.clear_conflict(path, md, e) {
                        return Ok(());
                    }
                }
                if let Err(err) = std::os::unix::fs::symlink(OsStr::from_bytes(&e.target), path) {
                    skip("cannot create symlink", err);
                    return Ok(());
                }
                let _ = fsmeta::apply_metadata(path, e, self.shared.as_root);
                add(&progress.fs.fs_created_files, 1);
            }
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Socket => {
                if let Some(md) = &existing {
                    if fsmeta::entry_from_metadata(&e.name, md).kind == e.kind && md.rdev() == e.rdev {
                        self.shared.count(|c| c.unchanged += 1);
                        let _ = fsmeta::apply_metadata(path, e, self.shared.as_root);
                        return Ok(());
                    }
                    if !self.clear_conflict(path, md, e) {
                        return Ok(());
                    }
                }
                if let Err(err) = fsmeta::make_node(path, e) {
                    skip("cannot create special file", err);
                    return Ok(());
                }
                if let Err(err) = fsmeta::apply_metadata(path, e, self.shared.as_root) {
                    skip("cannot set metadata", err);
                }
                add(&progress.fs.fs_created_files, 1);
            }
            EntryKind::File => {
                if let Some(g) = e.link_group {
                    if let Some(first) = self.links.get(&g) {
                        self.pending_links.push((first.clone(), path.to_path_buf()));
                        return Ok(());
                    }
                    self.links.insert(g, path.to_path_buf());
                }
                if let Some(md) = &existing {
                    if !md.is_file() && !self.clear_conflict(path, md, e) {
                        return Ok(());
                    }
                }
                self.tokens.send(()).map_err(|_| Error::Internal("token pool closed".into()))?;
                let shared = self.shared.clone();
                let token_rx = self.token_rx.clone();
                let (path, e) = (path.to_path_buf(), e.clone());
                self.pool.spawn(move || {
                    if !shared.cancel.is_cancelled() {
                        restore_file(&shared, &path, &e);
                    }
                    let _ = token_rx.recv();
                });
            }
        }
        Ok(())
    }
}

/// Whether the regular file at `path` holds exactly the entry's content: same size and mtime,
/// or else every piece hashes (holes: zeros) to the version's.
fn identical(path: &Path, md: &std::fs::Metadata, e: &Entry) -> bool {
    if md.len() != e.size {
        return false;
    }
    if (md.mtime(), md.mtime_nsec() as u32) == (e.mtime.sec, e.mtime.nsec) {
        return true;
    }
    let Ok(mut f) = File::open(path) else { return false };
    let mut buf = Vec::new();
    for piece in &e.content {
        buf.resize(piece.len() as usize, 0);
        if f.read_exact(&mut buf).is_err() {
            return false;
        }
        let same = match piece {
            Piece::Hole(_) => buf.iter().all(|&b| b == 0),
            Piece::Block(b) => BlockId::of(&buf) == b.id,
        };
        if !same {
            return false;
        }
    }
    true
}

/// Restore one regular file: compare with what is there, then temporary name, data, metadata,
/// rename.
fn restore_file(shared: &Shared, path: &Path, e: &Entry) {
    let progress = &shared.progress;
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.is_file() {
            if identical(path, &md, e) {
                shared.count(|c| c.unchanged += 1);
                add(&progress.fs.fs_files_dedup, 1);
                if let Err(err) = fsmeta::apply_metadata(path, e, shared.as_root) {
                    progress.skip(path.display().to_string(), format!("cannot set metadata: {err}"));
                }
                return;
            }
            if !shared.replaces(&md, e) {
                shared.count(|c| c.kept += 1);
                return;
            }
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
    let res = (|| -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|err| Error::io("create", &tmp, err))?;
        write_pieces(shared, &f, e, &tmp)?;
        f.set_len(e.size).map_err(|err| Error::io("truncate", &tmp, err))?;
        drop(f);
        fsmeta::apply_metadata(&tmp, e, shared.as_root).map_err(|err| Error::io("set metadata of", &tmp, err))?;
        std::fs::rename(&tmp, path).map_err(|err| Error::io("rename into place", path, err))?;
        Ok(())
    })();
    match res {
        Ok(()) => {
            add(&progress.fs.fs_created_files, 1);
        }
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            match err.root() {
                Error::Io { .. } | Error::Corrupt { .. } | Error::MissingObject { .. } => {
                    progress.skip(path.display().to_string(), err.to_string())
                }
                Error::Aborted => {}
                _ => shared.fail(err),
            }
        }
    }
}

fn write_pieces(shared: &Shared, f: &File, e: &Entry, tmp: &Path) -> Result<()> {
    let mut pos = 0u64;
    for piece in &e.content {
        if shared.cancel.is_cancelled() {
            return Err(Error::Aborted);
        }
        if let Piece::Block(b) = piece {
            let data = shared.version.repo.block_uncached(b).map_err(|e| shared.version.in_version(e))?;
            f.write_all_at(&data, pos).map_err(|err| Error::io("write", tmp, err))?;
            add(&shared.progress.fs.fs_files_bytes_written, data.len() as u64);
        }
        pos += piece.len();
    }
    Ok(())
}
