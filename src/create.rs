//! Version create: scan a directory tree and commit it as a new version.
//!
//! Pipeline (bounded end to end):
//! - a walker thread lists directories in sorted order, reuses unchanged files from the parent
//!   version, and sends one event per entry into a bounded queue; files to read become jobs on
//!   a thread pool of `threads` workers;
//! - workers read, chunk, hash, deduplicate and compress blocks (batches of blocks of one file
//!   are compressed in parallel) and append new ones to the data pack writer;
//! - the assembler (the calling thread) takes events in order, waits for each file's job,
//!   builds each directory's tree when the directory is complete and appends new trees to the
//!   tree pack writer;
//! - sealed packs are uploaded with bounded parallelism.
//!
//! Commit writes the index, the stats and finally the manifest (create-if-absent).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::chunker::{chunk_stream, ChunkParams};
use crate::codec::{self, ObjectKind};
use crate::error::{Error, Result};
use crate::format::{
    BlobEntry, BlockRef, Entry, EntryKind, IndexFile, Loc, Manifest, Piece, Tree, TreeDelta, TreeRef, VersionStats,
};
use crate::ids::{validate_branch, BlockId, PackKind, TreeId, VersionId};
use crate::pack::{compress, PackWriter, Uploader};
use crate::progress::{add, Progress};
use crate::repo::Repo;
use crate::source::{child, fs_gone, open_error, Listed, Source, SourceFile};

/// Options of a version create.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Branch of the new version (default `main`).
    pub branch: String,
    /// Parent version; `None` means the newest version of the branch, if any.
    pub parent: Option<VersionId>,
    /// Do not use any parent (read every file).
    pub no_parent: bool,
    /// Version description (the API's `version_desc`).
    pub desc: String,
    /// Worker threads for reading, hashing and compressing; 0 means one per CPU.
    pub threads: usize,
    /// Time-to-live of the create's lease (renewed every quarter of it; see `lease`).
    pub lease_ttl: std::time::Duration,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            branch: "main".into(),
            parent: None,
            no_parent: false,
            desc: String::new(),
            threads: 0,
            lease_ttl: crate::lease::DEFAULT_TTL,
        }
    }
}

/// What a create produced.
#[derive(Clone, Debug)]
pub struct CreateOutcome {
    pub manifest: Manifest,
    pub stats: VersionStats,
}

/// Deduplication map: blob id → where it lives. A slot is claimed by the first writer; others
/// wait on it, so a block is written once even when two files hold it at the same time. The
/// store's known blobs are loaded on first use, so a create that finds nothing new (all files
/// and directories unchanged) reads no index at all.
struct Dedup {
    slots: Mutex<Option<HashMap<[u8; 32], Slot>>>,
    repo: Repo,
}

/// A blob's location once written; `None` when its write failed.
type Slot = Arc<OnceLock<Option<Loc>>>;

impl Dedup {
    fn new(repo: Repo) -> Self {
        Dedup { slots: Mutex::new(None), repo }
    }

    fn load(known: HashMap<[u8; 32], BlobEntry>) -> HashMap<[u8; 32], Slot> {
        known
            .into_iter()
            .map(|(id, b)| {
                let cell = OnceLock::new();
                let _ = cell.set(Some(b.loc));
                (id, Arc::new(cell))
            })
            .collect()
    }

    /// The location of `id`, writing it with `write` if this call is the first to need it.
    /// Returns whether this call wrote it.
    fn get_or_write(&self, id: [u8; 32], write: impl FnOnce() -> Result<Loc>) -> Result<(Loc, bool)> {
        let cell = {
            let mut slots = self.slots.lock().expect("dedup map poisoned");
            if slots.is_none() {
                *slots = Some(Self::load(self.repo.known_blobs()?));
            }
            slots.as_mut().expect("loaded above").entry(id).or_default().clone()
        };
        let mut wrote = false;
        let mut err = None;
        let loc = cell.get_or_init(|| match write() {
            Ok(l) => {
                wrote = true;
                Some(l)
            }
            Err(e) => {
                err = Some(e);
                None
            }
        });
        match (loc, err) {
            (_, Some(e)) => Err(e),
            (Some(l), None) => Ok((*l, wrote)),
            (None, None) => Err(Error::Internal(format!("blob {} failed to write earlier", hex::encode(id)))),
        }
    }
}

