//! `control_api::Backend` over the ccfs core, with connections, users and operations in SQLite.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ccfs::catalog::Version;
use ccfs::ids::VersionId;
use ccfs::source::LocalSource;
use ccfs::store::S3Options;
use ccfs::target::LocalTarget;
use ccfs::{DirEntryInfo, Error, Repo, Store};
use control_api::wire::*;
use control_api::{ApiError, Backend, Download};
use serde_json::json;

use super::db::{now_secs, Conn, Db, OpRow};
use super::ops::Ops;

/// Settings of the server.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub state_dir: PathBuf,
    /// Where `local` buckets live (one directory per bucket).
    pub bucket_root: PathBuf,
    /// Data-set paths (`fs_path`, `fs_src`, `fs_dest`) must lie under this directory.
    pub fs_root: PathBuf,
    pub session_ttl: Duration,
    /// Whether stats and listings are answered from the cache by default (`allow_cache` uses it
    /// anyway, `no_cache` never).
    pub cache_lookup: bool,
    /// When set, S3 endpoints must begin with one of these prefixes (and AWS itself, which has
    /// no endpoint, is refused): the server connects only where it is allowed to.
    pub allowed_endpoints: Option<Vec<String>>,
    /// Store faults to inject (tests only; `CCFS_FAULTS`).
    pub faults: Option<ccfs::fault::FaultPlan>,
}

pub struct ServeBackend {
    cfg: ServeConfig,
    rt: tokio::runtime::Handle,
    ops: Arc<Ops>,
    repos: Mutex<HashMap<String, Repo>>,
    cache: moka::sync::Cache<String, serde_json::Value>,
}

/// The one place core errors become HTTP errors.
fn api_err(e: Error) -> ApiError {
    match e.root() {
        Error::VersionNotFound(_) | Error::PathNotFound { .. } | Error::NotAStore { .. } => {
            ApiError::not_found(e.to_string())
        }
        Error::NotADirectory { .. }
        | Error::NotAFile { .. }
        | Error::InvalidArgument(_)
        | Error::InvalidStoreUrl { .. } => ApiError::unprocessable(e.to_string()),
        Error::AlreadyFormatted { .. } | Error::Busy(_) => ApiError::conflict(e.to_string()),
        Error::BucketNotFound { .. } => ApiError::not_found(e.to_string()),
        Error::AccessDenied { .. } => ApiError::new(control_api::StatusCode::FORBIDDEN, e.to_string()),
        Error::Unreachable { .. } => ApiError::unprocessable(e.to_string()),
        // Data problems are reported as they are: the operator needs the object's name.
        Error::Corrupt { .. } | Error::MissingObject { .. } | Error::UnsupportedFormat { .. } => {
            ApiError::new(control_api::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        _ => ApiError::internal(e),
    }
}

/// A credentials file name: letters, digits, `.`, `_`, `-`, not starting with `.`.
fn valid_credentials_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn db_err(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("state database: {e}"))
}

fn valid_ref(r: &str) -> Result<(), ApiError> {
    let ok = !r.is_empty() && r.len() <= 128 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("ccstore_ref {r:?}: use 1-128 letters, digits, '.', '_' or '-'")))
    }
}

/// S3-style bucket names: 3-63 of lower-case letters, digits, '-' and '.', starting and ending
/// with a letter or digit.
fn valid_bucket(b: &str) -> Result<(), ApiError> {
    let bytes = b.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && bytes.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "bucket_name {b:?}: use 3-63 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        )))
    }
}

fn one_of(name: &str, v: &Option<String>, allowed: &[&str]) -> Result<(), ApiError> {
    match v {
        Some(x) if !allowed.contains(&x.as_str()) => {
            Err(ApiError::unprocessable(format!("{name} {x:?}: use one of {}", allowed.join(", "))))
        }
        _ => Ok(()),
    }
}

const MODIFIED: &[&str] = &["modified_keep_newer", "modified_keep_existing", "modified_replace"];
const ABSENT: &[&str] = &["absent_delete", "absent_archive", "absent_preserve"];

/// A data set to read or write: a directory under the server's data root, or a directory on
/// an NFS export reached in user space.
#[derive(Clone)]
enum DataSet {
    Local(PathBuf),
    Nfs(ccfs_nfs::NfsUrl),
}

impl DataSet {
    fn display(&self) -> String {
        match self {
            DataSet::Local(p) => p.display().to_string(),
            DataSet::Nfs(u) => u.display(),
        }
    }

    fn source(&self) -> ccfs::Result<Arc<dyn ccfs::source::Source>> {
        match self {
            DataSet::Local(p) => Ok(Arc::new(LocalSource::new(p))),
            DataSet::Nfs(u) => crate::nfs::source(u),
        }
    }

    fn target(&self) -> ccfs::Result<Arc<dyn ccfs::target::Target>> {
        match self {
            DataSet::Local(p) => Ok(Arc::new(LocalTarget::new(p))),
            DataSet::Nfs(u) => crate::nfs::target(u),
        }
    }
}

/// `nfserver` and `nfsexport`: both or neither; the server as `HOST[:PORT]` (one port for
/// MOUNT and NFS, as servers without a portmapper use; none: ask the portmapper), the export
/// an absolute path.
fn nfs_pair(server: &Option<String>, export: &Option<String>) -> Result<Option<(String, String)>, ApiError> {
    match (server, export) {
        (None, None) => Ok(None),
        (Some(s), Some(e)) => {
            nfs_url(s, e, "/")?;
            Ok(Some((s.clone(), e.clone())))
        }
        _ => Err(ApiError::bad_request("nfserver and nfsexport must be given together")),
    }
}

