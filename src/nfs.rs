//! Wiring: an NFSv3 export (through the `ccfs-nfs` client) as the engine's [`Source`] and
//! [`Target`]. NFSv3 carries type, mode, uid, gid, size, mtime, ctime, device numbers, symlink
//! targets and file ids (for hard links); it carries no extended attributes, so none are read
//! from an export and none are written to one.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use ccfs::format::{Entry, EntryKind, Timestamp, Xattr};
use ccfs::fsmeta::ApplyNotes;
use ccfs::source::{child, open_error, split, Listed, Source, SourceFile};
use ccfs::target::{Target, TargetFile};
use ccfs_nfs::{Attr, Client, Fh, Kind, NfsUrl, Reader, SetAttr, Writer};

/// READs kept in flight ahead of each file reader, and WRITEs behind each writer.
const READ_AHEAD: usize = 4;
const WRITE_BEHIND: usize = 8;

fn entry(name: &[u8], a: &Attr) -> Entry {
    let kind = match a.kind {
        Kind::File => EntryKind::File,
        Kind::Dir => EntryKind::Dir,
        Kind::Symlink => EntryKind::Symlink,
        Kind::BlockDevice => EntryKind::BlockDevice,
        Kind::CharDevice => EntryKind::CharDevice,
        Kind::Socket => EntryKind::Socket,
        Kind::Fifo => EntryKind::Fifo,
    };
    let device = matches!(kind, EntryKind::BlockDevice | EntryKind::CharDevice);
    Entry {
        name: name.to_vec(),
        kind,
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        mtime: Timestamp { sec: i64::from(a.mtime.0), nsec: a.mtime.1 },
        ctime: Timestamp { sec: i64::from(a.ctime.0), nsec: a.ctime.1 },
        dev: a.fsid,
        inode: a.fileid,
        size: if matches!(kind, EntryKind::File | EntryKind::Symlink) { a.size } else { 0 },
        nlink: a.nlink,
        rdev: if device { libc::makedev(a.rdev.0, a.rdev.1) } else { 0 },
        target: Vec::new(),
        xattrs: Vec::new(),
        content: Vec::new(),
        subtree: None,
        link_group: (kind == EntryKind::File && a.nlink > 1).then(|| a.fileid ^ a.fsid.rotate_left(40)),
    }
}

/// The path inside the export, and the client with the export mounted.
fn connect(url: &NfsUrl) -> io::Result<(Client, Vec<u8>)> {
    let client = Client::connect(url)?;
    let inside = url.path.strip_prefix(&client.export).unwrap_or("").trim_start_matches('/').as_bytes().to_vec();
    Ok((client, inside))
}

fn show(url: &str, rel: &[u8]) -> String {
    if rel.is_empty() {
        url.to_string()
    } else {
        format!("{}/{}", url.trim_end_matches('/'), String::from_utf8_lossy(rel))
    }
}

/// A directory tree on an NFS export, read with READDIRPLUS and READs in flight.
pub struct NfsSource {
    client: Client,
    url: String,
    root: (Fh, Attr),
    /// Handles from listings, taken by the walk when it reaches the entry.
    handles: Mutex<HashMap<Vec<u8>, Fh>>,
}

impl NfsSource {
    /// Mount the export and find the source directory.
    ///
    /// # Errors
    /// The server is unreachable, the export or path does not exist.
    pub fn connect(url: &NfsUrl) -> io::Result<NfsSource> {
        let (client, inside) = connect(url)?;
        let root = client.resolve(&client.export_root, &inside)?;
        Ok(NfsSource { client, url: url.display(), root, handles: Mutex::new(HashMap::new()) })
    }

    fn handle(&self, rel: &[u8]) -> io::Result<Fh> {
        if rel.is_empty() {
            return Ok(self.root.0.clone());
        }
        if let Some(fh) = self.handles.lock().expect("handle map poisoned").remove(rel) {
            return Ok(fh);
        }
        Ok(self.client.resolve(&self.root.0, rel)?.0)
    }
}

impl Source for NfsSource {
    fn display(&self, rel: &[u8]) -> String {
        show(&self.url, rel)
    }

