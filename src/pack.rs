//! Pack objects: many blobs (blocks or trees), each compressed on its own, in one object, with a
//! trailer listing them. Writing packs (with bounded parallel uploads) and reading blobs back.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::codec;
use crate::error::{Error, Result};
use crate::format::{BlobEntry, Codec, CompressionMethod, Loc, PackTrailer, PACK_MAGIC};
use crate::ids::{pack_path, PackId, PackKind};
use crate::store::Store;

/// Compress one blob according to the store's method. Returns the codec and stored bytes.
pub fn compress(method: CompressionMethod, level: i32, raw: &[u8]) -> (Codec, Cow<'_, [u8]>) {
    match method {
        CompressionMethod::None => (Codec::Raw, Cow::Borrowed(raw)),
        CompressionMethod::Auto if looks_incompressible(raw) => (Codec::Raw, Cow::Borrowed(raw)),
        CompressionMethod::Zstd | CompressionMethod::Auto => {
            let z = zstd_compress(raw, level);
            if method == CompressionMethod::Auto && z.len() + raw.len() / 32 >= raw.len() {
                (Codec::Raw, Cow::Borrowed(raw))
            } else {
                (Codec::Zstd, Cow::Owned(z))
            }
        }
    }
}

/// Blocks at least this large are probed before they are compressed.
const PROBE_MIN: usize = 64 * 1024;
/// Bytes taken from each of the start, middle and end of a block for the probe.
const PROBE_WINDOW: usize = 8 * 1024;

/// Whether three 8 KiB samples of `raw` (start, middle, end) together fail to shrink by 1/32 at
/// zstd level 1. Compressing random data at the store's level costs about as much as compressing
/// text and saves nothing (a third of a create's CPU on the shared dataset went to zstd, much of
/// it on random files); the probe costs ~2% of that. A block whose samples are incompressible
/// but whose rest is not is stored raw: a small loss, never a wrong result.
fn looks_incompressible(raw: &[u8]) -> bool {
    if raw.len() < PROBE_MIN {
        return false;
    }
    let mid = raw.len() / 2 - PROBE_WINDOW / 2;
    let mut sample = Vec::with_capacity(3 * PROBE_WINDOW);
    sample.extend_from_slice(&raw[..PROBE_WINDOW]);
    sample.extend_from_slice(&raw[mid..mid + PROBE_WINDOW]);
    sample.extend_from_slice(&raw[raw.len() - PROBE_WINDOW..]);
    let z = PROBE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let c = slot.get_or_insert_with(|| zstd::bulk::Compressor::new(1).expect("zstd context"));
        c.compress(&sample).expect("zstd compression of a memory buffer cannot fail")
    });
    z.len() + sample.len() / 32 >= sample.len()
}

thread_local! {
    /// The level-1 context of the incompressibility probe.
    static PROBE: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
    /// One zstd context per thread and level: creating one costs more than compressing a small block.
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
}

fn zstd_compress(raw: &[u8], level: i32) -> Vec<u8> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            let c = zstd::bulk::Compressor::new(level).expect("zstd context");
            *slot = Some((level, c));
        }
        let (_, c) = slot.as_mut().expect("set above");
        c.compress(raw).expect("zstd compression of a memory buffer cannot fail")
    })
}

thread_local! {
    static UNZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

fn zstd_decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    UNZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        slot.as_mut().expect("set above").decompress(stored, raw_len)
    })
}

/// Decode a stored blob to its raw bytes; `what` names it in errors.
///
/// # Errors
/// [`Error::Corrupt`] when it does not decompress to exactly `raw_len` bytes.
pub fn decode_blob(codec: Codec, stored: &[u8], raw_len: u32, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    let out = match codec {
        Codec::Raw => stored.to_vec(),
        Codec::Zstd => {
            zstd_decompress(stored, raw_len as usize).map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?
        }
    };
    if out.len() != raw_len as usize {
        return Err(Error::corrupt(what(), format!("{} bytes where {} were recorded", out.len(), raw_len)));
    }
    Ok(out)
}

/// The stored bytes of the blob at `loc` in a pack held whole (a slice, not a copy); `None`
/// when the pack is shorter.
pub fn blob_bytes(pack: &Bytes, loc: &Loc) -> Option<Bytes> {
    let range = loc.offset as usize..loc.offset as usize + loc.len as usize;
    (range.end <= pack.len()).then(|| pack.slice(range))
}

/// Encode a pack trailer: `zstd(bincode(trailer)) ‖ u32 LE length ‖ PACK_MAGIC`.
pub fn encode_trailer(trailer: &PackTrailer) -> Vec<u8> {
    let raw = codec::encode_raw(trailer);
    let mut out = zstd::bulk::compress(&raw, 3).expect("zstd compression of a memory buffer cannot fail");
    let n = out.len() as u32;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(PACK_MAGIC);
    out
}

