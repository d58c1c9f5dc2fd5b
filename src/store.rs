//! Object-store access: opening a store from its URL, and the blocking calls the engine makes.
//!
//! All object I/O goes through `object_store`. The engine is written as plain blocking code on
//! worker threads; [`Store`] bridges to the async store with a runtime [`Handle`]. Its methods
//! must not be called from a runtime worker thread (use `spawn_blocking`).

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload};
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::progress::{add, Progress};

/// HTTP client settings of cloud stores: fail fast on a dead endpoint (a few retries, not
/// minutes of them; 5 s to connect), plain HTTP only for an explicit `http://` endpoint.
fn client_settings(endpoint: Option<&str>) -> (object_store::RetryConfig, object_store::ClientOptions) {
    let retry = object_store::RetryConfig {
        max_retries: 4,
        retry_timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    };
    let options = object_store::ClientOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")));
    (retry, options)
}

/// Attempts of a request that fails with a transient error (after the client's own retries).
const ATTEMPTS: u32 = 4;

/// Whether a store error may go away on its own: object_store reports network failures,
/// throttling and 5xx answers that outlived its own retries (and local I/O errors) as `Generic`.
fn transient(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. })
}

/// Run a request, again after 100 ms, 400 ms and 1.6 s while it fails transiently.
async fn with_retry<T, F, Fut>(op: &str, path: &str, mut f: F) -> object_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = object_store::Result<T>>,
{
    let mut delay = std::time::Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if transient(&e) && attempt < ATTEMPTS => {
                tracing::warn!(op, object = path, attempt, error = %e, "transient store error; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Where a store lives, parsed from a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A local directory (`file:///path` or a plain path): the embedded default.
    Local(PathBuf),
    /// A process-local in-memory store (`memory://`), for tests.
    Memory,
    /// An S3 or S3-compatible bucket: `s3://bucket[?endpoint=URL&region=R]`. Credentials come
    /// from [`S3Options`] or the standard `AWS_*` environment.
    S3(S3Options),
    /// A Google Cloud Storage bucket: `gs://bucket?credentials=/path/service-account.json`
    /// (without `credentials`: `GOOGLE_APPLICATION_CREDENTIALS` or the instance's identity).
    Gcs(GcsOptions),
}

/// Options of a Google Cloud Storage bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcsOptions {
    pub bucket: String,
    /// Path of a service-account JSON key.
    pub credentials: Option<PathBuf>,
    /// Another endpoint than storage.googleapis.com (emulators).
    pub base_url: Option<String>,
    /// Requests in flight at most (default [`DEFAULT_MAX_REQUESTS`]).
    pub max_requests: Option<usize>,
}

impl GcsOptions {
    /// The store URL these options stand for.
    pub fn url(&self) -> String {
        let mut q = Vec::new();
        if let Some(c) = &self.credentials {
            q.push(format!("credentials={}", c.display()));
        }
        if let Some(b) = &self.base_url {
            q.push(format!("base_url={b}"));
        }
        bucket_url("gs", &self.bucket, q, self.max_requests)
    }
}

/// Where and how to reach an S3 or S3-compatible bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Options {
    pub bucket: String,
    /// `http(s)://host:port` of an S3-compatible service; AWS when `None`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Requests in flight to this store at most (default [`DEFAULT_MAX_REQUESTS`]).
    pub max_requests: Option<usize>,
}

/// `<scheme>://<bucket>[?<params>&max_requests=N]`.
fn bucket_url(scheme: &str, bucket: &str, mut params: Vec<String>, max_requests: Option<usize>) -> String {
    if let Some(n) = max_requests {
        params.push(format!("max_requests={n}"));
    }
    if params.is_empty() {
        format!("{scheme}://{bucket}")
    } else {
        format!("{scheme}://{bucket}?{}", params.join("&"))
    }
}

/// Default bound on concurrent requests to one cloud store (all operations of a process).
pub const DEFAULT_MAX_REQUESTS: usize = 32;

/// Objects above this size are uploaded in parts (multipart upload).
pub const MULTIPART_THRESHOLD: usize = 32 << 20;

