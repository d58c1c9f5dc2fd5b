//! Control-plane state in SQLite: users, sessions, connections and the operation history.
//! Object data never lives here.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

pub type DbResult<T> = rusqlite::Result<T>;

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `2016-01-01T10:02:00.000Z`
pub fn iso_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A stored connection (secrets included; the database file is 0600).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Conn {
    pub ccstore_ref: String,
    pub name: String,
    pub cloud_service: String,
    pub bucket_name: String,
    pub fs_path: String,
    pub direction: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    pub endpoint: String,
    pub gc_credentials_filename: String,
    pub nfserver: String,
    pub nfsexport: String,
    pub checkout_modified_policy: String,
    pub checkout_absent_policy: String,
    /// Where the store is (a local directory for `local`).
    pub store_url: String,
}

/// One operation row.
#[derive(Clone, Debug, Default)]
pub struct OpRow {
    pub id: i64,
    pub uuid: String,
    pub op_type: String,
    pub ccstore_ref: String,
    pub description: String,
    pub status: String,
    pub pid: u32,
    pub created_at: String,
    pub updated_at: String,
    pub progress: Option<String>,
    pub result: Option<String>,
    pub skipped: Option<String>,
    pub last_output: Option<String>,
}

pub struct Db {
    conn: Connection,
}

impl Db {
    /// Open (creating) the database in `dir` and apply the schema.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open(dir: &Path) -> DbResult<Db> {
        let path = dir.join("ccfs.sqlite");
        let conn = Connection::open(&path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS users (login TEXT PRIMARY KEY, password_hash TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS sessions (token TEXT PRIMARY KEY, login TEXT NOT NULL, expires_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS connections (ccstore_ref TEXT PRIMARY KEY, config TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS operations (
                id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL, operation_type TEXT NOT NULL,
                ccstore_ref TEXT NOT NULL, description TEXT NOT NULL, status TEXT NOT NULL, pid INTEGER NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at INTEGER,
                progress TEXT, result TEXT, skipped TEXT, last_output TEXT);",
        )?;
        Ok(Db { conn })
    }

    pub fn user_count(&self) -> DbResult<i64> {
        self.conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
    }

    pub fn add_user(&self, login: &str, hash: &str) -> DbResult<()> {
        self.conn
            .execute("INSERT OR REPLACE INTO users (login, password_hash) VALUES (?1, ?2)", params![login, hash])?;
        Ok(())
    }

    pub fn password_hash(&self, login: &str) -> DbResult<Option<String>> {
        self.conn.query_row("SELECT password_hash FROM users WHERE login = ?1", params![login], |r| r.get(0)).optional()
    }

    pub fn add_session(&self, token: &str, login: &str, expires_at: i64) -> DbResult<()> {
        self.conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now_secs()])?;
        self.conn.execute(
            "INSERT INTO sessions (token, login, expires_at) VALUES (?1, ?2, ?3)",
            params![token, login, expires_at],
        )?;
        Ok(())
    }

    pub fn session_valid(&self, token: &str) -> DbResult<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM sessions WHERE token = ?1 AND expires_at > ?2",
            params![token, now_secs()],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    pub fn delete_session(&self, token: &str) -> DbResult<()> {
        self.conn.execute("DELETE FROM sessions WHERE token = ?1", params![token])?;
        Ok(())
    }

    pub fn conn_get(&self, r: &str) -> DbResult<Option<Conn>> {
        let raw: Option<String> = self
            .conn
            .query_row("SELECT config FROM connections WHERE ccstore_ref = ?1", params![r], |row| row.get(0))
            .optional()?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }

    pub fn conn_put(&self, c: &Conn) -> DbResult<()> {
        let json = serde_json::to_string(c).expect("connection serializes");
        self.conn.execute(
            "INSERT OR REPLACE INTO connections (ccstore_ref, config) VALUES (?1, ?2)",
            params![c.ccstore_ref, json],
        )?;
        Ok(())
    }

    pub fn conn_delete(&self, r: &str) -> DbResult<bool> {
        Ok(self.conn.execute("DELETE FROM connections WHERE ccstore_ref = ?1", params![r])? > 0)
    }

