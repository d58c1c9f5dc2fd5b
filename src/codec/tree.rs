//! The tree encoding of format version 2: the entries of a directory split into columns.
//!
//! A tree is mostly block ids (32 random bytes each); everything else about an entry is small
//! and alike from one entry to the next (names that share prefixes, equal owners and modes,
//! neighbouring inode numbers, blocks laid out one after another in the same pack). Row by row,
//! as bincode writes it, those regular fields sit between the random ids and zstd finds little
//! to share. Column by column, with each value written as the difference from the one it is
//! most likely to equal, the regular fields shrink to almost nothing. On the benchmark dataset a
//! directory rewrite (what an incremental create stores for each changed directory) is a fifth
//! smaller than the bincode encoding.
//!
//! Layout (all integers are unsigned LEB128 varints unless said otherwise; "zz" means the
//! signed value zigzag-mapped first):
//!
//! ```text
//! 0xFF 0x02                      magic (0xFF never starts a bincode tree) and encoding version
//! n_entries n_packs
//! n_packs × 16-byte pack id      every pack the entries' blocks and subtrees live in
//! 17 × (length, bytes)           the streams below, in this order
//! ```
//!
//! Streams, each entry appending to them in entry order:
//! - `NAME_LENS`: length of the prefix shared with the previous entry's name, length of the rest;
//!   `NAMES`: the rest of the name.
//! - `KINDS`: one byte: kind (bits 0–2: file, dir, symlink, fifo, char, block, socket), bit 3 a
//!   subtree follows, bit 4 a link group follows, bit 5 the link group is the entry's inode,
//!   bit 6 the last piece's length is `size` minus the other pieces' lengths (so not written).
//! - `ATTRS`: mode, uid, gid.
//! - `SECS`: zz(mtime.sec − previous entry's mtime.sec), zz(ctime.sec − mtime.sec).
//! - `MNSEC`, `CNSEC`: mtime and ctime nanoseconds, 4 bytes little-endian each.
//! - `INODES`: zz(dev − previous dev), zz(inode − previous inode) (wrapping, as 64-bit).
//! - `SIZES`: size.
//! - `MISC`: nlink, rdev, target length, xattr count, then each xattr's name and value length,
//!   then the link group when bit 4 is set and bit 5 is not. `BYTES`: the target, then each
//!   xattr's name and value.
//! - `PIECES`: piece count, then per piece a tag (0 hole, 1 block) and a hole's length (unless
//!   implied).
//! - `IDS`: the 32-byte id of each block, then of the subtree.
//! - `RAWLENS`: each block's raw length (unless implied), then the subtree's.
//! - `LOCS`: per block and subtree, the index of its pack in the pack table and a codec byte:
//!   0 raw with the stored length equal to the raw length, 1 zstd, 2 raw. `OFFSETS`:
//!   zz(offset − where the previous blob of that pack in this tree ended, or 0). `LENS`: the
//!   stored length, except for codec byte 0.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::format::{BlockRef, Codec, Entry, EntryKind, Loc, Piece, Timestamp, Tree, TreeDelta, TreeRef, Xattr};
use crate::ids::{BlockId, PackId, TreeId};

/// First byte of a version-2 tree. A bincode tree starts with its entry count as a varint,
/// whose first byte is never 255.
pub const MAGIC: u8 = 0xFF;
const VERSION: u8 = 2;
/// Second byte of a tree stored as a [`TreeDelta`].
const DELTA: u8 = 3;

/// A tree as stored: in full, or as the changes to a full tree.
#[derive(Debug, PartialEq, Eq)]
pub enum StoredTree {
    Full(Tree),
    Delta(TreeDelta),
}

