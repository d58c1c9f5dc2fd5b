//! Browsing one version: path lookup, paged directory listings and file reads. The same code
//! serves `ccfs version dir|cat`, checkout, the FUSE mount and the REST API.

use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{Entry, EntryKind, Manifest, Piece, Tree};
use crate::repo::Repo;

/// A version opened for reading.
#[derive(Clone, Debug)]
pub struct Version {
    pub repo: Repo,
    pub manifest: Arc<Manifest>,
}

/// Split a version path (`/a/b`, must begin with `/`) into name components.
///
/// # Errors
/// [`Error::InvalidArgument`] for relative paths, `..`, or NUL bytes.
pub fn split_path(path: &[u8]) -> Result<Vec<&[u8]>> {
    if path.first() != Some(&b'/') {
        return Err(Error::InvalidArgument(format!("path {:?} must begin with '/'", String::from_utf8_lossy(path))));
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::InvalidArgument(format!(
                    "path {:?}: '..' is not allowed",
                    String::from_utf8_lossy(path)
                )))
            }
            c if c.contains(&0) => return Err(Error::InvalidArgument("path contains a NUL byte".into())),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl Version {
    pub fn new(repo: Repo, manifest: Arc<Manifest>) -> Self {
        Version { repo, manifest }
    }

    fn id(&self) -> String {
        self.manifest.version_id.to_string()
    }

    /// Name this version in data errors (a corrupt or missing object names the object, the
    /// version and, via the caller, the file).
    pub fn in_version(&self, e: Error) -> Error {
        match e.root() {
            Error::Corrupt { object, reason } => {
                Error::Corrupt { object: object.clone(), reason: format!("{reason}; needed by version {}", self.id()) }
            }
            Error::MissingObject { object, reason } => Error::MissingObject {
                object: object.clone(),
                reason: format!("{reason}; needed by version {}", self.id()),
            },
            _ => e,
        }
    }

    fn block(&self, b: &crate::format::BlockRef) -> Result<bytes::Bytes> {
        self.repo.block(b).map_err(|e| self.in_version(e))
    }

    /// The root directory's entry.
    ///
    /// # Errors
    /// Store errors; [`Error::Corrupt`] for a catalog without a root.
    pub fn root(&self) -> Result<Entry> {
        let cat = self.repo.tree(&self.manifest.root)?;
        cat.entries.first().filter(|e| e.kind == EntryKind::Dir).cloned().ok_or_else(|| {
            Error::corrupt(&self.manifest.catalog_file_id, format!("catalog of {} has no root directory", self.id()))
        })
    }

    /// The entry at `path` (`/` is the root).
    ///
    /// # Errors
    /// [`Error::PathNotFound`], [`Error::NotADirectory`] for a path through a non-directory,
    /// [`Error::InvalidArgument`] for a bad path.
    pub fn lookup(&self, path: &[u8]) -> Result<Entry> {
        let mut cur = self.root()?;
        for name in split_path(path)? {
            let tree = self.children(&cur, path)?;
            cur = tree.find(name).cloned().ok_or_else(|| Error::PathNotFound {
                version: self.id(),
                path: String::from_utf8_lossy(path).into_owned(),
            })?;
        }
        Ok(cur)
    }

    /// The children of a directory entry; `path` names it in errors.
    ///
    /// # Errors
    /// [`Error::NotADirectory`] and store errors.
    pub fn children(&self, dir: &Entry, path: &[u8]) -> Result<Arc<Tree>> {
        match (&dir.kind, &dir.subtree) {
            (EntryKind::Dir, Some(r)) => self.repo.tree(r),
            _ => Err(Error::NotADirectory { version: self.id(), path: String::from_utf8_lossy(path).into_owned() }),
        }
    }

    /// A page of a directory listing: `count` entries (0 = all) from `offset`.
    ///
    /// # Errors
    /// As [`Version::lookup`] and [`Version::children`].
    pub fn list(&self, path: &[u8], offset: usize, count: usize) -> Result<Vec<Entry>> {
        let dir = self.lookup(path)?;
        let tree = self.children(&dir, path)?;
        let end = if count == 0 { tree.entries.len() } else { offset.saturating_add(count).min(tree.entries.len()) };
        Ok(tree.entries.get(offset.min(end)..end).map(<[Entry]>::to_vec).unwrap_or_default())
    }

    /// Read up to `len` bytes of a regular file from `offset`; fewer at end of file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] / [`Error::MissingObject`] naming the pack and block.
    pub fn read(&self, file: &Entry, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64).min(file.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = 0u64;
        for piece in &file.content {
            let plen = piece.len();
            let (pstart, pend) = (pos, pos + plen);
            pos = pend;
            if pend <= offset {
                continue;
            }
            if pstart >= end {
                break;
            }
            let from = offset.max(pstart) - pstart;
            let to = end.min(pend) - pstart;
            match piece {
                Piece::Hole(_) => out.resize(out.len() + (to - from) as usize, 0),
                Piece::Block(b) => {
                    let data = self.block(b)?;
                    out.extend_from_slice(&data[from as usize..to as usize]);
                }
            }
        }
        // A file whose pieces are shorter than its size (never written by ccfs) reads as zeros.
        out.resize((end - offset) as usize, 0);
        Ok(out)
    }

    /// Stream a whole regular file into `w`.
    ///
    /// # Errors
    /// As [`Version::read`], and write errors of `w`.
    pub fn copy_to(&self, file: &Entry, w: &mut dyn std::io::Write) -> Result<u64> {
        if file.kind != EntryKind::File {
            return Err(Error::NotAFile { version: self.id(), path: String::from_utf8_lossy(&file.name).into_owned() });
        }
        let mut n = 0;
        for piece in &file.content {
            match piece {
                Piece::Hole(len) => {
                    let zeros = vec![0u8; (*len).min(1 << 20) as usize];
                    let mut left = *len;
                    while left > 0 {
                        let k = left.min(zeros.len() as u64) as usize;
                        w.write_all(&zeros[..k]).map_err(|e| Error::io("write", "output", e))?;
                        left -= k as u64;
                    }
                }
                Piece::Block(b) => {
                    let data = self.block(b)?;
                    w.write_all(&data).map_err(|e| Error::io("write", "output", e))?;
                }
            }
            n += piece.len();
        }
        Ok(n)
    }
}

