//! Garbage collection: give back the space of deleted versions without ever removing data that
//! a surviving version, or a create running at the same time, still needs.
//!
//! Two phases, so that no repository-wide lock is needed:
//!
//! 1. **Condemn.** Mark every blob (tree or block) reachable from the versions listed now. Give
//!    each live blob one *owner* pack (a young pack first, then the pack with the most live
//!    data). Packs that own nothing are condemned; packs whose owned data is a small part of
//!    them have their owned blobs copied into new packs (repack), and are condemned too. Packs
//!    younger than the grace window are never condemned (a killed create's packs stay reusable
//!    for a while). The new packs' index is written, then a record `gc/<id>` naming the
//!    condemned packs, then gc lists the live create leases and writes them into the record.
//! 2. **Sweep.** Once every lease named in the record is gone (its create committed, failed or
//!    expired), mark again with the versions listed now, keep any condemned pack holding a live
//!    blob that has no copy elsewhere, delete the rest, write one index of every remaining pack
//!    and delete the older indexes, and finally the record.
//!
//! Why this is safe: a create takes its lease before it reads anything, and reads the gc
//! records before it loads the indexes it deduplicates against; it never uses a condemned pack.
//! Either gc's lease listing (after the record is written) sees the create's lease — then the
//! sweep waits for it and the re-mark sees the version it committed — or the create's record
//! read (after its lease is written) sees the record. A create whose lease expired refuses to
//! commit. Trees keep the locations they were written with; reads of a moved blob find it by
//! id through the indexes (`Repo::relocate`).
//!
//! Every step is idempotent and ordered so that gc killed at any point leaves a valid store and
//! the next run completes the work: orphan repack packs are only extra copies, a record without
//! its lease list waits for every live create, deleted packs are just missing from the next
//! listing, duplicate indexes are harmless.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::{self, ObjectKind};
use crate::error::{Error, Result};
use crate::format::{BlobEntry, IndexFile, Manifest, TreeRef};
use crate::ids::{pack_path, PackId, PackKind, VersionId};
use crate::lease::{self, Lease, LeaseKind};
use crate::pack::{self, PackWriter, Uploader};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::time::now_micros;
use crate::CancellationToken;

/// Options of a gc run.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Packs younger than this are never condemned.
    pub grace: Duration,
    /// Repack a pack when the live data it owns is less than this fraction of it.
    pub repack_below: f64,
    /// Requests in flight (reads, uploads, deletes).
    pub threads: usize,
    /// TTL of gc's own lease.
    pub lease_ttl: Duration,
    /// Only report what would be done.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            repack_below: 0.5,
            threads: 8,
            lease_ttl: lease::DEFAULT_TTL,
            dry_run: false,
        }
    }
}

/// A condemned pack in a gc record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CondemnedPack {
    pub kind: PackKind,
    pub pack: PackId,
}

/// `gc/<id>`: packs condemned by a gc, deleted by the sweep once the leases it names are gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRecord {
    pub id: String,
    pub created_micros: u64,
    pub condemned: Vec<CondemnedPack>,
    /// Create leases live right after the record was written; `None` if gc stopped before it
    /// could list them (then the sweep waits for every live create lease).
    pub waits_for: Option<Vec<String>>,
}

/// A record whose sweep is waiting for creates to finish.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PendingSweep {
    pub record: String,
    pub packs: u64,
    pub waiting_for: Vec<String>,
}

/// What a gc run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub versions: u64,
    pub live_blobs: u64,
    pub packs_before: u64,
    pub bytes_before: u64,
    pub packs_condemned: u64,
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    pub packs_repacked: u64,
    pub blobs_repacked: u64,
    pub bytes_repacked: u64,
    pub packs_young: u64,
    pub indexes_merged: u64,
    pub stats_deleted: u64,
    pub sweeps_completed: u64,
    /// Leases of killed processes (expired, or of a pid gone from this host), removed.
    pub leases_removed: u64,
    pub pending: Vec<PendingSweep>,
    /// Live blobs found in no readable pack (the store is damaged: run `ccfs check`).
    pub missing_blobs: u64,
    /// Packs whose contents could not be read; they are kept.
    pub unreadable_packs: Vec<String>,
    /// Blobs that failed verification while repacking; their packs are kept.
    pub corrupt_blobs: Vec<String>,
}

