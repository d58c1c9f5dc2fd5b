//! A blocking NFSv3 client in user space, for hosts that cannot mount NFS (containers, no
//! root, no kernel client).
//!
//! The wire protocol (XDR, RPC records, MOUNT and NFS procedures) comes from `nfs3_client`;
//! this crate adds what a backup tool needs on top:
//! - a pool of connections, each served by one thread, so many calls are in flight at once
//!   (`nfs3_client` runs one call at a time per connection);
//! - timeouts on every call, reconnects and retries with backoff; a server that stays away
//!   fails the call with an error of kind `ConnectionRefused`, `TimedOut` or
//!   `ConnectionAborted`, which callers treat as "the file system is gone";
//! - NFS status codes as `std::io::Error` kinds (`NotFound`, `PermissionDenied`, …);
//! - a sequential file reader with READs in flight ahead of it, and a file writer that sends
//!   UNSTABLE WRITEs and COMMITs them, resending when the server's write verifier changes.
//!
//! It knows nothing of ccfs; the `ccfs` binary adapts it to the engine's source and target.

mod url;

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::net::Connector;
use nfs3_client::nfs3_types::mount::dirpath;
use nfs3_client::nfs3_types::nfs3::{self as p, nfsstat3, Nfs3Option, Nfs3Result};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{MountClient, MountError, Nfs3Client, RpcError};

pub use url::{NfsUrl, PARAMS};

/// A file handle.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fh(pub Vec<u8>);

impl Fh {
    fn wire(&self) -> p::nfs_fh3 {
        p::nfs_fh3 { data: Opaque::owned(self.0.clone()) }
    }
}

/// File types NFSv3 knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    BlockDevice,
    CharDevice,
    Symlink,
    Socket,
    Fifo,
}

/// Attributes of a file, as NFSv3 carries them (`fattr3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: Kind,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Bytes the file occupies on the server (below `size` for sparse files).
    pub used: u64,
    /// Device numbers of a device node (major, minor).
    pub rdev: (u32, u32),
    pub fsid: u64,
    pub fileid: u64,
    /// (seconds, nanoseconds)
    pub mtime: (u32, u32),
    pub ctime: (u32, u32),
}

impl From<&p::fattr3> for Attr {
    fn from(a: &p::fattr3) -> Attr {
        use p::ftype3::*;
        let kind = match a.type_ {
            NF3REG => Kind::File,
            NF3DIR => Kind::Dir,
            NF3BLK => Kind::BlockDevice,
            NF3CHR => Kind::CharDevice,
            NF3LNK => Kind::Symlink,
            NF3SOCK => Kind::Socket,
            NF3FIFO => Kind::Fifo,
        };
        Attr {
            kind,
            mode: a.mode & 0o7777,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            used: a.used,
            rdev: (a.rdev.specdata1, a.rdev.specdata2),
            fsid: a.fsid,
            fileid: a.fileid,
            mtime: (a.mtime.seconds, a.mtime.nseconds),
            ctime: (a.ctime.seconds, a.ctime.nseconds),
        }
    }
}

/// One entry of a READDIRPLUS listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub fh: Fh,
    pub attr: Attr,
}

/// Attributes to set (`None`: leave as is).
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<(u32, u32)>,
}

impl SetAttr {
    fn wire(&self) -> p::sattr3 {
        let opt = |v: Option<u32>| v.map_or(Nfs3Option::None, Nfs3Option::Some);
        p::sattr3 {
            mode: opt(self.mode),
            uid: opt(self.uid),
            gid: opt(self.gid),
            size: self.size.map_or(Nfs3Option::None, Nfs3Option::Some),
            atime: p::set_atime::DONT_CHANGE,
            mtime: match self.mtime {
                Some((seconds, nseconds)) => p::set_mtime::SET_TO_CLIENT_TIME(p::nfstime3 { seconds, nseconds }),
                None => p::set_mtime::DONT_CHANGE,
            },
        }
    }
}

/// A blocking TCP stream that `nfs3_client` drives; reads and writes time out.
struct Tcp(TcpStream);

impl AsyncRead for Tcp {
    async fn async_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match io::Read::read(&mut self.0, buf) {
            Ok(0) if !buf.is_empty() => {
                Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server closed the connection"))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "no reply in time"))
            }
            r => r,
        }
    }
}

impl AsyncWrite for Tcp {
    async fn async_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match io::Write::write(&mut self.0, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "server does not read"))
            }
            r => r,
        }
    }
}

#[derive(Clone)]
struct TcpConnector {
    timeout: Duration,
}

impl TcpConnector {
    fn open(&self, addr: SocketAddr, local_port: Option<u16>) -> io::Result<Tcp> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if let Some(port) = local_port {
            let any: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], port).into() } else { ([0u16; 8], port).into() };
            s.bind(&any.into())?;
        }
        s.connect_timeout(&addr.into(), self.timeout.min(Duration::from_secs(10)))?;
        let t: TcpStream = s.into();
        t.set_nodelay(true)?;
        t.set_read_timeout(Some(self.timeout))?;
        t.set_write_timeout(Some(self.timeout))?;
        Ok(Tcp(t))
    }
}

