//! Criterion micro-benchmarks of the hot paths: chunking, hashing, compression, pack writing,
//! tree encode/decode and directory listing. `cargo bench --bench hotpaths`.

use std::hint::black_box;
use std::sync::Arc;

use ccfs::chunker::{chunk_slice, ChunkParams};
use ccfs::format::{BlockRef, Chunking, Codec, CompressionMethod, Entry, EntryKind, Loc, Piece, Timestamp, Tree};
use ccfs::ids::{BlockId, PackId, PackKind};
use ccfs::pack::{compress, PackWriter, Uploader};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn text(n: usize) -> Vec<u8> {
    let words = ["alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta\n", "theta ", "iota, "];
    let r = random(n, 3);
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(words[(r[i % r.len()] as usize) % words.len()].as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

fn chunking(c: &mut Criterion) {
    let data = random(64 << 20, 1);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for (name, p) in [
        ("fastcdc_512k", ChunkParams::new(Chunking::Fastcdc, 512 << 10)),
        ("fixed_512k", ChunkParams::new(Chunking::Fixed, 512 << 10)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0;
                chunk_slice(p, black_box(&data), |blk| n += blk.len());
                n
            })
        });
    }
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = random(16 << 20, 2);
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("sha256_16m", |b| b.iter(|| BlockId::of(black_box(&data))));
    g.finish();
}

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("compression");
    g.sample_size(10);
    for (name, data) in [("text_512k", text(512 << 10)), ("random_512k", random(512 << 10, 4))] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(format!("auto_zstd3_{name}"), |b| {
            b.iter(|| compress(CompressionMethod::Auto, 3, black_box(&data)))
        });
    }
    g.finish();
}

fn pack_writing(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = ccfs::Store::open("memory://", rt.handle().clone(), true).unwrap();
    let blocks: Vec<Vec<u8>> = (0..64).map(|i| random(128 << 10, i + 10)).collect();
    let mut g = c.benchmark_group("pack_writing");
    g.throughput(Throughput::Bytes(64 * (128 << 10)));
    g.sample_size(10);
    g.bench_function("64_blocks_of_128k_into_8m_packs", |b| {
        b.iter_batched(
            || PackWriter::new(PackKind::Data, 8 << 20, Arc::new(Uploader::new(store.clone(), 3))),
            |w| {
                for (i, blk) in blocks.iter().enumerate() {
                    w.add([i as u8; 32], blk.len() as u32, ccfs::format::Codec::Raw, blk).unwrap();
                }
                w.flush().unwrap();
                w
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn sample_tree(n: usize) -> Tree {
    let entries = (0..n)
        .map(|i| Entry {
            name: format!("entry-{i:06}").into_bytes(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: Timestamp { sec: 1_700_000_000 + i as i64, nsec: 0 },
            ctime: Timestamp { sec: 1_700_000_000, nsec: 0 },
            dev: 1,
            inode: i as u64,
            size: 4096,
            nlink: 1,
            rdev: 0,
            target: vec![],
            xattrs: vec![],
            content: vec![Piece::Block(BlockRef {
                id: BlockId::of(&i.to_le_bytes()),
                raw_len: 4096,
                loc: Loc { pack: PackId([1; 16]), offset: i as u32 * 2000, len: 2000, codec: Codec::Zstd },
            })],
            subtree: None,
            link_group: None,
        })
        .collect();
    Tree { entries, base: None }
}

fn catalog(c: &mut Criterion) {
    let tree = sample_tree(10_000);
    let mut g = c.benchmark_group("catalog");
    g.throughput(Throughput::Elements(10_000));
    for (name, version) in [("columns", 2), ("bincode", 1)] {
        let raw = ccfs::codec::encode_tree(&tree, version);
        g.bench_function(format!("encode_tree_10k_entries_{name}"), |b| {
            b.iter(|| ccfs::codec::encode_tree(black_box(&tree), version))
        });
        g.bench_function(format!("decode_tree_10k_entries_{name}"), |b| {
            b.iter(|| ccfs::codec::decode_tree(black_box(&raw), "bench").unwrap())
        });
    }
    g.finish();
}

fn dir_listing(c: &mut Criterion) {
    // A real version with a 100,000-entry directory in a local store; list pages and look up names.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src/big");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..100_000 {
        std::fs::File::create(src.join(format!("e{i:06}"))).unwrap();
    }
    let store = ccfs::Store::open(tmp.path().join("store").to_str().unwrap(), rt.handle().clone(), true).unwrap();
    ccfs::init(&store, &ccfs::InitOptions::default()).unwrap();
    let repo = ccfs::Repo::open(store).unwrap();
    let out = ccfs::create_version(
        &repo,
        std::sync::Arc::new(ccfs::source::LocalSource::new(tmp.path().join("src"))),
        &Default::default(),
        Arc::new(ccfs::Progress::new()),
        ccfs::CancellationToken::new(),
    )
    .unwrap();
    let v = ccfs::Version::new(repo.clone(), repo.manifest(&out.manifest.version_id).unwrap());
    let mut g = c.benchmark_group("dir_listing");
    g.bench_function("page_of_1000_in_100k_dir", |b| {
        b.iter(|| v.list(black_box(b"/big"), 50_000, 1000).unwrap().len())
    });
    g.bench_function("lookup_in_100k_dir", |b| b.iter(|| v.lookup(black_box(b"/big/e077777")).unwrap().size));
    g.finish();
}

criterion_group!(benches, chunking, hashing, compression, pack_writing, catalog, dir_listing);
criterion_main!(benches);
