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
use std::io::Read;
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::catalog::Version;
use crate::error::{Error, Result};
use crate::format::{Entry, EntryKind, Piece};
use crate::ids::BlockId;
use crate::progress::{add, Progress};
use crate::source::{child, open_error, split};
use crate::target::Target;

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
    pub archive_dir: Option<String>,
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
    target: Arc<dyn Target>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    fatal: Mutex<Option<Error>>,
    chown: bool,
    opts: CheckoutOptions,
    /// Relative to the target's root.
    archive: Vec<u8>,
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

    fn skip(&self, rel: &[u8], why: impl Into<String>) {
        self.progress.skip(self.target.display(rel), why);
    }

    /// A target error on one entry: skipped with its reason, unless the target as a whole is
    /// gone (a remote server that stopped answering), which ends the checkout.
    fn io_error(&self, rel: &[u8], what: &str, err: std::io::Error) {
        if crate::source::fs_gone(&err) {
            self.fail(Error::FsUnavailable(format!("{}: {what}: {err}", self.target.display(rel))));
        } else {
            self.skip(rel, format!("{what}: {err}"));
        }
    }

    /// Whether a differing existing entry gives way to the version's.
    fn replaces(&self, existing: &Entry, e: &Entry) -> bool {
        match self.opts.modified {
            ModifiedPolicy::ModifiedReplace => true,
            ModifiedPolicy::ModifiedKeepExisting => false,
            ModifiedPolicy::ModifiedKeepNewer => existing.mtime <= e.mtime,
        }
    }
}