impl Connector for TcpConnector {
    type Connection = Tcp;

    async fn connect(&self, addr: SocketAddr) -> io::Result<Tcp> {
        self.open(addr, None)
    }

    async fn connect_with_port(&self, addr: SocketAddr, local_port: u16) -> io::Result<Tcp> {
        self.open(addr, Some(local_port))
    }
}

/// Run a future whose I/O never waits asynchronously (blocking sockets).
fn run<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// How the pool reaches the server once the export is mounted.
struct Endpoint {
    addr: SocketAddr,
    connector: TcpConnector,
    privileged: bool,
    cred: opaque_auth<'static>,
    attempts: u32,
    display: String,
}

impl Endpoint {
    fn connect(&self) -> io::Result<Nfs3Client<Tcp>> {
        let io = if self.privileged {
            connect_privileged(&self.connector, self.addr)?
        } else {
            self.connector.open(self.addr, None)?
        };
        Ok(Nfs3Client::new_with_auth(io, self.cred.clone(), opaque_auth::default()))
    }
}

fn connect_privileged(c: &TcpConnector, addr: SocketAddr) -> io::Result<Tcp> {
    let start = (std::process::id() % 700) as u16;
    for i in 0..700u16 {
        let port = 300 + (start + i) % 700;
        match c.open(addr, Some(port)) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse || e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => continue,
            r => return r,
        }
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, "no free privileged port (300-999) to connect from"))
}

/// A call for a pool thread: runs on a connection until it gets an answer (delivered to the
/// caller) or the transport fails (`Err`, the pool reconnects and runs it again).
trait Job: Send {
    fn run(&mut self, c: &mut Nfs3Client<Tcp>, attempt: u32) -> Result<(), RpcError>;
    fn fail(self: Box<Self>, e: io::Error);
}

