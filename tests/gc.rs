//! Garbage collection: only blobs no repository links go, a dry run deletes nothing, and
//! what stays is still pullable.

mod common;

use common::oci::*;
use common::TestServer;

#[tokio::test]
async fn gc_sweeps_only_unlinked_blobs() {
    let s = TestServer::start().await;
    let kept = bytes(4096, 1);
    let shared = bytes(2048, 2);
    let orphan = bytes(1024, 3);
    let kept_d = push_blob(&s, "team/app", &kept).await;
    // Linked in two repositories: unlinking it from one keeps it.
    let shared_d = push_blob(&s, "team/app", &shared).await;
    push_blob(&s, "team/other", &shared).await;
    let orphan_d = push_blob(&s, "team/app", &orphan).await;

    for (repo, d) in [("team/app", &orphan_d), ("team/app", &shared_d)] {
        let r = delete(&s, &format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status(), 202, "unlink {d} from {repo}");
    }

    let state = &s.running.state;
    let preview = atcr::gc::collect_garbage(&state.registry, state.hold_api.as_deref(), true)
        .await
        .expect("dry run");
    let preview: Vec<String> = preview.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        preview,
        vec![orphan_d.clone()],
        "dry run lists only the orphan"
    );
    // A dry run deletes nothing: the orphan is still in storage (mountable by digest).
    let again: Vec<String> =
        atcr::gc::collect_garbage(&state.registry, state.hold_api.as_deref(), true)
            .await
            .unwrap()
            .iter()
            .map(|d| d.to_string())
            .collect();
    assert_eq!(again, preview);

    let swept: Vec<String> =
        atcr::gc::collect_garbage(&state.registry, state.hold_api.as_deref(), false)
            .await
            .expect("gc")
            .iter()
            .map(|d| d.to_string())
            .collect();
    assert_eq!(swept, vec![orphan_d.clone()]);
    assert!(
        atcr::gc::collect_garbage(&state.registry, state.hold_api.as_deref(), true)
            .await
            .unwrap()
            .is_empty(),
        "nothing left to sweep"
    );

    let r = get(&s, &format!("/v2/team/app/blobs/{kept_d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), kept.as_slice());
    let r = get(&s, &format!("/v2/team/other/blobs/{shared_d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), shared.as_slice());

    // The orphan's bytes are really gone: an anonymous mount (no `from`) finds nothing and
    // falls back to opening an upload (202) instead of mounting (201).
    let r = s
        .client
        .post(s.url(&format!("/v2/team/third/blobs/uploads/?mount={orphan_d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "a swept blob cannot be mounted");
    // A still-stored blob can.
    let r = s
        .client
        .post(s.url(&format!("/v2/team/third/blobs/uploads/?mount={kept_d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}