/// Restore `opts.path` of `version` into `target` (a local directory, an NFS export, …;
/// created if absent; may hold data).
///
/// # Errors
/// [`Error::InvalidArgument`] for a target that is not a directory; [`Error::Aborted`] when
/// cancelled (every file is then either its previous content or the complete new one);
/// [`Error::FsUnavailable`] when the target stops answering; store errors. Files that cannot
/// be written or whose data is corrupt are skipped and listed.
#[tracing::instrument(skip_all, fields(version = %version.manifest.version_id, dest = %target.display(b"")))]
pub fn checkout(
    version: &Version,
    target: Arc<dyn Target>,
    opts: &CheckoutOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<CheckoutOutcome> {
    let sub = opts.path.clone().unwrap_or_else(|| b"/".to_vec());
    let start = version.lookup(&sub)?;
    target.prepare_root().map_err(|e| open_error(&format!("checkout target {}", target.display(b"")), &e))?;
    let version = Version::new(version.repo.with_progress(progress.clone()), version.manifest.clone());
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let shared = Arc::new(Shared {
        version,
        chown: target.can_chown(),
        target,
        progress: progress.clone(),
        cancel: cancel.clone(),
        fatal: Mutex::new(None),
        opts: opts.clone(),
        archive: child(ARCHIVE_DIR.as_bytes(), stamp.as_bytes()),
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
        r.dirs.push((Vec::new(), start.clone()));
        r.walk(b"", &start, &sub, false)
    } else {
        r.entry(&start.name.clone(), &start, &sub, false)
    };
    // Wait for every file job: take back all tokens.
    for _ in 0..threads * 8 {
        let _ = tokens.send(());
    }
    if let Some(e) = shared.fatal.lock().expect("fatal slot poisoned").take() {
        return Err(e);
    }
    walked?;
    if cancel.is_cancelled() {
        return Err(Error::Aborted);
    }
    let mut outcome = CheckoutOutcome::default();
    let t = &shared.target;
    for (first, rel, e) in std::mem::take(&mut r.pending_links) {
        if let (Ok(Some(a)), Ok(Some(b))) = (t.stat(&first), t.stat(&rel)) {
            if a.inode == b.inode && a.dev == b.dev {
                shared.count(|c| c.unchanged += 1);
                continue;
            }
            if let Err(err) = t.remove_all(&rel) {
                shared.io_error(&rel, "cannot replace with a hard link", err);
                continue;
            }
        }
        match t.hard_link(&first, &rel) {
            Ok(()) => add(&shared.progress.fs.fs_created_files, 1),
            // A target without hard links gets a copy: the content is not lost.
            Err(err) if err.kind() == std::io::ErrorKind::Unsupported => restore_file(&shared, &rel, &e, false),
            Err(err) => shared.io_error(&rel, "cannot create hard link", err),
        }
    }
    // Directories: children first (reverse creation order).
    for (rel, e) in r.dirs.iter().rev() {
        match t.apply_metadata(rel, e, shared.chown) {
            Ok(n) => outcome.ownership_skipped |= n.ownership_skipped,
            Err(err) => shared.io_error(rel, "cannot set directory metadata", err),
        }
    }
    if let Some(e) = shared.fatal.lock().expect("fatal slot poisoned").take() {
        return Err(e);
    }
    let counts = shared.counts.lock().expect("counts poisoned");
    outcome.dirs = r.dirs.len() as u64;
    outcome.bytes = crate::progress::get(&shared.progress.fs.fs_files_bytes_written);
    outcome.files = crate::progress::get(&shared.progress.fs.fs_created_files);
    outcome.unchanged = counts.unchanged;
    outcome.kept = counts.kept;
    outcome.deleted = counts.deleted;
    outcome.archived = counts.archived;
    outcome.archive_dir = (counts.archived > 0).then(|| t.display(&shared.archive));
    outcome.skipped = shared.progress.skipped();
    outcome.ownership_skipped |= !shared.chown;
    Ok(outcome)
}

/// A hard link to make once every file is written: (first path of the group, this path, entry).
type PendingLink = (Vec<u8>, Vec<u8>, Entry);

struct Restorer<'a> {
    shared: &'a Arc<Shared>,
    pool: &'a rayon::ThreadPool,
    tokens: &'a crossbeam_channel::Sender<()>,
    token_rx: &'a crossbeam_channel::Receiver<()>,
    dirs: Vec<(Vec<u8>, Entry)>,
    /// Hard-link group → first restored path.
    links: HashMap<u64, Vec<u8>>,
    pending_links: Vec<PendingLink>,
}

impl Restorer<'_> {
    /// Restore the children of directory `dir`. `created`: this checkout just made it, so it
    /// is empty.
    fn walk(&mut self, dir: &[u8], entry: &Entry, vpath: &[u8], created: bool) -> Result<()> {
        let tree = self.shared.version.children(entry, vpath)?;
        // Before any file job of this directory starts: temporary files seen now are leftovers
        // of an interrupted run, not ours. In an empty directory nothing needs comparing, so
        // its entries are not looked up one by one (most of a restore into an empty target).
        let fresh = created || {
            let wanted: HashSet<&[u8]> = tree.entries.iter().map(|e| e.name.as_slice()).collect();
            self.absent(dir, &wanted)
        };
        for c in &tree.entries {
            if self.shared.cancel.is_cancelled() {
                return Err(Error::Aborted);
            }
            let mut cv = vpath.to_vec();
            if cv.last() != Some(&b'/') {
                cv.push(b'/');
            }
            cv.extend_from_slice(&c.name);
            self.entry(&child(dir, &c.name), c, &cv, fresh)?;
        }
        Ok(())
    }

    /// Entries of `dir` the version does not have: leftovers of an interrupted checkout are
    /// removed; the rest follow the absent policy. Says whether `dir` was empty.
    fn absent(&mut self, dir: &[u8], wanted: &HashSet<&[u8]>) -> bool {
        let s = self.shared;
        let t = &s.target;
        let listing = match t.list(dir) {
            Ok(l) => l,
            Err(err) => {
                s.io_error(dir, "cannot list directory", err);
                return false;
            }
        };
        let empty = listing.is_empty();
        for name in listing {
            if wanted.contains(name.as_slice()) || (dir.is_empty() && name == ARCHIVE_DIR.as_bytes()) {
                continue;
            }
            let rel = child(dir, &name);
            if name.starts_with(TEMP_PREFIX.as_bytes()) {
                let _ = t.remove_all(&rel);
                continue;
            }
            match s.opts.absent {
                AbsentPolicy::AbsentPreserve => {}
                AbsentPolicy::AbsentDelete => match t.remove_all(&rel) {
                    Ok(()) => {
                        add(&s.progress.fs.fs_files_deleted, 1);
                        s.count(|c| c.deleted += 1);
                    }
                    Err(err) => s.io_error(&rel, "cannot delete absent entry", err),
                },
                AbsentPolicy::AbsentArchive => {
                    let to = child(&s.archive, &rel);
                    match t.mkdir_all(split(&to).0).and_then(|_| t.rename(&rel, &to)) {
                        Ok(()) => s.count(|c| c.archived += 1),
                        Err(err) => s.io_error(&rel, "cannot archive absent entry", err),
                    }
                }
            }
        }
        empty
    }

    /// Resolve an existing entry of another kind: `true` when the version's may be created.
    fn clear_conflict(&self, rel: &[u8], existing: &Entry, e: &Entry) -> bool {
        if !self.shared.replaces(existing, e) {
            self.shared.count(|c| c.kept += 1);
            return false;
        }
        match self.shared.target.remove_all(rel) {
            Ok(()) => true,
            Err(err) => {
                self.shared.io_error(rel, "cannot replace existing entry", err);
                false
            }
        }
    }

    /// Restore one entry; `fresh`: its directory was empty, so nothing is at `rel`.
    fn entry(&mut self, rel: &[u8], e: &Entry, vpath: &[u8], fresh: bool) -> Result<()> {
        let s = self.shared;
        let t = &s.target;
        let progress = &s.progress;
        let existing = match if fresh { Ok(None) } else { t.stat(rel) } {
            Ok(x) => x,
            Err(err) => {
                s.io_error(rel, "cannot inspect", err);
                return Ok(());
            }
        };
        match e.kind {
            EntryKind::Dir => {
                let create = !existing.as_ref().is_some_and(|x| x.kind == EntryKind::Dir);
                if create {
                    if let Some(x) = &existing {
                        if !self.clear_conflict(rel, x, e) {
                            return Ok(());
                        }
                    }
                    if let Err(err) = t.mkdir(rel) {
                        s.io_error(rel, "cannot create directory", err);
                        return Ok(());
                    }
                    add(&progress.fs.fs_created_dirs, 1);
                }
                self.dirs.push((rel.to_vec(), e.clone()));
                self.walk(rel, e, vpath, create)?;
            }
            EntryKind::Symlink => {
                if let Some(x) = &existing {
                    let same = x.kind == EntryKind::Symlink && t.read_link(rel).is_ok_and(|l| l == e.target);
                    if same {
                        s.count(|c| c.unchanged += 1);
                        let _ = t.apply_metadata(rel, e, s.chown);
                        return Ok(());
                    }
                    if !self.clear_conflict(rel, x, e) {
                        return Ok(());
                    }
                }
                if let Err(err) = t.symlink(&e.target, rel) {
                    s.io_error(rel, "cannot create symlink", err);
                    return Ok(());
                }
                let _ = t.apply_metadata(rel, e, s.chown);
                add(&progress.fs.fs_created_files, 1);
            }
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Socket => {
                if let Some(x) = &existing {
                    if x.kind == e.kind && x.rdev == e.rdev {
                        s.count(|c| c.unchanged += 1);
                        let _ = t.apply_metadata(rel, e, s.chown);
                        return Ok(());
                    }
                    if !self.clear_conflict(rel, x, e) {
                        return Ok(());
                    }
                }
                if let Err(err) = t.mknod(rel, e) {
                    s.io_error(rel, "cannot create special file", err);
                    return Ok(());
                }
                if let Err(err) = t.apply_metadata(rel, e, s.chown) {
                    s.io_error(rel, "cannot set metadata", err);
                }
                add(&progress.fs.fs_created_files, 1);
            }
            EntryKind::File => {
                if let Some(g) = e.link_group {
                    if let Some(first) = self.links.get(&g) {
                        self.pending_links.push((first.clone(), rel.to_vec(), e.clone()));
                        return Ok(());
                    }
                    self.links.insert(g, rel.to_vec());
                }
                if let Some(x) = &existing {
                    if x.kind != EntryKind::File && !self.clear_conflict(rel, x, e) {
                        return Ok(());
                    }
                }
                self.tokens.send(()).map_err(|_| Error::Internal("token pool closed".into()))?;
                let shared = self.shared.clone();
                let token_rx = self.token_rx.clone();
                let (rel, e) = (rel.to_vec(), e.clone());
                self.pool.spawn(move || {
                    if !shared.cancel.is_cancelled() {
                        restore_file(&shared, &rel, &e, fresh);
                    }
                    let _ = token_rx.recv();
                });
            }
        }
        Ok(())
    }
}