impl S3Options {
    /// The store URL these options stand for (secrets left out).
    pub fn url(&self) -> String {
        let mut q = Vec::new();
        if let Some(e) = &self.endpoint {
            q.push(format!("endpoint={e}"));
        }
        if let Some(r) = &self.region {
            q.push(format!("region={r}"));
        }
        bucket_url("s3", &self.bucket, q, self.max_requests)
    }
}

impl StoreLocation {
    /// Parse `file:///path`, a plain path, or `memory://`.
    ///
    /// # Errors
    /// [`Error::InvalidStoreUrl`] for other schemes or an empty path.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidStoreUrl { url: url.to_string(), reason: reason.to_string() };
        if url.is_empty() {
            return Err(bad("empty"));
        }
        if url == "memory://" || url == "memory:" {
            return Ok(StoreLocation::Memory);
        }
        if let Some(rest) = url.strip_prefix("file://") {
            let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
            let path = parsed.to_file_path().map_err(|_| bad("file:// URLs need an absolute path"))?;
            if rest.is_empty() {
                return Err(bad("file:// URLs need an absolute path"));
            }
            return Ok(StoreLocation::Local(path));
        }
        if let Some(scheme) = ["s3", "gs"].into_iter().find(|s| url.starts_with(&format!("{s}://"))) {
            let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
            let bucket = parsed
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad(&format!("{scheme}:// URLs need a bucket")))?
                .to_string();
            if !matches!(parsed.path(), "" | "/") {
                return Err(bad(&format!("{scheme}:// URLs name a whole bucket (no path)")));
            }
            let mut s3 = S3Options { bucket: bucket.clone(), ..Default::default() };
            let mut gs = GcsOptions { bucket, ..Default::default() };
            for (k, v) in parsed.query_pairs() {
                let v = v.into_owned();
                match (scheme, k.as_ref()) {
                    (_, "max_requests") => {
                        let n = v.parse().ok().filter(|n| (1..=1024).contains(n));
                        let n = n.ok_or_else(|| bad("max_requests: 1 to 1024"))?;
                        (s3.max_requests, gs.max_requests) = (Some(n), Some(n));
                    }
                    ("s3", "endpoint") => s3.endpoint = Some(v),
                    ("s3", "region") => s3.region = Some(v),
                    ("gs", "credentials") => gs.credentials = Some(PathBuf::from(v)),
                    ("gs", "base_url") => gs.base_url = Some(v),
                    (_, other) => {
                        let known = if scheme == "s3" { "endpoint, region" } else { "credentials, base_url" };
                        return Err(bad(&format!("unknown {scheme} URL parameter {other:?} ({known}, max_requests)")));
                    }
                }
            }
            return Ok(if scheme == "s3" { StoreLocation::S3(s3) } else { StoreLocation::Gcs(gs) });
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(&format!(
                "unsupported scheme {scheme:?}; use file:///path, a plain path, s3://bucket, gs://bucket or memory://"
            )));
        }
        Ok(StoreLocation::Local(PathBuf::from(url)))
    }
}

/// A handle on one bucket: the object store, its display name, the bucket name used in version
/// ids, a runtime handle, and optionally the progress of the operation it works for.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The directory of a local store: its range reads go straight to the file on the calling
    /// thread (see [`Store::get_upto`]). `None` for other stores and when faults are injected.
    local: Option<Arc<FsPath>>,
    url: String,
    bucket: String,
    rt: Handle,
    progress: Option<Arc<Progress>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).field("bucket", &self.bucket).finish()
    }
}

/// Whether object_store keeps `key` under a file of the same relative path (it escapes other
/// characters).
fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('/').all(|part| !part.is_empty() && !part.starts_with('.'))
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_'))
}

/// Up to `len` bytes of a local file from `start`, read into a buffer that is not zero-filled
/// first.
fn read_file_range(path: &FsPath, start: u64, len: u64) -> std::io::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(len.min(64 << 20) as usize);
    f.take(len).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

impl Store {
    /// Open the store at `url`. With `create`, a missing local directory is created.
    ///
    /// # Errors
    /// [`Error::InvalidStoreUrl`], or [`Error::NotAStore`] when a local directory is missing
    /// and `create` is false.
    pub fn open(url: &str, rt: Handle, create: bool) -> Result<Store> {
        match StoreLocation::parse(url)? {
            StoreLocation::Memory => Ok(Store::new(Arc::new(InMemory::new()), "memory://", "memory", rt)),
            StoreLocation::Local(path) => Self::open_local(&path, rt, create),
            StoreLocation::S3(o) => Self::open_s3(&o, rt),
            StoreLocation::Gcs(o) => Self::open_gcs(&o, rt),
        }
    }