/// Shared state of one create.
struct Ctx {
    repo: Repo,
    src: Arc<dyn Source>,
    params: ChunkParams,
    dedup: Dedup,
    data: PackWriter,
    trees: PackWriter,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    /// Hashing and compression of large files' blocks; never blocks on I/O.
    cpu: rayon::ThreadPool,
    /// Background fetches of the parent version's trees.
    prefetch: rayon::ThreadPool,
    new_blocks: std::sync::atomic::AtomicU64,
    new_block_bytes: std::sync::atomic::AtomicU64,
    /// Bounds the large files read at once.
    large_files: Gate,
    /// Reusable chunking buffers (one per running file job).
    buffers: Mutex<Vec<Vec<u8>>>,
    /// Tells garbage collection this create may still commit references to what it reads.
    lease: crate::lease::Lease,
}

/// A counting semaphore: at most `n` holders at once.
struct Gate {
    free: Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Gate {
    fn new(n: usize) -> Gate {
        Gate { free: Mutex::new(n.max(1)), freed: std::sync::Condvar::new() }
    }

    fn enter(&self) -> GateSlot<'_> {
        let mut free = self.free.lock().expect("gate poisoned");
        while *free == 0 {
            free = self.freed.wait(free).expect("gate poisoned");
        }
        *free -= 1;
        GateSlot(self)
    }
}

struct GateSlot<'a>(&'a Gate);

impl Drop for GateSlot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("gate poisoned") += 1;
        self.0.freed.notify_one();
    }
}

/// Result of reading one file.
struct FileResult {
    content: Vec<Piece>,
    size: u64,
}

/// Why a file job did not produce content.
enum JobError {
    /// The file could not be read: skip it, keep going.
    Skip(String),
    /// The whole create must stop.
    Fatal(Error),
}

enum Event {
    /// A directory begins; with its tree in the parent version, if it had one.
    Enter(Entry, Option<TreeRef>),
    Leaf(Entry),
    File(Entry, Receiver<Result<FileResult, JobError>>),
    /// A further hard link to a group whose first member came earlier.
    Link(Entry),
    Leave,
    /// The walker could not continue.
    Failed(Error),
}