fn nfs_url(server: &str, export: &str, path: &str) -> Result<ccfs_nfs::NfsUrl, ApiError> {
    if server.is_empty() || server.contains(['/', '?', '#', '@']) {
        return Err(ApiError::bad_request(format!("nfserver {server:?}: give HOST or HOST:PORT")));
    }
    if !export.starts_with('/') || export.split('/').any(|c| c == "..") {
        return Err(ApiError::bad_request(format!("nfsexport {export:?}: must be an absolute path without '..'")));
    }
    let inner = inside(Path::new(export), path)?;
    let mut u = ccfs_nfs::NfsUrl::parse(&format!("nfs://{server}{export}"))
        .map_err(|e| ApiError::bad_request(format!("nfserver/nfsexport: {e}")))?;
    if let Some(p) = u.nfs_port {
        u.mount_port = Some(p);
    }
    u.export = Some(u.path.clone());
    u.path = inner.to_string_lossy().into_owned();
    Ok(u)
}

/// Mount the export once to say at connect time whether it can be reached.
fn check_export(server: &str, export: &str) -> Result<(), ApiError> {
    let mut u = nfs_url(server, export, "/")?;
    u.attempts = 2;
    ccfs_nfs::Client::connect(&u)
        .map(|_| ())
        .map_err(|e| ApiError::unprocessable(format!("cannot mount {export} from NFS server {server}: {e}")))
}

/// A path inside an export (a connection's `fs_path` on NFS): absolute, without `..`.
fn export_path(p: &str) -> Result<String, ApiError> {
    if p.is_empty() {
        return Ok(String::new());
    }
    if !p.starts_with('/') {
        return Err(ApiError::unprocessable("fs_path must be an absolute path"));
    }
    Ok(inside(Path::new("/"), p)?.to_string_lossy().into_owned())
}

/// A connection's `fs_path`: absolute, without `..`, and inside the server's fs root.
fn data_set_root(fs_root: &Path, p: &str) -> Result<String, ApiError> {
    if !p.starts_with('/') {
        return Err(ApiError::unprocessable("fs_path must be an absolute path"));
    }
    let path = inside(Path::new("/"), p)?;
    if !path.starts_with(fs_root) {
        return Err(ApiError::unprocessable(format!(
            "fs_path {p} is outside the server's data root {}",
            fs_root.display()
        )));
    }
    Ok(path.to_string_lossy().into_owned())
}

/// Resolve a data-set path inside `base` (itself inside the server's fs root): absolute paths are
/// taken relative to `base`; `..` is refused.
fn inside(base: &Path, p: &str) -> Result<PathBuf, ApiError> {
    let rel = Path::new(p);
    let mut out = base.to_path_buf();
    for c in rel.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ApiError::unprocessable(format!("path {p:?}: '..' is not allowed")))
            }
        }
    }
    Ok(out)
}

fn version_info(m: &ccfs::format::Manifest) -> VersionInfo {
    VersionInfo {
        push_end_time: m.push_end_time.clone(),
        ccfs_srv_uid: m.ccfs_srv_uid.clone(),
        version_desc: m.version_desc.clone(),
        version_id: m.version_id.to_string(),
        stat_file_id: m.stat_file_id.clone(),
        push_start_time: m.push_start_time.clone(),
        format_version: m.format_version.to_string(),
        parent_id: m.parent_id.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        branch_name: m.branch_name.clone(),
        block_size: m.block_size.to_string(),
        index_file_id: m.index_file_id.clone(),
        version_uid: m.version_uid.clone(),
        catalog_file_id: m.catalog_file_id.clone(),
        hash_type: m.hash_type.clone(),
    }
}

fn summary_wire(s: ccfs::StoreSummary) -> StoreSummary {
    StoreSummary {
        deleted_versions_num: s.deleted_versions_num,
        fs_num_dirs: s.fs_num_dirs,
        fs_num_files: s.fs_num_files,
        fs_total_data: s.fs_total_data,
        total_data_reduction: s.total_data_reduction,
        total_object_data: s.total_object_data,
        uniq_file_data: s.uniq_file_data,
        uniq_files_data_reduction: s.uniq_files_data_reduction,
        uniq_num_dirs: s.uniq_num_dirs,
        uniq_num_files: s.uniq_num_files,
        versions_num: s.versions_num,
    }
}