    /// Open an S3 or S3-compatible bucket. Requests retry with backoff on throttling and
    /// transient errors (object_store's retry policy).
    ///
    /// # Errors
    /// [`Error::InvalidStoreUrl`] when the options do not make a client.
    pub fn open_s3(o: &S3Options, rt: Handle) -> Result<Store> {
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&o.bucket);
        let (retry, options) = client_settings(o.endpoint.as_deref());
        if let Some(e) = &o.endpoint {
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        b = b.with_retry(retry).with_client_options(options);
        b = b.with_region(o.region.clone().unwrap_or_else(|| "us-east-1".into()));
        if let Some(k) = &o.access_key {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &o.secret_key {
            b = b.with_secret_access_key(k);
        }
        let s3 = b.build().map_err(|e| Error::InvalidStoreUrl { url: o.url(), reason: e.to_string() })?;
        // One bound on requests in flight for everything this process does with the store.
        let limited = object_store::limit::LimitStore::new(s3, o.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS));
        Ok(Store::new(Arc::new(limited), &o.url(), &o.bucket, rt))
    }

    /// Open a Google Cloud Storage bucket with a service-account key (checked here: a missing
    /// or malformed key file is a clear error before any request).
    ///
    /// # Errors
    /// [`Error::InvalidStoreUrl`] for a bad key file or options.
    pub fn open_gcs(o: &GcsOptions, rt: Handle) -> Result<Store> {
        let bad = |reason: String| Error::InvalidStoreUrl { url: o.url(), reason };
        let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(&o.bucket);
        if let Some(path) = &o.credentials {
            let raw = std::fs::read(path).map_err(|e| bad(format!("credentials file {}: {e}", path.display())))?;
            let v: serde_json::Value = serde_json::from_slice(&raw)
                .map_err(|e| bad(format!("credentials file {} is not JSON: {e}", path.display())))?;
            for k in ["client_email", "private_key"] {
                if v.get(k).and_then(|x| x.as_str()).is_none() {
                    return Err(bad(format!(
                        "credentials file {} is not a service-account key (no {k})",
                        path.display()
                    )));
                }
            }
            b = b.with_service_account_path(path.display().to_string());
        }
        if let Some(u) = &o.base_url {
            b = b.with_base_url(u);
        }
        let (retry, options) = client_settings(o.base_url.as_deref());
        let gcs = b.with_retry(retry).with_client_options(options).build().map_err(|e| bad(e.to_string()))?;
        let limited = object_store::limit::LimitStore::new(gcs, o.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS));
        Ok(Store::new(Arc::new(limited), &o.url(), &o.bucket, rt))
    }

    fn open_local(path: &FsPath, rt: Handle, create: bool) -> Result<Store> {
        if create {
            std::fs::create_dir_all(path).map_err(|e| Error::io("create store directory", path, e))?;
        }
        let abs = std::fs::canonicalize(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotAStore { store: path.display().to_string() },
            _ => Error::io("open store directory", path, e),
        })?;
        if !abs.is_dir() {
            return Err(Error::InvalidStoreUrl { url: path.display().to_string(), reason: "not a directory".into() });
        }
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&abs).map_err(|e| Error::Store {
            op: "open",
            object: abs.display().to_string(),
            source: e,
        })?;
        let bucket = abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "root".to_string());
        let store = Store::new(Arc::new(fs), &abs.display().to_string(), &bucket, rt);
        Ok(Store { local: Some(abs.into()), ..store })
    }

    /// Wrap any object store (tests stack fault and latency injectors this way).
    pub fn new(inner: Arc<dyn ObjectStore>, url: &str, bucket: &str, rt: Handle) -> Store {
        Store { inner, local: None, url: url.to_string(), bucket: bucket.to_string(), rt, progress: None }
    }

    /// The same store with faults injected (tests; see [`crate::fault`]).
    pub fn with_faults(&self, plan: crate::fault::FaultPlan) -> Store {
        Store { inner: Arc::new(crate::fault::FaultStore::new(self.inner.clone(), plan)), local: None, ..self.clone() }
    }

    /// The same store, counting its requests into `progress`.
    pub fn with_progress(&self, progress: Arc<Progress>) -> Store {
        Store { progress: Some(progress), ..self.clone() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn runtime(&self) -> &Handle {
        &self.rt
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn count_read(&self, bytes: u64) {
        if let Some(p) = &self.progress {
            add(&p.bucket.read_blobs_ops, 1);
            add(&p.bucket.read_blobs_bytes, bytes);
        }
    }

    fn count_write(&self, bytes: u64) {
        if let Some(p) = &self.progress {
            add(&p.bucket.write_blobs_ops, 1);
            add(&p.bucket.write_blobs_bytes, bytes);
        }
    }

    fn count_meta(&self) {
        if let Some(p) = &self.progress {
            add(&p.bucket.read_metadata_ops, 1);
        }
    }

    fn err<'a>(op: &'static str, path: &'a str) -> impl FnOnce(object_store::Error) -> Error + 'a {
        move |source| Error::Store { op, object: path.to_string(), source }
    }

    /// Check that the bucket exists and answers, turning the usual failures into distinct,
    /// clear errors (missing bucket, unreachable endpoint, rejected credentials).
    ///
    /// # Errors
    /// [`Error::BucketNotFound`], [`Error::Unreachable`], [`Error::AccessDenied`], or the
    /// store error as it is.
    pub fn probe(&self) -> Result<()> {
        let inner = self.inner.clone();
        let res = self.rt.block_on(async move { inner.list_with_delimiter(Some(&Path::from("versions"))).await });
        match res {
            Ok(_) => Ok(()),
            Err(e) => Err(self.classify(e)),
        }
    }

    fn classify(&self, e: object_store::Error) -> Error {
        let mut text = format!("{e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(" | ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        let store = self.url.clone();
        let short = |t: &str| t.lines().next().unwrap_or("").chars().take(200).collect::<String>();
        if text.contains("NoSuchBucket") || text.contains("bucket does not exist") {
            Error::BucketNotFound { bucket: self.bucket.clone(), store }
        } else if text.contains("InvalidAccessKeyId")
            || text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied")
            || text.contains("403 Forbidden")
        {
            Error::AccessDenied { store, reason: short(&text) }
        } else if text.contains("error sending request")
            || text.contains("dns error")
            || text.contains("timed out")
            || text.contains("Connect")
        {
            let reason = if text.contains("Connection refused") {
                "connection refused".to_string()
            } else if text.contains("dns error") || text.contains("failed to lookup") {
                "host name not found".to_string()
            } else {
                short(&text)
            };
            Error::Unreachable { store, reason }
        } else {
            Error::Store { op: "probe", object: "versions/".into(), source: e }
        }
    }

    /// Whole object, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`Error::Store`] for anything but not-found.
    pub fn get(&self, path: &str) -> Result<Option<Bytes>> {
        let inner = self.inner.clone();
        let p = Path::from(path);
        let res = self.rt.block_on(with_retry("get", path, || async {
            match inner.get_opts(&p, GetOptions::default()).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }));
        let out = res.map_err(Self::err("get", path))?;
        if let Some(b) = &out {
            self.count_read(b.len() as u64);
        }
        Ok(out)
    }

    /// A byte range of an object, exactly `range.end - range.start` bytes.
    ///
    /// # Errors
    /// [`Error::MissingObject`] when the object is absent, [`Error::Corrupt`] when it is shorter
    /// than the range, [`Error::Store`] otherwise.
    pub fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let bytes = self.get_upto(path, range.start, want)?;
        if bytes.len() as u64 != want {
            return Err(Error::corrupt(
                path,
                format!("range read returned {} bytes, {} expected (truncated object?)", bytes.len(), want),
            ));
        }
        Ok(bytes)
    }

    /// Up to `len` bytes of an object from `start` (fewer at its end).
    ///
    /// # Errors
    /// [`Error::MissingObject`] when the object is absent, [`Error::Store`] otherwise.
    pub fn get_upto(&self, path: &str, start: u64, len: u64) -> Result<Bytes> {
        // A restore reads tens of thousands of ranges; from a local store each costs a hop to
        // the runtime's blocking pool and a zero-filled buffer through object_store. Read the
        // file directly instead (the same file object_store would: pack keys need no escaping).
        let missing = || Error::MissingObject { object: path.to_string(), reason: "not found in the store".into() };
        let bytes = if let Some(dir) = self.local.as_ref().filter(|_| plain_key(path)) {
            read_file_range(&dir.join(path), start, len).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => missing(),
                _ => Error::io("read", dir.join(path), e),
            })?
        } else {
            let inner = self.inner.clone();
            let p = Path::from(path);
            let opts = GetOptions { range: Some(GetRange::Bounded(start..start + len)), ..Default::default() };
            self.rt
                .block_on(with_retry("get range", path, || async {
                    inner.get_opts(&p, opts.clone()).await?.bytes().await
                }))
                .map_err(|e| match e {
                    object_store::Error::NotFound { .. } => missing(),
                    e => Error::Store { op: "get range", object: path.to_string(), source: e },
                })?
        };
        self.count_read(bytes.len() as u64);
        Ok(bytes)
    }

    /// The last `n` bytes of an object (or all of it if shorter).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn get_suffix(&self, path: &str, n: u64) -> Result<Bytes> {
        let inner = self.inner.clone();
        let p = Path::from(path);
        let opts = GetOptions { range: Some(GetRange::Suffix(n)), ..Default::default() };
        let bytes = self
            .rt
            .block_on(with_retry("get suffix", path, || async {
                inner.get_opts(&p, opts.clone()).await?.bytes().await
            }))
            .map_err(Self::err("get suffix", path))?;
        self.count_read(bytes.len() as u64);
        Ok(bytes)
    }

    /// Write an object, replacing any previous one (content-addressed or random names only).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn put(&self, path: &str, data: Bytes) -> Result<()> {
        self.rt.block_on(self.put_async(path, data))
    }

    /// Async form of [`Store::put`].
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn put_async(&self, path: &str, data: Bytes) -> Result<()> {
        let n = data.len() as u64;
        let p = Path::from(path);
        if data.len() > MULTIPART_THRESHOLD {
            with_retry("multipart put", path, || self.put_multipart(&p, data.clone()))
                .await
                .map_err(Self::err("multipart put", path))?;
        } else {
            with_retry("put", path, || {
                self.inner.put_opts(&p, PutPayload::from_bytes(data.clone()), PutOptions::default())
            })
            .await
            .map_err(Self::err("put", path))?;
        }
        self.count_write(n);
        Ok(())
    }

    /// Upload in 16 MiB parts, two at a time; an upload that fails is aborted (no parts left).
    async fn put_multipart(&self, p: &Path, data: Bytes) -> object_store::Result<()> {
        let upload = self.inner.put_multipart_opts(p, Default::default()).await?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, 16 << 20);
        for chunk in data.chunks(16 << 20) {
            if let Err(e) = w.wait_for_capacity(2).await {
                let _ = w.abort().await;
                return Err(e);
            }
            w.write(chunk);
        }
        w.finish().await.map(|_| ())
    }

    /// Write an object only if no object has that name. `Ok(false)` when one exists.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn put_if_absent(&self, path: &str, data: Bytes) -> Result<bool> {
        let n = data.len() as u64;
        let inner = self.inner.clone();
        let p = Path::from(path);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        let retried = std::sync::atomic::AtomicBool::new(false);
        let body = data.clone();
        let res = self.rt.block_on(with_retry("create", path, || {
            let first = !retried.swap(true, std::sync::atomic::Ordering::Relaxed);
            let (inner, p, opts, body) = (inner.clone(), p.clone(), opts.clone(), body.clone());
            async move {
                match inner.put_opts(&p, PutPayload::from_bytes(body.clone()), opts).await {
                    // A retry that finds the object may find the one its own failed-looking
                    // attempt wrote: that is a success, not a clash.
                    Err(object_store::Error::AlreadyExists { .. }) if !first => {
                        let existing = inner.get_opts(&p, GetOptions::default()).await?.bytes().await?;
                        if existing == body {
                            Ok(())
                        } else {
                            Err(object_store::Error::AlreadyExists { path: p.to_string(), source: "exists".into() })
                        }
                    }
                    r => r.map(|_| ()),
                }
            }
        }));
        match res {
            Ok(()) => {
                self.count_write(n);
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(Error::Store { op: "create", object: path.to_string(), source: e }),
        }
    }

    /// Every object under `prefix` (a path prefix of whole segments).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let inner = self.inner.clone();
        let p = Path::from(prefix);
        self.count_meta();
        self.rt
            .block_on(with_retry("list", prefix, || inner.list(Some(&p)).try_collect::<Vec<_>>()))
            .map_err(Self::err("list", prefix))
    }

    /// Delete one object; a missing object is not an error.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn delete(&self, path: &str) -> Result<()> {
        use object_store::ObjectStoreExt;
        let inner = self.inner.clone();
        let p = Path::from(path);
        let res = self.rt.block_on(with_retry("delete", path, || inner.delete(&p)));
        match res {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                if let Some(pr) = &self.progress {
                    add(&pr.bucket.delete_blobs_ops, 1);
                }
                Ok(())
            }
            Err(e) => Err(Error::Store { op: "delete", object: path.to_string(), source: e }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_range_reads_match_object_store() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), rt.handle().clone(), false).unwrap();
        assert!(store.local.is_some());
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        for key in ["packs/data/ab/ab12", "versions/we ird/1"] {
            store.put(key, Bytes::from(data.clone())).unwrap();
            // Direct reads for plain keys, object_store for the rest: the same answers.
            assert_eq!(plain_key(key), !key.contains(' '));
            assert_eq!(store.get_upto(key, 100, 50).unwrap(), data[100..150]);
            assert_eq!(store.get_upto(key, 9_990, 50).unwrap(), data[9_990..], "fewer bytes at the end");
            assert!(store.get_upto(key, 20_000, 10).map_or(true, |b| b.is_empty()));
        }
        let missing = store.get_upto("packs/data/cd/cd34", 0, 10).unwrap_err();
        assert!(matches!(missing, Error::MissingObject { .. }), "{missing}");
        // Injected faults must see every read: no direct path then.
        assert!(store.with_faults(crate::fault::FaultPlan::default()).local.is_none());
        for bad in ["", "a//b", ".hidden/x", "a/../b", "a b", "a%2F"] {
            assert!(!plain_key(bad), "{bad}");
        }
    }

    #[test]
    fn parses_urls() {
        assert_eq!(StoreLocation::parse("memory://").unwrap(), StoreLocation::Memory);
        assert_eq!(StoreLocation::parse("/a/b").unwrap(), StoreLocation::Local("/a/b".into()));
        assert_eq!(StoreLocation::parse("rel/dir").unwrap(), StoreLocation::Local("rel/dir".into()));
        assert_eq!(StoreLocation::parse("file:///a/b%20c").unwrap(), StoreLocation::Local("/a/b c".into()));
        assert!(StoreLocation::parse("ftp://x").is_err());
        let s3 = StoreLocation::parse("s3://my-bucket?endpoint=http://127.0.0.1:5001&region=eu-west-1").unwrap();
        assert_eq!(
            s3,
            StoreLocation::S3(S3Options {
                bucket: "my-bucket".into(),
                endpoint: Some("http://127.0.0.1:5001".into()),
                region: Some("eu-west-1".into()),
                ..Default::default()
            })
        );
        assert!(StoreLocation::parse("s3://b/path").is_err());
        assert!(StoreLocation::parse("s3://b?secret=x").is_err());
        let gs = StoreLocation::parse("gs://g-bucket?credentials=/etc/key.json&max_requests=4").unwrap();
        assert_eq!(
            gs,
            StoreLocation::Gcs(GcsOptions {
                bucket: "g-bucket".into(),
                credentials: Some("/etc/key.json".into()),
                base_url: None,
                max_requests: Some(4)
            })
        );
        assert!(StoreLocation::parse("gs://b/x").is_err());
        assert!(StoreLocation::parse("gs://b?token=1").is_err());
        let limited = StoreLocation::parse("s3://b?max_requests=8").unwrap();
        assert!(
            matches!(&limited, StoreLocation::S3(o) if o.max_requests == Some(8) && o.url() == "s3://b?max_requests=8")
        );
        assert!(StoreLocation::parse("s3://b?max_requests=0").is_err());
        assert!(StoreLocation::parse("").is_err());
        assert!(StoreLocation::parse("file://").is_err());
    }
}