/// Scan `src` (a local directory, an NFS export, …) and commit it as a new version of `repo`.
///
/// Files that cannot be read are skipped and listed in the outcome's stats; they never abort
/// the version. A cancelled or failed create leaves no version; packs it uploaded are reused by
/// the next create.
///
/// # Errors
/// [`Error::InvalidArgument`] when `src` is not a readable directory, [`Error::Aborted`] when
/// cancelled, store errors.
#[tracing::instrument(skip_all, fields(src = %src.display(b""), branch = %opts.branch))]
pub fn create_version(
    repo: &Repo,
    src: Arc<dyn Source>,
    opts: &CreateOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<CreateOutcome> {
    validate_branch(&opts.branch)?;
    let root = src.root().map_err(|e| source_error(&*src, e))?;
    let push_start = crate::time::now_display();
    let scan_start_micros = crate::time::now_micros();
    let repo = repo.with_progress(progress.clone());
    // Before anything is read from the store: gc must know this create may use what it sees.
    let lease = crate::lease::Lease::acquire(repo.store(), crate::lease::LeaseKind::Create, opts.lease_ttl)?;

    let parent = if opts.no_parent {
        None
    } else if let Some(p) = &opts.parent {
        Some(repo.manifest(p)?)
    } else {
        repo.latest(&opts.branch)?
    };
    // Files changed less than the source's timestamp margin before the parent's scan may have
    // changed again within the same timestamp tick: read them again.
    let parent_scan = parent.as_ref().map_or(0, |m| m.scan_start_micros);
    let reuse_before = parent_scan.saturating_sub(src.timestamp_margin_micros());
    // File systems that keep whole seconds (or coarser: FAT's two) get a wider margin.
    let reuse_before_coarse = parent_scan.saturating_sub(COARSE_MARGIN_MICROS);
    let parent_root: Option<Entry> = match &parent {
        Some(m) => repo.tree(&m.root)?.entries.first().cloned(),
        None => None,
    };

    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Reading many small files is bound by I/O latency: more readers than cores pay off.
    let threads = if opts.threads == 0 { 4 * cpus } else { opts.threads };
    let uploader = Arc::new(Uploader::new(repo.store().clone(), MAX_UPLOADS));
    let config = repo.config().clone();
    let ctx = Arc::new(Ctx {
        params: ChunkParams::of(&config),
        dedup: Dedup::new(repo.clone()),
        data: PackWriter::new(PackKind::Data, config.pack_size as usize, uploader.clone()),
        trees: PackWriter::new(PackKind::Tree, (config.pack_size as usize / 4).max(1 << 20), uploader.clone()),
        progress: progress.clone(),
        cancel: cancel.clone(),
        cpu: rayon::ThreadPoolBuilder::new()
            .num_threads(cpus.min(threads))
            .thread_name(|i| format!("ccfs-cpu-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("thread pool: {e}")))?,
        prefetch: rayon::ThreadPoolBuilder::new()
            .num_threads(PREFETCH_THREADS)
            .thread_name(|i| format!("ccfs-prefetch-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("thread pool: {e}")))?,
        new_blocks: Default::default(),
        new_block_bytes: Default::default(),
        buffers: Mutex::new(Vec::new()),
        large_files: Gate::new(cpus),
        repo: repo.clone(),
        src: src.clone(),
        lease,
    });

    // File jobs go to `threads` reader threads through a bounded queue.
    let (job_tx, job_rx) = bounded::<Job>(threads * 4);
    let mut readers = Vec::with_capacity(threads);
    for i in 0..threads {
        let (ctx, job_rx) = (ctx.clone(), job_rx.clone());
        let h = std::thread::Builder::new()
            .name(format!("ccfs-read-{i}"))
            .spawn(move || {
                for job in job_rx {
                    let res = if ctx.cancel.is_cancelled() {
                        Err(JobError::Fatal(Error::Aborted))
                    } else {
                        read_file(&ctx, &job.path, &job.entry)
                    };
                    if let Err(JobError::Skip(r)) = &res {
                        ctx.progress.skip(ctx.src.display(&job.path), r.clone());
                    }
                    let _ = job.reply.send(res);
                }
            })
            .map_err(|e| Error::Internal(format!("reader thread: {e}")))?;
        readers.push(h);
    }
    drop(job_rx);

    let (tx, rx) = bounded::<Event>(4096);
    let walker = {
        let ctx = ctx.clone();
        std::thread::Builder::new()
            .name("ccfs-walk".into())
            .spawn(move || {
                let mut w = Walker {
                    ctx: &ctx,
                    tx: &tx,
                    jobs: job_tx,
                    links: HashMap::new(),
                    reuse_before,
                    reuse_before_coarse,
                };
                if let Err(e) = w.walk_root(root, parent_root) {
                    let _ = tx.send(Event::Failed(e));
                }
            })
            .map_err(|e| Error::Internal(format!("walker thread: {e}")))?
    };

    let mut stats = VersionStats::default();
    let assembled = assemble(&ctx, &rx, &mut stats);
    drop(rx);
    let _ = walker.join();
    for h in readers {
        let _ = h.join();
    }
    let root_entry = match assembled {
        Ok(r) => r,
        Err(e) => {
            let _ = ctx.data.flush();
            let _ = ctx.trees.flush();
            let _ = uploader.finish();
            return Err(e);
        }
    };

    // The catalog: a tree holding the root directory's entry.
    let (catalog, _) =
        write_tree(&ctx, &Tree { entries: vec![root_entry], base: None }, parent.as_ref().map(|m| m.root))?;
    ctx.data.flush()?;
    ctx.trees.flush()?;
    uploader.finish()?;
    if cancel.is_cancelled() {
        return Err(Error::Aborted);
    }
    commit(&ctx, opts, parent.as_deref(), catalog, (push_start, scan_start_micros), stats)
}

/// The margin for entries whose timestamps are whole seconds (file systems with one- or
/// two-second granularity).
const COARSE_MARGIN_MICROS: u64 = 3_000_000;
/// Threads fetching the parent version's trees ahead of the walk.
const PREFETCH_THREADS: usize = 8;
/// Packs being uploaded at once (each up to the pack size in memory).
const MAX_UPLOADS: usize = 3;
/// Files up to this size are read whole into an exact-size buffer.
const SMALL_FILE: u64 = 1 << 20;

/// A file for a reader thread.
struct Job {
    /// Relative to the source's root.
    path: Vec<u8>,
    entry: Entry,
    reply: Sender<Result<FileResult, JobError>>,
}

fn commit(
    ctx: &Ctx,
    opts: &CreateOptions,
    parent: Option<&Manifest>,
    catalog: TreeRef,
    (push_start, scan_start_micros): (String, u64),
    mut stats: VersionStats,
) -> Result<CreateOutcome> {
    let store = ctx.repo.store();
    let uid = uuid::Uuid::new_v4().to_string();
    let (mut packs, mut blobs, mut object_bytes) = ctx.data.written();
    let (tpacks, tblobs, tbytes) = ctx.trees.written();
    packs.extend(tpacks);
    blobs.extend(tblobs);
    object_bytes += tbytes;

    let index = codec::encode_object(ObjectKind::Index, &IndexFile { packs, blobs });
    object_bytes += index.len() as u64;
    store.put(&format!("index/{uid}"), Bytes::from(index))?;

    stats.skipped = ctx.progress.skipped();
    stats.new_blocks = ctx.new_blocks.load(std::sync::atomic::Ordering::Relaxed);
    stats.new_block_bytes = ctx.new_block_bytes.load(std::sync::atomic::Ordering::Relaxed);
    // Stats and manifest are small JSON objects; count a generous fixed estimate for them so the
    // stats object can state its own size.
    let fixed = 4096;
    stats.version_object_data = object_bytes + fixed;
    stats.diff_data_reduction = crate::format::ratio(stats.diff_file_data, stats.version_object_data);
    stats.total_data_reduction = crate::format::ratio(stats.fs_total_data, stats.version_object_data);
    let stats_json = serde_json::to_vec_pretty(&stats).expect("stats serialize");
    store.put(&format!("stats/{uid}"), Bytes::from(stats_json))?;

    // A create whose lease lapsed may refer to data a gc has since deleted.
    ctx.lease.ensure_valid()?;
    let start = crate::time::now_micros();
    for micros in start..start + 1000 {
        let version_id = VersionId { bucket: store.bucket().to_string(), branch: opts.branch.clone(), micros };
        let manifest = Manifest {
            format_version: ctx.repo.config().format_version,
            version_id: version_id.clone(),
            version_uid: uid.clone(),
            ccfs_srv_uid: ctx.repo.config().store_uuid.clone(),
            branch_name: opts.branch.clone(),
            parent_id: parent.map(|p| p.version_id.clone()),
            catalog_file_id: format!("catalog_{}", catalog.id),
            index_file_id: format!("index_{uid}"),
            stat_file_id: format!("stat_{uid}"),
            block_size: ctx.repo.config().block_size,
            hash_type: ctx.repo.config().hash_type.clone(),
            push_start_time: push_start.clone(),
            push_end_time: crate::time::now_display(),
            version_desc: opts.desc.clone(),
            source: ctx.src.display(b""),
            scan_start_micros,
            root: catalog,
        };
        let body = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        if store.put_if_absent(&version_id.manifest_path(), Bytes::from(body))? {
            tracing::info!(version = %version_id, "version committed");
            return Ok(CreateOutcome { manifest, stats });
        }
    }
    Err(Error::Internal("could not find a free version id".into()))
}

/// Encode a tree and store it unless the store has it already; says whether it was new. A tree
/// equal to the parent version's (`prev`) is that tree: no lookup needed.
fn write_tree(ctx: &Ctx, tree: &Tree, prev: Option<TreeRef>) -> Result<(TreeRef, bool)> {
    let format = ctx.repo.config().format_version;
    let mut delta = None;
    if let Some(p) = prev.filter(|_| format >= 2) {
        match against_parent(ctx, tree, p) {
            Ok(Against::Same) => return Ok((p, false)),
            Ok(Against::Delta(raw)) => delta = Some(raw),
            Ok(Against::Full) => {}
            Err(e) => {
                tracing::warn!(tree = %p.id, error = %e, "parent version's tree unreadable: writing the directory in full")
            }
        }
    }
    let raw = delta.unwrap_or_else(|| codec::encode_tree(tree, format));
    let id = TreeId::of(&raw);
    if let Some(p) = prev.filter(|p| p.id == id) {
        return Ok((p, false));
    }
    let raw_len =
        u32::try_from(raw.len()).map_err(|_| Error::InvalidArgument("directory too large (tree over 4 GiB)".into()))?;
    let (loc, wrote) = ctx.dedup.get_or_write(id.0, || {
        let (codec, stored) = compress(crate::format::CompressionMethod::Zstd, TREE_ZSTD_LEVEL, &raw);
        ctx.trees.add(id.0, raw_len, codec, &stored)
    })?;
    Ok((TreeRef { id, raw_len, loc }, wrote))
}

/// Smallest directory (in [`Tree::cost`] units) worth storing as a delta: below it, the second
/// read a delta costs outweighs the bytes it saves.
const MIN_DELTA_TREE_COST: usize = 64;

/// How a directory compares with its parent version's tree.
enum Against {
    /// Equal: the parent's tree is this tree.
    Same,
    /// Worth storing as this encoded delta.
    Delta(Vec<u8>),
    /// To be written in full.
    Full,
}

/// How to store `tree` given its parent version's tree `prev` (format version 2): the delta
/// from the parent's full tree (the parent's own tree, or the base the parent's delta was
/// built on) when it costs at most half of the tree in full. Deltas always start from a full
/// tree, so they never chain.
fn against_parent(ctx: &Ctx, tree: &Tree, prev: TreeRef) -> Result<Against> {
    let old = ctx.repo.tree(&prev)?;
    if old.entries == tree.entries {
        return Ok(Against::Same);
    }
    let full = tree.cost();
    if full < MIN_DELTA_TREE_COST {
        return Ok(Against::Full);
    }
    let (base_ref, base) = match old.base {
        Some(b) => (b, ctx.repo.tree(&b)?),
        None => (prev, old),
    };
    let delta = TreeDelta::between(base_ref, &base, tree);
    Ok(if delta.cost() * 2 <= full { Against::Delta(codec::tree::encode_delta(&delta)) } else { Against::Full })
}

/// Take events in order and build trees bottom-up; returns the root directory's entry.
fn assemble(ctx: &Ctx, rx: &Receiver<Event>, stats: &mut VersionStats) -> Result<Entry> {
    let mut stack: Vec<(Entry, Vec<Entry>, Option<TreeRef>)> = Vec::new();
    let mut links: HashMap<u64, Option<(Vec<Piece>, u64)>> = HashMap::new();
    loop {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Aborted);
        }
        let ev = rx.recv().map_err(|_| Error::Internal("walker ended without finishing the tree".into()))?;
        match ev {
            Event::Failed(e) => return Err(e),
            Event::Enter(e, prev) => stack.push((e, Vec::new(), prev)),
            Event::Leaf(e) => {
                if let Some(g) = e.link_group {
                    // The first link of a group carries the content for the later ones.
                    links.insert(g, Some((e.content.clone(), e.size)));
                }
                count_file(ctx, stats, &e, false);
                top(&mut stack)?.push(e);
            }
            Event::File(mut e, job) => {
                let res = job.recv().map_err(|_| Error::Internal("file job vanished".into()))?;
                match res {
                    Ok(r) => {
                        e.content = r.content;
                        e.size = r.size;
                        if let Some(g) = e.link_group {
                            links.insert(g, Some((e.content.clone(), e.size)));
                        }
                        count_file(ctx, stats, &e, true);
                        top(&mut stack)?.push(e);
                    }
                    Err(JobError::Fatal(err)) => return Err(err),
                    Err(JobError::Skip(_)) => {
                        if let Some(g) = e.link_group {
                            links.insert(g, None);
                        }
                    }
                }
            }
            Event::Link(mut e) => {
                let g = e.link_group.expect("link events carry a group");
                if let Some(Some((content, size))) = links.get(&g) {
                    e.content = content.clone();
                    e.size = *size;
                    count_file(ctx, stats, &e, false);
                    top(&mut stack)?.push(e);
                }
            }
            Event::Leave => {
                let (mut dir, children, prev) =
                    stack.pop().ok_or_else(|| Error::Internal("unbalanced directory events".into()))?;
                let tree = Tree { entries: children, base: None };
                let (tree_ref, new) = write_tree(ctx, &tree, prev)?;
                if new {
                    stats.diff_num_dirs += 1;
                } else {
                    add(&ctx.progress.fs.fs_dirs_dedup, 1);
                }
                dir.subtree = Some(tree_ref);
                stats.fs_num_dirs += 1;
                add(&ctx.progress.fs.fs_created_dirs, 1);
                match stack.last_mut() {
                    Some((_, siblings, _)) => siblings.push(dir),
                    None => return Ok(dir),
                }
            }
        }
    }
}

fn top(stack: &mut [(Entry, Vec<Entry>, Option<TreeRef>)]) -> Result<&mut Vec<Entry>> {
    stack.last_mut().map(|t| &mut t.1).ok_or_else(|| Error::Internal("entry outside any directory".into()))
}

fn count_file(ctx: &Ctx, stats: &mut VersionStats, e: &Entry, read: bool) {
    stats.fs_num_files += 1;
    add(&ctx.progress.fs.fs_created_files, 1);
    if e.kind == EntryKind::File {
        stats.fs_total_data += e.size;
        add(&ctx.progress.fs.fs_files_bytes_written, e.size);
        if read {
            stats.diff_num_files += 1;
            stats.diff_file_data += e.size;
        }
    }
}

struct Walker<'a> {
    ctx: &'a Arc<Ctx>,
    tx: &'a Sender<Event>,
    jobs: Sender<Job>,
    /// Hard-link groups already seen in this walk.
    links: HashMap<u64, ()>,
    /// Only files whose ctime is before this (Unix µs) may be reused from the parent.
    reuse_before: u64,
    /// The same for entries whose times have no sub-second part.
    reuse_before_coarse: u64,
}

impl Walker<'_> {
    fn send(&self, ev: Event) -> Result<()> {
        self.tx.send(ev).map_err(|_| Error::Aborted)
    }

    fn walk_root(&mut self, mut root: Entry, parent: Option<Entry>) -> Result<()> {
        let src = &self.ctx.src;
        root.xattrs = src.xattrs(b"");
        let parent_tree = self.parent_tree(parent.as_ref())?;
        let entries = src.list(b"").map_err(|e| source_error(&**src, e))?;
        self.send(Event::Enter(root, parent.as_ref().and_then(|p| p.subtree)))?;
        self.walk_dir(b"", entries, parent_tree)?;
        self.send(Event::Leave)
    }

    /// Whether an entry of the parent version changed long enough before the parent's scan
    /// that an equal ctime now means nothing changed since (timestamps are coarse).
    fn settled(&self, o: &Entry) -> bool {
        let ctime_micros = (o.ctime.sec.max(0) as u64) * 1_000_000 + o.ctime.nsec as u64 / 1000;
        let coarse = o.ctime.nsec == 0 && o.mtime.nsec == 0;
        ctime_micros < if coarse { self.reuse_before_coarse } else { self.reuse_before }
    }

    fn parent_tree(&self, parent: Option<&Entry>) -> Result<Option<Arc<Tree>>> {
        match parent.and_then(|p| p.subtree.as_ref()) {
            Some(r) => self.ctx.repo.tree(r).map(Some),
            None => Ok(None),
        }
    }

    fn walk_dir(&mut self, dir: &[u8], mut entries: Vec<Listed>, parent: Option<Arc<Tree>>) -> Result<()> {
        // The parent's sub-directory trees are needed one after another as the walk goes down:
        // fetch them in the background now (into the tree cache) instead of one at a time then.
        for r in parent.iter().flat_map(|t| t.entries.iter().filter_map(|e| e.subtree)) {
            if !self.ctx.repo.has_cached_tree(&r.id) {
                let repo = self.ctx.repo.clone();
                self.ctx.prefetch.spawn(move || {
                    let _ = repo.tree(&r);
                });
            }
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let src = self.ctx.src.clone();
        for Listed { name, meta } in entries {
            if self.ctx.cancel.is_cancelled() {
                return Err(Error::Aborted);
            }
            let path = child(dir, &name);
            let mut e = match meta {
                Ok(e) => e,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    self.ctx.progress.skip(src.display(&path), "vanished during scan");
                    continue;
                }
                Err(err) => {
                    self.ctx.progress.skip(src.display(&path), format!("cannot stat: {err}"));
                    continue;
                }
            };
            let old = parent.as_ref().and_then(|t| t.find(&name)).filter(|o| o.kind == e.kind);
            // Setting an xattr changes the ctime: same inode and settled ctime, same xattrs.
            e.xattrs = match old {
                Some(o) if self.settled(o) && o.inode == e.inode && o.ctime == e.ctime => o.xattrs.clone(),
                _ => src.xattrs(&path),
            };
            match e.kind {
                EntryKind::Dir => {
                    let listing = match src.list(&path) {
                        Ok(l) => l,
                        Err(err) if fs_gone(&err) => return Err(source_failed(&*src, &path, err)),
                        Err(err) => {
                            self.ctx.progress.skip(src.display(&path), format!("cannot read directory: {err}"));
                            continue;
                        }
                    };
                    let sub = self.parent_tree(old)?;
                    self.send(Event::Enter(e, old.and_then(|o| o.subtree)))?;
                    self.walk_dir(&path, listing, sub)?;
                    self.send(Event::Leave)?;
                }
                EntryKind::Symlink => {
                    match src.read_link(&path) {
                        Ok(t) => e.target = t,
                        Err(err) if fs_gone(&err) => return Err(source_failed(&*src, &path, err)),
                        Err(err) => {
                            self.ctx.progress.skip(src.display(&path), format!("cannot read symlink: {err}"));
                            continue;
                        }
                    }
                    e.size = e.target.len() as u64;
                    self.send(Event::Leaf(e))?;
                }
                EntryKind::File => self.file(path, e, old)?,
                _ => self.send(Event::Leaf(e))?,
            }
        }
        Ok(())
    }

    fn file(&mut self, path: Vec<u8>, mut e: Entry, old: Option<&Entry>) -> Result<()> {
        if let Some(g) = e.link_group {
            if self.links.insert(g, ()).is_some() {
                return self.send(Event::Link(e));
            }
        }
        if let Some(o) = old {
            if self.settled(o) && o.size == e.size && o.mtime == e.mtime && o.ctime == e.ctime && o.inode == e.inode {
                e.content = o.content.clone();
                add(&self.ctx.progress.fs.fs_files_dedup, 1);
                return self.send(Event::Leaf(e));
            }
        }
        if e.size == 0 {
            let (tx, rx) = bounded(1);
            match self.ctx.src.open(&path, &e) {
                Ok(_) => {
                    let _ = tx.send(Ok(FileResult { content: Vec::new(), size: 0 }));
                }
                Err(err) if fs_gone(&err) => return Err(source_failed(&*self.ctx.src, &path, err)),
                Err(err) => {
                    self.ctx.progress.skip(self.ctx.src.display(&path), reason(&err));
                    let _ = tx.send(Err(JobError::Skip(reason(&err))));
                }
            }
            return self.send(Event::File(e, rx));
        }
        let (reply, rx) = bounded(1);
        self.jobs.send(Job { path, entry: e.clone(), reply }).map_err(|_| Error::Aborted)?;
        self.send(Event::File(e, rx))
    }
}

/// The source's root cannot be read: gone (as for [`fs_gone`]) or a bad argument.
fn source_error(src: &dyn Source, e: std::io::Error) -> Error {
    open_error(&format!("source {}", src.display(b"")), &e)
}

fn source_failed(src: &dyn Source, rel: &[u8], e: std::io::Error) -> Error {
    Error::FsUnavailable(format!("{}: {e}", src.display(rel)))
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "no read access to file".into(),
        std::io::ErrorKind::NotFound => "vanished during scan".into(),
        _ => format!("read error: {e}"),
    }
}

