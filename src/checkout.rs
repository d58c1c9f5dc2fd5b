//! Checkout: restore a version (or a sub-tree of it) into an empty directory with full metadata.
//!
//! Files are restored by a pool of workers (bounded queue), each written under a temporary
//! name in its final directory and renamed when complete, so no file is ever visible
//! half-written under its final name. Holes and all-zero blocks are not written (the file stays
//! sparse). Directory metadata is applied after their children; hard links are made last.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;
use tokio_util::sync::CancellationToken;

use crate::catalog::Version;
use crate::error::{Error, Result};
use crate::format::{Entry, EntryKind, Piece};
use crate::fsmeta;
use crate::progress::{add, Progress};

/// Options of a checkout.
#[derive(Clone, Debug, Default)]
pub struct CheckoutOptions {
    /// Sub-path of the version to restore (`/` when `None`).
    pub path: Option<Vec<u8>>,
    /// Worker threads; 0 means two per CPU (restores wait on storage as much as on CPU).
    pub threads: usize,
}

/// What a checkout did.
#[derive(Clone, Debug, Default)]
pub struct CheckoutOutcome {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Entries that could not be restored, with the reason; everything else was.
    pub skipped: Vec<crate::format::Skipped>,
    /// Ownership was not restored (not running as root).
    pub ownership_skipped: bool,
}

struct Shared {
    version: Version,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    fatal: Mutex<Option<Error>>,
    as_root: bool,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut f = self.fatal.lock().expect("fatal slot poisoned");
        if f.is_none() {
            *f = Some(e);
        }
        self.cancel.cancel();
    }
}

/// Restore `opts.path` of `version` into `dest`, which must be empty or absent.
///
/// # Errors
/// [`Error::InvalidArgument`] when `dest` is not empty; [`Error::Aborted`] when cancelled;
/// store errors. Files that cannot be written or whose data is corrupt are skipped and listed.
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
    match std::fs::read_dir(dest) {
        Ok(mut d) => {
            if d.next().is_some() {
                return Err(Error::InvalidArgument(format!(
                    "checkout target {} is not empty (restoring into a live directory is not supported yet)",
                    dest.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest).map_err(|e| Error::io("create checkout target", dest, e))?
        }
        Err(e) => return Err(Error::io("open checkout target", dest, e)),
    }
    let version = Version::new(version.repo.with_progress(progress.clone()), version.manifest.clone());
    let shared = Arc::new(Shared {
        version,
        progress: progress.clone(),
        cancel: cancel.clone(),
        fatal: Mutex::new(None),
        as_root: fsmeta::is_root(),
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
        outcome: CheckoutOutcome::default(),
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
    let mut outcome = std::mem::take(&mut r.outcome);
    walked?;
    if let Some(e) = shared.fatal.lock().expect("fatal slot poisoned").take() {
        return Err(e);
    }
    if cancel.is_cancelled() {
        return Err(Error::Aborted);
    }
    for (target, path) in std::mem::take(&mut r.pending_links) {
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
    outcome.dirs = r.dirs.len() as u64;
    outcome.bytes = crate::progress::get(&shared.progress.fs.fs_files_bytes_written);
    outcome.files = crate::progress::get(&shared.progress.fs.fs_created_files);
    outcome.skipped = shared.progress.skipped();
    outcome.ownership_skipped |= !shared.as_root;
    Ok(outcome)
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
    outcome: CheckoutOutcome,
}

impl Restorer<'_> {
    fn walk(&mut self, dir: &Path, entry: &Entry, vpath: &[u8]) -> Result<()> {
        let tree = self.shared.version.children(entry, vpath)?;
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

    fn entry(&mut self, path: &Path, e: &Entry, vpath: &[u8]) -> Result<()> {
        let progress = &self.shared.progress;
        let skip =
            |what: &str, err: std::io::Error| progress.skip(path.display().to_string(), format!("{what}: {err}"));
        match e.kind {
            EntryKind::Dir => {
                if let Err(err) = std::fs::DirBuilder::new().mode(0o700).create(path) {
                    skip("cannot create directory", err);
                    return Ok(());
                }
                add(&progress.fs.fs_created_dirs, 1);
                self.dirs.push((path.to_path_buf(), e.clone()));
                self.walk(path, e, vpath)?;
            }
            EntryKind::Symlink => {
                if let Err(err) = std::os::unix::fs::symlink(OsStr::from_bytes(&e.target), path) {
                    skip("cannot create symlink", err);
                    return Ok(());
                }
                let _ = fsmeta::apply_metadata(path, e, self.shared.as_root);
                add(&progress.fs.fs_created_files, 1);
            }
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Socket => {
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

/// Restore one regular file: temporary name, data, metadata, rename.
fn restore_file(shared: &Shared, path: &Path, e: &Entry) {
    let progress = &shared.progress;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".ccfs-part-{:016x}", rand::random::<u64>()));
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
            match err {
                Error::Io { .. } | Error::Corrupt { .. } | Error::MissingObject { .. } => {
                    progress.skip(path.display().to_string(), err.to_string())
                }
                Error::Aborted => {}
                other => shared.fail(other),
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
