//! Operations: long work (create, checkout, delete, clear) on their own threads, with progress
//! written to SQLite every `progressrate` seconds and their outcome recorded when they end.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ccfs::progress::get;
use ccfs::{CancellationToken, Progress};
use control_api::wire::OperationProgress;
use serde_json::{json, Value};

use super::db::Db;

/// A running operation.
pub struct Running {
    pub progress: Arc<Progress>,
    pub cancel: CancellationToken,
    pub rate: Duration,
    pub last_flush: Instant,
}

/// Shared by the backend and the operation threads.
pub struct Ops {
    pub db: Arc<Mutex<Db>>,
    pub running: Mutex<HashMap<i64, Running>>,
}

fn group(counters: BTreeMap<&'static str, u64>, elapsed: f64) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    let secs = elapsed.max(0.001);
    for (k, v) in counters {
        m.insert(k.to_string(), json!(v));
        m.insert(format!("{k}_per_sec"), json!((v as f64 / secs).round() as u64));
    }
    m.insert("elapsed_sec".into(), json!(elapsed.floor() as u64));
    m.insert("_duration_sec".into(), json!(elapsed.floor() as u64));
    m.insert("update_time".into(), json!(chrono::Utc::now().format("%Y.%m.%d-%H:%M:%S").to_string()));
    m
}

/// The guide's `operation_progress` of a progress object.
pub fn progress_json(p: &Progress) -> String {
    let elapsed = p.elapsed_secs();
    let op =
        OperationProgress { progress: group(p.fs.snapshot(), elapsed), bucket: group(p.bucket.snapshot(), elapsed) };
    serde_json::to_string(&op).expect("progress serializes")
}

/// Skipped files as a path → reason map.
pub fn skipped_json(p: &Progress) -> String {
    let m: BTreeMap<String, String> = p.skipped().into_iter().map(|s| (s.path, s.reason)).collect();
    serde_json::to_string(&m).expect("skipped list serializes")
}

