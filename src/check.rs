//! Store integrity check: does every version have every object it needs, and (with
//! `read_data`) does every stored blob still hash to its name? Each problem is reported with the
//! versions and files it affects.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{BlobEntry, EntryKind, Manifest, Piece, TreeRef};
use crate::gc::{par_map, Inventory};
use crate::ids::{pack_path, PackId, PackKind};
use crate::pack;
use crate::progress::Progress;
use crate::repo::Repo;
use crate::CancellationToken;

/// Options of a check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Read and verify this percentage of the data packs (every blob hashed); `None` checks
    /// structure only (trailers, indexes, trees, that every referenced blob exists).
    pub read_data_percent: Option<f64>,
    /// Requests in flight.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { read_data_percent: None, threads: 8 }
    }
}

/// One problem, with what it affects.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    /// `missing_blob`, `corrupt_blob`, `misplaced_blob`, `unreadable_tree`, `bad_pack`,
    /// `index_mismatch`, `bad_version`, `missing_stats`.
    pub kind: String,
    /// The object at fault (pack path and blob id, or object path).
    pub object: String,
    pub detail: String,
    /// Versions that need it.
    pub versions: Vec<String>,
    /// Files (and directories) affected, as `<version>:<path>`; at most [`MAX_FILES`].
    pub files: Vec<String>,
    /// Affected files beyond those listed.
    pub more_files: u64,
}

/// Files listed per problem.
pub const MAX_FILES: usize = 100;

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CheckReport {
    pub healthy: bool,
    pub versions: u64,
    pub trees: u64,
    pub blocks: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    pub blobs_verified: u64,
    /// Packs no version needs (space gc can reclaim); not a problem.
    pub unused_packs: u64,
    /// gc records waiting for their sweep; not a problem.
    pub pending_gc: u64,
    pub problems: Vec<Problem>,
}

/// Why a blob cannot be read, by blob id.
#[derive(Clone, Debug)]
struct Fault {
    kind: &'static str,
    object: String,
    detail: String,
}

