//! Leases: how a running create (or gc) tells garbage collection it is alive.
//!
//! A lease is a small JSON object `leases/<id>` renewed by a heartbeat thread every quarter of
//! its time-to-live. It is not a lock: nobody waits for anybody to acquire. Garbage collection
//! reads leases to know which creates might still commit references to data it wants to delete
//! (see `gc`), and a lease that is not renewed in time simply stops counting, so a killed
//! process never blocks the store for longer than the TTL. A lease of a process on this host
//! whose pid no longer exists stops counting at once.
//!
//! The holder checks its own lease before it commits: if the heartbeat could not renew it for
//! most of the TTL, other processes may already treat it as gone, and the commit is refused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::now_micros;

/// Default time-to-live of a lease.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// What holds a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    Create,
    Gc,
}

/// The body of `leases/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: String,
    pub kind: LeaseKind,
    pub host: String,
    pub pid: u32,
    /// When it was taken (Unix microseconds, holder's clock).
    pub started_micros: u64,
    /// Last renewal (Unix microseconds, holder's clock).
    pub renewed_micros: u64,
    pub ttl_secs: u64,
}

impl LeaseRecord {
    /// Whether the lease still counts at `now` (microseconds): renewed within its TTL, and, on
    /// this host, its process still exists.
    pub fn is_live(&self, now: u64) -> bool {
        if now > self.renewed_micros.saturating_add(self.ttl_secs.saturating_mul(1_000_000)) {
            return false;
        }
        if self.host == hostname() && !pid_exists(self.pid) {
            return false;
        }
        true
    }
}

/// Path of a lease object.
pub fn lease_path(id: &str) -> String {
    format!("leases/{id}")
}

/// This machine's host name (empty if unknown).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn pid_exists(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Every lease in the store with whether it is live now. Unreadable leases count as live (a
/// torn or foreign object must not let gc delete something a running process needs).
///
/// # Errors
/// Store errors.
pub fn list(store: &Store) -> Result<Vec<(String, Option<LeaseRecord>)>> {
    let mut out = Vec::new();
    for meta in store.list("leases")? {
        let Some(name) = meta.location.filename() else { continue };
        let path = meta.location.to_string();
        let rec = match store.get(&path)? {
            None => continue, // released meanwhile
            Some(raw) => serde_json::from_slice::<LeaseRecord>(&raw).ok(),
        };
        out.push((name.to_string(), rec));
    }
    Ok(out)
}

/// Ids of the live leases of one kind (unreadable leases included, see [`list`]).
///
/// # Errors
/// Store errors.
pub fn live_ids(store: &Store, kind: LeaseKind) -> Result<Vec<String>> {
    let now = now_micros();
    Ok(list(store)?
        .into_iter()
        .filter(|(_, r)| r.as_ref().is_none_or(|r| r.kind == kind && r.is_live(now)))
        .map(|(id, _)| id)
        .collect())
}

/// Whether the lease `id` still counts.
///
/// # Errors
/// Store errors.
pub fn is_live(store: &Store, id: &str) -> Result<bool> {
    Ok(match store.get(&lease_path(id))? {
        None => false,
        Some(raw) => serde_json::from_slice::<LeaseRecord>(&raw).map_or(true, |r| r.is_live(now_micros())),
    })
}

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    /// Last successful renewal (this process's clock, micros).
    renewed: AtomicU64,
    failed: AtomicBool,
}

/// A held lease; released (its object deleted) on drop.
pub struct Lease {
    store: Store,
    record: LeaseRecord,
    shared: Arc<Shared>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("record", &self.record).finish()
    }
}

