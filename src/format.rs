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

/// Version of the bucket format this code writes into new stores. Version 2 encodes trees in
/// columns ([`crate::codec::tree`]); version 1 encoded them with bincode.
pub const FORMAT_VERSION: u32 = 2;
/// Oldest version this code still reads and writes (in that version's encoding).
pub const MIN_FORMAT_VERSION: u32 = 1;
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
    /// Not encoded: set on a tree that was stored as a [`TreeDelta`], to the full tree it was
    /// rebuilt from. That tree's blob is needed as long as this one is.
    #[serde(skip)]
    pub base: Option<TreeRef>,
}

/// A tree stored as its differences from a full tree of an earlier version (format version 2):
/// a directory where few entries changed costs those entries, not the whole directory again.
/// The base is always a full tree, so a read needs at most two blobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeDelta {
    pub base: TreeRef,
    /// Indexes of the base's entries that are not in this tree, ascending.
    pub removed: Vec<u32>,
    /// Entries of this tree that are not in the base, sorted by name.
    pub added: Vec<Entry>,
}

impl TreeDelta {
    /// The differences that turn `base` (stored at `base_ref`) into `tree`. Both sorted by name.
    pub fn between(base_ref: TreeRef, base: &Tree, tree: &Tree) -> TreeDelta {
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < base.entries.len() || j < tree.entries.len() {
            let order = match (base.entries.get(i), tree.entries.get(j)) {
                (Some(b), Some(t)) => b.name.cmp(&t.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    removed.push(i as u32);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    added.push(tree.entries[j].clone());
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if base.entries[i] != tree.entries[j] {
                        removed.push(i as u32);
                        added.push(tree.entries[j].clone());
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        TreeDelta { base: base_ref, removed, added }
    }

    /// Rebuild the tree from its base.
    ///
    /// # Errors
    /// A description of the inconsistency when the delta does not fit the base: indexes out of
    /// order or range, added entries out of order, or names that would appear twice.
    pub fn apply(&self, base: &Tree) -> std::result::Result<Tree, String> {
        if self.removed.windows(2).any(|w| w[0] >= w[1]) {
            return Err("removed entries are not in ascending order".into());
        }
        if let Some(last) = self.removed.last().filter(|l| **l as usize >= base.entries.len()) {
            return Err(format!("removes entry {last} of a base with {} entries", base.entries.len()));
        }
        if self.added.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err("added entries are not sorted by name".into());
        }
        let mut removed = self.removed.iter().peekable();
        let kept = base.entries.iter().enumerate().filter(|(i, _)| {
            let gone = removed.peek().is_some_and(|r| **r as usize == *i);
            if gone {
                removed.next();
            }
            !gone
        });
        let mut entries = Vec::with_capacity(base.entries.len() + self.added.len());
        let mut added = self.added.iter().peekable();
        for (_, k) in kept {
            while let Some(a) = added.next_if(|a| a.name < k.name) {
                entries.push(a.clone());
            }
            if added.peek().is_some_and(|a| a.name == k.name) {
                return Err(format!("adds {:?}, which the base keeps", String::from_utf8_lossy(&k.name)));
            }
            entries.push(k.clone());
        }
        entries.extend(added.cloned());
        Ok(Tree { entries, base: Some(self.base) })
    }

    /// What the delta costs to store and read, against the tree written in full: one per
    /// removed index, and one per added entry and per piece of its content.
    pub fn cost(&self) -> usize {
        self.removed.len() + self.added.iter().map(|e| 1 + e.content.len()).sum::<usize>()
    }
}

impl Tree {
    /// What the tree costs written in full, in the units of [`TreeDelta::cost`].
    pub fn cost(&self) -> usize {
        self.entries.iter().map(|e| 1 + e.content.len()).sum()
    }

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
    /// When the scan started (Unix µs). A file is reused unread by a child version only if its
    /// ctime is older than this by more than the file system's timestamp granularity.
    pub scan_start_micros: u64,
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

#[cfg(test)]
mod tests {
    //! Snapshot tests pin every on-bucket encoding: a change here is a format change and must
    //! bump [`FORMAT_VERSION`] and `docs/FORMAT.md`.
    use super::*;
    use crate::codec::encode_raw;
    use crate::ids::{BlockId, PackId, PackKind, TreeId, VersionId};

    fn loc(n: u8) -> Loc {
        Loc { pack: PackId([n; 16]), offset: 4096 * n as u32, len: 1000 + n as u32, codec: Codec::Zstd }
    }

    fn sample_tree() -> Tree {
        let file = Entry {
            name: b"file\xff.txt".to_vec(),
            kind: EntryKind::File,
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            mtime: Timestamp { sec: 1_700_000_000, nsec: 123_456_789 },
            ctime: Timestamp { sec: 1_700_000_001, nsec: 5 },
            dev: 2049,
            inode: 77,
            size: 70_000,
            nlink: 2,
            rdev: 0,
            target: vec![],
            xattrs: vec![Xattr { name: b"user.k".to_vec(), value: b"v".to_vec() }],
            content: vec![
                Piece::Block(BlockRef { id: BlockId::of(b"block"), raw_len: 65_536, loc: loc(1) }),
                Piece::Hole(4464),
            ],
            subtree: None,
            link_group: Some(77),
        };
        let dir = Entry {
            name: b"sub".to_vec(),
            kind: EntryKind::Dir,
            mode: 0o755,
            subtree: Some(TreeRef { id: TreeId::of(b"tree"), raw_len: 321, loc: loc(2) }),
            content: vec![],
            link_group: None,
            xattrs: vec![],
            nlink: 1,
            size: 0,
            ..file.clone()
        };
        let link = Entry {
            name: b"symlink".to_vec(),
            kind: EntryKind::Symlink,
            target: b"../x".to_vec(),
            size: 4,
            content: vec![],
            link_group: None,
            xattrs: vec![],
            nlink: 1,
            ..file.clone()
        };
        Tree { entries: vec![file, dir, link], base: None }
    }

    #[test]
    fn tree_encoding_is_pinned() {
        // Version 1 (bincode), still written into stores of that version and read everywhere.
        let raw = encode_raw(&sample_tree());
        insta::assert_snapshot!("tree_bincode_hex", hex::encode(&raw));
        insta::assert_snapshot!("tree_id", TreeId::of(&raw).to_hex());
        assert_eq!(crate::codec::decode_tree(&raw, "v1").unwrap(), crate::codec::tree::StoredTree::Full(sample_tree()));
        // Version 2 (columns).
        let v2 = crate::codec::encode_tree(&sample_tree(), 2);
        insta::assert_snapshot!("tree_v2_hex", hex::encode(&v2));
        insta::assert_snapshot!("tree_v2_id", TreeId::of(&v2).to_hex());
        assert_eq!(crate::codec::decode_tree(&v2, "v2").unwrap(), crate::codec::tree::StoredTree::Full(sample_tree()));
        assert_eq!(crate::codec::encode_tree(&sample_tree(), 1), raw);
    }

    fn named(name: &str, size: u64) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            size,
            content: vec![Piece::Hole(size)],
            ..sample_tree().entries[0].clone()
        }
    }

    #[test]
    fn deltas_rebuild_the_tree_and_reject_what_does_not_fit() {
        let base = Tree { entries: ["a", "b", "c", "d", "e"].iter().map(|n| named(n, 1)).collect(), base: None };
        let base_ref = TreeRef { id: TreeId::of(b"base"), raw_len: 99, loc: loc(4) };
        let tree = Tree {
            entries: vec![named("a", 1), named("aa", 7), named("b", 2), named("c", 1), named("e", 1), named("f", 3)],
            base: None,
        };
        let delta = TreeDelta::between(base_ref, &base, &tree);
        assert_eq!(delta.removed, [1, 3], "b changed, d is gone");
        let added: Vec<&[u8]> = delta.added.iter().map(|e| e.name.as_slice()).collect();
        assert_eq!(added, [&b"aa"[..], b"b", b"f"]);
        assert_eq!(delta.cost(), 2 + 3 * 2);
        let rebuilt = delta.apply(&base).unwrap();
        assert_eq!(rebuilt.entries, tree.entries);
        assert_eq!(rebuilt.base, Some(base_ref));
        assert_eq!(TreeDelta::between(base_ref, &base, &base).cost(), 0);

        let v2 = crate::codec::tree::encode_delta(&delta);
        insta::assert_snapshot!("tree_delta_v2_hex", hex::encode(&v2));
        match crate::codec::decode_tree(&v2, "delta").unwrap() {
            crate::codec::tree::StoredTree::Delta(d) => assert_eq!(d, delta),
            other => panic!("decoded as {other:?}"),
        }

        let broken = |f: &dyn Fn(&mut TreeDelta)| {
            let mut d = delta.clone();
            f(&mut d);
            d.apply(&base).unwrap_err()
        };
        assert!(broken(&|d| d.removed = vec![3, 1]).contains("ascending"));
        assert!(broken(&|d| d.removed = vec![1, 5]).contains("removes entry 5 of a base with 5 entries"));
        assert!(broken(&|d| d.added.reverse()).contains("not sorted"));
        assert!(broken(&|d| d.removed = vec![3]).contains("adds \"b\", which the base keeps"));
    }

    #[test]
    fn pack_trailer_and_index_encodings_are_pinned() {
        let blob = BlobEntry { id: [7; 32], kind: PackKind::Data, raw_len: 65_536, loc: loc(3) };
        let trailer = PackTrailer { kind: PackKind::Data, blobs: vec![blob] };
        insta::assert_snapshot!("trailer_bincode_hex", hex::encode(encode_raw(&trailer)));
        let index = IndexFile { packs: vec![PackId([3; 16])], blobs: vec![blob] };
        insta::assert_snapshot!("index_bincode_hex", hex::encode(encode_raw(&index)));
        let obj = crate::codec::encode_object(crate::codec::ObjectKind::Index, &index);
        assert_eq!(&obj[..8], b"CCFS\x01\x01\x00\x00");
        let back: IndexFile = crate::codec::decode_object(crate::codec::ObjectKind::Index, &obj, "index").unwrap();
        assert_eq!(back, index);
        assert!(crate::codec::decode_object::<IndexFile>(crate::codec::ObjectKind::PackTrailer, &obj, "x").is_err());
    }

    #[test]
    fn json_objects_are_pinned() {
        let config = StoreConfig {
            format_version: FORMAT_VERSION,
            store_uuid: "ace2471f-6d2e-40e6-9ad3-b56b708ade9b".into(),
            block_size: 524_288,
            chunking: Chunking::Fastcdc,
            min_block_size: 131_072,
            max_block_size: 2_097_152,
            hash_type: HASH_TYPE.into(),
            compression_method: CompressionMethod::Auto,
            zstd_level: 3,
            pack_size: 16 << 20,
            created_at: "2017/05/15 11:12:04".into(),
        };
        insta::assert_json_snapshot!("store_config", config);
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            version_id: "bucket/Version_main/1494835926422777".parse::<VersionId>().unwrap(),
            version_uid: "3f6d77c2-06fa-4873-a4f9-2dcabc401e02".into(),
            ccfs_srv_uid: "ace2471f-6d2e-40e6-9ad3-b56b708ade9b".into(),
            branch_name: "main".into(),
            parent_id: Some("bucket/Version_main/1494835914795401".parse().unwrap()),
            catalog_file_id: format!("catalog_{}", TreeId::of(b"tree")),
            index_file_id: "index_3f6d77c2-06fa-4873-a4f9-2dcabc401e02".into(),
            stat_file_id: "stat_3f6d77c2-06fa-4873-a4f9-2dcabc401e02".into(),
            block_size: 524_288,
            hash_type: HASH_TYPE.into(),
            push_start_time: "2017/05/15 11:12:04".into(),
            push_end_time: "2017/05/15 11:12:05".into(),
            version_desc: "nightly".into(),
            source: "/data".into(),
            scan_start_micros: 1_494_835_924_000_000,
            root: TreeRef { id: TreeId::of(b"tree"), raw_len: 321, loc: loc(2) },
        };
        insta::assert_json_snapshot!("manifest", manifest);
        let stats = VersionStats {
            fs_num_files: 8,
            fs_num_dirs: 1,
            fs_total_data: 14,
            diff_num_files: 5,
            diff_num_dirs: 1,
            diff_file_data: 14,
            version_object_data: 472,
            diff_data_reduction: ratio(14, 472),
            total_data_reduction: ratio(14, 472),
            new_blocks: 5,
            new_block_bytes: 14,
            skipped: vec![Skipped { path: "/data/file6".into(), reason: "no read access to file".into() }],
        };
        insta::assert_json_snapshot!("version_stats", stats);
    }
}