impl ServeBackend {
    pub fn new(cfg: ServeConfig, rt: tokio::runtime::Handle, db: Db) -> Result<Arc<ServeBackend>, ApiError> {
        let db = Arc::new(Mutex::new(db));
        let n = db
            .lock()
            .expect("db")
            .op_fail_orphans(&[], "the server stopped while the operation ran")
            .map_err(db_err)?;
        if n > 0 {
            tracing::warn!(n, "operations left running by an earlier server marked failed");
        }
        let ops = Arc::new(Ops { db, running: Mutex::new(HashMap::new()) });
        let cache = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(300))
            .support_invalidation_closures()
            .build();
        Ok(Arc::new(ServeBackend { cfg, rt, ops, repos: Mutex::new(HashMap::new()), cache }))
    }

    pub fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.ops.db.lock().expect("db poisoned")
    }

    fn conn(&self, r: &str) -> Result<Conn, ApiError> {
        valid_ref(r)?;
        self.db()
            .conn_get(r)
            .map_err(db_err)?
            .ok_or_else(|| ApiError::not_found(format!("ccstore {r} is not connected")))
    }

    /// S3 options of an S3-family connection, refusing endpoints outside the allow-list.
    fn s3_options(
        &self,
        bucket: &str,
        endpoint: &str,
        region: &str,
        key: &str,
        secret: &str,
    ) -> Result<S3Options, ApiError> {
        if let Some(allowed) = &self.cfg.allowed_endpoints {
            // Compare with a trailing slash so that a prefix ending in `:9/` does not admit `:90`.
            let e = format!("{}/", endpoint.trim_end_matches('/'));
            if endpoint.is_empty() || !allowed.iter().any(|a| e.starts_with(a.as_str())) {
                return Err(ApiError::unprocessable(format!(
                    "endpoint {endpoint:?} is not allowed by this server (--allow-endpoint)"
                )));
            }
        }
        if !(endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ApiError::unprocessable("endpoint must be an http:// or https:// URL"));
        }
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(S3Options {
            bucket: bucket.to_string(),
            endpoint: opt(endpoint),
            region: opt(region),
            access_key: opt(key),
            secret_key: opt(secret),
            max_requests: None,
        })
    }

    /// Open the store of a connection.
    fn open_store(&self, c: &Conn) -> Result<Store, ApiError> {
        let store = if c.cloud_service == "local" || c.cloud_service == "gcp" || c.cloud_service == "gc" {
            Store::open(&c.store_url, self.rt.clone(), false).map_err(api_err)?
        } else {
            let o = self.s3_options(&c.bucket_name, &c.endpoint, &c.region, &c.access_key, &c.secret_key)?;
            Store::open_s3(&o, self.rt.clone()).map_err(api_err)?
        };
        Ok(self.with_faults(store))
    }

    /// The store with the configured test faults, if any.
    fn with_faults(&self, store: Store) -> Store {
        match &self.cfg.faults {
            Some(plan) => store.with_faults(plan.clone()),
            None => store,
        }
    }

    /// Connect an S3-family bucket, creating it first when it is missing and the request says
    /// `create_if_not_found`.
    fn connect_s3(&self, r: &str, req: ConnectRequest, fs_path: String) -> Result<ConnectResponse, ApiError> {
        if req.cloud_service != "s3" && req.endpoint.is_none() {
            return Err(ApiError::bad_request(format!("cloud_service {} needs an endpoint", req.cloud_service)));
        }
        let o = self.s3_options(
            &req.bucket_name,
            req.endpoint.as_deref().unwrap_or(""),
            req.region.as_deref().unwrap_or(""),
            req.access_key.as_deref().unwrap_or(""),
            req.secret_key.as_deref().unwrap_or(""),
        )?;
        let store = self.with_faults(Store::open_s3(&o, self.rt.clone()).map_err(api_err)?);
        match store.probe() {
            Err(Error::BucketNotFound { .. }) if req.create_if_not_found => {
                let created = ccfs::bucket::create_s3_bucket(&o, &self.rt).map_err(api_err)?;
                store.probe().map_err(api_err)?;
                self.finish_connect(r, req, fs_path, store, o.url(), created)
            }
            Err(e) => Err(api_err(e)),
            Ok(()) => self.finish_connect(r, req, fs_path, store, o.url(), false),
        }
    }

    /// Connect a Google Cloud Storage bucket with a service-account key uploaded earlier through
    /// `upload_google_json` and named by `gc_credentials_filename`.
    fn connect_gcs(&self, r: &str, req: ConnectRequest, fs_path: String) -> Result<ConnectResponse, ApiError> {
        let name = req.gc_credentials_filename.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
            ApiError::bad_request(
                "cloud_service gcp needs gc_credentials_filename (upload the key with upload_google_json first)",
            )
        })?;
        if !valid_credentials_name(name) {
            return Err(ApiError::unprocessable(format!("gc_credentials_filename {name:?}: not a valid file name")));
        }
        if self.cfg.allowed_endpoints.is_some() {
            return Err(ApiError::unprocessable(
                "Google Cloud Storage is outside the endpoints this server may use (--allow-endpoint)",
            ));
        }
        let path = self.cfg.state_dir.join("gc_credentials").join(name);
        if !path.is_file() {
            return Err(ApiError::unprocessable(format!(
                "no uploaded credentials named {name:?}: upload them with upload_google_json"
            )));
        }
        let o = ccfs::store::GcsOptions {
            bucket: req.bucket_name.clone(),
            credentials: Some(path),
            base_url: None,
            max_requests: None,
        };
        let store = self.with_faults(Store::open_gcs(&o, self.rt.clone()).map_err(api_err)?);
        match store.probe() {
            Err(Error::BucketNotFound { .. }) if req.create_if_not_found => Err(ApiError::not_implemented(format!(
                "bucket {} does not exist and this server does not create Google Cloud Storage buckets: create it in the Google Cloud console",
                req.bucket_name
            ))),
            Err(e) => Err(api_err(e)),
            Ok(()) => self.finish_connect(r, req, fs_path, store, o.url(), false),
        }
    }

    /// Format the store if it has no header yet, record the connection and answer.
    fn finish_connect(
        &self,
        r: &str,
        req: ConnectRequest,
        fs_path: String,
        store: Store,
        store_url: String,
        created: bool,
    ) -> Result<ConnectResponse, ApiError> {
        let action = match Repo::open(store.clone()) {
            Ok(_) => "connect",
            Err(Error::NotAStore { .. }) => {
                let opts = ccfs::InitOptions { block_size_kb: req.block_size_kb.unwrap_or(512), ..Default::default() };
                ccfs::init(&store, &opts).map_err(api_err)?;
                if created {
                    "create+format"
                } else {
                    "format"
                }
            }
            Err(e) => return Err(api_err(e)),
        };
        let repo = Repo::open(store).map_err(api_err)?;
        let version_id = repo.latest("main").map_err(api_err)?.map(|m| m.version_id.to_string()).unwrap_or_default();
        let conn = Conn {
            ccstore_ref: r.to_string(),
            name: req.name,
            cloud_service: req.cloud_service,
            bucket_name: req.bucket_name.clone(),
            fs_path,
            direction: req.direction,
            region: req.region.unwrap_or_default(),
            access_key: req.access_key.unwrap_or_default(),
            secret_key: req.secret_key.unwrap_or_default(),
            endpoint: req.endpoint.unwrap_or_default(),
            gc_credentials_filename: req.gc_credentials_filename.unwrap_or_default(),
            nfserver: req.nfserver.unwrap_or_default(),
            nfsexport: req.nfsexport.unwrap_or_default(),
            checkout_modified_policy: req.checkout_modified_policy.unwrap_or_default(),
            checkout_absent_policy: req.checkout_absent_policy.unwrap_or_default(),
            store_url,
        };
        self.db().conn_put(&conn).map_err(db_err)?;
        self.repos.lock().expect("repos").insert(r.to_string(), repo);
        Ok(ConnectResponse {
            status: "OK".into(),
            version_id,
            bucket_name: req.bucket_name,
            action_performed: action.into(),
        })
    }

    fn repo(&self, c: &Conn) -> Result<Repo, ApiError> {
        if let Some(r) = self.repos.lock().expect("repos").get(&c.ccstore_ref) {
            return Ok(r.clone());
        }
        let store = self.open_store(c)?;
        let repo = Repo::open(store).map_err(api_err)?;
        self.repos.lock().expect("repos").insert(c.ccstore_ref.clone(), repo.clone());
        Ok(repo)
    }

    /// Cached JSON answer (`no_cache` bypasses, `allow_cache` is the default here).
    fn cached<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        key: String,
        mode: CacheMode,
        f: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if !mode.no_cache && (self.cfg.cache_lookup || mode.allow_cache) {
            if let Some(v) = self.cache.get(&key) {
                if let Ok(t) = serde_json::from_value(v) {
                    return Ok(t);
                }
            }
        }
        let t = f()?;
        if let Ok(v) = serde_json::to_value(&t) {
            self.cache.insert(key, v);
        }
        Ok(t)
    }

    fn invalidate(&self, r: &str) {
        let prefix = format!("{r}|");
        let _ = self.cache.invalidate_entries_if(move |k, _| k.starts_with(&prefix));
    }

    /// Where a create reads or a checkout writes: the request's NFS export, else the
    /// connection's (with its fs_path), else the local data root; `p` inside it.
    fn data_set(
        &self,
        c: &Conn,
        server: &Option<String>,
        export: &Option<String>,
        p: Option<&str>,
    ) -> Result<DataSet, ApiError> {
        let p = p.unwrap_or("/");
        if let Some((s, e)) = nfs_pair(server, export)? {
            return Ok(DataSet::Nfs(nfs_url(&s, &e, p)?));
        }
        if !c.nfserver.is_empty() {
            let base = if c.fs_path.is_empty() { "/" } else { &c.fs_path };
            let within = inside(Path::new(base), p)?;
            return Ok(DataSet::Nfs(nfs_url(&c.nfserver, &c.nfsexport, &within.to_string_lossy())?));
        }
        Ok(DataSet::Local(inside(&self.data_root(c), p)?))
    }

    fn data_root(&self, c: &Conn) -> PathBuf {
        if c.fs_path.is_empty() {
            self.cfg.fs_root.clone()
        } else {
            PathBuf::from(&c.fs_path)
        }
    }

    fn resolve_version(
        &self,
        repo: &Repo,
        version_id: Option<&str>,
        branch: Option<&str>,
    ) -> Result<Arc<ccfs::format::Manifest>, ApiError> {
        let branch = branch.unwrap_or("main");
        match version_id {
            Some(v) => repo.resolve(v, branch).map_err(api_err),
            None => repo.resolve("latest", branch).map_err(api_err),
        }
    }

    fn started(&self, id: i64, uuid: String) -> OperationStarted {
        OperationStarted { status: "ok".into(), pid: std::process::id(), uuid, id, state: "working".into() }
    }

    fn op_wire(&self, row: OpRow, verbose: bool) -> Operation {
        let live = if row.status == "running" { self.ops.live(row.id) } else { None };
        let progress = live.as_ref().map(|l| l.0.clone()).or(row.progress.clone());
        Operation {
            id: row.id,
            uuid: row.uuid,
            operation_type: row.op_type,
            ccstore_ref: row.ccstore_ref,
            description: row.description,
            operation_status: row.status,
            operation_pid: row.pid,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_command_output: if verbose { Some(row.last_output.unwrap_or_default()) } else { None },
            operation_progress: if verbose { progress.and_then(|p| serde_json::from_str(&p).ok()) } else { None },
            operation_result: if verbose { row.result.and_then(|r| serde_json::from_str(&r).ok()) } else { None },
        }
    }
}

