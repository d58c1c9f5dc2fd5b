//! The CloudConnect REST control plane (axum) over a [`Backend`] trait.
//!
//! This crate owns the HTTP surface of the API guide: paths, verbs, parameters (JSON body,
//! query string or Rails-style form fields), response shapes, status codes, sessions checks and
//! the OpenAPI document. It knows nothing of CCFS: the `ccfs` binary implements [`Backend`].
//! Backend calls are blocking and run on tokio's blocking pool.

pub mod error;
pub mod params;
pub mod wire;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};

pub use axum::http::StatusCode;
pub use error::ApiError;
pub use params::Params;
use wire::*;

/// A file to download: its size, its name, and a way to read byte ranges of it.
pub struct Download {
    pub size: u64,
    pub filename: String,
    /// Read `len` bytes at `offset` (blocking).
    pub read: Box<dyn Fn(u64, usize) -> Result<Bytes, ApiError> + Send + Sync>,
}

/// What the control plane drives. Every method may block (it runs on the blocking pool).
pub trait Backend: Send + Sync + 'static {
    /// Check credentials; a new session token when they are right.
    fn login(&self, login: &str, password: &str) -> Result<Option<String>, ApiError>;
    /// Whether a session token is valid now.
    fn session_valid(&self, token: &str) -> bool;
    fn logout(&self, token: &str) -> Result<(), ApiError>;

    fn connect(&self, ccstore_ref: &str, req: ConnectRequest) -> Result<ConnectResponse, ApiError>;
    fn update(&self, ccstore_ref: &str, req: UpdateRequest) -> Result<Status, ApiError>;
    fn delete_store(&self, ccstore_ref: &str, req: DeleteStoreRequest) -> Result<OperationStarted, ApiError>;
    fn disconnect(&self, ccstore_ref: &str) -> Result<Status, ApiError>;
    fn store_stats(&self, ccstore_ref: &str, cache: CacheMode) -> Result<SummaryResponse, ApiError>;
    fn store_summary(&self, ccstore_ref: &str) -> Result<SummaryResponse, ApiError>;
    fn list_stores(&self) -> Result<Vec<CcstoreInfo>, ApiError>;
    fn upload_google_json(&self, content: &str, filename: Option<&str>) -> Result<serde_json::Value, ApiError>;
    fn clear_cache(&self) -> Result<Status, ApiError>;
    fn download(
        &self,
        ccstore_ref: &str,
        version_id: &str,
        src_path: &str,
        filename: &str,
    ) -> Result<Download, ApiError>;

    fn operations(&self, filter: &OperationFilter) -> Result<Vec<Operation>, ApiError>;
    fn operation(&self, id: i64) -> Result<Operation, ApiError>;
    fn abort(&self, id: i64) -> Result<AbortResponse, ApiError>;
    fn skipped_files(&self, id: i64) -> Result<SkippedFiles, ApiError>;
    fn purge(&self, which: Purge) -> Result<serde_json::Value, ApiError>;
    fn periodic_update(&self) -> Result<Status, ApiError>;

    fn versions(&self, ccstore_ref: &str, cache: CacheMode) -> Result<Vec<VersionInfo>, ApiError>;
    fn version_stats(
        &self,
        ccstore_ref: &str,
        version_id: &str,
        cache: CacheMode,
    ) -> Result<VersionStatsResponse, ApiError>;
    fn create_version(&self, ccstore_ref: &str, req: CreateRequest) -> Result<OperationStarted, ApiError>;
    fn checkout(&self, ccstore_ref: &str, req: CheckoutRequest) -> Result<CheckoutStarted, ApiError>;
    fn delete_version(&self, ccstore_ref: &str, req: DeleteVersionRequest) -> Result<OperationStarted, ApiError>;
    fn dir(&self, ccstore_ref: &str, req: DirRequest) -> Result<Vec<DirEntry>, ApiError>;
}

type Shared = Arc<dyn Backend>;

/// Name of the session cookie; `Authorization: Bearer <token>` works too.
pub const SESSION_COOKIE: &str = "ccfs_session";