/// A directory entry in the API guide's `versions/dir` shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirEntryInfo {
    pub date: String,
    pub uid: String,
    pub gid: String,
    pub nlinks: String,
    pub permissions: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub symlink_to: String,
    pub file_size: String,
}

/// One-letter type as `ls -l` prints it.
pub fn type_char(k: EntryKind) -> char {
    match k {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Fifo => 'p',
        EntryKind::CharDevice => 'c',
        EntryKind::BlockDevice => 'b',
        EntryKind::Socket => 's',
    }
}

/// `-rw-r--r--` as `ls -l` prints it, setuid/setgid/sticky included.
pub fn permissions(k: EntryKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(type_char(k));
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o40, 'r'),
        (0o20, 'w'),
        (0o10, 'x'),
        (0o4, 'r'),
        (0o2, 'w'),
        (0o1, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        s.push(match (set, special, i) {
            (true, true, 8) => 't',
            (false, true, 8) => 'T',
            (true, true, _) => 's',
            (false, true, _) => 'S',
            (true, false, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

impl From<&Entry> for DirEntryInfo {
    fn from(e: &Entry) -> Self {
        DirEntryInfo {
            date: crate::time::entry_date(e.mtime.sec),
            uid: e.uid.to_string(),
            gid: e.gid.to_string(),
            nlinks: e.nlink.to_string(),
            permissions: permissions(e.kind, e.mode),
            name: String::from_utf8_lossy(&e.name).into_owned(),
            kind: type_char(e.kind).to_string(),
            symlink_to: String::from_utf8_lossy(&e.target).into_owned(),
            file_size: e.size.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(split_path(b"/").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(split_path(b"/a//b/./c/").unwrap(), vec![&b"a"[..], b"b", b"c"]);
        assert!(split_path(b"a").is_err());
        assert!(split_path(b"/a/../b").is_err());
        assert!(split_path(b"").is_err());
    }

    #[test]
    fn permission_strings() {
        assert_eq!(permissions(EntryKind::File, 0o644), "-rw-r--r--");
        assert_eq!(permissions(EntryKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(permissions(EntryKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(permissions(EntryKind::File, 0o2644), "-rw-r-Sr--");
    }
}