impl Ops {
    /// Record and start an operation running `work` on its own thread.
    ///
    /// # Errors
    /// SQLite errors recording it.
    pub fn start(
        self: &Arc<Self>,
        op_type: &str,
        ccstore_ref: &str,
        description: String,
        progressrate: Option<u32>,
        work: impl FnOnce(Arc<Progress>, CancellationToken) -> ccfs::Result<Value> + Send + 'static,
    ) -> Result<(i64, String), rusqlite::Error> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let id = self.db.lock().expect("db poisoned").op_insert(&uuid, op_type, ccstore_ref, &description)?;
        let progress = Arc::new(Progress::new());
        let cancel = CancellationToken::new();
        let rate = Duration::from_secs(progressrate.unwrap_or(1).max(1) as u64);
        self.running.lock().expect("ops poisoned").insert(
            id,
            Running { progress: progress.clone(), cancel: cancel.clone(), rate, last_flush: Instant::now() },
        );
        let ops = self.clone();
        let spawned = std::thread::Builder::new().name(format!("ccfs-op-{id}")).spawn(move || {
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(progress.clone(), cancel.clone())));
            let (status, result, output) = match res {
                Ok(Ok(v)) => ("complete", v.clone(), v.to_string()),
                Ok(Err(e)) if matches!(e.root(), ccfs::Error::Aborted) || cancel.is_cancelled() => {
                    ("aborted", json!({"status": "aborted"}), "aborted by request".to_string())
                }
                Ok(Err(e)) => ("failed", json!({"status": "error", "error": e.to_string()}), e.to_string()),
                Err(_) => ("failed", json!({"status": "error", "error": "the operation panicked"}), "panic".into()),
            };
            tracing::info!(id, status, "operation finished");
            let db = ops.db.lock().expect("db poisoned");
            if let Err(e) = db.op_finish(
                id,
                status,
                &progress_json(&progress),
                &skipped_json(&progress),
                &result.to_string(),
                &output,
            ) {
                tracing::error!(id, error = %e, "cannot record operation outcome");
            }
            drop(db);
            ops.running.lock().expect("ops poisoned").remove(&id);
        });
        if let Err(e) = spawned {
            self.running.lock().expect("ops poisoned").remove(&id);
            let _ = self.db.lock().expect("db poisoned").op_finish(id, "failed", "{}", "{}", "{}", &e.to_string());
        }
        Ok((id, uuid))
    }

    /// Record an operation whose work happens elsewhere (a download streamed by the HTTP
    /// layer): the returned guard counts bytes and finishes the record when dropped.
    ///
    /// # Errors
    /// SQLite errors recording it.
    pub fn record(
        self: &Arc<Self>,
        op_type: &str,
        ccstore_ref: &str,
        description: String,
    ) -> Result<Tracked, rusqlite::Error> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let id = self.db.lock().expect("db poisoned").op_insert(&uuid, op_type, ccstore_ref, &description)?;
        let progress = Arc::new(Progress::new());
        let cancel = CancellationToken::new();
        self.running.lock().expect("ops poisoned").insert(
            id,
            Running { progress: progress.clone(), cancel, rate: Duration::from_secs(1), last_flush: Instant::now() },
        );
        Ok(Tracked { ops: self.clone(), id, progress, error: Mutex::new(None) })
    }

    /// Write the progress of running operations whose rate has elapsed (called every 250 ms).
    pub fn flush(&self) {
        let due: Vec<(i64, String, String)> = {
            let mut running = self.running.lock().expect("ops poisoned");
            running
                .iter_mut()
                .filter(|(_, r)| r.last_flush.elapsed() >= r.rate)
                .map(|(id, r)| {
                    r.last_flush = Instant::now();
                    (*id, progress_json(&r.progress), skipped_json(&r.progress))
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let db = self.db.lock().expect("db poisoned");
        for (id, p, s) in due {
            if let Err(e) = db.op_progress(id, &p, &s) {
                tracing::warn!(id, error = %e, "cannot record progress");
            }
        }
    }

    /// Live progress and skipped list of a running operation.
    pub fn live(&self, id: i64) -> Option<(String, String, u64)> {
        let running = self.running.lock().expect("ops poisoned");
        running
            .get(&id)
            .map(|r| (progress_json(&r.progress), skipped_json(&r.progress), get(&r.progress.fs.fs_files_skipped)))
    }

    pub fn alive(&self) -> Vec<i64> {
        self.running.lock().expect("ops poisoned").keys().copied().collect()
    }

    /// Cancel one operation; whether it was running.
    pub fn cancel(&self, id: i64) -> bool {
        match self.running.lock().expect("ops poisoned").get(&id) {
            Some(r) => {
                r.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancel everything and wait (bounded) for the threads to record their outcome.
    pub fn shutdown(&self, wait: Duration) {
        for r in self.running.lock().expect("ops poisoned").values() {
            r.cancel.cancel();
        }
        let t0 = Instant::now();
        while !self.running.lock().expect("ops poisoned").is_empty() && t0.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An operation tracked by its caller (see [`Ops::record`]); finished when dropped.
pub struct Tracked {
    ops: Arc<Ops>,
    id: i64,
    progress: Arc<Progress>,
    error: Mutex<Option<String>>,
}

impl Tracked {
    /// Count bytes delivered.
    pub fn sent(&self, n: u64) {
        ccfs::progress::add(&self.progress.fs.fs_files_bytes_read, n);
        ccfs::progress::add(&self.progress.fs.fs_files_bytes_written, n);
    }

    /// Record why the work failed.
    pub fn fail(&self, why: &str) {
        self.error.lock().expect("tracked poisoned").get_or_insert_with(|| why.to_string());
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let sent = get(&self.progress.fs.fs_files_bytes_written);
        let (status, result) = match self.error.lock().expect("tracked poisoned").take() {
            None => ("complete", json!({"status": "OK", "bytes_sent": sent})),
            Some(e) => ("failed", json!({"status": "error", "error": e, "bytes_sent": sent})),
        };
        let db = self.ops.db.lock().expect("db poisoned");
        if let Err(e) = db.op_finish(self.id, status, &progress_json(&self.progress), "{}", &result.to_string(), status)
        {
            tracing::error!(id = self.id, error = %e, "cannot record operation outcome");
        }
        drop(db);
        self.ops.running.lock().expect("ops poisoned").remove(&self.id);
    }
}