    fn root(&self) -> io::Result<Entry> {
        if self.root.1.kind != Kind::Dir {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        Ok(entry(b"", &self.root.1))
    }

    fn list(&self, rel: &[u8]) -> io::Result<Vec<Listed>> {
        let fh = self.handle(rel)?;
        let entries = self.client.readdirplus(&fh)?;
        let mut handles = self.handles.lock().expect("handle map poisoned");
        Ok(entries
            .into_iter()
            .map(|d| {
                let e = entry(&d.name, &d.attr);
                if matches!(e.kind, EntryKind::Dir | EntryKind::File | EntryKind::Symlink) {
                    handles.insert(child(rel, &d.name), d.fh);
                }
                Listed { name: d.name, meta: Ok(e) }
            })
            .collect())
    }

    fn read_link(&self, rel: &[u8]) -> io::Result<Vec<u8>> {
        self.client.readlink(&self.handle(rel)?)
    }

    fn xattrs(&self, _rel: &[u8]) -> Vec<Xattr> {
        Vec::new()
    }

    fn open(&self, rel: &[u8], e: &Entry) -> io::Result<Box<dyn SourceFile>> {
        let fh = self.handle(rel)?;
        Ok(Box::new(NfsFile { size: e.size, reader: Reader::new(&self.client, fh, e.size, READ_AHEAD) }))
    }
}

struct NfsFile {
    size: u64,
    reader: Reader,
}

impl io::Read for NfsFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl SourceFile for NfsFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn seek_to(&mut self, pos: u64) -> io::Result<()> {
        self.reader.seek(pos);
        Ok(())
    }
}

/// A directory on an NFS export that a checkout writes into (created when absent).
pub struct NfsTarget {
    client: Client,
    url: String,
    /// The target directory's path inside the export.
    inside: Vec<u8>,
    /// Directory handles by path relative to the target (`""` is the target).
    dirs: Mutex<HashMap<Vec<u8>, Fh>>,
}

impl NfsTarget {
    /// Mount the export; the target directory itself is made by `prepare_root`.
    ///
    /// # Errors
    /// The server is unreachable or the export does not exist.
    pub fn connect(url: &NfsUrl) -> io::Result<NfsTarget> {
        let (client, inside) = connect(url)?;
        Ok(NfsTarget { client, url: url.display(), inside, dirs: Mutex::new(HashMap::new()) })
    }

