//! A read-only, inode-addressed view of one version, one branch or a whole store: what the
//! FUSE mount serves, as an ordinary Rust API (no FUSE types), testable without a mount.
//!
//! - Whole store: `/<branch>/<micros>/…` with a `latest` symlink per branch; one branch: the
//!   same one level down; one version: its tree at the root.
//! - Nodes are created on lookup/readdir and point into shared tree objects (`Arc<Tree>` +
//!   index), so a 100k-entry directory costs one tree fetch and a small node per entry.
//!   Mounting loads nothing but the version list (store/branch) or one catalog (version).
//! - Reads locate pieces by binary search over per-file offsets, fetch blocks through the
//!   repo's cache (concurrent misses joined), and prefetch ahead of sequential readers: the
//!   window starts at one block, doubles per sequential read up to 32 MiB, resets on a random
//!   read (cancelling prefetches that have not started), and all prefetches together are capped
//!   in bytes (64 MiB by default).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::format::{Entry, EntryKind, Piece, Timestamp, Tree, Xattr};
use crate::ids::{validate_branch, VersionId};
use crate::repo::Repo;

/// The root inode.
pub const ROOT_INO: u64 = 1;

/// What the view shows at its root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewRoot {
    /// Every branch and version of the store.
    Store,
    /// The versions of one branch.
    Branch(String),
    /// One version's tree.
    Version(VersionId),
}

/// Tuning of a view.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    /// Largest read-ahead window per open file.
    pub max_readahead: u64,
    /// Cap on the bytes being prefetched at once, across all open files.
    pub max_prefetch_bytes: u64,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions { max_readahead: 32 << 20, max_prefetch_bytes: 64 << 20 }
    }
}

/// Attributes of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAttr {
    pub ino: u64,
    pub kind: EntryKind,
    pub size: u64,
    /// Bytes of stored (non-hole) content.
    pub allocated: u64,
    pub mtime: Timestamp,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    /// True inside a version (never changes); false for the store/branch listings.
    pub immutable: bool,
}

enum NodeKind {
    StoreRoot,
    Branch(String),
    Latest(String),
    /// An entry of a version: `tree.entries[idx]`.
    Entry {
        tree: Arc<Tree>,
        idx: usize,
        offsets: OnceLock<Vec<u64>>,
    },
}

struct Node {
    kind: NodeKind,
    /// Inode of the version root this entry belongs to (hard-link groups are per version).
    vroot: u64,
}