/// The OpenAPI document of the whole surface (kept true by a test that walks the router).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route: (method, path) as the API guide names them, in axum's `{param}` syntax.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/sessions"),
    ("DELETE", "/api/sessions"),
    ("GET", "/elcc_api/openapi.json"),
    ("GET", "/elcc_api/ccstores"),
    ("POST", "/elcc_api/ccstores/upload_google_json"),
    ("POST", "/elcc_api/ccstores/{ccstore_ref}/connect"),
    ("GET", "/elcc_api/ccstores/{ccstore_ref}"),
    ("PUT", "/elcc_api/ccstores/{ccstore_ref}"),
    ("DELETE", "/elcc_api/ccstores/{ccstore_ref}"),
    ("PUT", "/elcc_api/ccstores/{ccstore_ref}/disconnect"),
    ("GET", "/elcc_api/ccstores/{ccstore_ref}/stats"),
    ("GET", "/elcc_api/ccstores/{ccstore_ref}/download/file"),
    ("GET", "/elcc_api/ccstores/{ccstore_ref}/versions"),
    ("POST", "/elcc_api/ccstores/{ccstore_ref}/versions"),
    ("DELETE", "/elcc_api/ccstores/{ccstore_ref}/versions"),
    ("GET", "/elcc_api/ccstores/{ccstore_ref}/versions/stats"),
    ("POST", "/elcc_api/ccstores/{ccstore_ref}/versions/checkout"),
    ("GET", "/elcc_api/ccstores/{ccstore_ref}/versions/dir"),
    ("PUT", "/elcc_api/ccweb/cache/clear"),
    ("GET", "/elcc_api/operations"),
    ("PUT", "/elcc_api/operations/periodic-update"),
    ("DELETE", "/elcc_api/operations/history/all"),
    ("DELETE", "/elcc_api/operations/history/old"),
    ("DELETE", "/elcc_api/operations/history/{id}"),
    ("GET", "/elcc_api/operations/{id}"),
    ("PUT", "/elcc_api/operations/{id}/abort"),
    ("GET", "/elcc_api/operations/{id}/skipped-files"),
];

/// The router. Sessions are required on every `/elcc_api` route but the OpenAPI document.
pub fn app(backend: Arc<dyn Backend>) -> Router {
    let api = Router::new()
        .route("/elcc_api/ccstores", get(list_stores))
        .route("/elcc_api/ccstores/upload_google_json", post(upload_google_json))
        .route("/elcc_api/ccstores/{ccstore_ref}/connect", post(connect))
        .route("/elcc_api/ccstores/{ccstore_ref}", get(summary).put(update).delete(delete_store))
        .route("/elcc_api/ccstores/{ccstore_ref}/disconnect", put(disconnect))
        .route("/elcc_api/ccstores/{ccstore_ref}/stats", get(store_stats))
        .route("/elcc_api/ccstores/{ccstore_ref}/download/file", get(download))
        .route("/elcc_api/ccstores/{ccstore_ref}/versions", get(versions).post(create_version).delete(delete_version))
        .route("/elcc_api/ccstores/{ccstore_ref}/versions/stats", get(version_stats))
        .route("/elcc_api/ccstores/{ccstore_ref}/versions/checkout", post(checkout))
        .route("/elcc_api/ccstores/{ccstore_ref}/versions/dir", get(dir))
        .route("/elcc_api/ccweb/cache/clear", put(clear_cache))
        .route("/elcc_api/operations", get(operations))
        .route("/elcc_api/operations/periodic-update", put(periodic_update))
        .route("/elcc_api/operations/history/{which}", delete(purge))
        .route("/elcc_api/operations/{id}", get(operation))
        .route("/elcc_api/operations/{id}/abort", put(abort))
        .route("/elcc_api/operations/{id}/skipped-files", get(skipped_files))
        .route_layer(middleware::from_fn_with_state(backend.clone(), require_session));
    Router::new()
        .route("/api/sessions", post(login).delete(logout))
        .route("/elcc_api/openapi.json", get(openapi))
        .merge(api)
        .fallback(not_found)
        .with_state(backend)
}

/// Serve `app` on `listener` until `shutdown` completes (graceful: running requests finish).
///
/// # Errors
/// The server's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Run a backend call on the blocking pool.
async fn blocking<T: Send + 'static>(
    b: &Shared,
    f: impl FnOnce(&dyn Backend) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let b = b.clone();
    tokio::task::spawn_blocking(move || f(b.as_ref())).await.map_err(ApiError::internal)?
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
    }
    let cookies = headers.get_all(header::COOKIE);
    cookies.iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == SESSION_COOKIE).then(|| v.to_string())
    })
}

async fn require_session(State(b): State<Shared>, req: Request, next: Next) -> Response {
    let Some(token) = session_token(req.headers()) else {
        return ApiError::unauthorized("log in first: POST /api/sessions").into_response();
    };
    let ok = blocking(&b, move |b| Ok(b.session_valid(&token))).await.unwrap_or(false);
    if !ok {
        return ApiError::unauthorized("session expired or unknown: log in again").into_response();
    }
    next.run(req).await
}