/// Read one file into pieces: data extents chunked, holes and all-zero blocks as holes.
fn read_file(ctx: &Ctx, path: &[u8], e: &Entry) -> Result<FileResult, JobError> {
    let mut file = ctx.src.open(path, e).map_err(|e| job_io(ctx, path, e))?;
    let size = file.size();
    let sparse = file.sparse();
    if !sparse && size <= SMALL_FILE {
        return read_small(ctx, path, file);
    }
    // Large files are hashed and compressed on the CPU pool anyway: reading more of them at
    // once than there are CPUs only holds more 4 MiB buffers.
    let _slot = ctx.large_files.enter();
    let extents = if sparse { file.data_extents() } else { None };
    let extents = extents.unwrap_or_else(|| vec![(0, u64::MAX)]);
    let mut pieces = Vec::new();
    let mut pos = 0u64;
    for (start, end) in extents {
        if start > pos {
            push_hole(&mut pieces, start - pos);
            pos = start;
            file.seek_to(start).map_err(|e| job_io(ctx, path, e))?;
        }
        let reader = (&mut file).take(end - start);
        let read = chunk_file(ctx, path, reader, &mut pieces)?;
        pos += read;
    }
    if pos < size && sparse {
        push_hole(&mut pieces, size - pos);
        pos = size;
    }
    add(&ctx.progress.fs.fs_files_bytes_read, pos);
    Ok(FileResult { content: pieces, size: pos })
}