    pub fn conn_list(&self) -> DbResult<Vec<Conn>> {
        let mut st = self.conn.prepare("SELECT config FROM connections ORDER BY ccstore_ref")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.filter_map(|r| r.ok()).filter_map(|s| serde_json::from_str(&s).ok()).collect())
    }

    pub fn op_insert(&self, uuid: &str, op_type: &str, r: &str, description: &str) -> DbResult<i64> {
        let now = iso_now();
        self.conn.execute(
            "INSERT INTO operations (uuid, operation_type, ccstore_ref, description, status, pid, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?6)",
            params![uuid, op_type, r, description, std::process::id(), now],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn op_progress(&self, id: i64, progress: &str, skipped: &str) -> DbResult<()> {
        self.conn.execute(
            "UPDATE operations SET progress = ?2, skipped = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, progress, skipped, iso_now()],
        )?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn op_finish(
        &self,
        id: i64,
        status: &str,
        progress: &str,
        skipped: &str,
        result: &str,
        output: &str,
    ) -> DbResult<()> {
        self.conn.execute(
            "UPDATE operations SET status = ?2, progress = ?3, skipped = ?4, result = ?5, last_output = ?6,
             updated_at = ?7, finished_at = ?8 WHERE id = ?1",
            params![id, status, progress, skipped, result, output, iso_now(), now_secs()],
        )?;
        Ok(())
    }

    /// Mark running operations not in `alive` as failed with `reason`; returns how many.
    pub fn op_fail_orphans(&self, alive: &[i64], reason: &str) -> DbResult<u64> {
        let running = self.op_ids_with_status("running")?;
        let mut n = 0;
        for id in running.into_iter().filter(|id| !alive.contains(id)) {
            let result = serde_json::json!({"status": "error", "error": reason}).to_string();
            self.conn.execute(
                "UPDATE operations SET status = 'failed', result = ?2, last_output = ?3, updated_at = ?4, finished_at = ?5 WHERE id = ?1",
                params![id, result, reason, iso_now(), now_secs()],
            )?;
            n += 1;
        }
        Ok(n)
    }

    fn op_ids_with_status(&self, status: &str) -> DbResult<Vec<i64>> {
        let mut st = self.conn.prepare("SELECT id FROM operations WHERE status = ?1")?;
        let rows = st.query_map(params![status], |r| r.get(0))?;
        rows.collect()
    }

    fn row(r: &rusqlite::Row<'_>) -> DbResult<OpRow> {
        Ok(OpRow {
            id: r.get(0)?,
            uuid: r.get(1)?,
            op_type: r.get(2)?,
            ccstore_ref: r.get(3)?,
            description: r.get(4)?,
            status: r.get(5)?,
            pid: r.get(6)?,
            created_at: r.get(7)?,
            updated_at: r.get(8)?,
            progress: r.get(9)?,
            result: r.get(10)?,
            skipped: r.get(11)?,
            last_output: r.get(12)?,
        })
    }

    const COLS: &'static str = "id, uuid, operation_type, ccstore_ref, description, status, pid, created_at, updated_at, progress, result, skipped, last_output";

    pub fn op_get(&self, id: i64) -> DbResult<Option<OpRow>> {
        self.conn
            .query_row(&format!("SELECT {} FROM operations WHERE id = ?1", Self::COLS), params![id], Self::row)
            .optional()
    }

    pub fn op_list(&self) -> DbResult<Vec<OpRow>> {
        let mut st = self.conn.prepare(&format!("SELECT {} FROM operations ORDER BY id", Self::COLS))?;
        let rows = st.query_map([], Self::row)?;
        rows.collect()
    }

    /// Delete finished operations (all, or those finished before `before`).
    pub fn op_purge(&self, before: Option<i64>) -> DbResult<u64> {
        let n = match before {
            None => self.conn.execute("DELETE FROM operations WHERE status != 'running'", [])?,
            Some(t) => self.conn.execute(
                "DELETE FROM operations WHERE status != 'running' AND finished_at IS NOT NULL AND finished_at < ?1",
                params![t],
            )?,
        };
        Ok(n as u64)
    }

    pub fn op_delete(&self, id: i64) -> DbResult<()> {
        self.conn.execute("DELETE FROM operations WHERE id = ?1", params![id])?;
        Ok(())
    }
}