/// The trailer's stored length, from the last bytes of a pack (at least 12 of them).
fn trailer_len(tail: &[u8], path: &str) -> Result<usize> {
    if tail.len() < 12 || &tail[tail.len() - 8..] != PACK_MAGIC {
        return Err(Error::corrupt(path, "no pack trailer (bad magic)"));
    }
    Ok(u32::from_le_bytes(tail[tail.len() - 12..tail.len() - 8].try_into().expect("4 bytes")) as usize)
}

fn decode_trailer(stored: &[u8], kind: PackKind, path: &str) -> Result<PackTrailer> {
    let raw = codec::decompress(stored, 64 << 20, path)?;
    let trailer: PackTrailer = codec::decode_raw(&raw, path)?;
    if trailer.kind != kind {
        return Err(Error::corrupt(path, "pack kind in trailer does not match its path"));
    }
    Ok(trailer)
}

/// Read the trailer of a pack: the list of blobs it holds.
///
/// # Errors
/// [`Error::Corrupt`] naming the pack when the tail is not a trailer.
pub fn read_trailer(store: &Store, kind: PackKind, id: &PackId) -> Result<PackTrailer> {
    let path = pack_path(kind, id);
    let tail = store.get_suffix(&path, 64 * 1024)?;
    let n = trailer_len(&tail, &path)?;
    let bytes: Bytes = if n + 12 <= tail.len() {
        tail.slice(tail.len() - 12 - n..tail.len() - 12)
    } else {
        let bad = |r: &str| Error::corrupt(&path, r);
        let meta_len = store.list(&path)?.first().map(|m| m.size).ok_or_else(|| bad("vanished"))?;
        let end = meta_len.checked_sub(12).ok_or_else(|| bad("too short"))?;
        let start = end.checked_sub(n as u64).ok_or_else(|| bad("trailer length exceeds pack"))?;
        store.get_range(&path, start..end)?
    };
    decode_trailer(&bytes, kind, &path)
}

/// The trailer of a pack held whole in memory; checks that every blob lies before it.
///
/// # Errors
/// [`Error::Corrupt`] naming the pack.
pub fn trailer_of(pack: &[u8], kind: PackKind, id: &PackId) -> Result<PackTrailer> {
    let path = pack_path(kind, id);
    let n = trailer_len(pack, &path)?;
    let start = pack.len().checked_sub(12 + n).ok_or_else(|| Error::corrupt(&path, "trailer length exceeds pack"))?;
    let trailer = decode_trailer(&pack[start..pack.len() - 12], kind, &path)?;
    if let Some(b) =
        trailer.blobs.iter().find(|b| b.loc.pack != *id || b.loc.offset as usize + b.loc.len as usize > start)
    {
        return Err(Error::corrupt(&path, format!("trailer lists blob {} outside the pack", hex::encode(b.id))));
    }
    Ok(trailer)
}

/// Uploads sealed packs in the background, at most `max_inflight` at a time.
pub struct Uploader {
    store: Store,
    max_inflight: usize,
    inflight: Mutex<VecDeque<JoinHandle<Result<()>>>>,
}

impl Uploader {
    pub fn new(store: Store, max_inflight: usize) -> Self {
        Uploader { store, max_inflight: max_inflight.max(1), inflight: Mutex::new(VecDeque::new()) }
    }

    /// Start an upload; blocks while `max_inflight` uploads are running.
    ///
    /// # Errors
    /// The error of an earlier upload that finished with one.
    pub fn submit(&self, path: String, data: Bytes) -> Result<()> {
        let store = self.store.clone();
        let handle = self.store.runtime().spawn(async move { store.put_async(&path, data).await });
        let oldest = {
            let mut q = self.inflight.lock().expect("uploader poisoned");
            q.push_back(handle);
            if q.len() > self.max_inflight {
                q.pop_front()
            } else {
                None
            }
        };
        match oldest {
            Some(h) => self.join(h),
            None => Ok(()),
        }
    }

    fn join(&self, h: JoinHandle<Result<()>>) -> Result<()> {
        self.store.runtime().block_on(h).map_err(|e| Error::Internal(format!("upload task: {e}")))?
    }

