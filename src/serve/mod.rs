//! `ccfs serve`: the control plane, wired from `control-api` and the core.

mod backend;
mod db;
mod ops;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

pub use backend::{ServeBackend, ServeConfig};

/// Options of `ccfs serve`.
pub struct ServeOptions {
    pub listen: String,
    pub state_dir: PathBuf,
    pub bucket_root: Option<PathBuf>,
    pub fs_root: PathBuf,
    pub session_ttl: Duration,
    pub cache_lookup: bool,
    pub allowed_endpoints: Option<Vec<String>>,
    /// Store faults to inject into every connection's store (tests only).
    pub faults: Option<ccfs::fault::FaultPlan>,
}

/// Create the admin user on first start: password from `CCFS_ADMIN_PASSWORD`, or generated and
/// written once to `<state>/admin-password` (0600).
fn ensure_admin(db: &db::Db, state: &std::path::Path) -> Result<()> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    if db.user_count()? > 0 {
        return Ok(());
    }
    let (password, from_env) = match std::env::var("CCFS_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, true),
        _ => (hex::encode(rand::random::<[u8; 16]>()), false),
    };
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hash password: {e}"))?
        .to_string();
    db.add_user("admin", &hash)?;
    if !from_env {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = state.join("admin-password");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("write {}", path.display()))?;
        writeln!(f, "{password}")?;
        eprintln!("ccfs: created user admin; its password is in {} (readable by its owner only)", path.display());
    } else {
        eprintln!("ccfs: created user admin with the password from CCFS_ADMIN_PASSWORD");
    }
    Ok(())
}

/// Run the server until SIGINT/SIGTERM.
///
/// # Errors
/// Bad listen address, state directory or port in use.
pub fn run(opts: ServeOptions, rt: &tokio::runtime::Runtime, shutdown: ccfs::CancellationToken) -> Result<()> {
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("state directory {}", opts.state_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&opts.state_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let state_dir = std::fs::canonicalize(&opts.state_dir)?;
    let bucket_root = opts.bucket_root.clone().unwrap_or_else(|| state_dir.join("buckets"));
    std::fs::create_dir_all(&bucket_root).with_context(|| format!("bucket directory {}", bucket_root.display()))?;
    let fs_root =
        std::fs::canonicalize(&opts.fs_root).with_context(|| format!("fs root {}", opts.fs_root.display()))?;
    let db = db::Db::open(&state_dir).context("open the state database")?;
    ensure_admin(&db, &state_dir)?;
    let cfg = ServeConfig {
        state_dir,
        bucket_root,
        fs_root,
        session_ttl: opts.session_ttl,
        cache_lookup: opts.cache_lookup,
        allowed_endpoints: opts.allowed_endpoints.clone(),
        faults: opts.faults.clone(),
    };
    let backend = ServeBackend::new(cfg, rt.handle().clone(), db).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let ops = backend.ops().clone();
    let flusher = {
        let (ops, stop) = (ops.clone(), shutdown.clone());
        std::thread::spawn(move || {
            while !stop.is_cancelled() {
                ops.flush();
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&opts.listen))
        .with_context(|| format!("listen on {}", opts.listen))?;
    eprintln!("ccfs: control plane on http://{}", listener.local_addr()?);
    let app = control_api::app(backend as Arc<dyn control_api::Backend>);
    let stop = shutdown.clone();
    rt.block_on(control_api::serve(listener, app, async move { stop.cancelled().await }))?;
    eprintln!("ccfs: stopping; aborting running operations");
    ops.shutdown(Duration::from_secs(10));
    let _ = flusher.join();
    Ok(())
}