struct Call<T, F> {
    f: F,
    reply: Sender<io::Result<T>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnMut(&mut Nfs3Client<Tcp>, u32) -> Result<io::Result<T>, RpcError> + Send,
{
    fn run(&mut self, c: &mut Nfs3Client<Tcp>, attempt: u32) -> Result<(), RpcError> {
        match (self.f)(c, attempt) {
            Ok(r) => {
                let _ = self.reply.send(r);
                Ok(())
            }
            Err(e) if e.is_connection_reusable() => {
                let _ = self.reply.send(Err(rpc_error(e)));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn fail(self: Box<Self>, e: io::Error) {
        let _ = self.reply.send(Err(e));
    }
}

/// A call whose answer comes later (READs and WRITEs kept in flight).
pub struct Pending<T>(Receiver<io::Result<T>>);

impl<T> Pending<T> {
    /// Wait for the answer.
    ///
    /// # Errors
    /// The call's error.
    pub fn wait(self) -> io::Result<T> {
        self.0.recv().unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::ConnectionAborted, "NFS client shut down")))
    }
}

struct Pool {
    jobs: Option<Sender<Box<dyn Job>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A connection pool to one NFSv3 server, with the export mounted.
#[derive(Clone)]
pub struct Client {
    pool: Arc<Pool>,
    /// Handle of the mounted export's root.
    pub export_root: Fh,
    /// The mounted export.
    pub export: String,
    /// Preferred READ and WRITE sizes (FSINFO), capped at 1 MiB.
    pub rsize: u32,
    pub wsize: u32,
    /// Whether the server links (FSINFO properties).
    pub can_link: bool,
    /// The credentials' uid (0: the server may let us set ownership).
    pub uid: u32,
    display: Arc<str>,
}

impl Client {
    /// Mount the export of `url` (the `export` parameter, else the shortest prefix of the
    /// path the server mounts) and start the connection pool.
    ///
    /// # Errors
    /// Unreachable server (kinds `ConnectionRefused`/`TimedOut`), export not mounted
    /// (`NotFound`, `PermissionDenied`), bad address (`InvalidInput`).
    pub fn connect(url: &NfsUrl) -> io::Result<Client> {
        let connector = TcpConnector { timeout: url.timeout };
        let cred = opaque_auth::auth_unix(&auth_unix {
            stamp: 0,
            machinename: Opaque::owned(hostname().into_bytes()),
            uid: url.uid,
            gid: url.gid,
            gids: vec![url.gid],
        });
        let ip = (url.host.as_str(), 0)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("NFS server {}: {e}", url.host)))?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("NFS server {}: no address", url.host)))?
            .ip();
        let (mount_port, nfs_port) = resolve_ports(url, ip, &connector)?;
        let mount_addr = SocketAddr::new(ip, mount_port);
        let candidates: Vec<String> = match &url.export {
            Some(e) => vec![e.clone()],
            None => {
                let parts: Vec<&str> = url.path.split('/').filter(|c| !c.is_empty()).collect();
                (1..=parts.len()).map(|n| format!("/{}", parts[..n].join("/"))).collect()
            }
        };
        let mut io = retry_connect(url, || {
            if url.privileged {
                connect_privileged(&connector, mount_addr)
            } else {
                connector.open(mount_addr, None)
            }
        })?;
        let mut last = None;
        let mut mounted = None;
        for export in &candidates {
            let mut m = MountClient::new_with_auth(io, cred.clone(), opaque_auth::default());
            let res = run(m.mnt(dirpath(Opaque::borrowed(export.as_bytes()))));
            // Take the transport back for the next attempt (MountClient owns it).
            io = match res {
                Ok(ok) => {
                    mounted = Some((export.clone(), Fh(ok.fhandle.0.to_vec())));
                    break;
                }
                Err(MountError::Denied(stat)) => {
                    last = Some(stat);
                    retry_connect(url, || connector.open(mount_addr, None))?
                }
                Err(MountError::Rpc(e)) => return Err(rpc_error(e)),
            };
        }
        let (export, export_root) = mounted.ok_or_else(|| {
            let stat = last.map(|s| format!("{s:?}")).unwrap_or_default();
            let kind = if stat.contains("ACCES") || stat.contains("PERM") {
                io::ErrorKind::PermissionDenied
            } else {
                io::ErrorKind::NotFound
            };
            io::Error::new(kind, format!("NFS server {} mounts no export of {} ({stat})", url.host, url.path))
        })?;
        let display: Arc<str> = url.display().into();
        let endpoint = Arc::new(Endpoint {
            addr: SocketAddr::new(ip, nfs_port),
            connector,
            privileged: url.privileged,
            cred,
            attempts: url.attempts.max(1),
            display: display.to_string(),
        });
        let (tx, rx) = bounded::<Box<dyn Job>>(url.connections * 4);
        let threads = (0..url.connections.max(1))
            .map(|i| {
                let (rx, ep) = (rx.clone(), endpoint.clone());
                std::thread::Builder::new()
                    .name(format!("ccfs-nfs-{i}"))
                    .spawn(move || serve_jobs(&ep, &rx))
                    .map_err(|e| io::Error::other(format!("NFS client thread: {e}")))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut client = Client {
            pool: Arc::new(Pool { jobs: Some(tx), threads }),
            export_root,
            export,
            rsize: 1 << 20,
            wsize: 1 << 20,
            can_link: true,
            uid: url.uid,
            display,
        };
        if let Ok(info) = client.fsinfo() {
            client.rsize = clamp_io(info.rtpref, info.rtmax);
            client.wsize = clamp_io(info.wtpref, info.wtmax);
            client.can_link = info.properties & p::FSF3_LINK != 0;
        }
        Ok(client)
    }

    /// The URL this client was made from, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    fn submit<T, F>(&self, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Nfs3Client<Tcp>, u32) -> Result<io::Result<T>, RpcError> + Send + 'static,
    {
        let (reply, rx) = bounded(1);
        let job: Box<dyn Job> = Box::new(Call { f, reply });
        if let Some(jobs) = &self.pool.jobs {
            if let Err(e) = jobs.send(job) {
                e.0.fail(io::Error::new(io::ErrorKind::ConnectionAborted, "NFS client shut down"));
            }
        }
        Pending(rx)
    }

    fn call<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Nfs3Client<Tcp>, u32) -> Result<io::Result<T>, RpcError> + Send + 'static,
    {
        self.submit(f).wait()
    }

    fn fsinfo(&self) -> io::Result<p::FSINFO3resok> {
        let root = self.export_root.clone();
        self.call(move |c, _| Ok(status(run(c.fsinfo(&p::FSINFO3args { fsroot: root.wire() }))?)))
    }

    /// Attributes of `fh`.
    ///
    /// # Errors
    /// The server's status as an I/O error, or the transport's after retries.
    pub fn getattr(&self, fh: &Fh) -> io::Result<Attr> {
        let fh = fh.clone();
        self.call(move |c, _| {
            Ok(status(run(c.getattr(&p::GETATTR3args { object: fh.wire() }))?).map(|r| Attr::from(&r.obj_attributes)))
        })
    }

    /// Look `name` up in directory `dir`; `None` when absent.
    ///
    /// # Errors
    /// As [`Client::getattr`].
    pub fn lookup(&self, dir: &Fh, name: &[u8]) -> io::Result<Option<(Fh, Attr)>> {
        let (dir, name) = (dir.clone(), name.to_vec());
        let r = self.call(move |c, _| {
            let args = p::LOOKUP3args { what: p::diropargs3 { dir: dir.wire(), name: name.as_slice().into() } };
            Ok(status(run(c.lookup(&args))?))
        });
        let ok = match r {
            Ok(ok) => ok,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let fh = Fh(ok.object.data.to_vec());
        let attr = match ok.obj_attributes {
            Nfs3Option::Some(a) => Attr::from(&a),
            Nfs3Option::None => match self.getattr(&fh) {
                Ok(a) => a,
                // Gone between the two calls.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        Ok(Some((fh, attr)))
    }

    /// Resolve a `/`-separated path below `from`, component by component.
    ///
    /// # Errors
    /// `NotFound` naming the missing component; others as [`Client::lookup`].
    pub fn resolve(&self, from: &Fh, path: &[u8]) -> io::Result<(Fh, Attr)> {
        let mut cur = (from.clone(), self.getattr(from)?);
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            cur = self.lookup(&cur.0, comp)?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{} not found", String::from_utf8_lossy(comp)))
            })?;
        }
        Ok(cur)
    }

    /// All entries of directory `dir` (without `.` and `..`), with handles and attributes.
    ///
    /// # Errors
    /// As [`Client::getattr`].
    pub fn readdirplus(&self, dir: &Fh) -> io::Result<Vec<DirEntry>> {
        // A cookie some servers lose when a reply is cut short (NFS3ERR_BAD_COOKIE): list again
        // from the start with room for more entries per reply.
        let mut room = 1u32;
        loop {
            match self.readdirplus_once(dir, room) {
                Err(e) if e.to_string().contains("BAD_COOKIE") && room < 64 => room *= 4,
                r => return r,
            }
        }
    }

    fn readdirplus_once(&self, dir: &Fh, room: u32) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut cookie = 0u64;
        let mut verf = [0u8; 8];
        let mut missing = Vec::new();
        loop {
            let d = dir.clone();
            let ok = self.call(move |c, _| {
                let args = p::READDIRPLUS3args {
                    dir: d.wire(),
                    cookie,
                    cookieverf: p::cookieverf3(verf),
                    dircount: room * 128 * 1024,
                    maxcount: room * 512 * 1024,
                };
                Ok(status(run(c.readdirplus(&args))?).map(|ok| {
                    let entries: Vec<_> = ok
                        .reply
                        .entries
                        .into_inner()
                        .into_iter()
                        .map(|e| {
                            let fh = post_op_fh(e.name_handle);
                            let attr = match e.name_attributes {
                                Nfs3Option::Some(a) => Some(Attr::from(&a)),
                                Nfs3Option::None => None,
                            };
                            (e.name.0.to_vec(), e.cookie, fh, attr)
                        })
                        .collect();
                    (entries, ok.reply.eof, ok.cookieverf.0)
                }))
            })?;
            let (entries, eof, v) = ok;
            verf = v;
            for (name, c, fh, attr) in entries {
                cookie = c;
                if name == b"." || name == b".." {
                    continue;
                }
                match (fh, attr) {
                    (Some(fh), Some(attr)) => out.push(DirEntry { name, fh, attr }),
                    // Servers may leave these out: look them up one by one.
                    _ => missing.push(name),
                }
            }
            if eof {
                break;
            }
        }
        for name in missing {
            if let Some((fh, attr)) = self.lookup(dir, &name)? {
                out.push(DirEntry { name, fh, attr });
            }
        }
        Ok(out)
    }

    /// The target of symlink `fh`.
    ///
    /// # Errors
    /// As [`Client::getattr`].
    pub fn readlink(&self, fh: &Fh) -> io::Result<Vec<u8>> {
        let fh = fh.clone();
        self.call(move |c, _| {
            Ok(status(run(c.readlink(&p::READLINK3args { symlink: fh.wire() }))?).map(|ok| ok.data.0.to_vec()))
        })
    }

    /// Start a READ of up to `count` bytes at `offset`: the data and whether it reached the end.
    pub fn read(&self, fh: &Fh, offset: u64, count: u32) -> Pending<ReadReply> {
        let fh = fh.clone();
        self.submit(move |c, _| {
            let args = p::READ3args { file: fh.wire(), offset, count };
            Ok(status(run(c.read(&args))?).map(|ok| (ok.data.into_owned(), ok.eof)))
        })
    }

    /// Start a WRITE: bytes written, how stable, the server's write verifier.
    pub fn write(&self, fh: &Fh, offset: u64, data: Arc<Vec<u8>>, stable: bool) -> Pending<WriteReply> {
        let fh = fh.clone();
        self.submit(move |c, _| {
            let args = p::WRITE3args {
                file: fh.wire(),
                offset,
                count: data.len() as u32,
                stable: if stable { p::stable_how::FILE_SYNC } else { p::stable_how::UNSTABLE },
                data: Opaque::borrowed(&data),
            };
            Ok(status(run(c.write(&args))?)
                .map(|ok| (ok.count, !matches!(ok.committed, p::stable_how::UNSTABLE), ok.verf.0)))
        })
    }

    /// COMMIT everything written to `fh`; returns the write verifier.
    ///
    /// # Errors
    /// As [`Client::getattr`].
    pub fn commit(&self, fh: &Fh) -> io::Result<[u8; 8]> {
        let fh = fh.clone();
        self.call(move |c, _| {
            Ok(status(run(c.commit(&p::COMMIT3args { file: fh.wire(), offset: 0, count: 0 }))?).map(|ok| ok.verf.0))
        })
    }

    /// Create `name` in `dir`, failing with `AlreadyExists` when it exists.
    ///
    /// # Errors
    /// As [`Client::getattr`].
    pub fn create(&self, dir: &Fh, name: &[u8], mode: u32) -> io::Result<Fh> {
        let (d, n) = (dir.clone(), name.to_vec());
        let r = self.call(move |c, attempt| {
            let args = p::CREATE3args {
                where_: p::diropargs3 { dir: d.wire(), name: n.as_slice().into() },
                how: p::createhow3::GUARDED(SetAttr { mode: Some(mode), ..Default::default() }.wire()),
            };
            let r = status(run(c.create(&args))?);
            // A retry after a lost reply finds the file its first attempt made.
            Ok(match r {
                Err(e) if attempt > 0 && e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
                r => r.map(|ok| post_op_fh(ok.obj)),
            })
        })?;
        self.made(dir, name, r)
    }

    /// Make directory `name` in `dir`.
    ///
    /// # Errors
    /// `AlreadyExists` and the rest as [`Client::getattr`].
    pub fn mkdir(&self, dir: &Fh, name: &[u8], mode: u32) -> io::Result<Fh> {
        let (d, n) = (dir.clone(), name.to_vec());
        let r = self.call(move |c, attempt| {
            let args = p::MKDIR3args {
                where_: p::diropargs3 { dir: d.wire(), name: n.as_slice().into() },
                attributes: SetAttr { mode: Some(mode), ..Default::default() }.wire(),
            };
            Ok(match status(run(c.mkdir(&args))?) {
                Err(e) if attempt > 0 && e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
                r => r.map(|ok| post_op_fh(ok.obj)),
            })
        })?;
        self.made(dir, name, r)
    }

    /// The handle of what CREATE or MKDIR just made: from the reply, else (a server that left
    /// it out, or a retry that found the first attempt's) by LOOKUP.
    fn made(&self, dir: &Fh, name: &[u8], fh: Option<Fh>) -> io::Result<Fh> {
        match fh {
            Some(fh) => Ok(fh),
            None => self.lookup(dir, name)?.map(|(fh, _)| fh).ok_or_else(|| {
                io::Error::other(format!("{} vanished right after it was made", String::from_utf8_lossy(name)))
            }),
        }
    }

    /// Make symlink `name` in `dir` pointing at `target`.
    ///
    /// # Errors
    /// As [`Client::mkdir`].
    pub fn symlink(&self, dir: &Fh, name: &[u8], target: &[u8]) -> io::Result<()> {
        let (d, n, t) = (dir.clone(), name.to_vec(), target.to_vec());
        self.call(move |c, attempt| {
            let args = p::SYMLINK3args {
                where_: p::diropargs3 { dir: d.wire(), name: n.as_slice().into() },
                symlink: p::symlinkdata3 {
                    symlink_attributes: SetAttr::default().wire(),
                    symlink_data: t.as_slice().into(),
                },
            };
            Ok(match status(run(c.symlink(&args))?) {
                Err(e) if attempt > 0 && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                r => r.map(|_| ()),
            })
        })
    }

    /// Make a device node, fifo or socket `name` in `dir`.
    ///
    /// # Errors
    /// `Unsupported` when the server has no MKNOD; the rest as [`Client::mkdir`].
    pub fn mknod(&self, dir: &Fh, name: &[u8], kind: Kind, mode: u32, rdev: (u32, u32)) -> io::Result<()> {
        let (d, n) = (dir.clone(), name.to_vec());
        self.call(move |c, _| {
            let attrs = SetAttr { mode: Some(mode), ..Default::default() }.wire();
            let spec = p::specdata3 { specdata1: rdev.0, specdata2: rdev.1 };
            let what = match kind {
                Kind::CharDevice => p::mknoddata3::NF3CHR(p::devicedata3 { dev_attributes: attrs, spec }),
                Kind::BlockDevice => p::mknoddata3::NF3BLK(p::devicedata3 { dev_attributes: attrs, spec }),
                Kind::Socket => p::mknoddata3::NF3SOCK(attrs),
                Kind::Fifo => p::mknoddata3::NF3FIFO(attrs),
                _ => return Ok(Err(io::Error::new(io::ErrorKind::InvalidInput, "not a special file"))),
            };
            let args = p::MKNOD3args { where_: p::diropargs3 { dir: d.wire(), name: n.as_slice().into() }, what };
            Ok(status(run(c.mknod(&args))?).map(|_| ()))
        })
    }

    /// Make `name` in `dir` a hard link to `file`.
    ///
    /// # Errors
    /// `Unsupported` when the server has no LINK; the rest as [`Client::mkdir`].
    pub fn link(&self, file: &Fh, dir: &Fh, name: &[u8]) -> io::Result<()> {
        if !self.can_link {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "the NFS server does not support hard links"));
        }
        let (f, d, n) = (file.clone(), dir.clone(), name.to_vec());
        self.call(move |c, attempt| {
            let args =
                p::LINK3args { file: f.wire(), link: p::diropargs3 { dir: d.wire(), name: n.as_slice().into() } };
            Ok(match status(run(c.link(&args))?) {
                Err(e) if attempt > 0 && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                r => r.map(|_| ()),
            })
        })
    }

    /// Remove file or empty directory `name` from `dir` (REMOVE, or RMDIR when `dir_entry`).
    ///
    /// # Errors
    /// `NotFound` (except on a retry), the rest as [`Client::getattr`].
    pub fn remove(&self, dir: &Fh, name: &[u8], dir_entry: bool) -> io::Result<()> {
        let (d, n) = (dir.clone(), name.to_vec());
        self.call(move |c, attempt| {
            let what = p::diropargs3 { dir: d.wire(), name: n.as_slice().into() };
            let r = if dir_entry {
                status(run(c.rmdir(&p::RMDIR3args { object: what }))?).map(|_| ())
            } else {
                status(run(c.remove(&p::REMOVE3args { object: what }))?).map(|_| ())
            };
            Ok(match r {
                Err(e) if attempt > 0 && e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            })
        })
    }

    /// Rename `from_dir/from` to `to_dir/to` (replacing a file there).
    ///
    /// # Errors
    /// As [`Client::remove`].
    pub fn rename(&self, from_dir: &Fh, from: &[u8], to_dir: &Fh, to: &[u8]) -> io::Result<()> {
        let (fd, f, td, t) = (from_dir.clone(), from.to_vec(), to_dir.clone(), to.to_vec());
        self.call(move |c, attempt| {
            let args = p::RENAME3args {
                from: p::diropargs3 { dir: fd.wire(), name: f.as_slice().into() },
                to: p::diropargs3 { dir: td.wire(), name: t.as_slice().into() },
            };
            Ok(match status(run(c.rename(&args))?) {
                Err(e) if attempt > 0 && e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r.map(|_| ()),
            })
        })
    }

    /// Set attributes of `fh`.
    ///
    /// # Errors
    /// As [`Client::getattr`].
    pub fn setattr(&self, fh: &Fh, set: &SetAttr) -> io::Result<()> {
        let (fh, set) = (fh.clone(), set.clone());
        self.call(move |c, _| {
            let args = p::SETATTR3args { object: fh.wire(), new_attributes: set.wire(), guard: Nfs3Option::None };
            Ok(status(run(c.setattr(&args))?).map(|_| ()))
        })
    }
}