/// A source error on one file: skip the file, unless the whole source is gone.
fn job_io(ctx: &Ctx, path: &[u8], e: std::io::Error) -> JobError {
    if fs_gone(&e) {
        JobError::Fatal(source_failed(&*ctx.src, path, e))
    } else {
        JobError::Skip(reason(&e))
    }
}

/// A small file: read whole, chunk from memory, store on this thread.
fn read_small(ctx: &Ctx, path: &[u8], mut file: Box<dyn SourceFile>) -> Result<FileResult, JobError> {
    let mut data = Vec::with_capacity((file.size() as usize).min(SMALL_FILE as usize) + 1);
    file.read_to_end(&mut data).map_err(|e| job_io(ctx, path, e))?;
    let mut pieces = Vec::new();
    let mut fail = None;
    crate::chunker::chunk_slice(ctx.params, &data, |block| match store_block(ctx, block) {
        Ok(Piece::Hole(n)) => push_hole(&mut pieces, n),
        Ok(p) => pieces.push(p),
        Err(e) => fail = fail.take().or(Some(e)),
    });
    if let Some(e) = fail {
        return Err(JobError::Fatal(e));
    }
    add(&ctx.progress.fs.fs_files_bytes_read, data.len() as u64);
    Ok(FileResult { content: pieces, size: data.len() as u64 })
}