/// Path of a gc record.
pub fn record_path(id: &str) -> String {
    format!("gc/{id}")
}

/// All gc records, oldest first.
///
/// # Errors
/// Store errors; [`Error::Corrupt`] for an unreadable record (nothing may depend on its packs,
/// so creates stop rather than guess).
pub fn records(store: &crate::Store) -> Result<Vec<GcRecord>> {
    let mut out = Vec::new();
    for meta in store.list("gc")? {
        let path = meta.location.to_string();
        let Some(raw) = store.get(&path)? else { continue };
        let rec: GcRecord =
            serde_json::from_slice(&raw).map_err(|e| Error::corrupt(&path, format!("bad gc record: {e}")))?;
        out.push(rec);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Packs condemned by any gc record: nothing new may refer to them.
///
/// # Errors
/// As [`records`].
pub fn condemned_packs(store: &crate::Store) -> Result<HashSet<PackId>> {
    Ok(records(store)?.iter().flat_map(|r| r.condemned.iter().map(|c| c.pack)).collect())
}

/// Run `f` over `items` on up to `threads` threads; results in input order.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 || threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let out: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() {
                    return;
                }
                let r = f(&items[i]);
                *out[i].lock().expect("par_map slot poisoned") = Some(r);
            });
        }
    });
    out.into_iter().map(|m| m.into_inner().expect("par_map slot poisoned").expect("every slot filled")).collect()
}

/// One pack as gc sees it.
#[derive(Clone, Debug)]
pub(crate) struct PackInfo {
    pub kind: PackKind,
    pub size: u64,
    pub modified_micros: u64,
    /// Its blobs, from an index or its trailer; `None` when neither could be read.
    pub blobs: Option<Vec<BlobEntry>>,
}

/// Every pack of the store with its contents; tree packs are held whole (marking reads every
/// tree, and one request per tree pack is far cheaper than one per tree).
#[derive(Default)]
pub(crate) struct Inventory {
    pub packs: BTreeMap<PackId, PackInfo>,
    pub indexes: Vec<String>,
    pub tree_bytes: HashMap<PackId, Bytes>,
    pub unreadable: BTreeMap<PackId, String>,
}