fn post_op_fh(h: p::post_op_fh3) -> Option<Fh> {
    match h {
        Nfs3Option::Some(h) => Some(Fh(h.data.to_vec())),
        Nfs3Option::None => None,
    }
}

fn clamp_io(pref: u32, max: u32) -> u32 {
    let v = if pref == 0 { max } else { pref };
    let v = if v == 0 { 64 * 1024 } else { v };
    v.clamp(4096, 1 << 20)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "ccfs".into())
}

fn resolve_ports(url: &NfsUrl, ip: std::net::IpAddr, connector: &TcpConnector) -> io::Result<(u16, u16)> {
    if let (Some(m), Some(n)) = (url.mount_port, url.nfs_port) {
        return Ok((m, n));
    }
    let addr = SocketAddr::new(ip, url.portmapper_port);
    let mut pm = nfs3_client::PortmapperClient::new(retry_connect(url, || connector.open(addr, None))?);
    let tcp = nfs3_client::nfs3_types::portmap::IPPROTO_TCP;
    let mut get = |prog: u32, vers: u32| {
        run(pm.getport(prog, vers, tcp))
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, format!("portmapper at {addr}: {e}")))
    };
    let m = match url.mount_port {
        Some(m) => m,
        None => get(nfs3_client::nfs3_types::mount::PROGRAM, nfs3_client::nfs3_types::mount::VERSION)?,
    };
    let n = match url.nfs_port {
        Some(n) => n,
        None => get(p::PROGRAM, p::VERSION)?,
    };
    if m == 0 || n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("portmapper at {addr}: NFSv3 over TCP is not registered"),
        ));
    }
    Ok((m, n))
}