impl Lease {
    /// Write a new lease and start its heartbeat.
    ///
    /// # Errors
    /// Store errors (the lease could not be written).
    pub fn acquire(store: &Store, kind: LeaseKind, ttl: Duration) -> Result<Lease> {
        let ttl_secs = ttl.as_secs().max(1);
        let now = now_micros();
        // Names sort by start time, so the oldest lease of a kind is the first listed.
        let id = format!("{now:020}-{}", uuid::Uuid::new_v4().simple());
        let record = LeaseRecord {
            id: id.clone(),
            kind,
            host: hostname(),
            pid: std::process::id(),
            started_micros: now,
            renewed_micros: now,
            ttl_secs,
        };
        store.put(&lease_path(&id), Bytes::from(serde_json::to_vec(&record).expect("lease serializes")))?;
        let shared = Arc::new(Shared {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            renewed: AtomicU64::new(now),
            failed: AtomicBool::new(false),
        });
        let heartbeat = {
            let (store, shared, mut record) = (store.clone(), shared.clone(), record.clone());
            let every = Duration::from_millis(ttl_secs * 1000 / 4);
            std::thread::Builder::new()
                .name("ccfs-lease".into())
                .spawn(move || loop {
                    {
                        let stop = shared.stop.lock().expect("lease poisoned");
                        let (stop, _) = shared.wake.wait_timeout_while(stop, every, |s| !*s).expect("lease poisoned");
                        if *stop {
                            return;
                        }
                    }
                    record.renewed_micros = now_micros();
                    let body = Bytes::from(serde_json::to_vec(&record).expect("lease serializes"));
                    match store.put(&lease_path(&record.id), body) {
                        Ok(()) => shared.renewed.store(record.renewed_micros, Ordering::SeqCst),
                        Err(e) => {
                            shared.failed.store(true, Ordering::SeqCst);
                            tracing::warn!(lease = %record.id, error = %e, "could not renew lease");
                        }
                    }
                })
                .map_err(|e| Error::Internal(format!("lease thread: {e}")))?
        };
        Ok(Lease { store: store.clone(), record, shared, heartbeat: Some(heartbeat) })
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    pub fn record(&self) -> &LeaseRecord {
        &self.record
    }

    /// Fail unless the lease has been renewed recently enough that nobody can consider it gone:
    /// within three quarters of its TTL.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    pub fn ensure_valid(&self) -> Result<()> {
        let age = now_micros().saturating_sub(self.shared.renewed.load(Ordering::SeqCst));
        if age > self.record.ttl_secs * 750_000 {
            return Err(Error::LeaseExpired {
                lease: self.record.id.clone(),
                age_secs: age / 1_000_000,
                ttl_secs: self.record.ttl_secs,
            });
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self.shared.stop.lock().expect("lease poisoned") = true;
        self.shared.wake.notify_all();
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        if let Err(e) = self.store.delete(&lease_path(&self.record.id)) {
            tracing::warn!(lease = %self.record.id, error = %e, "could not release lease (it expires by itself)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(renewed: u64, ttl: u64, host: &str, pid: u32) -> LeaseRecord {
        LeaseRecord {
            id: "x".into(),
            kind: LeaseKind::Create,
            host: host.into(),
            pid,
            started_micros: 0,
            renewed_micros: renewed,
            ttl_secs: ttl,
        }
    }

    #[test]
    fn liveness() {
        let me = std::process::id();
        assert!(rec(10_000_000, 5, "elsewhere", 1).is_live(14_000_000));
        assert!(!rec(10_000_000, 5, "elsewhere", 1).is_live(16_000_000));
        assert!(rec(10_000_000, 5, &hostname(), me).is_live(11_000_000));
        // A pid that cannot exist on this host: the lease is dead at once.
        assert!(!rec(10_000_000, 5, &hostname(), u32::MAX - 1).is_live(11_000_000));
    }

    #[test]
    fn acquire_renew_release() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Store::open("memory://", rt.handle().clone(), false).unwrap();
        let lease = Lease::acquire(&store, LeaseKind::Create, Duration::from_secs(1)).unwrap();
        assert_eq!(live_ids(&store, LeaseKind::Create).unwrap(), vec![lease.id().to_string()]);
        assert!(live_ids(&store, LeaseKind::Gc).unwrap().is_empty());
        std::thread::sleep(Duration::from_millis(600));
        lease.ensure_valid().unwrap();
        let id = lease.id().to_string();
        assert!(is_live(&store, &id).unwrap());
        drop(lease);
        assert!(!is_live(&store, &id).unwrap());
        assert!(list(&store).unwrap().is_empty());
    }
}
