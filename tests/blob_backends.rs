//! Every blob backend runs the shared conformance suite (`atcr::blob::suite`).

mod common;

use atcr::blob::fs::FsBlobStore;
use atcr::blob::s3::S3BlobStore;
use atcr::blob::BlobStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_backend_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path()).unwrap();
    atcr::blob::suite::run(&store, "fs").await;
    // Nothing staged may be left behind by the suite's own uploads.
    assert!(std::fs::read_dir(dir.path().join("uploads"))
        .unwrap()
        .next()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_passes_the_suite() {
    let server = common::s3::S3Server::start().await;
    let spill = tempfile::tempdir().unwrap();
    let store = S3BlobStore::open(server.settings("suite", spill.path()), true)
        .await
        .unwrap();
    atcr::blob::suite::run(&store, "s3").await;
    assert!(
        store.upload_list().await.unwrap().is_empty(),
        "no upload state may be left behind"
    );
    // No multipart upload may be left open in the bucket either.
    assert_eq!(store.cleanup_orphans(&Default::default()).await.unwrap(), 0);
}

fn chunks(data: &[u8], size: usize) -> atcr::blob::ChunkStream {
    let parts: Vec<Result<bytes::Bytes, std::io::Error>> = data
        .chunks(size)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(parts))
}

async fn read_back(store: &dyn BlobStore, d: &atcr::oci::types::Digest) -> Vec<u8> {
    use futures_util::StreamExt;
    let mut s = store.read(d, None).await.unwrap().stream;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// S3 uploads go through spool files: a restart (a new store on the same spill dir), a
/// request cut off by a crash (a stray spool file left behind), and a request whose part PUT
/// is refused by S3 (wrong credentials: a real refusal) all leave the last checkpoint intact,
/// and the upload finishes byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_uploads_survive_restarts_crashes_and_refused_parts() {
    use atcr::oci::types::{Algorithm, Digest};
    let server = common::s3::S3Server::start().await;
    let spill = tempfile::tempdir().unwrap();
    let settings = server.settings("spool", spill.path());
    let part = settings.part_size;
    // Two and a half parts, sent in three requests of odd sizes.
    let data = pseudo_random(part * 5 / 2, 7);
    let digest: Digest = {
        let mut h = Algorithm::Sha256.hasher();
        h.update(&data);
        h.finish()
    };
    let store = S3BlobStore::open(settings.clone(), true).await.unwrap();
    store.upload_create("up1").await.unwrap();
    let first = part + part / 3; // one whole part sent, a third of one in the tail
    let a = store
        .upload_append(
            "up1",
            0,
            Algorithm::Sha256.hasher(),
            chunks(&data[..first], 65_537),
        )
        .await
        .unwrap();
    assert_eq!(a.len, first as u64);
    drop(store);

    // A crash in the middle of the next request leaves its spool file behind.
    let up_dir = spill.path().join("up1");
    std::fs::write(up_dir.join(format!("spool-{first}-1")), b"half a request").unwrap();

    // A request whose part PUT S3 refuses changes nothing.
    let mut bad = settings.clone();
    bad.secret_key = "not-the-secret".into();
    let refused = S3BlobStore::open(bad, false).await.unwrap();
    let hasher = refused
        .upload_rehash("up1", Algorithm::Sha256)
        .await
        .unwrap()
        .hasher;
    let err = refused
        .upload_append(
            "up1",
            first as u64,
            hasher,
            chunks(&data[first..first + part], 100_000),
        )
        .await;
    assert!(err.is_err(), "a refused part must fail the request");
    assert_eq!(refused.upload_len("up1").await.unwrap(), Some(first as u64));
    drop(refused);

    // After a restart, the upload goes on from its checkpoint and lands byte-exact.
    let store = S3BlobStore::open(settings, false).await.unwrap();
    let re = store.upload_rehash("up1", Algorithm::Sha256).await.unwrap();
    assert_eq!(re.len, first as u64);
    let b = store
        .upload_append(
            "up1",
            first as u64,
            re.hasher,
            chunks(&data[first..], 1_000_003),
        )
        .await
        .unwrap();
    assert_eq!(b.len, data.len() as u64);
    assert_eq!(b.hasher.finish(), digest, "the hash covers every byte once");
    assert_eq!(
        store.upload_commit("up1", &digest).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(read_back(&store, &digest).await, data);
    assert!(
        !up_dir.exists(),
        "the spill dir goes with the committed upload"
    );
    assert_eq!(store.cleanup_orphans(&Default::default()).await.unwrap(), 0);
}