/// Connect with the URL's retries and backoff.
fn retry_connect<T>(url: &NfsUrl, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut attempt = 0;
    loop {
        match f() {
            Ok(t) => return Ok(t),
            Err(e) if attempt + 1 < url.attempts && transient(&e) => {
                std::thread::sleep(backoff(attempt));
                attempt += 1;
            }
            Err(e) => return Err(gone(e, &url.display(), attempt + 1)),
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << (2 * attempt.min(4)))
}

fn transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | TimedOut
            | BrokenPipe
            | UnexpectedEof
            | NotConnected
            | Interrupted
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
            | AddrNotAvailable
    )
}

/// The error after the last attempt: a kind callers read as "the server is gone".
fn gone(e: io::Error, server: &str, attempts: u32) -> io::Error {
    use io::ErrorKind::*;
    let kind = match e.kind() {
        ConnectionRefused | TimedOut | ConnectionReset | HostUnreachable | NetworkUnreachable | NetworkDown => e.kind(),
        k if transient(&e) || k == UnexpectedEof => ConnectionAborted,
        k => k,
    };
    io::Error::new(kind, format!("NFS server {server}: {e} (after {attempts} attempts)"))
}

fn serve_jobs(ep: &Endpoint, jobs: &Receiver<Box<dyn Job>>) {
    let mut conn: Option<Nfs3Client<Tcp>> = None;
    for mut job in jobs {
        let mut attempt = 0;
        loop {
            let res = match conn.as_mut() {
                Some(c) => job.run(c, attempt).map_err(rpc_error),
                None => match ep.connect() {
                    Ok(c) => {
                        let c = conn.insert(c);
                        job.run(c, attempt).map_err(rpc_error)
                    }
                    Err(e) => Err(e),
                },
            };
            match res {
                Ok(()) => break,
                Err(e) => {
                    conn = None;
                    attempt += 1;
                    if attempt >= ep.attempts || !transient(&e) {
                        job.fail(gone(e, &ep.display, attempt));
                        break;
                    }
                    tracing::debug!(server = %ep.display, attempt, error = %e, "NFS call failed; reconnecting");
                    std::thread::sleep(backoff(attempt - 1));
                }
            }
        }
    }
}