const NAME_LENS: usize = 0;
const NAMES: usize = 1;
const KINDS: usize = 2;
const ATTRS: usize = 3;
const SECS: usize = 4;
const MNSEC: usize = 5;
const CNSEC: usize = 6;
const INODES: usize = 7;
const SIZES: usize = 8;
const MISC: usize = 9;
const BYTES: usize = 10;
const PIECES: usize = 11;
const IDS: usize = 12;
const RAWLENS: usize = 13;
const LOCS: usize = 14;
const OFFSETS: usize = 15;
const LENS: usize = 16;
const STREAMS: usize = 17;

const HAS_SUBTREE: u8 = 1 << 3;
const HAS_LINK_GROUP: u8 = 1 << 4;
const LINK_GROUP_IS_INODE: u8 = 1 << 5;
const LAST_LEN_IMPLIED: u8 = 1 << 6;

/// Codec bytes in `LOCS`. A raw blob's stored length is almost always its raw length.
const RAW_SAME_LEN: u8 = 0;
const ZSTD: u8 = 1;
const RAW: u8 = 2;

const KINDS_IN_ORDER: [EntryKind; 7] = [
    EntryKind::File,
    EntryKind::Dir,
    EntryKind::Symlink,
    EntryKind::Fifo,
    EntryKind::CharDevice,
    EntryKind::BlockDevice,
    EntryKind::Socket,
];

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Encoder state: the streams, the pack table and where each pack's last blob ended.
#[derive(Default)]
struct Writer {
    s: [Vec<u8>; STREAMS],
    packs: Vec<PackId>,
    pack_pos: HashMap<PackId, (u64, u64)>,
}

impl Writer {
    fn put(&mut self, stream: usize, v: u64) {
        put(&mut self.s[stream], v);
    }

    fn loc(&mut self, loc: &Loc, raw_len: u32) {
        let next = self.packs.len() as u64;
        let (index, end) = self.pack_pos.entry(loc.pack).or_insert((next, 0));
        let (index, expected) = (*index, *end);
        *end = loc.offset as u64 + loc.len as u64;
        if index == next {
            self.packs.push(loc.pack);
        }
        self.put(LOCS, index);
        let codec = match loc.codec {
            Codec::Raw if loc.len == raw_len => RAW_SAME_LEN,
            Codec::Raw => RAW,
            Codec::Zstd => ZSTD,
        };
        self.s[LOCS].push(codec);
        self.put(OFFSETS, zigzag(loc.offset as i64 - expected as i64));
        if codec != RAW_SAME_LEN {
            self.put(LENS, loc.len as u64);
        }
    }
}

/// Encode a tree in full (deterministic: the tree id is the hash of these bytes).
pub fn encode(tree: &Tree) -> Vec<u8> {
    encode_entries(&tree.entries)
}

/// Encode a tree as its delta from a full tree:
///
/// ```text
/// 0xFF 0x03
/// base: 32-byte id, raw_len, 16-byte pack id, offset, len, codec byte (0 raw, 1 zstd)
/// n_removed, then each removed index as the gap from the previous one plus one (the first: itself)
/// the added entries, encoded as a full tree (0xFF 0x02 …)
/// ```
pub fn encode_delta(delta: &TreeDelta) -> Vec<u8> {
    let added = encode_entries(&delta.added);
    let mut out = Vec::with_capacity(added.len() + 64 + delta.removed.len() * 2);
    out.extend_from_slice(&[MAGIC, DELTA]);
    let base = &delta.base;
    out.extend_from_slice(&base.id.0);
    put(&mut out, base.raw_len as u64);
    out.extend_from_slice(&base.loc.pack.0);
    put(&mut out, base.loc.offset as u64);
    put(&mut out, base.loc.len as u64);
    out.push(match base.loc.codec {
        Codec::Raw => 0,
        Codec::Zstd => 1,
    });
    put(&mut out, delta.removed.len() as u64);
    let mut next = 0u64;
    for r in &delta.removed {
        put(&mut out, *r as u64 - next);
        next = *r as u64 + 1;
    }
    out.extend_from_slice(&added);
    out
}

fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut w = Writer::default();
    let (mut prev_name, mut prev_msec, mut prev_dev, mut prev_inode): (&[u8], i64, u64, u64) = (b"", 0, 0, 0);
    for e in entries {
        let shared = prev_name.iter().zip(&e.name).take_while(|(a, b)| a == b).count();
        w.put(NAME_LENS, shared as u64);
        w.put(NAME_LENS, (e.name.len() - shared) as u64);
        w.s[NAMES].extend_from_slice(&e.name[shared..]);
        prev_name = &e.name;

        let others = e.content.iter().rev().skip(1).try_fold(0u64, |sum, p| sum.checked_add(p.len()));
        let implied = match (e.content.last(), others) {
            (Some(last), Some(others)) => others.checked_add(last.len()) == Some(e.size),
            _ => false,
        };
        let mut kind = KINDS_IN_ORDER.iter().position(|k| *k == e.kind).expect("every kind is listed") as u8;
        if e.subtree.is_some() {
            kind |= HAS_SUBTREE;
        }
        match e.link_group {
            Some(g) if g == e.inode => kind |= HAS_LINK_GROUP | LINK_GROUP_IS_INODE,
            Some(_) => kind |= HAS_LINK_GROUP,
            None => {}
        }
        if implied {
            kind |= LAST_LEN_IMPLIED;
        }
        w.s[KINDS].push(kind);

        w.put(ATTRS, e.mode as u64);
        w.put(ATTRS, e.uid as u64);
        w.put(ATTRS, e.gid as u64);
        w.put(SECS, zigzag(e.mtime.sec.wrapping_sub(prev_msec)));
        w.put(SECS, zigzag(e.ctime.sec.wrapping_sub(e.mtime.sec)));
        prev_msec = e.mtime.sec;
        w.s[MNSEC].extend_from_slice(&e.mtime.nsec.to_le_bytes());
        w.s[CNSEC].extend_from_slice(&e.ctime.nsec.to_le_bytes());
        w.put(INODES, zigzag(e.dev.wrapping_sub(prev_dev) as i64));
        w.put(INODES, zigzag(e.inode.wrapping_sub(prev_inode) as i64));
        (prev_dev, prev_inode) = (e.dev, e.inode);
        w.put(SIZES, e.size);

        w.put(MISC, e.nlink as u64);
        w.put(MISC, e.rdev);
        w.put(MISC, e.target.len() as u64);
        w.s[BYTES].extend_from_slice(&e.target);
        w.put(MISC, e.xattrs.len() as u64);
        for x in &e.xattrs {
            w.put(MISC, x.name.len() as u64);
            w.put(MISC, x.value.len() as u64);
            w.s[BYTES].extend_from_slice(&x.name);
            w.s[BYTES].extend_from_slice(&x.value);
        }
        if let Some(g) = e.link_group.filter(|g| *g != e.inode) {
            w.put(MISC, g);
        }

        w.put(PIECES, e.content.len() as u64);
        for (i, piece) in e.content.iter().enumerate() {
            let len_written = !(implied && i + 1 == e.content.len());
            match piece {
                Piece::Hole(n) => {
                    w.s[PIECES].push(0);
                    if len_written {
                        w.put(PIECES, *n);
                    }
                }
                Piece::Block(b) => {
                    w.s[PIECES].push(1);
                    w.s[IDS].extend_from_slice(&b.id.0);
                    if len_written {
                        w.put(RAWLENS, b.raw_len as u64);
                    }
                    w.loc(&b.loc, b.raw_len);
                }
            }
        }
        if let Some(t) = &e.subtree {
            w.s[IDS].extend_from_slice(&t.id.0);
            w.put(RAWLENS, t.raw_len as u64);
            w.loc(&t.loc, t.raw_len);
        }
    }

    let size: usize = w.s.iter().map(|s| s.len() + 5).sum::<usize>() + w.packs.len() * 16 + 24;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&[MAGIC, VERSION]);
    put(&mut out, entries.len() as u64);
    put(&mut out, w.packs.len() as u64);
    for p in &w.packs {
        out.extend_from_slice(&p.0);
    }
    for s in &w.s {
        put(&mut out, s.len() as u64);
        out.extend_from_slice(s);
    }
    out
}

