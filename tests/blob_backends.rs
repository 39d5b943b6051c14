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