impl Inventory {
    /// List every pack and index and learn each pack's contents: from the indexes, else from
    /// its trailer; tree packs are read whole.
    pub fn build(repo: &Repo, threads: usize) -> Result<Inventory> {
        let store = repo.store();
        let mut inv = Inventory {
            indexes: store.list("index")?.into_iter().map(|m| m.location.to_string()).collect(),
            ..Inventory::default()
        };
        for kind in [PackKind::Data, PackKind::Tree] {
            for meta in store.list(&format!("packs/{}", kind.dir()))? {
                let Some(Ok(id)) = meta.location.filename().map(|n| n.parse::<PackId>()) else { continue };
                let modified_micros = meta.last_modified.timestamp_micros().max(0) as u64;
                inv.packs.insert(id, PackInfo { kind, size: meta.size, modified_micros, blobs: None });
            }
        }
        let read = par_map(&inv.indexes, threads, |path| -> Result<Option<IndexFile>> {
            match store.get(path)? {
                None => Ok(None),
                Some(raw) => codec::decode_object(ObjectKind::Index, &raw, path).map(Some),
            }
        });
        let mut from_index: HashMap<PackId, Vec<BlobEntry>> = HashMap::new();
        for idx in read {
            for b in idx?.map(|i| i.blobs).unwrap_or_default() {
                from_index.entry(b.loc.pack).or_default().push(b);
            }
        }
        for (id, mut blobs) in from_index {
            if let Some(info) = inv.packs.get_mut(&id) {
                blobs.sort_by_key(|b| b.loc.offset);
                blobs.dedup_by_key(|b| b.loc.offset);
                info.blobs = Some(blobs);
            }
        }
        // Tree packs are read whole; data packs without an index entry by their trailer.
        let trees: Vec<PackId> =
            inv.packs.iter().filter(|(_, i)| i.kind == PackKind::Tree).map(|(id, _)| *id).collect();
        let got = par_map(&trees, threads, |id| -> Result<Option<(Bytes, Option<Vec<BlobEntry>>)>> {
            let path = pack_path(PackKind::Tree, id);
            let Some(bytes) = store.get(&path)? else { return Ok(None) };
            let trailer = pack::trailer_of(&bytes, PackKind::Tree, id).map(|t| t.blobs).ok();
            Ok(Some((bytes, trailer)))
        });
        for (id, r) in trees.iter().zip(got) {
            let Some((bytes, trailer)) = r? else {
                inv.packs.remove(id); // deleted since the listing
                continue;
            };
            let info = inv.packs.get_mut(id).expect("listed above");
            if info.blobs.is_none() {
                match trailer {
                    Some(t) => info.blobs = Some(t),
                    None => {
                        inv.unreadable.insert(*id, "tree pack without a readable trailer".into());
                    }
                }
            }
            inv.tree_bytes.insert(*id, bytes);
        }
        let data: Vec<PackId> = inv
            .packs
            .iter()
            .filter(|(_, i)| i.blobs.is_none() && i.kind == PackKind::Data)
            .map(|(id, _)| *id)
            .collect();
        let got = par_map(&data, threads, |id| pack::read_trailer(store, PackKind::Data, id));
        for (id, r) in data.iter().zip(got) {
            match r {
                Ok(t) => inv.packs.get_mut(id).expect("listed above").blobs = Some(t.blobs),
                Err(Error::Store { source: object_store::Error::NotFound { .. }, .. }) => {
                    inv.packs.remove(id);
                }
                Err(e) => {
                    tracing::warn!(pack = %id, error = %e, "pack contents unknown; it is kept");
                    inv.unreadable.insert(*id, e.to_string());
                }
            }
        }
        Ok(inv)
    }

    /// Record packs this gc wrote (and the index naming them) without listing the store again.
    pub fn add_written(&mut self, index: &IndexFile, index_path: &str) {
        let now = now_micros();
        for b in &index.blobs {
            let info = self.packs.entry(b.loc.pack).or_insert_with(|| PackInfo {
                kind: b.kind,
                size: 0,
                modified_micros: now,
                blobs: Some(Vec::new()),
            });
            info.size += b.loc.len as u64;
            info.blobs.get_or_insert_with(Vec::new).push(*b);
        }
        self.indexes.push(index_path.to_string());
    }

    /// A tree, decoded from its held pack when there is one, else read from the store (its
    /// pack was not listed, or was repacked away).
    pub fn tree(&self, repo: &Repo, r: &TreeRef) -> Result<Arc<crate::format::Tree>> {
        let held = |t: &TreeRef| self.tree_bytes.get(&t.loc.pack).and_then(|pack| pack::blob_bytes(pack, &t.loc));
        match held(r) {
            Some(stored) => repo.tree_from_stored(r, stored, &held),
            None => repo.tree(r),
        }
    }
}

/// The set of live blob ids, grown version by version.
#[derive(Default)]
pub(crate) struct Marker {
    pub live: HashSet<[u8; 32]>,
    /// Trees whose entries have been marked. Not `live`: the full tree a delta is built on is
    /// live for the delta's sake, but only the entries the delta keeps are needed through it,
    /// and those are marked through the delta.
    walked: HashSet<[u8; 32]>,
    seen_versions: HashSet<VersionId>,
}