impl Backend for ServeBackend {
    fn login(&self, login: &str, password: &str) -> Result<Option<String>, ApiError> {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let Some(hash) = self.db().password_hash(login).map_err(db_err)? else { return Ok(None) };
        let parsed = PasswordHash::new(&hash).map_err(|e| ApiError::internal(format!("stored hash: {e}")))?;
        if argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_err() {
            return Ok(None);
        }
        let token = hex::encode(rand::random::<[u8; 32]>());
        let expires = now_secs() + self.cfg.session_ttl.as_secs() as i64;
        self.db().add_session(&token, login, expires).map_err(db_err)?;
        Ok(Some(token))
    }

    fn session_valid(&self, token: &str) -> bool {
        self.db().session_valid(token).unwrap_or(false)
    }

    fn logout(&self, token: &str) -> Result<(), ApiError> {
        self.db().delete_session(token).map_err(db_err)
    }

    fn connect(&self, r: &str, req: ConnectRequest) -> Result<ConnectResponse, ApiError> {
        valid_ref(r)?;
        if self.db().conn_get(r).map_err(db_err)?.is_some() {
            return Err(ApiError::conflict(format!("ccstore {r} is already connected; disconnect it first")));
        }
        one_of("direction", &Some(req.direction.clone()), &["direction_upload", "direction_download"])?;
        one_of("checkout_modified_policy", &req.checkout_modified_policy, MODIFIED)?;
        one_of("checkout_absent_policy", &req.checkout_absent_policy, ABSENT)?;
        if let Some(h) = &req.hash_type {
            if !h.eq_ignore_ascii_case("SHA-256") && !h.eq_ignore_ascii_case("sha256") {
                return Err(ApiError::unprocessable(format!("hash_type {h:?}: only SHA-256 is supported")));
            }
        }
        let fs_path = match nfs_pair(&req.nfserver, &req.nfsexport)? {
            // The data set is on the export: fs_path is a path inside it.
            Some((server, export)) => {
                let fs_path = export_path(&req.fs_path)?;
                check_export(&server, &export)?;
                fs_path
            }
            None if req.fs_path.is_empty() => String::new(),
            None => data_set_root(&self.cfg.fs_root, &req.fs_path)?,
        };
        valid_bucket(&req.bucket_name)?;
        let dir = match req.cloud_service.as_str() {
            "local" => self.cfg.bucket_root.join(&req.bucket_name),
            "s3" | "s3_generic" | "swift" | "cleversafe" | "ecs" | "hyperstore" | "activescale" => {
                return self.connect_s3(r, req, fs_path);
            }
            "gcp" | "gc" => return self.connect_gcs(r, req, fs_path),
            other => return Err(ApiError::unprocessable(format!("unknown cloud_service {other:?}"))),
        };
        let existed = dir.exists();
        if !existed && !req.create_if_not_found {
            return Err(ApiError::not_found(format!(
                "bucket {} does not exist; pass create_if_not_found=true to create it",
                req.bucket_name
            )));
        }
        let url = dir.to_string_lossy().into_owned();
        let store = self.with_faults(Store::open(&url, self.rt.clone(), true).map_err(api_err)?);
        self.finish_connect(r, req, fs_path, store, url, !existed)
    }