fn push_hole(pieces: &mut Vec<Piece>, n: u64) {
    if let Some(Piece::Hole(h)) = pieces.last_mut() {
        *h += n;
    } else {
        pieces.push(Piece::Hole(n));
    }
}

/// Chunk a reader; blocks are gathered in batches and stored in parallel.
fn chunk_file<R: Read>(ctx: &Ctx, path: &[u8], reader: R, pieces: &mut Vec<Piece>) -> Result<u64, JobError> {
    const BATCH_BYTES: usize = 4 << 20;
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut batch_bytes = 0usize;
    let flush = |batch: &mut Vec<Vec<u8>>, pieces: &mut Vec<Piece>| -> Result<(), JobError> {
        if ctx.cancel.is_cancelled() {
            return Err(JobError::Fatal(Error::Aborted));
        }
        let out: Vec<Result<Piece>> = if batch.len() == 1 {
            vec![store_block(ctx, &batch[0])]
        } else {
            // Reader threads are not pool threads: `install` blocks them without stealing work.
            ctx.cpu.install(|| batch.par_iter().map(|b| store_block(ctx, b)).collect())
        };
        for p in out {
            match p.map_err(JobError::Fatal)? {
                Piece::Hole(n) => push_hole(pieces, n),
                b => pieces.push(b),
            }
        }
        batch.clear();
        Ok(())
    };
    let mut buf = ctx.buffers.lock().expect("buffer pool poisoned").pop().unwrap_or_default();
    let res = chunk_stream::<_, ChunkErr>(ctx.params, reader, &mut buf, |block| {
        batch.push(block.to_vec());
        batch_bytes += block.len();
        if batch_bytes >= BATCH_BYTES {
            batch_bytes = 0;
            flush(&mut batch, pieces).map_err(ChunkErr::Job)?;
        }
        Ok(())
    });
    ctx.buffers.lock().expect("buffer pool poisoned").push(buf);
    let read = res.map_err(|e| match e {
        ChunkErr::Io(e) => job_io(ctx, path, e),
        ChunkErr::Job(j) => j,
    })?;
    flush(&mut batch, pieces)?;
    Ok(read)
}

