//! Store administration: deleting versions (the version disappears at once; its unique data is
//! reclaimed by garbage collection) and clearing a whole store.

use std::sync::Arc;

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::ids::VersionId;
use crate::progress::{add, Progress};
use crate::repo::Repo;
use crate::CancellationToken;

/// Path of a version's deletion record.
pub fn tombstone_path(id: &VersionId) -> String {
    format!("deleted/{}/{:020}", id.branch, id.micros)
}

/// Delete a version: its manifest is copied to `deleted/<branch>/<micros>` (which counts the
/// deletion and keeps the record for garbage collection), then removed, so the version leaves
/// every listing at once. Versions that name it as parent keep all their contents (trees and
/// blocks are never removed here).
///
/// # Errors
/// [`Error::VersionNotFound`]; store errors.
pub fn delete_version(repo: &Repo, id: &VersionId, progress: &Progress) -> Result<()> {
    let path = id.manifest_path();
    let raw = repo.store().get(&path)?.ok_or_else(|| Error::VersionNotFound(id.to_string()))?;
    repo.store().put(&tombstone_path(id), raw)?;
    repo.store().delete(&path)?;
    add(&progress.fs.fs_files_deleted, 1);
    repo.clear_caches();
    Ok(())
}

/// Delete every object of the store (header last), `threads` deletes at a time.
///
/// # Errors
/// [`Error::Aborted`] when cancelled (the store may be partly cleared but its header stays until
/// the end, so it remains a valid, smaller store); store errors.
pub fn clear_store(repo: &Repo, threads: usize, progress: Arc<Progress>, cancel: CancellationToken) -> Result<u64> {
    let store = repo.store().with_progress(progress.clone());
    let objects = store.list("")?;
    let total = objects.len() as u64;
    let mut paths: Vec<(String, u64)> = objects
        .into_iter()
        .map(|m| (m.location.to_string(), m.size))
        .filter(|(p, _)| p != crate::format::HEADER_PATH)
        .collect();
    // Manifests first: a version disappears before any of its data does.
    paths.sort_by_key(|(p, _)| !p.starts_with("versions/"));
    let rt = store.runtime().clone();
    let inner = store.object_store().clone();
    let p2 = progress.clone();
    rt.block_on(async move {
        let results = futures::stream::iter(paths.into_iter().map(|(p, size)| {
            let (inner, cancel, progress) = (inner.clone(), cancel.clone(), p2.clone());
            async move {
                if cancel.is_cancelled() {
                    return Err(Error::Aborted);
                }
                use object_store::ObjectStoreExt;
                match inner.delete(&object_store::path::Path::from(p.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        add(&progress.bucket.delete_blobs_ops, 1);
                        add(&progress.bucket.delete_blobs_bytes, size);
                        Ok(())
                    }
                    Err(e) => Err(Error::Store { op: "delete", object: p, source: e }),
                }
            }
        }))
        .buffer_unordered(threads.max(1))
        .collect::<Vec<_>>()
        .await;
        results.into_iter().collect::<Result<Vec<()>>>()
    })?;
    store.delete(crate::format::HEADER_PATH)?;
    repo.clear_caches();
    Ok(total)
}