fn rpc_error(e: RpcError) -> io::Error {
    match e {
        RpcError::Io(e) => e,
        RpcError::ProcUnavail => {
            io::Error::new(io::ErrorKind::Unsupported, "the NFS server does not implement this call")
        }
        RpcError::Auth(s) => io::Error::new(io::ErrorKind::PermissionDenied, format!("NFS authentication: {s}")),
        e => io::Error::other(format!("NFS protocol: {e}")),
    }
}

/// An NFS status as an I/O error.
fn status<T, E>(r: Nfs3Result<T, E>) -> io::Result<T> {
    use io::ErrorKind as K;
    use nfsstat3::*;
    let stat = match r {
        Nfs3Result::Ok(v) => return Ok(v),
        Nfs3Result::Err((stat, _)) => stat,
    };
    let kind = match stat {
        NFS3ERR_NOENT => K::NotFound,
        NFS3ERR_PERM | NFS3ERR_ACCES => K::PermissionDenied,
        NFS3ERR_EXIST => K::AlreadyExists,
        NFS3ERR_NOTDIR => K::NotADirectory,
        NFS3ERR_ISDIR => K::IsADirectory,
        NFS3ERR_NOTEMPTY => K::DirectoryNotEmpty,
        NFS3ERR_NOSPC => K::StorageFull,
        NFS3ERR_DQUOT => K::QuotaExceeded,
        NFS3ERR_ROFS => K::ReadOnlyFilesystem,
        NFS3ERR_NOTSUPP => K::Unsupported,
        NFS3ERR_NAMETOOLONG => K::InvalidFilename,
        NFS3ERR_FBIG => K::FileTooLarge,
        NFS3ERR_INVAL => K::InvalidInput,
        _ => K::Other,
    };
    Err(io::Error::new(kind, format!("{stat}")))
}