/// Check the store.
///
/// # Errors
/// Store errors that stop the check itself (listing fails); problems with objects are reported,
/// not returned.
pub fn check(
    repo: &Repo,
    opts: &CheckOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<CheckReport> {
    let repo = repo.with_progress(progress);
    let threads = opts.threads.max(1);
    let mut report = CheckReport::default();
    let mut problems: Vec<Problem> = Vec::new();
    let inv = Inventory::build(&repo, threads)?;
    report.packs = inv.packs.len() as u64;
    report.pending_gc = crate::gc::records(repo.store())?.len() as u64;
    for (id, why) in &inv.unreadable {
        let kind = inv.packs.get(id).map_or(PackKind::Data, |p| p.kind);
        problems.push(problem("bad_pack", pack_path(kind, id), why.clone()));
    }

    // Every data pack's trailer must agree with what the indexes say of it.
    let data: Vec<(PackId, Vec<BlobEntry>)> = inv
        .packs
        .iter()
        .filter(|(id, p)| p.kind == PackKind::Data && !inv.unreadable.contains_key(id))
        .filter_map(|(id, p)| Some((*id, p.blobs.clone()?)))
        .collect();
    let trailers = par_map(&data, threads, |(id, _)| pack::read_trailer(repo.store(), PackKind::Data, id));
    for ((id, known), t) in data.iter().zip(trailers) {
        match t {
            Ok(t) => {
                let a: BTreeSet<_> = t.blobs.iter().map(|b| (b.loc.offset, b.id)).collect();
                let b: BTreeSet<_> = known.iter().map(|b| (b.loc.offset, b.id)).collect();
                if a != b {
                    problems.push(problem(
                        "index_mismatch",
                        pack_path(PackKind::Data, id),
                        "the pack's trailer and the index disagree on its contents".into(),
                    ));
                }
            }
            Err(e) => problems.push(problem("bad_pack", pack_path(PackKind::Data, id), e.to_string())),
        }
    }

    // Where every blob is: id → (pack, entry).
    let mut at: HashMap<[u8; 32], Vec<(PackId, BlobEntry)>> = HashMap::new();
    for (id, p) in &inv.packs {
        for b in p.blobs.iter().flatten() {
            at.entry(b.id).or_default().push((*id, *b));
        }
    }

    // Verify stored bytes: every tree pack (held whole), and the chosen share of data packs.
    let mut faults: HashMap<[u8; 32], Fault> = HashMap::new();
    for (id, bytes) in &inv.tree_bytes {
        for b in inv.packs.get(id).and_then(|p| p.blobs.as_ref()).into_iter().flatten() {
            report.blobs_verified += 1;
            if let Some(f) = verify(PackKind::Tree, id, b, bytes) {
                faults.insert(b.id, f);
            }
        }
    }
    if let Some(pct) = opts.read_data_percent {
        let mut chosen: Vec<(PackId, Vec<BlobEntry>)> = data.clone();
        let want = ((chosen.len() as f64 * pct.clamp(0.0, 100.0) / 100.0).ceil() as usize).min(chosen.len());
        if want < chosen.len() {
            use rand::seq::SliceRandom;
            chosen.shuffle(&mut rand::rng());
            chosen.truncate(want);
        }
        let results = par_map(&chosen, threads.min(4), |(id, blobs)| -> Result<(u64, Vec<BlobFault>)> {
            if cancel.is_cancelled() {
                return Err(Error::Aborted);
            }
            let path = pack_path(PackKind::Data, id);
            let bytes = repo.store().get(&path)?.ok_or_else(|| Error::MissingObject {
                object: path.clone(),
                reason: "vanished during the check".into(),
            })?;
            let found = blobs.iter().filter_map(|b| verify(PackKind::Data, id, b, &bytes).map(|f| (b.id, f))).collect();
            Ok((bytes.len() as u64, found))
        });
        for ((id, blobs), r) in chosen.iter().zip(results) {
            match r {
                Ok((n, found)) => {
                    report.packs_read += 1;
                    report.bytes_read += n;
                    report.blobs_verified += blobs.len() as u64;
                    faults.extend(found);
                }
                Err(Error::Aborted) => return Err(Error::Aborted),
                Err(e) => problems.push(problem("bad_pack", pack_path(PackKind::Data, id), e.to_string())),
            }
        }
    }

    // Walk every version: which references cannot be read, and where are they?
    let versions = list_versions(&repo, &mut problems)?;
    report.versions = versions.len() as u64;
    let mut walk = Walk {
        repo: &repo,
        inv: &inv,
        at: &at,
        faults: &faults,
        memo: HashMap::new(),
        trees: 0,
        blocks: HashSet::new(),
    };
    let mut affected: BTreeMap<String, (Fault, BTreeSet<String>, Vec<String>, u64)> = BTreeMap::new();
    for m in &versions {
        if cancel.is_cancelled() {
            return Err(Error::Aborted);
        }
        if let Err(e) = repo.version_stats(m) {
            problems.push(problem("missing_stats", format!("stats/{}", m.version_uid), e.to_string()));
        }
        let root = m.root;
        if walk.tree_bad(&root) {
            let mut hits = Vec::new();
            walk.collect(&root, Vec::new(), &mut hits);
            for (path, f) in hits {
                let e = affected.entry(f.object.clone()).or_insert_with(|| (f.clone(), BTreeSet::new(), Vec::new(), 0));
                e.1.insert(m.version_id.to_string());
                if e.2.len() < MAX_FILES {
                    e.2.push(format!("{}:{}", m.version_id, display_path(&path)));
                } else {
                    e.3 += 1;
                }
            }
        }
    }
    report.trees = walk.trees;
    report.blocks = walk.blocks.len() as u64;
    for (_, (f, versions, files, more)) in affected {
        problems.push(Problem {
            kind: f.kind.into(),
            object: f.object,
            detail: f.detail,
            versions: versions.into_iter().collect(),
            files,
            more_files: more,
        });
    }
    // Corrupt blobs no version needs are still worth knowing about.
    let needed: HashSet<String> = problems.iter().map(|p| p.object.clone()).collect();
    for f in faults.values() {
        if !needed.contains(&f.object) {
            problems.push(problem(f.kind, f.object.clone(), format!("{} (no version uses it)", f.detail)));
        }
    }
    let live: &HashSet<[u8; 32]> = &walk.blocks;
    report.unused_packs = inv
        .packs
        .iter()
        .filter(|(id, p)| {
            p.blobs
                .as_ref()
                .is_some_and(|bl| bl.iter().all(|b| !live.contains(&b.id) && !walk.memo.contains_key(&b.id)))
                && !inv.unreadable.contains_key(id)
        })
        .count() as u64;
    report.healthy = problems.is_empty();
    report.problems = problems;
    Ok(report)
}

/// A blob that failed verification, with why.
type BlobFault = ([u8; 32], Fault);

fn problem(kind: &str, object: String, detail: String) -> Problem {
    Problem { kind: kind.into(), object, detail, versions: vec![], files: vec![], more_files: 0 }
}

fn verify(kind: PackKind, id: &PackId, b: &BlobEntry, bytes: &bytes::Bytes) -> Option<Fault> {
    let object = format!("{} {} {}", pack_path(kind, id), kind_name(kind), hex::encode(b.id));
    match pack::blob_bytes(bytes, &b.loc) {
        None => Some(Fault { kind: "corrupt_blob", object, detail: "lies beyond the end of the pack".into() }),
        Some(s) => Repo::verify_stored(kind, b, s).err().map(|e| Fault {
            kind: "corrupt_blob",
            object,
            detail: match e {
                Error::Corrupt { reason, .. } => reason,
                e => e.to_string(),
            },
        }),
    }
}

fn kind_name(kind: PackKind) -> &'static str {
    match kind {
        PackKind::Data => "block",
        PackKind::Tree => "tree",
    }
}

