//! Every blob backend runs the shared conformance suite (`atcr::blob::suite`).

use atcr::blob::fs::FsBlobStore;

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