/// A READ's answer: the data and whether it reached the end of the file.
pub type ReadReply = (Vec<u8>, bool);
/// A WRITE's answer: bytes written, whether stable, the server's write verifier.
pub type WriteReply = (u32, bool, [u8; 8]);

/// Reads a file front to back with up to `depth` READs in flight ahead of the reader.
pub struct Reader {
    client: Client,
    fh: Fh,
    /// Size as listed; reads go on past it until the server says end of file.
    size: u64,
    next: u64,
    eof: bool,
    inflight: VecDeque<(u64, u32, Pending<ReadReply>)>,
    buf: Vec<u8>,
    at: usize,
    depth: usize,
}

impl Reader {
    pub fn new(client: &Client, fh: Fh, size: u64, depth: usize) -> Reader {
        Reader {
            client: client.clone(),
            fh,
            size,
            next: 0,
            eof: false,
            inflight: VecDeque::new(),
            buf: Vec::new(),
            at: 0,
            depth: depth.max(1),
        }
    }

    /// Continue reading at `pos` (drops what is in flight).
    pub fn seek(&mut self, pos: u64) {
        self.inflight.clear();
        self.buf.clear();
        self.at = 0;
        self.next = pos;
        self.eof = false;
    }

    fn fill(&mut self) -> io::Result<()> {
        let rsize = self.client.rsize;
        while self.inflight.len() < self.depth && !self.eof && (self.next < self.size || self.inflight.is_empty()) {
            let p = self.client.read(&self.fh, self.next, rsize);
            self.inflight.push_back((self.next, rsize, p));
            self.next += u64::from(rsize);
        }
        let Some((off, count, p)) = self.inflight.pop_front() else { return Ok(()) };
        let (mut data, mut eof) = p.wait()?;
        // A short reply before the end: read the rest of this range before going on.
        while !eof && (data.len() as u32) < count {
            let got = data.len() as u64;
            let (more, e) = self.client.read(&self.fh, off + got, count - got as u32).wait()?;
            if more.is_empty() && !e {
                return Err(io::Error::other("NFS server returned no data before the end of the file"));
            }
            data.extend_from_slice(&more);
            eof = e;
        }
        if eof {
            self.eof = true;
            self.inflight.clear();
        }
        self.buf = data;
        self.at = 0;
        Ok(())
    }
}