    /// Wait for every upload.
    ///
    /// # Errors
    /// The first upload error.
    pub fn finish(&self) -> Result<()> {
        let all: Vec<_> = self.inflight.lock().expect("uploader poisoned").drain(..).collect();
        let mut first = Ok(());
        for h in all {
            let r = self.join(h);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

struct OpenPack {
    id: PackId,
    buf: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

impl OpenPack {
    fn new(cap: usize) -> Self {
        OpenPack { id: PackId::random(), buf: Vec::with_capacity(cap), blobs: Vec::new() }
    }
}

/// Appends compressed blobs to an open pack; seals and uploads it when it reaches its target size.
pub struct PackWriter {
    kind: PackKind,
    target: usize,
    open: Mutex<OpenPack>,
    uploader: Arc<Uploader>,
    written: Mutex<(Vec<PackId>, Vec<BlobEntry>, u64)>,
}

impl PackWriter {
    pub fn new(kind: PackKind, target: usize, uploader: Arc<Uploader>) -> Self {
        PackWriter {
            kind,
            target,
            open: Mutex::new(OpenPack::new(target + target / 8)),
            uploader,
            written: Mutex::new((Vec::new(), Vec::new(), 0)),
        }
    }

    /// Append a blob; returns where it will live once the pack is uploaded.
    ///
    /// # Errors
    /// An earlier upload's error (surfaced when this call seals a pack).
    pub fn add(&self, id: [u8; 32], raw_len: u32, codec: Codec, stored: &[u8]) -> Result<Loc> {
        let (loc, sealed) = {
            let mut open = self.open.lock().expect("pack writer poisoned");
            let loc = Loc { pack: open.id, offset: open.buf.len() as u32, len: stored.len() as u32, codec };
            open.buf.extend_from_slice(stored);
            open.blobs.push(BlobEntry { id, kind: self.kind, raw_len, loc });
            let sealed = if open.buf.len() >= self.target {
                Some(std::mem::replace(&mut *open, OpenPack::new(self.target + self.target / 8)))
            } else {
                None
            };
            (loc, sealed)
        };
        if let Some(p) = sealed {
            self.seal(p)?;
        }
        Ok(loc)
    }

    fn seal(&self, mut p: OpenPack) -> Result<()> {
        if p.blobs.is_empty() {
            return Ok(());
        }
        let trailer = PackTrailer { kind: self.kind, blobs: p.blobs.clone() };
        p.buf.extend_from_slice(&encode_trailer(&trailer));
        {
            let mut w = self.written.lock().expect("pack writer poisoned");
            w.0.push(p.id);
            w.1.extend_from_slice(&p.blobs);
            w.2 += p.buf.len() as u64;
        }
        self.uploader.submit(pack_path(self.kind, &p.id), Bytes::from(p.buf))
    }

    /// Seal the open pack (if it holds anything) and hand it to the uploader.
    ///
    /// # Errors
    /// An upload error.
    pub fn flush(&self) -> Result<()> {
        let p = std::mem::replace(&mut *self.open.lock().expect("pack writer poisoned"), OpenPack::new(0));
        self.seal(p)
    }

    /// Packs sealed so far, the blobs in them, and their total size in bytes.
    pub fn written(&self) -> (Vec<PackId>, Vec<BlobEntry>, u64) {
        self.written.lock().expect("pack writer poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut v);
        v
    }

    #[test]
    fn auto_stores_random_blocks_raw_and_text_compressed() {
        let r = random(512 * 1024);
        assert_eq!(compress(CompressionMethod::Auto, 3, &r), (Codec::Raw, Cow::Borrowed(&r[..])));
        let text: Vec<u8> = (0..40_000).flat_map(|i| format!("line {i} of a log\n").into_bytes()).collect();
        let (codec, stored) = compress(CompressionMethod::Auto, 3, &text);
        assert_eq!(codec, Codec::Zstd);
        assert!(stored.len() < text.len() / 4);
        // small blocks skip the probe; `Zstd` always compresses
        assert_eq!(compress(CompressionMethod::Auto, 3, &r[..1000]).0, Codec::Raw);
        assert_eq!(compress(CompressionMethod::Zstd, 3, &r).0, Codec::Zstd);
        // text with random samples where the probe looks: raw (a loss, never a wrong result)
        let mut mixed = text.clone();
        mixed[..PROBE_WINDOW].copy_from_slice(&r[..PROBE_WINDOW]);
        let mid = mixed.len() / 2 - PROBE_WINDOW / 2;
        mixed[mid..mid + PROBE_WINDOW].copy_from_slice(&r[PROBE_WINDOW..2 * PROBE_WINDOW]);
        let end = mixed.len() - PROBE_WINDOW;
        mixed[end..].copy_from_slice(&r[2 * PROBE_WINDOW..3 * PROBE_WINDOW]);
        assert_eq!(compress(CompressionMethod::Auto, 3, &mixed).0, Codec::Raw);
    }
}