    fn update(&self, r: &str, req: UpdateRequest) -> Result<Status, ApiError> {
        let mut c = self.conn(r)?;
        one_of("checkout_modified_policy", &req.checkout_modified_policy, MODIFIED)?;
        one_of("checkout_absent_policy", &req.checkout_absent_policy, ABSENT)?;
        one_of("direction", &req.direction, &["direction_upload", "direction_download"])?;
        if let Some((server, export)) = nfs_pair(&req.nfserver, &req.nfsexport)? {
            check_export(&server, &export)?;
            c.nfserver = server;
            c.nfsexport = export;
        }
        if let Some(p) = req.fs_path {
            c.fs_path = if c.nfserver.is_empty() { data_set_root(&self.cfg.fs_root, &p)? } else { export_path(&p)? };
        }
        if let Some(v) = req.name {
            c.name = v;
        }
        if let Some(v) = req.direction {
            c.direction = v;
        }
        if let Some(v) = req.checkout_modified_policy {
            c.checkout_modified_policy = v;
        }
        if let Some(v) = req.checkout_absent_policy {
            c.checkout_absent_policy = v;
        }
        self.db().conn_put(&c).map_err(db_err)?;
        Ok(Status { status: "OK".into() })
    }

    fn delete_store(&self, r: &str, req: DeleteStoreRequest) -> Result<OperationStarted, ApiError> {
        let c = self.conn(r)?;
        if req.bucket_name != c.bucket_name {
            return Err(ApiError::unprocessable(format!(
                "bucket_name {:?} does not match the bucket of ccstore {r}",
                req.bucket_name
            )));
        }
        let repo = self.repo(&c)?;
        let threads = req.threads.unwrap_or(8) as usize;
        let keep = req.keep_bucket;
        // What deleting the bucket means for this service (GCS buckets are kept: ccfs does not
        // manage them, and says so in the result).
        let bucket = match c.cloud_service.as_str() {
            "local" => Some(Ok(PathBuf::from(&c.store_url))),
            "gcp" | "gc" => None,
            _ => Some(Err(self.s3_options(&c.bucket_name, &c.endpoint, &c.region, &c.access_key, &c.secret_key)?)),
        };
        let rt = self.rt.clone();
        let (ops, r2) = (self.ops.clone(), r.to_string());
        let desc = format!(
            "Bucket clear: CCStore [{r}] bucket [{}]{}",
            c.bucket_name,
            if keep { " (keep bucket)" } else { "" }
        );
        let (id, uuid) = self
            .ops
            .start("bucket_clear", r, desc, req.progressrate, move |p, cancel| {
                let n = ccfs::admin::clear_store(&repo, threads, p, cancel)?;
                let deleted = match (&bucket, keep) {
                    (_, true) | (None, _) => false,
                    (Some(Ok(dir)), false) => {
                        std::fs::remove_dir_all(dir)
                            .map_err(|e| ccfs::Error::Internal(format!("remove bucket {}: {e}", dir.display())))?;
                        true
                    }
                    (Some(Err(o)), false) => {
                        ccfs::bucket::delete_s3_bucket(o, &rt)?;
                        true
                    }
                };
                let _ = ops.db.lock().expect("db").conn_delete(&r2);
                let mut out = json!({"status": "OK", "deleted_objects": n, "bucket_deleted": deleted});
                if !keep && bucket.is_none() {
                    out["bucket_kept_reason"] = json!("ccfs does not delete Google Cloud Storage buckets");
                }
                Ok(out)
            })
            .map_err(db_err)?;
        self.repos.lock().expect("repos").remove(r);
        self.invalidate(r);
        Ok(self.started(id, uuid))
    }

