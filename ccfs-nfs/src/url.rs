//! `nfs://SERVER[:PORT]/EXPORT/PATH?param=value&…` URLs.

use std::time::Duration;

/// Where an NFS tree is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfsUrl {
    /// Server host name or address.
    pub host: String,
    /// NFS service port; `None`: ask the server's portmapper.
    pub nfs_port: Option<u16>,
    /// MOUNT service port; `None`: ask the server's portmapper.
    pub mount_port: Option<u16>,
    /// Portmapper port (default 111), used only when a service port is not given.
    pub portmapper_port: u16,
    /// The export, when known (`export=` parameter, or the API's `nfsexport`); `None` means
    /// the longest-unknown split of `path`: its shortest prefix the server agrees to mount.
    pub export: Option<String>,
    /// The whole path after the host (export, then the path inside it), `/`-separated.
    pub path: String,
    /// AUTH_UNIX credentials sent with every call.
    pub uid: u32,
    pub gid: u32,
    /// Time a single call may take before the connection is dropped and the call retried.
    pub timeout: Duration,
    /// Attempts per call (first try included) across reconnects.
    pub attempts: u32,
    /// Connections (and so calls in flight) to the server.
    pub connections: usize,
    /// Connect from a port below 1024, as most kernel servers require (needs root).
    pub privileged: bool,
}

/// Parameters an `nfs://` URL accepts.
pub const PARAMS: &str = "nfsport, mountport, port (both), portmapperport, export, uid, gid, timeout (seconds), \
                          retries, connections, privileged (0/1)";

impl NfsUrl {
    /// A URL for `host` with everything else at its default.
    pub fn new(host: &str, path: &str) -> NfsUrl {
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        NfsUrl {
            host: host.to_string(),
            nfs_port: None,
            mount_port: None,
            portmapper_port: 111,
            export: None,
            path: normalize(path),
            uid,
            gid,
            timeout: Duration::from_secs(30),
            attempts: 4,
            connections: 8,
            privileged: uid == 0,
        }
    }

    /// Parse `nfs://SERVER[:PORT]/EXPORT/PATH?…` (see [`PARAMS`]).
    ///
    /// # Errors
    /// A message saying what is wrong with the URL.
    pub fn parse(s: &str) -> Result<NfsUrl, String> {
        let u = url::Url::parse(s).map_err(|e| format!("invalid NFS URL {s:?}: {e}"))?;
        if u.scheme() != "nfs" {
            return Err(format!("invalid NFS URL {s:?}: the scheme must be nfs://"));
        }
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(format!("invalid NFS URL {s:?}: no server")),
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!("invalid NFS URL {s:?}: NFSv3 has no user names; use ?uid=&gid="));
        }
        let path = percent_decode(u.path()).ok_or_else(|| format!("invalid NFS URL {s:?}: bad %-escape"))?;
        let mut n = NfsUrl::new(&host, &path);
        if n.path == "/" {
            return Err(format!("invalid NFS URL {s:?}: name the export, as nfs://SERVER/EXPORT[/PATH]"));
        }
        n.nfs_port = u.port();
        for (k, v) in u.query_pairs() {
            let num = |what: &str| -> Result<u64, String> {
                v.parse::<u64>().map_err(|_| format!("invalid NFS URL {s:?}: {what}={v:?} is not a number"))
            };
            let port = |what: &str| -> Result<u16, String> {
                match num(what)? {
                    p @ 1..=65535 => Ok(p as u16),
                    _ => Err(format!("invalid NFS URL {s:?}: {what}={v} is not a port")),
                }
            };
            match k.as_ref() {
                "nfsport" => n.nfs_port = Some(port("nfsport")?),
                "mountport" => n.mount_port = Some(port("mountport")?),
                "port" => {
                    let p = port("port")?;
                    n.nfs_port = Some(p);
                    n.mount_port = Some(p);
                }
                "portmapperport" => n.portmapper_port = port("portmapperport")?,
                "export" => n.export = Some(normalize(&v)),
                "uid" => n.uid = u32::try_from(num("uid")?).map_err(|_| format!("invalid NFS URL {s:?}: uid"))?,
                "gid" => n.gid = u32::try_from(num("gid")?).map_err(|_| format!("invalid NFS URL {s:?}: gid"))?,
                "timeout" => match num("timeout")? {
                    t @ 1..=3600 => n.timeout = Duration::from_secs(t),
                    _ => return Err(format!("invalid NFS URL {s:?}: timeout must be 1 to 3600 seconds")),
                },
                "retries" => match num("retries")? {
                    r @ 0..=20 => n.attempts = r as u32 + 1,
                    _ => return Err(format!("invalid NFS URL {s:?}: retries must be 0 to 20")),
                },
                "connections" => match num("connections")? {
                    c @ 1..=64 => n.connections = c as usize,
                    _ => return Err(format!("invalid NFS URL {s:?}: connections must be 1 to 64")),
                },
                "privileged" => n.privileged = num("privileged")? != 0,
                other => return Err(format!("invalid NFS URL {s:?}: unknown parameter {other:?} (known: {PARAMS})")),
            }
        }
        if let Some(e) = &n.export {
            if !within(&n.path, e) {
                return Err(format!("invalid NFS URL {s:?}: the path does not begin with the export {e}"));
            }
        }
        Ok(n)
    }

    /// The URL of this tree (for messages and manifests); no credentials are in it.
    pub fn display(&self) -> String {
        let port = self.nfs_port.map(|p| format!(":{p}")).unwrap_or_default();
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("nfs://{host}{port}{}", self.path)
    }
}

/// `/a//b/` → `/a/b`; always one leading slash.
pub(crate) fn normalize(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    format!("/{}", parts.join("/"))
}

/// Whether `path` is `export` or below it.
pub(crate) fn within(path: &str, export: &str) -> bool {
    export == "/" || path == export || path.strip_prefix(export).is_some_and(|r| r.starts_with('/'))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_export_and_options() {
        let u = NfsUrl::parse("nfs://127.0.0.1:2050/export/sub%20dir?mountport=2051&uid=5&gid=6&timeout=3&retries=1")
            .unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!((u.nfs_port, u.mount_port), (Some(2050), Some(2051)));
        assert_eq!(u.path, "/export/sub dir");
        assert_eq!((u.uid, u.gid, u.timeout.as_secs(), u.attempts), (5, 6, 3, 2));
        assert_eq!(u.display(), "nfs://127.0.0.1:2050/export/sub dir");
        let u = NfsUrl::parse("nfs://h/srv/nfs/x?port=5006&export=/srv/nfs").unwrap();
        assert_eq!((u.nfs_port, u.mount_port, u.export.as_deref()), (Some(5006), Some(5006), Some("/srv/nfs")));
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        for (bad, why) in [
            ("s3://b/x", "scheme"),
            ("nfs:///export", "server"),
            ("nfs://h/", "name the export"),
            ("nfs://h/e?port=0", "not a port"),
            ("nfs://h/e?port=x", "not a number"),
            ("nfs://h/e?colour=red", "unknown parameter"),
            ("nfs://h/e/x?export=/other", "does not begin with the export"),
            ("nfs://u:p@h/e", "user names"),
            ("nfs://h/e?timeout=0", "timeout"),
        ] {
            let e = NfsUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn export_prefixes() {
        assert!(within("/a/b", "/a"));
        assert!(within("/a", "/a"));
        assert!(!within("/ab", "/a"));
        assert!(within("/x", "/"));
        assert_eq!(normalize("a//b/./c/"), "/a/b/c");
    }
}