enum ChunkErr {
    Io(std::io::Error),
    Job(JobError),
}

impl From<std::io::Error> for ChunkErr {
    fn from(e: std::io::Error) -> Self {
        ChunkErr::Io(e)
    }
}

/// Hash one block and store it unless the store has it; all-zero blocks become holes.
fn store_block(ctx: &Ctx, data: &[u8]) -> Result<Piece> {
    if data.iter().all(|&b| b == 0) {
        return Ok(Piece::Hole(data.len() as u64));
    }
    let id = BlockId::of(data);
    let raw_len = data.len() as u32;
    let config = ctx.repo.config();
    let (loc, wrote) = ctx.dedup.get_or_write(id.0, || {
        let (codec, stored) = compress(config.compression_method, block_level(config.zstd_level, data.len()), data);
        ctx.data.add(id.0, raw_len, codec, &stored)
    })?;
    if wrote {
        ctx.new_blocks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.new_block_bytes.fetch_add(raw_len as u64, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Piece::Block(BlockRef { id, raw_len, loc }))
}

/// zstd level of trees: they are a small part of the data (2 MB for the 20k-file dataset) but
/// rewritten for every changed directory, so most of what an incremental create adds besides
/// the changed files.
const TREE_ZSTD_LEVEL: i32 = 9;

/// The zstd level of a block: the store's, but at least 3 for blocks under 64 KiB (whole small
/// files). Those are a small share of a first create's CPU and most of what a later create adds.
fn block_level(store_level: i32, len: usize) -> i32 {
    if len < 64 * 1024 {
        store_level.max(3)
    } else {
        store_level
    }
}
