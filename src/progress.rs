//! Progress of long operations: counters named as in the API guide, shared by the engine (which
//! increments them), the CLI (which draws a bar) and the control plane (which reports them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::format::Skipped;

macro_rules! counters {
    ($(#[$doc:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $name {
            $(pub $field: AtomicU64,)*
        }

        impl $name {
            /// Counter values by their API name.
            pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
                let mut m = BTreeMap::new();
                $(m.insert(stringify!($field), self.$field.load(Ordering::Relaxed));)*
                m
            }
        }
    };
}

counters!(
    /// File-system side counters (the guide's `progress` group).
    FsCounters {
        fs_created_dirs,
        fs_created_files,
        fs_files_deleted,
        fs_files_bytes_read,
        fs_files_bytes_deleted,
        fs_files_bytes_written,
        fs_files_dedup,
        fs_dirs_dedup,
        fs_dirs_buckets_dedup,
        fs_dirs_deleted,
        fs_files_skipped,
    }
);

counters!(
    /// Object-store side counters (the guide's `bucket` group).
    BucketCounters {
        read_blobs_ops,
        read_blobs_bytes,
        read_metadata_ops,
        write_blobs_ops,
        write_blobs_bytes,
        delete_blobs_ops,
        delete_blobs_bytes,
        read_ref_count_obj_ops,
        create_ref_count_obj_ops,
        inc_ref_count_obj_ops,
        delete_ref_counts_ops,
    }
);

/// Progress of one operation. Cheap to update from many threads.
#[derive(Debug)]
pub struct Progress {
    pub fs: FsCounters,
    pub bucket: BucketCounters,
    pub started: Instant,
    skipped: Mutex<Vec<Skipped>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            fs: FsCounters::default(),
            bucket: BucketCounters::default(),
            started: Instant::now(),
            skipped: Mutex::new(Vec::new()),
        }
    }
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a file that could not be read or written; the operation goes on.
    pub fn skip(&self, path: impl Into<String>, reason: impl Into<String>) {
        let s = Skipped { path: path.into(), reason: reason.into() };
        tracing::warn!(path = %s.path, reason = %s.reason, "skipped");
        self.fs.fs_files_skipped.fetch_add(1, Ordering::Relaxed);
        self.skipped.lock().expect("skipped list poisoned").push(s);
    }

    /// Files skipped so far.
    pub fn skipped(&self) -> Vec<Skipped> {
        self.skipped.lock().expect("skipped list poisoned").clone()
    }

    /// Store requests so far (reads, listings, writes, deletes).
    pub fn requests(&self) -> u64 {
        let b = &self.bucket;
        get(&b.read_blobs_ops) + get(&b.read_metadata_ops) + get(&b.write_blobs_ops) + get(&b.delete_blobs_ops)
    }

    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Add `n` to a counter.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Read a counter.
#[inline]
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