async fn not_found(method: Method) -> ApiError {
    let _ = method;
    ApiError::not_found("no such route")
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

fn params(q: &RawQuery, headers: &HeaderMap, body: &Bytes) -> Result<Params, ApiError> {
    Params::parse(q.0.as_deref(), headers, body)
}

fn cache_mode(p: &Params) -> Result<CacheMode, ApiError> {
    Ok(CacheMode { no_cache: p.flag("no_cache", false)?, allow_cache: p.flag("allow_cache", false)? })
}

fn threads(p: &Params) -> Result<Option<u32>, ApiError> {
    Ok(p.num("threads", 256)?.map(|n| n as u32).filter(|&n| n > 0))
}

fn progressrate(p: &Params) -> Result<Option<u32>, ApiError> {
    Ok(p.num("progressrate", 3600)?.map(|n| n as u32))
}

fn op_id(s: &str) -> Result<i64, ApiError> {
    s.parse().map_err(|_| ApiError::bad_request(format!("operation id {s:?} is not a number")))
}

async fn login(State(b): State<Shared>, q: RawQuery, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let p = params(&q, &headers, &body)?;
    let (user, pass) = (p.req("user[login]")?, p.req("user[password]")?);
    let token = blocking(&b, move |b| b.login(&user, &pass)).await?;
    let Some(token) = token else {
        return Err(ApiError::unauthorized("wrong login or password"));
    };
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    let mut resp = Json(serde_json::json!({"status": "OK", "token": token})).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    Ok(resp)
}

async fn logout(State(b): State<Shared>, headers: HeaderMap) -> Result<Json<Status>, ApiError> {
    let token = session_token(&headers).ok_or_else(|| ApiError::unauthorized("no session"))?;
    blocking(&b, move |b| b.logout(&token)).await?;
    Ok(Json(Status::ok()))
}

async fn list_stores(State(b): State<Shared>) -> Result<Json<Vec<CcstoreInfo>>, ApiError> {
    blocking(&b, |b| b.list_stores()).await.map(Json)
}

async fn upload_google_json(
    State(b): State<Shared>,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = params(&q, &headers, &body)?;
    let content = p.req("content")?;
    let name = p.opt("filename");
    blocking(&b, move |b| b.upload_google_json(&content, name.as_deref())).await.map(Json)
}

async fn connect(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ConnectResponse>, ApiError> {
    let p = params(&q, &headers, &body)?;
    let req = ConnectRequest {
        name: p.opt("name").unwrap_or_else(|| r.clone()),
        cloud_service: p.req("cloud_service")?,
        bucket_name: p.req("bucket_name")?,
        fs_path: p.opt("fs_path").unwrap_or_default(),
        direction: p.opt("direction").unwrap_or_else(|| "direction_upload".into()),
        create_if_not_found: p.flag("create_if_not_found", false)?,
        block_size_kb: p.num("block_size_kb", 65_536)?.map(|n| n as u32),
        hash_type: p.opt("hash_type"),
        region: p.opt("region"),
        access_key: p.opt("access_key"),
        secret_key: p.opt("secret_key"),
        endpoint: p.opt("endpoint"),
        gc_credentials_filename: p.opt("gc_credentials_filename"),
        nfserver: p.opt("nfserver"),
        nfsexport: p.opt("nfsexport"),
        checkout_modified_policy: p.opt("checkout_modified_policy"),
        checkout_absent_policy: p.opt("checkout_absent_policy"),
    };
    blocking(&b, move |b| b.connect(&r, req)).await.map(Json)
}

async fn summary(State(b): State<Shared>, Path(r): Path<String>) -> Result<Json<SummaryResponse>, ApiError> {
    blocking(&b, move |b| b.store_summary(&r)).await.map(Json)
}

async fn update(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Status>, ApiError> {
    let p = params(&q, &headers, &body)?;
    let req = UpdateRequest {
        name: p.opt("name"),
        fs_path: p.opt("fs_path"),
        direction: p.opt("direction"),
        nfserver: p.opt("nfserver"),
        nfsexport: p.opt("nfsexport"),
        checkout_modified_policy: p.opt("checkout_modified_policy"),
        checkout_absent_policy: p.opt("checkout_absent_policy"),
    };
    blocking(&b, move |b| b.update(&r, req)).await.map(Json)
}

async fn delete_store(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<OperationStarted>, ApiError> {
    let p = params(&q, &headers, &body)?;
    let req = DeleteStoreRequest {
        bucket_name: p.req("bucket_name")?,
        keep_bucket: p.flag("keep_bucket", false)?,
        threads: threads(&p)?,
        progressrate: progressrate(&p)?,
    };
    blocking(&b, move |b| b.delete_store(&r, req)).await.map(Json)
}

async fn disconnect(State(b): State<Shared>, Path(r): Path<String>) -> Result<Json<Status>, ApiError> {
    blocking(&b, move |b| b.disconnect(&r)).await.map(Json)
}

async fn store_stats(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
) -> Result<Json<SummaryResponse>, ApiError> {
    let p = params(&q, &headers, &Bytes::new())?;
    let cache = cache_mode(&p)?;
    blocking(&b, move |b| b.store_stats(&r, cache)).await.map(Json)
}

/// Parse `Range: bytes=a-b | a- | -n` against a size: `Some(start..end)`, or an error for an
/// unsatisfiable range.
fn parse_range(h: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: answer the whole file
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| ())?;
            let b: u64 = b.parse().map_err(|_| ())?;
            if b < a {
                return Err(());
            }
            (a, (b + 1).min(size))
        }
    };
    if start >= size || start >= end {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn download(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = params(&q, &headers, &Bytes::new())?;
    let (version_id, src_path) = (p.req("version_id")?, p.req("src_path")?);
    let filename = p.opt("filename").unwrap_or_default();
    let dl = blocking(&b, move |b| b.download(&r, &version_id, &src_path, &filename)).await?;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(h) => match parse_range(h, dl.size) {
            Ok(r) => r,
            Err(()) => {
                let mut resp =
                    ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable").into_response();
                resp.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{}", dl.size)).map_err(ApiError::internal)?,
                );
                return Ok(resp);
            }
        },
        None => None,
    };
    let (start, end) = range.unwrap_or((0, dl.size));
    let name = dl.filename.replace(['"', '\\', '\r', '\n'], "_");
    let reader = Arc::new(dl.read);
    let stream = futures::stream::unfold(start, move |pos| {
        let reader = reader.clone();
        async move {
            if pos >= end {
                return None;
            }
            let len = (end - pos).min(1 << 20) as usize;
            let res = tokio::task::spawn_blocking(move || reader(pos, len)).await;
            match res {
                Ok(Ok(bytes)) if !bytes.is_empty() => {
                    let next = pos + bytes.len() as u64;
                    Some((Ok::<Bytes, std::io::Error>(bytes), next))
                }
                Ok(Ok(_)) => Some((Err(std::io::Error::other("file ended early")), end)),
                Ok(Err(e)) => Some((Err(std::io::Error::other(e.message)), end)),
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), end)),
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{}", end - 1, dl.size)).map_err(ApiError::internal)?,
        );
    }
    Ok(resp)
}