/// A cursor over one stream (or the header), with errors naming the object.
struct Cursor<'a> {
    buf: &'a [u8],
    what: &'a str,
}

impl<'a> Cursor<'a> {
    fn bad(&self, reason: impl std::fmt::Display) -> Error {
        Error::corrupt(self.what, format!("bad tree encoding: {reason}"))
    }

    fn bytes(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).ok().filter(|n| *n <= self.buf.len()).ok_or_else(|| self.bad("truncated"))?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(self.bad("varint overflows 64 bits"));
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("varint longer than 10 bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| self.bad(format!("{v} does not fit 32 bits")))
    }

    fn le_u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn id(&mut self) -> Result<[u8; 32]> {
        let mut id = [0u8; 32];
        id.copy_from_slice(self.bytes(32)?);
        Ok(id)
    }
}

/// Decoder state: one cursor per stream, the pack table and each pack's last blob end.
struct Reader<'a> {
    s: Vec<Cursor<'a>>,
    packs: Vec<PackId>,
    pack_end: Vec<u64>,
}

impl<'a> Reader<'a> {
    fn loc(&mut self, raw_len: u32) -> Result<Loc> {
        let index = self.s[LOCS].varint()?;
        let i = usize::try_from(index)
            .ok()
            .filter(|i| *i < self.packs.len())
            .ok_or_else(|| self.s[LOCS].bad(format!("pack index {index} outside a table of {}", self.packs.len())))?;
        let codec = self.s[LOCS].byte()?;
        let delta = unzigzag(self.s[OFFSETS].varint()?);
        let offset = (self.pack_end[i] as i64)
            .checked_add(delta)
            .and_then(|o| u32::try_from(o).ok())
            .ok_or_else(|| self.s[OFFSETS].bad("offset out of range"))?;
        let (codec, len) = match codec {
            RAW_SAME_LEN => (Codec::Raw, raw_len),
            ZSTD => (Codec::Zstd, self.s[LENS].u32()?),
            RAW => (Codec::Raw, self.s[LENS].u32()?),
            c => return Err(self.s[LOCS].bad(format!("unknown codec {c}"))),
        };
        self.pack_end[i] = offset as u64 + len as u64;
        Ok(Loc { pack: self.packs[i], offset, len, codec })
    }
}

/// Decode a version-2 tree, full or delta; `what` names the object in errors.
///
/// # Errors
/// [`Error::Corrupt`] for anything but a complete, well-formed encoding.
pub fn decode(bytes: &[u8], what: &str) -> Result<StoredTree> {
    if bytes.get(..2) != Some(&[MAGIC, DELTA]) {
        return decode_full(bytes, what).map(StoredTree::Full);
    }
    let mut c = Cursor { buf: &bytes[2..], what };
    let id = TreeId(c.id()?);
    let raw_len = c.u32()?;
    let pack = PackId(c.bytes(16)?.try_into().expect("16 bytes"));
    let (offset, len) = (c.u32()?, c.u32()?);
    let codec = match c.byte()? {
        0 => Codec::Raw,
        1 => Codec::Zstd,
        b => return Err(c.bad(format!("unknown codec {b} of the base"))),
    };
    let n = c.varint()?;
    if n > c.buf.len() as u64 {
        return Err(c.bad(format!("{n} removed entries in {} bytes", c.buf.len())));
    }
    let mut removed = Vec::with_capacity(n as usize);
    let mut next = 0u64;
    for _ in 0..n {
        let index = next.checked_add(c.varint()?).filter(|i| *i <= u32::MAX as u64);
        let index = index.ok_or_else(|| c.bad("removed index out of range"))?;
        removed.push(index as u32);
        next = index + 1;
    }
    let added = decode_full(c.buf, what)?.entries;
    Ok(StoredTree::Delta(TreeDelta {
        base: TreeRef { id, raw_len, loc: Loc { pack, offset, len, codec } },
        removed,
        added,
    }))
}