impl Marker {
    /// Mark everything reachable from the versions not marked yet. A tree that cannot be read
    /// stops gc: without it, what the version needs is unknown.
    pub fn mark(&mut self, repo: &Repo, inv: &Inventory, versions: &[Arc<Manifest>], threads: usize) -> Result<()> {
        let mut frontier: Vec<(TreeRef, VersionId)> = Vec::new();
        for m in versions {
            if self.seen_versions.insert(m.version_id.clone()) && self.walked.insert(m.root.id.0) {
                self.live.insert(m.root.id.0);
                frontier.push((m.root, m.version_id.clone()));
            }
        }
        while !frontier.is_empty() {
            let trees = par_map(&frontier, threads, |(r, _)| inv.tree(repo, r));
            let mut next = Vec::new();
            for ((_, v), t) in frontier.iter().zip(trees) {
                let t = t.map_err(|e| {
                    Error::Internal(format!(
                        "gc stopped: a tree of version {v} cannot be read ({e}); nothing was deleted by this step — run `ccfs check`"
                    ))
                })?;
                for e in &t.entries {
                    for p in &e.content {
                        if let crate::format::Piece::Block(b) = p {
                            self.live.insert(b.id.0);
                        }
                    }
                    if let Some(s) = &e.subtree {
                        if self.walked.insert(s.id.0) {
                            self.live.insert(s.id.0);
                            next.push((*s, v.clone()));
                        }
                    }
                }
                if let Some(base) = &t.base {
                    self.live.insert(base.id.0);
                }
            }
            frontier = next;
        }
        Ok(())
    }
}

/// What phase 1 decided.
#[derive(Default, Debug)]
struct Plan {
    condemn: Vec<PackId>,
    repack: Vec<(PackId, Vec<BlobEntry>)>,
    young: u64,
    missing: u64,
}

fn plan(inv: &Inventory, live: &HashSet<[u8; 32]>, excluded: &HashSet<PackId>, opts: &GcOptions) -> Plan {
    let now = now_micros();
    let grace = opts.grace.as_micros() as u64;
    let is_young = |i: &PackInfo| now.saturating_sub(i.modified_micros) < grace;
    // Order of preference for owning a blob: young packs (never condemned), then packs with
    // the larger live fraction, then by id (deterministic).
    let mut key: HashMap<PackId, (u8, std::cmp::Reverse<u64>, PackId)> = HashMap::new();
    for (id, info) in &inv.packs {
        let Some(blobs) = &info.blobs else { continue };
        if excluded.contains(id) {
            continue;
        }
        let total: u64 = blobs.iter().map(|b| b.loc.len as u64).sum::<u64>().max(1);
        let live_bytes: u64 = blobs.iter().filter(|b| live.contains(&b.id)).map(|b| b.loc.len as u64).sum();
        key.insert(*id, (u8::from(!is_young(info)), std::cmp::Reverse(live_bytes * 1_000_000 / total), *id));
    }
    let mut owner: HashMap<[u8; 32], PackId> = HashMap::new();
    for (id, info) in &inv.packs {
        let (Some(blobs), Some(k)) = (&info.blobs, key.get(id)) else { continue };
        for b in blobs.iter().filter(|b| live.contains(&b.id)) {
            match owner.get(&b.id) {
                Some(o) if key[o] <= *k => {}
                _ => {
                    owner.insert(b.id, *id);
                }
            }
        }
    }
    // Live blobs held by no pack (those only in packs a pending sweep will keep are not lost).
    let in_excluded: HashSet<[u8; 32]> =
        excluded.iter().filter_map(|id| inv.packs.get(id)?.blobs.as_ref()).flatten().map(|b| b.id).collect();
    let missing = live.iter().filter(|id| !owner.contains_key(*id) && !in_excluded.contains(*id)).count() as u64;
    let mut p = Plan { missing, ..Plan::default() };
    for (id, info) in &inv.packs {
        let (Some(blobs), true) = (&info.blobs, key.contains_key(id)) else { continue };
        if is_young(info) {
            p.young += 1;
            continue;
        }
        let total: u64 = blobs.iter().map(|b| b.loc.len as u64).sum::<u64>().max(1);
        let owned: Vec<BlobEntry> = blobs.iter().filter(|b| owner.get(&b.id) == Some(id)).copied().collect();
        let owned_bytes: u64 = owned.iter().map(|b| b.loc.len as u64).sum();
        if owned.is_empty() {
            p.condemn.push(*id);
        } else if (owned_bytes as f64) < opts.repack_below * total as f64 {
            p.repack.push((*id, owned));
        }
    }
    p
}