/// Whether the regular file at `rel` holds exactly the entry's content: same size and mtime,
/// or else every piece hashes (holes: zeros) to the version's.
fn identical(t: &dyn Target, rel: &[u8], existing: &Entry, e: &Entry) -> bool {
    if existing.size != e.size {
        return false;
    }
    if existing.mtime == e.mtime {
        return true;
    }
    let Ok(mut f) = t.open_read(rel) else { return false };
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

/// Restore one regular file: compare with what is there (unless its directory was empty:
/// `fresh`), then temporary name, data, metadata, rename.
fn restore_file(shared: &Shared, rel: &[u8], e: &Entry, fresh: bool) {
    let t = &*shared.target;
    let progress = &shared.progress;
    if let Some(Ok(Some(x))) = (!fresh).then(|| t.stat(rel)) {
        if x.kind == EntryKind::File {
            if identical(t, rel, &x, e) {
                shared.count(|c| c.unchanged += 1);
                add(&progress.fs.fs_files_dedup, 1);
                if let Err(err) = t.apply_metadata(rel, e, shared.chown) {
                    shared.io_error(rel, "cannot set metadata", err);
                }
                return;
            }
            if !shared.replaces(&x, e) {
                shared.count(|c| c.kept += 1);
                return;
            }
        }
    }
    let tmp = child(split(rel).0, format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()).as_bytes());
    let io = |what: &'static str, err: std::io::Error| (what, err);
    let res = (|| -> Result<(), Failure> {
        let mut f = t.create_new(&tmp).map_err(|err| Failure::Io(io("cannot create", err)))?;
        write_pieces(shared, &mut *f, e)?;
        f.finish(e.size, e, shared.chown).map_err(|err| Failure::Io(io("cannot finish writing", err)))?;
        t.rename(&tmp, rel).map_err(|err| Failure::Io(io("cannot rename into place", err)))?;
        Ok(())
    })();
    match res {
        Ok(()) => add(&progress.fs.fs_created_files, 1),
        Err(failure) => {
            let _ = t.remove_all(&tmp);
            match failure {
                Failure::Io((what, err)) => shared.io_error(rel, what, err),
                Failure::Store(err) => match err.root() {
                    Error::Corrupt { .. } | Error::MissingObject { .. } => shared.skip(rel, err.to_string()),
                    Error::Aborted => {}
                    _ => shared.fail(err),
                },
            }
        }
    }
}

/// Why a file could not be restored: the target (skip it, or stop when the target is gone)
/// or the store.
enum Failure {
    Io((&'static str, std::io::Error)),
    Store(Error),
}

fn write_pieces(shared: &Shared, f: &mut dyn crate::target::TargetFile, e: &Entry) -> Result<(), Failure> {
    let mut pos = 0u64;
    for piece in &e.content {
        if shared.cancel.is_cancelled() {
            return Err(Failure::Store(Error::Aborted));
        }
        if let Piece::Block(b) = piece {
            let data =
                shared.version.repo.block_uncached(b).map_err(|e| Failure::Store(shared.version.in_version(e)))?;
            f.write_at(&data, pos).map_err(|err| Failure::Io(("cannot write", err)))?;
            add(&shared.progress.fs.fs_files_bytes_written, data.len() as u64);
        }
        pos += piece.len();
    }
    Ok(())
}