impl io::Read for Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            if self.eof && self.inflight.is_empty() {
                return Ok(0);
            }
            self.fill()?;
            if self.buf.is_empty() && self.eof {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Writes a file with UNSTABLE WRITEs, up to `depth` in flight, and COMMITs them; what the
/// server had not made stable is resent when its write verifier changed (it restarted).
pub struct Writer {
    client: Client,
    pub fh: Fh,
    depth: usize,
    inflight: VecDeque<(u64, Arc<Vec<u8>>, Pending<WriteReply>)>,
    /// Unstable writes not yet covered by a COMMIT, with the verifier each got.
    uncommitted: Vec<(u64, Arc<Vec<u8>>, [u8; 8])>,
    uncommitted_bytes: usize,
}

/// Unstable bytes after which a COMMIT is sent (bounds what is held for resending).
const COMMIT_EVERY: usize = 64 << 20;

impl Writer {
    pub fn new(client: &Client, fh: Fh, depth: usize) -> Writer {
        Writer {
            client: client.clone(),
            fh,
            depth: depth.max(1),
            inflight: VecDeque::new(),
            uncommitted: Vec::new(),
            uncommitted_bytes: 0,
        }
    }

    /// Write `data` at `pos` (split into WRITEs of the server's preferred size).
    ///
    /// # Errors
    /// The first failed WRITE.
    pub fn write_at(&mut self, data: &[u8], pos: u64) -> io::Result<()> {
        for (i, piece) in data.chunks(self.client.wsize as usize).enumerate() {
            let off = pos + (i * self.client.wsize as usize) as u64;
            while self.inflight.len() >= self.depth {
                self.settle_one()?;
            }
            let buf = Arc::new(piece.to_vec());
            let p = self.client.write(&self.fh, off, buf.clone(), false);
            self.inflight.push_back((off, buf, p));
        }
        if self.uncommitted_bytes >= COMMIT_EVERY {
            self.commit()?;
        }
        Ok(())
    }

    fn settle_one(&mut self) -> io::Result<()> {
        let Some((off, buf, p)) = self.inflight.pop_front() else { return Ok(()) };
        let (count, stable, verf) = p.wait()?;
        if (count as usize) < buf.len() {
            // A short write: send the rest, stable, now.
            let rest = Arc::new(buf[count as usize..].to_vec());
            let (c2, _, _) = self.client.write(&self.fh, off + u64::from(count), rest.clone(), true).wait()?;
            if (c2 as usize) < rest.len() {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "NFS server wrote less than asked"));
            }
        }
        if !stable {
            self.uncommitted_bytes += buf.len();
            self.uncommitted.push((off, buf, verf));
        }
        Ok(())
    }

    /// Wait for every WRITE, COMMIT, and resend (stable) whatever a server restart lost.
    ///
    /// # Errors
    /// A failed WRITE or COMMIT.
    pub fn commit(&mut self) -> io::Result<()> {
        while !self.inflight.is_empty() {
            self.settle_one()?;
        }
        if self.uncommitted.is_empty() {
            return Ok(());
        }
        let verf = self.client.commit(&self.fh)?;
        for (off, buf, v) in std::mem::take(&mut self.uncommitted) {
            if v != verf {
                let (c, _, _) = self.client.write(&self.fh, off, buf.clone(), true).wait()?;
                if (c as usize) < buf.len() {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "NFS server wrote less than asked"));
                }
            }
        }
        self.uncommitted_bytes = 0;
        Ok(())
    }
}