/// Copy the owned blobs of mostly-dead packs into new packs. Returns the packs that may now be
/// condemned (every owned blob copied and verified) and the new packs' index.
fn repack(
    repo: &Repo,
    inv: &Inventory,
    work: &[(PackId, Vec<BlobEntry>)],
    threads: usize,
    cancel: &CancellationToken,
    report: &mut GcReport,
) -> Result<(Vec<PackId>, IndexFile)> {
    let store = repo.store();
    let uploader = Arc::new(Uploader::new(store.clone(), 3));
    let pack_size = repo.config().pack_size as usize;
    let data = PackWriter::new(PackKind::Data, pack_size, uploader.clone());
    let trees = PackWriter::new(PackKind::Tree, (pack_size / 4).max(1 << 20), uploader.clone());
    let corrupt = Mutex::new(Vec::new());
    let results = par_map(work, threads.min(4), |(id, owned)| -> Result<bool> {
        if cancel.is_cancelled() {
            return Err(Error::Aborted);
        }
        let kind = inv.packs[id].kind;
        let bytes = match inv.tree_bytes.get(id) {
            Some(b) => b.clone(),
            None => store.get(&pack_path(kind, id))?.ok_or_else(|| Error::MissingObject {
                object: pack_path(kind, id),
                reason: "vanished while gc was repacking it".into(),
            })?,
        };
        let writer = if kind == PackKind::Tree { &trees } else { &data };
        let mut all_ok = true;
        for b in owned {
            match pack::blob_bytes(&bytes, &b.loc).map(|s| Repo::verify_stored(kind, b, s.clone()).map(|()| s)) {
                Some(Ok(s)) => {
                    writer.add(b.id, b.raw_len, b.loc.codec, &s)?;
                }
                Some(Err(e)) => {
                    corrupt.lock().expect("poisoned").push(e.to_string());
                    all_ok = false;
                }
                None => {
                    corrupt.lock().expect("poisoned").push(format!(
                        "{}: blob {} lies beyond the end of the pack",
                        pack_path(kind, id),
                        hex::encode(b.id)
                    ));
                    all_ok = false;
                }
            }
        }
        Ok(all_ok)
    });
    let mut done = Vec::new();
    let mut first_err = None;
    for ((id, owned), r) in work.iter().zip(results) {
        match r {
            Ok(true) => {
                done.push(*id);
                report.packs_repacked += 1;
                report.blobs_repacked += owned.len() as u64;
            }
            Ok(false) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let flushed = data.flush().and_then(|()| trees.flush());
    let finished = uploader.finish();
    if let Some(e) = first_err {
        return Err(e);
    }
    flushed?;
    finished?;
    report.corrupt_blobs.extend(corrupt.into_inner().expect("poisoned"));
    let (mut packs, mut blobs, bytes) = data.written();
    let (tp, tb, tbytes) = trees.written();
    packs.extend(tp);
    blobs.extend(tb);
    report.bytes_repacked += bytes + tbytes;
    Ok((done, IndexFile { packs, blobs }))
}

/// Take gc's lease, making sure no other gc runs at the same time: both write their lease and
/// then list; the older lease wins, the other backs off.
fn exclusive_lease(repo: &Repo, ttl: Duration) -> Result<Lease> {
    let mine = Lease::acquire(repo.store(), LeaseKind::Gc, ttl)?;
    let now = now_micros();
    let others: Vec<lease::LeaseRecord> = lease::list(repo.store())?
        .into_iter()
        .filter_map(|(_, r)| r)
        .filter(|r| r.kind == LeaseKind::Gc && r.is_live(now) && r.id.as_str() < mine.id())
        .collect();
    if let Some(o) = others.first() {
        return Err(Error::Busy(format!(
            "another gc is running (lease {} of pid {} on {}, renewed {}); try again when it has finished",
            o.id,
            o.pid,
            o.host,
            crate::time::micros_display(o.renewed_micros)
        )));
    }
    Ok(mine)
}

/// Run garbage collection: finish the sweeps whose creates are done, condemn (and repack) what
/// no live version needs, and sweep at once when no create is running.
///
/// # Errors
/// [`Error::Busy`] when another gc runs; [`Error::Aborted`]; store errors. A failure leaves a
/// valid store; the next run continues.
pub fn run(repo: &Repo, opts: &GcOptions, progress: Arc<Progress>, cancel: CancellationToken) -> Result<GcReport> {
    let repo = repo.with_progress(progress.clone());
    let threads = opts.threads.max(1);
    let mut report = GcReport { dry_run: opts.dry_run, ..GcReport::default() };
    let lease = if opts.dry_run { None } else { Some(exclusive_lease(&repo, opts.lease_ttl)?) };
    let check_cancel = || if cancel.is_cancelled() { Err(Error::Aborted) } else { Ok(()) };
    if !opts.dry_run {
        report.leases_removed = remove_dead_leases(&repo)?;
    }

    let mut inv = Inventory::build(&repo, threads)?;
    report.packs_before = inv.packs.len() as u64;
    report.bytes_before = inv.packs.values().map(|p| p.size).sum();
    let versions = repo.versions(None)?;
    report.versions = versions.len() as u64;
    let mut marker = Marker::default();
    marker.mark(&repo, &inv, &versions, threads)?;
    check_cancel()?;

    // Sweeps of earlier runs first. A pack condemned by another record is never counted as
    // the copy that lets a condemned pack go.
    // Records whose sweep waits, with the leases it waits for (none listed in a dry run).
    let mut pending: Vec<(GcRecord, Vec<String>)> = Vec::new();
    let earlier = records(repo.store())?;
    for (i, rec) in earlier.iter().enumerate() {
        if opts.dry_run {
            pending.push((rec.clone(), Vec::new()));
            continue;
        }
        let others: HashSet<PackId> = pending
            .iter()
            .map(|(r, _)| r)
            .chain(&earlier[i + 1..])
            .flat_map(|r| r.condemned.iter().map(|c| c.pack))
            .collect();
        if let Some(waiting) = sweep(&repo, rec, &mut inv, &mut marker, &others, threads, lease.as_ref(), &mut report)?
        {
            pending.push((rec.clone(), waiting));
        }
        check_cancel()?;
    }

    let excluded: HashSet<PackId> = pending.iter().flat_map(|(r, _)| r.condemned.iter().map(|c| c.pack)).collect();
    let plan = plan(&inv, &marker.live, &excluded, opts);
    report.live_blobs = marker.live.len() as u64;
    report.packs_young = plan.young;
    report.missing_blobs = plan.missing;
    report.unreadable_packs = inv.unreadable.iter().map(|(id, why)| format!("{id}: {why}")).collect();
    if plan.missing > 0 {
        tracing::warn!(missing = plan.missing, "live blobs found in no readable pack: run `ccfs check`");
    }
    if opts.dry_run {
        report.packs_condemned = (plan.condemn.len() + plan.repack.len()) as u64;
        report.packs_repacked = plan.repack.len() as u64;
        report.blobs_repacked = plan.repack.iter().map(|(_, b)| b.len() as u64).sum();
        report.bytes_deleted =
            plan.condemn.iter().chain(plan.repack.iter().map(|(id, _)| id)).map(|id| inv.packs[id].size).sum();
        report.pending = pending_report(pending);
        return Ok(report);
    }

    let mut condemn = plan.condemn.clone();
    if !plan.repack.is_empty() {
        let (done, index) = repack(&repo, &inv, &plan.repack, threads, &cancel, &mut report)?;
        check_cancel()?;
        if !index.packs.is_empty() {
            // The copies must be findable before their originals are condemned.
            let path = format!("index/gc-{}-{}", now_micros(), uuid::Uuid::new_v4().simple());
            repo.store().put(&path, Bytes::from(codec::encode_object(ObjectKind::Index, &index)))?;
            inv.add_written(&index, &path);
        }
        condemn.extend(done);
    }

    if !condemn.is_empty() {
        check_cancel()?;
        let now = now_micros();
        let rec_id = format!("{now:020}-{}", uuid::Uuid::new_v4().simple());
        let mut rec = GcRecord {
            id: rec_id.clone(),
            created_micros: now,
            condemned: condemn.iter().map(|id| CondemnedPack { kind: inv.packs[id].kind, pack: *id }).collect(),
            waits_for: None,
        };
        let path = record_path(&rec_id);
        repo.store().put(&path, Bytes::from(serde_json::to_vec_pretty(&rec).expect("record serializes")))?;
        // Listed after the record exists: a create missing here sees the record.
        rec.waits_for = Some(lease::live_ids(repo.store(), LeaseKind::Create)?);
        repo.store().put(&path, Bytes::from(serde_json::to_vec_pretty(&rec).expect("record serializes")))?;
        report.packs_condemned = rec.condemned.len() as u64;
        if let Some(waiting) =
            sweep(&repo, &rec, &mut inv, &mut marker, &excluded, threads, lease.as_ref(), &mut report)?
        {
            pending.push((rec, waiting));
        }
    } else if inv.indexes.len() > 1 && pending.is_empty() {
        // Nothing to delete, but many small indexes: merge them (creates load them all).
        consolidate(&repo, &mut inv, threads, &mut report)?;
    }

    report.stats_deleted += delete_stats_of_deleted(&repo, &versions)?;
    report.pending = pending_report(pending);
    drop(lease);
    Ok(report)
}

fn pending_report(pending: Vec<(GcRecord, Vec<String>)>) -> Vec<PendingSweep> {
    pending
        .into_iter()
        .map(|(r, waiting_for)| PendingSweep { record: r.id, packs: r.condemned.len() as u64, waiting_for })
        .collect()
}

/// Delete leases that no longer count (their process was killed): they only clutter listings.
fn remove_dead_leases(repo: &Repo) -> Result<u64> {
    let now = now_micros();
    let mut n = 0;
    for (id, rec) in lease::list(repo.store())? {
        if rec.is_some_and(|r| !r.is_live(now)) {
            repo.store().delete(&lease::lease_path(&id))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Leases a record's sweep must still wait for.
fn waiting_for(repo: &Repo, rec: &GcRecord) -> Result<Vec<String>> {
    match &rec.waits_for {
        Some(ids) => {
            let mut live = Vec::new();
            for id in ids {
                if lease::is_live(repo.store(), id)? {
                    live.push(id.clone());
                }
            }
            Ok(live)
        }
        None => lease::live_ids(repo.store(), LeaseKind::Create),
    }
}

/// Phase 2 for one record. Returns the leases it must wait for, if any (then nothing is done).
#[allow(clippy::too_many_arguments)]
fn sweep(
    repo: &Repo,
    rec: &GcRecord,
    inv: &mut Inventory,
    marker: &mut Marker,
    other_pending: &HashSet<PackId>,
    threads: usize,
    lease: Option<&Lease>,
    report: &mut GcReport,
) -> Result<Option<Vec<String>>> {
    let waiting = waiting_for(repo, rec)?;
    if !waiting.is_empty() {
        return Ok(Some(waiting));
    }
    // Every create that could have used a condemned pack is done: look at the versions now.
    // The pack inventory need not be listed again: only gc deletes packs (one gc at a time), and
    // packs that appeared since can only be extra copies, which the sweep may ignore (it then
    // keeps more).
    let versions = repo.versions(None)?;
    marker.mark(repo, inv, &versions, threads)?;
    let condemned: HashSet<PackId> = rec.condemned.iter().map(|c| c.pack).collect();
    // Live blobs with a copy outside every condemned pack.
    let mut safe_copies: HashSet<[u8; 32]> = HashSet::new();
    for (id, info) in &inv.packs {
        if condemned.contains(id) || other_pending.contains(id) {
            continue;
        }
        for b in info.blobs.iter().flatten() {
            if marker.live.contains(&b.id) {
                safe_copies.insert(b.id);
            }
        }
    }
    let mut doomed: Vec<(PackId, PackKind, u64)> = Vec::new();
    for c in &rec.condemned {
        let Some(info) = inv.packs.get(&c.pack) else { continue }; // already deleted
        let needed = match &info.blobs {
            Some(blobs) => blobs.iter().any(|b| marker.live.contains(&b.id) && !safe_copies.contains(&b.id)),
            None => true,
        };
        if needed {
            tracing::info!(pack = %c.pack, "condemned pack is needed again (a newer version uses it); kept");
        } else {
            doomed.push((c.pack, c.kind, info.size));
        }
    }
    if let Some(l) = lease {
        l.ensure_valid()?;
    }
    let store = repo.store();
    let results = par_map(&doomed, threads, |(id, kind, _)| store.delete(&pack_path(*kind, id)));
    for ((id, _, size), r) in doomed.iter().zip(results) {
        r?;
        inv.packs.remove(id);
        inv.tree_bytes.remove(id);
        report.packs_deleted += 1;
        report.bytes_deleted += size;
    }
    // No index may name a deleted pack once the record is gone.
    consolidate(repo, inv, threads, report)?;
    store.delete(&record_path(&rec.id))?;
    report.sweeps_completed += 1;
    Ok(None)
}

/// Write one index of every pack whose contents are known, then delete the indexes it replaces.
fn consolidate(repo: &Repo, inv: &mut Inventory, threads: usize, report: &mut GcReport) -> Result<()> {
    let store = repo.store();
    let mut index = IndexFile::default();
    for (id, info) in &inv.packs {
        if let Some(blobs) = &info.blobs {
            index.packs.push(*id);
            index.blobs.extend(blobs.iter().copied());
        }
    }
    let old = std::mem::take(&mut inv.indexes);
    if !index.packs.is_empty() {
        let path = format!("index/gc-{}-{}", now_micros(), uuid::Uuid::new_v4().simple());
        store.put(&path, Bytes::from(codec::encode_object(ObjectKind::Index, &index)))?;
        inv.indexes.push(path);
    }
    let results = par_map(&old, threads, |p| store.delete(p));
    for r in results {
        r?;
    }
    report.indexes_merged += old.len() as u64;
    Ok(())
}

/// Statistics objects of deleted versions (named by their deletion records) are removed.
fn delete_stats_of_deleted(repo: &Repo, live: &[Arc<Manifest>]) -> Result<u64> {
    let store = repo.store();
    let live_uids: HashSet<&str> = live.iter().map(|m| m.version_uid.as_str()).collect();
    let stats: HashSet<String> =
        store.list("stats")?.into_iter().filter_map(|m| m.location.filename().map(str::to_string)).collect();
    // Only when some statistics object belongs to no listed version are deletion records read.
    if stats.iter().all(|s| live_uids.contains(s.as_str())) {
        return Ok(0);
    }
    let mut n = 0;
    for meta in store.list("deleted")? {
        let Some(raw) = store.get(meta.location.as_ref())? else { continue };
        let Ok(m) = serde_json::from_slice::<Manifest>(&raw) else { continue };
        if stats.contains(&m.version_uid) && !live_uids.contains(m.version_uid.as_str()) {
            store.delete(&format!("stats/{}", m.version_uid))?;
            n += 1;
        }
    }
    Ok(n)
}
