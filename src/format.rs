//! The CCFS bucket format: every type that is written to the bucket. See `docs/FORMAT.md`.
//!
//! Objects in a bucket:
//! - `ccfs.json` — the store header ([`StoreConfig`]), JSON;
//! - `packs/data/<xx>/<pack>` and `packs/tree/<xx>/<pack>` — packs of blobs (blocks or trees),
//!   each blob compressed on its own, followed by a trailer listing the blobs ([`PackTrailer`]);
//! - `index/<version_uid>` — the blobs a version create added ([`IndexFile`]);
//! - `stats/<version_uid>` — the version's statistics and skipped files ([`VersionStats`]), JSON;
//! - `versions/<branch>/<micros>` — the manifest ([`Manifest`]), JSON, written last and only
//!   if absent.

use serde::{Deserialize, Serialize};

use crate::ids::{BlockId, PackId, PackKind, TreeId};

/// Version of the bucket format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the store header object.
pub const HEADER_PATH: &str = "ccfs.json";
/// Hash type name, as the API guide spells it.
pub const HASH_TYPE: &str = "SHA-256";

/// How files are cut into blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Chunking {
    /// FastCDC (2020), min = avg/4, max = avg*4.
    #[default]
    Fastcdc,
    /// Fixed-size blocks of `block_size`.
    Fixed,
}

/// How blobs are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CompressionMethod {
    /// zstd where it pays (saves at least 1/32), raw where the data is incompressible.
    #[default]
    Auto,
    /// Always zstd.
    Zstd,
    /// Never compress.
    None,
}

/// The store header, `ccfs.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    pub format_version: u32,
    pub store_uuid: String,
    /// Average (FastCDC) or exact (fixed) block size in bytes.
    pub block_size: u32,
    pub chunking: Chunking,
    pub min_block_size: u32,
    pub max_block_size: u32,
    pub hash_type: String,
    pub compression_method: CompressionMethod,
    pub zstd_level: i32,
    /// Target size of a pack object in bytes.
    pub pack_size: u32,
    pub created_at: String,
}

/// How one blob is encoded inside its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Codec {
    Raw,
    Zstd,
}

/// Where a blob lives: a byte range of a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Loc {
    pub pack: PackId,
    pub offset: u32,
    /// Stored (possibly compressed) length.
    pub len: u32,
    pub codec: Codec,
}

/// A block of file data as a tree references it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockRef {
    pub id: BlockId,
    pub raw_len: u32,
    pub loc: Loc,
}

/// A piece of a regular file's content, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Piece {
    Block(BlockRef),
    /// A run of zero bytes (a hole or an all-zero block): nothing is stored.
    Hole(u64),
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Block(b) => b.raw_len as u64,
            Piece::Hole(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tree object as its parent references it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeRef {
    pub id: TreeId,
    pub raw_len: u32,
    pub loc: Loc,
}

/// Type of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// Modification or change time, nanosecond precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// One extended attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// File name bytes (any bytes but `/` and NUL).
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits incl. setuid/setgid/sticky (no file-type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    /// Change time, device and inode at scan time: only for the unchanged-file test of an
    /// incremental create.
    pub ctime: Timestamp,
    pub dev: u64,
    pub inode: u64,
    /// Logical size of a regular file; target length of a symlink; 0 otherwise.
    pub size: u64,
    pub nlink: u32,
    /// Device number of a character or block device.
    pub rdev: u64,
    /// Target of a symlink.
    pub target: Vec<u8>,
    pub xattrs: Vec<Xattr>,
    /// Content of a regular file.
    pub content: Vec<Piece>,
    /// Content of a directory.
    pub subtree: Option<TreeRef>,
    /// Hard links: entries of one version with the same group are one inode (the group is
    /// the inode number at scan time). `None` for files with one link.
    pub link_group: Option<u64>,
}

/// A directory: its entries sorted by name bytes, names unique.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

impl Tree {
    /// Binary search by name.
    pub fn find(&self, name: &[u8]) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.name.as_slice().cmp(name)).ok().map(|i| &self.entries[i])
    }
}

/// One blob listed in a pack trailer or an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Block id or tree id (both SHA-256).
    pub id: [u8; 32],
    pub kind: PackKind,
    pub raw_len: u32,
    pub loc: Loc,
}

/// The trailer at the end of every pack: `zstd(bincode(trailer))`, then its length as a u32
/// little-endian, then [`PACK_MAGIC`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackTrailer {
    pub kind: PackKind,
    pub blobs: Vec<BlobEntry>,
}

/// Last 8 bytes of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"CCFSPK01";

/// `index/<version_uid>`: every blob that version's create wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<PackId>,
    pub blobs: Vec<BlobEntry>,
}

/// `versions/<branch>/<micros>`: the manifest, written last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub version_id: crate::ids::VersionId,
    pub version_uid: String,
    pub ccfs_srv_uid: String,
    pub branch_name: String,
    pub parent_id: Option<crate::ids::VersionId>,
    pub catalog_file_id: String,
    pub index_file_id: String,
    pub stat_file_id: String,
    pub block_size: u32,
    pub hash_type: String,
    pub push_start_time: String,
    pub push_end_time: String,
    pub version_desc: String,
    /// The source the version was created from.
    pub source: String,
    /// Root directory of the version.
    pub root: TreeRef,
}

/// A file that could not be read during create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// `stats/<version_uid>`: the version's statistics, named as in the API guide.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionStats {
    /// Regular files (incl. each hard link), symlinks and special files in the version.
    pub fs_num_files: u64,
    /// Directories in the version, the root included.
    pub fs_num_dirs: u64,
    /// Logical bytes of regular files.
    pub fs_total_data: u64,
    /// Files new or changed since the parent version.
    pub diff_num_files: u64,
    /// Directories whose tree object is new in the store.
    pub diff_num_dirs: u64,
    /// Logical bytes of files new or changed since the parent.
    pub diff_file_data: u64,
    /// Bytes this version added to the bucket (packs, index, stats, manifest).
    pub version_object_data: u64,
    /// `diff_file_data / version_object_data`.
    pub diff_data_reduction: f64,
    /// `fs_total_data / version_object_data`.
    pub total_data_reduction: f64,
    /// Blocks this version added to the store, and their raw bytes.
    pub new_blocks: u64,
    pub new_block_bytes: u64,
    /// Files that could not be read; the version holds everything else.
    pub skipped: Vec<Skipped>,
}

/// A ratio that is 0 rather than NaN or infinite when the denominator is 0.
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}