    fn disconnect(&self, r: &str) -> Result<Status, ApiError> {
        valid_ref(r)?;
        if !self.db().conn_delete(r).map_err(db_err)? {
            return Err(ApiError::not_found(format!("ccstore {r} is not connected")));
        }
        self.repos.lock().expect("repos").remove(r);
        self.invalidate(r);
        Ok(Status { status: "OK".into() })
    }

    fn store_stats(&self, r: &str, cache: CacheMode) -> Result<SummaryResponse, ApiError> {
        let c = self.conn(r)?;
        self.cached(format!("{r}|stats"), cache, || {
            let repo = self.repo(&c)?;
            Ok(SummaryResponse {
                summary: summary_wire(ccfs::store_summary(&repo).map_err(api_err)?),
                status: "OK".into(),
            })
        })
    }

    fn store_summary(&self, r: &str) -> Result<SummaryResponse, ApiError> {
        self.store_stats(r, CacheMode::default())
    }

    fn list_stores(&self) -> Result<Vec<CcstoreInfo>, ApiError> {
        let conns = self.db().conn_list().map_err(db_err)?;
        Ok(conns
            .into_iter()
            .map(|c| {
                let cfg = self.repo(&c).ok().map(|r| r.config().clone());
                let cred_path = if c.gc_credentials_filename.is_empty() {
                    String::new()
                } else {
                    self.cfg
                        .state_dir
                        .join("gc_credentials")
                        .join(&c.gc_credentials_filename)
                        .to_string_lossy()
                        .into_owned()
                };
                CcstoreInfo {
                    ccstore_ref: c.ccstore_ref,
                    name: c.name,
                    cloud_service: c.cloud_service,
                    bucket_name: c.bucket_name,
                    fs_path: c.fs_path,
                    direction: c.direction,
                    cred_path,
                    endpoint: c.endpoint,
                    region: c.region,
                    user_key: if c.access_key.is_empty() { String::new() } else { "XXXX".into() },
                    user_password: "XXXX".into(),
                    format_version: cfg.as_ref().map_or(0, |c| c.format_version),
                    compression_method: cfg
                        .as_ref()
                        .map(|c| format!("{:?}", c.compression_method).to_lowercase())
                        .unwrap_or_default(),
                    hash_type: cfg.as_ref().map(|c| c.hash_type.clone()).unwrap_or_default(),
                    nfserver: c.nfserver,
                    nfsexport: c.nfsexport,
                    checkout_modified_policy: c.checkout_modified_policy,
                    checkout_absent_policy: c.checkout_absent_policy,
                }
            })
            .collect())
    }

