//! Hot-path micro benches: streaming SHA-256/512 (must use SHA-NI: expect >= 1.3 GB/s on
//! this machine's EPYC) and the filesystem blob write path (hash + write + fsync + rename).

use std::hint::black_box;

use atcr::blob::fs::FsBlobStore;
use atcr::blob::{BlobStore, ChunkStream};
use atcr::oci::types::{Algorithm, Digest};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const CHUNK: usize = 256 * 1024;
const TOTAL: usize = 64 * 1024 * 1024;

fn streaming_digest(c: &mut Criterion) {
    let data: Vec<u8> = (0..TOTAL).map(|i| (i * 31 % 251) as u8).collect();
    let mut g = c.benchmark_group("streaming_digest");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        g.bench_function(alg.as_str(), |b| {
            b.iter(|| {
                let mut h = alg.hasher();
                for chunk in data.chunks(CHUNK) {
                    h.update(black_box(chunk));
                }
                h.finish()
            })
        });
    }
    g.finish();
}

fn fs_write_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path()).unwrap();
    let mut g = c.benchmark_group("fs_blob_write");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    let mut n = 0u64;
    g.bench_function("append_hash_commit_64MiB", |b| {
        b.iter(|| {
            n += 1;
            // A fresh blob each time so commit really writes (no dedup short-cut).
            let seed = n.to_le_bytes();
            let chunks: Vec<Bytes> = (0..TOTAL / CHUNK)
                .map(|i| {
                    let mut v = vec![(i % 256) as u8; CHUNK];
                    v[..8].copy_from_slice(&seed);
                    Bytes::from(v)
                })
                .collect();
            rt.block_on(async {
                let id = format!("bench-{n}");
                store.upload_create(&id).await.unwrap();
                let stream: ChunkStream =
                    Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)));
                let a = store
                    .upload_append(&id, 0, Algorithm::Sha256.hasher(), stream)
                    .await
                    .unwrap();
                let d: Digest = a.hasher.finish();
                store.upload_commit(&id, &d).await.unwrap();
                store.delete(&d).await.unwrap();
            })
        })
    });
    g.finish();
}

criterion_group!(benches, streaming_digest, fs_write_path);
criterion_main!(benches);