    fn dir(&self, rel: &[u8]) -> io::Result<Fh> {
        let known = self.dirs.lock().expect("dir map poisoned").get(rel).cloned();
        if let Some(fh) = known {
            return Ok(fh);
        }
        if rel.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "checkout target not prepared"));
        }
        let (parent, name) = split(rel);
        let pfh = self.dir(parent)?;
        match self.client.lookup(&pfh, name)? {
            Some((fh, a)) if a.kind == Kind::Dir => {
                self.dirs.lock().expect("dir map poisoned").insert(rel.to_vec(), fh.clone());
                Ok(fh)
            }
            Some(_) => Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory")),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such directory")),
        }
    }

    fn lookup(&self, rel: &[u8]) -> io::Result<Option<(Fh, Attr)>> {
        if rel.is_empty() {
            let fh = self.dir(rel)?;
            let a = self.client.getattr(&fh)?;
            return Ok(Some((fh, a)));
        }
        let (parent, name) = split(rel);
        match self.dir(parent) {
            Ok(pfh) => self.client.lookup(&pfh, name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn must(&self, rel: &[u8]) -> io::Result<(Fh, Attr)> {
        self.lookup(rel)?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn forget(&self, rel: &[u8]) {
        let mut prefix = rel.to_vec();
        prefix.push(b'/');
        self.dirs.lock().expect("dir map poisoned").retain(|k, _| k != rel && !k.starts_with(&prefix));
    }

    fn remove_tree(&self, dir: &Fh, name: &[u8], a: &Attr, fh: &Fh) -> io::Result<()> {
        if a.kind == Kind::Dir {
            for d in self.client.readdirplus(fh)? {
                self.remove_tree(fh, &d.name, &d.attr, &d.fh)?;
            }
        }
        self.client.remove(dir, name, a.kind == Kind::Dir)
    }
}

impl Target for NfsTarget {
    fn display(&self, rel: &[u8]) -> String {
        show(&self.url, rel)
    }

    fn prepare_root(&self) -> io::Result<()> {
        let mut cur = self.client.export_root.clone();
        for comp in self.inside.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            cur = match self.client.lookup(&cur, comp)? {
                Some((fh, a)) if a.kind == Kind::Dir => fh,
                Some(_) => return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory")),
                None => match self.client.mkdir(&cur, comp, 0o755) {
                    Ok(fh) => fh,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.client.resolve(&cur, comp)?.0,
                    Err(e) => return Err(e),
                },
            };
        }
        if self.client.getattr(&cur)?.kind != Kind::Dir {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        self.dirs.lock().expect("dir map poisoned").insert(Vec::new(), cur);
        Ok(())
    }

    fn can_chown(&self) -> bool {
        self.client.uid == 0
    }

    fn stat(&self, rel: &[u8]) -> io::Result<Option<Entry>> {
        Ok(self.lookup(rel)?.map(|(fh, a)| {
            if a.kind == Kind::Dir && !rel.is_empty() {
                self.dirs.lock().expect("dir map poisoned").insert(rel.to_vec(), fh);
            }
            entry(split(rel).1, &a)
        }))
    }

    fn list(&self, rel: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let entries = self.client.readdirplus(&self.dir(rel)?)?;
        let mut dirs = self.dirs.lock().expect("dir map poisoned");
        Ok(entries
            .into_iter()
            .map(|d| {
                if d.attr.kind == Kind::Dir {
                    dirs.insert(child(rel, &d.name), d.fh);
                }
                d.name
            })
            .collect())
    }

    fn mkdir(&self, rel: &[u8]) -> io::Result<()> {
        let (parent, name) = split(rel);
        let fh = self.client.mkdir(&self.dir(parent)?, name, 0o700)?;
        self.dirs.lock().expect("dir map poisoned").insert(rel.to_vec(), fh);
        Ok(())
    }

    fn mkdir_all(&self, rel: &[u8]) -> io::Result<()> {
        let mut cur = Vec::new();
        for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            cur = child(&cur, comp);
            match self.dir(&cur) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => match self.mkdir(&cur) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                },
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn remove_all(&self, rel: &[u8]) -> io::Result<()> {
        let Some((fh, a)) = self.lookup(rel)? else { return Ok(()) };
        let (parent, name) = split(rel);
        self.forget(rel);
        self.remove_tree(&self.dir(parent)?, name, &a, &fh)
    }

    fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        let ((fp, fname), (tp, tname)) = (split(from), split(to));
        let (fdir, tdir) = (self.dir(fp)?, self.dir(tp)?);
        self.forget(from);
        self.forget(to);
        self.client.rename(&fdir, fname, &tdir, tname)
    }

    fn symlink(&self, target: &[u8], rel: &[u8]) -> io::Result<()> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        match self.client.symlink(&dir, name, target) {
            // Some servers make the link and then fail to look up a link whose target does not
            // exist (yet): the listing says whether it is there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let made = self.client.readdirplus(&dir)?.into_iter().find(|d| d.name == name);
                match made {
                    Some(d) if d.attr.kind == Kind::Symlink && self.client.readlink(&d.fh)? == target => Ok(()),
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    fn read_link(&self, rel: &[u8]) -> io::Result<Vec<u8>> {
        self.client.readlink(&self.must(rel)?.0)
    }

    fn mknod(&self, rel: &[u8], e: &Entry) -> io::Result<()> {
        let kind = match e.kind {
            EntryKind::CharDevice => Kind::CharDevice,
            EntryKind::BlockDevice => Kind::BlockDevice,
            EntryKind::Socket => Kind::Socket,
            EntryKind::Fifo => Kind::Fifo,
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a special file")),
        };
        let (parent, name) = split(rel);
        let rdev = (libc::major(e.rdev as libc::dev_t), libc::minor(e.rdev as libc::dev_t));
        self.client.mknod(&self.dir(parent)?, name, kind, e.mode, rdev)
    }

    fn hard_link(&self, existing: &[u8], new: &[u8]) -> io::Result<()> {
        let (fh, _) = self.must(existing)?;
        let (parent, name) = split(new);
        self.client.link(&fh, &self.dir(parent)?, name)
    }

    fn apply_metadata(&self, rel: &[u8], e: &Entry, chown: bool) -> io::Result<ApplyNotes> {
        // SETATTR on a symlink's handle is not portable (some servers follow it): links keep
        // the server's defaults.
        if e.kind == EntryKind::Symlink {
            return Ok(notes(e, chown));
        }
        let known = self.dirs.lock().expect("dir map poisoned").get(rel).cloned();
        let fh = match known {
            Some(fh) => fh,
            None => self.must(rel)?.0,
        };
        self.client.setattr(&fh, &set_attr(e, chown))?;
        Ok(notes(e, chown))
    }

    fn create_new(&self, rel: &[u8]) -> io::Result<Box<dyn TargetFile>> {
        let (parent, name) = split(rel);
        let fh = self.client.create(&self.dir(parent)?, name, 0o600)?;
        Ok(Box::new(NfsWriteFile { client: self.client.clone(), writer: Writer::new(&self.client, fh, WRITE_BEHIND) }))
    }

    fn open_read(&self, rel: &[u8]) -> io::Result<Box<dyn io::Read + Send>> {
        let (fh, a) = self.must(rel)?;
        Ok(Box::new(Reader::new(&self.client, fh, a.size, READ_AHEAD)))
    }
}

struct NfsWriteFile {
    client: Client,
    writer: Writer,
}

impl TargetFile for NfsWriteFile {
    fn write_at(&mut self, data: &[u8], pos: u64) -> io::Result<()> {
        self.writer.write_at(data, pos)
    }

    fn finish(mut self: Box<Self>, size: u64, e: &Entry, chown: bool) -> io::Result<ApplyNotes> {
        self.writer.commit()?;
        // On the handle CREATE gave: no LOOKUP. The size goes first and alone, since some
        // servers apply a size change after the times of the same SETATTR (and so stamp the
        // file with the time of the truncate).
        self.client.setattr(&self.writer.fh, &SetAttr { size: Some(size), ..Default::default() })?;
        self.client.setattr(&self.writer.fh, &set_attr(e, chown))?;
        Ok(notes(e, chown))
    }
}

/// The attributes NFSv3 can carry for `e`.
fn set_attr(e: &Entry, chown: bool) -> SetAttr {
    SetAttr {
        mode: Some(e.mode),
        uid: chown.then_some(e.uid),
        gid: chown.then_some(e.gid),
        size: None,
        mtime: Some((e.mtime.sec.clamp(0, u32::MAX as i64) as u32, e.mtime.nsec)),
    }
}

/// What applying `e`'s metadata over NFSv3 leaves out.
fn notes(e: &Entry, chown: bool) -> ApplyNotes {
    let mut notes = ApplyNotes { ownership_skipped: !chown, ..Default::default() };
    if !e.xattrs.is_empty() {
        notes.xattr_errors.push("NFSv3 carries no extended attributes".into());
    }
    notes
}

/// Open an `nfs://` URL as a create's source.
///
/// # Errors
/// [`ccfs::Error::FsUnavailable`] when the server does not answer; a bad argument when the
/// export or path does not exist or is not a directory.
pub fn source(url: &NfsUrl) -> ccfs::Result<Arc<dyn Source>> {
    let s = NfsSource::connect(url).map_err(|e| open_error(&format!("NFS source {}", url.display()), &e))?;
    Ok(Arc::new(s))
}

/// Open an `nfs://` URL as a checkout's target.
///
/// # Errors
/// As [`source`].
pub fn target(url: &NfsUrl) -> ccfs::Result<Arc<dyn Target>> {
    let t = NfsTarget::connect(url).map_err(|e| open_error(&format!("NFS target {}", url.display()), &e))?;
    Ok(Arc::new(t))
}
