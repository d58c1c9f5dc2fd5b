//! The one place that turns format types into bytes and back.
//!
//! Binary objects (trees, indexes, pack trailers) are bincode 2 (serde, standard config:
//! little-endian, varint integers) of the types in [`crate::format`]. Every stand-alone binary
//! object starts with an 8-byte header `CCFS` + kind byte + format byte + 2 reserved zero bytes,
//! then a zstd frame of the bincode bytes. Blobs inside packs (blocks, trees) have no header:
//! their pack location carries the codec. Replacing bincode means touching only this module and
//! bumping [`crate::format::FORMAT_VERSION`].

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};
use crate::format::FORMAT_VERSION;

const MAGIC: &[u8; 4] = b"CCFS";

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
    out.push(FORMAT_VERSION as u8);
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
