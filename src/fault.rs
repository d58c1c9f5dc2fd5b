//! Fault injection for tests: an object-store wrapper that makes requests fail or kills the
//! process at a chosen point. The `ccfs` binary enables it from the `CCFS_FAULTS` environment
//! variable (never set in normal use), so end-to-end tests can stop a real process exactly at
//! its Nth write, or make every Nth request fail, and prove that nothing is lost.
//!
//! Spec: comma-separated `key=value` pairs:
//! - `crash_after_writes=N`: the process aborts (like `kill -9`) instead of performing its
//!   (N+1)th mutating request (put or delete); N writes have completed.
//! - `fail_every=K`: every Kth request fails with a transient (retryable) error.
//! - `fail_after=N`: every request after the Nth fails (a store that went away).
//! - `delay_ms=N`: every write takes N ms longer (a slow store; widens race windows).
//! - `read_delay_ms=N`: every read takes N ms longer (a slow restore).
//! - `fail_writes_under=PREFIX`: every write of an object under PREFIX fails (persistently).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};

use crate::error::{Error, Result};

/// What to inject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub crash_after_writes: Option<u64>,
    pub fail_every: Option<u64>,
    pub fail_after: Option<u64>,
    pub delay_ms: Option<u64>,
    pub read_delay_ms: Option<u64>,
    pub fail_writes_under: Option<String>,
}

impl FaultPlan {
    /// Parse a spec such as `crash_after_writes=3` or `fail_every=5,fail_after=100`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown key or a bad number.
    pub fn parse(spec: &str) -> Result<FaultPlan> {
        let mut plan = FaultPlan::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| Error::InvalidArgument(format!("fault spec {part:?}: use key=value")))?;
            if k == "fail_writes_under" {
                plan.fail_writes_under = Some(v.to_string());
                continue;
            }
            let n: u64 = v.parse().map_err(|_| Error::InvalidArgument(format!("fault spec {part:?}: not a number")))?;
            match k {
                "crash_after_writes" => plan.crash_after_writes = Some(n),
                "fail_every" if n >= 2 => plan.fail_every = Some(n),
                "fail_after" => plan.fail_after = Some(n),
                "delay_ms" => plan.delay_ms = Some(n),
                "read_delay_ms" => plan.read_delay_ms = Some(n),
                _ => return Err(Error::InvalidArgument(format!("fault spec {part:?}: unknown key or value"))),
            }
        }
        Ok(plan)
    }
}

/// An object store that injects the faults of a [`FaultPlan`].
#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    plan: FaultPlan,
    writes: AtomicU64,
    requests: AtomicU64,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>, plan: FaultPlan) -> FaultStore {
        FaultStore { inner, plan, writes: AtomicU64::new(0), requests: AtomicU64::new(0) }
    }

    fn request(&self) -> object_store::Result<()> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if self.plan.fail_after.is_some_and(|a| n > a) {
            return Err(injected("store unavailable (injected persistent fault)"));
        }
        if self.plan.fail_every.is_some_and(|k| n.is_multiple_of(k)) {
            return Err(injected("connection reset (injected transient fault)"));
        }
        Ok(())
    }

    fn write(&self, location: Option<&Path>) -> object_store::Result<()> {
        if let (Some(prefix), Some(l)) = (&self.plan.fail_writes_under, location) {
            if l.as_ref().starts_with(prefix.as_str()) {
                return Err(object_store::Error::PermissionDenied {
                    path: l.to_string(),
                    source: "writes here are refused (injected persistent fault)".into(),
                });
            }
        }
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if self.plan.crash_after_writes.is_some_and(|c| n >= c) {
            eprintln!("ccfs: fault injection: aborting before write {} (crash_after_writes={n})", n + 1);
            std::process::abort();
        }
        self.request()
    }
}

fn injected(msg: &'static str) -> object_store::Error {
    object_store::Error::Generic { store: "fault", source: msg.into() }
}

impl std::fmt::Display for FaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl FaultStore {
    async fn read(&self) -> object_store::Result<()> {
        self.request()?;
        if let Some(ms) = self.plan.read_delay_ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.write(Some(location))?;
        if let Some(ms) = self.plan.delay_ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.write(Some(location))?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.read().await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.read().await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if let Err(e) = self.write(None) {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.request() {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.request()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.write(Some(to))?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            FaultPlan::parse("crash_after_writes=3, fail_every=5").unwrap(),
            FaultPlan { crash_after_writes: Some(3), fail_every: Some(5), ..Default::default() }
        );
        assert_eq!(FaultPlan::parse("").unwrap(), FaultPlan::default());
        assert!(FaultPlan::parse("fail_every=1").is_err());
        assert!(FaultPlan::parse("explode=1").is_err());
        assert!(FaultPlan::parse("fail_after").is_err());
        assert_eq!(FaultPlan::parse("fail_writes_under=packs/").unwrap().fail_writes_under.as_deref(), Some("packs/"));
    }

    #[test]
    fn injects_transient_and_persistent_faults() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mem: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let plan = FaultPlan { fail_every: Some(3), fail_after: Some(7), ..Default::default() };
        let f = FaultStore::new(mem, plan);
        let results: Vec<bool> = (0..9)
            .map(|_| {
                rt.block_on(f.put_opts(&Path::from("x"), PutPayload::from_static(b"1"), PutOptions::default())).is_ok()
            })
            .collect();
        assert_eq!(results, vec![true, true, false, true, true, false, true, false, false]);
    }
}