fn display_path(parts: &[Vec<u8>]) -> String {
    if parts.is_empty() {
        return "/".into();
    }
    parts.iter().map(|p| format!("/{}", String::from_utf8_lossy(p))).collect()
}

fn list_versions(repo: &Repo, problems: &mut Vec<Problem>) -> Result<Vec<Arc<Manifest>>> {
    let mut out = Vec::new();
    for id in repo.version_ids(None)? {
        match repo.manifest(&id) {
            Ok(m) => out.push(m),
            Err(e) => problems.push(Problem {
                versions: vec![id.to_string()],
                ..problem("bad_version", id.manifest_path(), e.to_string())
            }),
        }
    }
    Ok(out)
}

struct Walk<'a> {
    repo: &'a Repo,
    inv: &'a Inventory,
    at: &'a HashMap<[u8; 32], Vec<(PackId, BlobEntry)>>,
    faults: &'a HashMap<[u8; 32], Fault>,
    /// Every tree visited, by id, with whether anything under it cannot be read (memo).
    memo: HashMap<[u8; 32], bool>,
    trees: u64,
    /// Every referenced block id.
    blocks: HashSet<[u8; 32]>,
}

impl Walk<'_> {
    /// Why the blob a reference names cannot be read, if it cannot.
    fn fault(&self, kind: PackKind, id: &[u8; 32], loc: &crate::format::Loc) -> Option<Fault> {
        let object = format!("{} {} {}", pack_path(kind, &loc.pack), kind_name(kind), hex::encode(id));
        if let Some(f) = self.faults.get(id) {
            // The reference reads this copy (its pack exists) or any copy if it was moved.
            let copies = self.at.get(id).map_or(0, Vec::len);
            if self.inv.packs.contains_key(&loc.pack) || copies <= 1 {
                return Some(f.clone());
            }
        }
        match self.at.get(id) {
            None => Some(Fault { kind: "missing_blob", object, detail: "in no pack of the store".into() }),
            Some(copies) => {
                if self.inv.packs.contains_key(&loc.pack)
                    && !copies.iter().any(|(p, b)| *p == loc.pack && b.loc == *loc)
                {
                    Some(Fault {
                        kind: "misplaced_blob",
                        object,
                        detail: "its pack exists but does not hold it where the reference says".into(),
                    })
                } else {
                    None
                }
            }
        }
    }

    /// Whether anything under this tree cannot be read (memoized by tree id).
    fn tree_bad(&mut self, r: &TreeRef) -> bool {
        if let Some(b) = self.memo.get(&r.id.0) {
            return *b;
        }
        self.trees += 1;
        let bad = if self.fault(PackKind::Tree, &r.id.0, &r.loc).is_some() {
            true
        } else {
            match self.inv.tree(self.repo, r) {
                Err(_) => true,
                Ok(t) => {
                    // A delta's base was read to build `t`; its pack is still checked.
                    let mut bad = t.base.is_some_and(|b| self.fault(PackKind::Tree, &b.id.0, &b.loc).is_some());
                    for e in &t.entries {
                        for p in &e.content {
                            if let Piece::Block(b) = p {
                                self.blocks.insert(b.id.0);
                                bad |= self.fault(PackKind::Data, &b.id.0, &b.loc).is_some();
                            }
                        }
                        if let Some(s) = &e.subtree {
                            bad |= self.tree_bad(s);
                        }
                    }
                    bad
                }
            }
        };
        self.memo.insert(r.id.0, bad);
        bad
    }

    /// Paths under a bad tree whose objects cannot be read, with the fault.
    fn collect(&self, r: &TreeRef, path: Vec<Vec<u8>>, out: &mut Vec<(Vec<Vec<u8>>, Fault)>) {
        if let Some(f) = self.fault(PackKind::Tree, &r.id.0, &r.loc) {
            out.push((path, f));
            return;
        }
        let t = match self.inv.tree(self.repo, r) {
            Ok(t) => t,
            Err(e) => {
                let object = format!("{} tree {}", pack_path(PackKind::Tree, &r.loc.pack), r.id);
                out.push((path, Fault { kind: "unreadable_tree", object, detail: e.to_string() }));
                return;
            }
        };
        for e in &t.entries {
            let mut p = path.clone();
            if !e.name.is_empty() {
                p.push(e.name.clone());
            }
            if e.kind == EntryKind::File {
                // One line per file and fault.
                let mut seen = HashSet::new();
                for piece in &e.content {
                    if let Piece::Block(b) = piece {
                        if let Some(f) = self.fault(PackKind::Data, &b.id.0, &b.loc) {
                            if seen.insert(f.object.clone()) {
                                out.push((p.clone(), f));
                            }
                        }
                    }
                }
            }
            if let Some(s) = &e.subtree {
                if self.memo.get(&s.id.0).copied().unwrap_or(true) {
                    self.collect(s, p, out);
                }
            }
        }
    }
}
