//! A bounded on-disk block cache keyed by block hash: shared by every version and every mount
//! that points at the same directory, verified on read (a corrupt entry is a miss and is
//! removed), evicted least-recently-used by total bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::ids::BlockId;

/// The cache directory and its in-memory index (block → size), whose evictions delete files.
pub struct DiskCache {
    dir: PathBuf,
    index: moka::sync::Cache<BlockId, u32>,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache").field("dir", &self.dir).finish()
    }
}

fn path_of(dir: &Path, id: &BlockId) -> PathBuf {
    let hex = id.to_hex();
    dir.join(&hex[..2]).join(hex)
}

impl DiskCache {
    /// Open (creating) a cache of at most `max_bytes` in `dir`; existing entries are indexed,
    /// oldest first, and trimmed to the bound.
    ///
    /// # Errors
    /// The directory cannot be created or read.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Arc<DiskCache>> {
        std::fs::create_dir_all(dir)?;
        let d = dir.to_path_buf();
        let index = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &BlockId, n: &u32| *n)
            .eviction_listener(move |id: Arc<BlockId>, _n, cause| {
                if cause.was_evicted() {
                    let _ = std::fs::remove_file(path_of(&d, &id));
                }
            })
            .build();
        let mut existing = Vec::new();
        for sub in std::fs::read_dir(dir)? {
            let sub = sub?.path();
            if !sub.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&sub)? {
                let f = f?;
                let (Ok(md), Some(name)) = (f.metadata(), f.file_name().to_str().map(str::to_string)) else { continue };
                match name.parse::<BlockId>() {
                    Ok(id) => existing.push((md.modified().ok(), id, md.len() as u32)),
                    Err(_) => {
                        let _ = std::fs::remove_file(f.path()); // a temporary file of a killed writer
                    }
                }
            }
        }
        existing.sort();
        for (_, id, n) in existing {
            index.insert(id, n);
        }
        index.run_pending_tasks();
        Ok(Arc::new(DiskCache { dir: dir.to_path_buf(), index }))
    }

    /// The block, if cached and intact. A corrupt entry is removed and reported as a miss.
    pub fn get(&self, id: &BlockId) -> Option<Bytes> {
        self.index.get(id)?;
        let path = path_of(&self.dir, id);
        match std::fs::read(&path) {
            Ok(data) if BlockId::of(&data) == *id => Some(Bytes::from(data)),
            Ok(_) => {
                tracing::warn!(block = %id, path = %path.display(), "corrupt disk-cache entry dropped");
                self.index.invalidate(id);
                let _ = std::fs::remove_file(&path);
                None
            }
            Err(_) => {
                self.index.invalidate(id);
                None
            }
        }
    }

    /// Store a block (best effort: a full disk only costs the cache entry).
    pub fn put(&self, id: &BlockId, data: &[u8]) {
        if self.index.contains_key(id) {
            return;
        }
        let path = path_of(&self.dir, id);
        let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
        let res = std::fs::create_dir_all(path.parent().expect("cache paths have a parent"))
            .and_then(|_| std::fs::write(&tmp, data))
            .and_then(|_| std::fs::rename(&tmp, &path));
        match res {
            Ok(()) => self.index.insert(*id, data.len() as u32),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::debug!(block = %id, error = %e, "disk cache write failed");
            }
        }
    }

    /// Bytes currently indexed.
    pub fn size(&self) -> u64 {
        self.index.run_pending_tasks();
        self.index.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_verify_evict_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let c = DiskCache::open(tmp.path(), 10_000).unwrap();
        let a = vec![1u8; 4000];
        let ida = BlockId::of(&a);
        c.put(&ida, &a);
        assert_eq!(c.get(&ida).unwrap(), a);
        // corrupt entry: a miss, and removed
        std::fs::write(path_of(tmp.path(), &ida), b"garbage").unwrap();
        assert!(c.get(&ida).is_none());
        assert!(!path_of(tmp.path(), &ida).exists());
        // bounded by bytes: three 4000-byte blocks do not fit in 10,000
        let blocks: Vec<Vec<u8>> = (2..5u8).map(|i| vec![i; 4000]).collect();
        for b in &blocks {
            c.put(&BlockId::of(b), b);
        }
        assert!(c.size() <= 10_000, "{}", c.size());
        let files =
            std::fs::read_dir(tmp.path()).unwrap().flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap()).count();
        assert!(files <= 2, "{files} files left");
        // a new process sees what is on disk
        let last = BlockId::of(&blocks[2]);
        if path_of(tmp.path(), &last).exists() {
            let c2 = DiskCache::open(tmp.path(), 10_000).unwrap();
            assert_eq!(c2.get(&last).unwrap(), blocks[2]);
        }
    }
}
