//! Cutting a byte stream into blocks: FastCDC (content-defined, the default) or fixed size.

use std::io::Read;

use crate::format::{Chunking, StoreConfig};

/// Chunking parameters of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    pub chunking: Chunking,
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// Smallest block size a store may be formatted with (FastCDC's limits: min ≥ 64 B, avg ≥ 256 B).
pub const MIN_BLOCK_SIZE: u32 = 4 * 1024;
/// Largest block size (FastCDC's max of 16 MiB at avg × 4).
pub const MAX_BLOCK_SIZE: u32 = 4 * 1024 * 1024;

impl ChunkParams {
    /// Parameters for an average (FastCDC) or exact (fixed) block size.
    pub fn new(chunking: Chunking, block_size: u32) -> Self {
        match chunking {
            Chunking::Fastcdc => ChunkParams { chunking, min: block_size / 4, avg: block_size, max: block_size * 4 },
            Chunking::Fixed => ChunkParams { chunking, min: block_size, avg: block_size, max: block_size },
        }
    }

    pub fn of(config: &StoreConfig) -> Self {
        ChunkParams {
            chunking: config.chunking,
            min: config.min_block_size,
            avg: config.block_size,
            max: config.max_block_size,
        }
    }
}

/// Cut an in-memory buffer into blocks (the whole buffer is the stream).
pub fn chunk_slice(params: ChunkParams, data: &[u8], mut sink: impl FnMut(&[u8])) {
    match params.chunking {
        Chunking::Fixed => data.chunks(params.avg as usize).for_each(sink),
        Chunking::Fastcdc => {
            for c in fastcdc::v2020::FastCDC::new(data, params.min, params.avg, params.max) {
                sink(&data[c.offset..c.offset + c.length]);
            }
        }
    }
}

/// Size of the read buffer [`chunk_stream`] needs for these parameters.
pub fn buffer_size(params: ChunkParams) -> usize {
    (4usize << 20).max(2 * params.max as usize)
}

/// Read `reader` to its end and call `sink` with each block, in order. Returns bytes read.
///
/// `buf` is the read buffer, grown to [`buffer_size`] if smaller; callers reuse it across
/// files so it is allocated and zeroed once.
///
/// # Errors
/// The first error of `reader` or `sink`.
pub fn chunk_stream<R: Read, E: From<std::io::Error>>(
    params: ChunkParams,
    mut reader: R,
    buf: &mut Vec<u8>,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let cap = buffer_size(params);
    if buf.len() < cap {
        buf.resize(cap, 0);
    }
    let buf = &mut buf[..cap];
    let mut filled = 0usize;
    let mut eof = false;
    let mut total = 0u64;
    loop {
        while !eof && filled < cap {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => eof = true,
                Ok(n) => {
                    filled += n;
                    total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        let consumed = match params.chunking {
            Chunking::Fixed => {
                let step = params.avg as usize;
                let mut pos = 0;
                while filled - pos >= step || (eof && pos < filled) {
                    let end = (pos + step).min(filled);
                    sink(&buf[pos..end])?;
                    pos = end;
                }
                pos
            }
            Chunking::Fastcdc => {
                let cdc = fastcdc::v2020::FastCDC::new(&buf[..filled], params.min, params.avg, params.max);
                let mut pos = 0;
                for c in cdc {
                    let end = c.offset + c.length;
                    // The last cut inside the buffer is artificial unless the stream ended or
                    // the block reached its maximum size.
                    if end == filled && !eof && c.length < params.max as usize {
                        break;
                    }
                    sink(&buf[c.offset..end])?;
                    pos = end;
                }
                pos
            }
        };
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if eof && filled == 0 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(params: ChunkParams, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        chunk_stream::<_, std::io::Error>(params, data, &mut Vec::new(), |b| {
            out.push(b.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn fixed_blocks_cover_input() {
        let p = ChunkParams::new(Chunking::Fixed, 4096);
        let data = pseudo_random(10_000, 1);
        let b = blocks(p, &data);
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![4096, 4096, 1808]);
        assert_eq!(b.concat(), data);
    }

    #[test]
    fn cdc_is_independent_of_read_boundaries() {
        let p = ChunkParams::new(Chunking::Fastcdc, 64 * 1024);
        let data = pseudo_random(20 << 20, 7);
        let whole = blocks(p, &data);
        assert_eq!(whole.concat(), data);
        // A reader that returns tiny reads must give the same blocks.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(self.0.len()).min(777);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut dribbled = Vec::new();
        chunk_stream::<_, std::io::Error>(p, Dribble(&data), &mut Vec::new(), |b| {
            dribbled.push(b.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(whole, dribbled);
        for b in &whole[..whole.len() - 1] {
            assert!(b.len() >= p.min as usize && b.len() <= p.max as usize);
        }
    }

    #[test]
    fn cdc_insert_changes_few_blocks() {
        let p = ChunkParams::new(Chunking::Fastcdc, 64 * 1024);
        let data = pseudo_random(8 << 20, 3);
        let mut changed = data.clone();
        changed.splice(4 << 20..4 << 20, pseudo_random(100, 9));
        let a: std::collections::HashSet<_> = blocks(p, &data).into_iter().collect();
        let new = blocks(p, &changed).into_iter().filter(|b| !a.contains(b)).count();
        assert!(new <= 2, "{new} new blocks");
    }

    #[test]
    fn slice_and_stream_agree() {
        for p in [ChunkParams::new(Chunking::Fastcdc, 16 * 1024), ChunkParams::new(Chunking::Fixed, 4096)] {
            let data = pseudo_random(300_000, 5);
            let mut sliced = Vec::new();
            chunk_slice(p, &data, |b| sliced.push(b.to_vec()));
            assert_eq!(sliced, blocks(p, &data));
        }
    }

    #[test]
    fn empty_input_has_no_blocks() {
        assert!(blocks(ChunkParams::new(Chunking::Fastcdc, 4096), &[]).is_empty());
    }
}