fn decode_full(bytes: &[u8], what: &str) -> Result<Tree> {
    let mut head = Cursor { buf: bytes, what };
    if head.bytes(2)? != [MAGIC, VERSION] {
        return Err(head.bad(format!("unknown tree encoding {:?}", bytes.get(..2))));
    }
    let n = head.varint()?;
    let n_packs = head.varint()?;
    let packs = head
        .bytes(n_packs.checked_mul(16).ok_or_else(|| head.bad("pack table too large"))?)?
        .chunks_exact(16)
        .map(|c| PackId(c.try_into().expect("16-byte chunks")))
        .collect::<Vec<_>>();
    let mut s = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let len = head.varint()?;
        s.push(Cursor { buf: head.bytes(len)?, what });
    }
    if !head.buf.is_empty() {
        return Err(head.bad(format!("{} trailing bytes", head.buf.len())));
    }
    // Every entry has a kind byte: a count beyond that is corrupt, not a reason to allocate.
    if n > s[KINDS].buf.len() as u64 {
        return Err(head.bad(format!("{n} entries but {} kind bytes", s[KINDS].buf.len())));
    }
    let mut r = Reader { s, pack_end: vec![0; packs.len()], packs };
    let mut entries = Vec::with_capacity(n as usize);
    let (mut name, mut prev_msec, mut prev_dev, mut prev_inode) = (Vec::new(), 0i64, 0u64, 0u64);
    for _ in 0..n {
        let shared = r.s[NAME_LENS].varint()?;
        let rest = r.s[NAME_LENS].varint()?;
        if shared > name.len() as u64 {
            return Err(r.s[NAME_LENS].bad("name shares more than the previous name"));
        }
        name.truncate(shared as usize);
        name.extend_from_slice(r.s[NAMES].bytes(rest)?);

        let flags = r.s[KINDS].byte()?;
        let kind = *KINDS_IN_ORDER
            .get((flags & 7) as usize)
            .filter(|_| flags & 0x80 == 0)
            .ok_or_else(|| r.s[KINDS].bad(format!("unknown kind byte {flags:#x}")))?;
        let mode = r.s[ATTRS].u32()?;
        let uid = r.s[ATTRS].u32()?;
        let gid = r.s[ATTRS].u32()?;
        let msec = prev_msec.wrapping_add(unzigzag(r.s[SECS].varint()?));
        let csec = msec.wrapping_add(unzigzag(r.s[SECS].varint()?));
        prev_msec = msec;
        let mtime = Timestamp { sec: msec, nsec: r.s[MNSEC].le_u32()? };
        let ctime = Timestamp { sec: csec, nsec: r.s[CNSEC].le_u32()? };
        let dev = prev_dev.wrapping_add(unzigzag(r.s[INODES].varint()?) as u64);
        let inode = prev_inode.wrapping_add(unzigzag(r.s[INODES].varint()?) as u64);
        (prev_dev, prev_inode) = (dev, inode);
        let size = r.s[SIZES].varint()?;

        let nlink = r.s[MISC].u32()?;
        let rdev = r.s[MISC].varint()?;
        let target_len = r.s[MISC].varint()?;
        let target = r.s[BYTES].bytes(target_len)?.to_vec();
        let n_xattrs = r.s[MISC].varint()?;
        let mut xattrs = Vec::new();
        for _ in 0..n_xattrs {
            let (name_len, value_len) = (r.s[MISC].varint()?, r.s[MISC].varint()?);
            let name = r.s[BYTES].bytes(name_len)?.to_vec();
            let value = r.s[BYTES].bytes(value_len)?.to_vec();
            xattrs.push(Xattr { name, value });
        }
        let link_group = match (flags & HAS_LINK_GROUP != 0, flags & LINK_GROUP_IS_INODE != 0) {
            (false, false) => None,
            (true, true) => Some(inode),
            (true, false) => Some(r.s[MISC].varint()?),
            (false, true) => return Err(r.s[KINDS].bad("link group flags contradict")),
        };

        let n_pieces = r.s[PIECES].varint()?;
        if n_pieces > r.s[PIECES].buf.len() as u64 {
            return Err(r.s[PIECES].bad(format!("{n_pieces} pieces in {} bytes", r.s[PIECES].buf.len())));
        }
        let implied = flags & LAST_LEN_IMPLIED != 0;
        if implied && n_pieces == 0 {
            return Err(r.s[KINDS].bad("implied length of a file without pieces"));
        }
        let mut content = Vec::with_capacity(n_pieces as usize);
        let mut sum = 0u64;
        for i in 0..n_pieces {
            let last_implied = implied && i + 1 == n_pieces;
            let implied_len = || {
                size.checked_sub(sum).ok_or_else(|| Error::corrupt(what, "bad tree encoding: pieces longer than size"))
            };
            let piece = match r.s[PIECES].byte()? {
                0 => Piece::Hole(if last_implied { implied_len()? } else { r.s[PIECES].varint()? }),
                1 => {
                    let id = BlockId(r.s[IDS].id()?);
                    let raw_len = if last_implied {
                        u32::try_from(implied_len()?).map_err(|_| r.s[RAWLENS].bad("block longer than 4 GiB"))?
                    } else {
                        r.s[RAWLENS].u32()?
                    };
                    Piece::Block(BlockRef { id, raw_len, loc: r.loc(raw_len)? })
                }
                t => return Err(r.s[PIECES].bad(format!("unknown piece tag {t}"))),
            };
            sum = sum.saturating_add(piece.len());
            content.push(piece);
        }
        let subtree = if flags & HAS_SUBTREE != 0 {
            let id = TreeId(r.s[IDS].id()?);
            let raw_len = r.s[RAWLENS].u32()?;
            Some(TreeRef { id, raw_len, loc: r.loc(raw_len)? })
        } else {
            None
        };
        entries.push(Entry {
            name: name.clone(),
            kind,
            mode,
            uid,
            gid,
            mtime,
            ctime,
            dev,
            inode,
            size,
            nlink,
            rdev,
            target,
            xattrs,
            content,
            subtree,
            link_group,
        });
    }
    if let Some(left) = r.s.iter().find(|c| !c.buf.is_empty()) {
        return Err(left.bad(format!("{} bytes left in a stream", left.buf.len())));
    }
    Ok(Tree { entries, base: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loc_strategy() -> impl Strategy<Value = Loc> {
        (0u8..4, any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(p, offset, len, zstd)| Loc {
            pack: PackId([p; 16]),
            offset,
            len,
            codec: if zstd { Codec::Zstd } else { Codec::Raw },
        })
    }

    fn piece_strategy() -> impl Strategy<Value = Piece> {
        prop_oneof![
            any::<u64>().prop_map(Piece::Hole),
            (any::<[u8; 32]>(), any::<u32>(), loc_strategy(), any::<bool>()).prop_map(
                |(id, raw_len, mut loc, same)| {
                    if same && loc.codec == Codec::Raw {
                        loc.len = raw_len;
                    }
                    Piece::Block(BlockRef { id: BlockId(id), raw_len, loc })
                }
            ),
        ]
    }

    prop_compose! {
        fn entry_strategy()(
            name in proptest::collection::vec(any::<u8>(), 0..12),
            kind in 0usize..7,
            (mode, uid, gid, nlink) in (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
            (msec, mnsec, csec, cnsec) in (any::<i64>(), any::<u32>(), any::<i64>(), any::<u32>()),
            (dev, inode, rdev, size) in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            target in proptest::collection::vec(any::<u8>(), 0..5),
            xattrs in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..4), proptest::collection::vec(any::<u8>(), 0..4)), 0..3),
            content in proptest::collection::vec(piece_strategy(), 0..4),
            size_matches in any::<bool>(),
            subtree in proptest::option::of((any::<[u8; 32]>(), any::<u32>(), loc_strategy())),
            link_group in proptest::option::of(any::<u64>()),
            group_is_inode in any::<bool>(),
        ) -> Entry {
            let sum = content.iter().try_fold(0u64, |s, p| s.checked_add(p.len()));
            Entry {
                name,
                kind: KINDS_IN_ORDER[kind],
                mode, uid, gid,
                mtime: Timestamp { sec: msec, nsec: mnsec },
                ctime: Timestamp { sec: csec, nsec: cnsec },
                dev, inode,
                size: match sum { Some(s) if size_matches => s, _ => size },
                nlink, rdev, target,
                xattrs: xattrs.into_iter().map(|(name, value)| Xattr { name, value }).collect(),
                content,
                subtree: subtree.map(|(id, raw_len, loc)| TreeRef { id: TreeId(id), raw_len, loc }),
                link_group: if group_is_inode { link_group.map(|_| inode) } else { link_group },
            }
        }
    }

    proptest! {
        #[test]
        fn every_tree_round_trips(entries in proptest::collection::vec(entry_strategy(), 0..6)) {
            let tree = Tree { entries, base: None };
            let bytes = encode(&tree);
            prop_assert_eq!(bytes[0], MAGIC);
            prop_assert_eq!(decode(&bytes, "t").unwrap(), StoredTree::Full(tree));
        }

        #[test]
        fn every_delta_round_trips_and_rebuilds_its_tree(
            old in proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 1..3), entry_strategy(), 0..12),
            new in proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 1..3), entry_strategy(), 0..12),
            base_loc in loc_strategy(),
        ) {
            let sorted = |m: std::collections::BTreeMap<Vec<u8>, Entry>| Tree {
                entries: m.into_iter().map(|(name, e)| Entry { name, ..e }).collect(),
                base: None,
            };
            let (base, tree) = (sorted(old), sorted(new));
            let base_ref = TreeRef { id: TreeId([9; 32]), raw_len: 1234, loc: base_loc };
            let delta = TreeDelta::between(base_ref, &base, &tree);
            let bytes = encode_delta(&delta);
            let decoded = match decode(&bytes, "d").unwrap() {
                StoredTree::Delta(d) => d,
                full => panic!("decoded as {full:?}"),
            };
            prop_assert_eq!(&decoded, &delta);
            prop_assert_eq!(decoded.apply(&base).unwrap().entries, tree.entries);
            for at in 0..bytes.len() {
                prop_assert!(decode(&bytes[..at], "d").is_err());
            }
        }

        #[test]
        fn damaged_trees_are_errors_not_panics(entries in proptest::collection::vec(entry_strategy(), 1..4), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
            let bytes = encode(&Tree { entries, base: None });
            let at = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..at], "t").is_err());
            let mut bad = bytes.clone();
            bad[at] ^= flip | 1;
            let _ = decode(&bad, "t");
        }
    }

    #[test]
    fn bincode_trees_never_start_with_the_magic() {
        // The entry count is the first thing bincode writes; its varint never starts with 255.
        for n in [0usize, 1, 250, 251, 65_535, 65_536, 1 << 33] {
            let raw = crate::codec::encode_raw(&(n as u64));
            assert_ne!(raw[0], MAGIC, "count {n}");
        }
    }

    #[test]
    fn corrupt_encodings_name_the_object() {
        let err = decode(&[MAGIC, 2, 1, 0], "tree x in pack y").unwrap_err().to_string();
        assert!(err.contains("tree x in pack y") && err.contains("truncated"), "{err}");
        let err = decode(&[MAGIC, 9], "t").unwrap_err().to_string();
        assert!(err.contains("unknown tree encoding"), "{err}");
    }
}
