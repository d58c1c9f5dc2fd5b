//! The one place that turns format types into bytes and back.
//!
//! Trees are written in the columnar encoding of [`tree`] (format version 2) or, in stores of
//! format version 1, as bincode; both are read. Indexes and pack trailers are bincode 2 (serde,
//! standard config: little-endian, varint integers) of the types in [`crate::format`]; their
//! encoding has not changed since format version 1. Every stand-alone binary
//! object starts with an 8-byte header `CCFS` + kind byte + format byte + 2 reserved zero bytes,
//! then a zstd frame of the bincode bytes. Blobs inside packs (blocks, trees) have no header:
//! their pack location carries the codec. Replacing bincode means touching only this module and
//! bumping [`crate::format::FORMAT_VERSION`].

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};
use crate::format::{Tree, FORMAT_VERSION};

pub mod tree;

const MAGIC: &[u8; 4] = b"CCFS";
/// Format byte of stand-alone objects: the version that defined their encoding. Indexes and
/// trailers are unchanged since version 1, so stores of version 1 stay readable by the code
/// that wrote them.
const OBJECT_FORMAT: u8 = 1;

/// Kinds of stand-alone binary objects, written in their header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    Index = 1,
    PackTrailer = 2,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Raw bincode encoding of a value (what tree ids hash).
pub fn encode_raw<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("bincode encoding of format types cannot fail")
}

/// Decode a raw bincode encoding; `what` names the object in the error.
///
/// # Errors
/// [`Error::Corrupt`] if the bytes are not a complete encoding of `T`.
pub fn decode_raw<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| Error::corrupt(what, format!("cannot decode: {e}")))?;
    if used != bytes.len() {
        return Err(Error::corrupt(what, format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(value)
}

/// Encode a stand-alone binary object: header + zstd(bincode).
pub fn encode_object<T: Serialize>(kind: ObjectKind, value: &T) -> Vec<u8> {
    let raw = encode_raw(value);
    let mut out = Vec::with_capacity(raw.len() / 2 + 8);
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.push(OBJECT_FORMAT);
    out.extend_from_slice(&[0, 0]);
    let compressed = zstd::bulk::compress(&raw, 3).expect("zstd compression of a memory buffer cannot fail");
    out.extend_from_slice(&compressed);
    out
}

/// Decode a stand-alone binary object written by [`encode_object`].
///
/// # Errors
/// [`Error::Corrupt`] naming `what` when the header, the zstd frame or the encoding is bad.
pub fn decode_object<T: DeserializeOwned>(kind: ObjectKind, bytes: &[u8], what: &str) -> Result<T> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(Error::corrupt(what, "bad magic"));
    }
    if bytes[4] != kind as u8 {
        return Err(Error::corrupt(what, format!("object kind {} where {:?} was expected", bytes[4], kind)));
    }
    if bytes[5] as u32 > FORMAT_VERSION {
        return Err(Error::corrupt(what, format!("written by format version {}", bytes[5])));
    }
    let raw = decompress(&bytes[8..], usize::MAX, what)?;
    decode_raw(&raw, what)
}

/// Encode a tree as a store of `format_version` reads it (what its id hashes).
pub fn encode_tree(value: &Tree, format_version: u32) -> Vec<u8> {
    if format_version >= 2 {
        tree::encode(value)
    } else {
        encode_raw(value)
    }
}

/// Decode a tree in either encoding (full, or in version 2 also a delta); `what` names the
/// object in errors.
///
/// # Errors
/// [`Error::Corrupt`] if the bytes are not a complete encoding of a tree.
pub fn decode_tree(bytes: &[u8], what: &str) -> Result<tree::StoredTree> {
    if bytes.first() == Some(&tree::MAGIC) {
        tree::decode(bytes, what)
    } else {
        decode_raw(bytes, what).map(tree::StoredTree::Full)
    }
}

/// Decompress a zstd frame, refusing output larger than `limit`.
///
/// # Errors
/// [`Error::Corrupt`] naming `what`.
pub fn decompress(data: &[u8], limit: usize, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let decoder = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| Error::corrupt(what, e))?;
    decoder
        .take(limit.saturating_add(1) as u64)
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(what, format!("zstd: {e}")))?;
    if out.len() > limit {
        return Err(Error::corrupt(what, "decompressed data larger than recorded"));
    }
    Ok(out)
}