impl Node {
    fn entry(&self) -> Option<&Entry> {
        match &self.kind {
            NodeKind::Entry { tree, idx, .. } => tree.entries.get(*idx),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Nodes {
    next: u64,
    by_ino: HashMap<u64, Arc<Node>>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
    links: HashMap<(u64, u64), u64>,
}

struct Handle {
    next_offset: u64,
    window: u64,
    prefetched_until: u64,
    /// Bumped on a random read: prefetches of an older generation do not start.
    generation: Arc<AtomicU64>,
}

/// The view. Cheap to share across request threads.
pub struct FsView {
    repo: Repo,
    root: ViewRoot,
    opts: ViewOptions,
    nodes: RwLock<Nodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    prefetching: Arc<AtomicU64>,
    /// Sub-tree fetches in flight, and trees whose sub-trees were already requested.
    tree_prefetching: Arc<AtomicU64>,
    tree_prefetched: Mutex<std::collections::HashSet<crate::ids::TreeId>>,
    totals: (u64, u64),
}

/// Sub-directory trees fetched ahead at once.
const MAX_TREE_PREFETCH: u64 = 32;

impl FsView {
    /// Open a view. For a version root this reads its manifest and catalog only.
    ///
    /// # Errors
    /// [`Error::VersionNotFound`], store errors.
    pub fn new(repo: Repo, root: ViewRoot, opts: ViewOptions) -> Result<FsView> {
        let mut nodes = Nodes { next: ROOT_INO + 1, ..Default::default() };
        let (kind, totals) = match &root {
            ViewRoot::Store => (NodeKind::StoreRoot, (0, 0)),
            ViewRoot::Branch(b) => {
                validate_branch(b)?;
                (NodeKind::Branch(b.clone()), (0, 0))
            }
            ViewRoot::Version(id) => {
                let m = repo.manifest(id)?;
                let catalog = repo.tree(&m.root)?;
                let totals = repo.version_stats(&m).map(|s| (s.fs_total_data, s.fs_num_files)).unwrap_or((0, 0));
                (NodeKind::Entry { tree: catalog, idx: 0, offsets: OnceLock::new() }, totals)
            }
        };
        nodes.by_ino.insert(ROOT_INO, Arc::new(Node { kind, vroot: ROOT_INO }));
        Ok(FsView {
            repo,
            root,
            opts,
            nodes: RwLock::new(nodes),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            prefetching: Arc::new(AtomicU64::new(0)),
            tree_prefetching: Arc::new(AtomicU64::new(0)),
            tree_prefetched: Mutex::new(std::collections::HashSet::new()),
            totals,
        })
    }

    pub fn root(&self) -> &ViewRoot {
        &self.root
    }

    fn node(&self, ino: u64) -> Result<Arc<Node>> {
        self.nodes
            .read()
            .expect("node table poisoned")
            .by_ino
            .get(&ino)
            .cloned()
            .ok_or_else(|| not_found(&format!("inode {ino}")))
    }

    fn attr_of(&self, ino: u64, node: &Node) -> NodeAttr {
        match &node.kind {
            NodeKind::Entry { .. } => {
                let e = node.entry().expect("entry nodes hold an entry");
                let allocated = e.content.iter().filter(|p| matches!(p, Piece::Block(_))).map(Piece::len).sum();
                NodeAttr {
                    ino,
                    kind: e.kind,
                    size: e.size,
                    allocated,
                    mtime: e.mtime,
                    mode: e.mode,
                    nlink: if e.kind == EntryKind::Dir { 2 } else { e.nlink.max(1) },
                    uid: e.uid,
                    gid: e.gid,
                    rdev: e.rdev,
                    immutable: true,
                }
            }
            NodeKind::Latest(target) => NodeAttr {
                ino,
                kind: EntryKind::Symlink,
                size: target.len() as u64,
                allocated: 0,
                mtime: Timestamp::default(),
                mode: 0o777,
                nlink: 1,
                uid: 0,
                gid: 0,
                rdev: 0,
                immutable: false,
            },
            NodeKind::StoreRoot | NodeKind::Branch(_) => NodeAttr {
                ino,
                kind: EntryKind::Dir,
                size: 0,
                allocated: 0,
                mtime: Timestamp::default(),
                mode: 0o555,
                nlink: 2,
                uid: 0,
                gid: 0,
                rdev: 0,
                immutable: false,
            },
        }
    }

    /// Attributes of a node.
    ///
    /// # Errors
    /// Not found for an unknown inode.
    pub fn getattr(&self, ino: u64) -> Result<NodeAttr> {
        let node = self.node(ino)?;
        Ok(self.attr_of(ino, &node))
    }

    /// Inode for a child, created on first sight. Hard links of one version share an inode.
    fn child(&self, parent: u64, vroot: Option<u64>, name: &[u8], kind: impl FnOnce() -> NodeKind) -> u64 {
        let key = (parent, name.to_vec());
        if let Some(&ino) = self.nodes.read().expect("node table poisoned").by_name.get(&key) {
            return ino;
        }
        let mut nodes = self.nodes.write().expect("node table poisoned");
        if let Some(&ino) = nodes.by_name.get(&key) {
            return ino;
        }
        let kind = kind();
        let group = match &kind {
            NodeKind::Entry { tree, idx, .. } => tree.entries[*idx].link_group,
            _ => None,
        };
        let ino = nodes.next;
        let vroot = vroot.unwrap_or(ino);
        if let Some(g) = group {
            if let Some(&existing) = nodes.links.get(&(vroot, g)) {
                nodes.by_name.insert(key, existing);
                return existing;
            }
            nodes.links.insert((vroot, g), ino);
        }
        nodes.next += 1;
        nodes.by_ino.insert(ino, Arc::new(Node { kind, vroot }));
        nodes.by_name.insert(key, ino);
        ino
    }

    fn children(&self, node: &Node) -> Result<Arc<Tree>> {
        let e = node.entry().ok_or_else(|| Error::Internal("children of a non-entry".into()))?;
        match (&e.kind, &e.subtree) {
            (EntryKind::Dir, Some(r)) => {
                let tree = self.repo.tree(r)?;
                self.prefetch_subtrees(r.id, &tree);
                Ok(tree)
            }
            _ => Err(Error::NotADirectory { version: String::new(), path: String::from_utf8_lossy(&e.name).into() }),
        }
    }

    /// Metadata read-ahead: once a directory is read, its sub-directories' trees are fetched in
    /// the background (at most [`MAX_TREE_PREFETCH`] at a time), so a walk rarely waits on the store.
    fn prefetch_subtrees(&self, id: crate::ids::TreeId, tree: &Tree) {
        if !self.tree_prefetched.lock().expect("prefetch set poisoned").insert(id) {
            return;
        }
        for sub in tree.entries.iter().filter_map(|e| e.subtree) {
            if self.repo.has_cached_tree(&sub.id) {
                continue;
            }
            if self.tree_prefetching.fetch_add(1, Ordering::Relaxed) >= MAX_TREE_PREFETCH {
                self.tree_prefetching.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            let (repo, inflight) = (self.repo.clone(), self.tree_prefetching.clone());
            self.repo.store().runtime().spawn_blocking(move || {
                if let Err(e) = repo.tree(&sub) {
                    tracing::debug!(tree = %sub.id, error = %e, "tree prefetch failed");
                }
                inflight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    fn version_node(&self, branch: &str, micros: u64) -> Result<NodeKind> {
        let id = VersionId { bucket: self.repo.store().bucket().to_string(), branch: branch.to_string(), micros };
        let m = self.repo.manifest(&id)?;
        let catalog = self.repo.tree(&m.root)?;
        Ok(NodeKind::Entry { tree: catalog, idx: 0, offsets: OnceLock::new() })
    }

    /// The child `name` of directory `parent`.
    ///
    /// # Errors
    /// Not found; not a directory; store errors.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<NodeAttr> {
        let node = self.node(parent)?;
        let ino = match &node.kind {
            NodeKind::StoreRoot => {
                let branch = std::str::from_utf8(name).map_err(|_| not_found("branch"))?;
                if validate_branch(branch).is_err() || self.repo.version_ids(Some(branch))?.is_empty() {
                    return Err(not_found(branch));
                }
                self.child(parent, None, name, || NodeKind::Branch(branch.to_string()))
            }
            NodeKind::Branch(branch) => {
                if name == b"latest" {
                    let newest = self
                        .repo
                        .version_ids(Some(branch))?
                        .first()
                        .map(|v| v.micros)
                        .ok_or_else(|| not_found("latest"))?;
                    // A stable inode whose target follows the newest version.
                    let ino = self.child(parent, None, name, || NodeKind::Latest(String::new()));
                    let node = Arc::new(Node { kind: NodeKind::Latest(newest.to_string()), vroot: ino });
                    self.nodes.write().expect("node table poisoned").by_ino.insert(ino, node);
                    ino
                } else {
                    let micros: u64 = std::str::from_utf8(name)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| not_found("version"))?;
                    let kind = match self.version_node(branch, micros) {
                        Ok(k) => k,
                        Err(Error::VersionNotFound(_)) => return Err(not_found("version")),
                        Err(e) => return Err(e),
                    };
                    self.child(parent, None, name, || kind)
                }
            }
            NodeKind::Latest(_) => return Err(not_dir()),
            NodeKind::Entry { .. } => {
                let tree = self.children(&node)?;
                let idx = tree
                    .entries
                    .binary_search_by(|e| e.name.as_slice().cmp(name))
                    .map_err(|_| not_found(&String::from_utf8_lossy(name)))?;
                self.child(parent, Some(node.vroot), name, || NodeKind::Entry {
                    tree: tree.clone(),
                    idx,
                    offsets: OnceLock::new(),
                })
            }
        };
        self.getattr(ino)
    }

    /// Up to `max` entries of directory `ino` from index `offset`, with attributes.
    ///
    /// # Errors
    /// Not a directory; store errors.
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> Result<Vec<(Vec<u8>, NodeAttr)>> {
        let node = self.node(ino)?;
        let offset = offset as usize;
        match &node.kind {
            NodeKind::StoreRoot => {
                let mut branches: Vec<String> = self.repo.version_ids(None)?.into_iter().map(|v| v.branch).collect();
                branches.sort();
                branches.dedup();
                let mut out = Vec::new();
                for b in branches.into_iter().skip(offset).take(max) {
                    let name = b.clone().into_bytes();
                    let child = self.child(ino, None, &name, || NodeKind::Branch(b));
                    out.push((name, self.getattr(child)?));
                }
                Ok(out)
            }
            NodeKind::Branch(branch) => {
                let ids = self.repo.version_ids(Some(branch))?;
                let mut names: Vec<Vec<u8>> = ids.iter().map(|v| v.micros.to_string().into_bytes()).collect();
                if !names.is_empty() {
                    names.insert(0, b"latest".to_vec());
                }
                let mut out = Vec::new();
                for name in names.into_iter().skip(offset).take(max) {
                    let attr = self.lookup(ino, &name)?;
                    out.push((name, attr));
                }
                Ok(out)
            }
            NodeKind::Latest(_) => Err(not_dir()),
            NodeKind::Entry { .. } => {
                let tree = self.children(&node)?;
                let mut out = Vec::new();
                for idx in offset..(offset.saturating_add(max)).min(tree.entries.len()) {
                    let name = tree.entries[idx].name.clone();
                    let t = tree.clone();
                    let child = self.child(ino, Some(node.vroot), &name, move || NodeKind::Entry {
                        tree: t,
                        idx,
                        offsets: OnceLock::new(),
                    });
                    out.push((name, self.getattr(child)?));
                }
                Ok(out)
            }
        }
    }

    /// Target of a symlink.
    ///
    /// # Errors
    /// Not a symlink.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        match &node.kind {
            NodeKind::Latest(t) => Ok(t.clone().into_bytes()),
            NodeKind::Entry { .. } => {
                let e = node.entry().expect("entry");
                if e.kind == EntryKind::Symlink {
                    Ok(e.target.clone())
                } else {
                    Err(Error::InvalidArgument("not a symlink".into()))
                }
            }
            _ => Err(Error::InvalidArgument("not a symlink".into())),
        }
    }

    /// Extended attributes of a node.
    ///
    /// # Errors
    /// Unknown inode.
    pub fn xattrs(&self, ino: u64) -> Result<Vec<Xattr>> {
        Ok(self.node(ino)?.entry().map(|e| e.xattrs.clone()).unwrap_or_default())
    }

    /// Open a regular file for reading.
    ///
    /// # Errors
    /// Not a regular file.
    pub fn open(&self, ino: u64) -> Result<u64> {
        let node = self.node(ino)?;
        match node.entry() {
            Some(e) if e.kind == EntryKind::File => {}
            Some(e) if e.kind == EntryKind::Dir => return Err(Error::InvalidArgument("is a directory".into())),
            _ => return Err(Error::InvalidArgument("not a regular file".into())),
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let h = Handle { next_offset: 0, window: 0, prefetched_until: 0, generation: Arc::new(AtomicU64::new(0)) };
        self.handles.lock().expect("handles poisoned").insert(fh, h);
        Ok(fh)
    }

    /// Forget a handle; its pending prefetches do not start.
    pub fn release(&self, fh: u64) {
        if let Some(h) = self.handles.lock().expect("handles poisoned").remove(&fh) {
            h.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Read up to `size` bytes at `offset` of file `ino` (fewer only at end of file).
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::MissingObject`] naming the block and pack.
    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let node = self.node(ino)?;
        let NodeKind::Entry { offsets, .. } = &node.kind else {
            return Err(Error::InvalidArgument("not a regular file".into()));
        };
        let e = node.entry().expect("entry");
        let end = offset.saturating_add(size as u64).min(e.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let starts = offsets.get_or_init(|| {
            let mut pos = 0;
            e.content
                .iter()
                .map(|p| {
                    let s = pos;
                    pos += p.len();
                    s
                })
                .collect()
        });
        let first = starts.partition_point(|&s| s <= offset).saturating_sub(1);
        self.readahead(fh, e, starts, offset, end);
        // A read inside one block is a slice of the cached block: no copy.
        if let Some(Piece::Block(b)) = e.content.get(first) {
            let (s, l) = (starts[first], b.raw_len as u64);
            if end <= s + l {
                let data = self.repo.block(b)?;
                return Ok(data.slice((offset - s) as usize..(end - s) as usize));
            }
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (i, piece) in e.content.iter().enumerate().skip(first) {
            let s = starts[i];
            if s >= end {
                break;
            }
            let from = offset.max(s) - s;
            let to = end.min(s + piece.len()) - s;
            match piece {
                Piece::Hole(_) => out.resize(out.len() + (to - from) as usize, 0),
                Piece::Block(b) => out.extend_from_slice(&self.repo.block(b)?[from as usize..to as usize]),
            }
        }
        out.resize((end - offset) as usize, 0);
        Ok(out.freeze())
    }

    fn readahead(&self, fh: u64, e: &Entry, starts: &[u64], offset: u64, end: u64) {
        const SLACK: u64 = 256 << 10; // the kernel may reorder nearby requests
        let (from, until, generation) = {
            let mut handles = self.handles.lock().expect("handles poisoned");
            let Some(h) = handles.get_mut(&fh) else { return };
            let sequential = offset + SLACK >= h.next_offset && offset <= h.next_offset + SLACK;
            if sequential {
                h.window = (h.window * 2).clamp(1 << 20, self.opts.max_readahead);
            } else {
                h.window = 0;
                h.prefetched_until = 0;
                h.generation.fetch_add(1, Ordering::Relaxed);
            }
            h.next_offset = end;
            if h.window == 0 {
                return;
            }
            let from = h.prefetched_until.max(end);
            let until = end + h.window;
            if from >= until {
                return;
            }
            h.prefetched_until = until;
            (from, until, h.generation.clone())
        };
        let first = starts.partition_point(|&s| s <= from).saturating_sub(1);
        let gen_now = generation.load(Ordering::Relaxed);
        for (i, piece) in e.content.iter().enumerate().skip(first) {
            if starts[i] >= until {
                break;
            }
            let Piece::Block(b) = *piece else { continue };
            if self.repo.has_cached_block(&b.id) {
                continue;
            }
            let len = b.raw_len as u64;
            if self.prefetching.fetch_add(len, Ordering::Relaxed) + len > self.opts.max_prefetch_bytes {
                self.prefetching.fetch_sub(len, Ordering::Relaxed);
                break;
            }
            let (repo, budget, generation) = (self.repo.clone(), self.prefetching.clone(), generation.clone());
            self.repo.store().runtime().spawn_blocking(move || {
                if generation.load(Ordering::Relaxed) == gen_now {
                    if let Err(err) = repo.block(&b) {
                        tracing::debug!(block = %b.id, error = %err, "prefetch failed");
                    }
                }
                budget.fetch_sub(len, Ordering::Relaxed);
            });
        }
    }

    /// Logical bytes and files of the mounted version (0 for store and branch views).
    pub fn totals(&self) -> (u64, u64) {
        self.totals
    }
}

fn not_found(what: &str) -> Error {
    Error::PathNotFound { version: String::new(), path: what.to_string() }
}

fn not_dir() -> Error {
    Error::NotADirectory { version: String::new(), path: String::new() }
}

/// How long the kernel may cache an attribute: long inside versions, short for listings.
pub fn ttl(attr: &NodeAttr) -> Duration {
    if attr.immutable {
        Duration::from_secs(24 * 3600)
    } else {
        Duration::from_secs(1)
    }
}