    fn upload_google_json(&self, content: &str, filename: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let v: serde_json::Value =
            serde_json::from_str(content).map_err(|e| ApiError::unprocessable(format!("content is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(ApiError::unprocessable("content must be a JSON object (a service-account key)"));
        }
        let name = filename.map(str::to_string).unwrap_or_else(|| format!("credentials-{}.json", now_secs()));
        if !valid_credentials_name(&name) {
            return Err(ApiError::unprocessable(format!(
                "filename {name:?}: use letters, digits, '.', '_', '-', not starting with '.'"
            )));
        }
        let dir = self.cfg.state_dir.join("gc_credentials");
        std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
        let path = dir.join(&name);
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(ApiError::internal)?;
        f.write_all(content.as_bytes()).map_err(ApiError::internal)?;
        Ok(json!({"status": "OK", "filename": name}))
    }

    fn clear_cache(&self) -> Result<Status, ApiError> {
        self.cache.invalidate_all();
        for r in self.repos.lock().expect("repos").values() {
            r.clear_caches();
        }
        Ok(Status { status: "OK".into() })
    }

    fn download(&self, r: &str, version_id: &str, src_path: &str, filename: &str) -> Result<Download, ApiError> {
        let c = self.conn(r)?;
        let repo = self.repo(&c)?;
        let m = self.resolve_version(&repo, Some(version_id), None)?;
        let v = Version::new(repo, m);
        let e = v.lookup(src_path.as_bytes()).map_err(api_err)?;
        if e.kind != ccfs::format::EntryKind::File {
            return Err(ApiError::unprocessable(format!("{src_path} is not a regular file")));
        }
        let name =
            if filename.is_empty() { String::from_utf8_lossy(&e.name).into_owned() } else { filename.to_string() };
        let size = e.size;
        let desc = format!("Download file: [{src_path}] of [{}] from CCStore [{r}]", v.manifest.version_id);
        let tracked = self.ops.record("download_file", r, desc).map_err(db_err)?;
        Ok(Download {
            size,
            filename: name,
            read: Box::new(move |off, len| match v.read(&e, off, len) {
                Ok(data) => {
                    tracked.sent(data.len() as u64);
                    Ok(Bytes::from(data))
                }
                Err(err) => {
                    tracked.fail(&err.to_string());
                    Err(api_err(err))
                }
            }),
        })
    }

    fn operations(&self, f: &OperationFilter) -> Result<Vec<Operation>, ApiError> {
        let rows = self.db().op_list().map_err(db_err)?;
        Ok(rows
            .into_iter()
            .filter(|o| match o.op_type.as_str() {
                "scan" => f.include_scan || f.include_commit,
                "checkout" => f.include_checkout,
                "delete" => f.include_delete,
                "bucket_clear" => f.include_bucket_clear,
                "download_file" => f.include_download_file,
                _ => true,
            })
            .filter(|o| {
                f.include_all_statuses
                    || match o.status.as_str() {
                        "running" => f.include_running,
                        "complete" => f.include_complete,
                        "failed" => f.include_failed,
                        "aborted" => f.include_aborted,
                        _ => true,
                    }
            })
            .map(|o| self.op_wire(o, f.verbose))
            .collect())
    }

    fn operation(&self, id: i64) -> Result<Operation, ApiError> {
        let row = self
            .db()
            .op_get(id)
            .map_err(db_err)?
            .ok_or_else(|| ApiError::not_found(format!("operation {id} not found")))?;
        Ok(self.op_wire(row, true))
    }

    fn abort(&self, id: i64) -> Result<AbortResponse, ApiError> {
        self.db()
            .op_get(id)
            .map_err(db_err)?
            .ok_or_else(|| ApiError::not_found(format!("operation {id} not found")))?;
        Ok(AbortResponse { status: "ok".into(), did_abort: self.ops.cancel(id) })
    }

    fn skipped_files(&self, id: i64) -> Result<SkippedFiles, ApiError> {
        let row = self
            .db()
            .op_get(id)
            .map_err(db_err)?
            .ok_or_else(|| ApiError::not_found(format!("operation {id} not found")))?;
        let skipped = self.ops.live(id).map(|l| l.1).or(row.skipped).unwrap_or_else(|| "{}".into());
        let list: BTreeMap<String, String> = serde_json::from_str(&skipped).unwrap_or_default();
        let elapsed = chrono::DateTime::parse_from_rfc3339(&row.created_at)
            .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64)
            .unwrap_or(0);
        Ok(SkippedFiles {
            num_skipped: list.len() as u64,
            elapsed_sec: elapsed,
            skipped_list: list,
            update_time: chrono::Utc::now().format("%Y.%m.%d-%H:%M:%S").to_string(),
        })
    }

    fn purge(&self, which: Purge) -> Result<serde_json::Value, ApiError> {
        match which {
            Purge::All => Ok(json!({"purged": self.db().op_purge(None).map_err(db_err)?})),
            Purge::Old => Ok(json!({"purged": self.db().op_purge(Some(now_secs() - 7 * 24 * 3600)).map_err(db_err)?})),
            Purge::One(id) => {
                let row = self
                    .db()
                    .op_get(id)
                    .map_err(db_err)?
                    .ok_or_else(|| ApiError::not_found(format!("operation {id} not found")))?;
                if row.status == "running" {
                    return Err(ApiError::conflict(format!("operation {id} is still running; abort it first")));
                }
                self.db().op_delete(id).map_err(db_err)?;
                Ok(json!({"status": "ok"}))
            }
        }
    }

    fn periodic_update(&self) -> Result<Status, ApiError> {
        let alive = self.ops.alive();
        let n = self.db().op_fail_orphans(&alive, "the operation's worker is gone").map_err(db_err)?;
        if n > 0 {
            tracing::warn!(n, "marked operations without a worker as failed");
        }
        self.cache.invalidate_all();
        Ok(Status::ok())
    }

    fn versions(&self, r: &str, cache: CacheMode) -> Result<Vec<VersionInfo>, ApiError> {
        let c = self.conn(r)?;
        self.cached(format!("{r}|versions"), cache, || {
            let repo = self.repo(&c)?;
            Ok(repo.versions(None).map_err(api_err)?.iter().map(|m| version_info(m)).collect())
        })
    }

    fn version_stats(&self, r: &str, version_id: &str, cache: CacheMode) -> Result<VersionStatsResponse, ApiError> {
        let c = self.conn(r)?;
        self.cached(format!("{r}|vstats|{version_id}"), cache, || {
            let repo = self.repo(&c)?;
            let m = self.resolve_version(&repo, Some(version_id), None)?;
            let s = repo.version_stats(&m).map_err(api_err)?;
            Ok(VersionStatsResponse {
                summary: VersionSummary {
                    diff_data_reduction: s.diff_data_reduction,
                    diff_file_data: s.diff_file_data,
                    diff_num_dirs: s.diff_num_dirs,
                    diff_num_files: s.diff_num_files,
                    fs_num_dirs: s.fs_num_dirs,
                    fs_num_files: s.fs_num_files,
                    fs_total_data: s.fs_total_data,
                    total_data_reduction: s.total_data_reduction,
                    version_object_data: s.version_object_data,
                },
                status: "OK".into(),
            })
        })
    }

    fn create_version(&self, r: &str, req: CreateRequest) -> Result<OperationStarted, ApiError> {
        let c = self.conn(r)?;
        let repo = self.repo(&c)?;
        let src = self.data_set(&c, &req.nfserver, &req.nfsexport, req.fs_src.as_deref())?;
        if let DataSet::Local(p) = &src {
            if !p.is_dir() {
                return Err(ApiError::unprocessable(format!("fs_src {} is not a directory", p.display())));
            }
        }
        let branch = req.branch.unwrap_or_else(|| "main".into());
        ccfs::ids::validate_branch(&branch).map_err(api_err)?;
        let parent = match &req.parent_version_id {
            Some(p) => Some(repo.resolve(p, &branch).map_err(api_err)?.version_id.clone()),
            None => None,
        };
        let opts = ccfs::CreateOptions {
            branch,
            parent,
            no_parent: false,
            desc: req.version_desc.unwrap_or_else(|| src.display()),
            threads: req.threads.unwrap_or(0) as usize,
            lease_ttl: ccfs::lease::DEFAULT_TTL,
        };
        let desc = format!("Version create: from [:{}] to CCStore [{r}]", src.display());
        let r2 = r.to_string();
        let cache = self.cache.clone();
        let (id, uuid) = self
            .ops
            .start("scan", r, desc, req.progressrate, move |p, cancel| {
                let out = ccfs::create_version(&repo, src.source()?, &opts, p, cancel)?;
                let prefix = format!("{r2}|");
                let _ = cache.invalidate_entries_if(move |k, _| k.starts_with(&prefix));
                Ok(json!({"status": "OK", "version_id": out.manifest.version_id.to_string(), "workdir": src.display(),
                          "num_skipped": out.stats.skipped.len()}))
            })
            .map_err(db_err)?;
        Ok(self.started(id, uuid))
    }

    fn checkout(&self, r: &str, req: CheckoutRequest) -> Result<CheckoutStarted, ApiError> {
        let c = self.conn(r)?;
        one_of("checkout_modified_policy", &req.checkout_modified_policy, MODIFIED)?;
        one_of("checkout_absent_policy", &req.checkout_absent_policy, ABSENT)?;
        // The request's policies, else the connection's, else the defaults (replace, preserve).
        let pick =
            |req: &Option<String>, conn: &str| req.clone().or_else(|| (!conn.is_empty()).then(|| conn.to_string()));
        let modified = match pick(&req.checkout_modified_policy, &c.checkout_modified_policy) {
            Some(p) => p.parse().map_err(api_err)?,
            None => Default::default(),
        };
        let absent = match pick(&req.checkout_absent_policy, &c.checkout_absent_policy) {
            Some(p) => p.parse().map_err(api_err)?,
            None => Default::default(),
        };
        let path = match &req.path {
            Some(p) if !p.starts_with('/') => return Err(ApiError::unprocessable("path must begin with '/'")),
            Some(p) => {
                ccfs::catalog::split_path(p.as_bytes()).map_err(api_err)?;
                Some(p.as_bytes().to_vec())
            }
            None => None,
        };
        let repo = self.repo(&c)?;
        let m = self.resolve_version(&repo, req.version_id.as_deref(), req.branch.as_deref())?;
        let dest = self.data_set(&c, &req.nfserver, &req.nfsexport, req.fs_dest.as_deref())?;
        let v = Version::new(repo, m.clone());
        v.lookup(path.as_deref().unwrap_or(b"/")).map_err(api_err)?;
        let opts = ccfs::CheckoutOptions { path, threads: req.threads.unwrap_or(0) as usize, modified, absent };
        let desc = format!("Version checkout: [{}] to [:{}]", m.version_id, dest.display());
        let d2 = dest.clone();
        let (id, uuid) = self
            .ops
            .start("checkout", r, desc, req.progressrate, move |p, cancel| {
                let out = ccfs::checkout(&v, d2.target()?, &opts, p, cancel)?;
                Ok(json!({"status": "OK", "fs_dest": d2.display(), "files": out.files, "dirs": out.dirs,
                          "bytes": out.bytes, "unchanged": out.unchanged, "kept": out.kept, "deleted": out.deleted,
                          "archived": out.archived, "archive_dir": out.archive_dir,
                          "num_skipped": out.skipped.len(), "ownership_skipped": out.ownership_skipped}))
            })
            .map_err(db_err)?;
        Ok(CheckoutStarted {
            fs_dest: dest.display(),
            version_id: m.version_id.to_string(),
            status: "ok".into(),
            pid: std::process::id(),
            uuid,
            id,
            state: "working".into(),
        })
    }

    fn delete_version(&self, r: &str, req: DeleteVersionRequest) -> Result<OperationStarted, ApiError> {
        let c = self.conn(r)?;
        let repo = self.repo(&c)?;
        let m = self.resolve_version(&repo, Some(&req.version_id), None)?;
        let id: VersionId = m.version_id.clone();
        let desc = format!("Version delete: [{id}] from CCStore [{r}]");
        let threads = req.threads.map_or(8, |t| t.clamp(1, 64) as usize);
        let r2 = r.to_string();
        let cache = self.cache.clone();
        let (op, uuid) = self
            .ops
            .start("delete", r, desc, req.progressrate, move |p, cancel| {
                ccfs::admin::delete_version(&repo, &id, &p)?;
                let prefix = format!("{r2}|");
                let _ = cache.invalidate_entries_if(move |k, _| k.starts_with(&prefix));
                // Reclaim what only this version used (safe beside running creates; packs
                // younger than the grace window stay for creates that may resume).
                let opts = ccfs::gc::GcOptions { threads, ..Default::default() };
                let gc = match ccfs::gc::run(&repo, &opts, p, cancel) {
                    Ok(r) => serde_json::to_value(&r).unwrap_or_default(),
                    Err(ccfs::Error::Busy(why)) => json!({"deferred": why}),
                    Err(e) => return Err(e),
                };
                Ok(json!({"status": "OK", "version_id": id.to_string(), "gc": gc}))
            })
            .map_err(db_err)?;
        Ok(self.started(op, uuid))
    }

    fn dir(&self, r: &str, req: DirRequest) -> Result<Vec<DirEntry>, ApiError> {
        let c = self.conn(r)?;
        let repo = self.repo(&c)?;
        let m = self.resolve_version(&repo, req.version_id.as_deref(), req.branch.as_deref())?;
        let v = Version::new(repo, m);
        let entries = v.list(req.path.as_bytes(), req.offset, req.count).map_err(api_err)?;
        Ok(entries
            .iter()
            .map(|e| {
                let i = DirEntryInfo::from(e);
                DirEntry {
                    date: i.date,
                    uid: i.uid,
                    gid: i.gid,
                    nlinks: i.nlinks,
                    permissions: i.permissions,
                    name: i.name,
                    kind: i.kind,
                    symlink_to: i.symlink_to,
                    file_size: i.file_size,
                }
            })
            .collect())
    }
}