async fn versions(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    let p = params(&q, &headers, &Bytes::new())?;
    let cache = cache_mode(&p)?;
    blocking(&b, move |b| b.versions(&r, cache)).await.map(Json)
}

async fn version_stats(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
) -> Result<Json<VersionStatsResponse>, ApiError> {
    let p = params(&q, &headers, &Bytes::new())?;
    let cache = cache_mode(&p)?;
    let v = p.req("version_id")?;
    blocking(&b, move |b| b.version_stats(&r, &v, cache)).await.map(Json)
}

fn nfs_pair(p: &Params) -> Result<(Option<String>, Option<String>), ApiError> {
    let (s, e) = (p.opt("nfserver"), p.opt("nfsexport"));
    if s.is_some() != e.is_some() {
        return Err(ApiError::bad_request("nfserver and nfsexport must be given together"));
    }
    Ok((s, e))
}

async fn create_version(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<OperationStarted>, ApiError> {
    let p = params(&q, &headers, &body)?;
    let (nfserver, nfsexport) = nfs_pair(&p)?;
    let req = CreateRequest {
        nfserver,
        nfsexport,
        fs_src: p.opt("fs_src"),
        branch: p.opt("branch"),
        parent_version_id: p.opt("parent_version_id"),
        threads: threads(&p)?,
        progressrate: progressrate(&p)?,
        version_desc: p.opt("version_desc"),
    };
    blocking(&b, move |b| b.create_version(&r, req)).await.map(Json)
}

async fn checkout(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CheckoutStarted>, ApiError> {
    let p = params(&q, &headers, &body)?;
    let (nfserver, nfsexport) = nfs_pair(&p)?;
    let req = CheckoutRequest {
        nfserver,
        nfsexport,
        fs_dest: p.opt("fs_dest"),
        branch: p.opt("branch"),
        version_id: p.opt("version_id"),
        threads: threads(&p)?,
        progressrate: progressrate(&p)?,
        checkout_modified_policy: p.opt("checkout_modified_policy"),
        checkout_absent_policy: p.opt("checkout_absent_policy"),
        path: p.opt("path"),
    };
    blocking(&b, move |b| b.checkout(&r, req)).await.map(Json)
}

async fn delete_version(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<OperationStarted>, ApiError> {
    let p = params(&q, &headers, &body)?;
    let req = DeleteVersionRequest {
        version_id: p.req("version_id")?,
        threads: threads(&p)?,
        progressrate: progressrate(&p)?,
    };
    blocking(&b, move |b| b.delete_version(&r, req)).await.map(Json)
}

async fn dir(
    State(b): State<Shared>,
    Path(r): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
) -> Result<Json<Vec<DirEntry>>, ApiError> {
    let p = params(&q, &headers, &Bytes::new())?;
    let req = DirRequest {
        version_id: p.opt("version_id"),
        branch: p.opt("branch"),
        path: p.opt("path").unwrap_or_else(|| "/".into()),
        count: p.num("count", u32::MAX as u64)?.unwrap_or(0) as usize,
        offset: p.num("offset", u32::MAX as u64)?.unwrap_or(0) as usize,
    };
    blocking(&b, move |b| b.dir(&r, req)).await.map(Json)
}

async fn clear_cache(State(b): State<Shared>) -> Result<Json<Status>, ApiError> {
    blocking(&b, |b| b.clear_cache()).await.map(Json)
}

async fn operations(
    State(b): State<Shared>,
    q: RawQuery,
    headers: HeaderMap,
) -> Result<Json<Vec<Operation>>, ApiError> {
    let p = params(&q, &headers, &Bytes::new())?;
    let d = OperationFilter::default();
    let f = OperationFilter {
        include_scan: p.flag("include_scan", d.include_scan)?,
        include_commit: p.flag("include_commit", d.include_commit)?,
        include_checkout: p.flag("include_checkout", d.include_checkout)?,
        include_delete: p.flag("include_delete", d.include_delete)?,
        include_bucket_clear: p.flag("include_bucket_clear", d.include_bucket_clear)?,
        include_download_file: p.flag("include_download_file", d.include_download_file)?,
        include_running: p.flag("include_running", d.include_running)?,
        include_complete: p.flag("include_complete", d.include_complete)?,
        include_failed: p.flag("include_failed", d.include_failed)?,
        include_aborted: p.flag("include_aborted", d.include_aborted)?,
        include_all_statuses: p.flag("include_all_statuses", d.include_all_statuses)?,
        verbose: p.flag("verbose", d.verbose)?,
    };
    blocking(&b, move |b| b.operations(&f)).await.map(Json)
}

async fn operation(State(b): State<Shared>, Path(id): Path<String>) -> Result<Json<Operation>, ApiError> {
    let id = op_id(&id)?;
    blocking(&b, move |b| b.operation(id)).await.map(Json)
}

async fn abort(State(b): State<Shared>, Path(id): Path<String>) -> Result<Json<AbortResponse>, ApiError> {
    let id = op_id(&id)?;
    blocking(&b, move |b| b.abort(id)).await.map(Json)
}

async fn skipped_files(State(b): State<Shared>, Path(id): Path<String>) -> Result<Json<SkippedFiles>, ApiError> {
    let id = op_id(&id)?;
    blocking(&b, move |b| b.skipped_files(id)).await.map(Json)
}

async fn purge(State(b): State<Shared>, Path(which): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let which = match which.as_str() {
        "all" => Purge::All,
        "old" => Purge::Old,
        id => Purge::One(op_id(id)?),
    };
    blocking(&b, move |b| b.purge(which)).await.map(Json)
}

async fn periodic_update(State(b): State<Shared>) -> Result<Json<Status>, ApiError> {
    blocking(&b, |b| b.periodic_update()).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 100))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 100))));
        assert_eq!(parse_range("bytes=95-200", 100), Ok(Some((95, 100))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Err(()));
        assert_eq!(parse_range("bytes=x-", 100), Err(()));
        assert_eq!(parse_range("items=1-2", 100), Ok(None));
    }

    #[test]
    fn openapi_document_lists_every_route_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented = std::collections::BTreeSet::new();
        for (path, ops) in paths {
            for m in ops.as_object().unwrap().keys() {
                documented.insert((m.to_uppercase(), path.clone()));
            }
        }
        let routes: std::collections::BTreeSet<_> =
            ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert_eq!(documented, routes, "openapi.json and ROUTES must list the same operations");
    }
}
