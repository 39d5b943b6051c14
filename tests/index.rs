//! The index fed by direct writes: a real push, pull and delete through the HTTP API show
//! up in the index at once (auth.mode = "none", names under a DID).

mod common;

use std::time::Duration;

use common::oci;
use common::TestServer;

const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

/// Direct writes run in the background: poll until `check` holds (at most 5 s).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn push_pull_delete_reach_the_index() {
    let s = TestServer::start_with(|c| c.identity.plc_url = "http://127.0.0.1:9".into()).await;
    let ix = s.running.state.index.clone();
    let repo = format!("{DID}/app");
    let (_, d1) = oci::push_image(&s, &repo, "v1", 1).await;
    let (_, d2) = oci::push_image(&s, &repo, "v2", 2).await;
    eventually("both tags indexed", || async {
        ix.tags(DID, "app", 10, 0).await.unwrap().len() == 2
    })
    .await;
    let tags = ix.tags(DID, "app", 10, 0).await.unwrap();
    let v1 = tags.iter().find(|t| t.tag == "v1").unwrap();
    assert_eq!(v1.digest, d1);
    assert_eq!(
        v1.media_type.as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert!(v1.total_size.unwrap() > 1000);
    let m = ix.manifest(DID, "app", &d2).await.unwrap().unwrap();
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.tags, ["v2"]);
    // A single image's platform comes from its config (read off the push path), and the
    // search's architecture filter finds it.
    eventually("the platform of v1 read from its config", || async {
        ix.tags(DID, "app", 10, 0)
            .await
            .unwrap()
            .iter()
            .all(|t| t.platforms.len() == 1)
    })
    .await;
    let tags = ix.tags(DID, "app", 10, 0).await.unwrap();
    let p = &tags[0].platforms[0];
    assert_eq!(
        (
            p.os.as_deref(),
            p.architecture.as_deref(),
            p.variant.as_deref()
        ),
        (Some("linux"), Some("amd64"), None)
    );
    assert!(
        tags[0].image_sizes.is_empty(),
        "a single image has no children"
    );
    let m = ix.manifest(DID, "app", &d2).await.unwrap().unwrap();
    assert_eq!(
        m.platform.and_then(|p| p.architecture).as_deref(),
        Some("amd64")
    );
    let arch = |a: &str| atcr::index::SearchFilters {
        architecture: Some(a.into()),
        ..Default::default()
    };
    assert_eq!(ix.search("", &arch("amd64"), 10, 0).await.unwrap().total, 1);
    assert_eq!(ix.search("", &arch("arm64"), 10, 0).await.unwrap().total, 0);
    // The direct write names the hold the blobs went to (here the one in this process).
    let hold_did = s
        .running
        .state
        .hold
        .as_ref()
        .expect("hold")
        .did()
        .to_string();
    assert_eq!(m.hold_did.as_deref(), Some(hold_did.as_str()));
    let r = ix.repository(DID, "app").await.unwrap().unwrap();
    assert_eq!(r.summary.push_count, 2);
    assert!(r.summary.last_push.is_some());
    assert_eq!(
        ix.search("app", &Default::default(), 10, 0)
            .await
            .unwrap()
            .total,
        1
    );

    // A pull is a GET by tag (registry::pulls): the GET by digest and the HEAD are not.
    assert_eq!(
        oci::get(&s, &format!("/v2/{repo}/manifests/v1"))
            .await
            .status(),
        200
    );
    assert_eq!(
        oci::get(&s, &format!("/v2/{repo}/manifests/{d2}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        oci::head(&s, &format!("/v2/{repo}/manifests/v1"))
            .await
            .status(),
        200
    );
    ix.flush_pulls().await.unwrap();
    let r = ix.repository(DID, "app").await.unwrap().unwrap();
    assert_eq!(r.summary.pull_count, 1);

    // A tag delete, then a manifest delete (its remaining tag goes with it).
    assert_eq!(
        oci::delete(&s, &format!("/v2/{repo}/manifests/v1"))
            .await
            .status(),
        202
    );
    eventually("v1 gone", || async {
        ix.tags(DID, "app", 10, 0).await.unwrap().len() == 1
    })
    .await;
    assert_eq!(
        oci::delete(&s, &format!("/v2/{repo}/manifests/{d2}"))
            .await
            .status(),
        202
    );
    eventually("v2 and its manifest gone", || async {
        ix.manifest(DID, "app", &d2).await.unwrap().is_none()
            && ix.tags(DID, "app", 10, 0).await.unwrap().is_empty()
    })
    .await;

    // Local mode (the test server's auth.mode): a name without an owner on the network is
    // indexed under its first segment, a local owner that is its own handle.
    oci::push_image(&s, "library/plain", "v1", 3).await;
    eventually("library/plain indexed under the local owner", || async {
        ix.tags("library", "plain", 10, 0).await.unwrap().len() == 1
    })
    .await;
    eventually("the local owner is its own handle", || async {
        ix.user_by_handle_or_did("library")
            .await
            .unwrap()
            .is_some_and(|u| u.handle.as_deref() == Some("library"))
    })
    .await;

    // The index is a file in the data dir and survives a restart.
    let s = s.restart().await;
    let ix = s.running.state.index.clone();
    assert!(s.dir.path().join("index.db").exists());
    assert_eq!(
        ix.manifest(DID, "app", &d1).await.unwrap().unwrap().digest,
        d1
    );
}

/// A manifest naming a hold: the index fetches and caches the hold's captain record from
/// the hold itself (here the hold running in the same test server, did:web:localhost%3A<port>).
#[tokio::test]
async fn hold_captain_record_is_cached_from_the_hold() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = TestServer::start_with(|c| c.server.listen = format!("127.0.0.1:{port}")).await;
    let hold = s
        .running
        .state
        .hold
        .as_ref()
        .expect("hold enabled")
        .did()
        .to_string();
    let ix = s.running.state.index.clone();
    let manifest = serde_json::json!({
        "repository": "app", "digest": format!("sha256:{}", "a".repeat(64)), "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "holdDid": hold,
        "createdAt": "2026-01-01T00:00:00Z", "layers": [],
    });
    ix.apply_records(
        DID,
        &[atcr::index::apply::RecordChange::Upsert {
            collection: "io.atcr.manifest".into(),
            rkey: "a".repeat(64),
            value: manifest,
        }],
        None,
    )
    .await
    .unwrap();
    let mut captain = None;
    for _ in 0..100 {
        captain = ix.hold_captain(&hold).await.unwrap();
        if captain.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = captain.expect("captain record cached");
    // No hold.owner_did configured: the hold is its own captain; public by default.
    assert_eq!(c.owner_did, hold);
    assert!(c.public && !c.allow_all_crew);
    assert!(c.deployed_at.is_some());
    assert_eq!(
        ix.manifest(DID, "app", &format!("sha256:{}", "a".repeat(64)))
            .await
            .unwrap()
            .unwrap()
            .hold_did
            .as_deref(),
        Some(hold.as_str())
    );
}
