//! `ccfs serve` run as a child process and driven over real HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::bin;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub token: Option<String>,
    pub state: PathBuf,
}

impl Server {
    pub fn start(state: &Path, extra: &[&str]) -> Server {
        Self::start_as(state, extra, None, &[])
    }

    pub fn start_as(state: &Path, extra: &[&str], uid: Option<u32>, env: &[(&str, &str)]) -> Server {
        let mut cmd = match uid {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([format!("--reuid={u}"), format!("--regid={u}"), "--clear-groups".into(), "--".into()])
                    .arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--state"])
            .arg(state)
            .args(extra)
            .env("CCFS_ADMIN_PASSWORD", "s3cret-pw")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = cmd.spawn().expect("start ccfs serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("server exited before listening").unwrap();
            if let Some(addr) = line.split("control plane on ").nth(1) {
                break addr.trim().to_string();
            }
        };
        // keep draining stderr so the server never blocks on it
        std::thread::spawn(move || for _ in lines {});
        Server { child, base, token: None, state: state.to_path_buf() }
    }

    pub fn login(&mut self) {
        let (s, v) =
            self.call("POST", "/api/sessions", Some(json!({"user": {"login": "admin", "password": "s3cret-pw"}})));
        assert_eq!(s, 200, "{v}");
        self.token = Some(v["token"].as_str().unwrap().to_string());
    }

    /// (status, JSON body or the raw text as a string).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = ureq::request(method, &format!("{}{}", self.base, path)).timeout(Duration::from_secs(60));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(&b.to_string()),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body);
        assert_eq!(s, 200, "{method} {path}: {v}");
        v
    }

    pub fn wait_op(&self, id: i64) -> Value {
        let t0 = Instant::now();
        loop {
            let op = self.ok("GET", &format!("/elcc_api/operations/{id}"), None);
            if op["operation_status"] != "running" {
                return op;
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "operation {id} did not finish: {op}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(20), "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::mem::forget(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn connect(s: &Server, r: &str, bucket: &str, fs_path: &Path) -> Value {
    s.ok(
        "POST",
        &format!("/elcc_api/ccstores/{r}/connect"),
        Some(json!({"cloud_service": "local", "bucket_name": bucket, "create_if_not_found": true,
                    "fs_path": fs_path.to_str().unwrap(), "direction": "direction_upload"})),
    )
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
